import ArgumentParser
import StrataBroker
import StrataCore
import StrataQuery

/// A topic's history as Parquet files for other engines (DuckDB, Spark, Trino, pyarrow).
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a topic's records as Parquet files: partition, offset, timestamp, key, value, headers and a column per JSON member.",
        discussion: """
            One or more files per partition, named TOPIC-PARTITION-FIRSTOFFSET-LASTOFFSET.parquet (zstd, \
            one row group each). Member columns are typed per file: INT64, DOUBLE, BOOLEAN, STRING, or JSON \
            text for objects and arrays; mixed types become strings. Committed records only, as strata query \
            reads them; --since/--until select offsets through the time index. Safe next to a running server; \
            each file appears whole (written aside, then renamed).
            """)

    @OptionGroup var options: DataOptions
    @Argument(help: "Topic name.") var topic: String
    @Option(help: "Output format (parquet).") var format: String = "parquet"
    @Option(help: "Directory for the files (created if missing).") var output: String
    @Option(help: "Only this partition (repeatable; default all).") var partition: [Int32] = []
    @Option(help: "From the first record at or after TIME (RFC 3339, a date, or epoch ms).") var since: String?
    @Option(help: "Up to the first record at or after TIME.") var until: String?
    @Option(help: "Rows per file at most.") var maxRows: Int = 1_000_000
    @Option(help: "MiB of keys and values per file at most.") var maxMib: Int = 256
    @Flag(help: "Include records of open and aborted transactions.") var readUncommitted = false
    @Flag(help: "Continue after the files already in --output (each partition after the last offset their names cover).") var resume = false
    @Flag(help: "Leave out the raw value column (members only: smaller, but values that are not JSON objects are lost).") var withoutValue = false

    func run() throws {
        guard format == "parquet" else { throw ValidationError("--format: only parquet is supported") }
        guard maxRows > 0, maxMib > 0, maxMib <= 4096 else { throw ValidationError("--max-rows must be positive and --max-mib within 1...4096") }
        let now = wallClockMillis()
        var o = ParquetExport.Options(topic: topic, outputDirectory: output)
        o.partitions = partition.isEmpty ? nil : partition
        o.sinceMs = try parseTimeOption(since, flag: "--since", nowMs: now)
        o.untilMs = try parseTimeOption(until, flag: "--until", nowMs: now)
        o.maxRowsPerFile = maxRows
        o.maxBytesPerFile = maxMib << 20
        o.readCommitted = !readUncommitted
        o.includeValue = !withoutValue
        o.resume = resume
        let broker = try options.openReadOnly()
        defer { try? broker.close() }
        let started = monotonicMillis()
        let files = try ParquetExport(broker: broker, options: o).run { f in
            print("\(output)/\(f.name): \(f.rows) rows, offsets \(f.firstOffset)-\(f.lastOffset), \(f.memberColumns) member columns, \(f.bytes) bytes")
            if f.membersLeftOut > 0 { printError("strata export: \(f.membersLeftOut) members past the column limit stay in value only (\(f.name))") }
        }
        let rows = files.reduce(0) { $0 + $1.rows }
        let input = files.reduce(0) { $0 + $1.recordBytes }
        let written = files.reduce(0) { $0 + $1.bytes }
        let seconds = Double(monotonicMillis() - started) / 1000
        let ratio = written > 0 ? String(format2: Double(input) / Double(written)) : "-"
        print("\(topic): \(rows) records in \(files.count) files, \(input) bytes of keys and values → \(written) bytes of Parquet (\(ratio)x) in \(String(format2: seconds)) s")
    }
}

extension String {
    init(format2 v: Double) {
        let hundredths = (v * 100).rounded()
        guard hundredths.isFinite, abs(hundredths) < 1e15 else { self = "\(v)"; return }
        let n = Int64(hundredths)
        let frac = abs(n % 100)
        self = "\(n / 100).\(frac < 10 ? "0" : "")\(frac)"
    }
}
