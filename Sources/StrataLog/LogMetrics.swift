import CoreMetrics

/// The log engine's event metrics, through the swift-metrics facade: no-ops unless the process
/// bootstrapped a metrics backend (`strata serve` does, before it opens the data directory, so
/// these handles, created on first use, bind to it). State that can be read at any time (offsets,
/// sizes, traffic counters) is not pushed here but read by the scrape.
enum LogMetrics {
    /// One group-commit round: the fdatasync of every segment with unflushed bytes.
    static let flushDuration = Timer(label: "strata_log_flush_duration_seconds")
    /// Offsets (records) made durable by one group-commit round: how many appends one fsync served.
    static let recordsPerFlush = Recorder(label: "strata_log_flush_records", aggregate: true)
}
