#if canImport(Glibc)
import Glibc
#endif
import StrataCore
import Synchronization

/// Decides where sparse index entries go. Shared by the append path and by recovery/rebuild so a
/// rebuilt index is identical to the one written live.
struct IndexingState {
    var bytesSinceLastIndexEntry = 0
    var maxTimestamp: Int64 = -1
    var offsetOfMaxTimestamp: Int64
    var firstBatchMaxTimestamp: Int64?

    init(segmentBase: Int64) { offsetOfMaxTimestamp = segmentBase }

    /// Accounts one batch at `position`; returns the entries to add (Kafka's rule: an entry when
    /// more than `indexIntervalBytes` were appended since the previous one).
    mutating func observe(baseOffset: Int64, maxTimestamp batchMax: Int64, position: Int, size: Int, indexIntervalBytes: Int)
        -> (offset: (offset: Int64, position: Int)?, time: (timestamp: Int64, offset: Int64)?)
    {
        if firstBatchMaxTimestamp == nil { firstBatchMaxTimestamp = batchMax }
        if batchMax > maxTimestamp {
            maxTimestamp = batchMax
            offsetOfMaxTimestamp = baseOffset
        }
        var result: (offset: (offset: Int64, position: Int)?, time: (timestamp: Int64, offset: Int64)?) = (nil, nil)
        if bytesSinceLastIndexEntry > indexIntervalBytes {
            result = ((baseOffset, position), (maxTimestamp, offsetOfMaxTimestamp))
            bytesSinceLastIndexEntry = 0
        }
        bytesSinceLastIndexEntry += size
        return result
    }
}

/// What a walk over a segment's batches found.
struct BatchScan {
    var validBytes: Int
    var nextOffset: Int64
    var batchCount = 0
    var indexing: IndexingState
    var offsetEntries: [(offset: Int64, position: Int)] = []
    var timeEntries: [(timestamp: Int64, offset: Int64)] = []
    /// Why the walk stopped before the end of the bytes, or nil when every byte was valid.
    var stopReason: String?
    var lastBatchPosition: Int?

    /// Walks batch headers from `start`. With `verify`, each batch is fully validated (CRC, magic,
    /// counts) and must continue the offsets; the walk stops at the first batch that fails.
    static func walk(
        _ bytes: UnsafeRawBufferPointer, from start: Int = 0, segmentBase: Int64, nextOffset: Int64,
        verify: Bool, indexIntervalBytes: Int, collectIndexEntries: Bool
    ) -> BatchScan {
        var scan = BatchScan(validBytes: start, nextOffset: nextOffset, indexing: IndexingState(segmentBase: segmentBase))
        var position = start
        while position < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[position...])
            guard let size = RecordBatch.declaredSize(at: rest) else {
                scan.stopReason = rest.count < RecordBatch.logOverhead
                    ? "\(rest.count) trailing bytes, too short for a batch header"
                    : "invalid batch length at position \(position)"
                break
            }
            guard size <= rest.count else {
                scan.stopReason = "batch at position \(position) declares \(size) bytes, only \(rest.count) present"
                break
            }
            let batch = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: rest[..<size]))
            if verify {
                do throws(RecordBatchError) {
                    try batch.validate(strictRecords: false)
                } catch {
                    scan.stopReason = "batch at position \(position): \(error)"
                    break
                }
                // Offsets must continue exactly: baseOffset is outside the CRC, so this is what
                // catches a garbled one. (Compaction keeps every batch, emptied if need be, so
                // compacted segments continue exactly too.)
                guard batch.baseOffset == scan.nextOffset, batch.lastOffset - segmentBase <= Int64(Int32.max) else {
                    scan.stopReason = "batch at position \(position) has offset \(batch.baseOffset), expected \(scan.nextOffset)"
                    break
                }
            } else if batch.magic != RecordBatch.currentMagic {
                scan.stopReason = "batch at position \(position) has magic \(batch.magic)"
                break
            }
            let entries = scan.indexing.observe(
                baseOffset: batch.baseOffset, maxTimestamp: batch.maxTimestamp, position: position, size: size,
                indexIntervalBytes: indexIntervalBytes)
            if collectIndexEntries {
                if let e = entries.offset { scan.offsetEntries.append(e) }
                if let t = entries.time, t.timestamp > (scan.timeEntries.last?.timestamp ?? Int64.min) { scan.timeEntries.append(t) }
            }
            scan.lastBatchPosition = position
            scan.nextOffset = batch.nextOffset
            scan.batchCount += 1
            position += size
            scan.validBytes = position
        }
        return scan
    }

    /// The time index entries including the final one a seal adds (the segment's max timestamp).
    var sealedTimeEntries: [(timestamp: Int64, offset: Int64)] {
        var entries = timeEntries
        if indexing.maxTimestamp > (entries.last?.timestamp ?? Int64.min), batchCount > 0 {
            entries.append((indexing.maxTimestamp, indexing.offsetOfMaxTimestamp))
        }
        return entries
    }
}

/// One segment: a `.log` of RecordBatch v2 bytes plus its `.index` and `.timeindex`.
///
/// The active segment's log is mapped writable for `segmentBytes` while its file grows by
/// fallocate in steps just ahead of the data (`reserveRoom`); appends copy into the mapping (or
/// pwrite) and publish the new end through `committedSize`. Readers take slices of the mapping
/// that retain the segment, so its mapping lives until the last reader is done, even after the
/// segment was rolled or deleted. Closed segments found at load are mapped read-only on first use.
/// `@unchecked Sendable`: its mutable state (indexing state, capacity, the active flag) changes
/// only in the single writer, under its partition's writer lock; readers use the atomics
/// (`committedSize`, published offsets and timestamps) and the storage behind `storageLock`.
final class LogSegment: @unchecked Sendable {
    let baseOffset: Int64
    let directory: String
    let logPath: String
    private let config: LogConfig
    /// Bytes of whole, valid batches visible to readers.
    let committedSize: Atomic<Int>
    /// Next offset after the last batch; maintained for the active segment and after load.
    let publishedNextOffset: Atomic<Int64>
    /// Largest batch maxTimestamp; Int64.min until known (closed segments not yet loaded).
    private let publishedMaxTimestamp: Atomic<Int64>
    private let storageLock: Mutex<Storage?>
    private let deleted = Atomic<Bool>(false)
    /// Set (release) at the end of `seal`: the flusher may then close the log's descriptor.
    private let sealed = Atomic<Bool>(false)
    /// Changes to the log file since it was opened (appends, a cut tail): counted by the writer
    /// before the new end is published; `syncedWrites` is the count the last sync covered, so
    /// a flush of a segment nothing changed is no syscall at all.
    private let writes = Atomic<Int>(0)
    private let syncedWrites = Atomic<Int>(0)
    /// When the segment's storage was last used, in `MappedSegments` ticks (its LRU order).
    let lastUsedTick = Atomic<UInt64>(0)

    /// Written only by the partition's single writer.
    private var indexing: IndexingState
    /// Most bytes this segment may hold (the mapping's length).
    private var capacity: Int
    /// Bytes the file has blocks for (its size while active): appends stay below it.
    private var reserved: Int
    private(set) var isActive: Bool
    /// A closed segment found at load, mapped on first use (never active, never followed).
    private let createdUnmapped: Bool
    private let createdMs: Int64
    /// segment.ms less this segment's jitter.
    private let rollAfterMs: Int64
    /// Opened by a read-only process: never writes any file; damaged indexes are rebuilt in memory.
    let readOnlyMode: Bool
    /// Read-only mode, for the segment another process may still be appending to.
    private var follower: Follower?
    /// A cold segment (`<base>.cold`): never active, read block by block through `ColdSegment`,
    /// opened on first use like a closed hot segment and closed again by `MappedSegments`.
    let isCold: Bool
    private let coldFile = Mutex<ColdSegment?>(nil)

    /// `@unchecked Sendable`: references fixed at init (mapping, indexes, descriptor), each
    /// synchronised as its own type documents.
    final class Storage: @unchecked Sendable {
        let mapping: Mapping
        let offsetIndex: OffsetIndex
        let timeIndex: TimeIndex
        /// Open (read-write) while the segment is active or its data may still need a sync; -1
        /// for a segment loaded read-only. The writer uses it freely while the segment is active;
        /// after the seal only `sync(path:release:skipSync:)` touches it, under `descriptorClosed`'s lock.
        let fd: Int32
        /// Set once the descriptor is closed (the sealed segment's data synced).
        let descriptorClosed = Mutex(false)

        init(mapping: Mapping, offsetIndex: OffsetIndex, timeIndex: TimeIndex, fd: Int32) {
            self.mapping = mapping
            self.offsetIndex = offsetIndex
            self.timeIndex = timeIndex
            self.fd = fd
        }

        /// fdatasync; with `release` (the segment is sealed, so nothing writes it again) the
        /// descriptor is closed after the sync, and later syncs are no-ops: the data is on disk.
        func sync(path: String, release: Bool, skipSync: Bool = false) throws(LogError) {
            guard fd >= 0 else { return }
            try descriptorClosed.withLock { (closed: inout Bool) throws(LogError) in
                guard !closed else { return }
                if !skipSync { try FileIO.datasync(fd: fd, path: path) }
                if release {
                    close(fd)
                    closed = true
                }
            }
        }

        /// Whether it holds a descriptor (an active segment, or a sealed one not yet synced).
        var holdsDescriptor: Bool { fd >= 0 && !descriptorClosed.withLock { $0 } }

        deinit { if fd >= 0 && !descriptorClosed.withLock({ $0 }) { close(fd) } }
    }

    private init(baseOffset: Int64, directory: String, config: LogConfig, storage: Storage?, size: Int,
                 nextOffset: Int64, maxTimestamp: Int64, indexing: IndexingState, capacity: Int, active: Bool,
                 readOnlyMode: Bool = false, cold: Bool = false)
    {
        self.readOnlyMode = readOnlyMode
        self.isCold = cold
        self.baseOffset = baseOffset
        self.directory = directory
        self.logPath = SegmentName.logPath(directory, baseOffset)
        self.config = config
        self.committedSize = Atomic(size)
        self.publishedNextOffset = Atomic(nextOffset)
        self.publishedMaxTimestamp = Atomic(maxTimestamp)
        self.storageLock = Mutex(storage)
        self.createdUnmapped = storage == nil
        self.indexing = indexing
        self.capacity = capacity
        self.reserved = size
        self.isActive = active
        self.createdMs = monotonicMillis()
        // segment.jitter.ms: Kafka's rule, a random amount below min(jitter, segment.ms).
        let jitter = min(config.segmentJitterMs, config.segmentMs)
        self.rollAfterMs = jitter > 0 ? config.segmentMs - Int64.random(in: 0..<jitter) : config.segmentMs
    }

    deinit {
        if deleted.load(ordering: .acquiring) {
            for path in deletedPaths { try? FileIO.unlink(path) }
        }
    }

    var offsetIndexPath: String { SegmentName.offsetIndexPath(directory, baseOffset) }
    var coldPath: String { SegmentName.coldPath(directory, baseOffset) }
    /// The file holding the segment's records: its `.log`, or its `.cold`.
    var dataPath: String { isCold ? coldPath : logPath }
    var timeIndexPath: String { SegmentName.timeIndexPath(directory, baseOffset) }
    var size: Int { committedSize.load(ordering: .acquiring) }
    var nextOffset: Int64 { publishedNextOffset.load(ordering: .acquiring) }
    /// A cold segment's include the hot files of its base: a conversion whose rename of them
    /// failed leaves them beside the `.cold`, and deleting the segment must not resurrect them.
    private var ownPaths: [String] { isCold ? [coldPath, logPath, offsetIndexPath, timeIndexPath] : [logPath, offsetIndexPath, timeIndexPath] }
    private var deletedPaths: [String] { ownPaths.map { $0 + SegmentName.deletedSuffix } }

    // MARK: Creation and loading

    /// Creates a new, empty active segment. Its log file is empty until the first append
    /// reserves room (`reserveRoom`); its indexes hold one page each.
    static func create(directory: String, baseOffset: Int64, config: LogConfig) throws(LogError) -> LogSegment {
        let path = SegmentName.logPath(directory, baseOffset)
        let fd = try FileIO.open(path, flags: O_RDWR | O_CREAT | O_TRUNC)
        do {
            let storage = try openWritableStorage(
                directory: directory, baseOffset: baseOffset, fd: fd, capacity: config.segmentBytes, config: config,
                offsetEntries: 0, timeEntries: 0)
            return LogSegment(
                baseOffset: baseOffset, directory: directory, config: config, storage: storage, size: 0,
                nextOffset: baseOffset, maxTimestamp: -1, indexing: IndexingState(segmentBase: baseOffset),
                capacity: config.segmentBytes, active: true)
        } catch {
            close(fd)
            try? FileIO.unlink(path)
            throw error
        }
    }

    /// A closed segment found at load (or a cold one just swapped in); nothing is opened until
    /// it is read. `knownSize`: the size of its `.log` (or `.cold`: what it costs on disk) when
    /// the caller just stat'ed it (a load), sparing a stat.
    static func lazy(directory: String, baseOffset: Int64, config: LogConfig, nextOffset: Int64? = nil, readOnlyMode: Bool = false,
                     knownSize: Int? = nil, cold: Bool = false) -> LogSegment {
        let path = cold ? SegmentName.coldPath(directory, baseOffset) : SegmentName.logPath(directory, baseOffset)
        let size = knownSize ?? FileIO.fileSize(path: path) ?? 0
        return LogSegment(
            baseOffset: baseOffset, directory: directory, config: config, storage: nil, size: size,
            nextOffset: nextOffset ?? -1, maxTimestamp: Int64.min, indexing: IndexingState(segmentBase: baseOffset),
            capacity: size, active: false, readOnlyMode: readOnlyMode, cold: cold)
    }

    /// The cold segment's file, opened and checked on first use (and after `MappedSegments`
    /// closed it); publishes its next offset and largest timestamp.
    func coldSegment() throws(LogError) -> ColdSegment {
        lastUsedTick.store(MappedSegments.shared.tick(), ordering: .relaxed)
        var openedNow = false
        let cold = try coldFile.withLock { (c: inout ColdSegment?) throws(LogError) -> ColdSegment in
            if let c { return c }
            let opened = try ColdSegment.open(path: coldPath, baseOffset: baseOffset)
            publishedNextOffset.store(opened.nextOffset, ordering: .releasing)
            publishedMaxTimestamp.store(opened.largestTimestamp, ordering: .releasing)
            c = opened
            openedNow = true
            return opened
        }
        if openedNow { MappedSegments.shared.add(self) }
        return cold
    }

    /// Bytes of log the segment holds: its size for a hot segment, the size of the segment it was
    /// made from for a cold one (what compaction would rewrite).
    func logBytes() throws(LogError) -> Int { isCold ? try coldSegment().hotBytes : size }

    /// Every batch of the segment as one slice (the cleaner, verification): the mapping of a hot
    /// segment, or a cold one decoded whole into private memory.
    func allBatches() throws(LogError) -> SegmentSlice {
        if isCold {
            let cold = try coldSegment()
            let all = try cold.materializeAll()
            return SegmentSlice(segment: self, owner: all.mapping, range: 0..<all.length, nextOffset: cold.nextOffset)
        }
        let s = try storage()
        let limit = size
        return SegmentSlice(segment: self, owner: s.mapping, range: 0..<limit, nextOffset: nextOffset)
    }

    /// After a clean shutdown the last segment was trimmed to its batches and its indexes to their
    /// entries: its files are opened and mapped for appending once, checked through those very
    /// mappings (index sanity, a walk from the last offset entry to the end: a few KiB), and kept.
    /// Returns nil when anything looks wrong (the caller then validates the segment). One open
    /// and one mapping per file, not a read-only pass and then a writable one: with thousands of
    /// partitions opening on several threads, every extra map and unmap is contention on the
    /// process's address space.
    static func reopenAfterCleanClose(directory: String, baseOffset base: Int64, config: LogConfig) throws(LogError) -> LogSegment? {
        let path = SegmentName.logPath(directory, base)
        let offsetPath = SegmentName.offsetIndexPath(directory, base)
        let timePath = SegmentName.timeIndexPath(directory, base)
        guard let offsetSize = FileIO.fileSize(path: offsetPath), offsetSize % OffsetIndex.entrySize == 0,
              let timeSize = FileIO.fileSize(path: timePath), timeSize % TimeIndex.entrySize == 0 else { return nil }
        let fd = try FileIO.open(path, flags: O_RDWR)
        var keepDescriptor = false
        defer { if !keepDescriptor { close(fd) } }
        let size = try FileIO.fileSize(fd: fd, path: path)
        let capacity = max(config.segmentBytes, size)
        let mapping = try Mapping(fd: fd, length: capacity, writable: true, path: path)
        guard let offsetFile = try? IndexFile.openWritable(path: offsetPath, entrySize: OffsetIndex.entrySize, maxBytes: config.segmentIndexBytes,
                                                           validEntries: offsetSize / OffsetIndex.entrySize),
              let timeFile = try? IndexFile.openWritable(path: timePath, entrySize: TimeIndex.entrySize, maxBytes: config.segmentIndexBytes,
                                                         validEntries: timeSize / TimeIndex.entrySize)
        else { return nil }
        let offsetIndex = OffsetIndex(baseOffset: base, file: offsetFile)
        let timeIndex = TimeIndex(baseOffset: base, file: timeFile)
        guard offsetIndex.sanityCheck(logSize: size) == nil else { return nil }
        let startEntry = offsetIndex.entryCount > 0 ? offsetIndex.entry(offsetIndex.entryCount - 1) : (offset: base, position: 0)
        let bytes = mapping.bytes(0..<size)
        var scan = BatchScan.walk(bytes, from: startEntry.position, segmentBase: base, nextOffset: startEntry.offset, verify: false,
                                  indexIntervalBytes: config.indexIntervalBytes, collectIndexEntries: false)
        guard scan.stopReason == nil else { return nil }
        if size > 0 {
            guard scan.batchCount > 0, let lastTime = timeIndex.lastEntry,
                  timeIndex.sanityCheck(nextOffset: scan.nextOffset) == nil else { return nil }
            // Continue indexing where the live writer stopped: the sealed time index's last entry is
            // the segment's max timestamp, and the bytes since the last offset entry are the walk's.
            scan.indexing.maxTimestamp = lastTime.timestamp
            scan.indexing.offsetOfMaxTimestamp = lastTime.offset
            scan.indexing.firstBatchMaxTimestamp = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: bytes[0..<RecordBatch.headerSize])).maxTimestamp
            scan.indexing.bytesSinceLastIndexEntry = size - startEntry.position
        } else {
            scan.nextOffset = base
        }
        keepDescriptor = true
        let storage = Storage(mapping: mapping, offsetIndex: offsetIndex, timeIndex: timeIndex, fd: fd)
        return LogSegment(
            baseOffset: base, directory: directory, config: config, storage: storage, size: size,
            nextOffset: scan.nextOffset, maxTimestamp: scan.indexing.maxTimestamp, indexing: scan.indexing,
            capacity: capacity, active: true)
    }

    /// Opens the last segment for appending. `scan` describes its valid prefix (from recovery) and
    /// `indexesValid` says whether the index files on disk already match it; otherwise they are
    /// rewritten from the scan.
    static func openActive(directory: String, baseOffset: Int64, config: LogConfig, scan: BatchScan,
                           indexesValid: (offset: Int, time: Int)?) throws(LogError) -> LogSegment
    {
        let path = SegmentName.logPath(directory, baseOffset)
        let fd = try FileIO.open(path, flags: O_RDWR | O_CREAT)
        do throws(LogError) {
            // Drop anything past the valid prefix; room for appends is reserved as they come,
            // so a full disk at open only makes the next append fail with ENOSPC (until space
            // returns: no restart needed) while the data is served. A file that already ends
            // there (a clean close) is left as it is: reopening an idle partition writes nothing.
            let sizeOnDisk = try FileIO.fileSize(fd: fd, path: path)
            if sizeOnDisk != scan.validBytes { try FileIO.truncate(fd: fd, to: scan.validBytes, path: path) }
            let capacity = max(config.segmentBytes, scan.validBytes)
            var counts = indexesValid
            if counts == nil {
                try IndexFile.writeFile(path: SegmentName.offsetIndexPath(directory, baseOffset),
                                        entries: OffsetIndex.encode(scan.offsetEntries, baseOffset: baseOffset))
                try IndexFile.writeFile(path: SegmentName.timeIndexPath(directory, baseOffset),
                                        entries: TimeIndex.encode(scan.timeEntries, baseOffset: baseOffset))
                counts = (scan.offsetEntries.count, scan.timeEntries.count)
            }
            let storage = try openWritableStorage(
                directory: directory, baseOffset: baseOffset, fd: fd, capacity: capacity, config: config,
                offsetEntries: counts!.offset, timeEntries: counts!.time, indexesSynced: indexesValid != nil)
            let segment = LogSegment(
                baseOffset: baseOffset, directory: directory, config: config, storage: storage, size: scan.validBytes,
                nextOffset: scan.nextOffset, maxTimestamp: scan.indexing.maxTimestamp, indexing: scan.indexing,
                capacity: capacity, active: true)
            // A cut tail changed the file: the next flush syncs it even if nothing is appended.
            if sizeOnDisk != scan.validBytes { segment.writes.store(1, ordering: .relaxed) }
            return segment
        } catch {
            close(fd)
            throw error
        }
    }

    /// The entry counts of this segment's index files when they already begin with exactly the
    /// entries `scan` computed (a crash that left them intact: the common case), so recovery need
    /// not rewrite them (a rename and a directory sync each, times thousands of partitions).
    static func indexCountsMatching(directory: String, baseOffset: Int64, scan: BatchScan) -> (offset: Int, time: Int)? {
        let offsetEntries = OffsetIndex.encode(scan.offsetEntries, baseOffset: baseOffset)
        let timeEntries = TimeIndex.encode(scan.timeEntries, baseOffset: baseOffset)
        guard IndexFile.begins(path: SegmentName.offsetIndexPath(directory, baseOffset), with: offsetEntries),
              IndexFile.begins(path: SegmentName.timeIndexPath(directory, baseOffset), with: timeEntries) else { return nil }
        return (scan.offsetEntries.count, scan.timeEntries.count)
    }

    private static func openWritableStorage(directory: String, baseOffset: Int64, fd: Int32, capacity: Int, config: LogConfig,
                                            offsetEntries: Int, timeEntries: Int, indexesSynced: Bool = true) throws(LogError) -> Storage
    {
        let path = SegmentName.logPath(directory, baseOffset)
        let mapping = try Mapping(fd: fd, length: capacity, writable: true, path: path)
        let offsetFile = try IndexFile.openWritable(
            path: SegmentName.offsetIndexPath(directory, baseOffset), entrySize: OffsetIndex.entrySize,
            maxBytes: config.segmentIndexBytes, validEntries: offsetEntries, synced: indexesSynced)
        let timeFile = try IndexFile.openWritable(
            path: SegmentName.timeIndexPath(directory, baseOffset), entrySize: TimeIndex.entrySize,
            maxBytes: config.segmentIndexBytes, validEntries: timeEntries, synced: indexesSynced)
        return Storage(mapping: mapping, offsetIndex: OffsetIndex(baseOffset: baseOffset, file: offsetFile),
                       timeIndex: TimeIndex(baseOffset: baseOffset, file: timeFile), fd: fd)
    }

    /// The mapping and indexes, loading a closed segment on first use. Index files that are
    /// missing or fail their sanity check are rebuilt from the log (which is trusted here: it is
    /// below the recovery point or was validated at load).
    func storage() throws(LogError) -> Storage {
        // A cold segment has no mapping of batches or index files: its readers go through
        // `coldSegment()` (read, time lookups, `allBatches`). Reaching here is a bug, reported
        // as an error rather than a wrong view of the bytes.
        if isCold { throw LogError.corrupt(path: coldPath, reason: "a cold segment is read through its blocks, not mapped") }
        // Recency matters only to segments MappedSegments may unmap (closed ones); the active
        // segment's appends and reads skip the shared counter.
        if createdUnmapped || sealed.load(ordering: .relaxed) { lastUsedTick.store(MappedSegments.shared.tick(), ordering: .relaxed) }
        var loadedNow = false
        let storage = try storageLock.withLock { (s: inout Storage?) throws(LogError) -> Storage in
            if let s { return s }
            let loaded = try loadReadOnly()
            s = loaded
            loadedNow = true
            return loaded
        }
        if loadedNow { MappedSegments.shared.add(self) }
        return storage
    }

    /// Drops the mapping of a closed segment that holds no descriptor (MappedSegments' eviction).
    /// Readers holding slices keep theirs; the next use maps the files again. An active segment,
    /// a sealed one still waiting for its sync, a deleted one or a read-only follower is kept.
    /// Returns whether it was unmapped.
    func unmapIfIdle() -> Bool {
        if isCold {
            guard !deleted.load(ordering: .acquiring) else { return false }
            let closed = coldFile.withLock { (c: inout ColdSegment?) -> ColdSegment? in
                defer { c = nil }
                return c
            }
            guard let closed else { return false }
            ColdBlockCache.shared.drop(segment: closed.cacheID)
            return true
        }
        guard sealed.load(ordering: .acquiring) || createdUnmapped, !deleted.load(ordering: .acquiring) else { return false }
        return storageLock.withLock { s in
            guard let current = s, !current.holdsDescriptor else { return false }
            s = nil
            return true
        }
    }

    /// Whether the segment is mapped now (tests).
    var isMapped: Bool { isCold ? coldFile.withLock { $0 != nil } : storageLock.withLock { $0 != nil } }

    private func loadReadOnly() throws(LogError) -> Storage {
        let fd = try FileIO.open(logPath, flags: O_RDONLY)
        defer { close(fd) }
        let size = try FileIO.fileSize(fd: fd, path: logPath)
        let mapping = try Mapping(fd: fd, length: size, writable: false, path: logPath)
        committedSize.store(size, ordering: .releasing)
        if let indexes = try? openIndexesReadOnly(logSize: size) {
            return Storage(mapping: mapping, offsetIndex: indexes.0, timeIndex: indexes.1, fd: -1)
        }
        if readOnlyMode {
            let scan = BatchScan.walk(mapping.bytes(0..<size), segmentBase: baseOffset, nextOffset: baseOffset, verify: false,
                                      indexIntervalBytes: config.indexIntervalBytes, collectIndexEntries: true)
            if scan.batchCount > 0 { publishedNextOffset.store(scan.nextOffset, ordering: .releasing) }
            publishedMaxTimestamp.store(scan.indexing.maxTimestamp, ordering: .releasing)
            let offsetFile = try IndexFile.inMemory(entrySize: OffsetIndex.entrySize, maxBytes: 0,
                                                    entries: OffsetIndex.encode(scan.offsetEntries, baseOffset: baseOffset))
            let timeFile = try IndexFile.inMemory(entrySize: TimeIndex.entrySize, maxBytes: 0,
                                                  entries: TimeIndex.encode(scan.sealedTimeEntries, baseOffset: baseOffset))
            return Storage(mapping: mapping, offsetIndex: OffsetIndex(baseOffset: baseOffset, file: offsetFile),
                           timeIndex: TimeIndex(baseOffset: baseOffset, file: timeFile), fd: -1)
        }
        try rebuildIndexes(mapping: mapping, size: size)
        guard let indexes = try? openIndexesReadOnly(logSize: size) else {
            throw LogError.corrupt(path: offsetIndexPath, reason: "index still invalid after rebuild")
        }
        return Storage(mapping: mapping, offsetIndex: indexes.0, timeIndex: indexes.1, fd: -1)
    }

    private func openIndexesReadOnly(logSize: Int) throws -> (OffsetIndex, TimeIndex) {
        let offsetIndex = OffsetIndex(baseOffset: baseOffset, file: try IndexFile.openReadOnly(path: offsetIndexPath, entrySize: OffsetIndex.entrySize))
        let timeIndex = TimeIndex(baseOffset: baseOffset, file: try IndexFile.openReadOnly(path: timeIndexPath, entrySize: TimeIndex.entrySize))
        if let why = offsetIndex.sanityCheck(logSize: logSize) { throw LogError.corrupt(path: offsetIndexPath, reason: why) }
        // A non-empty log must have a time index entry holding its max timestamp (added at seal).
        if logSize > 0, timeIndex.entryCount == 0 { throw LogError.corrupt(path: timeIndexPath, reason: "empty") }
        let next = nextOffset >= 0 ? nextOffset : Int64.max
        if let why = timeIndex.sanityCheck(nextOffset: next) { throw LogError.corrupt(path: timeIndexPath, reason: why) }
        if let last = timeIndex.lastEntry {
            publishedMaxTimestamp.store(last.timestamp, ordering: .releasing)
        }
        return (offsetIndex, timeIndex)
    }

    private func rebuildIndexes(mapping: Mapping, size: Int) throws(LogError) {
        let scan = BatchScan.walk(mapping.bytes(0..<size), segmentBase: baseOffset, nextOffset: baseOffset, verify: false,
                                  indexIntervalBytes: config.indexIntervalBytes, collectIndexEntries: true)
        try IndexFile.writeFile(path: offsetIndexPath, entries: OffsetIndex.encode(scan.offsetEntries, baseOffset: baseOffset))
        try IndexFile.writeFile(path: timeIndexPath, entries: TimeIndex.encode(scan.sealedTimeEntries, baseOffset: baseOffset))
        if scan.batchCount > 0 { publishedNextOffset.store(scan.nextOffset, ordering: .releasing) }
    }

    // MARK: Following a segment another process appends to (read-only mode)

    /// State of a read-only view of a segment that may still grow. New bytes are discovered with
    /// pread, never by touching the mapping past what was validated: the writer may truncate the
    /// file's reserved tail at any moment, and a mapped access past the end would be a SIGBUS.
    private final class Follower {
        let fd: Int32
        var indexing: IndexingState
        var buffer: [UInt8]
        init(fd: Int32, segmentBase: Int64, bufferSize: Int) {
            self.fd = fd
            indexing = IndexingState(segmentBase: segmentBase)
            buffer = [UInt8](repeating: 0, count: bufferSize)
        }
        deinit { close(fd) }
    }

    /// Opens the newest segment of a log that a writer may be appending to, validating every batch
    /// (CRC and offsets) so a half-written batch is never exposed.
    /// `trustedBelow`: the writer's checkpointed recovery point; batches below it are walked
    /// without their CRC (synced and validated by the writer; `strata inspect --verify` checks them).
    static func follow(directory: String, baseOffset: Int64, config: LogConfig, trustedBelow: Int64 = .min) throws(LogError) -> LogSegment {
        let path = SegmentName.logPath(directory, baseOffset)
        let fd = try FileIO.open(path, flags: O_RDONLY)
        let follower = Follower(fd: fd, segmentBase: baseOffset, bufferSize: max(1 << 20, config.maxMessageBytes + RecordBatch.logOverhead))
        let mappedLength = max(try FileIO.fileSize(fd: fd, path: path), config.segmentBytes)
        let mapping = try Mapping(fd: fd, length: mappedLength, writable: false, path: path)
        let offsetFile = try IndexFile.inMemory(entrySize: OffsetIndex.entrySize, maxBytes: config.segmentIndexBytes, entries: [])
        let timeFile = try IndexFile.inMemory(entrySize: TimeIndex.entrySize, maxBytes: config.segmentIndexBytes, entries: [])
        let storage = Storage(mapping: mapping, offsetIndex: OffsetIndex(baseOffset: baseOffset, file: offsetFile),
                              timeIndex: TimeIndex(baseOffset: baseOffset, file: timeFile), fd: -1)
        let segment = LogSegment(
            baseOffset: baseOffset, directory: directory, config: config, storage: storage, size: 0,
            nextOffset: baseOffset, maxTimestamp: -1, indexing: IndexingState(segmentBase: baseOffset),
            capacity: mappedLength, active: false, readOnlyMode: true)
        segment.follower = follower
        _ = try segment.refreshFollowed(trustedBelow: trustedBelow)
        return segment
    }

    /// Picks up batches appended since the last look. Returns true when the segment grew.
    /// Caller serializes calls (the partition's writer lock).
    func refreshFollowed(trustedBelow: Int64 = .min) throws(LogError) -> Bool {
        guard let f = follower else { return false }
        let s = try storage()
        var position = size
        var next = publishedNextOffset.load(ordering: .relaxed)
        var bufferStart = -1
        var bufferEnd = -1
        let start = position
        // Below the writer's recovery point only batch headers are read (trusted, see follow);
        // the file's size bounds them, as the mapping may be larger than the file.
        let fileSize = trustedBelow == .min ? 0 : ((try? FileIO.fileSize(fd: f.fd, path: logPath)) ?? 0)
        var wholeBatches = trustedBelow == .min
        // A batch taken into the view, checked in full or by its header: index it, publish it.
        func accept(base: Int64, last: Int64, maxTimestamp: Int64, size batchSize: Int) {
            let entries = f.indexing.observe(baseOffset: base, maxTimestamp: maxTimestamp, position: position, size: batchSize,
                                             indexIntervalBytes: config.indexIntervalBytes)
            if let e = entries.offset, !s.offsetIndex.isFull { s.offsetIndex.append(offset: e.offset, position: e.position) }
            if let t = entries.time { s.timeIndex.maybeAppend(timestamp: t.timestamp, offset: t.offset) }
            position += batchSize
            next = last + 1
            publishedMaxTimestamp.store(f.indexing.maxTimestamp, ordering: .relaxed)
            publishedNextOffset.store(next, ordering: .relaxed)
            committedSize.store(position, ordering: .releasing)
        }
        while true {
            let headerOnly = !wholeBatches && next < trustedBelow
            // Make [position, position + 12) available (a whole header when reading headers
            // only), then the whole batch.
            if bufferStart < 0 || position + (headerOnly ? RecordBatch.headerSize : RecordBatch.logOverhead) > bufferEnd {
                let length = headerOnly ? RecordBatch.headerSize : f.buffer.count
                let result: Result<Int, LogError> = f.buffer.withUnsafeMutableBytes { p in
                    do throws(LogError) {
                        return .success(try FileIO.read(fd: f.fd, into: UnsafeMutableRawBufferPointer(rebasing: p[0..<length]), at: position, path: logPath))
                    } catch { return .failure(error) }
                }
                let n = try result.get()
                bufferStart = position
                bufferEnd = position + n
                if n < RecordBatch.logOverhead { break }
            }
            let sizeOfBatch: Int? = f.buffer.withUnsafeBytes { p in
                RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: p[(position - bufferStart)..<(bufferEnd - bufferStart)]))
            }
            guard let batchSize = sizeOfBatch, batchSize <= f.buffer.count, position + batchSize <= s.mapping.length else { break }
            if headerOnly {
                let header: (ok: Bool, base: Int64, last: Int64, maxTs: Int64) = f.buffer.withUnsafeBytes { p in
                    guard position + RecordBatch.headerSize <= bufferEnd, batchSize >= RecordBatch.headerSize,
                          position + batchSize <= fileSize else { return (false, 0, 0, 0) }
                    let b = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: p[(position - bufferStart)..<(position - bufferStart + RecordBatch.headerSize)]))
                    guard b.magic == RecordBatch.currentMagic, b.lastOffsetDelta >= 0, b.baseOffset == next,
                          b.baseOffset &+ Int64(b.lastOffsetDelta) < trustedBelow else { return (false, 0, 0, 0) }
                    return (true, b.baseOffset, b.lastOffset, b.maxTimestamp)
                }
                guard header.ok else {
                    // Not a trusted batch after all: from here on, whole batches, fully checked.
                    wholeBatches = true
                    bufferStart = -1
                    continue
                }
                accept(base: header.base, last: header.last, maxTimestamp: header.maxTs, size: batchSize)
                continue
            }
            if position + batchSize > bufferEnd {
                if bufferStart == position { break }  // the batch is not all there yet
                bufferStart = -1
                continue
            }
            let ok: (valid: Bool, base: Int64, last: Int64, maxTs: Int64) = f.buffer.withUnsafeBytes { p in
                let b = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: p[(position - bufferStart)..<(position - bufferStart + batchSize)]))
                do throws(RecordBatchError) {
                    try b.validate(strictRecords: false, checksumFrom: trustedBelow)
                } catch {
                    return (false, 0, 0, 0)
                }
                return (b.baseOffset == next, b.baseOffset, b.lastOffset, b.maxTimestamp)
            }
            guard ok.valid else { break }
            accept(base: ok.base, last: ok.last, maxTimestamp: ok.maxTs, size: batchSize)
        }
        return position > start
    }

    // MARK: Append (single writer)

    /// Whether a batch of `batchSize` bytes whose offsets end at `lastOffset` and whose largest
    /// timestamp is `maxTimestamp` must go to a new segment. Kafka's rules: size, age, a full
    /// index, relative-offset overflow.
    /// Whether a batch of `batchSize` bytes fits the segment.
    func hasRoom(for batchSize: Int) -> Bool { size + batchSize <= capacity }

    static let minimumReserveStep = 4096

    /// Gives the files real blocks for one more batch of `batchSize` bytes and its index entries,
    /// before anything is written: the log grows by one step (doubling from 4 KiB up to
    /// `reserveStepBytes`, whole pages, never past the capacity), so disk follows the data and a
    /// full disk is an error here (ENOSPC, nothing changed), never a SIGBUS in the mapping.
    /// Writer only; the caller checked `hasRoom`.
    func reserveRoom(for batchSize: Int) throws(LogError) {
        let s = try storage()
        let needed = size + batchSize
        if needed > reserved {
            let step = min(max(reserved, Self.minimumReserveStep), config.reserveStepBytes)
            let page = 4096
            let target = min(capacity, (max(needed, reserved + step) + page - 1) / page * page)
            try FileIO.reserve(fd: s.fd, from: reserved, bytes: target - reserved, path: logPath)
            reserved = target
        }
        try s.offsetIndex.file.reserveRoom(forEntries: s.offsetIndex.entryCount + 1)
        // Plus the slot the seal's final entry takes.
        try s.timeIndex.file.reserveRoom(forEntries: s.timeIndex.entryCount + 2)
    }

    func shouldRoll(batchSize: Int, lastOffset: Int64, maxTimestamp: Int64, nowMs: Int64) -> String? {
        let current = size
        guard current > 0 else { return nil }
        if current + batchSize > capacity { return "segment.bytes" }
        if let first = indexing.firstBatchMaxTimestamp {
            // Timestamps come from producers: any Int64, so the difference saturates.
            if maxTimestamp.saturatingSubtract(first) > rollAfterMs { return "segment.ms" }
        } else if nowMs.saturatingSubtract(createdMs) > rollAfterMs {
            return "segment.ms"
        }
        if let s = try? storage(), s.offsetIndex.isFull || s.timeIndex.isFull { return "index full" }
        if lastOffset - baseOffset > Int64(Int32.max) { return "relative offset overflow" }
        return nil
    }

    /// Copies a validated batch into the mapping, rewrites its baseOffset, updates the indexes and
    /// publishes the new size. Caller checked `shouldRoll` and holds the partition's writer lock.
    func append(batch: UnsafeRawBufferPointer, baseOffset assigned: Int64, lastOffset: Int64, maxTimestamp: Int64) throws(LogError) {
        precondition(isActive, "append to a closed segment")
        let s = try storage()
        let position = committedSize.load(ordering: .relaxed)
        precondition(position + batch.count <= reserved, "batch does not fit the reserved blocks; reserveRoom first")
        if batch.count >= LogSegment.writeSyscallThreshold {
            try writeThroughKernel(batch: batch, baseOffset: assigned, at: position, fd: s.fd)
        } else {
            let destination = s.mapping.mutableBytes(position..<position + batch.count)
            destination.copyMemory(from: batch)
            RecordBatch.setBaseOffset(assigned, in: destination)
        }
        let entries = indexing.observe(baseOffset: assigned, maxTimestamp: maxTimestamp, position: position, size: batch.count,
                                       indexIntervalBytes: config.indexIntervalBytes)
        // `reserveRoom` made room for this entry; a full index (which rolls the segment at the
        // next append) skips it rather than trap: the index is sparse.
        if let e = entries.offset, s.offsetIndex.file.canAppend { s.offsetIndex.append(offset: e.offset, position: e.position) }
        if let t = entries.time { s.timeIndex.maybeAppend(timestamp: t.timestamp, offset: t.offset) }
        writes.wrappingAdd(1, ordering: .releasing)
        publishedMaxTimestamp.store(indexing.maxTimestamp, ordering: .relaxed)
        publishedNextOffset.store(lastOffset + 1, ordering: .relaxed)
        committedSize.store(position + batch.count, ordering: .releasing)
    }

    /// Batches at least this large are written with pwritev instead of a copy into the mapping.
    /// Measured here (docs/durability.md): a copy into fresh mapped pages runs at ~3.2 GB/s whatever
    /// the size, because every new 4 KiB page takes a fault; pwrite reaches 3.7 GB/s at 16 KiB and
    /// 5.7-6.8 GB/s at 64-210 KiB, and its fdatasync is 1.5-2x cheaper (no mapped dirty pages to
    /// write-protect). Below ~16 KiB the syscall costs more than the faults. Both paths write the
    /// same page cache, so readers of the mapping see either.
    static let writeSyscallThreshold = 16 * 1024

    /// One pwritev: the assigned baseOffset, then the batch after its own baseOffset field.
    private func writeThroughKernel(batch: UnsafeRawBufferPointer, baseOffset: Int64, at position: Int, fd: Int32) throws(LogError) {
        try FileIO.fault(.write, logPath, "pwritev \(batch.count) bytes at \(position)")
        var offsetField = baseOffset.bigEndian
        var done = 0
        let total = batch.count
        while done < total {
            let n: Int = withUnsafeMutableBytes(of: &offsetField) { field in
                if done < 8 {
                    var iov = [
                        iovec(iov_base: field.baseAddress! + done, iov_len: 8 - done),
                        iovec(iov_base: UnsafeMutableRawPointer(mutating: batch.baseAddress! + 8), iov_len: total - 8),
                    ]
                    return pwritev(fd, &iov, 2, off_t(position + done))
                }
                return pwrite(fd, batch.baseAddress! + done, total - done, off_t(position + done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw LogError.fromErrno("pwritev \(total) bytes at \(position)", logPath)
            }
            done += n
        }
    }

    /// Syncs the log's data (the indexes are synced by the seal). Once the segment is sealed (the flag read before the sync, so the
    /// sync covers every byte) its descriptor is closed, and it may be unmapped under the budget
    /// of `MappedSegments`: a rolled segment then costs no descriptor.
    func flush() throws(LogError) {
        let wasSealed = sealed.load(ordering: .acquiring)
        // Unmapped (or never mapped) means no descriptor and nothing unsynced: only a segment
        // that was active since load holds one.
        guard let s = storageLock.withLock({ $0 }), s.holdsDescriptor else { return }
        let written = writes.load(ordering: .acquiring)
        try s.sync(path: logPath, release: wasSealed, skipSync: written == syncedWrites.load(ordering: .relaxed))
        syncedWrites.store(written, ordering: .relaxed)
        if wasSealed { MappedSegments.shared.add(self) }
    }

    /// The segment stops being active: a final time index entry records its max timestamp, the
    /// indexes are trimmed and synced, the log is cut to its logical size and mapped read-only.
    /// The log's own data sync is left to the flusher (group commit covers it).
    func seal() throws(LogError) {
        guard isActive else { return }
        let s = try storage()
        if indexing.maxTimestamp >= 0 || size > 0 {
            // The final entry (the segment's max timestamp) needs a slot only when it is new.
            if s.timeIndex.lastEntry.map({ indexing.maxTimestamp > $0.timestamp }) ?? true {
                try s.timeIndex.file.reserveRoom(forEntries: s.timeIndex.file.entryCount + 1)
            }
            s.timeIndex.maybeAppend(timestamp: indexing.maxTimestamp, offset: indexing.offsetOfMaxTimestamp, final: true)
        }
        try s.offsetIndex.file.seal()
        try s.timeIndex.file.seal()
        if reserved != size {
            try FileIO.truncate(fd: s.fd, to: size, path: logPath)
            writes.wrappingAdd(1, ordering: .releasing)
        }
        s.mapping.makeReadOnly()
        capacity = size
        reserved = size
        isActive = false
        sealed.store(true, ordering: .releasing)
    }

    /// Clean close of the active segment: seal plus a data sync, so the files on disk are exactly
    /// what a clean-shutdown load trusts.
    func closeCleanly() throws(LogError) {
        if isActive { try seal() }
        try flush()
    }

    // MARK: Reads (any thread)

    /// Largest timestamp in the segment (loads a closed segment's time index if needed).
    func largestTimestamp() throws(LogError) -> Int64 {
        let known = publishedMaxTimestamp.load(ordering: .acquiring)
        if known != Int64.min { return known }
        if isCold { return try coldSegment().largestTimestamp }
        _ = try storage()
        return publishedMaxTimestamp.load(ordering: .acquiring)
    }

    /// Position of the first batch whose last offset is >= `offset`, walking headers from the
    /// index floor. Returns nil when the segment has no such batch.
    func position(ofOffset offset: Int64, storage s: Storage, limit: Int) throws(LogError) -> Int? {
        let bytes = s.mapping.bytes(0..<limit)
        var (indexedOffset, position) = s.offsetIndex.lookup(offset)
        // Pair check: the indexed position must hold the batch the entry names. If it does not,
        // the index is damaged; fall back to a walk from the start (and rebuild on next load).
        if position > 0 {
            if position + RecordBatch.headerSize > limit
                || RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: bytes[position..<position + RecordBatch.headerSize])).baseOffset != indexedOffset
            {
                position = 0
            }
        }
        while position < limit {
            guard let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: bytes[position...])),
                  position + size <= limit
            else {
                throw LogError.corrupt(path: logPath, reason: "invalid batch header at position \(position)")
            }
            let batch = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: bytes[position..<position + size]))
            if batch.lastOffset >= offset { return position }
            position += size
        }
        return nil
    }

    /// Whole batches starting with the one that holds `offset`, up to `maxBytes` (at least one
    /// batch, so a batch larger than `maxBytes` is still returned, as KIP-74).
    /// Whole batches from `offset`, at most `maxBytes` (at least one batch), none at or past
    /// `endOffset`: the partition's published log end, read by the caller before this. The
    /// segment publishes a batch a moment before the partition moves its end past it, and a
    /// reader must never return records beyond the high watermark it reports (a consumer would
    /// then ask for an offset the broker calls out of range).
    func read(from offset: Int64, maxBytes: Int, endOffset: Int64 = .max, coldCompression: CompressionCodec = .none) throws(LogError) -> SegmentSlice? {
        if isCold { return try readCold(from: offset, maxBytes: maxBytes, endOffset: endOffset, compression: coldCompression) }
        let s = try storage()
        let limit = size
        guard let start = try position(ofOffset: offset, storage: s, limit: limit) else { return nil }
        let bytes = s.mapping.bytes(0..<limit)
        var end = start
        var next = offset
        while end < limit {
            guard let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: bytes[end...])), end + size <= limit else { break }
            if end > start && end + size - start > maxBytes { break }
            let batch = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: bytes[end..<end + size]))
            if batch.baseOffset >= endOffset { break }
            next = batch.nextOffset
            end += size
        }
        return SegmentSlice(segment: self, owner: s.mapping, range: start..<end, nextOffset: next)
    }

    /// `read` for a cold segment: whole batches from the block holding `offset` (or the first
    /// after it), within that one block. A fetch may get less than `maxBytes` at a block's end,
    /// as at a segment's; the consumer's next fetch continues in the next block.
    /// Cold only: a reader at `offset` in the segment before this one is within read-ahead
    /// distance of that segment's end (`previous`'s blocks after the one holding `offset` are
    /// fewer than `ColdReadAhead.depth`): this segment's first blocks are queued for decoding, so
    /// the reader does not stop at every segment boundary for a block nobody read ahead.
    func readAheadColdStart(afterReaderAt offset: Int64, in previous: LogSegment, compression: CompressionCodec) {
        guard isCold, previous.isCold, let before = try? previous.coldSegment(), let b = before.block(from: offset),
              before.blockCount - 1 - b < ColdReadAhead.depth, let cold = try? coldSegment() else { return }
        cold.readAhead(after: -1, compression: compression)
    }

    private func readCold(from offset: Int64, maxBytes: Int, endOffset: Int64, compression: CompressionCodec) throws(LogError) -> SegmentSlice? {
        let cold = try coldSegment()
        guard var b = cold.block(from: offset) else { return nil }
        while b < cold.blockCount {
            let block = try cold.materialize(block: b, compression: compression)
            let bytes = block.bytes
            var position = 0
            var start: Int?
            var next = offset
            while position < bytes.count {
                // Batches this process encoded a moment ago: their sizes are trusted, but still
                // bounded by the buffer.
                guard let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: bytes[position...])),
                      position + size <= bytes.count else {
                    throw LogError.corrupt(path: coldPath, reason: "block \(b) re-encoded to an invalid batch at \(position)")
                }
                let batch = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: bytes[position..<position + size]))
                if start == nil {
                    if batch.lastOffset < offset {
                        position += size
                        continue
                    }
                    start = position
                }
                if position > start! && position + size - start! > maxBytes { break }
                if batch.baseOffset >= endOffset { break }
                next = batch.nextOffset
                position += size
            }
            if let start {
                return position > start ? SegmentSlice(segment: self, owner: block.mapping, range: start..<position, nextOffset: next) : nil
            }
            b += 1
        }
        return nil
    }

    /// First offset whose record timestamp is >= `timestamp`, or nil if none in this segment.
    func offset(forTimestamp timestamp: Int64) throws(LogError) -> Int64? {
        try record(forTimestamp: timestamp)?.offset
    }

    /// The first record whose timestamp is >= `timestamp`: offset and timestamp.
    func record(forTimestamp timestamp: Int64) throws(LogError) -> (offset: Int64, timestamp: Int64)? {
        if isCold { return try coldRecord(forTimestamp: timestamp) }
        let s = try storage()
        let limit = size
        let startOffset = s.timeIndex.lookup(timestamp).offset
        guard var position = try position(ofOffset: startOffset, storage: s, limit: limit) else { return nil }
        let bytes = s.mapping.bytes(0..<limit)
        while position < limit {
            guard let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: bytes[position...])), position + size <= limit else { break }
            let batch = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: bytes[position..<position + size]))
            if batch.maxTimestamp >= timestamp {
                do throws(RecordBatchError) {
                    if let found = try batch.firstRecord(atOrAfter: timestamp) { return found }
                } catch {
                    throw LogError.corrupt(path: logPath, reason: "batch at \(position): \(error)")
                }
            }
            position += size
        }
        return nil
    }

    /// `record(forTimestamp:)` for a cold segment: blocks are skipped by their largest timestamp.
    private func coldRecord(forTimestamp timestamp: Int64) throws(LogError) -> (offset: Int64, timestamp: Int64)? {
        let cold = try coldSegment()
        for (i, entry) in cold.file.blocks.enumerated() where entry.maxTimestamp >= timestamp {
            let block = try cold.materialize(block: i, compression: .none)
            var found: (offset: Int64, timestamp: Int64)?
            do {
                try PartitionLog.forEachBatch(block.bytes) { batch in
                    guard found == nil, batch.maxTimestamp >= timestamp else { return }
                    found = try batch.firstRecord(atOrAfter: timestamp)
                }
            } catch {
                throw LogError.corrupt(path: coldPath, reason: "block \(i): \(error)")
            }
            if let found { return found }
        }
        return nil
    }

    // MARK: Deletion

    /// The time retention compares with `retention.ms`: the largest record timestamp, but never
    /// later than the segment file's last modification. A producer clock in the future therefore
    /// cannot pin a segment forever (the rule Kafka adopted in KAFKA-20609); a segment whose
    /// records all claim the future expires `retention.ms` after it was last written.
    func retentionTimestamp() throws(LogError) -> Int64 {
        // A cold file whose header cannot be read still ages (by its modification time, which
        // is the hot segment's): a damaged segment must not keep retention from the partition.
        let largest = isCold ? ((try? largestTimestamp()) ?? -1) : try largestTimestamp()
        var st = stat()
        guard stat(dataPath, &st) == 0 else { return largest }
        let mtimeMs = Int64(st.st_mtim.tv_sec) * 1000 + Int64(st.st_mtim.tv_nsec) / 1_000_000
        // No record timestamp (-1, or none below zero that could be real): the file's age.
        return largest >= 0 ? min(largest, mtimeMs) : mtimeMs
    }

    /// Renames the files to `.deleted` (hidden from the next load) and unlinks them when the last
    /// reference — the partition's or a reader's slice — goes away.
    func markDeleted() throws(LogError) {
        for path in ownPaths where FileIO.exists(path) {
            try FileIO.rename(path, path + SegmentName.deletedSuffix)
        }
        deleted.store(true, ordering: .releasing)
        if isCold, let cold = coldFile.withLock({ $0 }) { ColdBlockCache.shared.drop(segment: cold.cacheID) }
    }

    /// Removes the files now (used at load, before any reader exists).
    func deleteFilesNow() {
        for path in ownPaths { try? FileIO.unlink(path) }
    }
}

/// A zero-copy view of whole batches inside a segment's mapping (or a cold block decoded into
/// private memory). Holding it keeps that memory alive; the bytes are valid exactly as long as
/// the slice.
/// `@unchecked Sendable`: immutable; it retains the segment and the mapping whose bytes it
/// views, and those bytes (below a published end) never change while a slice exists.
public struct SegmentSlice: @unchecked Sendable {
    let segment: LogSegment
    let owner: Mapping
    public let range: Range<Int>
    /// Offset after the last batch in the slice.
    public let nextOffset: Int64

    public var segmentBaseOffset: Int64 { segment.baseOffset }
    public var count: Int { range.count }

    /// The raw batch bytes. Valid while `self` is alive (use inside `withExtendedLifetime` when
    /// the slice is not used afterwards).
    public var bytes: UnsafeRawBufferPointer { owner.bytes(range) }

    /// Calls `body` for each batch in the slice.
    public func forEachBatch(_ body: (RecordBatch) throws -> Void) rethrows {
        try withExtendedLifetime(self) {
            let all = bytes
            var position = 0
            while position < all.count {
                guard let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: all[position...])),
                      position + size <= all.count else { return }
                try body(RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: all[position..<position + size])))
                position += size
            }
        }
    }
}
