import ArgumentParser
import StrataBroker
import StrataLog
import StrataCore

/// Moves a topic's closed segments to the cold tier now (`cold.after.ms` does it in the
/// background), or with --dry-run measures the cold format on them without writing anything.
struct Tier: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tier",
        abstract: "Convert a topic's closed segments to the cold tier now, printing bytes before and after.",
        discussion: """
            Each closed, synced segment (the active one never) is rewritten as a cold segment: every \
            block decoded again and compared with the log record by record, then swapped in crash-safely; \
            consumers, strata consume and strata query read it as before. Needs the data directory to \
            itself (stop the server; a running server converts with the topic's cold.after.ms). \
            With --dry-run nothing is written (read-only, next to a running server): the segments are \
            encoded in memory, verified and read back, and sizes and speeds printed.
            """)

    @OptionGroup var options: DataOptions
    @Argument(help: "Topic name.") var topic: String
    @Flag(help: "Encode and verify in memory only; nothing is written.") var dryRun = false
    @Option(help: "Only segments older than this many ms (as retention measures age; default: every closed segment).") var olderThanMs: Int64?
    @Option(help: "Only this partition (repeatable; default all).") var partition: [Int32] = []
    @Flag(help: "With --dry-run: also print what each part costs: batch and record fields, keys, shapes, and each member path's column with its encoding.") var streams = false

    func run() throws {
        if let olderThanMs, olderThanMs < 0 { throw ValidationError("--older-than-ms must be >= 0") }
        guard dryRun else { return try convert() }
        guard olderThanMs == nil else { throw ValidationError("--older-than-ms applies to a conversion, not to --dry-run") }
        let broker = try options.openReadOnly()
        defer { try? broker.close() }
        guard let count = broker.partitionCount(topic) else { throw CLIError("unknown topic '\(topic)'") }
        for p in partition where p < 0 || p >= count { throw CLIError("topic '\(topic)' has no partition \(p)") }
        var hot = 0, cold = 0, records = 0, segments = 0
        var encode = 0.0, verify = 0.0, serve = 0.0
        // Per stream name (and encodings seen), summed over every block.
        var parts: [String: (encodings: Set<String>, raw: Int, stored: Int)] = [:]
        let collect: ((ColdBlock.StreamStats) -> Void)? = streams ? { s in
            var p = parts[s.name] ?? ([], 0, 0)
            if !s.encoding.isEmpty { p.encodings.insert(s.encoding) }
            p.raw += s.rawBytes
            p.stored += s.storedBytes
            parts[s.name] = p
        } : nil
        for p in partition.isEmpty ? Array(0..<count) : partition {
            let log = try broker.log(topic: topic, partition: p)
            try ColdTier.measure(log: log, partition: p, streams: collect) { r in
                print("\(topic)-\(r.partition) segment \(r.baseOffset): \(r.records) records, \(r.hotBytes) → \(r.coldBytes) bytes "
                      + "(\(String(format2: Double(r.hotBytes) / Double(max(1, r.coldBytes))))x), encoded in \(String(format2: r.encodeSeconds)) s, verified")
                hot += r.hotBytes
                cold += r.coldBytes
                records += r.records
                segments += 1
                encode += r.encodeSeconds
                verify += r.verifySeconds
                serve += r.serveSeconds
            }
        }
        guard segments > 0 else {
            print("\(topic): no closed hot segments (the active segment of each partition is never converted; cold ones are already)")
            return
        }
        if streams {
            func cell(_ text: String, _ width: Int) -> String { text + String(repeating: " ", count: max(1, width - text.count)) }
            print(cell("part", 32) + cell("encoding", 24) + cell("bytes before zstd", 20) + "stored")
            for (name, p) in parts.sorted(by: { $0.value.stored > $1.value.stored }) {
                print(cell(name, 32) + cell(p.encodings.sorted().joined(separator: ","), 24) + cell("\(p.raw)", 20) + "\(p.stored)")
            }
        }
        let rate = encode > 0 ? Double(hot) / encode / 1e6 : 0
        let serveRate = serve > 0 ? Double(hot) / serve / 1e6 : 0
        print("\(topic): \(segments) closed segments, \(records) records: \(hot) bytes hot → \(cold) bytes cold "
              + "(\(String(format2: Double(hot) / Double(max(1, cold))))x smaller); encoding \(String(format2: rate)) MB/s of log on one core, "
              + "reading it back as batches \(String(format2: serveRate)) MB/s; verification \(String(format2: verify)) s; every record decoded identical")
    }

    private func convert() throws {
        guard !streams else { throw ValidationError("--streams needs --dry-run") }
        let broker = try options.openBroker()
        defer { try? broker.close() }
        guard let count = broker.partitionCount(topic) else { throw CLIError("unknown topic '\(topic)'") }
        for p in partition where p < 0 || p >= count { throw CLIError("topic '\(topic)' has no partition \(p)") }
        var total = ColdConversionReport()
        for p in partition.isEmpty ? Array(0..<count) : partition {
            let log = try broker.log(topic: topic, partition: p)
            try log.flush()  // only synced segments convert
            let r = try log.convertToCold(olderThanMs: olderThanMs)
            if r.segmentsConverted > 0 {
                print("\(topic)-\(p): \(r.segmentsConverted) segments, \(r.records) records: \(r.hotBytes) → \(r.coldBytes) bytes "
                      + "(\(String(format2: Double(r.hotBytes) / Double(max(1, r.coldBytes))))x smaller)")
            }
            total.add(r)
        }
        guard total.segmentsConverted > 0 else {
            print("\(topic): nothing to convert (closed hot segments\(olderThanMs.map { " older than \($0) ms" } ?? ""); the active segment never converts)")
            return
        }
        let rate = total.encodeSeconds > 0 ? Double(total.hotBytes) / total.encodeSeconds / 1e6 : 0
        print("\(topic): \(total.segmentsConverted) segments converted, \(total.hotBytes) bytes hot → \(total.coldBytes) bytes cold "
              + "(\(String(format2: Double(total.hotBytes) / Double(max(1, total.coldBytes))))x smaller) in \(String(format2: total.seconds)) s; "
              + "encoding \(String(format2: rate)) MB/s of log, verification \(String(format2: total.verifySeconds)) s")
    }
}
