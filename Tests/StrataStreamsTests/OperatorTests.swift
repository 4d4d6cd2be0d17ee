import Foundation
import Testing
import StrataBroker
import StrataLog
@testable import StrataStreams

/// Every operator against hand-computed outputs on fixed inputs.
@Suite struct OperatorTests {
    @Test func mapFilterFlatMapPeekSelectKeyMapValuesTo() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("in", partitions: 1)
        try produce(broker, "in", [In("k1", "hello world", 1), In("k2", "skip me", 2), In("k3", "one", 3), In(nil, "a b c", 4), In("k5", nil, 5)])
        let peeked = Collected()
        let b = StreamsBuilder()
        let source = b.stream("in")
        source.filter { $0.value != nil }
            .map { $0.withValue($0.valueString!.uppercased()) }
            .filterNot { $0.valueString!.hasPrefix("SKIP") }
            .flatMap { r in r.valueString!.split(separator: " ").map { r.withValue(String($0)) } }
            .peek { peeked.add("\($0.keyString ?? "nil"):\($0.valueString!)@\($0.timestamp)") }
            .to("out")
        source.selectKey { $0.value.map { Array($0.prefix(1)) } }
            .mapValues { r in r.value.map { Array(String($0.count).utf8) } }
            .to("lengths")
        let app = try await runUntilCaughtUp(try b.build(), broker)
        await app.stop()
        #expect(app.errors.isEmpty)
        #expect(try readTopic(broker, "out") == [Out("k1", "HELLO"), Out("k1", "WORLD"), Out("k3", "ONE"), Out(nil, "A"), Out(nil, "B"), Out(nil, "C")])
        #expect(peeked.all == ["k1:HELLO@1", "k1:WORLD@1", "k3:ONE@3", "nil:A@4", "nil:B@4", "nil:C@4"])
        #expect(try readTopic(broker, "lengths") == [Out("h", "11"), Out("s", "7"), Out("o", "3"), Out("a", "5"), Out(nil, nil)])
        #expect(app.metrics.snapshot.processed == 5)
    }

    @Test func branchAndMerge() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("numbers", partitions: 1)
        try produce(broker, "numbers", (1...6).map { In("k\($0)", "\($0)", Int64($0)) })
        let b = StreamsBuilder()
        let branches = b.stream("numbers").branch([
            { Int($0.valueString!)! % 2 == 0 },
            { Int($0.valueString!)! % 3 == 0 },
        ])
        branches[0].to("even")
        branches[1].to("three")
        branches[0].merge(branches[1]).to("merged")
        let app = try await runUntilCaughtUp(try b.build(), broker)
        await app.stop()
        #expect(try readTopic(broker, "even").map(\.value) == ["2", "4", "6"])
        #expect(try readTopic(broker, "three").map(\.value) == ["3"])
        #expect(try readTopic(broker, "merged").map(\.value) == ["2", "3", "4", "6"])
    }

    @Test func groupByKeyCountReduceAggregate() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("events", partitions: 1)
        try produce(broker, "events", [In("a", "1", 1), In("b", "2", 2), In("a", "3", 3), In(nil, "9", 4), In("a", nil, 5), In("b", "4", 6)])
        let b = StreamsBuilder()
        let grouped = b.stream("events").groupByKey()
        grouped.count("counts").toStream().to("counts-out")
        grouped.reduce("reduced") { $0 + Array("+".utf8) + $1 }.toStream().to("reduced-out")
        grouped.aggregate("sums", initializer: { Int64(0) }) { r, sum in sum + Int64(r.valueString!)! }.toStream().to("sums-out")
        let topology = try b.build()
        #expect(topology.subtopologies.count == 1)
        #expect(topology.subtopologies[0].stores == ["counts", "reduced", "sums"])
        let app = try await runUntilCaughtUp(topology, broker)
        await app.stop()
        #expect(try readTopic(broker, "counts-out") == [Out("a", "1"), Out("b", "1"), Out("a", "2"), Out("b", "2")])
        #expect(try readTopic(broker, "reduced-out") == [Out("a", "1"), Out("b", "2"), Out("a", "1+3"), Out("b", "2+4")])
        #expect(try readTopic(broker, "sums-out") == [Out("a", "1"), Out("b", "2"), Out("a", "4"), Out("b", "6")])
        #expect(broker.topicNames().contains("app-counts_reduced_sums-changelog"))
    }

    @Test func groupByRepartitionsThroughAnInternalTopic() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("clicks", partitions: 3)
        let countries = ["US", "FR", "BR", "JP", "DE"]
        var expected: [String: Int] = [:]
        var input: [In] = []
        for i in 0..<300 {
            let c = countries[(i * 7 + i / 11) % countries.count]
            expected[c, default: 0] += 1
            input.append(In("u-\(i % 37)", "{\"country\":\"\(c)\",\"n\":\(i)}", Int64(i)))
        }
        try produce(broker, "clicks", input)
        let b = StreamsBuilder()
        b.stream("clicks")
            .groupBy(name: "by-country") { $0.jsonString("country").map { Array($0.utf8) } }
            .count("country-counts")
            .toStream()
            .to("country-counts-out")
        let topology = try b.build()
        #expect(topology.subtopologies.count == 2)
        let out = try await runOnce(topology, broker, output: "country-counts-out")
        #expect(broker.partitionCount("app-by-country-repartition") == 3)
        #expect(out.count == 300, "one update per input record")
        #expect(latest(out) == expected.mapValues { .some(String($0)) })
    }

    @Test(arguments: [EmitStrategy.onUpdate, .onWindowClose])
    func tumblingWindowsWithOutOfOrderAndLateEvents(emit: EmitStrategy) async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("ticks", partitions: 1)
        let times: [(String, Int64)] = [("k", 1000), ("j", 2000), ("k", 9999), ("k", 10000), ("k", 3000), ("k", 16000), ("k", 4000),
                                        ("k", 19999), ("k", 20000), ("k", 31000), ("k", 50000)]
        try produce(broker, "ticks", times.map { In($0.0, "x", $0.1) })
        let mismatches = Collected()
        let b = StreamsBuilder()
        b.stream("ticks").groupByKey()
            .windowedBy(.tumbling(sizeMs: 10_000, graceMs: 5_000))
            .count("tumbling", emit: emit)
            .toStream()
            .peek { r in
                // Windowed records carry their window, and their key encodes it (checked after the
                // run: an expectation failing on a task's thread must not crash the test runner).
                if r.window == nil || r.key.flatMap(WindowedKey.decode)?.window != r.window { mismatches.add("\(r.keyString ?? "nil") \(String(describing: r.window))") }
            }
            .to("out")
        let app = try await runUntilCaughtUp(try b.build(), broker)
        await app.stop()
        let out = try readTopic(broker, "out")
        #expect(mismatches.all.isEmpty, "\(mismatches.all)")
        if emit == .onUpdate {
            #expect(out == [Out("k@0-10000", "1"), Out("j@0-10000", "1"), Out("k@0-10000", "2"), Out("k@10000-20000", "1"),
                            Out("k@0-10000", "3"), Out("k@10000-20000", "2"), Out("k@10000-20000", "3"), Out("k@20000-30000", "1"),
                            Out("k@30000-40000", "1"), Out("k@50000-60000", "1")])
        } else {
            #expect(out == [Out("j@0-10000", "1"), Out("k@0-10000", "3"), Out("k@10000-20000", "3"), Out("k@20000-30000", "1"),
                            Out("k@30000-40000", "1")])
        }
        #expect(app.metrics.snapshot.lateDropped == 1, "4000 arrives after window [0,10000) closed at stream time 16000")
    }

    @Test(arguments: [EmitStrategy.onUpdate, .onWindowClose])
    func hoppingWindows(emit: EmitStrategy) async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("ticks", partitions: 1)
        try produce(broker, "ticks", [In("k", "x", 7000), In("k", "x", 12000), In("k", "x", 2000), In("k", "x", 30000)])
        let b = StreamsBuilder()
        b.stream("ticks").groupByKey()
            .windowedBy(.hopping(sizeMs: 10_000, advanceMs: 5_000))
            .count("hopping", emit: emit)
            .toStream().to("out")
        let app = try await runUntilCaughtUp(try b.build(), broker)
        await app.stop()
        let out = try readTopic(broker, "out")
        if emit == .onUpdate {
            #expect(out == [Out("k@5000-15000", "1"), Out("k@0-10000", "1"), Out("k@10000-20000", "1"), Out("k@5000-15000", "2"),
                            Out("k@30000-40000", "1"), Out("k@25000-35000", "1")])
        } else {
            #expect(out == [Out("k@0-10000", "1"), Out("k@5000-15000", "2"), Out("k@10000-20000", "1")])
        }
        #expect(app.metrics.snapshot.lateDropped == 1)
        #expect(TimeWindows.hopping(sizeMs: 10_000, advanceMs: 5_000).windows(containing: 7000) == [Window(start: 0, end: 10000), Window(start: 5000, end: 15000)])
    }

    @Test(arguments: [EmitStrategy.onUpdate, .onWindowClose])
    func sessionWindowsMergeAndDropLateRecords(emit: EmitStrategy) async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("clicks", partitions: 1)
        try produce(broker, "clicks", [In("k", "x", 1000), In("k", "x", 3000), In("k", "x", 20000), In("k", "x", 12000), In("k", "x", 16000),
                                       In("k", "x", 2000), In("q", "x", 2500), In("k", "x", 40000)])
        let b = StreamsBuilder()
        b.stream("clicks").groupByKey()
            .windowedBy(SessionWindows(inactivityGapMs: 5000, graceMs: 10_000))
            .count("sessions", emit: emit)
            .toStream().to("out")
        let app = try await runUntilCaughtUp(try b.build(), broker)
        await app.stop()
        let out = try readTopic(broker, "out")
        if emit == .onUpdate {
            #expect(out == [Out("k@1000-1000", "1"), Out("k@1000-1000", nil), Out("k@1000-3000", "2"), Out("k@20000-20000", "1"),
                            Out("k@12000-12000", "1"), Out("k@12000-12000", nil), Out("k@20000-20000", nil), Out("k@12000-20000", "3"),
                            Out("k@40000-40000", "1")])
        } else {
            #expect(out == [Out("k@1000-3000", "2"), Out("k@12000-20000", "3")])
        }
        #expect(app.metrics.snapshot.lateDropped == 2)
    }

    @Test func sessionAggregateMergesWithTheMerger() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("amounts", partitions: 1)
        try produce(broker, "amounts", [In("k", "5", 1000), In("k", "7", 9000), In("k", "1", 5000), In("k", "100", 60000)])
        let b = StreamsBuilder()
        b.stream("amounts").groupByKey()
            .windowedBy(SessionWindows(inactivityGapMs: 5000, graceMs: 10_000))
            .aggregate("session-sums", emit: .onWindowClose, initializer: { Int64(0) }, { r, s in s + Int64(r.valueString!)! }, merger: { $0 + $1 })
            .toStream().to("out")
        let out = try await runOnce(try b.build(), broker, output: "out")
        // 1000 and 9000 are two sessions until 5000 bridges them: [1000, 9000] = 5 + 7 + 1.
        #expect(out == [Out("k@1000-9000", "13")])
    }

    @Test func eventTimeFromAJSONField() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("orders", partitions: 1)
        try produce(broker, "orders", [
            In("a", #"{"ts":"2025-10-01T00:00:30.000Z"}"#, 1),
            In("a", #"{"ts":1759276845000}"#, 2),
            In("a", #"{"ts":"2025-10-01T00:01:10.000Z"}"#, 3),
            In("a", #"{"no_ts":true}"#, 1759276930000),
        ])
        let b = StreamsBuilder()
        b.stream("orders", timestamp: .jsonField("ts")).groupByKey()
            .windowedBy(.tumbling(sizeMs: 60_000))
            .count("per-minute", emit: .onWindowClose)
            .toStream().to("out")
        let app = try await runUntilCaughtUp(try b.build(), broker)
        await app.stop()
        let minute0 = Timestamps.parseRFC3339("2025-10-01T00:00:00Z")!
        #expect(try readTopic(broker, "out") == [Out("a@\(minute0)-\(minute0 + 60_000)", "2"), Out("a@\(minute0 + 60_000)-\(minute0 + 120_000)", "1")])
        #expect(app.metrics.snapshot.invalidTimestamps == 1)
    }

    @Test func streamTableJoinAndLeftJoinWithTombstones() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("products", partitions: 2, configs: ["cleanup.policy": "compact"])
        try broker.createTopic("orders", partitions: 2)
        try produce(broker, "products", [In("p1", "apple", 100), In("p2", "pear", 100)])
        try produce(broker, "orders", [In("p1", "o1", 200), In("p2", "o2", 300), In("p3", "o3", 350)])
        try produce(broker, "products", [In("p2", nil, 400)])
        try produce(broker, "orders", [In("p2", "o4", 500)])
        try produce(broker, "products", [In("p3", "plum", 600)])
        try produce(broker, "orders", [In("p3", "o5", 700)])
        let b = StreamsBuilder()
        let products = b.table("products")
        let orders = b.stream("orders")
        orders.join(products) { o, p in Array("\(o.valueString!)/\(String(decoding: p, as: UTF8.self))".utf8) }.to("joined")
        orders.leftJoin(products) { o, p in Array("\(o.valueString!)/\(p.map { String(decoding: $0, as: UTF8.self) } ?? "-")".utf8) }.to("left-joined")
        let topology = try b.build()
        #expect(topology.subtopologies.count == 1, "stream and table are co-partitioned: one task per partition")
        let app = try await runUntilCaughtUp(topology, broker)
        await app.stop()
        #expect(Set(try readTopic(broker, "joined")) == [Out("p1", "o1/apple"), Out("p2", "o2/pear"), Out("p3", "o5/plum")])
        #expect(Set(try readTopic(broker, "left-joined")) == [Out("p1", "o1/apple"), Out("p2", "o2/pear"), Out("p3", "o3/-"), Out("p2", "o4/-"), Out("p3", "o5/plum")])
        // Per key (= per partition) the order is the event-time order.
        #expect(try readTopic(broker, "left-joined").filter { $0.key == "p2" }.map(\.value) == ["o2/pear", "o4/-"])
    }

    @Test func joinRefusesSourcesThatAreNotCoPartitioned() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("products", partitions: 2, configs: ["cleanup.policy": "compact"])
        try broker.createTopic("orders", partitions: 3)
        let b = StreamsBuilder()
        b.stream("orders").join(b.table("products")) { r, _ in r.value }.to("out")
        let app = StreamsApp(applicationId: "app", topology: try b.build(), broker: broker)
        await #expect(throws: StreamsError.self) { try await app.start() }
    }

    @Test func aFailingTaskReportsItsError() async throws {
        let dir = TempDir()
        var options = Broker.Options()
        options.retentionCheckIntervalMs = 0
        options.cleanerBackoffMs = 0
        options.autoCreateTopics = false
        let broker = try Broker.open(dataDirectory: dir.path, options: options)
        try broker.createTopic("in", partitions: 1)
        try produce(broker, "in", [In("k", "v", 1)])
        let b = StreamsBuilder()
        b.stream("in").to("no-such-topic")
        let app = StreamsApp(applicationId: "app", topology: try b.build(), broker: broker)
        try await app.start()
        // Woken by the failure: the wait ends early with false (it would last 10 minutes otherwise).
        #expect(await app.waitUntilCaughtUp(timeoutMs: 600_000) == false)
        #expect(app.metrics.snapshot.failedTasks == 1)
        await app.stop()
        #expect(app.errors.count == 1 && app.errors[0].contains("no-such-topic"), "\(app.errors)")
    }

    @Test func invalidTopologiesAreRefused() throws {
        let b = StreamsBuilder()
        _ = b.stream("a").groupByKey().count("same")
        _ = b.stream("b").groupByKey().count("same")
        #expect(throws: StreamsError.self) { try b.build() }
        let c = StreamsBuilder()
        _ = c.stream("a").groupByKey().count("bad name")
        #expect(throws: StreamsError.self) { try c.build() }
        let d = StreamsBuilder()
        let windowed = d.stream("a").groupByKey().windowedBy(.tumbling(sizeMs: 1000)).count("w")
        d.stream("b").join(windowed) { r, _ in r.value }.to("out")
        #expect(throws: StreamsError.self) { try d.build() }
    }
}
