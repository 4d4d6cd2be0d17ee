#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Synchronization
import StrataLog
import StrataMetadata
import StrataCore
import StrataBroker

/// Tools for tests and benchmarks; not part of the stable CLI surface.
struct DebugCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug", abstract: "Test and benchmark helpers.", shouldDisplay: false,
        subcommands: [AppendAcks.self, BenchAppend.self, BenchCommits.self, BenchCompact.self, BenchWakeup.self, BenchOpen.self, BenchMetrics.self])

    /// Appends from several threads and prints "ack <base> <last> <thread> <seq>" to stdout after
    /// each append returns. A crash test kills this process with SIGKILL and checks that every
    /// acknowledged batch survived. Record j of (thread, seq) has the value "t<thread>-s<seq>-r<j>".
    struct AppendAcks: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "append-acks")
        @Option var dir: String
        @Option var threads: Int = 4
        @Option var batches: Int = 1_000_000
        @Option var records: Int = 10
        @Option var flushMode: String = "sync"

        func run() throws {
            var config = LogConfig()
            config.segmentBytes = 1 << 20  // small, so a run crosses several rolls
            config.maxMessageBytes = 64 * 1024
            guard let mode = FlushMode(rawValue: flushMode) else { throw ValidationError("bad --flush-mode") }
            config.flushMode = mode
            let (log, _) = try PartitionLog.open(directory: dir, config: config)
            let printLock = Mutex(())
            let group = ThreadGroup()
            for t in 0..<threads {
                group.spawn {
                    for seq in 0..<batches {
                        let batch = RecordBatchBuilder.build((0..<records).map { j in
                            ProducerRecord(key: nil, value: Array("t\(t)-s\(seq)-r\(j)".utf8), timestamp: wallClockMillis())
                        })
                        let info = try! log.append(batch)
                        let line = "ack \(info.baseOffset) \(info.lastOffset) \(t) \(seq)\n"
                        printLock.withLock { _ in _ = line.withCString { write(1, $0, strlen($0)) } }
                    }
                }
            }
            group.join()
        }
    }
}

extension DebugCommand {
    /// Appends the same batch repeatedly to a fresh log and reports throughput and fsync rounds.
    struct BenchAppend: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "bench-append")
        @Option var dir: String = "/tmp/strata-bench-append"
        @Option var records: Int = 100
        @Option var megabytes: Int = 256
        @Option var threads: Int = 1
        @Option var flushMode: String = "os"

        func run() throws {
            var config = LogConfig()
            guard let mode = FlushMode(rawValue: flushMode) else { throw ValidationError("bad --flush-mode") }
            config.flushMode = mode
            _ = system("rm -rf '\(dir)'")
            let (log, _) = try PartitionLog.open(directory: dir, config: config)
            let batch = RecordBatchBuilder.build((0..<records).map { i in
                var s = "{\"event_type\":\"page_view\",\"user_id\":\"u-\(i)\",\"pad\":\""
                s += String(repeating: "x", count: max(0, 198 - s.utf8.count)) + "\"}"
                return ProducerRecord(key: Array("u-\(i)".utf8), value: Array(s.utf8), timestamp: wallClockMillis())
            })
            let perThread = megabytes * 1024 * 1024 / batch.count / threads
            let started = nowSeconds()
            let group = ThreadGroup()
            for _ in 0..<threads {
                group.spawn {
                    batch.withUnsafeBytes { p in
                        for _ in 0..<perThread { _ = try! log.append(p) }
                    }
                }
            }
            group.join()
            let seconds = nowSeconds() - started
            let bytes = Double(perThread * threads * batch.count)
            print("batch \(batch.count) B x \(perThread * threads), \(threads) thread(s), \(flushMode): \((bytes / seconds / 1e6).rounded()) MB/s, \(formatRate(Double(perThread * threads), seconds: seconds)) appends/s, \(log.flushCount) fsync rounds")
            try log.close()
            _ = system("rm -rf '\(dir)'")
        }
    }
}

extension DebugCommand {
    /// Durable consumer-offset commits per second into LMDB, from N threads (group-committed).
    struct BenchCommits: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "bench-commits")
        @Option var dir: String = "/tmp/strata-bench-commits"
        @Option var threads: Int = 8
        @Option var commits: Int = 20_000

        func run() throws {
            _ = system("rm -rf '\(dir)'")
            let store = try MetadataStore(directory: dir)
            let perThread = commits / threads
            let started = nowSeconds()
            let group = ThreadGroup()
            for t in 0..<threads {
                group.spawn {
                    for i in 0..<perThread {
                        try! store.commitOffsets([OffsetCommit(group: "g\(t)", topic: "events", partition: Int32(i % 8),
                                                               committed: CommittedOffset(offset: Int64(i), commitTimeMs: 0))])
                    }
                }
            }
            group.join()
            let seconds = nowSeconds() - started
            print("\(perThread * threads) durable offset commits from \(threads) thread(s) in \((seconds * 1000).rounded() / 1000) s: \(formatRate(Double(perThread * threads), seconds: seconds)) commits/s, \(store.offsetTransactionCount) LMDB transactions")
            _ = system("rm -rf '\(dir)'")
        }
    }
}

extension DebugCommand {
    /// Compaction figures: cleaner throughput, and append throughput with and without a cleaner
    /// running on the same partition.
    struct BenchCompact: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "bench-compact")
        @Option var dir: String = "/tmp/strata-bench-compact"
        @Option var records: Int = 1_000_000
        @Option var keys: Int = 100_000

        func run() throws {
            _ = system("rm -rf '\(dir)'")
            var config = LogConfig()
            config.flushMode = .os
            config.segmentBytes = 4 << 20
            let (log, _) = try PartitionLog.open(directory: dir, config: config)
            var i = 0
            while i < records {
                let batch = RecordBatchBuilder.build((0..<1000).map { j in
                    ProducerRecord(key: Array("u-\((i + j * 7919) % keys)".utf8), value: Array("{\"event_type\":\"page_view\",\"seq\":\(i + j),\"pad\":\"\(String(repeating: "x", count: 120))\"}".utf8), timestamp: wallClockMillis())
                })
                try log.append(batch)
                i += 1000
            }
            try log.roll()
            try log.flush()
            let payload = RecordBatchBuilder.build((0..<1000).map { j in
                ProducerRecord(key: Array("u-\(j)".utf8), value: Array(String(repeating: "y", count: 180).utf8), timestamp: wallClockMillis())
            })
            func appendRate(_ n: Int) throws -> Double {
                let t0 = nowSeconds()
                try payload.withUnsafeBytes { p in for _ in 0..<n { _ = try log.appendWithoutFlush(p) } }
                return Double(n * 1000) / (nowSeconds() - t0)
            }
            let alone = try appendRate(150)
            let cleanerDone = Mutex<CompactionReport?>(nil)
            let group = ThreadGroup()
            group.spawn {
                let r = try? log.compact(deleteRetentionMs: 86_400_000)
                cleanerDone.withLock { $0 = r }
            }
            var during: [Double] = []
            while cleanerDone.withLock({ $0 }) == nil { during.append(try appendRate(30)) }
            group.join()
            let report = cleanerDone.withLock { $0 }!
            let mbps = Double(report.bytesScanned) / report.seconds / 1e6
            print("cleaner: \(report.bytesBefore / 1_000_000) MB, \(report.recordsBefore) records, \(report.distinctKeys) keys -> \(report.bytesAfter / 1_000_000) MB in \((report.seconds * 100).rounded() / 100) s: \(Int(mbps)) MB/s scanned (map + rewrite, one thread)")
            let avg = during.isEmpty ? 0 : during.reduce(0, +) / Double(during.count)
            print("appends alone \(formatRate(alone, seconds: 1)) events/s; while the cleaner runs \(formatRate(avg, seconds: 1)) events/s = \(Int(avg / alone * 100))% (\(during.count) samples)")
            try log.close()
            _ = system("rm -rf '\(dir)'")
        }
    }
}

/// A few OS threads (the work here blocks in fdatasync, which must not tie up Swift's cooperative pool).
final class ThreadGroup: @unchecked Sendable {
    private var threads: [pthread_t] = []

    func spawn(_ body: @escaping @Sendable () -> Void) {
        final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed")
        threads.append(thread)
    }

    func join() {
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
    }
}

extension DebugCommand {
    /// Broker-side wake-up latency of parked long-poll fetches: `waiters` fetches parked over
    /// `partitions` partitions of an embedded broker (no network), one append at a time to one
    /// partition, timed from the append's call and from its return (the records are visible) to
    /// each of that partition's fetches having its records. Then the cost of an append to a partition nobody
    /// waits on, with every fetch parked and with none, in the same run.
    struct BenchWakeup: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "bench-wakeup")
        @Option var dir: String = "/tmp/strata-bench-wakeup"
        @Option var partitions: Int = 1000
        @Option var waiters: Int = 10_000
        @Option var samples: Int = 300

        /// What the waiting tasks and the driver share.
        final class Board: Sendable {
            /// When each woken fetch had its records, since the driver last took them.
            let wakes = Mutex<[Double]>([])
            let woken = Atomic<Int>(0)
            let parked = Atomic<Int>(0)
            let stop = Atomic<Bool>(false)
        }

        func run() throws {
            guard partitions >= 1, partitions <= 10_000, waiters >= partitions, samples >= 1 else {
                throw ValidationError("need 1 <= partitions <= 10000, waiters >= partitions, samples >= 1")
            }
            _ = system("rm -rf '\(dir)'")
            var options = Broker.Options()
            options.offsetsTopicPartitions = 0
            var topicConfig = TopicConfig()
            topicConfig.log.flushMode = .os
            options.defaultTopicConfig = topicConfig
            let broker = try Broker.open(dataDirectory: dir, options: options)
            try broker.createTopic("wake", partitions: Int32(partitions), configs: ["flush.mode": "os"])
            try broker.createTopic("idle", partitions: 1, configs: ["flush.mode": "os"])
            let record = [ProducerRecord(value: Array("{\"wake\":1}".utf8), timestamp: wallClockMillis())]
            func appendMillis(_ topic: String, _ partition: Int32) throws -> Double {
                let t0 = nowSeconds()
                _ = try broker.produce(topic: topic, records: record, partition: partition, acks: .leader)
                return (nowSeconds() - t0) * 1000
            }
            for _ in 0..<200 { _ = try appendMillis("idle", 0) }
            let quiet = try (0..<samples).map { _ in try appendMillis("idle", 0) }

            let board = Board()
            for w in 0..<waiters {
                let p = Int32(w % partitions)
                Task {
                    var offset: Int64 = 0
                    while !board.stop.load(ordering: .relaxed) {
                        board.parked.add(1, ordering: .relaxed)
                        guard let result = try? await broker.fetch(topic: "wake", partition: p, offset: offset, maxWaitMs: 600_000) else { return }
                        let now = nowSeconds()
                        if result.nextOffset > offset {
                            board.wakes.withLock { $0.append(now) }
                            offset = result.nextOffset
                            board.woken.add(1, ordering: .releasing)
                        }
                    }
                }
            }
            while board.parked.load(ordering: .relaxed) < waiters { usleep(10_000) }
            usleep(500_000)  // every fetch past its registration
            let perPartition = waiters / partitions
            let extra = waiters % partitions
            var appendTimes: [Double] = []
            var fromStart: [Double] = []
            var fromReturn: [Double] = []
            for k in 0..<samples {
                let p = (k &* 7919) % partitions
                let expected = board.woken.load(ordering: .acquiring) + perPartition + (p < extra ? 1 : 0)
                let t0 = nowSeconds()
                _ = try broker.produce(topic: "wake", records: record, partition: Int32(p), acks: .leader)
                let t1 = nowSeconds()
                appendTimes.append((t1 - t0) * 1000)
                while board.woken.load(ordering: .acquiring) < expected { sched_yield() }
                for wake in board.wakes.withLock({ w in defer { w.removeAll() }; return w }) {
                    fromStart.append((wake - t0) * 1000)
                    fromReturn.append(max(0, wake - t1) * 1000)  // woken before the append call returned: 0
                }
            }
            let busy = try (0..<samples).map { _ in try appendMillis("idle", 0) }
            board.stop.store(true, ordering: .relaxed)
            let summary = Bench.percentiles
            print("wakeup (embedded broker): \(waiters) parked fetches over \(partitions) partitions")
            print("wakeup: append called -> a waiting fetch has its records:   \(summary(fromStart))")
            print("wakeup: append returned -> a waiting fetch has its records: \(summary(fromReturn))")
            print("wakeup: the append itself (to a partition with waiters):     \(summary(appendTimes))")
            print("wakeup: append to a partition nobody waits on, \(waiters) parked: \(summary(busy))")
            print("wakeup: the same with nothing parked (same run):             \(summary(quiet))")
            fflush(nil)  // every output stream: print buffers stdout, and _exit skips the flush
            _exit(0)  // the parked tasks hold the broker; nothing here needs a clean close
        }
    }
}

extension DebugCommand {
    /// Startup cost of a large data directory: `topics` x `partitions` partitions of `segments`
    /// segments each (4 KiB segments, one ~3 KB record each), then Broker.open timed after a
    /// clean stop and after an unclean one with nothing to recover (the clean-shutdown marker
    /// removed, as SIGKILL leaves it, with every checkpoint current).
    struct BenchOpen: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "bench-open")
        @Option var dir: String = "/tmp/strata-bench-open"
        @Option var topics: Int = 100
        @Option var partitions: Int = 100
        @Option var segments: Int = 10
        @Option var runs: Int = 3
        @Flag(help: "Reuse the data directory a previous run left (--keep), instead of writing it again.") var reuse = false
        @Flag(help: "Leave the data directory for a later --reuse.") var keep = false

        func run() throws {
            guard topics >= 1, partitions >= 1, segments >= 1, runs >= 1 else { throw ValidationError("counts must be >= 1") }
            var options = Broker.Options()
            options.offsetsTopicPartitions = 0
            options.maxPartitionsPerBroker = max(options.maxPartitionsPerBroker, topics * partitions)
            let started = nowSeconds()
            if !reuse {
                _ = system("rm -rf '\(dir)'")
                let broker = try Broker.open(dataDirectory: dir, options: options)
                let value = Array(("{\"pad\":\"" + String(repeating: "x", count: 3000) + "\"}").utf8)
                for t in 0..<topics {
                    let name = "open\(t)"
                    try broker.createTopic(name, partitions: Int32(partitions), configs: ["segment.bytes": "4096", "flush.mode": "os"])
                    for p in 0..<partitions {
                        for _ in 0..<segments {
                            _ = try broker.produce(topic: name, records: [ProducerRecord(value: value, timestamp: wallClockMillis())],
                                                   partition: Int32(p), acks: .leader)
                        }
                    }
                }
                try broker.close()
                let built = nowSeconds() - started
                print("bench-open: \(topics * partitions) partitions, \(topics * partitions * segments) segments written in \((built * 10).rounded() / 10) s")
            }
            func timeOpen(clean: Bool) throws -> Double {
                if !clean { _ = unlink(dir + "/" + LogManager.cleanShutdownFileName) }
                let t0 = nowSeconds()
                let broker = try Broker.open(dataDirectory: dir, options: options)
                let ms = (nowSeconds() - t0) * 1000
                try broker.close()
                return ms
            }
            for _ in 0..<runs {
                let clean = try timeOpen(clean: true)
                let unclean = try timeOpen(clean: false)
                print("bench-open: open after a clean stop \(clean.rounded()) ms; after an unclean stop with nothing to recover \(unclean.rounded()) ms")
            }
            if !keep { _ = system("rm -rf '\(dir)'") }
        }
    }
}
