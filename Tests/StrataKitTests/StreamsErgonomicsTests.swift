import Foundation
import StrataCore
import StrataKit
import Testing

struct Order: Codable, Sendable {
    var user: String
    var product: String
    var amount: Int64
    var ts: Int64
}

struct Spend: Codable, JSONStateValue, Equatable {
    var orders = 0
    var total: Int64 = 0
}

/// Every record of `topic` as (key, value) text.
func readAll(_ strata: Strata, _ topic: String) async throws -> [(key: String, value: String)] {
    var out: [(key: String, value: String)] = []
    guard strata.topics.contains(topic) else { return out }  // sinks are created by their first record
    for try await r in strata.consume(topic, stopAtEnd: true) { out.append((r.keyString ?? "", r.valueString ?? "")) }
    return out
}

func waitFor(_ timeoutMs: Int64 = 90_000, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = monotonicMillis() + timeoutMs
    while monotonicMillis() < deadline {
        if try await condition() { return true }
        try await Task.sleep(nanoseconds: 20_000_000)
    }
    return try await condition()
}

@Suite struct StreamsErgonomicsTests {
    /// Orders are keyed by product; counting per user after `selectKey` must repartition, or each
    /// task would count only the users of its own partitions (split counts).
    @Test func selectKeyThenGroupByKeyRepartitions() async throws {
        let dir = TempDir()
        let strata = try Strata(directory: dir.path)
        defer { try? strata.close() }
        try strata.createTopic("orders", partitions: 4)
        var expected: [String: Int] = [:]
        var records: [ProducerRecord] = []
        for i in 0..<2000 {
            let order = Order(user: "u\(i % 23)", product: "p\(i % 17)", amount: Int64(i % 50), ts: 1000 + Int64(i))
            expected[order.user, default: 0] += 1
            records.append(try ProducerRecord(key: order.product, json: order))
        }
        try strata.produce("orders", records)

        let b = StreamsBuilder()
        b.stream("orders")
            .selectKey { $0.jsonString("user") }            // a String key: no byte conversion
            .groupByKey()                                   // repartitions: keys changed
            .count("orders-per-user")
            .toStream()
            .to("orders-per-user")
        let topology = try b.build()
        #expect(topology.subtopologies.count == 2)
        let app = strata.streamsApp("per-user", topology: topology)
        try await app.start()
        #expect(await app.waitUntilCaughtUp(timeoutMs: 90_000))
        await app.stop()
        #expect(strata.topics.contains { $0.hasPrefix("per-user-rekey-") && $0.hasSuffix("-repartition") })
        var latest: [String: String] = [:]
        for r in try await readAll(strata, "orders-per-user") { latest[r.key] = r.value }
        #expect(latest == expected.mapValues { String($0) })
    }

    /// Codable values in and out, and a Codable aggregate (JSONStateValue), with interactive
    /// queries reading the store while the application runs.
    @Test func codableAggregatesAndInteractiveQueries() async throws {
        let dir = TempDir()
        let strata = try Strata(directory: dir.path)
        defer { try? strata.close() }
        try strata.createTopic("orders", partitions: 2)
        var config = StreamsConfig()
        config.commitIntervalMs = 50
        let b = StreamsBuilder()
        b.stream("orders", timestamp: .jsonField("ts"))
            .groupBy(name: "by-user") { (r: StreamRecord) -> String? in r.jsonIfValid(as: Order.self)?.user }
            .aggregate("spend", initializer: { Spend() }) { r, s in
                guard let o = r.jsonIfValid(as: Order.self) else { return s }
                return Spend(orders: s.orders + 1, total: s.total + o.amount)
            }
        b.stream("orders", timestamp: .jsonField("ts"))
            .selectKey { $0.jsonString("user") }
            .groupByKey(name: "user-minutes")
            .windowedBy(.tumbling(sizeMs: 60_000))
            .count("per-minute")
        let app = strata.streamsApp("spend", topology: try b.build(), config: config)
        try await app.start()
        defer { Task { await app.stop() } }
        for i in 0..<10 { try strata.produce("orders", key: "x", json: Order(user: "alice", product: "p", amount: Int64(i), ts: 60_000 + Int64(i))) }
        try strata.produce("orders", key: "x", json: Order(user: "bob", product: "p", amount: 7, ts: 130_000))
        #expect(await app.waitUntilCaughtUp(timeoutMs: 90_000))
        // Reads see the last commit (commitIntervalMs = 50 ms here).
        #expect(try await waitFor { try app.get("spend", key: "alice", as: Spend.self) == Spend(orders: 10, total: 45) })
        #expect(try app.get("spend", key: "bob", as: Spend.self) == Spend(orders: 1, total: 7))
        #expect(try app.get("spend", key: "nobody", as: Spend.self) == nil)
        #expect(try await waitFor { try app.entries("spend", as: Spend.self).count == 2 })
        #expect(try await waitFor { try app.windows("per-minute", key: "alice", as: Int64.self).map(\.value) == [10] })
        let w = try app.windows("per-minute", key: "alice", as: Int64.self)
        #expect(w.first?.window == Window(start: 60_000, end: 120_000))
        #expect(try app.windows("per-minute", key: "alice", fromMs: 61_000, as: Int64.self).isEmpty)
        #expect(throws: StreamsApp.QueryError.self) { _ = try app.get("per-minute", key: "alice", as: Int64.self) }
        #expect(throws: StreamsApp.QueryError.self) { _ = try app.get("nope", key: "alice", as: Int64.self) }
    }

    /// `.onWindowCloseOrIdle`: the last windows of a stream that went quiet are emitted without
    /// a later event; `.onWindowClose` alone keeps waiting for one.
    @Test func lastWindowsCloseOnTheWallClockWhenTheStreamGoesQuiet() async throws {
        let dir = TempDir()
        let strata = try Strata(directory: dir.path)
        defer { try? strata.close() }
        try strata.createTopic("clicks", partitions: 2)
        let b = StreamsBuilder()
        let grouped = b.stream("clicks").groupByKey()
        grouped.windowedBy(.tumbling(sizeMs: 1000, graceMs: 100))
            .count("idle-closing", emit: .onWindowCloseOrIdle(idleMs: 200)).toStream().to("final-idle")
        grouped.windowedBy(.tumbling(sizeMs: 1000, graceMs: 100))
            .count("stream-time-only", emit: .onWindowClose).toStream().to("final-stream-time")
        let app = strata.streamsApp("quiet", topology: try b.build())
        try await app.start()
        // Event times near the window ends: [0,1000) x3 for a, [1000,2000) x2 for a, b x1.
        for t in [100, 500, 990] { try strata.produce("clicks", key: "a", value: "c", timestamp: Int64(t)) }
        for t in [1500, 1990] { try strata.produce("clicks", key: "a", value: "c", timestamp: Int64(t)) }
        try strata.produce("clicks", key: "b", value: "c", timestamp: 1995)
        #expect(try await waitFor(90_000) { try await readAll(strata, "final-idle").count == 3 })
        let final = try await readAll(strata, "final-idle").map { "\($0.key)=\($0.value)" }.sorted()
        #expect(final == ["a@0-1000=3", "a@1000-2000=2", "b@1000-2000=1"])
        // Stream time alone closed only the first window of `a`'s partition (1990 - 100 >= 1000) at most.
        let streamTimeOnly = try await readAll(strata, "final-stream-time").map(\.key)
        #expect(!streamTimeOnly.contains("a@1000-2000") && !streamTimeOnly.contains("b@1000-2000"))
        // A record for a window closed by the wall clock is late: dropped, counted.
        try strata.produce("clicks", key: "a", value: "c", timestamp: 1999)
        #expect(await app.waitUntilCaughtUp(timeoutMs: 90_000))
        #expect(app.metrics.snapshot.lateDropped >= 1)
        await app.stop()
        #expect(try await readAll(strata, "final-idle").count == 3)
    }

    final class Batcher: StreamProcessor {
        var pending: [StreamRecord] = []
        func process(_ record: StreamRecord, emit: (StreamRecord) -> Void) { pending.append(record) }
        func punctuate(wallClockMs: Int64, emit: (StreamRecord) -> Void) {
            guard !pending.isEmpty else { return }
            emit(StreamRecord(key: "batch", value: "\(pending.count)", timestamp: pending.last!.timestamp))
            pending.removeAll()
        }
    }

    /// A custom processor punctuated on the wall clock emits with no further input.
    @Test func wallClockPunctuation() async throws {
        let dir = TempDir()
        let strata = try Strata(directory: dir.path)
        defer { try? strata.close() }
        try strata.createTopic("in")
        let b = StreamsBuilder()
        b.stream("in").process("batch", punctuateEveryMs: 50) { Batcher() }.to("batches")
        let app = strata.streamsApp("punct", topology: try b.build())
        try await app.start()
        try strata.produce("in", (0..<7).map { ProducerRecord(key: "k", value: "\($0)") })
        #expect(try await waitFor { try await readAll(strata, "batches").map(\.value).reduce(0) { $0 + Int($1)! } == 7 })
        await app.stop()
    }
}
