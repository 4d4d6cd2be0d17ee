import Foundation
import Testing
@testable import StrataBroker
@testable import StrataLog
@testable import StrataQuery

final class QDir: @unchecked Sendable {
    let path: String
    init() {
        var t = Array((NSTemporaryDirectory() + "/strata-query-XXXXXX").utf8CString)
        path = String(cString: t.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

@Suite struct QueryTests {
    static let types = ["page_view", "click", "purchase", "user_login"]

    /// 3 partitions, 6,000 events over 60 hours (one per 36 s), small segments.
    static func fixture(_ dir: QDir) throws -> (Broker, [(type: String, user: String, amount: Double, ts: Int64)]) {
        var options = Broker.Options()
        options.retentionCheckIntervalMs = 0
        options.cleanerBackoffMs = 0
        let broker = try Broker.open(dataDirectory: dir.path, options: options)
        try broker.createTopic("events", partitions: 3, configs: ["segment.bytes": "16384", "retention.ms": "-1"])
        var truth: [(String, String, Double, Int64)] = []
        let t0: Int64 = 1_759_276_800_000
        for i in 0..<6000 {
            let type = types[i % 4]
            let user = "u-\(i % 97)"
            let amount = type == "purchase" ? Double(i % 50) + 0.25 : 0
            let ts = t0 + Int64(i) * 36_000
            let value = "{\"event_type\":\"\(type)\",\"user_id\":\"\(user)\",\"amount\":\(amount)}"
            try broker.produce(topic: "events", records: [ProducerRecord(key: Array(user.utf8), value: Array(value.utf8), timestamp: ts)], acks: .leader)
            truth.append((type, user, amount, ts))
        }
        return (broker, truth)
    }

    func rows(_ engine: QueryEngine, _ sql: String) throws -> [[String?]] {
        var out: [[String?]] = []
        try engine.run(sql, header: { _ in }, row: { out.append($0) })
        return out
    }

    @Test func aggregatesMatchAnIndependentComputation() throws {
        let dir = QDir()
        let (broker, truth) = try Self.fixture(dir)
        let engine = try QueryEngine(broker: broker)
        let counts = try rows(engine, "SELECT value->>'$.event_type' AS t, count(*), sum(value->>'$.amount') FROM events GROUP BY t ORDER BY t")
        for r in counts {
            let expected = truth.filter { $0.type == r[0] }
            #expect(Int(r[1]!) == expected.count)
            #expect(abs(Double(r[2]!)! - expected.reduce(0) { $0 + $1.amount }) < 1e-6)
        }
        #expect(counts.count == 4)
        #expect(try rows(engine, "SELECT count(DISTINCT value->>'$.user_id') FROM events")[0][0] == "97")
        #expect(try rows(engine, "SELECT count(*) FROM events WHERE partition = 1")[0][0] != "6000")
        try broker.close()
    }

    @Test func aTimeWindowReadsOnlyTheSegmentsOverlappingIt() throws {
        let dir = QDir()
        let (broker, truth) = try Self.fixture(dir)
        let from = truth[3000].ts, to = truth[3100].ts  // one hour
        let full = try QueryEngine(broker: broker)
        _ = try rows(full, "SELECT count(*) FROM events")
        let allBytes = full.stats.bytesRead
        let windowed = try QueryEngine(broker: broker)
        let n = try rows(windowed, "SELECT count(*) FROM events WHERE timestamp >= \(from) AND timestamp < \(to)")
        #expect(Int(n[0][0]!) == truth.filter { $0.ts >= from && $0.ts < to }.count)
        #expect(windowed.stats.bytesRead * 10 < allBytes, "the window read \(windowed.stats.bytesRead) of \(allBytes) bytes")
        #expect(windowed.stats.segmentsRead < windowed.stats.segmentsTotal)
        let plan = try windowed.plan("SELECT count(*) FROM events WHERE timestamp >= \(from)")
        #expect(plan.joined().contains("VIRTUAL TABLE"))
        // Offsets and --since/--until-style bounds agree with a full scan.
        #expect(try rows(full, "SELECT count(*) FROM events WHERE partition = 0 AND offset BETWEEN 10 AND 19")[0][0] == "10")
        let bounded = try QueryEngine(broker: broker, sinceMs: from, untilMs: to)
        #expect(try rows(bounded, "SELECT count(*) FROM events")[0][0] == n[0][0])
        try broker.close()
    }

    @Test func badQueriesAreErrorsAndCannotWrite() throws {
        let dir = QDir()
        let (broker, _) = try Self.fixture(dir)
        let engine = try QueryEngine(broker: broker)
        #expect(throws: QueryError.self) { try rows(engine, "SELEKT 1") }
        #expect(throws: QueryError.self) { try rows(engine, "SELECT * FROM nosuchtopic") }
        #expect(throws: QueryError.self) { try rows(engine, "DELETE FROM events") }
        #expect(throws: QueryError.self) { try rows(engine, "INSERT INTO events(value) VALUES ('x')") }
        #expect(throws: QueryError.self) { try rows(engine, "ATTACH '/tmp/x.db' AS x") }
        try broker.produce(topic: "events", records: [ProducerRecord(value: Array("not json".utf8), timestamp: 0)], acks: .leader)
        let fresh = try QueryEngine(broker: broker)
        #expect(throws: QueryError.self) { try rows(fresh, "SELECT value->>'$.a' FROM events") }
        #expect(try broker.describeTopic("events").partitions.reduce(0) { $0 + $1.logEndOffset } == 6001, "nothing changed")
        try broker.close()
    }
}
