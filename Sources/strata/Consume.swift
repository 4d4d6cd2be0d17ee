#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import StrataBroker
import StrataCore
import StrataLog

/// Events out, as JSON lines. Opens the data directory read-only, so it works next to a running
/// `serve` or `produce`; with --group it also commits the group's offsets (in LMDB).
struct Consume: ParsableCommand {
    static let configuration = CommandConfiguration(
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

    func validate() throws {
        let starts = [fromBeginning, offset != nil, since != nil].filter { $0 }.count
        if starts > 1 { throw ValidationError("--from-beginning, --offset and --since are exclusive") }
        if let maxMessages, maxMessages < 0 { throw ValidationError("--max-messages must be >= 0") }
    }

    func run() throws {
        let broker = try options.openReadOnly(commits: group != nil)
        guard let count = broker.partitionCount(topic) else { throw CLIError("unknown topic '\(topic)'") }
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
            let log = try broker.log(topic: topic, partition: p)
            try log.refresh()
            var start: Int64
            if let offset {
                guard offset >= log.logStartOffset && offset <= log.logEndOffset else {
                    throw CLIError("offset \(offset) is outside partition \(p)'s range [\(log.logStartOffset), \(log.logEndOffset)]")
                }
                start = offset
            } else if let sinceMs {
                start = try broker.offset(topic: topic, partition: p, forTimestamp: sinceMs)
            } else if let group, let committed = try broker.committedOffset(group: group, topic: topic, partition: p) {
                // A group resumes where it committed; --from-beginning only decides where a group
                // without a commit starts (Kafka's auto.offset.reset).
                start = min(max(committed, log.logStartOffset), log.logEndOffset)
            } else if fromBeginning {
                start = log.logStartOffset
            } else {
                start = log.logEndOffset
            }
            positions[p] = start
            if let untilMs {
                ends[p] = try broker.offset(topic: topic, partition: p, forTimestamp: untilMs)
            } else if !follow {
                ends[p] = log.logEndOffset
            }
        }

        let printMeta = self.printMeta  // read the option once, not per record
        var out = OutputBuffer()
        var written = 0
        let limit = maxMessages ?? Int.max
        var lastCommit = monotonicMillis()

        func commit() throws {
            guard let group else { return }
            try broker.commitOffsets(group: group, offsets: partitions.map { (topic, $0, positions[$0]!) })
        }

        /// Writes what is readable now from partition `p`; returns true if anything was read.
        func drain(_ p: Int32) throws -> Bool {
            let log = try broker.log(topic: topic, partition: p)
            var progressed = false
            while written < limit {
                let position = positions[p]!
                let end = ends[p] ?? log.logEndOffset
                guard position < end else { break }
                let result = try log.read(from: position, maxBytes: 1 << 20)
                guard let slice = result.slice else { break }
                var next = result.nextOffset
                var stop = false
                try slice.forEachBatch { batch in
                    if stop { return }
                    try batch.forEachRecord { r in
                        guard !stop, r.offset >= position else { return }
                        if r.offset >= end || written >= limit {
                            stop = true
                            next = r.offset
                            return
                        }
                        if let sinceMs, r.timestamp < sinceMs { return }      // out-of-order timestamps
                        if let untilMs, r.timestamp >= untilMs { return }
                        Self.write(r, partition: p, meta: printMeta, into: &out)
                        written += 1
                        next = r.offset + 1
                    }
                }
                positions[p] = min(max(next, position + 1), end)
                if stop { positions[p] = next }
                progressed = true
            }
            return progressed
        }

        for p in partitions { _ = try drain(p) }
        while follow && written < limit {
            out.flush()
            var any = false
            for p in partitions {
                try broker.log(topic: topic, partition: p).refresh()
                if try drain(p) { any = true }
            }
            if monotonicMillis() - lastCommit >= 1000 {
                try commit()
                lastCommit = monotonicMillis()
            }
            // The writer is another process: nothing can wake this one, so look again shortly.
            if !any { usleep(50_000) }
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
