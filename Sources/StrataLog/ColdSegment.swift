#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A cold segment of a partition: `<base>.cold` (docs/format.md "Cold segments"), the batches of
/// a closed segment rewritten as shapes and typed token columns. The file is mapped read-only
/// and its header and block directory checked when opened; a block is decoded (and its CRC
/// checked) only when a read reaches it, re-encoded into RecordBatch v2 bytes in private memory
/// (`MaterializedBlock`), and kept in the process-wide `ColdBlockCache`.
///
/// Offsets, timestamps, keys, headers, producer fields and value bytes are exactly those of the
/// batches it was made of; only a batch's compression (and so its CRC) may differ.
final class ColdSegment: Sendable {
    let path: String
    let baseOffset: Int64
    let file: ColdSegmentFile
    private let mapping: Mapping
    /// Identifies this opening in the block cache (object identities are reused after free).
    let cacheID: UInt64
    private static let nextCacheID = Atomic<UInt64>(1)

    var nextOffset: Int64 { file.nextOffset }
    var largestTimestamp: Int64 { file.largestTimestamp }
    /// Bytes of the hot segment it replaced.
    var hotBytes: Int { file.hotBytes }
    var fileBytes: Int { mapping.length }
    var blockCount: Int { file.blocks.count }

    private init(path: String, baseOffset: Int64, file: ColdSegmentFile, mapping: Mapping) {
        self.path = path
        self.baseOffset = baseOffset
        self.file = file
        self.mapping = mapping
        self.cacheID = Self.nextCacheID.wrappingAdd(1, ordering: .relaxed).oldValue
    }

    /// Opens and checks `path` (header CRC, directory order; see `sanityCheck`).
    static func open(path: String, baseOffset: Int64) throws(LogError) -> ColdSegment {
        let fd = try FileIO.open(path, flags: O_RDONLY)
        defer { close(fd) }
        let size = try FileIO.fileSize(fd: fd, path: path)
        let mapping = try Mapping(fd: fd, length: size, writable: false, path: path)
        let file: ColdSegmentFile
        do throws(ColdFormatError) {
            file = try ColdSegmentFile(parsing: mapping.bytes(0..<size))
        } catch {
            throw LogError.corrupt(path: path, reason: error.description)
        }
        let segment = ColdSegment(path: path, baseOffset: baseOffset, file: file, mapping: mapping)
        if let why = segment.sanityCheck() { throw LogError.corrupt(path: path, reason: why) }
        return segment
    }

    /// The directory must describe the segment its name says, its blocks in offset order without
    /// overlap, each non-empty: what `block(from:)` and every read rely on. The header's CRC was
    /// checked by the parse; block CRCs are checked as blocks are decoded.
    func sanityCheck() -> String? {
        guard file.baseOffset == baseOffset else { return "base offset \(file.baseOffset) in a file named for \(baseOffset)" }
        guard file.nextOffset >= baseOffset else { return "next offset \(file.nextOffset) below the base \(baseOffset)" }
        var previousNext = baseOffset
        for (i, block) in file.blocks.enumerated() {
            guard block.firstOffset >= previousNext, block.nextOffset > block.firstOffset else {
                return "block \(i) covers [\(block.firstOffset), \(block.nextOffset)) after \(previousNext)"
            }
            previousNext = block.nextOffset
        }
        guard previousNext <= file.nextOffset else { return "blocks end at \(previousNext), past the next offset \(file.nextOffset)" }
        return nil
    }

    /// The first block holding an offset at or after `offset` (blocks end where their last batch
    /// ends, so an offset in a gap left by compaction belongs to the next block).
    func block(from offset: Int64) -> Int? {
        var lo = 0
        var hi = file.blocks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if file.blocks[mid].nextOffset <= offset { lo = mid + 1 } else { hi = mid }
        }
        return lo < file.blocks.count ? lo : nil
    }

    /// Block `i` as RecordBatch v2 bytes compressed with `compression` (none or zstd), from the
    /// cache when another reader decoded it recently.
    func materialize(block i: Int, compression: CompressionCodec) throws(LogError) -> MaterializedBlock {
        let key = ColdBlockCache.Key(segment: cacheID, block: i, compression: compression.rawValue)
        if let cached = ColdBlockCache.shared.lookup(key) { return cached }
        let block = try decode(block: i, compression: compression)
        ColdBlockCache.shared.insert(key, block)
        return block
    }

    /// Block `i` decoded (CRC checked); it must hold exactly the offsets its directory entry
    /// says: readers trust those.
    func flatBlock(_ i: Int) throws(LogError) -> ColdFlatBlock {
        let entry = file.blocks[i]
        let block: ColdFlatBlock
        do {
            let bytes = UnsafeRawBufferPointer(rebasing: mapping.bytes(0..<mapping.length)[entry.fileOffset..<(entry.fileOffset + entry.length)])
            guard ColdSegmentFile.crc32c(bytes) == entry.crc else { throw ColdFormatError("block \(i) CRC mismatch") }
            block = try ColdBlock.decodeFlat(bytes)
        } catch {
            throw LogError.corrupt(path: path, reason: "block \(i) at file offset \(entry.fileOffset): \(error)")
        }
        // Each batch inside [firstOffset, nextOffset), in order, its last offset computed without
        // wrapping: readers do offset arithmetic on these that traps on overflow.
        var expected = entry.firstOffset
        var ordered = block.batches.first?.baseOffset == entry.firstOffset
        for b in block.batches where ordered {
            let (last, overflow) = b.baseOffset.addingReportingOverflow(Int64(b.lastOffsetDelta))
            ordered = b.lastOffsetDelta >= 0 && !overflow && b.baseOffset >= expected && last < entry.nextOffset
            expected = last &+ 1
        }
        guard ordered, expected == entry.nextOffset else {
            throw LogError.corrupt(path: path, reason: "block \(i) does not hold offsets [\(entry.firstOffset), \(entry.nextOffset)) in order")
        }
        return block
    }

    /// `compression` nil: each batch's original codec.
    private func decode(block i: Int, compression: CompressionCodec?) throws(LogError) -> MaterializedBlock {
        let entry = file.blocks[i]
        let flat = try flatBlock(i)
        var encoded: [[UInt8]] = []
        encoded.reserveCapacity(flat.batches.count)
        do {
            for (b, batch) in flat.batches.enumerated() {
                let codec = compression ?? CompressionCodec(rawValue: batch.attributes & 0x7) ?? .none
                encoded.append(try flat.recordBatch(b, compression: codec))
            }
        } catch {
            throw LogError.corrupt(path: path, reason: "block \(i) at file offset \(entry.fileOffset): \(error)")
        }
        let total = encoded.reduce(0) { $0 + $1.count }
        let memory = try Mapping(anonymousLength: total)
        var at = 0
        for bytes in encoded {
            bytes.withUnsafeBytes { memory.mutableBytes(at..<at + bytes.count).copyMemory(from: $0) }
            at += bytes.count
        }
        return MaterializedBlock(mapping: memory, length: total, firstOffset: entry.firstOffset, nextOffset: entry.nextOffset)
    }

    /// Every batch of the segment in one private buffer (the cleaner and `strata inspect
    /// --verify` walk whole segments), each compressed with the codec it arrived with, so a
    /// compaction of cold segments writes what compacting the hot ones would. Not cached.
    func materializeAll() throws(LogError) -> MaterializedBlock {
        var parts: [MaterializedBlock] = []
        for i in 0..<file.blocks.count { parts.append(try decode(block: i, compression: nil)) }
        let total = parts.reduce(0) { $0 + $1.length }
        let memory = try Mapping(anonymousLength: total)
        var at = 0
        for p in parts {
            memory.mutableBytes(at..<at + p.length).copyMemory(from: p.bytes)
            at += p.length
        }
        return MaterializedBlock(mapping: memory, length: total, firstOffset: baseOffset, nextOffset: nextOffset)
    }
}

/// A cold block (or a whole cold segment) re-encoded as RecordBatch v2 bytes, in private memory
/// that lives as long as the last slice viewing it.
final class MaterializedBlock: Sendable {
    let mapping: Mapping
    let length: Int
    let firstOffset: Int64
    let nextOffset: Int64

    init(mapping: Mapping, length: Int, firstOffset: Int64, nextOffset: Int64) {
        self.mapping = mapping
        self.length = length
        self.firstOffset = firstOffset
        self.nextOffset = nextOffset
    }

    var bytes: UnsafeRawBufferPointer { mapping.bytes(0..<length) }
}

/// The process-wide budget of decoded cold blocks (`cold.block.cache.bytes`): consumers read
/// forward, so a block decoded for one fetch serves the next several (a block is ~8 MiB of log, a
/// fetch usually 1 MiB), and a consumer group or a replay by several readers decodes it once.
/// Least recently used blocks leave first; readers holding a slice keep their block's memory.
public final class ColdBlockCache: Sendable {
    public static let shared = ColdBlockCache()
    public static let defaultBudgetBytes = 256 << 20

    struct Key: Hashable, Sendable {
        let segment: UInt64
        let block: Int
        let compression: Int16
    }

    private struct State {
        var entries: [Key: (block: MaterializedBlock, tick: UInt64)] = [:]
        var bytes = 0
        var tick: UInt64 = 0
        var hits = 0
        var misses = 0
    }

    private let state = Mutex(State())
    private let budget = Atomic<Int>(ColdBlockCache.defaultBudgetBytes)

    init() {}

    /// Most bytes of decoded blocks kept (at least one block is always kept).
    public var budgetBytes: Int {
        get { budget.load(ordering: .relaxed) }
        set { budget.store(max(0, newValue), ordering: .relaxed) }
    }

    /// Lookups answered from the cache, and blocks decoded, since the process started.
    public var counts: (hits: Int, misses: Int, bytes: Int) { state.withLock { ($0.hits, $0.misses, $0.bytes) } }

    func lookup(_ key: Key) -> MaterializedBlock? {
        state.withLock { s in
            s.tick += 1
            guard let e = s.entries[key] else {
                s.misses += 1
                return nil
            }
            s.entries[key] = (e.block, s.tick)
            s.hits += 1
            return e.block
        }
    }

    func insert(_ key: Key, _ block: MaterializedBlock) {
        let limit = budgetBytes
        // Evicted blocks are released after the lock (their memory is unmapped in deinit).
        var evicted: [MaterializedBlock] = []
        state.withLock { s in
            s.tick += 1
            if let old = s.entries.updateValue((block, s.tick), forKey: key) { s.bytes -= old.block.length }
            s.bytes += block.length
            while s.bytes > limit, s.entries.count > 1 {
                guard let victim = s.entries.min(by: { $0.value.tick < $1.value.tick }), victim.key != key else { break }
                s.entries[victim.key] = nil
                s.bytes -= victim.value.block.length
                evicted.append(victim.value.block)
            }
        }
        evicted.removeAll()
    }

    /// Drops every block of one cold segment (it was deleted or replaced).
    func drop(segment id: UInt64) {
        var dropped: [MaterializedBlock] = []
        state.withLock { s in
            for (key, e) in s.entries where key.segment == id {
                s.entries[key] = nil
                s.bytes -= e.block.length
                dropped.append(e.block)
            }
        }
        dropped.removeAll()
    }
}

/// One block of a cold segment, for readers that want its records rather than batches (the
/// query engine decodes blocks on its own threads, skipping the RecordBatch re-encoding).
public struct ColdBlockHandle: Sendable {
    let segment: ColdSegment
    public let segmentBaseOffset: Int64
    public let blockIndex: Int
    public let firstOffset: Int64
    public let nextOffset: Int64
    /// Bytes of the block in the cold file.
    public let storedBytes: Int

    /// The block's batches and records, exactly as they were in the log.
    public func batches() throws(LogError) -> [ColdBatch] { try segment.flatBlock(blockIndex).coldBatches() }

    /// The same, in one buffer.
    public func flat() throws(LogError) -> ColdFlatBlock { try segment.flatBlock(blockIndex) }
}
