#if canImport(Glibc)
import Glibc
#endif
import StrataCore

/// What converting segments to the cold tier did (`strata tier`, the broker's cold worker).
public struct ColdConversionReport: Sendable, Equatable {
    public var segmentsConverted = 0
    public var records = 0
    /// Bytes of the hot segments converted, and of the cold files that replaced them.
    public var hotBytes = 0
    public var coldBytes = 0
    /// Encoding, and decoding every block again to compare it with the log, before the swap.
    public var encodeSeconds = 0.0
    public var verifySeconds = 0.0
    public var seconds = 0.0

    public init() {}

    public mutating func add(_ other: ColdConversionReport) {
        segmentsConverted += other.segmentsConverted
        records += other.records
        hotBytes += other.hotBytes
        coldBytes += other.coldBytes
        encodeSeconds += other.encodeSeconds
        verifySeconds += other.verifySeconds
        seconds += other.seconds
    }
}

/// Test hook: stop a conversion after a step, as a crash would.
enum ColdConversionCrashPoint: Sendable { case none, afterTempWritten, afterColdRenamed, afterLogRenamed }

extension PartitionLog {
    /// Rewrites closed hot segments as cold segments (docs/retention.md "The cold tier"), oldest
    /// first: those entirely below the recovery point (synced) whose age — as retention measures
    /// it, `LogSegment.retentionTimestamp` — is more than `olderThanMs` (nil: every closed one).
    /// The active segment is never converted. Readers are not disturbed: each segment is encoded
    /// and verified beside the log, then swapped in under the writer lock; readers holding slices
    /// of the hot segment keep reading it, and its files are unlinked after the last one.
    ///
    /// Crash safety, step by step (the loader finishes or undoes each): `<base>.cold.tmp` is
    /// written and synced (a leftover `.tmp` is deleted at load); renamed to `<base>.cold` and the
    /// directory synced (a `.cold` beside its `.log` at load: the cold file is checked and
    /// replaces the hot files); the hot files renamed to `.deleted` (deleted at load).
    @discardableResult
    public func convertToCold(olderThanMs: Int64?, nowMs: Int64 = wallClockMillis(), maxSegments: Int = .max) throws -> ColdConversionReport {
        try convertToCold(olderThanMs: olderThanMs, nowMs: nowMs, maxSegments: maxSegments, crashPoint: .none)
    }

    func convertToCold(olderThanMs: Int64?, nowMs: Int64, maxSegments: Int, crashPoint: ColdConversionCrashPoint) throws -> ColdConversionReport {
        guard !readOnlyOpen else { throw LogError.readOnly(reason: "\(directory) is opened read-only") }
        let started = monotonicNanos()
        var report = ColdConversionReport()
        let all = segmentList.withLock { $0 }
        let durable = recoveryPoint
        for (i, segment) in all.enumerated().dropLast() {
            guard report.segmentsConverted < maxSegments else { break }
            let end = all[i + 1].baseOffset
            guard end <= durable else { break }
            if let olderThanMs, nowMs.saturatingSubtract(try segment.retentionTimestamp()) <= olderThanMs { break }
            guard !segment.isCold else { continue }
            guard let converted = try convertSegment(segment, end: end, crashPoint: crashPoint) else { continue }
            report.add(converted)
            if crashPoint != .none { break }
        }
        report.seconds = Double(monotonicNanos() - started) / 1e9
        return report
    }

    /// The cold file of a closed hot segment ending at `end` (the next segment's base): every
    /// source batch's CRC checked, blocks of ~8 MiB of log or of decoded records, every block
    /// decoded again and compared record by record. What conversion writes and
    /// `strata tier --dry-run` measures. `streams` hears about every stream of every block.
    func encodeCold(_ segment: LogSegment, end: Int64, streams: ((ColdBlock.StreamStats) -> Void)? = nil) throws
        -> (file: [UInt8], report: ColdConversionReport)
    {
        var report = ColdConversionReport()
        let slice = try segment.allBatches()
        var builder = ColdSegmentFile.Builder(baseOffset: segment.baseOffset)
        var block: [ColdBatch] = []
        var blockBytes = 0
        var largest: Int64 = -1
        var verifyNs: Int64 = 0
        func finishBlock() throws {
            guard !block.isEmpty else { return }
            let bytes = try builder.addBlock(block, stats: streams)
            let t1 = monotonicNanos()
            // The hot files are deleted once this is swapped in: every block must give back
            // exactly the records it was made of, or the segment stays hot.
            let back = try bytes.withUnsafeBytes { try ColdBlock.decode($0) }
            guard back == block else {
                throw ColdFormatError("block at offset \(block[0].baseOffset) of \(directory) does not decode to the records it was made of")
            }
            verifyNs += monotonicNanos() - t1
            block.removeAll(keepingCapacity: true)
            blockBytes = 0
        }
        let t0 = monotonicNanos()
        try withExtendedLifetime(slice) {
            try Self.forEachBatch(slice.bytes) { batch in
                // The hot files are deleted after the swap: a batch whose CRC fails must not be
                // re-encoded with a fresh one. The segment stays hot, and the error is reported.
                do throws(RecordBatchError) {
                    try batch.validate(strictRecords: false)
                } catch {
                    throw LogError.corrupt(path: segment.logPath, reason: "batch at offset \(batch.baseOffset): \(error); the segment stays hot")
                }
                let cold = try ColdBatch(batch)
                block.append(cold)
                // A block ends at ~8 MiB of log or of decoded records, whichever comes first, so
                // highly compressed batches cannot make a block that decodes past its budget.
                blockBytes += max(batch.sizeInBytes, cold.records.reduce(0) { $0 + 16 + ($1.key?.count ?? 0) + ($1.value?.count ?? 0)
                    + $1.headers.reduce(0) { $0 + $1.key.count + ($1.value?.count ?? 0) } })
                largest = max(largest, batch.maxTimestamp)
                report.records += Int(batch.recordCount)
                if blockBytes >= ColdSegmentFile.blockHotBytes { try finishBlock() }
            }
        }
        try finishBlock()
        let file = builder.finish(nextOffset: end, hotBytes: slice.count, largestTimestamp: largest)
        report.hotBytes = slice.count
        report.coldBytes = file.count
        report.encodeSeconds = Double(monotonicNanos() - t0 - verifyNs) / 1e9
        report.verifySeconds = Double(verifyNs) / 1e9
        report.segmentsConverted = 1
        return (file, report)
    }

    /// Converts one closed hot segment ending at `end` (the next segment's base); nil when the
    /// segment left the log meanwhile (retention, compaction).
    private func convertSegment(_ segment: LogSegment, end: Int64, crashPoint: ColdConversionCrashPoint) throws -> ColdConversionReport? {
        let (file, report) = try encodeCold(segment, end: end)
        let coldPath = SegmentName.coldPath(directory, segment.baseOffset)
        let tempPath = coldPath + ".tmp"
        try writeColdFile(file, to: tempPath, mtimeOf: segment.logPath)
        if crashPoint == .afterTempWritten { return report }
        // Renamed in under the writer lock, after checking the segment is still in the list: a
        // `.cold` on disk then always describes a live hot segment (retention and compaction swap
        // under the same lock), which is what the loader assumes of a `.cold` beside a `.log`.
        let swapped = try writer.withLock { (state: inout WriterState) throws(LogError) -> Bool in
            guard !state.closed else { throw LogError.closed(directory) }
            guard segmentList.withLock({ list in list.firstIndex(where: { $0 === segment }).map { $0 + 1 < list.count } ?? false }) else {
                try? FileIO.unlink(tempPath)  // retention or compaction took the segment meanwhile
                return false
            }
            try FileIO.rename(tempPath, coldPath)
            try FileIO.syncDirectory(directory)
            if crashPoint == .afterColdRenamed { return true }
            let replacement = LogSegment.lazy(directory: directory, baseOffset: segment.baseOffset, config: config, nextOffset: end,
                                              knownSize: file.count, cold: true)
            segmentList.withLock { list in
                if let at = list.firstIndex(where: { $0 === segment }) { list[at] = replacement }
            }
            if crashPoint == .afterLogRenamed {
                try FileIO.rename(segment.logPath, segment.logPath + SegmentName.deletedSuffix)
                return true
            }
            try segment.markDeleted()
            try FileIO.syncDirectory(directory)
            return true
        }
        return swapped ? report : nil
    }

    /// Writes and syncs a cold file; it carries the hot segment's modification time, which
    /// retention reads (a segment's age must not restart when it changes tier).
    private func writeColdFile(_ bytes: [UInt8], to path: String, mtimeOf hotPath: String) throws(LogError) {
        let fd = try FileIO.open(path, flags: O_WRONLY | O_CREAT | O_TRUNC)
        do throws(LogError) {
            try FileIO.writeAll(fd: fd, array: bytes, at: 0, path: path)
            var st = stat()
            if stat(hotPath, &st) == 0 {
                var times = [st.st_mtim, st.st_mtim]
                guard futimens(fd, &times) == 0 else { throw LogError.fromErrno("futimens", path) }
            }
            try FileIO.datasync(fd: fd, path: path)
        } catch {
            Glibc.close(fd)
            try? FileIO.unlink(path)
            throw error
        }
        Glibc.close(fd)
    }
}
