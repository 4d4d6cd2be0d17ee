import Foundation
import Synchronization
import Testing
import StrataBroker
import StrataLog
@testable import StrataStreams

/// Input for the recovery tests: users on 4 partitions, event times mostly increasing with a
/// share of late (out-of-order) records, so windows close, late records are dropped, and the
/// result depends on stream time being restored exactly.
func recoveryInput(_ range: Range<Int>) -> [In] {
    let countries = ["US", "FR", "BR", "JP", "DE", "IN"]
    return range.map { i in
        var t = Int64(i) * 10
        if i % 17 == 0 { t -= Int64((i * 7919) % 2_500) }  // up to 2.5 s late: some beyond the grace
        let c = countries[(i * 31 + i / 7) % countries.count]
        return In("u-\(i % 53)", "{\"country\":\"\(c)\",\"amount\":\(i % 100).5,\"n\":\(i)}", max(0, t))
    }
}

/// A two-stage topology: per-user tumbling counts (emit-final, windows of 1 s, grace 500 ms) and
/// per-country totals through a repartition topic. `onInput` sees every input record (a test hook);
/// `copyTo` also copies every input to that topic (an external output).
func recoveryTopology(onInput: @escaping @Sendable (StreamRecord) -> Void = { _ in }, copyTo: String? = nil) throws -> Topology {
    let b = StreamsBuilder()
    let events = b.stream("events").peek(onInput)
    if let copyTo { events.to(copyTo) }
    events.groupByKey()
        .windowedBy(.tumbling(sizeMs: 1000, graceMs: 500))
        .count("user-windows", emit: .onWindowClose)
        .toStream().to("user-windows-out")
    events.groupBy(name: "by-country") { $0.jsonString("country").map { Array($0.utf8) } }
        .aggregate("country-totals", initializer: { Int64(0) }) { r, sum in sum + (r.jsonFields(["amount"])[0]?.cents ?? 0) }
        .toStream().to("country-out")
    return try b.build()
}

struct Results: Equatable {
    var windows: [String: String?]
    var countries: [String: String?]
    var windowRecords: [Out]
}

func results(_ broker: Broker) throws -> Results {
    let w = try readTopic(broker, "user-windows-out")
    return Results(windows: latest(w), countries: latest(try readTopic(broker, "country-out")), windowRecords: w)
}

func setupRecoveryTopics(_ broker: Broker) throws {
    try broker.createTopic("events", partitions: 4)
    try broker.createTopic("user-windows-out", partitions: 4, configs: ["cleanup.policy": "compact"])
    try broker.createTopic("country-out", partitions: 2, configs: ["cleanup.policy": "compact"])
}

/// The uninterrupted run every recovery scenario must match.
func referenceResults(_ n: Int) async throws -> Results {
    let dir = TempDir()
    let broker = try openBroker(dir)
    try setupRecoveryTopics(broker)
    try produce(broker, "events", recoveryInput(0..<n))
    let app = try await runUntilCaughtUp(try recoveryTopology(), broker, id: "rec")
    await app.stop()
    #expect(app.errors.isEmpty)
    #expect(app.metrics.snapshot.lateDropped > 0, "the input has late records")
    return try results(broker)
}

/// Small chunks and frequent commits, so that a crash lands between commits.
var crashConfig: StreamsConfig {
    var c = StreamsConfig()
    c.commitEveryRecords = 150
    c.commitIntervalMs = 600_000
    c.maxReadBytes = 4096
    return c
}

/// Stops every task of `app` without a commit (as a crash would) once `count` input records with
/// `"n" >= fromInput` went through the topology; `fired` completes then.
final class CrashHook: Sendable {
    let app = Mutex<StreamsApp?>(nil)
    private let seen = Atomic<Int>(0)
    private let count: Int
    private let fromInput: Int64
    private let signal: AsyncStream<Void>.Continuation
    let fired: Task<Bool, Never>

    init(after count: Int, fromInput: Int64) {
        self.count = count
        self.fromInput = fromInput
        let (stream, continuation) = AsyncStream<Void>.makeStream()
        signal = continuation
        fired = Task {
            for await _ in stream { return true }
            return false
        }
    }

    func saw(_ r: StreamRecord) {
        guard (r.jsonInt("n") ?? -1) >= fromInput else { return }
        guard seen.add(1, ordering: .relaxed).newValue == count, let app = app.withLock({ $0 }) else { return }
        for task in app.runningTasks { task.requestStop(graceful: false) }
        signal.yield()
        signal.finish()
    }
}

@Suite(.serialized) struct RecoveryTests {
    static let n = 3000

    @Test func abortedMidStreamAndRestartedMatchesAnUninterruptedRun() async throws {
        let reference = try await referenceResults(Self.n)

        let dir = TempDir()
        let broker = try openBroker(dir)
        try setupRecoveryTopics(broker)
        // Run 2's crash is triggered from inside the processing: when its tasks have seen 300
        // records of the second third, every task is told to stop without a commit. Each then
        // ends after its current chunk (at most maxReadBytes = 4 KiB of input), so the crash
        // lands mid-stream, whatever the timing.
        let crashing = CrashHook(after: 300, fromInput: 1000)
        let topology = try recoveryTopology(onInput: { crashing.saw($0) })
        try produce(broker, "events", recoveryInput(0..<1000))
        // Run 1: processes the first third, then crashes (no final commit).
        let a = try await runUntilCaughtUp(topology, broker, id: "rec", config: crashConfig)
        #expect(a.metrics.snapshot.commits > 0)
        await a.abort()
        // Run 2: more input arrives; crash while it is being processed.
        let b = StreamsApp(applicationId: "rec", topology: topology, broker: broker, config: crashConfig)
        crashing.app.withLock { $0 = b }
        try await b.start()
        try produce(broker, "events", recoveryInput(1000..<2000))
        #expect(await crashing.fired.value, "the hook saw 300 records of the second third")
        await b.abort()
        #expect(b.metrics.snapshot.restoredFromChangelog == 0, "state came from LMDB")
        let committed = try (0..<4).reduce(Int64(0)) { $0 + (try broker.committedOffset(group: "rec", topic: "events", partition: $1) ?? 0) }
        #expect(committed < 2000, "the crash landed before run 2 had committed all of its input (committed \(committed))")
        // Run 3: the rest, to the end, with a graceful stop.
        try produce(broker, "events", recoveryInput(2000..<Self.n))
        let c = try await runUntilCaughtUp(topology, broker, id: "rec", config: crashConfig)
        await c.stop()
        #expect(a.errors.isEmpty && b.errors.isEmpty && c.errors.isEmpty)
        let got = try results(broker)
        #expect(got.windows == reference.windows, "per user and window: the same final counts")
        #expect(got.countries == reference.countries, "per country: the same totals (repartitioned records deduplicated)")
        #expect(Set(got.windowRecords) == Set(reference.windowRecords), "only re-emissions of the same results")
        // Each input record is processed once by each subtopology (2n) plus what each crash lost:
        // run 1 ends with uncommitted records (every task has ~250 records, commits every 150+).
        let processed = a.metrics.snapshot.processed + b.metrics.snapshot.processed + c.metrics.snapshot.processed
        #expect(processed > Self.n * 2, "records processed after the last commit were processed again")
    }

    @Test func stateIsRestoredFromTheChangelogWhenLMDBIsGone() async throws {
        let reference = try await referenceResults(Self.n)

        let dir = TempDir()
        let broker = try openBroker(dir)
        try setupRecoveryTopics(broker)
        let topology = try recoveryTopology()
        try produce(broker, "events", recoveryInput(0..<1800))
        let a = try await runUntilCaughtUp(topology, broker, id: "rec", config: crashConfig)
        await a.stop()
        // A new machine: the LMDB state directory is lost; the broker's topics remain.
        let stateDir = dir.path + "/streams/rec"
        #expect(FileManager.default.fileExists(atPath: stateDir + "/data.mdb"))
        try FileManager.default.removeItem(atPath: stateDir)
        try produce(broker, "events", recoveryInput(1800..<Self.n))
        let b = try await runUntilCaughtUp(topology, broker, id: "rec", config: crashConfig)
        await b.stop()
        #expect(b.errors.isEmpty)
        #expect(b.metrics.snapshot.restoredFromChangelog == 8, "4 tasks of each stateful subtopology")
        let got = try results(broker)
        #expect(got.windows == reference.windows)
        #expect(got.countries == reference.countries)
        // Output partitions interleave the tasks' records in time order: compare as multisets.
        #expect(got.windowRecords.count == reference.windowRecords.count, "a graceful stop re-emits nothing")
        #expect(Set(got.windowRecords) == Set(reference.windowRecords))
    }

    @Test func anInterruptedCommitsChangelogTailIsRepaired() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        try broker.createTopic("words", partitions: 1)
        try produce(broker, "words", [In("a", "x", 1), In("b", "x", 2), In("a", "x", 3)])
        let b = StreamsBuilder()
        b.stream("words").groupByKey().count("word-counts").toStream().to("word-counts-out")
        let topology = try b.build()
        let a = try await runUntilCaughtUp(topology, broker, id: "wc")
        await a.stop()
        // A crash after a commit's changelog batch but before its LMDB transaction: records past
        // the last checkpoint (count of "a" = 99, a new key "z").
        let changelog = "wc-word-counts-changelog"
        try broker.produce(topic: changelog, records: [
            ProducerRecord(key: [0] + Array("a".utf8), value: Array("99".utf8), timestamp: 9),
            ProducerRecord(key: [0] + Array("z".utf8), value: Array("1".utf8), timestamp: 9),
        ], partition: 0)
        let restarted = try await runUntilCaughtUp(topology, broker, id: "wc")
        await restarted.stop()
        #expect(restarted.metrics.snapshot.changelogRepairs == 1)
        // Now lose LMDB: the changelog alone must give the committed state (a=2, b=1, no z).
        try FileManager.default.removeItem(atPath: dir.path + "/streams/wc")
        try produce(broker, "words", [In("a", "x", 4), In("z", "x", 5)])
        let fresh = try await runUntilCaughtUp(topology, broker, id: "wc")
        await fresh.stop()
        #expect(fresh.metrics.snapshot.restoredFromChangelog == 1)
        let out = try readTopic(broker, "word-counts-out")
        #expect(out == [Out("a", "1"), Out("b", "1"), Out("a", "2"), Out("a", "3"), Out("z", "1")])
    }

    @Test func twoInstancesSplitThePartitionsAndMatchOneInstance() async throws {
        let reference = try await referenceResults(Self.n)

        let dir = TempDir()
        let broker = try openBroker(dir)
        try setupRecoveryTopics(broker)
        let topology = try recoveryTopology()
        let a = StreamsApp(applicationId: "rec", topology: topology, broker: broker)
        let b = StreamsApp(applicationId: "rec", topology: topology, broker: broker)
        try await a.start()
        try await b.start()
        #expect(a.allTasks.count == 8)
        #expect(a.assignedTasks.count == 4 && b.assignedTasks.count == 4)
        #expect(Set(a.assignedTasks).isDisjoint(with: b.assignedTasks))
        #expect(Set(a.assignedTasks).union(b.assignedTasks) == Set(a.allTasks))
        #expect(Set(a.assignedTasks.map(\.partition)) == [0, 2] && Set(b.assignedTasks.map(\.partition)) == [1, 3])
        try produce(broker, "events", recoveryInput(0..<2000))
        #expect(await a.waitUntilCaughtUp(timeoutMs: 60_000))
        #expect(a.metrics.snapshot.processed > 0 && b.metrics.snapshot.processed > 0, "both instances worked")
        // One instance leaves: the other takes its tasks over from their last commit.
        await b.stop()
        #expect(a.assignedTasks.count == 8)
        try produce(broker, "events", recoveryInput(2000..<Self.n))
        #expect(await a.waitUntilCaughtUp(timeoutMs: 60_000))
        await a.stop()
        #expect(a.errors.isEmpty && b.errors.isEmpty)
        let got = try results(broker)
        #expect(got.windows == reference.windows)
        #expect(got.countries == reference.countries)
        #expect(got.windowRecords.count == reference.windowRecords.count, "graceful hand-over: nothing re-emitted")
        #expect(Set(got.windowRecords) == Set(reference.windowRecords), "the combined output is exactly one instance's")
    }
}

/// Path of an executable built next to the test bundle.
func builtExecutable(_ name: String) throws -> String {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<3 {
        let candidate = dir.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    let fallback = FileManager.default.currentDirectoryPath + "/.build/debug/" + name
    try #require(FileManager.default.isExecutableFile(atPath: fallback), "build \(name) first (swift build)")
    return fallback
}

@Suite(.serialized) struct StreamsKillTests {
    /// The sales dashboard runs in a child process that is killed with SIGKILL mid-stream (after
    /// some commits); a restarted application finishes the input, and the dashboard's rows equal
    /// those of an uninterrupted run.
    @Test func sigkilledProcessorRestartsToTheSameAggregates() async throws {
        let orders = OrderGenerator().orders(0..<20_000).map(\.record)
        // Uninterrupted reference.
        let refDir = TempDir()
        let refBroker = try openBroker(refDir)
        try refBroker.createTopic("orders", partitions: 2)
        try OutputCollector.produceChunked(refBroker, topic: "orders", records: orders, partition: nil)
        let ref = try await runUntilCaughtUp(try StreamExamples.salesDashboard(), refBroker, id: "dashboard")
        await ref.stop()
        let reference = latest(try readTopic(refBroker, "sales-dashboard"))

        let dir = TempDir()
        do {
            let broker = try openBroker(dir)
            try broker.createTopic("orders", partitions: 2)
            try OutputCollector.produceChunked(broker, topic: "orders", records: orders, partition: nil)
            try broker.close()
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try builtExecutable("strata-streams-bench"))
        process.arguments = ["crash-child", dir.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        var processed = 0, commits = 0
        var pending = Data()
        while processed < 4000 {
            let chunk = pipe.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let nl = pending.firstIndex(of: 0x0A) {
                let f = String(decoding: pending[pending.startIndex..<nl], as: UTF8.self).split(separator: " ")
                pending.removeSubrange(pending.startIndex...nl)
                if f.count == 4 { processed = Int(f[1]) ?? 0; commits = Int(f[3]) ?? 0 }
            }
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(processed >= 4000 && processed < 20_000, "killed mid-stream (processed \(processed))")
        #expect(commits > 0)

        let broker = try openBroker(dir)
        let app = try await runUntilCaughtUp(try StreamExamples.salesDashboard(), broker, id: "dashboard")
        await app.stop()
        #expect(app.errors.isEmpty)
        #expect(app.metrics.snapshot.processed < 20_000, "resumed from the child's last commit, not from the start")
        #expect(latest(try readTopic(broker, "sales-dashboard")) == reference)
    }
}
