import Foundation
import Testing
@testable import StrataBroker
import StrataCore
import StrataLog
import Synchronization

/// SQLite's ioerr loop over the broker (log engine and metadata store): for every fault point N
/// of a produce / roll / flush / commit / compaction / cold-tier conversion / retention workload, the Nth storage call
/// fails (EIO, ENOSPC or EMFILE; once, or from then on for a disk that stays full). After each run
/// the fault is removed and the data directory reopened: no crash, no acknowledged record lost,
/// every partition writable again.
@Suite(.serialized) struct FaultLoopTests {
    struct Acknowledged { var topic: String; var partition: Int32; var offset: Int64; var value: [UInt8] }

    /// Segments the workload converted to the cold tier (summed over runs).
    static let conversions = Mutex(0)

    static func options() -> Broker.Options {
        var o = Broker.Options()
        o.retentionCheckIntervalMs = 0  // driven by the workload
        o.cleanerBackoffMs = 0
        o.coldCheckIntervalMs = 0
        o.offsetsTopicPartitions = 1  // the commits' mirror is in the loop, with one partition
        return o
    }

    /// The workload; every step may fail under a fault and the run goes on (as a client would).
    /// Returns what was acknowledged.
    static func workload(_ dir: String, errors: inout [String]) -> [Acknowledged] {
        var acked: [Acknowledged] = []
        let broker: Broker
        do { broker = try Broker.open(dataDirectory: dir, options: options()) } catch {
            errors.append("open: \(error)")
            return acked
        }
        defer {
            conversions.withLock { $0 += broker.coldTierStatus.converted.segmentsConverted }
            try? broker.close()
        }
        do {
            try broker.createTopic("s", partitions: 2, configs: ["segment.bytes": "2048", "flush.mode": "sync", "retention.bytes": "4096",
                                                                "cold.after.ms": "0"])
            try broker.createTopic("c", partitions: 1, configs: ["segment.bytes": "2048", "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"])
        } catch {
            // Topics half made stay as they are: the produce below auto-creates what is missing.
            errors.append("create: \(error)")
        }
        for i in 0..<16 {
            for topic in ["s", "c"] {
                let value = Array("{\"topic\":\"\(topic)\",\"i\":\(i),\"pad\":\"\(String(repeating: "p", count: 180))\"}".utf8)
                let record = ProducerRecord(key: Array("k\(i % 4)".utf8), value: value, timestamp: 1_700_000_000_000 + Int64(i))
                if let results = try? broker.produce(topic: topic, records: [record], acks: .all) {
                    for r in results { acked.append(Acknowledged(topic: topic, partition: r.partition, offset: r.baseOffset, value: value)) }
                }
            }
            if i % 6 == 5 {
                try? broker.commitOffsets(group: "g", offsets: [("s", 0, Int64(i))])
                _ = broker.runCleaner()
                _ = broker.runColdTier()
                _ = broker.runRetention()
            }
        }
        return acked
    }

    /// After the fault is gone: the directory opens, every acknowledged record still in the log
    /// (at or above the log start: retention and compaction legitimately remove some) reads back
    /// with its value, and every partition takes appends.
    static func verify(_ dir: String, _ acked: [Acknowledged], label: String) throws {
        let broker = try Broker.open(dataDirectory: dir, options: options())
        defer { try? broker.close() }
        #expect(broker.offlinePartitions.isEmpty, "\(label): offline after the fault was gone: \(broker.offlinePartitions)")
        for a in acked {
            let log = try broker.log(topic: a.topic, partition: a.partition)
            guard a.offset >= log.logStartOffset else { continue }
            // Compaction keeps the latest record per key; an older one may be gone, never altered.
            let records = try Broker.records(in: try log.read(from: a.offset, maxBytes: 1 << 20).slice!, topic: a.topic, partition: a.partition, from: a.offset)
            if let r = records.first, r.offset == a.offset {
                #expect(r.value == a.value, "\(label): \(a.topic)-\(a.partition)@\(a.offset) changed")
            } else {
                #expect(a.topic == "c", "\(label): acknowledged \(a.topic)-\(a.partition)@\(a.offset) is gone")
            }
        }
        for topic in ["s", "c"] {
            for p in 0..<(broker.partitionCount(topic) ?? 0) {
                try broker.produce(topic: topic, records: [ProducerRecord(key: [1], value: Array("{}".utf8), timestamp: 1)], partition: p, acks: .all)
            }
        }
    }

    /// Runs `body` on a thread of its own: a minute of blocking I/O must not hold one of the two
    /// threads of Swift's cooperative pool, which the other suites' servers need (fetch tasks).
    static func offThePool(_ body: @escaping @Sendable () throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            let thread = Thread {
                do { try body(); c.resume() } catch { c.resume(throwing: error) }
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    @Test func everyFaultPointOfTheWorkloadLosesNothingAndHeals() async throws {
        try await Self.offThePool { try Self.faultLoop() }
    }

    static func faultLoop() throws {
        // Fault points: the storage calls of one clean run.
        let probe = TempDir()
        StorageFaults.arm(.init(pathPrefix: probe.path, failAt: Int.max, errno: EIO))
        var errors: [String] = []
        let clean = Self.workload(probe.path, errors: &errors)
        #expect(errors.isEmpty, "\(errors)")
        let points = StorageFaults.disarm(probe.path).calls
        #expect(points > 100)
        #expect(clean.count == 32)
        try Self.verify(probe.path, clean, label: "no fault")
        // The workload converts segments of "s" to the cold tier (which retention deletes later).
        #expect(conversions.withLock { $0 } > 0)

        var runs = 0
        var faultsFired = 0
        // Every fault point once, the errno rotating through EIO, ENOSPC and EMFILE; and every
        // seventh point again with a disk that stays full (persistent ENOSPC).
        var plans: [(n: Int, errno: Int32, persistent: Bool)] = (1...points).map { n in (n, [EIO, ENOSPC, EMFILE][n % 3], false) }
        plans += Swift.stride(from: 1, through: points, by: 7).map { ($0, ENOSPC, true) }
        for (n, errno, persistent) in plans {
            let dir = TempDir()
            StorageFaults.arm(.init(pathPrefix: dir.path, failAt: n, errno: errno, persistent: persistent))
            var ignored: [String] = []
            let acked = Self.workload(dir.path, errors: &ignored)
            let report = StorageFaults.disarm(dir.path)
            faultsFired += report.faults
            runs += 1
            try Self.verify(dir.path, acked, label: "errno \(errno)\(persistent ? " persistent" : "") at call \(n) (\(report.failedOperations.first ?? "-"))")
        }
        #expect(faultsFired >= runs)
        print("fault loop: \(points) fault points, \(runs) runs, \(faultsFired) faults injected")
    }
}

@Suite struct FullDiskTests {
    @Test func aFullDiskKeepsReadsServingRefusesWhatNeedsSpaceAndHealsWithoutARestart() throws {
        let dir = TempDir()
        do {
            let broker = try Broker.open(dataDirectory: dir.path, options: FaultLoopTests.options())
            try broker.createTopic("t", partitions: 1, configs: ["segment.bytes": "4096", "flush.mode": "sync"])
            for i in 0..<40 { try broker.produce(topic: "t", records: [ProducerRecord(value: json(i), timestamp: 1)]) }
            try broker.close()
        }
        StorageFaults.arm(.init(pathPrefix: dir.path, failAt: 1, errno: ENOSPC, persistent: true, operations: StorageFaults.fullDisk))
        defer { StorageFaults.disarm(dir.path) }
        // Starts (the checkpoint it would rewrite is only an optimisation) and serves reads.
        let broker = try Broker.open(dataDirectory: dir.path, options: FaultLoopTests.options())
        let log = try broker.log(topic: "t", partition: 0)
        #expect(log.logEndOffset == 40)
        #expect(try Broker.records(in: try log.read(from: 0, maxBytes: 1 << 20).slice!, topic: "t", partition: 0, from: 0).first?.offset == 0)
        // Appends go into the segment's preallocated space until a roll needs a new file: then
        // each produce is refused with a storage error (KAFKA_STORAGE_ERROR), appending nothing.
        var refused: Error?
        for i in 0..<200 where refused == nil {
            do { try broker.produce(topic: "t", records: [ProducerRecord(value: json(i), timestamp: 1)]) } catch { refused = error }
        }
        let end = log.logEndOffset
        guard case .log(let logError)? = refused as? BrokerError, case .io(_, _, let e) = logError else {
            Issue.record("expected a storage error, got \(String(describing: refused))")
            return
        }
        #expect(e == ENOSPC)
        #expect(!log.isReadOnly, "no data write failed: the partition must not be fenced")
        // Space comes back: appends resume, no restart.
        StorageFaults.disarm(dir.path)
        try broker.produce(topic: "t", records: [ProducerRecord(value: json(1), timestamp: 1)])
        #expect(log.logEndOffset == end + 1)
        try broker.close()
    }
}
