#if canImport(Glibc)
import Glibc
#endif
import CoreMetrics
import StrataCore
import Synchronization

/// Where an append landed.
public struct AppendInfo: Sendable, Equatable {
    public let baseOffset: Int64
    public let lastOffset: Int64
    public let maxTimestamp: Int64
    public let sizeInBytes: Int
    /// An idempotent producer's retry of a batch already in the log: nothing was appended and
    /// the offsets are those of the original.
    public let duplicate: Bool

    public init(baseOffset: Int64, lastOffset: Int64, maxTimestamp: Int64, sizeInBytes: Int, duplicate: Bool = false) {
        self.baseOffset = baseOffset
        self.lastOffset = lastOffset
        self.maxTimestamp = maxTimestamp
        self.sizeInBytes = sizeInBytes
        self.duplicate = duplicate
    }
}

/// The result of a read: whole batches from one segment, zero-copy. Empty at the log end.
public struct LogReadResult: Sendable {
    public let slice: SegmentSlice?
    /// Offset to read from next.
    public let nextOffset: Int64
    public let logEndOffset: Int64

    public var isEmpty: Bool { slice == nil }
}

/// What loading a partition found and did, for logs and `strata inspect`.
public struct RecoveryReport: Sendable {
    public var cleanShutdown = false
    public var segments = 0
    public var segmentsRecovered = 0
    public var bytesValidated = 0
    public var bytesTruncated = 0
    public var segmentsDeleted = 0
    public var tempFilesRemoved = 0
    public var swapsCompleted = 0
    public var warnings: [String] = []
    public var durationNanoseconds: UInt64 = 0
}

/// One partition's log: an ordered list of segments, one writer, any number of readers.
///
/// Readers never block the writer: they copy the segment list (under a lock held for a pointer
/// copy) and read bytes below the published end offsets. `logEndOffset` is published only after
/// the bytes are in the mapping, so a reader never sees a half-written batch.
/// `@unchecked Sendable`: appends go through the `writer` Mutex, the segment list through its
/// Mutex, offsets through atomics; the group-commit fields (`flushInProgress`, `flushFailure`,
/// checkpoint times) are read and written only while holding `flushLock`, or by the one flusher
/// that set `flushInProgress` under it.
public final class PartitionLog: @unchecked Sendable {
    public let directory: String
    public let config: LogConfig

    struct WriterState {
        var active: LogSegment
        var closed = false
    }
    let writer: Mutex<WriterState>
    let segmentList: Mutex<[LogSegment]>
    private let endOffset: Atomic<Int64>
    private let startOffset: Atomic<Int64>
    private let flushedOffset: Atomic<Int64>
    private let readOnlyFlag = Atomic<Bool>(false)
    private let flushes = Atomic<Int>(0)

    // Group commit: one thread at a time flushes for everyone waiting.
    private let flushLock = ConditionLock()
    private var flushInProgress = false
    private var flushFailure: LogError?
    private var lastCheckpointMs: Int64 = 0
    private var checkpointedRecoveryPoint: Int64 = 0
    /// The log start offset of the last checkpoint written or read (-1: unknown, write one).
    /// Atomic: the flusher, retention and close each write a checkpoint.
    private let checkpointedLogStart = Atomic<Int64>(-1)

    public var logEndOffset: Int64 { endOffset.load(ordering: .acquiring) }
    public var highWatermark: Int64 { logEndOffset }
    /// The end of what `read_committed` readers see: the first offset of the oldest open
    /// transaction, or the high watermark when none is open.
    public var lastStableOffset: Int64 {
        // The end first: an append stores `firstUnstable` before the end, so reading them in the
        // other order could pair an old `firstUnstable` (none) with the new end.
        let end = logEndOffset
        return min(firstUnstable.load(ordering: .acquiring), end)
    }

    /// Producer ids' sequences and epochs, open transactions and aborted ones (see
    /// `ProducerStates`): written under the writer lock, in offset order; read by fetches.
    let producerStates = Mutex(ProducerStates())
    /// `producerStates.firstUnstableOffset` (Int64.max when none), published for lock-free reads.
    /// Stored before the end offset of the batch that changes it, so no reader ever sees an
    /// open transaction's first batch as stable.
    let firstUnstable = Atomic<Int64>(.max)
    /// `validUpTo` of the snapshot last written or read (-1: none).
    let snapshotOffset = Atomic<Int64>(-1)
    public var logStartOffset: Int64 { startOffset.load(ordering: .acquiring) }
    /// Every offset below this is on stable storage.
    public var recoveryPoint: Int64 { flushedOffset.load(ordering: .acquiring) }
    public var isReadOnly: Bool { readOnlyFlag.load(ordering: .acquiring) }
    /// fdatasync rounds performed so far (each covers every append waiting on it).
    public var flushCount: Int { flushes.load(ordering: .relaxed) }

    /// Bytes and records appended and handed to readers since the partition was opened: the
    /// broker's per-topic traffic metrics are sums of these, read at scrape time, so the hot
    /// path pays one relaxed atomic add per batch and nothing per label lookup.
    public let traffic = Traffic()

    public final class Traffic: Sendable {
        public let bytesIn = Atomic<Int>(0)
        public let recordsIn = Atomic<Int>(0)
        public let bytesOut = Atomic<Int>(0)
        public let recordsOut = Atomic<Int>(0)

        /// A reader delivered `bytes` of batches covering `records` offsets (Fetch, subscriptions).
        public func countRead(bytes: Int, records: Int) {
            bytesOut.add(bytes, ordering: .relaxed)
            recordsOut.add(max(0, records), ordering: .relaxed)
        }
    }

    private init(directory: String, config: LogConfig, segments: [LogSegment], logStartOffset: Int64, recoveryPoint: Int64) {
        precondition(!segments.isEmpty)
        self.directory = directory
        self.config = config
        self.writer = Mutex(WriterState(active: segments.last!))
        self.segmentList = Mutex(segments)
        self.endOffset = Atomic(segments.last!.nextOffset)
        self.startOffset = Atomic(logStartOffset)
        self.flushedOffset = Atomic(recoveryPoint)
        self.checkpointedRecoveryPoint = recoveryPoint
        self.lastCheckpointMs = monotonicMillis()
    }

    /// Opens (or creates) the partition in `directory`. With `cleanShutdown` the files are trusted
    /// and nothing is scanned but the active segment's tail; otherwise every segment from the one
    /// holding the checkpointed recovery point on is validated batch by batch and the log is cut
    /// at the first invalid batch (see docs/durability.md).
    public static func open(directory: String, config: LogConfig = LogConfig(), cleanShutdown: Bool = false) throws(LogError) -> (PartitionLog, RecoveryReport) {
        try config.validate()
        let started = DispatchFreeClock.now()
        var loader = LogLoader(directory: directory, config: config, cleanShutdown: cleanShutdown)
        let loaded = try loader.load()
        let log = PartitionLog(directory: directory, config: config, segments: loaded.segments,
                               logStartOffset: loaded.logStartOffset, recoveryPoint: loaded.recoveryPoint)
        if loaded.recoveryPoint != loaded.checkpoint?.recoveryPoint || loaded.logStartOffset != loaded.checkpoint?.logStartOffset {
            // Not fatal (a full disk must not keep the data from being read): the checkpoint is
            // an optimisation of the next recovery; the next flush writes it again.
            do throws(LogError) {
                try Checkpoint(recoveryPoint: loaded.recoveryPoint, logStartOffset: loaded.logStartOffset).write(directory: directory)
                log.checkpointedLogStart.store(loaded.logStartOffset, ordering: .relaxed)
            } catch {
                loader.report.warnings.append("checkpoint not written (\(error)); retried at the next flush")
                log.checkpointedRecoveryPoint = -1
            }
        } else {
            log.checkpointedLogStart.store(loaded.logStartOffset, ordering: .relaxed)
        }
        var report = loader.report
        if let warning = try log.loadProducerState() { report.warnings.append(warning) }
        report.segments = loaded.segments.count
        report.durationNanoseconds = DispatchFreeClock.now() - started
        return (log, report)
    }

    /// Opens a partition for reading while another process may own and append to it. Nothing on
    /// disk is changed: no recovery, no truncation, no index or checkpoint writes. Closed segments
    /// are read as they are (damaged indexes are rebuilt in memory); the newest segment is walked
    /// to find the end — CRC-checked past the checkpointed recovery point, as the writer's own
    /// recovery checks only the unsynced tail — and `refresh()` picks up what the writer appends later.
    public static func openReadOnly(directory: String, config: LogConfig = LogConfig()) throws(LogError) -> PartitionLog {
        let names = try FileIO.listDirectory(directory)
        let hot = Set(names.compactMap { SegmentName.parse($0, suffix: SegmentName.logSuffix) })
        // A base with both files is mid-swap into the cold tier: either holds the same records.
        let cold = Set(names.compactMap { SegmentName.parse($0, suffix: SegmentName.coldSuffix) }).subtracting(hot)
        let bases = hot.union(cold).sorted()
        guard let last = bases.last, hot.contains(last) else { throw LogError.corrupt(path: directory, reason: "no segments") }
        var segments = bases.dropLast().map {
            LogSegment.lazy(directory: directory, baseOffset: $0, config: config, readOnlyMode: true, cold: cold.contains($0))
        }
        let checkpoint = Checkpoint.read(directory: directory)
        segments.append(try LogSegment.follow(directory: directory, baseOffset: last, config: config,
                                              trustedBelow: checkpoint?.recoveryPoint ?? .min))
        let start = min(max(checkpoint?.logStartOffset ?? bases[0], bases[0]), segments.last!.nextOffset)
        let log = PartitionLog(directory: directory, config: config, segments: segments, logStartOffset: start,
                               recoveryPoint: checkpoint?.recoveryPoint ?? 0)
        log.readOnlyOpen = true
        log.writer.withLock { $0.closed = true }  // no appends through a read-only view
        return log
    }

    /// cold.fetch.compression: how batches read from cold segments are compressed (none or zstd).
    /// A topic setting the broker may change while the log is open.
    public var coldFetchCompression: CompressionCodec {
        get { CompressionCodec(rawValue: coldCompression.load(ordering: .relaxed)) ?? .none }
        set { coldCompression.store(newValue.rawValue, ordering: .relaxed) }
    }
    private let coldCompression = Atomic<Int16>(CompressionCodec.none.rawValue)

    /// True for logs opened with `openReadOnly`.
    public private(set) var readOnlyOpen = false

    /// Read-only views: picks up batches (and segments) the writing process appended since the
    /// last look; returns the new log end offset. A no-op for the writer's own log.
    @discardableResult
    public func refresh() throws(LogError) -> Int64 {
        guard readOnlyOpen else { return logEndOffset }
        return try refreshLock.withLock { _ throws(LogError) -> Int64 in
            while true {
                let segments = segmentList.withLock { $0 }
                let active = segments.last!
                _ = try active.refreshFollowed()
                endOffset.store(active.nextOffset, ordering: .releasing)
                // A roll: the writer created the next segment, starting where this one ends.
                let nextPath = SegmentName.logPath(directory, active.nextOffset)
                guard active.size > 0, FileIO.exists(nextPath) else { break }
                _ = try active.refreshFollowed()  // anything appended before the roll
                guard FileIO.exists(nextPath), SegmentName.logPath(directory, active.nextOffset) == nextPath else { continue }
                let next = try LogSegment.follow(directory: directory, baseOffset: active.nextOffset, config: config)
                segmentList.withLock { $0.append(next) }
                endOffset.store(next.nextOffset, ordering: .releasing)
            }
            return endOffset.load(ordering: .acquiring)
        }
    }
    private let refreshLock = Mutex(())

    public var segmentCount: Int { segmentList.withLock { $0.count } }

    /// Total bytes of all segments.
    public var sizeInBytes: Int { segmentList.withLock { $0 }.reduce(0) { $0 + $1.size } }

    /// Bytes on disk by tier (`strata topics describe`, `strata inspect`).
    public struct TierSizes: Sendable, Equatable {
        public var hotBytes = 0
        public var coldBytes = 0
        public var coldSegments = 0
        /// Bytes of log the cold segments were made from (their compression ratio's numerator).
        public var coldLogBytes = 0
    }

    /// Hot and cold bytes; cold segments' headers are read (opened if they were not).
    public func tierSizes() throws(LogError) -> TierSizes {
        var sizes = TierSizes()
        for segment in segmentList.withLock({ $0 }) {
            if segment.isCold {
                sizes.coldBytes += segment.size
                sizes.coldSegments += 1
                sizes.coldLogBytes += try segment.logBytes()
            } else {
                sizes.hotBytes += segment.size
            }
        }
        return sizes
    }

    /// Base offsets of the segments, oldest first.
    public var segmentBaseOffsets: [Int64] { segmentList.withLock { $0.map(\.baseOffset) } }

    // MARK: Append

    /// Validates `batch` (Kafka's LogValidator: header, CRC, every record, decompressing
    /// compressed batches; see `RecordBatch.validateForAppend`), assigns it the next offsets, and
    /// appends it. In `.sync` mode returns only after the batch is on stable storage; concurrent
    /// appenders share one fdatasync. Nothing is appended when it throws.
    @discardableResult
    public func append(_ batch: UnsafeRawBufferPointer, policy: AppendPolicy = AppendPolicy()) throws(LogError) -> AppendInfo {
        let info = try appendWithoutFlush(batch, policy: policy)
        if config.flushMode == .sync { try flush(upTo: info.lastOffset + 1) }
        return info
    }

    @discardableResult
    public func append(_ batch: [UInt8], policy: AppendPolicy = AppendPolicy()) throws(LogError) -> AppendInfo {
        var result: Result<AppendInfo, LogError>!
        batch.withUnsafeBytes { p in
            do throws(LogError) { result = .success(try append(p, policy: policy)) } catch { result = .failure(error) }
        }
        return try result.get()
    }

    /// Appends without waiting for durability, whatever the flush mode.
    public func appendWithoutFlush(_ batch: UnsafeRawBufferPointer, policy: AppendPolicy = AppendPolicy(),
                                   nowMs: Int64 = wallClockMillis()) throws(LogError) -> AppendInfo {
        try appendPrepared(batch, prepare(batch, policy: policy, nowMs: nowMs))
    }

    /// Validates (and re-encodes where the policy says) without touching the log: the expensive
    /// part of an append, so concurrent producers, or the pipelined requests of one, validate in
    /// parallel and only `appendPrepared` runs in order.
    public func prepare(_ batch: UnsafeRawBufferPointer, policy: AppendPolicy = AppendPolicy(),
                        nowMs: Int64 = wallClockMillis()) throws(LogError) -> PreparedBatch {
        do throws(RecordBatchError) {
            return try RecordBatch.prepareForAppend(batch, maxBatchBytes: config.maxMessageBytes, policy: policy, nowMs: nowMs)
        } catch {
            throw .invalidBatch(error)
        }
    }

    /// Appends a batch `prepare` accepted (`batch` is the one given to `prepare`; its replacement,
    /// if any, is what is stored), assigning the next offsets. Does not wait for durability.
    ///
    /// `admit`, when given, runs under the writer lock just before the append and refuses it by
    /// returning false (`LogError.refused`): a check that must not race with other writes to this
    /// partition (a transactional batch against its transaction's end, whose markers take the
    /// same lock).
    public func appendPrepared(_ batch: UnsafeRawBufferPointer, _ prepared: PreparedBatch,
                               admit: (() -> Bool)? = nil) throws(LogError) -> AppendInfo {
        guard let replacement = prepared.replacement else {
            return try appendValidated(batch, lastOffsetDelta: prepared.lastOffsetDelta, maxTimestamp: prepared.maxTimestamp, admit: admit)
        }
        let outcome = replacement.withUnsafeBytes { p -> Result<AppendInfo, LogError> in
            do throws(LogError) {
                return .success(try appendValidated(p, lastOffsetDelta: prepared.lastOffsetDelta, maxTimestamp: prepared.maxTimestamp, admit: admit))
            } catch { return .failure(error) }
        }
        return try outcome.get()
    }

    func appendValidated(_ batch: UnsafeRawBufferPointer, lastOffsetDelta delta: Int64, maxTimestamp: Int64,
                         admit: (() -> Bool)? = nil) throws(LogError) -> AppendInfo {
        if readOnlyOpen { throw LogError.readOnly(reason: "\(directory) is opened read-only") }
        return try writer.withLock { (state: inout WriterState) throws(LogError) -> AppendInfo in
            guard !state.closed else { throw LogError.closed(directory) }
            if readOnlyFlag.load(ordering: .relaxed) { throw LogError.readOnly(reason: flushFailureDescription) }
            if let admit, !admit() { throw LogError.refused }
            let base = endOffset.load(ordering: .relaxed)
            let header = RecordBatch(unchecked: batch)
            let idempotent = header.producerId >= 0 && batch.count >= RecordBatch.headerSize
            let lastSequence = ProducerStates.sequence(header.baseSequence, plus: header.lastOffsetDelta)
            if idempotent && !header.isControl && header.baseSequence >= 0 {
                switch producerStates.withLock({ $0.check(producerId: header.producerId, epoch: header.producerEpoch,
                                                          firstSequence: header.baseSequence, lastSequence: lastSequence) }) {
                case .accept: break
                case .duplicate(let original):
                    return AppendInfo(baseOffset: original.firstOffset, lastOffset: original.lastOffset, maxTimestamp: -1, sizeInBytes: 0, duplicate: true)
                case .outOfOrder(let expected):
                    throw LogError.outOfOrderSequence("producer \(header.producerId) sent sequence \(header.baseSequence); expected \(expected)")
                case .staleEpoch(let current):
                    throw LogError.staleProducerEpoch("producer \(header.producerId) sent epoch \(header.producerEpoch); its current epoch is \(current)")
                }
            }
            if let _ = state.active.shouldRoll(batchSize: batch.count, lastOffset: base + delta, maxTimestamp: maxTimestamp,
                                               nowMs: monotonicMillis()) {
                try roll(&state, newBaseOffset: base, firstBatchBytes: batch.count)
            }
            guard state.active.hasRoom(for: batch.count) else {
                throw LogError.io(operation: "append \(batch.count) bytes: no room reserved in the active segment", path: directory, errno: ENOSPC)
            }
            // A full disk here is an error for this append only: nothing was written.
            try state.active.reserveRoom(for: batch.count)
            do throws(LogError) {
                try state.active.append(batch: batch, baseOffset: base, lastOffset: base + delta, maxTimestamp: maxTimestamp)
            } catch {
                // A write error (EIO) is treated like a failed fsync: the page cache state is unknown.
                markReadOnly(error)
                throw error
            }
            if idempotent {
                let control = header.isControl ? (ProducerStates.controlType(of: header) ?? .commit) : nil
                let unstable = producerStates.withLock { states -> Int64 in
                    states.apply(producerId: header.producerId, epoch: header.producerEpoch, firstSequence: header.baseSequence,
                                 lastSequence: lastSequence, firstOffset: base, lastOffset: base + delta,
                                 transactional: header.isTransactional, control: control, timestampMs: wallClockMillis())
                    return states.firstUnstableOffset ?? .max
                }
                firstUnstable.store(unstable, ordering: .releasing)
            }
            endOffset.store(base + delta + 1, ordering: .releasing)
            traffic.bytesIn.add(batch.count, ordering: .relaxed)
            traffic.recordsIn.add(Int(delta + 1), ordering: .relaxed)
            return AppendInfo(baseOffset: base, lastOffset: base + delta, maxTimestamp: maxTimestamp, sizeInBytes: batch.count)
        }
    }

    /// Starts a new segment at `newBaseOffset`. The new file is created, given room for the batch
    /// that rolls it, and its name made durable before the old one is sealed, so a failure to
    /// create or reserve (full disk) removes it and leaves the old one active.
    private func roll(_ state: inout WriterState, newBaseOffset: Int64, firstBatchBytes: Int = 0) throws(LogError) {
        let next = try LogSegment.create(directory: directory, baseOffset: newBaseOffset, config: config)
        do throws(LogError) {
            try next.reserveRoom(for: firstBatchBytes)
        } catch {
            next.deleteFilesNow()
            throw error
        }
        do {
            try FileIO.syncDirectory(directory)
            try state.active.seal()
        } catch {
            markReadOnly(error)
            throw error
        }
        segmentList.withLock { $0.append(next) }
        state.active = next
        // The state as of the new segment's base: a crash from here on replays only this segment.
        _ = writeProducerSnapshot()
    }

    /// Rolls the active segment now if it holds data (used by tests and tools).
    public func roll() throws(LogError) {
        try writer.withLock { (state: inout WriterState) throws(LogError) in
            guard !state.closed else { throw LogError.closed(directory) }
            guard state.active.size > 0 else { return }
            try roll(&state, newBaseOffset: endOffset.load(ordering: .relaxed))
        }
    }

    // MARK: Flush (group commit)

    /// Returns once every offset below `offset` is on stable storage. If another thread is already
    /// flushing, waits for it and flushes again only if its flush did not cover `offset`; so N
    /// concurrent appenders cost about two fdatasyncs, not N.
    public func flush(upTo offset: Int64? = nil) throws(LogError) {
        let target = offset ?? logEndOffset
        flushLock.lock()
        defer { flushLock.unlock() }
        while flushedOffset.load(ordering: .acquiring) < target {
            if let failure = flushFailure { throw LogError.readOnly(reason: failure.description) }
            if flushInProgress {
                flushLock.wait()
                continue
            }
            flushInProgress = true
            flushLock.unlock()
            let outcome: Result<Int64, LogError>
            let flushStarted = monotonicNanos()
            let flushedBefore = flushedOffset.load(ordering: .relaxed)
            do throws(LogError) { outcome = .success(try flushSegments()) } catch { outcome = .failure(error) }
            flushes.add(1, ordering: .relaxed)
            LogMetrics.flushDuration.recordNanoseconds(Int64(truncatingIfNeeded: monotonicNanos() &- flushStarted))
            if case .success(let flushed) = outcome { LogMetrics.recordsPerFlush.record(max(0, flushed - flushedBefore)) }
            flushLock.lock()
            flushInProgress = false
            switch outcome {
            case .success(let flushed):
                if flushed > flushedOffset.load(ordering: .relaxed) { flushedOffset.store(flushed, ordering: .releasing) }
            case .failure(let error):
                flushFailure = error
                readOnlyFlag.store(true, ordering: .releasing)
            }
            flushLock.broadcast()
        }
    }

    /// Syncs every segment that may hold unflushed bytes; returns the offset now durable.
    /// The log end is read before the segment list: a roll publishes the new segment before
    /// any offset in it becomes visible, so the list read afterwards covers `target`.
    private func flushSegments() throws(LogError) -> Int64 {
        let target = endOffset.load(ordering: .acquiring)
        let from = flushedOffset.load(ordering: .acquiring)
        let segments = segmentList.withLock { $0 }
        let firstIndex = Self.floorSegmentIndex(segments, offset: from) ?? 0
        for segment in segments[firstIndex...] { try segment.flush() }
        try maybeCheckpoint(recoveryPoint: target, force: false)
        return target
    }

    /// Persists the recovery point at most every `checkpointIntervalMs`; a stale checkpoint only
    /// means more to re-validate after a crash, never lost data.
    ///
    /// A checkpoint that cannot be written (ENOSPC, EMFILE, EIO on the temp file) is not a data
    /// failure: the data it describes is already synced. It is counted and reported, and retried at
    /// the next flush; the partition stays writable (docs/durability.md).
    private func maybeCheckpoint(recoveryPoint: Int64, force: Bool) throws(LogError) {
        let now = monotonicMillis()
        guard force || now - lastCheckpointMs >= config.checkpointIntervalMs else { return }
        let start = logStartOffset
        do throws(LogError) {
            try Checkpoint(recoveryPoint: recoveryPoint, logStartOffset: start).write(directory: directory)
        } catch {
            checkpointTrouble.withLock { t in
                t.failures += 1
                t.lastError = error.description
            }
            return
        }
        checkpointTrouble.withLock { $0.lastError = nil }
        lastCheckpointMs = now
        checkpointedRecoveryPoint = recoveryPoint
        checkpointedLogStart.store(start, ordering: .relaxed)
    }

    /// Checkpoint writes that failed (transiently: retried at the next flush).
    public struct CheckpointTrouble: Sendable {
        public var failures = 0
        /// The last failure, nil once a checkpoint was written again.
        public var lastError: String?
    }
    let checkpointTrouble = Mutex(CheckpointTrouble())
    public var checkpointStatus: CheckpointTrouble { checkpointTrouble.withLock { $0 } }

    private var flushFailureDescription: String {
        flushLock.withLock { flushFailure?.description ?? "unknown failure" }
    }

    private func markReadOnly(_ error: LogError) {
        flushLock.withLock { if flushFailure == nil { flushFailure = error } }
        readOnlyFlag.store(true, ordering: .releasing)
    }

    /// For the background flusher: flushes when there is unflushed data.
    public var hasUnflushedData: Bool { recoveryPoint < logEndOffset }

    // MARK: Close

    /// Seals the active segment, syncs everything and writes the checkpoint. After a clean close
    /// the files are exactly what a clean-shutdown load trusts without scanning.
    public func close() throws(LogError) {
        if readOnlyOpen { return }
        try writer.withLock { (state: inout WriterState) throws(LogError) in
            guard !state.closed else { return }
            state.closed = true
            try flush(upTo: endOffset.load(ordering: .relaxed))
            try state.active.closeCleanly()
            if snapshotOffset.load(ordering: .relaxed) != endOffset.load(ordering: .relaxed) { _ = writeProducerSnapshot() }
            // An idle partition's checkpoint already says this: closing it costs no write or sync.
            let end = endOffset.load(ordering: .relaxed)
            let start = logStartOffset
            if end != checkpointedRecoveryPoint || start != checkpointedLogStart.load(ordering: .relaxed) {
                try Checkpoint(recoveryPoint: end, logStartOffset: start).write(directory: directory)
                checkpointedRecoveryPoint = end
                checkpointedLogStart.store(start, ordering: .relaxed)
            }
        }
    }

    // MARK: Retention

    /// What a retention pass removed.
    public struct RetentionResult: Sendable, Equatable {
        public var segmentsDeleted = 0
        public var bytesDeleted = 0
        public var logStartOffset: Int64 = 0
    }

    /// Deletes whole closed segments, oldest first, while they are older than `retentionMs`
    /// (see `LogSegment.retentionTimestamp`) or the partition is larger than `retentionBytes`
    /// (-1 disables either). The active segment is never deleted: roll it with `segment.ms` for
    /// time retention to reach recent data. Readers holding slices of a deleted segment keep
    /// reading it; its files are renamed to `.deleted` now and unlinked after the last reader.
    @discardableResult
    public func applyRetention(retentionMs: Int64, retentionBytes: Int64, nowMs: Int64 = wallClockMillis()) throws(LogError) -> RetentionResult {
        guard !readOnlyOpen else { throw LogError.readOnly(reason: "\(directory) is opened read-only") }
        var result = RetentionResult()
        var doomed: [LogSegment] = []
        let segments = segmentList.withLock { $0 }
        var total = segments.reduce(0) { $0 + $1.size }
        for segment in segments.dropLast() {
            var expired = false
            if retentionMs >= 0 { expired = nowMs.saturatingSubtract(try segment.retentionTimestamp()) > retentionMs }
            let oversize = retentionBytes >= 0 && Int64(total - segment.size) >= retentionBytes
            guard expired || oversize else { break }
            doomed.append(segment)
            total -= segment.size
        }
        guard !doomed.isEmpty else {
            result.logStartOffset = logStartOffset
            return result
        }
        let newStart = segments[doomed.count].baseOffset
        try dropSegments(doomed, keepFrom: newStart, newLogStartOffset: newStart)
        result.segmentsDeleted = doomed.count
        result.bytesDeleted = doomed.reduce(0) { $0 + $1.size }
        result.logStartOffset = newStart
        return result
    }

    /// Kafka's DeleteRecords: offsets below `offset` become unreadable (the log start moves
    /// there), and segments entirely below it are deleted. `offset` may not pass the high watermark.
    @discardableResult
    public func deleteRecords(before offset: Int64) throws(LogError) -> Int64 {
        guard !readOnlyOpen else { throw LogError.readOnly(reason: "\(directory) is opened read-only") }
        let end = logEndOffset
        guard offset >= 0, offset <= end else {
            throw .offsetOutOfRange(requested: offset, logStartOffset: logStartOffset, logEndOffset: end)
        }
        guard offset > logStartOffset else { return logStartOffset }
        let segments = segmentList.withLock { $0 }
        var doomed: [LogSegment] = []
        for (i, segment) in segments.enumerated().dropLast() where segments[i + 1].baseOffset <= offset { doomed.append(segment) }
        try dropSegments(doomed, keepFrom: segments[doomed.count].baseOffset, newLogStartOffset: offset)
        return offset
    }

    /// Removes `doomed` (a prefix of the segment list) and moves the log start. Order matters for
    /// crash safety: files are renamed to `.deleted` (hidden from the next load) before the
    /// checkpoint records the new start; a crash in between loses nothing that was meant to stay.
    ///
    /// `doomed` was chosen from a snapshot of the list; the cold worker or the cleaner may have
    /// replaced some of those segments since (same offsets, other objects). Under the writer lock
    /// the prefix is chosen again: the segments of the current list that end at or below the
    /// first surviving one's base, never the active segment.
    func dropSegments(_ doomed: [LogSegment], keepFrom: Int64, newLogStartOffset: Int64) throws(LogError) {
        try writer.withLock { (state: inout WriterState) throws(LogError) in
            guard !state.closed else { throw LogError.closed(directory) }
            if !doomed.isEmpty {
                let removed = segmentList.withLock { list -> [LogSegment] in
                    var n = 0
                    while n + 1 < list.count && list[n + 1].baseOffset <= keepFrom { n += 1 }
                    let prefix = Array(list.prefix(n))
                    list.removeFirst(n)
                    return prefix
                }
                for segment in removed { try segment.markDeleted() }
                if !removed.isEmpty { try FileIO.syncDirectory(directory) }
            }
            startOffset.store(max(newLogStartOffset, logStartOffset), ordering: .releasing)
            try Checkpoint(recoveryPoint: min(recoveryPoint, logEndOffset), logStartOffset: logStartOffset).write(directory: directory)
            checkpointedLogStart.store(-1, ordering: .relaxed)  // written beside the flusher's record of it: the close writes one again
        }
    }

    // MARK: Read

    static func floorSegmentIndex(_ segments: [LogSegment], offset: Int64) -> Int? {
        var lo = 0
        var hi = segments.count - 1
        guard hi >= 0, segments[0].baseOffset <= offset else { return nil }
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if segments[mid].baseOffset <= offset { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    /// Whole batches starting with the one holding `offset`, at most `maxBytes` (but at least one
    /// batch), from a single segment. Reading at the log end returns an empty result; outside
    /// [logStartOffset, logEndOffset] throws `offsetOutOfRange`. The batch containing `offset`
    /// may start before it: consumers skip records below the offset they asked for, as in Kafka.
    ///
    /// `committedOnly` (a `read_committed` reader) stops at the last stable offset: batches of
    /// open transactions are not returned until their transaction ends. `upTo` stops before the
    /// batch starting there (a reader that knows what follows is not wanted).
    public func read(from offset: Int64, maxBytes: Int = 1024 * 1024, committedOnly: Bool = false, upTo: Int64 = .max) throws(LogError) -> LogReadResult {
        let logEnd = logEndOffset
        let end = min(committedOnly ? min(lastStableOffset, logEnd) : logEnd, upTo)
        let start = logStartOffset
        guard offset >= start, offset <= logEnd else {
            throw .offsetOutOfRange(requested: offset, logStartOffset: start, logEndOffset: logEnd)
        }
        if offset >= end { return LogReadResult(slice: nil, nextOffset: offset, logEndOffset: logEnd) }
        var segments = segmentList.withLock { $0 }
        guard var i = Self.floorSegmentIndex(segments, offset: offset) else {
            throw .offsetOutOfRange(requested: offset, logStartOffset: start, logEndOffset: logEnd)
        }
        while i < segments.count {
            let found: SegmentSlice?
            do throws(LogError) {
                found = try segments[i].read(from: offset, maxBytes: max(1, maxBytes), endOffset: end, coldCompression: coldFetchCompression)
            } catch {
                // A read-only view next to a writer: the writer may have converted the segment
                // to the cold tier since the view listed the directory.
                guard let cold = replacedByCold(segments[i], error) else { throw error }
                segments[i] = cold
                continue
            }
            if let slice = found, !slice.range.isEmpty {
                if i + 1 < segments.count {
                    // (The slice's last offset: its next may be past this segment.)
                    segments[i + 1].readAheadColdStart(afterReaderAt: slice.nextOffset &- 1, in: segments[i], compression: coldFetchCompression)
                }
                return LogReadResult(slice: slice, nextOffset: slice.nextOffset, logEndOffset: logEnd)
            }
            i += 1
        }
        return LogReadResult(slice: nil, nextOffset: offset, logEndOffset: logEnd)
    }

    /// When `offset` lies in a cold segment: the block holding it (or the first block after it),
    /// for readers that decode records themselves. nil for a hot segment, or outside the log.
    public func coldBlock(from offset: Int64) throws(LogError) -> ColdBlockHandle? {
        guard offset >= logStartOffset, offset < logEndOffset else { return nil }
        let segments = segmentList.withLock { $0 }
        guard let i = Self.floorSegmentIndex(segments, offset: offset), segments[i].isCold else { return nil }
        let cold = try segments[i].coldSegment()
        guard let b = cold.block(from: offset) else { return nil }
        let entry = cold.file.blocks[b]
        return ColdBlockHandle(segment: cold, segmentBaseOffset: cold.baseOffset, blockIndex: b, firstOffset: entry.firstOffset, nextOffset: entry.nextOffset, storedBytes: entry.length)
    }

    /// For a read-only view: when `segment`'s `.log` is gone because the writer converted it to
    /// the cold tier, the cold segment that replaces it in this view's list.
    private func replacedByCold(_ segment: LogSegment, _ error: LogError) -> LogSegment? {
        guard readOnlyOpen, !segment.isCold, case .io(_, _, let code) = error, code == ENOENT,
              FileIO.exists(SegmentName.coldPath(directory, segment.baseOffset)) else { return nil }
        let cold = LogSegment.lazy(directory: directory, baseOffset: segment.baseOffset, config: config, readOnlyMode: true, cold: true)
        segmentList.withLock { list in
            if let at = list.firstIndex(where: { $0 === segment }) { list[at] = cold }
        }
        return cold
    }

    /// Kafka's ListOffsets by timestamp: the first offset whose record timestamp is >= `timestamp`,
    /// or nil when every record is older. Segments are skipped by their largest timestamp, then the
    /// time index and offset index narrow the scan to a few KiB.
    public func offset(forTimestamp timestamp: Int64) throws(LogError) -> Int64? {
        try record(forTimestamp: timestamp)?.offset
    }

    /// Kafka's ListOffsets by timestamp: the first record at or after `timestamp` (below the log
    /// start it is the log start, with the timestamp of the record found).
    public func record(forTimestamp timestamp: Int64) throws(LogError) -> (offset: Int64, timestamp: Int64)? {
        let segments = segmentList.withLock { $0 }
        let start = logStartOffset
        for segment in segments {
            // A cold segment that cannot be read (a damaged file) is passed over: its records
            // are unreadable anyway, and the rest of the partition still answers.
            let largest = segment.isCold ? try? segment.largestTimestamp() : try segment.largestTimestamp()
            guard segment.size > 0, let largest, largest >= timestamp else { continue }
            if let found = try segment.record(forTimestamp: timestamp) { return (max(found.offset, start), found.timestamp) }
        }
        return nil
    }

    /// KIP-734 (ListOffsets -3): the record with the largest timestamp (the first one carrying
    /// it), nil for an empty log.
    public func maxTimestampRecord() throws(LogError) -> (offset: Int64, timestamp: Int64)? {
        let segments = segmentList.withLock { $0 }
        var largest = Int64.min
        for segment in segments where segment.size > 0 {
            if segment.isCold, (try? segment.largestTimestamp()) == nil { continue }  // damaged: as in record(forTimestamp:)
            largest = max(largest, try segment.largestTimestamp())
        }
        guard largest != Int64.min else { return nil }
        return try record(forTimestamp: largest)
    }

    /// Validates every batch of every segment (CRC, offsets), for `strata inspect --verify`.
    /// Returns one line per problem; empty means the log is intact.
    public func verify() -> [String] {
        var problems: [String] = []
        let segments = segmentList.withLock { $0 }
        var expected = segments.first?.baseOffset ?? 0
        for segment in segments {
            do {
                // A cold segment is decoded whole (every block's CRC checked) and its re-encoded
                // batches walked like a hot segment's.
                let slice = try segment.allBatches()
                let scan = withExtendedLifetime(slice) {
                    BatchScan.walk(slice.bytes, segmentBase: segment.baseOffset, nextOffset: max(expected, segment.baseOffset),
                                   verify: true, indexIntervalBytes: config.indexIntervalBytes, collectIndexEntries: false)
                }
                if let why = scan.stopReason { problems.append("\(segment.dataPath): \(why)") }
                if scan.batchCount > 0 { expected = scan.nextOffset }
            } catch {
                problems.append("\(segment.dataPath): \(error)")
            }
        }
        return problems
    }

    /// Per-segment facts for `strata inspect`.
    public struct SegmentInfo: Sendable {
        public let baseOffset: Int64
        public let sizeInBytes: Int
        public let nextOffset: Int64
        public let offsetIndexEntries: Int
        public let timeIndexEntries: Int
        public let largestTimestamp: Int64
        public let isActive: Bool
        /// A cold segment: `sizeInBytes` is its file's, `logBytes` the hot segment's it replaced;
        /// the index counts are its blocks (it has no index files).
        public let isCold: Bool
        /// Bytes of log (RecordBatch v2) the segment holds or was made from.
        public let logBytes: Int
    }

    public func segmentInfos() throws(LogError) -> [SegmentInfo] {
        let segments = segmentList.withLock { $0 }
        var out: [SegmentInfo] = []
        for (i, segment) in segments.enumerated() {
            if segment.isCold {
                let cold = try segment.coldSegment()
                out.append(SegmentInfo(
                    baseOffset: segment.baseOffset, sizeInBytes: segment.size, nextOffset: cold.nextOffset,
                    offsetIndexEntries: cold.blockCount, timeIndexEntries: cold.blockCount, largestTimestamp: cold.largestTimestamp,
                    isActive: false, isCold: true, logBytes: cold.hotBytes))
                continue
            }
            let s = try segment.storage()
            var next = segment.nextOffset
            if next < 0 {
                next = i + 1 < segments.count ? segments[i + 1].baseOffset : logEndOffset
            }
            out.append(SegmentInfo(
                baseOffset: segment.baseOffset, sizeInBytes: segment.size, nextOffset: next,
                offsetIndexEntries: s.offsetIndex.entryCount, timeIndexEntries: s.timeIndex.entryCount,
                largestTimestamp: try segment.largestTimestamp(), isActive: i == segments.count - 1, isCold: false, logBytes: segment.size))
        }
        return out
    }
}

// MARK: Producer state and transactions

extension PartitionLog {
    /// Loads the producer-state snapshot and replays the log after it (all of it when there is
    /// no usable snapshot). Returns a warning when the snapshot was unusable.
    /// Throws when the log cannot be replayed: the partition must not serve with producer state
    /// that skips part of its log (open transactions there would read as committed).
    func loadProducerState() throws(LogError) -> String? {
        var warning: String?
        let end = logEndOffset
        let path = directory + "/" + ProducerStateSnapshot.fileName
        var rejected = false
        if let snapshot = ProducerStateSnapshot.read(directory: directory) {
            if snapshot.states.validUpTo <= end {
                producerStates.withLock { $0 = snapshot.states }
                snapshotOffset.store(snapshot.states.validUpTo, ordering: .relaxed)
            } else {
                // Written at a roll whose data did not all survive (an OS crash in a non-sync mode).
                warning = "producer-state snapshot at offset \(snapshot.states.validUpTo) is past the log end \(end); rebuilt from the log"
                rejected = true
            }
        } else if FileIO.exists(path) {
            warning = "producer-state snapshot is damaged; rebuilt from the log"
            rejected = true
        } else {
            // No snapshot at all: a partition written before producer state was kept. As Kafka does
            // on upgrade, only the last two segments are replayed (a snapshot is written at every
            // roll and clean close since, so a log with more segments and none is an old one).
            let bases = segmentBaseOffsets
            if bases.count > 2 { producerStates.withLock { $0.validUpTo = bases[bases.count - 2] } }
        }
        try catchUpProducerState()
        // A rejected snapshot must not stay: once appends pass its offset, a later crash would load it.
        if rejected && !readOnlyOpen && !writeProducerSnapshot() {
            try? FileIO.unlink(path)
        }
        return warning
    }

    /// Replays the batches between the producer state's `validUpTo` and the log end (the log
    /// start when the state is older than it): at load, and for read-only views before they
    /// answer a read_committed reader.
    public func catchUpProducerState() throws(LogError) {
        // A read-only view starts from the writer's snapshot, not from the log start; without
        // one (a partition of an earlier build), from its last two segments, as the writer does.
        if readOnlyOpen, snapshotOffset.compareExchange(expected: -1, desired: -2, ordering: .relaxed).exchanged {
            if let snapshot = ProducerStateSnapshot.read(directory: directory) {
                if snapshot.states.validUpTo <= logEndOffset {
                    producerStates.withLock { if $0.validUpTo < snapshot.states.validUpTo { $0 = snapshot.states } }
                }
            } else if !FileIO.exists(directory + "/" + ProducerStateSnapshot.fileName) {
                let bases = segmentBaseOffsets
                if bases.count > 2 { producerStates.withLock { $0.validUpTo = max($0.validUpTo, bases[bases.count - 2]) } }
            }
        }
        var next = max(producerStates.withLock { $0.validUpTo }, logStartOffset)
        var replayed = producerStates.withLock { $0 }
        while next < logEndOffset {
            let result = try read(from: next, maxBytes: 8 << 20)
            guard let slice = result.slice else { break }
            slice.forEachBatch { batch in
                if batch.lastOffset >= replayed.validUpTo { replayed.apply(batch) }
            }
            guard slice.nextOffset > next else { break }
            next = slice.nextOffset
        }
        replayed.validUpTo = max(replayed.validUpTo, next)
        let unstable = replayed.firstUnstableOffset ?? .max
        producerStates.withLock { $0 = replayed }
        firstUnstable.store(unstable, ordering: .releasing)
    }

    /// Writes the snapshot of the current state (under the writer lock, or at load). Failure is
    /// not fatal: the previous snapshot stays and a longer replay after a crash covers the gap.
    @discardableResult
    func writeProducerSnapshot() -> Bool {
        let start = logStartOffset
        let expiration = config.producerIdExpirationMs
        let end = logEndOffset  // callers hold the writer lock (or nothing else runs): no append moves it
        let states = producerStates.withLock { states -> ProducerStates in
            states.validUpTo = max(states.validUpTo, end)
            states.expire(nowMs: wallClockMillis(), expirationMs: expiration, logStartOffset: start)
            return states
        }
        do throws(LogError) {
            try ProducerStateSnapshot(states: states).write(directory: directory)
            snapshotOffset.store(states.validUpTo, ordering: .relaxed)
            return true
        } catch {
            checkpointTrouble.withLock { t in
                t.failures += 1
                t.lastError = "producer-state snapshot: \(error)"
            }
            return false
        }
    }

    /// Writes a transaction marker (a control batch) for `producerId` if it has an open
    /// transaction on this partition; returns its offset, or nil when there was nothing to end
    /// (the transaction never wrote here, or the marker is already in the log: completing a
    /// transaction again after a crash is harmless).
    public func appendTransactionMarker(producerId: Int64, epoch: Int16, type: ControlRecordType, coordinatorEpoch: Int32 = 0,
                                        nowMs: Int64 = wallClockMillis()) throws(LogError) -> Int64? {
        guard producerStates.withLock({ ($0.producers[producerId]?.ongoingTransactionFirstOffset ?? -1) >= 0 }) else { return nil }
        let batch = RecordBatchBuilder.controlBatch(producerId: producerId, epoch: epoch, type: type,
                                                    coordinatorEpoch: coordinatorEpoch, timestamp: nowMs)
        let outcome = batch.withUnsafeBytes { p -> Result<AppendInfo, LogError> in
            do throws(LogError) { return .success(try appendValidated(p, lastOffsetDelta: 0, maxTimestamp: nowMs)) } catch { return .failure(error) }
        }
        return try outcome.get().baseOffset
    }

    /// Aborted transactions whose records overlap [from, upTo): the list a read_committed Fetch
    /// returns with its data, so the client drops those producers' records until each marker.
    public func abortedTransactions(from: Int64, upTo: Int64) -> [AbortedTransaction] {
        producerStates.withLock { $0.abortedTransactions(from: from, upTo: upTo) }
    }

    /// A copy of the producer state (for `strata inspect`, embedded readers and tests).
    public var producerStateSnapshot: ProducerStates { producerStates.withLock { $0 } }

    /// Producer ids with an open transaction here, and its first offset.
    public var openTransactions: [(producerId: Int64, firstOffset: Int64)] {
        producerStates.withLock { s in
            s.producers.compactMap { $0.value.ongoingTransactionFirstOffset >= 0 ? ($0.key, $0.value.ongoingTransactionFirstOffset) : nil }
        }.sorted { $0.firstOffset < $1.firstOffset }
    }
}

/// Monotonic nanoseconds without Foundation/Dispatch.
enum DispatchFreeClock {
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
