// libFuzzer target: one Kafka request frame, without its 4-byte size prefix (header and body),
// parsed by `parseRequestHeader` and answered by `KafkaRequestHandler.handle` exactly as a
// connection does, against a real Broker on a scratch directory (tmpfs when there is one), with
// one event loop and a small thread pool, as `strata serve` runs them. Any trap (overflow, index
// out of range, force unwrap) or ASan report is a finding. See docs/fuzzing.md.
//
// The broker keeps its state from one input to the next (topics created, records produced, groups
// joined), which is what lets a Fetch find data and a SyncGroup a group; it is thrown away and
// opened again every `resetEvery` inputs, or when clients created too many topics, so a long run
// does not slow down or fill the disk.
import Dispatch
import Foundation
import NIOCore
import NIOPosix
import StrataBroker
import StrataCore
import Synchronization
@testable import StrataKafka

#if canImport(Glibc)
import Glibc
#endif

/// Topics every fresh broker has, named as in the seed corpus (tools/fuzz-capture.py).
private let seedTopics: [(name: String, partitions: Int32, configs: [String: String])] = [
    ("fz", 3, [:]),
    ("fz-compact", 1, ["cleanup.policy": "compact"]),
    ("fz-append", 1, ["message.timestamp.type": "LogAppendTime", "compression.type": "zstd"]),
    ("fz-py", 3, [:]),
]
private let resetEvery = 4096
private let maxTopics = 64
private let maxPartitions: Int32 = 512
private let verbose = ProcessInfo.processInfo.environment["STRATA_FUZZ_VERBOSE"] != nil

private final class Harness: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let pool = NIOThreadPool(numberOfThreads: 2)
    let loop: EventLoop
    let root: String
    var generation = 0
    var dir = ""
    var broker: Broker!
    var handler: KafkaRequestHandler!
    var runs = 0
    var retryResetAt = 0
    /// Futures handed out and not completed yet (parked Fetch and JoinGroup answers).
    let outstanding = Atomic<Int>(0)

    init() {
        loop = group.next()
        pool.start()
        let base = ProcessInfo.processInfo.environment["STRATA_FUZZ_DATA"]
            ?? (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NSTemporaryDirectory())
        var template = Array((base + "/strata-fuzz-kafka-XXXXXX").utf8CString)
        root = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
        harnessRoot = root
        atexit { if let root = harnessRoot { try? FileManager.default.removeItem(atPath: root) } }
        openBroker()
    }

    func openBroker() {
        generation += 1
        dir = root + "/\(generation)"
        do {
            // Small segments and indexes: each partition maps them at full size (address space),
            // and a CreateTopics of thousands of partitions stays cheap. tools/fuzz.sh also runs
            // this target on a size-limited tmpfs: a full disk is one more error path. No initial
            // rebalance delay: a JoinGroup to an empty group completes at once, as it did, instead
            // of parking until the harness releases it.
            var options = Broker.Options()
            options.initialRebalanceDelayMs = 0
            // A CreateTopics beyond this is refused (POLICY_VIOLATION: one more error path)
            // instead of spending the execution on thousands of partition directories.
            options.maxPartitionsPerBroker = 2_000
            options.defaultTopicConfig.log.segmentIndexBytes = 16 << 10
            options.defaultTopicConfig.log.segmentBytes = 256 << 10
            options.defaultTopicConfig.log.maxMessageBytes = 256 << 10
            broker = try Broker.open(dataDirectory: dir, options: options)
            for t in seedTopics { try broker.createTopic(t.name, partitions: t.partitions, configs: t.configs) }
        } catch {
            fatalError("fuzz harness: cannot open a broker in \(dir): \(error)")
        }
        handler = KafkaRequestHandler(broker: broker, threadPool: pool, validationPool: pool, advertisedHost: "127.0.0.1", advertisedPort: 9092)
    }

    /// Answers what is parked (JoinGroup, SyncGroup, long-polling Fetch) at once.
    func releaseParked() {
        broker.wakeParkedFetches()
        broker.groups.stop()  // answers parked joins and syncs; its tick starts again
        broker.groups.start()
    }

    /// Too many topics or partitions (each costs files and mappings), or the disk filling up.
    func tooBig() -> Bool {
        let names = broker.topicNames()
        if names.count > maxTopics { return true }
        if names.reduce(0, { $0 + (broker.partitionCount($1) ?? 0) }) > maxPartitions { return true }
        var fs = statvfs()
        return statvfs(dir, &fs) == 0 && fs.f_bavail < fs.f_blocks / 4
    }

    func resetIfDue() {
        runs += 1
        guard runs % resetEvery == 0 || (runs >= retryResetAt && tooBig()) else { return }
        // Nothing may still be using the broker when it closes.
        for _ in 0..<500 where outstanding.load(ordering: .acquiring) > 0 {
            releaseParked()
            usleep(10_000)
        }
        guard outstanding.load(ordering: .acquiring) == 0 else {
            retryResetAt = runs + 256  // not while an answer is still pending; try again later
            if verbose { print("fuzz harness: reset put off after \(runs) inputs: \(outstanding.load(ordering: .acquiring)) answers pending") }
            return
        }
        let started = monotonicMillis()
        let topics = broker.topicNames().count
        do { try broker.close() } catch { fatalError("fuzz harness: broker close failed: \(error)") }
        try? FileManager.default.removeItem(atPath: dir)
        openBroker()
        if verbose { print("fuzz harness: broker reset after \(runs) inputs (\(topics) topics) in \(monotonicMillis() - started) ms") }
    }

    func run(_ data: UnsafeRawBufferPointer) {
        resetIfDue()
        // FrameDecoder refuses frames below 8 bytes before they reach the handler.
        guard data.count >= 8 else { return }
        let frame = ByteBuffer(bytes: data)
        let handler = self.handler!
        let done = DispatchSemaphore(value: 0)
        _ = outstanding.add(1, ordering: .acquiringAndReleasing)
        let future: EventLoopFuture<ByteBuffer?> = loop.flatSubmit {
            do {
                var (header, reader) = try parseRequestHeader(frame)
                return try handler.handle(header, &reader, eventLoop: self.loop, clientHost: "127.0.0.1", appends: AppendOrder())
            } catch {
                return self.loop.makeFailedFuture(error)  // the connection would be closed: fine
            }
        }
        future.whenComplete { result in
            if case .success(let body?) = result {
                // The connection strips this many bytes of every response to frame it.
                if body.readableBytes < KafkaWriter.frameHeaderBytes { fatalError("response shorter than its frame header") }
            }
            _ = self.outstanding.add(-1, ordering: .acquiringAndReleasing)
            done.signal()
        }
        // A parked answer (a Fetch waiting for data, a JoinGroup for the rebalance) is released
        // after 10 ms, and again every 5 ms for 5 s: a Fetch may park only after a release (its
        // task had not run yet), and would then wait up to max_wait_ms. Waiting longer first
        // costs throughput: such requests become a good part of the corpus.
        var waited = done.wait(timeout: .now() + .milliseconds(10))
        var releases = 0
        while waited == .timedOut && releases < 1000 {
            releaseParked()
            waited = done.wait(timeout: .now() + .milliseconds(5))
            releases += 1
        }
        if verbose && releases > 0 {
            print("fuzz harness: api \(Int(data[0]) << 8 | Int(data[1])) v\(data[3]) answered after \(releases) releases\(waited == .timedOut ? " (none after 5 s)" : "")")
        }
    }
}

nonisolated(unsafe) private var harnessRoot: String?
nonisolated(unsafe) private var harness: Harness?

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKafkaRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    if harness == nil { harness = Harness() }
    harness!.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
