import CoreMetrics

/// The broker's event metrics (swift-metrics facade; no-ops unless a backend is bootstrapped).
/// Counts the broker already keeps (retention and cleaner runs, bytes reclaimed, failures) are
/// read at scrape time from `retentionStatus` and `cleanerStatus` instead.
enum BrokerMetrics {
    /// One compaction pass over one partition.
    static let cleanerDuration = Timer(label: "strata_cleaner_duration_seconds")
}
