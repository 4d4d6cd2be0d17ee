@testable import StrataBroker
@testable import StrataQuery

/// A statement's rows (NULL as nil), or its error: for comparing the fast paths with SQLite's own
/// evaluation, where both refusing the same input counts as agreeing.
func rows(_ engine: QueryEngine, _ sql: String) -> Result<[[String?]], Error> {
    Result {
        var out: [[String?]] = []
        try engine.run(sql, header: { _ in }, row: { out.append($0) })
        return out
    }
}

/// Equal rows, or both errors (the messages differ in wording only).
func same(_ a: Result<[[String?]], Error>, _ b: Result<[[String?]], Error>) -> Bool {
    switch (a, b) {
    case (.success(let x), .success(let y)): return x == y
    case (.failure, .failure): return true
    default: return false
    }
}

/// A broker whose segments a test converts to cold itself (no background conversion), with one
/// topic of small segments that are never deleted by time.
func coldTestBroker(_ dir: QDir, topic: String, partitions: Int32, segmentBytes: Int) throws -> Broker {
    var options = Broker.Options()
    options.coldCheckIntervalMs = 0
    let broker = try Broker.open(dataDirectory: dir.path, options: options)
    try broker.createTopic(topic, partitions: partitions, configs: ["segment.bytes": "\(segmentBytes)", "retention.ms": "-1"])
    return broker
}
