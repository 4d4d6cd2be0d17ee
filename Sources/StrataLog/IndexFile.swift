#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The file and mapping behind a sparse index (offset or time). Fixed-size entries, no header,
/// no checksum: an index is a cache of its `.log` and is rebuilt whenever it is missing or fails
/// its sanity check (as in Kafka).
///
/// The active segment's index is mapped writable for `maxBytes` while its file grows by
/// fallocate in steps (doubling from 4 KiB up to 1 MiB) just ahead of the entries, so an idle
/// segment's index takes no blocks; on roll or close it is trimmed to its entries. Entries are
/// published to readers through `entryCount` (release/acquire), and written entries never
/// change, so lookups take no lock.
/// `@unchecked Sendable`: one writer (under its partition's writer lock) appends entries and then
/// publishes `entryCount` with release; readers load it with acquire and read only entries below
/// it, which never change again.
final class IndexFile: @unchecked Sendable {
    let path: String
    let entrySize: Int
    let maxEntries: Int
    private let mapping: Mapping
    /// Whether this is an active segment's index (grown, trimmed and synced by its writer). It
    /// holds no descriptor: the mapping keeps the file, and the rare growth step or seal opens
    /// the path for the moment it needs one, so a partition costs one descriptor (its log).
    private var isWritable: Bool
    private let count: Atomic<Int>
    /// Entries the file has blocks for (writer only): appends stay below it.
    private var reservedEntries: Int
    /// The file differs from what was last synced (entries appended, grown, cut): the seal must
    /// trim and sync it. Writer only.
    private var changed = false

    var entryCount: Int { count.load(ordering: .acquiring) }
    var isFull: Bool { entryCount >= maxEntries }
    var sizeInBytes: Int { entryCount * entrySize }

    private init(path: String, entrySize: Int, maxEntries: Int, mapping: Mapping, writable: Bool, entryCount: Int, reservedEntries: Int) {
        self.path = path
        self.entrySize = entrySize
        self.maxEntries = maxEntries
        self.mapping = mapping
        self.isWritable = writable
        self.count = Atomic(entryCount)
        self.reservedEntries = reservedEntries
    }

    static let minimumReserveStep = 4096
    static let maximumReserveStep = 1 << 20

    /// Whether one more entry has room reserved.
    var canAppend: Bool { entryCount < min(reservedEntries, maxEntries) }

    /// Makes sure the file has blocks for `entries` entries (capped at `maxEntries`), growing it
    /// by one step. Writer only.
    func reserveRoom(forEntries entries: Int) throws(LogError) {
        let wanted = min(entries, maxEntries)
        guard wanted > reservedEntries, isWritable else { return }
        let fd = try FileIO.open(path, flags: O_RDWR)
        defer { close(fd) }
        changed = true
        reservedEntries = try Self.grow(fd: fd, path: path, entrySize: entrySize, maxEntries: maxEntries,
                                        from: reservedEntries, to: wanted)
    }

    /// Reserves from `from` entries to at least `to`: one step past the current size, doubling
    /// from 4 KiB to 1 MiB, in whole pages, never past `maxEntries`. Returns the entries reserved.
    private static func grow(fd: Int32, path: String, entrySize: Int, maxEntries: Int, from: Int, to: Int) throws(LogError) -> Int {
        let current = from * entrySize
        let step = min(max(current, minimumReserveStep), maximumReserveStep)
        let page = 4096
        let target = min(maxEntries * entrySize, (max(to * entrySize, current + step) + page - 1) / page * page)
        try FileIO.reserve(fd: fd, from: current, bytes: target - current, path: path)
        return target / entrySize
    }

    /// Opens (creating if needed) an index for appending. `validEntries` entries at the start of
    /// the file are kept; everything after them is cut, so stale bytes can never be mistaken for
    /// entries. Nothing is reserved here: the first append's `reserveRoom` grows the file, so
    /// reopening an idle partition changes none of its files (and its close syncs none), and a
    /// full disk is an error of the append that needs space. The mapping covers `maxBytes`, of
    /// which only the reserved part is ever touched. `synced`: the entries on disk are durable
    /// (false for an index just rewritten by recovery, which the seal then syncs).
    static func openWritable(path: String, entrySize: Int, maxBytes: Int, validEntries: Int, synced: Bool = true) throws(LogError) -> IndexFile {
        // A rebuilt index may hold more entries than the configured size allows (the setting was
        // lowered since it was written); keep room for them, plus the time index's seal slot.
        let maxEntries = max(maxBytes / entrySize, validEntries + 2)
        let fd = try FileIO.open(path, flags: O_RDWR | O_CREAT)
        defer { close(fd) }
        let size = try FileIO.fileSize(fd: fd, path: path)
        var changed = !synced
        if size != validEntries * entrySize {
            try FileIO.truncate(fd: fd, to: validEntries * entrySize, path: path)
            changed = true
        }
        let mapping = try Mapping(fd: fd, length: maxEntries * entrySize, writable: true, path: path)
        let file = IndexFile(path: path, entrySize: entrySize, maxEntries: maxEntries, mapping: mapping, writable: true,
                             entryCount: validEntries, reservedEntries: validEntries)
        file.changed = changed
        return file
    }

    /// Maps a trimmed index read-only. Fails with `.corrupt` when the size is not a whole number of entries.
    static func openReadOnly(path: String, entrySize: Int) throws(LogError) -> IndexFile {
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { close(fd) }
        let size = try FileIO.fileSize(fd: fd, path: path)
        guard size % entrySize == 0 else {
            throw LogError.corrupt(path: path, reason: "size \(size) is not a multiple of the entry size \(entrySize)")
        }
        let mapping = try Mapping(fd: fd, length: size, writable: false, path: path)
        return IndexFile(path: path, entrySize: entrySize, maxEntries: size / entrySize, mapping: mapping, writable: false,
                         entryCount: size / entrySize, reservedEntries: size / entrySize)
    }

    /// An index held in private memory, never written to disk: what a read-only opener uses when
    /// an index file is missing, damaged, or still being written by another process.
    static func inMemory(entrySize: Int, maxBytes: Int, entries: [UInt8]) throws(LogError) -> IndexFile {
        let count = entries.count / entrySize
        let maxEntries = max(maxBytes / entrySize, count + 2)
        let mapping = try Mapping(anonymousLength: maxEntries * entrySize)
        if !entries.isEmpty {
            entries.withUnsafeBytes { mapping.mutableBytes(0..<entries.count).copyMemory(from: $0) }
        }
        return IndexFile(path: "(memory)", entrySize: entrySize, maxEntries: maxEntries, mapping: mapping, writable: false,
                         entryCount: count, reservedEntries: maxEntries)
    }

    /// Whether the file at `path` exists and its first bytes are `entries`.
    static func begins(path: String, with entries: [UInt8]) -> Bool {
        guard let fd = try? FileIO.open(path, flags: O_RDONLY) else { return false }
        defer { close(fd) }
        guard !entries.isEmpty else { return true }
        var existing = [UInt8](repeating: 0, count: entries.count)
        let n = existing.withUnsafeMutableBytes { p in (try? FileIO.read(fd: fd, into: p, at: 0, path: path)) ?? -1 }
        return n == entries.count && existing == entries
    }

    /// Writes a complete index file (used by rebuilds), replacing any previous one atomically.
    static func writeFile(path: String, entries: [UInt8]) throws(LogError) {
        let tmp = path + ".tmp"
        let fd = try FileIO.open(tmp, flags: O_RDWR | O_CREAT | O_TRUNC)
        defer { close(fd) }
        try FileIO.writeAll(fd: fd, array: entries, at: 0, path: tmp)
        try FileIO.rename(tmp, path)
    }

    @inline(__always)
    func entry(_ i: Int) -> UnsafeRawBufferPointer {
        mapping.bytes(i * entrySize..<(i + 1) * entrySize)
    }

    /// Appends one entry; single writer only.
    func append(_ fill: (UnsafeMutableRawBufferPointer) -> Void) {
        let n = count.load(ordering: .relaxed)
        precondition(n < maxEntries && n < reservedEntries, "append to a full index or past its reserved blocks: \(path)")
        fill(mapping.mutableBytes(n * entrySize..<(n + 1) * entrySize))
        changed = true
        count.store(n + 1, ordering: .releasing)
    }

    /// Largest i in 0..<n with key(i) <= target, or nil.
    @inline(__always)
    func floorIndex<K: Comparable>(_ target: K, key: (Int) -> K) -> Int? {
        var lo = 0
        var hi = entryCount - 1
        guard hi >= 0, key(0) <= target else { return nil }
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if key(mid) <= target { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    func sync() throws(LogError) {
        guard isWritable else { return }
        try mapping.sync(0..<sizeInBytes, path: path)
    }

    /// Cuts the file to its entries and drops write access: the segment is no longer active.
    func seal() throws(LogError) {
        guard isWritable else { return }
        guard changed else {
            // Untouched since it was opened (an idle partition): nothing to trim or sync.
            mapping.makeReadOnly()
            isWritable = false
            return
        }
        try mapping.sync(0..<sizeInBytes, path: path)
        let fd = try FileIO.open(path, flags: O_RDWR)
        defer { close(fd) }
        try FileIO.truncate(fd: fd, to: sizeInBytes, path: path)
        try FileIO.datasync(fd: fd, path: path)
        mapping.makeReadOnly()
        isWritable = false
    }
}

/// Sparse map from offset to file position in a segment's `.log`. Entry: relative offset u32,
/// position u32, big-endian (Kafka's layout). An entry points at the start of a batch whose
/// baseOffset is `segmentBase + relativeOffset`.
/// `@unchecked Sendable`: a `let` IndexFile and base offset (see IndexFile).
final class OffsetIndex: @unchecked Sendable {
    static let entrySize = 8
    let baseOffset: Int64
    let file: IndexFile

    init(baseOffset: Int64, file: IndexFile) {
        self.baseOffset = baseOffset
        self.file = file
    }

    var entryCount: Int { file.entryCount }
    var isFull: Bool { file.isFull }

    func entry(_ i: Int) -> (offset: Int64, position: Int) {
        let e = file.entry(i)
        let rel = UInt32(bigEndian: e.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        let pos = UInt32(bigEndian: e.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        return (baseOffset + Int64(rel), Int(pos))
    }

    func append(offset: Int64, position: Int) {
        precondition(offset >= baseOffset && offset - baseOffset <= Int64(UInt32.max) && position <= Int(UInt32.max))
        if entryCount > 0 {
            let last = entry(entryCount - 1)
            precondition(offset > last.offset && position > last.position, "offset index entries must increase")
        }
        file.append { p in
            p.storeBytes(of: UInt32(offset - baseOffset).bigEndian, toByteOffset: 0, as: UInt32.self)
            p.storeBytes(of: UInt32(position).bigEndian, toByteOffset: 4, as: UInt32.self)
        }
    }

    /// Greatest entry with offset <= target; (baseOffset, 0) when there is none.
    func lookup(_ target: Int64) -> (offset: Int64, position: Int) {
        guard let i = file.floorIndex(target, key: { entry($0).offset }) else { return (baseOffset, 0) }
        return entry(i)
    }

    /// Kafka's sanity check plus monotonicity: a failure means "rebuild from the log".
    func sanityCheck(logSize: Int) -> String? {
        var previous: (offset: Int64, position: Int)? = nil
        for i in 0..<entryCount {
            let e = entry(i)
            if e.position >= max(logSize, 1) { return "entry \(i) points at position \(e.position) beyond log size \(logSize)" }
            if let p = previous, e.offset <= p.offset || e.position <= p.position { return "entry \(i) does not increase" }
            previous = e
        }
        return nil
    }

    static func encode(_ entries: [(offset: Int64, position: Int)], baseOffset: Int64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: entries.count * entrySize)
        out.withUnsafeMutableBytes { p in
            for (i, e) in entries.enumerated() {
                p.storeBytes(of: UInt32(e.offset - baseOffset).bigEndian, toByteOffset: i * entrySize, as: UInt32.self)
                p.storeBytes(of: UInt32(e.position).bigEndian, toByteOffset: i * entrySize + 4, as: UInt32.self)
            }
        }
        return out
    }
}

/// Sparse map from timestamp to offset. Entry: timestamp i64, relative offset u32, big-endian.
/// An entry (T, O) means every record before offset O has a timestamp below T. Timestamps are
/// kept strictly increasing, so the last entry holds the segment's largest timestamp once the
/// segment is sealed (the roll appends a final entry).
/// `@unchecked Sendable`: a `let` IndexFile and base offset (see IndexFile).
final class TimeIndex: @unchecked Sendable {
    static let entrySize = 12
    let baseOffset: Int64
    let file: IndexFile

    init(baseOffset: Int64, file: IndexFile) {
        self.baseOffset = baseOffset
        self.file = file
    }

    var entryCount: Int { file.entryCount }
    /// The last slot is reserved for the entry a seal adds (as Kafka's TimeIndex does), so a
    /// sealed index always ends with the segment's max timestamp.
    var isFull: Bool { entryCount >= file.maxEntries - 1 }

    func entry(_ i: Int) -> (timestamp: Int64, offset: Int64) {
        let e = file.entry(i)
        let ts = Int64(bigEndian: e.loadUnaligned(fromByteOffset: 0, as: Int64.self))
        let rel = UInt32(bigEndian: e.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        return (ts, baseOffset + Int64(rel))
    }

    var lastEntry: (timestamp: Int64, offset: Int64)? { entryCount > 0 ? entry(entryCount - 1) : nil }

    /// Appends when `timestamp` is above the last entry's (keeps the index monotonic). Only the
    /// seal (`final`) may take the reserved last slot.
    func maybeAppend(timestamp: Int64, offset: Int64, final: Bool = false) {
        if let last = lastEntry {
            guard timestamp > last.timestamp else { return }
            precondition(offset >= last.offset, "time index offsets must not decrease")
        }
        guard final ? !file.isFull : !isFull, file.canAppend else { return }
        file.append { p in
            p.storeBytes(of: timestamp.bigEndian, toByteOffset: 0, as: Int64.self)
            p.storeBytes(of: UInt32(offset - baseOffset).bigEndian, toByteOffset: 8, as: UInt32.self)
        }
    }

    /// Greatest entry with timestamp <= target; (-1, baseOffset) when there is none.
    func lookup(_ target: Int64) -> (timestamp: Int64, offset: Int64) {
        guard let i = file.floorIndex(target, key: { entry($0).timestamp }) else { return (-1, baseOffset) }
        return entry(i)
    }

    func sanityCheck(nextOffset: Int64) -> String? {
        var previous: (timestamp: Int64, offset: Int64)? = nil
        for i in 0..<entryCount {
            let e = entry(i)
            if e.offset >= max(nextOffset, baseOffset + 1) { return "entry \(i) offset \(e.offset) beyond the log end \(nextOffset)" }
            if let p = previous, e.timestamp <= p.timestamp || e.offset < p.offset { return "entry \(i) is not monotonic" }
            previous = e
        }
        return nil
    }

    static func encode(_ entries: [(timestamp: Int64, offset: Int64)], baseOffset: Int64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: entries.count * entrySize)
        out.withUnsafeMutableBytes { p in
            for (i, e) in entries.enumerated() {
                p.storeBytes(of: e.timestamp.bigEndian, toByteOffset: i * entrySize, as: Int64.self)
                p.storeBytes(of: UInt32(e.offset - baseOffset).bigEndian, toByteOffset: i * entrySize + 8, as: UInt32.self)
            }
        }
        return out
    }
}
