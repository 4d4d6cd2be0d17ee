import ArgumentParser
import StrataBroker
import StrataLog

/// One key-latest compaction pass over a topic's closed segments, in the foreground.
struct Compact: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compact",
        abstract: "Compact a topic now: keep the latest value per key in its closed segments.",
        discussion: "Offsets never change and order is kept. The active segment is not touched (roll it with segment.ms/bytes).")

    @OptionGroup var options: DataOptions
    @Argument(help: "Topic name.") var topic: String
    @Flag(help: "Compute the report without changing anything.") var dryRun = false
    @Flag(help: "Print the report (always printed with --dry-run).") var report = false
    @Option(help: "Report format: text or json.") var format: String = "text"
    @Option(help: "Tombstones older than this are dropped (default: the topic's delete.retention.ms).") var deleteRetentionMs: Int64?
    @Option(help: "key-latest, key-latest-windowed or size-tiered (default: the topic's compaction.strategy).") var strategy: String?
    @Option(help: "Window of key-latest-windowed, ms.") var windowMs: Int64 = 3_600_000

    func run() throws {
        guard format == "text" || format == "json" else { throw ValidationError("--format must be text or json") }
        let broker = try options.openBroker()
        defer { try? broker.close() }
        guard let count = broker.partitionCount(topic), let config = broker.topicConfig(topic) else { throw CLIError("unknown topic '\(topic)'") }
        let chosen: CompactionStrategy
        switch strategy {
        case nil: chosen = config.compactionStrategy
        case "key-latest": chosen = .keyLatest
        case "size-tiered": chosen = .sizeTiered
        case "key-latest-windowed": chosen = .keyLatestWindowed(windowMs: windowMs)
        default: throw ValidationError("--strategy must be key-latest, key-latest-windowed or size-tiered")
        }
        var total = CompactionReport()
        total.dryRun = dryRun
        for p in 0..<count {
            let log = try broker.log(topic: topic, partition: p)
            try log.flush()  // only fully synced segments are compacted
            let r = try log.compact(strategy: chosen, deleteRetentionMs: deleteRetentionMs ?? config.deleteRetentionMs, dryRun: dryRun)
            total.segmentsIn += r.segmentsIn; total.segmentsOut += r.segmentsOut
            total.bytesBefore += r.bytesBefore; total.bytesAfter += r.bytesAfter
            total.recordsBefore += r.recordsBefore; total.recordsAfter += r.recordsAfter
            total.distinctKeys += r.distinctKeys; total.tombstonesDropped += r.tombstonesDropped
            total.bytesScanned += r.bytesScanned; total.seconds += r.seconds
        }
        guard report || dryRun else { return }
        let mbps = total.seconds > 0 ? Double(total.bytesScanned) / total.seconds / 1e6 : 0
        if format == "json" {
            print("{\"topic\":\"\(topic)\",\"strategy\":\"\(chosen.name)\",\"dry_run\":\(dryRun),\"segments_in\":\(total.segmentsIn),\"segments_out\":\(total.segmentsOut),\"bytes_before\":\(total.bytesBefore),\"bytes_after\":\(total.bytesAfter),\"records_before\":\(total.recordsBefore),\"records_after\":\(total.recordsAfter),\"distinct_keys\":\(total.distinctKeys),\"tombstones_dropped\":\(total.tombstonesDropped),\"seconds\":\(total.seconds),\"scan_mb_per_s\":\(Int(mbps)),\"write_amplification\":\(total.writeAmplification)}")
        } else {
            print("""
                \(topic): \(chosen.name)\(dryRun ? " (dry run)" : "")
                  segments   \(total.segmentsIn) -> \(total.segmentsOut)
                  bytes      \(total.bytesBefore) -> \(total.bytesAfter)
                  records    \(total.recordsBefore) -> \(total.recordsAfter) (\(total.distinctKeys) distinct keys, \(total.tombstonesDropped) tombstones dropped)
                  time       \((total.seconds * 1000).rounded() / 1000) s, \(Int(mbps)) MB/s scanned, write amplification \((total.writeAmplification * 100).rounded() / 100)
                """)
        }
    }
}
