#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import StrataBroker
import StrataCore
import StrataLog
import StrataKafka

/// Events out, as JSON lines. Opens the data directory read-only, so it works next to a running
/// `serve` or `produce`; with --group it also commits the group's offsets (in LMDB).
struct Consume: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consume",
        abstract: "Write a topic's events to stdout, one per line.",
        discussion: """
            Without --from-beginning, --offset, --since or a committed group offset, reading starts at \
            the end (like kafka-console-consumer), which prints nothing unless --follow waits for new events. \
            TIME is RFC 3339 (2025-10-01T00:00:00Z), epoch milliseconds, or a duration ago (30s, 15m, 2h, 7d).
            """)

    @OptionGroup var options: DataOptions
    @Argument(help: "Topic name.") var topic: String
    @Option(help: "Only this partition (default: all, one after the other).") var partition: Int32?
    @Flag(help: "Start at the oldest event.") var fromBeginning = false
    @Option(help: "Start at this offset (needs --partition when the topic has several).") var offset: Int64?
    @Option(help: "Start at the first event with timestamp >= TIME (found through the time index).") var since: String?
    @Option(help: "Stop before the first event with timestamp >= TIME.") var until: String?
    @Option(help: "Stop after this many events.") var maxMessages: Int?
    @Option(help: "Resume from and commit to this consumer group's offsets.") var group: String?
    @Flag(help: "Keep waiting for new events, like tail -f.") var follow = false
    @Flag(help: "Write {\"partition\",\"offset\",\"timestamp\",\"key\",\"value\"} objects instead of bare values.") var printMeta = false
    @Option(help: "Consume through a running server at HOST:PORT (Kafka protocol) instead of reading the data directory.") var bootstrap: String?
    @Flag(help: "Also print records of open and aborted transactions (default: committed records only, as read_committed).") var readUncommitted = false

    var committedOnly: Bool { !readUncommitted }

    func validate() throws {
        let starts = [fromBeginning, offset != nil, since != nil].filter { $0 }.count
        if starts > 1 { throw ValidationError("--from-beginning, --offset and --since are exclusive") }
        if let maxMessages, maxMessages < 0 { throw ValidationError("--max-messages must be >= 0") }
    }

    func run() throws {
        let source: ConsumeSource
        if let bootstrap {
            let (host, port) = try Serve.split(bootstrap)
            source = try RemoteSource(host: host, port: port, topic: topic)
        } else {
            source = try LocalSource(broker: try options.openReadOnly(commits: group != nil), topic: topic)
        }
        let count = source.partitionCount
        if let partition, partition < 0 || partition >= count { throw CLIError("topic \(topic) has no partition \(partition)") }
        if offset != nil && partition == nil && count > 1 { throw CLIError("--offset needs --partition: topic \(topic) has \(count) partitions") }
        let now = wallClockMillis()
        let sinceMs = try since.map { try parseTime($0, now: now, flag: "--since") }
        let untilMs = try until.map { try parseTime($0, now: now, flag: "--until") }
        let partitions = partition.map { [$0] } ?? Array(0..<count)

        // Where each partition starts and (unless following) ends.
        var positions: [Int32: Int64] = [:]
        var ends: [Int32: Int64] = [:]
        for p in partitions {
            var (logStart, logEnd) = try source.bounds(p)
            // Read committed: the end is the last stable offset (an open transaction's records wait).
            if committedOnly { logEnd = min(logEnd, try source.stableEnd(p)) }
            var start: Int64
            if let offset {
                guard offset >= logStart && offset <= logEnd else {
                    throw CLIError("offset \(offset) is outside partition \(p)'s range [\(logStart), \(logEnd)]")
                }
                start = offset
            } else if let sinceMs {
                start = try source.offset(p, forTimestamp: sinceMs)
            } else if let group, let committed = try source.committed(group: group, p) {
                // A group resumes where it committed; --from-beginning only decides where a group
                // without a commit starts (Kafka's auto.offset.reset).
                start = min(max(committed, logStart), logEnd)
            } else if fromBeginning {
                start = logStart
            } else {
                start = logEnd
            }
            positions[p] = start
            if let untilMs {
                ends[p] = try source.offset(p, forTimestamp: untilMs)
            } else if !follow {
                ends[p] = logEnd
            }
        }

        let printMeta = self.printMeta  // read the option once, not per record
        var out = OutputBuffer()
        var written = 0
        let limit = maxMessages ?? Int.max
        var lastCommit = monotonicMillis()

        func commit() throws {
            guard let group else { return }
            try source.commit(group: group, partitions.map { ($0, positions[$0]!) })
        }

        /// Writes what is readable now from partition `p`; returns true if anything was read.
        func drain(_ p: Int32, waitMs: Int64) throws -> Bool {
            var progressed = false
            while written < limit {
                let position = positions[p]!
                if let end = ends[p], position >= end { break }
                var next = position
                var stop = false
                let got = try source.read(p, from: position, maxBytes: 1 << 20, maxWaitMs: progressed ? 0 : waitMs,
                                          committedOnly: committedOnly) { raw, aborted in
                    var filter = ReadCommittedFilter(aborted: aborted)
                    var at = 0
                    while at < raw.count, !stop, let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: raw[at...])), at + size <= raw.count {
                        let batch = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: raw[at..<at + size]))
                        at += size
                        // Transaction markers are not records; nor, read committed, are aborted ones.
                        guard filter.accepts(batch) else {
                            if batch.lastOffset >= position { next = max(next, batch.nextOffset) }
                            continue
                        }
                        guard batch.lastOffset >= position else { continue }
                        try batch.forEachRecord { r in
                            guard !stop, r.offset >= position else { return }
                            if let end = ends[p], r.offset >= end { stop = true; return }
                            if written >= limit { stop = true; return }
                            next = r.offset + 1
                            if let sinceMs, r.timestamp < sinceMs { return }      // out-of-order timestamps
                            if let untilMs, r.timestamp >= untilMs { return }
                            Self.write(r, partition: p, meta: printMeta, into: &out)
                            written += 1
                        }
                        if !stop { next = max(next, batch.nextOffset) }
                    }
                }
                guard got, next > position else { break }
                positions[p] = next
                progressed = true
                if stop { break }
            }
            return progressed
        }

        for p in partitions { _ = try drain(p, waitMs: 0) }
        while follow && written < limit {
            out.flush()
            var any = false
            for p in partitions where try drain(p, waitMs: partitions.count == 1 ? 500 : 0) { any = true }
            if monotonicMillis() - lastCommit >= 1000 {
                try commit()
                lastCommit = monotonicMillis()
            }
            if !any && !(source is RemoteSource && partitions.count == 1) { usleep(50_000) }
        }
        out.flush()
        try commit()
    }

    private func parseTime(_ text: String, now: Int64, flag: String) throws -> Int64 {
        guard let t = Timestamps.parseUserTime(text, nowMs: now) else {
            throw ValidationError("\(flag) '\(text)' is not RFC 3339, epoch milliseconds, or a duration like 2h / 7d")
        }
        return t
    }

    private static func write(_ r: RecordBatch.Record, partition: Int32, meta printMeta: Bool, into out: inout OutputBuffer) {
        guard printMeta else {
            if let v = r.value { out.write(v) }
            out.write("\n")
            return
        }
        out.write("{\"partition\":\(partition),\"offset\":\(r.offset),\"timestamp\":\(r.timestamp),\"key\":")
        if let k = r.key { jsonString(k, into: &out) } else { out.write("null") }
        out.write(",\"value\":")
        if let v = r.value {
            if JSONScanner.isValid(v) { out.write(v) } else { jsonString(v, into: &out) }
        } else {
            out.write("null")
        }
        out.write("}\n")
    }
}

/// Where `consume` reads from: the data directory (read-only, next to any writer), or a server
/// over the Kafka protocol.
protocol ConsumeSource {
    var partitionCount: Int32 { get }
    /// (log start, log end) of a partition, as of now.
    func bounds(_ p: Int32) throws -> (Int64, Int64)
    /// First offset with timestamp >= T, or the log end.
    func offset(_ p: Int32, forTimestamp: Int64) throws -> Int64
    func committed(group: String, _ p: Int32) throws -> Int64?
    func commit(group: String, _ offsets: [(Int32, Int64)]) throws
    /// Calls `body` with whole record batches starting at or before `offset`, and the aborted
    /// transactions among them; false when there was nothing to read (after waiting up to
    /// `maxWaitMs` where the source can wait). `committedOnly` reads as read_committed: up to the
    /// last stable offset, with the aborted transactions listed.
    func read(_ p: Int32, from offset: Int64, maxBytes: Int, maxWaitMs: Int64, committedOnly: Bool,
              _ body: (UnsafeRawBufferPointer, [AbortedTransaction]) throws -> Void) throws -> Bool
    /// The end of what a read_committed reader sees now (the last stable offset).
    func stableEnd(_ p: Int32) throws -> Int64
}

struct LocalSource: ConsumeSource {
    let broker: Broker
    let topic: String
    let partitionCount: Int32

    init(broker: Broker, topic: String) throws {
        guard let count = broker.partitionCount(topic) else { throw CLIError("unknown topic '\(topic)'") }
        self.broker = broker
        self.topic = topic
        partitionCount = count
    }

    func bounds(_ p: Int32) throws -> (Int64, Int64) {
        let log = try broker.log(topic: topic, partition: p)
        try log.refresh()
        return (log.logStartOffset, log.logEndOffset)
    }

    func offset(_ p: Int32, forTimestamp t: Int64) throws -> Int64 { try broker.offset(topic: topic, partition: p, forTimestamp: t) }
    func committed(group: String, _ p: Int32) throws -> Int64? { try broker.committedOffset(group: group, topic: topic, partition: p) }
    func commit(group: String, _ offsets: [(Int32, Int64)]) throws {
        try broker.commitOffsets(group: group, offsets: offsets.map { (topic, $0.0, $0.1) })
    }

    func read(_ p: Int32, from offset: Int64, maxBytes: Int, maxWaitMs: Int64, committedOnly: Bool,
              _ body: (UnsafeRawBufferPointer, [AbortedTransaction]) throws -> Void) throws -> Bool {
        let log = try broker.log(topic: topic, partition: p)
        if offset >= log.logEndOffset { try log.refresh() }
        if committedOnly { try log.catchUpProducerState() }
        guard offset < log.logEndOffset, let slice = try log.read(from: offset, maxBytes: maxBytes, committedOnly: committedOnly).slice else { return false }
        let aborted = committedOnly ? log.abortedTransactions(from: offset, upTo: slice.nextOffset) : []
        try withExtendedLifetime(slice) { try body(slice.bytes, aborted) }
        return true
    }

    func stableEnd(_ p: Int32) throws -> Int64 {
        let log = try broker.log(topic: topic, partition: p)
        try log.refresh()
        try log.catchUpProducerState()
        return log.lastStableOffset
    }
}

final class RemoteSource: ConsumeSource {
    let client: KafkaClient
    let topic: String
    let partitionCount: Int32

    init(host: String, port: Int, topic: String) throws {
        client = try KafkaClient(host: host, port: port, clientId: "strata-consume")
        self.topic = topic
        guard let t = try client.topics().first(where: { $0.name == topic }) else { throw CLIError("unknown topic '\(topic)'") }
        partitionCount = Int32(t.partitions)
    }

    func bounds(_ p: Int32) throws -> (Int64, Int64) {
        (try client.listOffset(topic: topic, partition: p, timestamp: -2), try client.listOffset(topic: topic, partition: p, timestamp: -1))
    }

    func offset(_ p: Int32, forTimestamp t: Int64) throws -> Int64 {
        let found = try client.listOffset(topic: topic, partition: p, timestamp: t)
        return found >= 0 ? found : try client.listOffset(topic: topic, partition: p, timestamp: -1)
    }

    func committed(group: String, _ p: Int32) throws -> Int64? {
        let o = try client.committedOffsets(group: group, topic: topic, partitions: [p])[p] ?? -1
        return o >= 0 ? o : nil
    }

    func commit(group: String, _ offsets: [(Int32, Int64)]) throws {
        try client.commitOffsets(group: group, topic: topic, offsets: offsets)
    }

    func read(_ p: Int32, from offset: Int64, maxBytes: Int, maxWaitMs: Int64, committedOnly: Bool,
              _ body: (UnsafeRawBufferPointer, [AbortedTransaction]) throws -> Void) throws -> Bool {
        let fetched = try client.fetchPartition(topic: topic, partition: p, offset: offset, maxBytes: Int32(maxBytes), maxWaitMs: Int32(maxWaitMs),
                                                readCommitted: committedOnly)
        guard fetched.error == 0 else { throw CLIError("fetch \(topic)-\(p) at \(offset): Kafka error \(fetched.error)") }
        guard fetched.batches.readableBytes > 0 else { return false }
        let aborted = fetched.aborted.map { AbortedTransaction(producerId: $0.producerId, firstOffset: $0.firstOffset, lastOffset: .max) }
        try fetched.batches.withUnsafeReadableBytes { try body($0, aborted) }
        return true
    }

    func stableEnd(_ p: Int32) throws -> Int64 { try client.listOffset(topic: topic, partition: p, timestamp: -1, readCommitted: true) }
}
