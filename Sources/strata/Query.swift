import ArgumentParser
import Glibc
import StrataBroker
import StrataCore
import StrataQuery

/// SQL over the persisted events, read-only, next to a running writer.
struct Query: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "query",
        abstract: "Run SQL over the topics: each topic is a table (partition, offset, timestamp, key, value, headers).",
        discussion: """
            JSON fields with SQLite's ->> (value->>'$.event_type'). Constraints on partition, offset and \
            timestamp are pushed down into the logs (time windows go through the time indexes). \
            The data directory is opened read-only and the log end offsets are fixed when the query starts.
            """)

    @OptionGroup var options: DataOptions
    @Argument(help: "SQL (one or more statements).") var sql: String
    @Option(help: "table, csv or jsonl.") var format: String = "table"
    @Option(help: "Bound every topic table to timestamps >= TIME.") var since: String?
    @Option(help: "Bound every topic table to timestamps < TIME.") var until: String?
    @Flag(help: "Print SQLite's plan and the segments/bytes read vs pruned (on stderr).") var explain = false
    @Flag(help: "Include records of open and aborted transactions (default: committed records only, as read_committed).") var readUncommitted = false

    func run() throws {
        guard ["table", "csv", "jsonl"].contains(format) else { throw ValidationError("--format must be table, csv or jsonl") }
        let now = wallClockMillis()
        let sinceMs = try parseTimeOption(since, flag: "--since", nowMs: now)
        let untilMs = try parseTimeOption(until, flag: "--until", nowMs: now)
        let engine = try QueryEngine(broker: try options.openReadOnly(), sinceMs: sinceMs, untilMs: untilMs,
                                     jsonMembers: QueryEngine.jsonMembers(in: sql), readCommitted: !readUncommitted)
        if explain { for line in try engine.plan(sql) { printError("plan: \(line)") } }
        // A progress line on a terminal once a statement runs longer than a second.
        var progress: PeriodicWorker?
        if isatty(2) == 1 {
            let started = monotonicMillis()
            let read = engine.statsReader
            let worker = PeriodicWorker(intervalMs: 250) {
                let elapsed = monotonicMillis() - started
                guard elapsed >= 1000 else { return }
                let s = read()
                printErrorNoNewline("\rscanned \(s.recordsScanned) records, \(s.bytesRead >> 20) MiB in \(elapsed / 1000) s   ")
            }
            worker.start()
            progress = worker
        }
        func stopProgress() {
            guard let worker = progress else { return }
            worker.stop()
            progress = nil
            printErrorNoNewline("\r\u{1B}[K")
        }
        var out = OutputBuffer()
        var columns: [String] = []
        var buffered: [[String?]] = []
        let format = self.format
        do {
            try engine.run(sql, header: { names in
                columns = names
                if format == "csv" { out.write(names.map(Self.csv).joined(separator: ",") + "\n") }
            }, row: { row in
                switch format {
                case "csv": out.write(row.map { Self.csv($0 ?? "") }.joined(separator: ",") + "\n")
                case "jsonl":
                    out.write("{" + zip(columns, row).map { "\(jsonQuote($0)):\($1.map(Self.jsonValue) ?? "null")" }.joined(separator: ",") + "}\n")
                default: buffered.append(row)
                }
            })
        } catch {
            stopProgress()
            out.flush()
            throw CLIError("\(error)")
        }
        stopProgress()
        if format == "table" { Self.table(columns, buffered, into: &out) }
        out.flush()
        if explain {
            let s = engine.stats
            printError("scan: \(s.partitionsScanned) partition(s), \(s.segmentsRead) of \(s.segmentsTotal) segments and \(s.bytesRead) of \(s.bytesTotal) bytes read (\(s.segmentsTotal - s.segmentsRead) segments pruned), \(s.recordsScanned) records scanned")
            if s.blocksSummarized > 0 || s.segmentsWithoutSummary > 0 {
                printError("summaries: \(s.blocksPruned) of \(s.blocksSummarized) summarised blocks pruned (\(s.bytesPruned) bytes not read: key or member Bloom filters rule them out), \(s.segmentsWithoutSummary) closed segment(s) without a summary read in full")
            }
            if s.coldBlocksFromColumns + s.coldBlocksDecoded > 0 {
                printError("cold: \(s.coldBlocksFromColumns) block(s) read from their member columns (\(s.coldBlocksFolded) folded straight into aggregates, \(s.coldBlocksFilteredOut) without a record passing the filters read first), \(s.coldBlocksDecoded) decoded whole")
            }
        }
    }

    static func csv(_ s: String) -> String {
        s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + s.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"") + "\"" : s
    }

    /// Numbers stay numbers; JSON objects/arrays are embedded; the rest are strings.
    static func jsonValue(_ s: String) -> String {
        if Double(s) != nil { return s }
        if let f = s.first, f == "{" || f == "[", JSONScanner.failure(in: Array(s.utf8)) == nil { return s }
        return jsonQuote(s)
    }

    static func table(_ columns: [String], _ rows: [[String?]], into out: inout OutputBuffer) {
        var widths = columns.map(\.count)
        for row in rows { for (i, v) in row.enumerated() { widths[i] = min(80, max(widths[i], (v ?? "NULL").count)) } }
        func line(_ cells: [String]) -> String {
            zip(cells, widths).map { c, w in
                let cut = c.count > w ? String(c.prefix(w - 1)) + "…" : c
                return cut + String(repeating: " ", count: max(0, w - cut.count))
            }.joined(separator: "  ")
        }
        out.write(line(columns) + "\n")
        out.write(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n")
        for row in rows { out.write(line(row.map { $0 ?? "NULL" }) + "\n") }
    }
}
