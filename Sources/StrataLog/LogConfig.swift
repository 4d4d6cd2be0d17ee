/// When an acknowledged append is on stable storage. See docs/durability.md for the table of
/// what each mode survives.
public enum FlushMode: String, Sendable, CaseIterable {
    /// Append returns after an fdatasync covering it; concurrent appenders share one sync (group commit).
    case sync
    /// A background flusher syncs every `flushMs`.
    case interval
    /// The OS writes back when it wants; only segment rolls and clean shutdown sync.
    case os
}

/// Per-partition log settings. Names follow Kafka's topic configs with units in the name.
public struct LogConfig: Sendable, Equatable {
    /// segment.bytes: roll when the active segment would exceed this.
    public var segmentBytes: Int = 128 * 1024 * 1024
    /// segment.ms: roll when the active segment's first batch is older than this.
    public var segmentMs: Int64 = 7 * 24 * 3600 * 1000
    /// segment.jitter.ms: each segment rolls up to this much earlier than segment.ms (a random
    /// amount per segment), so partitions created together do not all roll at once.
    public var segmentJitterMs: Int64 = 0
    /// index.interval.bytes: bytes of batches between two sparse index entries.
    public var indexIntervalBytes: Int = 4096
    /// segment.index.bytes: most bytes of each index (mapped at this size, reserved in steps); a
    /// full index rolls the segment.
    public var segmentIndexBytes: Int = 10 * 1024 * 1024
    /// segment.reserve.step.bytes (Strata): the active segment's file grows by fallocate in
    /// steps that double from 4 KiB up to this, so disk is reserved as data arrives (an idle
    /// partition takes a few KiB) and a full disk is an error before a write, never a SIGBUS.
    public var reserveStepBytes: Int = 8 * 1024 * 1024
    /// max.message.bytes: largest batch accepted (Kafka's default).
    public var maxMessageBytes: Int = 1_048_588
    /// flush.mode: see `FlushMode`.
    public var flushMode: FlushMode = .sync
    /// flush.ms: period of the background flusher in `.interval` mode.
    public var flushMs: Int64 = 1000
    /// How often the recovery point is written to its checkpoint file, at most. Recovery rescans
    /// at most what was appended since; the checkpoint costs three syncs, so it is not per flush.
    public var checkpointIntervalMs: Int64 = 1000
    /// producer.id.expiration.ms: a producer id idle this long (no write, no open transaction)
    /// is forgotten by the partition; its next batch is accepted as a first one (Kafka: 1 day).
    public var producerIdExpirationMs: Int64 = 86_400_000

    public init() {}

    public func validate() throws(LogError) {
        guard segmentBytes >= 1024, segmentBytes <= Int(Int32.max) else {
            throw .invalidConfig("segment.bytes must be in [1024, \(Int32.max)], got \(segmentBytes)")
        }
        guard maxMessageBytes >= RecordBatch.headerSize, maxMessageBytes <= segmentBytes else {
            throw .invalidConfig("max.message.bytes must be in [\(RecordBatch.headerSize), segment.bytes=\(segmentBytes)], got \(maxMessageBytes)")
        }
        guard reserveStepBytes >= 4096, reserveStepBytes <= 1 << 30 else {
            throw .invalidConfig("segment.reserve.step.bytes must be in [4096, \(1 << 30)], got \(reserveStepBytes)")
        }
        guard indexIntervalBytes >= 0 else { throw .invalidConfig("index.interval.bytes must be >= 0") }
        guard segmentIndexBytes >= TimeIndex.entrySize * 2 else {
            throw .invalidConfig("segment.index.bytes must be at least \(TimeIndex.entrySize * 2)")
        }
        guard segmentMs > 0 else { throw .invalidConfig("segment.ms must be > 0") }
        guard segmentJitterMs >= 0 else { throw .invalidConfig("segment.jitter.ms must be >= 0") }
        guard flushMs > 0 else { throw .invalidConfig("flush.ms must be > 0") }
    }
}
