import ArgumentParser
import StrataBroker
import StrataLog
import StrataCore

/// The cold tier's size and speed on a topic's own data, before it exists: every closed segment
/// encoded in the cold format in memory and decoded back record for record.
struct Tier: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the cold format on a topic: bytes of its closed segments hot and cold, every record verified.",
        discussion: """
            With --dry-run (required for now) nothing is written: each closed segment is encoded block by \
            block in memory, each block decoded again and compared with the log record by record, and the \
            sizes and times printed. Converting segments in place and serving them from the cold format \
            are not built yet. Read-only, next to a running server.
            """)

    @OptionGroup var options: DataOptions
    @Argument(help: "Topic name.") var topic: String
    @Flag(help: "Encode and verify in memory only (the only mode so far).") var dryRun = false
    @Option(help: "Only this partition (repeatable; default all).") var partition: [Int32] = []
    @Flag(help: "Also print what each part costs: batch and record fields, keys, shapes, and each member path's column with its encoding.") var streams = false

    func run() throws {
        guard dryRun else {
            throw ValidationError("converting segments to the cold tier is not built yet: run with --dry-run to measure it on this topic")
        }
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
            print("\(topic): no closed segments (the active segment of each partition is never converted)")
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
}
