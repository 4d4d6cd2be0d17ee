import Foundation
import Testing
import StrataBroker
import StrataLog
@testable import StrataStreams

/// Bad input never traps, edge cases of windows and joins, and failure visibility.
@Suite struct RobustnessTests {
    // MARK: Malformed and overflowing input

    @Test func malformedEscapesBecomeReplacementCharacters() throws {
        func field(_ json: String) -> String? { JSON.fields([Array("country".utf8)], in: Array(json.utf8))[0]?.text }
        #expect(field(#"{"country":"\u!!!!"}"#) == "\u{FFFD}!!!!")
        #expect(field(#"{"country":"\u12"}"#) == "\u{FFFD}12")
        #expect(field(#"{"country":"x\u"}"#) == "x\u{FFFD}")
        #expect(field(#"{"country":"\uD83D\u!!!!"}"#) == "\u{FFFD}\u{FFFD}!!!!", "a lone high surrogate, then a bad escape")
        #expect(field(#"{"country":"\uD83D\uDE00ok"}"#) == "😀ok")
        #expect(field(#"{"country":"a\"b\\"}"#) == "a\"b\\")
        let r = StreamRecord(key: "k", value: #"{"country":"\uzzzz"}"#, timestamp: 0)
        #expect(r.jsonString("country") == "\u{FFFD}zzzz")
        // Escaped timestamps and names are not timestamps (no crash either).
        #expect(JSON.timestampField(Array("ts".utf8), in: Array(#"{"ts":"\u!!"}"#.utf8)) == nil)
    }

    @Test func overflowingNumbersAreInvalidNotTraps() {
        #expect(JSONFieldValue(text: "99999999999999999", isString: false).cents == nil)
        #expect(JSONFieldValue(text: "92233720368547758.07", isString: false).cents == 9_223_372_036_854_775_807)
        #expect(JSONFieldValue(text: "92233720368547758.08", isString: false).cents == nil)
        #expect(JSONFieldValue(text: "-12.5", isString: false).cents == -1250)
        #expect(JSON.timestampField(Array("ts".utf8), in: Array(#"{"ts":9999999999999999999}"#.utf8)) == nil)
        #expect(JSON.timestampField(Array("ts".utf8), in: Array(#"{"ts":9223372036854775807}"#.utf8)) == .max)
        #expect(JSON.timestampField(Array("ts".utf8), in: Array(#"{"ts":-}"#.utf8)) == nil)
        #expect(Timestamps.parseUserTime("9999999999999999d", nowMs: 0) == nil)
    }

    @Test func windowedKeysDecodeNegativeBoundsAndRejectGarbage() {
        for w in [Window(start: -5000, end: 5000), Window(start: -9, end: -2), Window(start: 0, end: .max), Window(start: .min, end: 0)] {
            let d = WindowedKey.decode(WindowedKey.encode(Array("k@x".utf8), w))
            #expect(d?.window == w && d.map { String(decoding: $0.key, as: UTF8.self) } == "k@x")
        }
        for bad in ["k", "k@", "k@-", "k@--", "k@5", "k@5-", "k@-5", "k@a-b", "k@99999999999999999999-1"] {
            #expect(WindowedKey.decode(Array(bad.utf8)) == nil, "\(bad)")
        }
    }

    /// Negative times (Kafka's -1 "no timestamp") and times near Int64.max go through every
    /// windowed aggregation without a trap: skipped and counted.
    @Test func negativeAndHugeEventTimesAreSkippedByWindowedAggregations() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("in", partitions: 1)
        let times: [String] = ["1000", "-1", "9223372036854775807", "9223372036854775000", "-5000", "2000"]
        try produce(broker, "in", times.map { In("k", #"{"ts":\#($0)}"#, 5) })
        let b = StreamsBuilder()
        let grouped = b.stream("in", timestamp: .jsonField("ts")).groupByKey()
        grouped.windowedBy(.tumbling(sizeMs: 10_000)).count("tumbling").toStream().to("tumbling-out")
        grouped.windowedBy(.hopping(sizeMs: 10_000, advanceMs: 5_000, graceMs: 1_000)).count("hopping").toStream().to("hopping-out")
        grouped.windowedBy(SessionWindows(inactivityGapMs: 5_000, graceMs: 1_000)).count("sessions").toStream().to("sessions-out")
        let app = try await runUntilCaughtUp(try b.build(), broker)
        await app.stop()
        #expect(app.errors.isEmpty, "\(app.errors)")
        #expect(try readTopic(broker, "tumbling-out") == [Out("k@0-10000", "1"), Out("k@0-10000", "2")])
        #expect(latest(try readTopic(broker, "hopping-out")) == ["k@0-10000": "2"], "no window with a negative start")
        #expect(latest(try readTopic(broker, "sessions-out"))["k@1000-2000"] == .some("2"))
        #expect(app.metrics.snapshot.timestampOutOfRange == 12, "4 invalid times × 3 aggregations")
        #expect(TimeWindows.tumbling(sizeMs: 10).windows(containing: -1).isEmpty)
        #expect(TimeWindows.tumbling(sizeMs: 10).windows(containing: .max).isEmpty)
        #expect(TimeWindows.tumbling(sizeMs: 10).windows(containing: .max - 10) == [Window(start: .max - 10 - 7, end: .max - 7)])
    }

    // MARK: Windows

    /// A record exactly on a hop boundary belongs to the windows starting there and to those
    /// still open, never to the one ending there.
    @Test(arguments: [EmitStrategy.onUpdate, .onWindowClose])
    func hoppingRecordOnAHopBoundary(emit: EmitStrategy) async throws {
        let w = TimeWindows.hopping(sizeMs: 10_000, advanceMs: 5_000)
        #expect(w.windows(containing: 5000) == [Window(start: 0, end: 10_000), Window(start: 5000, end: 15_000)])
        #expect(w.windows(containing: 10_000) == [Window(start: 5000, end: 15_000), Window(start: 10_000, end: 20_000)])
        #expect(w.windows(containing: 0) == [Window(start: 0, end: 10_000)])
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("ticks", partitions: 1)
        try produce(broker, "ticks", [In("k", "x", 5000), In("k", "x", 10_000), In("k", "x", 40_000)])
        let b = StreamsBuilder()
        b.stream("ticks").groupByKey().windowedBy(w).count("hop", emit: emit).toStream().to("out")
        let out = try await runOnce(try b.build(), broker, output: "out")
        if emit == .onUpdate {
            #expect(out == [Out("k@5000-15000", "1"), Out("k@0-10000", "1"), Out("k@10000-20000", "1"), Out("k@5000-15000", "2"),
                            Out("k@40000-50000", "1"), Out("k@35000-45000", "1")])
        } else {
            #expect(out == [Out("k@0-10000", "1"), Out("k@5000-15000", "2"), Out("k@10000-20000", "1")])
        }
    }

    /// Gap 5 s, grace 0: k@1000, then m@3000 advances stream time; k@4000 is within k's gap and
    /// extends its session to [1000, 4000] (the session closes at stream time − grace − gap).
    @Test(arguments: [EmitStrategy.onUpdate, .onWindowClose])
    func sessionIsExtendedWithinTheGapAfterStreamTimeAdvanced(emit: EmitStrategy) async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("clicks", partitions: 1)
        try produce(broker, "clicks", [In("k", "x", 1000), In("m", "x", 3000), In("k", "x", 4000), In("k", "x", 8500), In("z", "x", 100_000)])
        let b = StreamsBuilder()
        b.stream("clicks").groupByKey()
            .windowedBy(SessionWindows(inactivityGapMs: 5000))
            .count("sessions", emit: emit)
            .toStream().to("out")
        let app = try await runUntilCaughtUp(try b.build(), broker)
        await app.stop()
        let out = try readTopic(broker, "out")
        if emit == .onUpdate {
            #expect(out == [Out("k@1000-1000", "1"), Out("m@3000-3000", "1"), Out("k@1000-1000", nil), Out("k@1000-4000", "2"),
                            Out("k@1000-4000", nil), Out("k@1000-8500", "3"), Out("z@100000-100000", "1")])
        } else {
            // m closes when k@8500 moves stream time past 3000 + gap; k's session when z arrives.
            #expect(out == [Out("m@3000-3000", "1"), Out("k@1000-8500", "3")])
        }
        #expect(app.metrics.snapshot.lateDropped == 0)
    }

    // MARK: Joins and multiple sources

    @Test func joinWithAnAggregatedTable() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("views", partitions: 2)
        try broker.createTopic("orders", partitions: 2)
        try produce(broker, "views", [In("p1", "5", 10), In("p1", "7", 20), In("p2", "1", 30)])
        try produce(broker, "orders", [In("p1", "o1", 25), In("p2", "o2", 26), In("p3", "o3", 40)])
        let b = StreamsBuilder()
        let views = b.stream("views").groupByKey()
        let counts = views.count("view-counts")
        let sums = views.aggregate("view-sums", initializer: { Int64(0) }) { r, s in s + (Int64(r.valueString ?? "") ?? 0) }
        let orders = b.stream("orders")
        orders.join(counts) { o, c in Array("\(o.valueString!):\(String(decoding: c, as: UTF8.self))".utf8) }.to("with-counts")
        orders.leftJoin(sums) { o, s in Array("\(o.valueString!):\(s.map { String(decoding: $0, as: UTF8.self) } ?? "-")".utf8) }.to("with-sums")
        let app = try await runUntilCaughtUp(try b.build(), broker)
        await app.stop()
        #expect(app.errors.isEmpty, "\(app.errors)")
        // o1 at 25 sees both p1 views (10, 20); o2 at 26 does not see p2's view at 30 yet.
        #expect(Set(try readTopic(broker, "with-counts")) == [Out("p1", "o1:2")])
        #expect(Set(try readTopic(broker, "with-sums")) == [Out("p1", "o1:12"), Out("p2", "o2:-"), Out("p3", "o3:-")])
    }

    /// One upstream input record goes to two read-back topics that one downstream task reads:
    /// nothing may be dropped as a duplicate.
    @Test func twoReadBackSourcesInOneTaskLoseNothing() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("in", partitions: 1)
        try produce(broker, "in", (0..<200).map { In("k\($0 % 7)", "\($0)", Int64($0)) })
        let b = StreamsBuilder()
        let s = b.stream("in")
        s.repartition(name: "a").merge(s.filter { Int($0.valueString!)! % 2 == 0 }.repartition(name: "b")).to("out")
        let topology = try b.build()
        #expect(topology.subtopologies.contains { Set($0.sourceTopics) == ["$a-repartition", "$b-repartition"] })
        let app = try await runUntilCaughtUp(topology, broker, config: { var c = StreamsConfig(); c.maxReadBytes = 2048; return c }())
        await app.stop()
        #expect(app.errors.isEmpty, "\(app.errors)")
        let out = try readTopic(broker, "out")
        #expect(out.count == 300)
        #expect(app.metrics.snapshot.duplicatesDropped == 0)
        var expected: [String: Int] = [:]
        for i in 0..<200 { expected["\(i)", default: 0] += i % 2 == 0 ? 2 : 1 }
        #expect(Dictionary(out.map { ($0.value!, 1) }, uniquingKeysWith: +) == expected)
    }

    /// The table's backlog spans many read chunks, all older than the stream records: every
    /// stream record must be joined against the fully loaded table.
    @Test func tableBacklogLargerThanOneReadChunk() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("products", partitions: 1, configs: ["cleanup.policy": "compact"])
        try broker.createTopic("orders", partitions: 1)
        let padding = String(repeating: "x", count: 200)
        try produce(broker, "products", (0..<1000).map { In("p\($0)", "name\($0)-\(padding)", 1) })
        try produce(broker, "orders", (0..<1000).map { In("p\(999 - $0)", "o\($0)", 2) })
        let b = StreamsBuilder()
        b.stream("orders").join(b.table("products")) { o, p in Array("\(o.valueString!)/\(String(decoding: p.prefix(9), as: UTF8.self))".utf8) }
            .to("joined")
        var config = StreamsConfig()
        config.maxReadBytes = 4096
        let out = try await runOnce(try b.build(), broker, output: "joined", config: config)
        #expect(out.count == 1000, "every order found its product")
    }

    // MARK: Limits and failures

    @Test func keysTooLongForAStoreAreSkippedNotFatal() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("in", partitions: 1)
        try broker.createTopic("t", partitions: 1)
        let long = String(repeating: "k", count: 600)
        try produce(broker, "in", [In("a", "x", 1), In(long, "x", 2), In("a", "x", 3)])
        try produce(broker, "t", [In(long, "v", 1), In("b", "v", 2)])
        let b = StreamsBuilder()
        b.stream("in").groupByKey().count("counts").toStream().to("counts-out")
        b.stream("in").groupByKey().windowedBy(.tumbling(sizeMs: 10)).count("windowed").toStream().to("windowed-out")
        _ = b.table("t")
        let topology = try b.build()
        let app = try await runUntilCaughtUp(topology, broker)
        await app.stop()
        #expect(app.errors.isEmpty, "\(app.errors)")
        #expect(app.metrics.snapshot.keyTooLong == 3)
        #expect(try readTopic(broker, "counts-out") == [Out("a", "1"), Out("a", "2")])
        // The state committed, so a restart works too.
        let again = try await runUntilCaughtUp(topology, broker)
        await again.stop()
        #expect(again.errors.isEmpty, "\(again.errors)")
    }

    @Test func aDeletedSourceTopicFailsTheTaskInsteadOfSpinning() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("in", partitions: 1)
        try produce(broker, "in", [In("k", "v", 1)])
        let b = StreamsBuilder()
        b.stream("in").to("out")
        let app = try await runUntilCaughtUp(try b.build(), broker)
        try broker.deleteTopic("in")
        #expect(await app.waitUntilCaughtUp(timeoutMs: 600_000) == false)
        await app.stop()
        #expect(app.errors.count == 1, "\(app.errors)")
    }

    /// Idle tasks have no wake-up timer: `stop()` must end their wait (by cancellation), even with
    /// uncommitted work and a commit due only in 10 minutes.
    @Test func stopEndsAnIdleWaitAtOnce() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("in", partitions: 2)
        try produce(broker, "in", [In("a", "1", 1), In("b", "2", 2)])
        let b = StreamsBuilder()
        b.stream("in").groupByKey().count("c").toStream().to("out")
        var config = StreamsConfig()
        config.commitIntervalMs = 600_000
        let app = try await runUntilCaughtUp(try b.build(), broker, config: config)
        let stopped = await withTaskGroup(of: Bool.self) { group in
            group.addTask { await app.stop(); return true }
            group.addTask { try? await Task.sleep(nanoseconds: 300_000_000_000); return false }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
        #expect(stopped, "stop() returned before the 5-minute guard")
        #expect(app.metrics.snapshot.commits >= 1, "the tasks with records committed on stop")
        #expect(app.errors.isEmpty)
    }

    /// LMDB state older than the changelog (the task committed elsewhere since, here an instance
    /// with another state directory) is rebuilt from the changelog instead of being used.
    @Test func staleLMDBStateIsRebuiltFromTheChangelog() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("words", partitions: 1)
        let b = StreamsBuilder()
        b.stream("words").groupByKey().count("counts").toStream().to("counts-out")
        let topology = try b.build()
        var configX = StreamsConfig()
        configX.stateDirectory = dir.path + "/state-x"
        var configY = StreamsConfig()
        configY.stateDirectory = dir.path + "/state-y"
        try produce(broker, "words", [In("a", "x", 1), In("b", "x", 2)])
        let x1 = try await runUntilCaughtUp(topology, broker, id: "wc", config: configX)
        await x1.stop()
        try produce(broker, "words", [In("a", "x", 3)])
        let y = try await runUntilCaughtUp(topology, broker, id: "wc", config: configY)
        await y.stop()
        try produce(broker, "words", [In("a", "x", 4)])
        let x2 = try await runUntilCaughtUp(topology, broker, id: "wc", config: configX)
        await x2.stop()
        #expect(x1.errors.isEmpty && y.errors.isEmpty && x2.errors.isEmpty)
        #expect(x2.metrics.snapshot.staleStateDetected == 1)
        #expect(x2.metrics.snapshot.processed == 1, "resumed after y's commit, not from x's older one")
        #expect(try readTopic(broker, "counts-out") == [Out("a", "1"), Out("b", "1"), Out("a", "2"), Out("a", "3")])
    }

    @Test func aRecordClosingManyWindowsIsProducedInBoundedSteps() async throws {
        // 60,000 keys with an open window each; one record far ahead closes them all at once
        // (emit-final): ~8.5 MB of results from one input record, more than the 8 MiB the task
        // may hold, so the collector produces while the record is still being processed.
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("ticks", partitions: 1)
        let keys = 60_000
        let pad = String(repeating: "p", count: 100)
        for start in stride(from: 0, to: keys, by: 2000) {
            try produce(broker, "ticks", (start..<(start + 2000)).map { In("key-\($0)-\(pad)", "x", 1000) })
        }
        try produce(broker, "ticks", [In("late-closer", "x", 10_000_000)])
        let b = StreamsBuilder()
        b.stream("ticks").groupByKey()
            .windowedBy(.tumbling(sizeMs: 60_000))
            .count("c", emit: .onWindowClose)
            .toStream()
            .to("out")
        let app = try await runUntilCaughtUp(try b.build(), broker)
        await app.stop()
        #expect(app.errors.isEmpty, "\(app.errors)")
        let out = try readTopic(broker, "out")
        #expect(out.count == keys, "every closed window produced once")
        #expect(Set(out.map { $0.key ?? "" }).count == keys)
        #expect(out.allSatisfy { $0.value == "1" })
        #expect(app.metrics.snapshot.produced == keys)
    }
}
