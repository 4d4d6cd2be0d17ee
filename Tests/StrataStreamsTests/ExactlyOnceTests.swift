import Foundation
import Synchronization
import Testing
import StrataBroker
import StrataLog
@testable import StrataStreams

/// What a read_committed consumer reads from `topic` (markers and aborted records left out).
func readCommittedTopic(_ broker: Broker, _ topic: String) throws -> [Out] {
    guard let n = broker.partitionCount(topic) else { return [] }
    var out: [Out] = []
    for p in 0..<n {
        let log = try broker.log(topic: topic, partition: p)
        let states = log.producerStateSnapshot
        var next = log.logStartOffset
        while next < log.lastStableOffset {
            let r = try log.read(from: next, maxBytes: 1 << 20, committedOnly: true)
            guard let slice = r.slice else { break }
            for c in try Broker.records(in: slice, topic: topic, partition: p, from: next, aborted: states) {
                out.append(Out(c.key.map { String(decoding: $0, as: UTF8.self) }, c.value.map { String(decoding: $0, as: UTF8.self) }))
            }
            next = r.nextOffset
        }
    }
    return out
}

@Suite(.serialized) struct ExactlyOnceTests {
    static let n = 3000

    /// The recovery topology plus an external copy of every input: under at-least-once a crash
    /// duplicates some copies and window results; under exactly-once a read_committed reader
    /// sees each exactly once, whatever was aborted.
    func topology(onInput: @escaping @Sendable (StreamRecord) -> Void = { _ in }) throws -> Topology {
        try recoveryTopology(onInput: onInput, copyTo: "copy")
    }

    /// In batches of 10 records, so that tasks read in chunks of maxReadBytes (a crash then
    /// lands between commits, with uncommitted outputs in flight).
    func produceSmall(_ broker: Broker, _ records: [In]) throws {
        for start in stride(from: 0, to: records.count, by: 10) { try produce(broker, "events", Array(records[start..<min(start + 10, records.count)])) }
    }

    func setup(_ broker: Broker) throws {
        try setupRecoveryTopics(broker)
        try broker.createTopic("copy", partitions: 4)
    }

    @Test func crashesMidStreamLeaveEveryOutputExactlyOnce() async throws {
        var config = crashConfig
        config.processingGuarantee = .exactlyOnce
        // The reference: the recovery tests' uninterrupted run of the same aggregations.
        let reference = try await referenceResults(Self.n)
        let referenceWindows = reference.windowRecords
        let referenceCountries = reference.countries
        #expect(referenceWindows.count > 100)

        let dir = TempDir()
        let broker = try openBroker(dir)
        try setup(broker)
        let crashing = CrashHook(after: 300, fromInput: 1000)
        let topology = try topology(onInput: { crashing.saw($0) })
        try produceSmall(broker, recoveryInput(0..<1000))
        let a = try await runUntilCaughtUp(topology, broker, id: "eos", config: config, timeoutMs: 300_000)
        await a.abort()
        let b = StreamsApp(applicationId: "eos", topology: topology, broker: broker, config: config)
        crashing.app.withLock { $0 = b }
        try await b.start()
        try produceSmall(broker, recoveryInput(1000..<2000))
        #expect(await crashing.fired.value)
        await b.abort()
        try produceSmall(broker, recoveryInput(2000..<Self.n))
        let c = try await runUntilCaughtUp(topology, broker, id: "eos", config: config, timeoutMs: 300_000)
        await c.stop()
        #expect(a.errors.isEmpty && b.errors.isEmpty && c.errors.isEmpty, "\(a.errors) \(b.errors) \(c.errors)")

        let copies = try readCommittedTopic(broker, "copy")
        #expect(copies.count == Self.n, "each input copied exactly once (read committed)")
        #expect(Set(copies.map { $0.value! }).count == Self.n)
        let all = try readTopic(broker, "copy").count
        #expect(all > Self.n, "the crash left aborted copies in the log (\(all) records, \(copies.count) committed; processed \(a.metrics.snapshot.processed) \(b.metrics.snapshot.processed) \(c.metrics.snapshot.processed))")
        let windows = try readCommittedTopic(broker, "user-windows-out")
        #expect(windows.sorted { "\($0)" < "\($1)" } == referenceWindows.sorted { "\($0)" < "\($1)" }, "every window result exactly once")
        let countries = latest(try readCommittedTopic(broker, "country-out"))
        #expect(countries == referenceCountries, "\(countries) vs \(referenceCountries)")
        let processed = a.metrics.snapshot.processed + b.metrics.snapshot.processed + c.metrics.snapshot.processed
        #expect(processed > Self.n * 2, "records after the last commit were processed again, their outputs aborted")
        let committed = try (0..<4).reduce(Int64(0)) { $0 + (try broker.committedOffset(group: "eos", topic: "events", partition: $1) ?? 0) }
        #expect(committed == Int64(Self.n), "input offsets committed with the transactions")
    }
}
