import Foundation
import Testing
import StrataBroker
import StrataLog
@testable import StrataStreams

final class TempDir: @unchecked Sendable {
    let path: String
    init() {
        var t = Array((NSTemporaryDirectory() + "/strata-streams-XXXXXX").utf8CString)
        path = String(cString: t.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func openBroker(_ dir: TempDir) throws -> Broker {
    var options = Broker.Options()
    options.retentionCheckIntervalMs = 0
    options.cleanerBackoffMs = 0
    return try Broker.open(dataDirectory: dir.path, options: options)
}

/// A record to produce: key, value, timestamp.
struct In {
    var key: String?
    var value: String?
    var ts: Int64
    init(_ key: String?, _ value: String?, _ ts: Int64) {
        self.key = key
        self.value = value
        self.ts = ts
    }
}

func produce(_ broker: Broker, _ topic: String, _ records: [In], partition: Int32? = nil) throws {
    guard !records.isEmpty else { return }
    try broker.produce(topic: topic, records: records.map {
        ProducerRecord(key: $0.key.map { Array($0.utf8) }, value: $0.value.map { Array($0.utf8) }, timestamp: $0.ts)
    }, partition: partition, acks: .leader)
}

/// An output record as text.
struct Out: Equatable, Hashable, CustomStringConvertible {
    var key: String?
    var value: String?
    init(_ key: String?, _ value: String?) {
        self.key = key
        self.value = value
    }
    var description: String { "\(key ?? "nil")=\(value ?? "nil")" }
}

/// Every record of `topic`, partition by partition, in offset order.
func readTopic(_ broker: Broker, _ topic: String) throws -> [Out] {
    guard let n = broker.partitionCount(topic) else { return [] }
    var out: [Out] = []
    for p in 0..<n {
        let log = try broker.log(topic: topic, partition: p)
        var next = log.logStartOffset
        while next < log.logEndOffset {
            let r = try log.read(from: next, maxBytes: 1 << 20)
            guard let slice = r.slice else { break }
            for c in try Broker.records(in: slice, topic: topic, partition: p, from: next) {
                out.append(Out(c.key.map { String(decoding: $0, as: UTF8.self) }, c.value.map { String(decoding: $0, as: UTF8.self) }))
            }
            next = r.nextOffset
        }
    }
    return out
}

/// Latest value per key (what a compacted topic converges to).
func latest(_ records: [Out]) -> [String: String?] {
    var m: [String: String?] = [:]
    for r in records { m[r.key ?? ""] = .some(r.value) }
    return m
}

/// Starts an application, waits until it has processed everything, and returns it (running).
func runUntilCaughtUp(_ topology: Topology, _ broker: Broker, id: String = "app", config: StreamsConfig = StreamsConfig(),
                      timeoutMs: Int64 = 60_000) async throws -> StreamsApp {
    let app = StreamsApp(applicationId: id, topology: topology, broker: broker, config: config)
    try await app.start()
    let ok = await app.waitUntilCaughtUp(timeoutMs: timeoutMs)
    #expect(ok, "the application caught up")
    return app
}

/// Runs `topology` over what is in the topics now, stops it, and returns `output`'s records.
func runOnce(_ topology: Topology, _ broker: Broker, output: String, id: String = "app", config: StreamsConfig = StreamsConfig()) async throws -> [Out] {
    let app = try await runUntilCaughtUp(topology, broker, id: id, config: config)
    await app.stop()
    #expect(app.errors.isEmpty, "\(app.errors)")
    return try readTopic(broker, output)
}

final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ s: String) { lock.lock(); items.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return items }
}
