#if canImport(Glibc)
import Glibc
#endif
import StrataBroker
import StrataCore
import StrataLog

/// The scrape-time half of `/metrics`: state read from the broker when Prometheus asks (offsets,
/// sizes, traffic counters kept as atomics per partition, retention and cleaner totals, consumer
/// lag, process resources), written in the Prometheus text format. Event metrics (request rates
/// and latencies, fsync latency, group-commit sizes) come from the swift-metrics registry.
///
/// Cardinality is bounded: per-partition series (offsets, size, segments) are written for the
/// first `maxPartitionSeries` partitions in topic order, per-group-partition lag series for the
/// first `maxLagSeries`; per-topic and per-group totals are always complete, and
/// `strata_metrics_series_dropped` says how many series the caps left out.
public struct BrokerCollector: Sendable {
    public var maxPartitionSeries: Int
    public var maxLagSeries: Int

    public init(maxPartitionSeries: Int = 2000, maxLagSeries: Int = 2000) {
        self.maxPartitionSeries = maxPartitionSeries
        self.maxLagSeries = maxLagSeries
    }

    public func render(_ broker: Broker, nowMs: Int64 = wallClockMillis()) -> String {
        var out = PrometheusText()
        var dropped = 0

        // Per topic and per partition.
        struct TopicTotals { var bytesIn = 0, recordsIn = 0, bytesOut = 0, recordsOut = 0, size = 0, partitions = 0, offline = 0 }
        var totals: [(String, TopicTotals)] = []
        var logEnd = PrometheusText.Family("strata_partition_log_end_offset", "gauge", "The offset the next appended record gets.")
        var logStart = PrometheusText.Family("strata_partition_log_start_offset", "gauge", "The first offset still in the log.")
        var size = PrometheusText.Family("strata_partition_size_bytes", "gauge", "Bytes of the partition's segments.")
        var segments = PrometheusText.Family("strata_partition_segments", "gauge", "Segments of the partition.")
        var offline = PrometheusText.Family("strata_partition_offline", "gauge", "1 for a partition that could not be opened (clients get KAFKA_STORAGE_ERROR).")
        var written = 0
        var onlineCount = 0
        var offlineCount = 0
        broker.forEachPartition { topic, partition, log in
            if totals.last?.0 != topic { totals.append((topic, TopicTotals())) }
            totals[totals.count - 1].1.partitions += 1
            let labels = [("topic", topic), ("partition", String(partition))]
            guard let log else {
                offlineCount += 1
                totals[totals.count - 1].1.offline += 1
                offline.sample(labels, 1)  // offline partitions are always listed: they are the ones to look at
                return
            }
            onlineCount += 1
            let bytes = log.sizeInBytes
            var t = totals[totals.count - 1].1
            t.bytesIn += log.traffic.bytesIn.load(ordering: .relaxed)
            t.recordsIn += log.traffic.recordsIn.load(ordering: .relaxed)
            t.bytesOut += log.traffic.bytesOut.load(ordering: .relaxed)
            t.recordsOut += log.traffic.recordsOut.load(ordering: .relaxed)
            t.size += bytes
            totals[totals.count - 1].1 = t
            guard written < maxPartitionSeries else { dropped += 4; return }
            written += 1
            logEnd.sample(labels, Double(log.logEndOffset))
            logStart.sample(labels, Double(log.logStartOffset))
            size.sample(labels, Double(bytes))
            segments.sample(labels, Double(log.segmentCount))
        }
        var bytesIn = PrometheusText.Family("strata_topic_bytes_in_total", "counter", "Bytes of record batches appended to the topic since the broker started.")
        var recordsIn = PrometheusText.Family("strata_topic_records_in_total", "counter", "Records appended to the topic since the broker started.")
        var bytesOut = PrometheusText.Family("strata_topic_bytes_out_total", "counter", "Bytes of record batches sent to consumers by Fetch since the broker started.")
        var recordsOut = PrometheusText.Family("strata_topic_records_out_total", "counter", "Offsets delivered to consumers by Fetch since the broker started (compacted gaps included).")
        var topicSize = PrometheusText.Family("strata_topic_size_bytes", "gauge", "Bytes of the topic's segments.")
        var topicPartitions = PrometheusText.Family("strata_topic_partitions", "gauge", "Partitions of the topic.")
        for (topic, t) in totals {
            let labels = [("topic", topic)]
            bytesIn.sample(labels, Double(t.bytesIn))
            recordsIn.sample(labels, Double(t.recordsIn))
            bytesOut.sample(labels, Double(t.bytesOut))
            recordsOut.sample(labels, Double(t.recordsOut))
            topicSize.sample(labels, Double(t.size))
            topicPartitions.sample(labels, Double(t.partitions))
        }
        for family in [bytesIn, recordsIn, bytesOut, recordsOut, topicSize, topicPartitions, logEnd, logStart, size, segments, offline] {
            out.append(family)
        }
        var partitions = PrometheusText.Family("strata_partitions", "gauge", "Partitions by state.")
        partitions.sample([("state", "online")], Double(onlineCount))
        partitions.sample([("state", "offline")], Double(offlineCount))
        out.append(partitions)

        // Retention and the cleaner.
        let retention = broker.retentionStatus
        out.single("strata_retention_runs_total", "counter", "Retention passes over every topic.", Double(retention.runs))
        out.single("strata_retention_segments_deleted_total", "counter", "Segments deleted by retention.", Double(retention.segmentsDeleted))
        out.single("strata_retention_bytes_deleted_total", "counter", "Bytes reclaimed by retention.", Double(retention.bytesDeleted))
        out.single("strata_retention_errors_total", "counter", "Partitions retention failed on.", Double(retention.errors))
        let cleaner = broker.cleanerStatus
        out.single("strata_cleaner_runs_total", "counter", "Compaction passes (one partition each).", Double(cleaner.passes))
        out.single("strata_cleaner_bytes_reclaimed_total", "counter", "Bytes reclaimed by compaction.", Double(cleaner.bytesReclaimed))
        out.single("strata_cleaner_errors_total", "counter", "Compaction passes that failed.", Double(cleaner.errors))
        // The cold tier: the worker's conversions, and the process-wide cache of decoded blocks.
        let cold = broker.coldTierStatus
        out.single("strata_cold_runs_total", "counter", "Cold-tier passes over the topics with cold.after.ms.", Double(cold.runs))
        out.single("strata_cold_segments_converted_total", "counter", "Segments converted to the cold tier by the worker.", Double(cold.converted.segmentsConverted))
        out.single("strata_cold_log_bytes_converted_total", "counter", "Bytes of log the worker converted.", Double(cold.converted.hotBytes))
        out.single("strata_cold_bytes_written_total", "counter", "Bytes of cold files the worker wrote.", Double(cold.converted.coldBytes))
        out.single("strata_cold_errors_total", "counter", "Partitions a cold-tier pass failed on.", Double(cold.errors))
        let cache = ColdBlockCache.shared.counts
        out.single("strata_cold_block_cache_bytes", "gauge", "Bytes of decoded cold blocks kept for readers (cold.block.cache.bytes bounds it).", Double(cache.bytes))
        out.single("strata_cold_block_cache_hits_total", "counter", "Reads of cold blocks served from the decoded-block cache.", Double(cache.hits))
        out.single("strata_cold_block_cache_misses_total", "counter", "Cold blocks decoded for readers.", Double(cache.misses))
        // Transactions: what is open, and what the coordinator had to end on its own.
        let transactionRecords = broker.transactions.all
        var transactionStates = PrometheusText.Family("strata_transactions", "gauge", "Transactional ids by transaction state.")
        for state in ["Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort"] {
            transactionStates.sample([("state", state)], Double(transactionRecords.filter { $0.state.description == state }.count))
        }
        out.append(transactionStates)
        out.single("strata_transactions_timed_out_total", "counter", "Open transactions aborted by their transaction.timeout.ms.",
                   Double(broker.transactions.timedOut.load(ordering: .relaxed)))
        out.single("strata_transactions_hanging_aborted_total", "counter", "Open transactions on partitions no coordinator record covered, aborted.",
                   Double(broker.transactions.hangingAborted.load(ordering: .relaxed)))
        var dirty = PrometheusText.Family("strata_partition_dirty_ratio", "gauge", "Closed bytes appended since the last compaction / all closed bytes, per partition of a compacted topic.")
        var dirtyWritten = 0
        for topic in broker.topicNames() where broker.topicConfig(topic)?.cleanupPolicy.contains("compact") == true {
            guard let description = try? broker.describeTopic(topic) else { continue }
            for p in description.partitions {
                guard let ratio = p.dirtyRatio else { continue }
                guard dirtyWritten < maxPartitionSeries else { dropped += 1; continue }
                dirtyWritten += 1
                dirty.sample([("topic", topic), ("partition", String(p.partition))], ratio)
            }
        }
        out.append(dirty)

        // Consumer groups.
        var lag = PrometheusText.Family("strata_consumer_group_lag", "gauge", "Records between a group's committed offset and the log end.")
        var lagSeconds = PrometheusText.Family("strata_consumer_group_lag_seconds", "gauge", "Now minus the timestamp of the group's first unconsumed record (0 when caught up).")
        var groupLag = PrometheusText.Family("strata_consumer_group_lag_sum", "gauge", "The group's lag in records, summed over its partitions.")
        var groupLagMax = PrometheusText.Family("strata_consumer_group_lag_seconds_max", "gauge", "The group's largest lag in seconds over its partitions.")
        var members = PrometheusText.Family("strata_consumer_group_members", "gauge", "Live members of the group.")
        var lagWritten = 0
        for group in (try? broker.groupNames()) ?? [] {
            guard let report = try? broker.groupReport(group, nowMs: nowMs) else { continue }
            members.sample([("group", group)], Double(report.members.count))
            groupLag.sample([("group", group)], Double(report.partitions.reduce(Int64(0)) { $0.saturatingAdd($1.lag) }))
            groupLagMax.sample([("group", group)], report.partitions.map(\.lagSeconds).max() ?? 0)
            for row in report.partitions {
                guard lagWritten < maxLagSeries else { dropped += 2; continue }
                lagWritten += 1
                let labels = [("group", group), ("topic", row.topic), ("partition", String(row.partition))]
                lag.sample(labels, Double(row.lag))
                lagSeconds.sample(labels, row.lagSeconds)
            }
        }
        for family in [members, groupLag, groupLagMax, lag, lagSeconds] { out.append(family) }

        // Process resources.
        if let rss = Self.residentBytes() {
            out.single("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", Double(rss))
        }
        if let fds = Self.openDescriptors() {
            out.single("process_open_fds", "gauge", "Number of open file descriptors.", Double(fds))
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            out.single("process_max_fds", "gauge", "Maximum number of open file descriptors.", Double(limit.rlim_cur))
        }
        out.single("strata_segment_unmaps_total", "counter", "Closed segments unmapped to stay within log.max.open.segments.",
                   Double(MappedSegments.shared.evictionCount))
        out.single("strata_metrics_series_dropped", "gauge", "Series left out of this scrape by the cardinality caps.", Double(dropped))
        return out.text
    }

    /// Resident set size from /proc/self/statm (pages × page size).
    static func residentBytes() -> Int? {
        guard let text = readSmallFile("/proc/self/statm") else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    static func openDescriptors() -> Int? {
        guard let dir = opendir("/proc/self/fd") else { return nil }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let first = withUnsafeBytes(of: entry.pointee.d_name) { $0.first ?? 0 }
            if first != UInt8(ascii: ".") { count += 1 }
        }
        return max(0, count - 1)  // the directory stream's own descriptor
    }

    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        return String(decoding: buffer[..<n], as: UTF8.self)
    }
}

/// The Prometheus text exposition format (version 0.0.4): HELP and TYPE once per family, then
/// its samples; label values escaped (backslash, quote, newline).
struct PrometheusText {
    struct Family {
        let name: String
        let type: String
        let help: String
        var samples = ""
        init(_ name: String, _ type: String, _ help: String) {
            self.name = name
            self.type = type
            self.help = help
        }
        mutating func sample(_ labels: [(String, String)], _ value: Double) {
            samples += name
            if !labels.isEmpty {
                samples += "{"
                for (i, (k, v)) in labels.enumerated() {
                    if i > 0 { samples += "," }
                    samples += k + "=\"" + PrometheusText.escape(v) + "\""
                }
                samples += "}"
            }
            samples += " " + PrometheusText.format(value) + "\n"
        }
    }

    var text = ""

    mutating func append(_ family: Family) {
        text += "# HELP \(family.name) \(family.help)\n# TYPE \(family.name) \(family.type)\n" + family.samples
    }

    mutating func single(_ name: String, _ type: String, _ help: String, _ value: Double) {
        var f = Family(name, type, help)
        f.sample([], value)
        append(f)
    }

    static func escape(_ value: String) -> String {
        var out = ""
        for c in value.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}
