#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import StrataLog
import StrataCore

/// Direct access to partition logs on a data directory. The topic-aware `produce`/`consume`
/// commands (with keys, partitioning and consumer groups) build on the broker layer.
struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log", abstract: "Append to and read from a partition log directly.",
        subcommands: [Append.self, Read.self])

    struct Append: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Append lines from stdin (or --file) as records, one per line.")

        @OptionGroup var options: DataOptions
        @Argument(help: "Topic name.") var topic: String
        @Option(help: "Partition.") var partition: Int32 = 0
        @Option(help: "Input file instead of stdin.") var file: String?
        @Option(help: "Records per batch (1...100000).") var batchRecords: Int = 1000

        func validate() throws {
            guard (1...100_000).contains(batchRecords) else { throw ValidationError("--batch-records must be in 1...100000") }
            if let why = TopicName.problem(topic) { throw ValidationError(why) }
        }

        func run() throws {
            let manager = try LogManager.open(dataDirectory: options.data, defaultConfig: try options.logConfig())
            defer { try? manager.close() }
            let log = try manager.getOrCreateLog(topic: topic, partition: partition)
            let fd: Int32
            if let file {
                fd = open(file, O_RDONLY)
                guard fd >= 0 else { throw ValidationError("cannot open \(file): \(String(cString: strerror(errno)))") }
            } else {
                fd = 0
            }
            defer { if fd != 0 { close(fd) } }
            let started = nowSeconds()
            var pending: [ProducerRecord] = []
            var pendingBytes = 0
            var events = 0
            var bytes = 0
            let limit = log.config.maxMessageBytes - RecordBatch.headerSize
            func flushPending() throws {
                guard !pending.isEmpty else { return }
                try log.append(RecordBatchBuilder.build(pending))
                pending.removeAll(keepingCapacity: true)
                pendingBytes = 0
            }
            var reader = LineReader(fd: fd)
            let now = wallClockMillis()
            try reader.forEachLine { line in
                guard !line.isEmpty else { return }
                let recordBytes = line.count + 32
                guard recordBytes <= limit else {
                    throw ValidationError("line \(events + 1) is \(line.count) bytes; max.message.bytes allows \(limit)")
                }
                if pendingBytes + recordBytes > limit || pending.count == batchRecords { try flushPending() }
                pending.append(ProducerRecord(value: Array(line), timestamp: now))
                pendingBytes += recordBytes
                events += 1
                bytes += line.count + 1
            }
            try flushPending()
            let seconds = nowSeconds() - started
            printError("appended \(events) events, \(bytes) bytes in \((seconds * 1000).rounded() / 1000) s (\(formatRate(Double(events), seconds: seconds)) events/s); log end offset \(log.logEndOffset)")
        }
    }

    struct Read: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write record values, one per line, to stdout.")

        @OptionGroup var options: DataOptions
        @Argument(help: "Topic name.") var topic: String
        @Option(help: "Partition.") var partition: Int32 = 0
        @Option(help: "First offset (default: the log start).") var offset: Int64?
        @Option(help: "Start at the first record with timestamp >= this (epoch ms).") var sinceMs: Int64?
        @Option(help: "Stop after this many records.") var maxMessages: Int?

        func run() throws {
            let manager = try LogManager.open(dataDirectory: options.data, defaultConfig: try options.logConfig())
            defer { try? manager.close() }
            guard let log = manager.log(topic: topic, partition: partition) else {
                throw ValidationError("no partition \(topic)-\(partition) in \(options.data)")
            }
            var position = offset ?? log.logStartOffset
            if let sinceMs { position = try log.offset(forTimestamp: sinceMs) ?? log.logEndOffset }
            var out = OutputBuffer()
            var written = 0
            let limit = maxMessages ?? Int.max
            let end = log.logEndOffset
            reading: while position < end && written < limit {
                let result = try log.read(from: position, maxBytes: 1 << 20)
                guard let slice = result.slice else { break }
                var stop = false
                try slice.forEachBatch { batch in
                    if stop { return }
                    try batch.forEachRecord { r in
                        guard !stop, r.offset >= position else { return }
                        if let v = r.value { out.write(v) }
                        out.write("\n")
                        written += 1
                        if written >= limit { stop = true }
                    }
                }
                position = result.nextOffset
                if stop { break reading }
            }
            out.flush()
        }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show segments, indexes and offsets; --verify checks every batch.")

    @OptionGroup var options: DataOptions
    @Argument(help: "TOPIC or TOPIC-PARTITION (default: all).") var target: String?
    @Flag(help: "Validate every batch (CRC, offsets); exit non-zero on damage.") var verify = false

    func run() throws {
        let manager = try LogManager.open(dataDirectory: options.data, defaultConfig: try options.logConfig())
        defer { try? manager.close() }
        var damaged = false
        var out = OutputBuffer()
        for name in manager.partitionNames {
            guard let (topic, p) = LogManager.splitPartitionDirectory(name), let log = manager.log(topic: topic, partition: p) else { continue }
            if let target {
                let (t, tp) = parsePartitionArgument(target)
                if manager.log(topic: target, partition: p) != nil && topic == target {
                    // whole topic
                } else if t != topic || (tp != nil && tp != p) {
                    continue
                }
            }
            out.write("\(name): offsets [\(log.logStartOffset), \(log.logEndOffset)) recoveryPoint \(log.recoveryPoint) size \(log.sizeInBytes) bytes\n")
            for s in try log.segmentInfos() {
                let density = s.offsetIndexEntries > 0 ? "1 entry / \(s.sizeInBytes / s.offsetIndexEntries) bytes" : "no entries"
                out.write("  segment \(s.baseOffset)\(s.isActive ? " (active)" : ""): offsets [\(s.baseOffset), \(s.nextOffset)) \(s.sizeInBytes) bytes, index \(s.offsetIndexEntries) (\(density)), timeindex \(s.timeIndexEntries), max timestamp \(s.largestTimestamp)\n")
            }
            if verify {
                let problems = log.verify()
                for p in problems { out.write("  DAMAGE: \(p)\n") }
                if problems.isEmpty { out.write("  verified: every batch intact\n") }
                damaged = damaged || !problems.isEmpty
            }
        }
        out.flush()
        if damaged { throw ExitCode(2) }
    }
}
