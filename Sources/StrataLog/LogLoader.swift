#if canImport(Glibc)
import Glibc
#endif

/// Loads a partition directory into segments (Kafka's LogLoader). The directory listing is the
/// source of truth: leftover temp files are interpreted first, then segments are ordered by the
/// base offset in their names; only segments from the recovery point on are read.
struct LogLoader {
    let directory: String
    let config: LogConfig
    let cleanShutdown: Bool
    var report = RecoveryReport()
    /// Bases whose segment is a `.cold` file (no `.log`, no indexes).
    private var coldBases = Set<Int64>()

    struct Loaded {
        var segments: [LogSegment]
        var logStartOffset: Int64
        var recoveryPoint: Int64
        var checkpoint: Checkpoint?
    }

    init(directory: String, config: LogConfig, cleanShutdown: Bool) {
        self.directory = directory
        self.config = config
        self.cleanShutdown = cleanShutdown
        report.cleanShutdown = cleanShutdown
    }

    mutating func load() throws(LogError) -> Loaded {
        try FileIO.mkdirs(directory)
        let listing = try FileIO.listDirectory(directory)
        let changed = try removeTempFilesAndCompleteSwaps(listing)
        var bases = try segmentBaseOffsets(changed ? nil : listing)
        let sizes = try sanityCheck(bases)
        let checkpoint = Checkpoint.read(directory: directory)
        if checkpoint == nil && !bases.isEmpty && FileIO.exists(directory + "/" + Checkpoint.fileName) {
            report.warnings.append("checkpoint \(Checkpoint.fileName) is corrupt; re-validating the whole log")
        }

        if bases.isEmpty {
            let start = checkpoint?.logStartOffset ?? 0
            let segment = try LogSegment.create(directory: directory, baseOffset: start, config: config)
            try FileIO.syncDirectory(directory)
            return Loaded(segments: [segment], logStartOffset: start, recoveryPoint: start, checkpoint: checkpoint)
        }

        var segments: [LogSegment] = []
        let last = bases.count - 1
        if cleanShutdown, coldBases.contains(bases[last]) {
            // Every later segment is gone (retention cannot remove the active one, so only a
            // damaged directory looks like this): appends continue in a new segment after it.
            for base in bases { segments.append(closedSegment(base, size: sizes[base])) }
            segments.append(try activeAfterCold(segments[last]))
        } else if cleanShutdown {
            for base in bases.dropLast() { segments.append(closedSegment(base, size: sizes[base])) }
            if let active = try LogSegment.reopenAfterCleanClose(directory: directory, baseOffset: bases[last], config: config) {
                segments.append(active)
            } else {
                // The tail did not look like a clean close after all: validate the last segment.
                report.warnings.append("segment \(SegmentName.base(bases[last])) failed its tail check; validating it")
                segments.append(contentsOf: try recover(bases: [bases[last]], previousNextOffset: nil, durableBelow: 0, remainingBases: &bases))
            }
        } else {
            let recoveryPoint = checkpoint?.recoveryPoint ?? 0
            // Recovery starts at the segment holding the recovery point (or the first one).
            var firstUnflushed = 0
            for (i, base) in bases.enumerated() where base <= recoveryPoint { firstUnflushed = i }
            for base in bases[..<firstUnflushed] { segments.append(closedSegment(base, size: sizes[base])) }
            let toRecover = Array(bases[firstUnflushed...])
            segments.append(contentsOf: try recover(bases: toRecover, previousNextOffset: nil, durableBelow: checkpoint?.recoveryPoint ?? 0,
                                                    remainingBases: &bases))
        }

        let logEnd = segments.last!.nextOffset
        var logStart = checkpoint?.logStartOffset ?? segments[0].baseOffset
        logStart = min(max(logStart, segments[0].baseOffset), logEnd)
        return Loaded(segments: segments, logStartOffset: logStart, recoveryPoint: logEnd, checkpoint: checkpoint)
    }

    private static let effectiveUID = geteuid()

    /// A closed segment, opened on first use.
    private func closedSegment(_ base: Int64, size: Int?, nextOffset: Int64? = nil) -> LogSegment {
        .lazy(directory: directory, baseOffset: base, config: config, nextOffset: nextOffset, knownSize: size, cold: coldBases.contains(base))
    }

    /// A new, empty active segment after a cold one that ended up last.
    private mutating func activeAfterCold(_ cold: LogSegment) throws(LogError) -> LogSegment {
        let next = try cold.coldSegment().nextOffset
        report.warnings.append("segment \(SegmentName.base(cold.baseOffset)) is cold and last; appends continue in a new segment at \(next)")
        let active = try LogSegment.create(directory: directory, baseOffset: next, config: config)
        try FileIO.syncDirectory(directory)
        return active
    }

    /// Every segment the listing names must be a regular file this process can read and write.
    /// Closed segments are opened lazily, so without this a damaged one (a directory in its place,
    /// mode 000) would only surface at the first read of its offsets, as a mysterious error; here
    /// it takes the partition offline at load, with the file named. Returns each segment's size
    /// (the lazy segments' sizes: one stat per segment, not two).
    private func sanityCheck(_ bases: [Int64]) throws(LogError) -> [Int64: Int] {
        var sizes: [Int64: Int] = [:]
        sizes.reserveCapacity(bases.count)
        for base in bases {
            let path = coldBases.contains(base) ? SegmentName.coldPath(directory, base) : SegmentName.logPath(directory, base)
            var st = stat()
            guard stat(path, &st) == 0 else { throw LogError.fromErrno("stat segment", path) }
            guard (st.st_mode & S_IFMT) == S_IFREG else { throw LogError.corrupt(path: path, reason: "a segment must be a regular file") }
            // The common case answered from the stat (this process owns the file and may read
            // and write it), sparing one syscall per segment.
            // Anything else asks the kernel, which knows about groups, ACLs and capabilities.
            let ownedReadWrite = st.st_uid == Self.effectiveUID && (st.st_mode & 0o600) == 0o600
            guard ownedReadWrite || access(path, R_OK | W_OK) == 0 else { throw LogError.fromErrno("open segment for reading and writing", path) }
            sizes[base] = Int(st.st_size)
        }
        return sizes
    }

    /// `.cleaned` and `.tmp` files are half-written outputs: delete. `.deleted` files were already
    /// dropped from the log: delete. A `.swap` is a complete replacement written by the cleaner
    /// before it swapped in: if its batches validate, it replaces the segments it covers.
    /// Returns whether anything changed (then the listing must be read again).
    private mutating func removeTempFilesAndCompleteSwaps(_ names: [String]) throws(LogError) -> Bool {
        var changed = false
        for name in names where name.hasSuffix(SegmentName.cleanedSuffix) || name.hasSuffix(SegmentName.deletedSuffix) || name.hasSuffix(".tmp") {
            try FileIO.unlink(directory + "/" + name)
            report.tempFilesRemoved += 1
            changed = true
        }
        for name in names where name.hasSuffix(SegmentName.logSuffix + SegmentName.swapSuffix) {
            let stem = String(name.dropLast(SegmentName.swapSuffix.count))
            changed = true
            guard let base = SegmentName.parse(stem, suffix: SegmentName.logSuffix) else {
                try FileIO.unlink(directory + "/" + name)
                continue
            }
            let swapPath = directory + "/" + name
            let bytes = try FileIO.readAll(path: swapPath)
            let scan = bytes.withUnsafeBytes {
                BatchScan.walk($0, segmentBase: base, nextOffset: base, verify: true, indexIntervalBytes: config.indexIntervalBytes,
                               collectIndexEntries: false)
            }
            guard scan.stopReason == nil, scan.batchCount > 0 else {
                report.warnings.append("invalid swap file \(name) removed: \(scan.stopReason ?? "empty")")
                try FileIO.unlink(swapPath)
                continue
            }
            // Replace every live segment (hot or cold) whose base lies in [base, scan.nextOffset).
            for other in try segmentBaseOffsets() where other >= base && other < scan.nextOffset {
                for path in [SegmentName.logPath(directory, other), SegmentName.offsetIndexPath(directory, other),
                             SegmentName.timeIndexPath(directory, other), SegmentName.coldPath(directory, other)] {
                    try FileIO.unlink(path)
                }
            }
            try FileIO.rename(swapPath, SegmentName.logPath(directory, base))
            // Indexes of a swap are rebuilt from the log on first use.
            for suffix in [SegmentName.offsetIndexSuffix, SegmentName.timeIndexSuffix] {
                try FileIO.unlink(directory + "/" + SegmentName.base(base) + suffix + SegmentName.swapSuffix)
                try FileIO.unlink(directory + "/" + SegmentName.base(base) + suffix)
            }
            report.swapsCompleted += 1
        }
        // A `.cold` beside its `.log`: a conversion to the cold tier renamed the finished, synced
        // cold file in and stopped before the hot files were gone. If the cold file opens and
        // checks, it replaces them; if not, it is dropped and the hot segment stays.
        let hotNames = Set(names.filter { $0.hasSuffix(SegmentName.logSuffix) })
        for name in names {
            guard let base = SegmentName.parse(name, suffix: SegmentName.coldSuffix),
                  hotNames.contains(SegmentName.base(base) + SegmentName.logSuffix) else { continue }
            changed = true
            let coldPath = SegmentName.coldPath(directory, base)
            do throws(LogError) {
                // It must have been made from this very `.log` (its size), not from an earlier
                // version of the offsets (a segment compaction rewrote meanwhile).
                let cold = try ColdSegment.open(path: coldPath, baseOffset: base)
                let logSize = FileIO.fileSize(path: SegmentName.logPath(directory, base))
                guard logSize == cold.hotBytes else {
                    throw LogError.corrupt(path: coldPath, reason: "made from \(cold.hotBytes) bytes of log, the .log beside it has \(logSize ?? -1)")
                }
            } catch {
                report.warnings.append("cold segment \(name) beside its .log is unusable (\(error)); the hot segment stays")
                try FileIO.unlink(coldPath)
                continue
            }
            for path in [SegmentName.logPath(directory, base), SegmentName.offsetIndexPath(directory, base), SegmentName.timeIndexPath(directory, base)] {
                try FileIO.unlink(path)
            }
            report.swapsCompleted += 1
        }
        // Only when a file was removed or renamed: a clean directory costs no sync.
        if changed { try FileIO.syncDirectory(directory) }
        return changed
    }

    /// Sorted base offsets of the `.log` and `.cold` files (the cold ones noted in `coldBases`);
    /// index files without a log are removed.
    private mutating func segmentBaseOffsets(_ listing: [String]? = nil) throws(LogError) -> [Int64] {
        let names: [String]
        if let listing { names = listing } else { names = try FileIO.listDirectory(directory) }
        var bases = Set<Int64>()
        for name in names { if let b = SegmentName.parse(name, suffix: SegmentName.logSuffix) { bases.insert(b) } }
        coldBases = Set(names.compactMap { SegmentName.parse($0, suffix: SegmentName.coldSuffix) }).subtracting(bases)
        for name in names {
            let b = SegmentName.parse(name, suffix: SegmentName.offsetIndexSuffix) ?? SegmentName.parse(name, suffix: SegmentName.timeIndexSuffix)
            if let b, !bases.contains(b) {
                try FileIO.unlink(directory + "/" + name)
                report.tempFilesRemoved += 1
            }
        }
        return bases.union(coldBases).sorted()
    }


    /// Validates `bases` in order, batch by batch. At the first invalid batch the segment is cut
    /// there and every later segment deleted; indexes of recovered segments are rewritten.
    /// Returns the resulting segments (the last one opened for appends).
    /// Offsets below `durableBelow` (the checkpointed recovery point) are known to be synced: a
    /// segment that ends there is not synced again, and the directory is synced only when a file
    /// was created, renamed or deleted, so a restart after a crash with nothing to recover costs
    /// no sync per partition.
    private mutating func recover(bases: [Int64], previousNextOffset: Int64?, durableBelow: Int64, remainingBases: inout [Int64]) throws(LogError) -> [LogSegment] {
        var result: [LogSegment] = []
        var directoryChanged = false
        var expectedNext = previousNextOffset
        for (i, base) in bases.enumerated() {
            if coldBases.contains(base) {
                // Cold files are written whole and synced before they are renamed in: nothing
                // to recover. Their header gives the offset the next segment must continue.
                let next: Int64?
                do throws(LogError) {
                    next = try ColdSegment.open(path: SegmentName.coldPath(directory, base), baseOffset: base).nextOffset
                } catch {
                    // Served as an error when read; the partition's other segments stay available.
                    report.warnings.append("cold segment \(SegmentName.base(base)): \(error)")
                    next = nil
                }
                let segment = closedSegment(base, size: nil, nextOffset: next)
                result.append(segment)
                expectedNext = next
                if i == bases.count - 1 {
                    result.append(try activeAfterCold(segment))
                    directoryChanged = true
                }
                continue
            }
            let path = SegmentName.logPath(directory, base)
            let fd = try FileIO.open(path, flags: O_RDWR)
            let size: Int
            let scan: BatchScan
            do {
                size = try FileIO.fileSize(fd: fd, path: path)
                let mapping = try Mapping(fd: fd, length: size, writable: false, path: path)
                scan = BatchScan.walk(mapping.bytes(0..<size), segmentBase: base, nextOffset: max(expectedNext ?? base, base), verify: true,
                                      indexIntervalBytes: config.indexIntervalBytes, collectIndexEntries: true)
            } catch {
                close(fd)
                throw error
            }
            report.segmentsRecovered += 1
            report.bytesValidated += scan.validBytes
            let isLast = i == bases.count - 1
            // Zero bytes past the end are the fallocated, never-written tail: not damage. A closed
            // segment may still have one if the crash came between a roll and the sync of its trim;
            // it is whole when the next segment continues exactly where it ends.
            let zeroTail = scan.stopReason != nil && Self.isZeroTail(fd: fd, from: scan.validBytes, size: size)
            let truncated = scan.stopReason != nil && !(zeroTail && !isLast && bases[i + 1] == scan.nextOffset && scan.batchCount > 0)
            if scan.stopReason != nil {
                if !zeroTail {
                    report.warnings.append("segment \(SegmentName.base(base)): \(scan.stopReason!); truncated \(size - scan.validBytes) bytes at position \(scan.validBytes)")
                    report.bytesTruncated += size - scan.validBytes
                }
            }
            if scan.batchCount == 0 && !result.isEmpty && base != expectedNext {
                // An empty segment whose name does not continue the previous one: drop it, and the
                // previous segment becomes active again.
                close(fd)
                try deleteSegmentFiles(base)
                report.segmentsDeleted += 1
                directoryChanged = true
                for later in bases[(i + 1)...] { try deleteSegmentFiles(later); report.segmentsDeleted += 1 }
                let previous = result.removeLast()
                if previous.isCold {
                    result.append(previous)
                    result.append(try activeAfterCold(previous))
                } else {
                    result.append(try reopenAsActive(previous.baseOffset, expectedNext: previous.baseOffset))
                }
                break
            }
            if truncated || isLast {
                close(fd)
                for later in bases[(i + 1)...] {
                    try deleteSegmentFiles(later)
                    report.segmentsDeleted += 1
                    directoryChanged = true
                }
                var s = scan
                if scan.batchCount == 0 { s.nextOffset = base }
                let intact = LogSegment.indexCountsMatching(directory: directory, baseOffset: base, scan: s)
                if intact == nil { directoryChanged = true }  // the indexes are rewritten (renamed into place)
                result.append(try LogSegment.openActive(directory: directory, baseOffset: base, config: config, scan: s, indexesValid: intact))
                break
            }
            // A closed segment that validated completely: make sure its size and indexes match.
            defer { close(fd) }
            if scan.validBytes != size { try FileIO.truncate(fd: fd, to: scan.validBytes, path: path) }
            let offsetEntries = OffsetIndex.encode(scan.offsetEntries, baseOffset: base)
            let timeEntries = TimeIndex.encode(scan.sealedTimeEntries, baseOffset: base)
            let offsetPath = SegmentName.offsetIndexPath(directory, base)
            let timePath = SegmentName.timeIndexPath(directory, base)
            if FileIO.fileSize(path: offsetPath) != offsetEntries.count || !IndexFile.begins(path: offsetPath, with: offsetEntries) {
                try IndexFile.writeFile(path: offsetPath, entries: offsetEntries)
                directoryChanged = true
            }
            if FileIO.fileSize(path: timePath) != timeEntries.count || !IndexFile.begins(path: timePath, with: timeEntries) {
                try IndexFile.writeFile(path: timePath, entries: timeEntries)
                directoryChanged = true
            }
            if scan.nextOffset > durableBelow { try FileIO.datasync(fd: fd, path: path) }
            result.append(.lazy(directory: directory, baseOffset: base, config: config, nextOffset: scan.nextOffset))
            expectedNext = scan.nextOffset
        }
        remainingBases = result.map(\.baseOffset)
        // Recovered bytes may still be only in the page cache (after a process crash): sync them
        // before the recovery point moves past them.
        for segment in result where segment.nextOffset > durableBelow { try segment.flush() }
        if directoryChanged { try FileIO.syncDirectory(directory) }
        return result
    }

    private mutating func reopenAsActive(_ base: Int64, expectedNext: Int64) throws(LogError) -> LogSegment {
        let path = SegmentName.logPath(directory, base)
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { close(fd) }
        let size = try FileIO.fileSize(fd: fd, path: path)
        let mapping = try Mapping(fd: fd, length: size, writable: false, path: path)
        let scan = BatchScan.walk(mapping.bytes(0..<size), segmentBase: base, nextOffset: expectedNext, verify: true,
                                  indexIntervalBytes: config.indexIntervalBytes, collectIndexEntries: true)
        return try LogSegment.openActive(directory: directory, baseOffset: base, config: config, scan: scan, indexesValid: nil)
    }

    private func deleteSegmentFiles(_ base: Int64) throws(LogError) {
        for path in [SegmentName.logPath(directory, base), SegmentName.offsetIndexPath(directory, base), SegmentName.timeIndexPath(directory, base),
                     SegmentName.coldPath(directory, base)] {
            try FileIO.unlink(path)
        }
    }

    /// True when the bytes after the valid prefix are zeros (the reserved, never-written tail of
    /// an active segment) rather than damage. Only the first 64 KiB are looked at: a torn write
    /// leaves its garbage right at the end of the valid data.
    static func isZeroTail(fd: Int32, from: Int, size: Int) -> Bool {
        guard from < size else { return true }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var position = from
        let end = min(size, from + buffer.count)
        while position < end {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, end - position, off_t(position)) }
            guard n > 0 else { return false }
            for i in 0..<n where buffer[i] != 0 { return false }
            position += n
        }
        return true
    }
}
