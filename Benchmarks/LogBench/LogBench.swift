import Benchmark
import Foundation
import StrataLog
#if canImport(Glibc)
import Glibc
#endif

// Every throughput figure here is bytes of RecordBatch v2 data per second of the measured part;
// compare each against "raw baseline" from the same run (the machines are shared and noisy).

let eventSize = 200
let bytesPerIteration = 64 * 1024 * 1024

func event(_ i: Int) -> [UInt8] {
    var s = "{\"event_type\":\"page_view\",\"user_id\":\"u-\(i % 100_000)\",\"seq\":\(i),\"pad\":\""
    s += String(repeating: "x", count: max(0, eventSize - s.utf8.count - 2)) + "\"}"
    return Array(s.utf8)
}

func batch(records: Int, first: Int = 0) -> [UInt8] {
    RecordBatchBuilder.build((0..<records).map { ProducerRecord(key: Array("u-\(($0 + first) % 1000)".utf8), value: event(first + $0), timestamp: 1_700_000_000_000 + Int64(first + $0)) })
}

func scratchDirectory(_ label: String) -> String {
    let path = "/tmp/strata-bench-\(label)-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func remove(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

func config(_ mode: FlushMode) -> LogConfig {
    var c = LogConfig()
    c.flushMode = mode
    return c
}

/// Appends `batchBytes` repeatedly until `bytesPerIteration` are written to a fresh log.
func appendRun(_ benchmark: Benchmark, batchBytes: [UInt8], mode: FlushMode) {
    let dir = scratchDirectory("append")
    let (log, _) = try! PartitionLog.open(directory: dir, config: config(mode))
    let count = bytesPerIteration / batchBytes.count
    benchmark.startMeasurement()
    batchBytes.withUnsafeBytes { p in
        for _ in 0..<count { blackHole(try! log.append(p)) }
    }
    benchmark.stopMeasurement()
    try! log.close()
    remove(dir)
}

/// N threads append concurrently; used to compare group-committed `sync` against `os`.
func concurrentAppendRun(_ benchmark: Benchmark, threads: Int, mode: FlushMode, records: Int = 100) {
    let batchBytes = batch(records: records)
    let dir = scratchDirectory("group")
    let (log, _) = try! PartitionLog.open(directory: dir, config: config(mode))
    let perThread = bytesPerIteration / 4 / batchBytes.count / threads
    // Real threads: concurrentPerform would run only as many workers as cores (2 here), which
    // is not "8 concurrent appenders" and would starve the group commit of company.
    let ready = DispatchSemaphore(value: 0)
    let go = DispatchSemaphore(value: 0)
    let done = DispatchGroup()
    for _ in 0..<threads {
        done.enter()
        Thread.detachNewThread {
            ready.signal()
            go.wait()
            batchBytes.withUnsafeBytes { p in
                for _ in 0..<perThread { blackHole(try! log.append(p)) }
            }
            done.leave()
        }
    }
    for _ in 0..<threads { ready.wait() }
    benchmark.startMeasurement()
    for _ in 0..<threads { go.signal() }
    done.wait()
    benchmark.stopMeasurement()
    try! log.close()
    remove(dir)
}

/// A log of `bytes` of 1000-event batches, closed cleanly, in a directory the caller removes.
func buildLog(bytes: Int, segmentBytes: Int = 128 * 1024 * 1024) -> String {
    let dir = scratchDirectory("read")
    var c = config(.os)
    c.segmentBytes = segmentBytes
    c.maxMessageBytes = min(c.maxMessageBytes, segmentBytes)
    let (log, _) = try! PartitionLog.open(directory: dir, config: c)
    // Timestamps increase by 1 ms per record across the log, so time lookups spread over it.
    let records = segmentBytes < 1 << 20 ? 100 : 1000
    let batchSize = batch(records: records).count
    for i in 0..<(bytes / batchSize) { try! log.append(batch(records: records, first: i * records)) }
    try! log.close()
    return dir
}

// Logs built once per process (globals are initialized on first use) and removed at exit.
let readLogDirectory = buildLog(bytes: 256 << 20)
let lookupLogDirectory = buildLog(bytes: 256 << 20, segmentBytes: 16 << 20)
let recoveryLogDirectory = buildLog(bytes: 256 << 20, segmentBytes: 512 << 20)
/// 1,000+ segments of 64 KiB, closed cleanly.
let cleanReopenDirectory = buildLog(bytes: 1030 * 63 * 1024, segmentBytes: 64 * 1024)
let removeScratchAtExit: Void = {
    atexit { system("rm -rf /tmp/strata-bench-*-\(getpid())-*") }
}()

let benchmarks: @Sendable () -> Void = {
    _ = removeScratchAtExit
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock], timeUnits: .milliseconds, warmupIterations: 1,
        scalingFactor: .one, maxDuration: .seconds(10), maxIterations: 7)

    // The raw baseline: memcpy of the same batch bytes into a freshly fallocated, mapped file of the
    // segment size, the way an append writes, with no validation, CRC, indexing or bookkeeping.
    Benchmark("raw baseline: memcpy 64 MiB of 1000-event batches into a fresh mapping") { benchmark in
        let b = batch(records: 1000)
        let dir = scratchDirectory("raw")
        let path = dir + "/raw.log"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        precondition(posix_fallocate(fd, 0, off_t(128 << 20)) == 0)
        let base = mmap(nil, 128 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)!
        benchmark.startMeasurement()
        var position = 0
        b.withUnsafeBytes { p in
            for _ in 0..<(bytesPerIteration / b.count) {
                (base + position).copyMemory(from: p.baseAddress!, byteCount: p.count)
                position += p.count
            }
        }
        blackHole(position)
        benchmark.stopMeasurement()
        munmap(base, 128 << 20)
        close(fd)
        remove(dir)
    }

    // A second raw baseline: the same bytes with one pwrite each into a fallocated file, the
    // path appends of 16 KiB and larger take.
    Benchmark("raw baseline: pwrite 64 MiB of 1000-event batches into a fallocated file") { benchmark in
        let b = batch(records: 1000)
        let dir = scratchDirectory("rawpwrite")
        let fd = open(dir + "/raw.log", O_RDWR | O_CREAT | O_TRUNC, 0o644)
        precondition(posix_fallocate(fd, 0, off_t(128 << 20)) == 0)
        benchmark.startMeasurement()
        var position = 0
        b.withUnsafeBytes { p in
            for _ in 0..<(bytesPerIteration / b.count) {
                precondition(pwrite(fd, p.baseAddress!, p.count, off_t(position)) == p.count)
                position += p.count
            }
        }
        benchmark.stopMeasurement()
        close(fd)
        remove(dir)
    }

    for records in [1, 100, 1000] {
        Benchmark("append os: 64 MiB in \(records)-event batches") { benchmark in
            appendRun(benchmark, batchBytes: batch(records: records), mode: .os)
        }
    }

    Benchmark("append os: 16 MiB, 8 threads, 100-event batches") { benchmark in
        concurrentAppendRun(benchmark, threads: 8, mode: .os)
    }
    Benchmark("append sync (group commit): 16 MiB, 8 threads, 100-event batches") { benchmark in
        concurrentAppendRun(benchmark, threads: 8, mode: .sync)
    }
    Benchmark("append sync: 16 MiB, 1 thread, 100-event batches") { benchmark in
        concurrentAppendRun(benchmark, threads: 1, mode: .sync)
    }
    Benchmark("append os: 16 MiB, 8 threads, 1000-event batches") { benchmark in
        concurrentAppendRun(benchmark, threads: 8, mode: .os, records: 1000)
    }
    Benchmark("append sync (group commit): 16 MiB, 8 threads, 1000-event batches") { benchmark in
        concurrentAppendRun(benchmark, threads: 8, mode: .sync, records: 1000)
    }

    // Reads every batch of the log through read(from:maxBytes:) and CRC-checks it, as a consumer
    // with check.crcs does; compare with "CRC-32C hardware" (the floor for touching every byte).
    Benchmark("sequential read: 256 MiB, every batch CRC-checked") { benchmark in
        let dir = readLogDirectory
        let (log, _) = try! PartitionLog.open(directory: dir, config: config(.os), cleanShutdown: true)
        _ = try! log.read(from: 0, maxBytes: 1)  // map it
        benchmark.startMeasurement()
        var offset: Int64 = 0
        var bytes = 0
        while offset < log.logEndOffset {
            let r = try! log.read(from: offset, maxBytes: 1 << 20)
            r.slice!.forEachBatch { b in
                precondition(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: b.bytes[21...])) == b.crc)
                bytes += b.sizeInBytes
            }
            offset = r.nextOffset
        }
        blackHole(bytes)
        benchmark.stopMeasurement()
        try! log.close()
    }

    Benchmark("index lookup: read(from: random offset) over 256 MiB, 10k lookups",
              configuration: .init(metrics: [.wallClock], timeUnits: .microseconds)) { benchmark in
        let dir = lookupLogDirectory
        let (log, _) = try! PartitionLog.open(directory: dir, config: config(.os), cleanShutdown: true)
        var rng = SystemRandomNumberGenerator()
        let end = log.logEndOffset
        let targets = (0..<10_000).map { _ in Int64.random(in: 0..<end, using: &rng) }
        _ = try! log.read(from: 0, maxBytes: 1)  // warm
        benchmark.startMeasurement()
        for t in targets { blackHole(try! log.read(from: t, maxBytes: 1).nextOffset) }
        benchmark.stopMeasurement()
        try! log.close()
    }

    Benchmark("time lookup: offset(forTimestamp:) over 256 MiB, 10k lookups",
              configuration: .init(metrics: [.wallClock], timeUnits: .microseconds)) { benchmark in
        let dir = lookupLogDirectory
        let (log, _) = try! PartitionLog.open(directory: dir, config: config(.os), cleanShutdown: true)
        var rng = SystemRandomNumberGenerator()
        let end = log.logEndOffset
        let targets = (0..<10_000).map { _ in 1_700_000_000_000 + Int64.random(in: 0..<end, using: &rng) }
        _ = try! log.offset(forTimestamp: 0)  // map it
        benchmark.startMeasurement()
        for t in targets { blackHole(try! log.offset(forTimestamp: t)) }
        benchmark.stopMeasurement()
        try! log.close()
    }

    Benchmark("recovery scan: unclean open validating a 256 MiB tail (CRC + index rebuild)") { benchmark in
        let dir = recoveryLogDirectory
        remove(dir + "/partition.checkpoint")  // recovery point 0: every batch is re-validated
        var c = config(.os)
        c.segmentBytes = 512 << 20
        benchmark.startMeasurement()
        let (log, report) = try! PartitionLog.open(directory: dir, config: c, cleanShutdown: false)
        benchmark.stopMeasurement()
        precondition(report.bytesValidated >= 256 << 20 - (1 << 20), "recovery did not scan the tail")
        try! log.close()
    }

    Benchmark("clean reopen: 1,000 segments", configuration: .init(metrics: [.wallClock], timeUnits: .milliseconds)) { benchmark in
        let dir = cleanReopenDirectory
        var c = config(.os)
        c.segmentBytes = 64 * 1024
        c.maxMessageBytes = 64 * 1024
        benchmark.startMeasurement()
        let (log, _) = try! PartitionLog.open(directory: dir, config: c, cleanShutdown: true)
        benchmark.stopMeasurement()
        precondition(log.segmentCount >= 1000, "expected 1000 segments, got \(log.segmentCount)")
        try! log.close()
    }

    let crcInput = (0..<(64 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    Benchmark("CRC-32C hardware, 64 KiB", configuration: .init(metrics: [.wallClock, .throughput], timeUnits: .nanoseconds, scalingFactor: .kilo, maxIterations: 100_000)) { benchmark in
        crcInput.withUnsafeBytes { p in
            for _ in benchmark.scaledIterations { blackHole(CRC32C.hardware(p)) }
        }
    }
    Benchmark("CRC-32C software (slicing-by-8), 64 KiB", configuration: .init(metrics: [.wallClock, .throughput], timeUnits: .nanoseconds, scalingFactor: .kilo, maxIterations: 100_000)) { benchmark in
        crcInput.withUnsafeBytes { p in
            for _ in benchmark.scaledIterations { blackHole(CRC32C.software(p)) }
        }
    }
}
