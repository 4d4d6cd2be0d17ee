#if canImport(Glibc)
import Glibc
#endif
import StrataCore
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
    /// cache when another reader (or the read-ahead) decoded it. A block being decoded is waited
    /// for, not decoded twice. Then the next block is decoded ahead on the read-ahead thread:
    /// readers move forward, and decoding on the second core while this block is sent keeps a
    /// consumer of cold data near the speed of hot data.
    func materialize(block i: Int, compression: CompressionCodec) throws(LogError) -> MaterializedBlock {
        let cache = ColdBlockCache.shared
        let key = ColdBlockCache.Key(segment: cacheID, block: i, compression: compression.rawValue)
        if let cached = cache.lookupOrClaim(key) {
            readAhead(after: i, compression: compression)
            return cached
        }
        let block: MaterializedBlock
        do throws(LogError) {
            block = try decode(block: i, compression: compression)
        } catch {
            cache.abandon(key)
            throw error
        }
        cache.insert(key, block)
        readAhead(after: i, compression: compression)
        return block
    }

    /// Queues the decoding of the blocks after `i` (`ColdReadAhead.depth` of them) that nobody
    /// has or is decoding; `i` -1: the segment's first blocks, for a reader about to cross into
    /// it from the segment before.
    func readAhead(after i: Int, compression: CompressionCodec) {
        let cache = ColdBlockCache.shared
        for j in (i + 1)..<min(file.blocks.count, i + 1 + ColdReadAhead.depth) {
            let next = ColdBlockCache.Key(segment: cacheID, block: j, compression: compression.rawValue)
            guard cache.claimIfAbsent(next) else { continue }
            ColdReadAhead.shared.submit(next) { [self] in
                do throws(LogError) { cache.insert(next, try decode(block: j, compression: compression)) } catch { cache.abandon(next) }
            }
        }
    }

    /// Block `i`'s bytes, CRC checked, given to `decode`; any failure names the block and the file.
    private func checkedBlock<T>(_ i: Int, _ decode: (UnsafeRawBufferPointer) throws -> T) throws(LogError) -> T {
        let entry = file.blocks[i]
        do {
            let bytes = UnsafeRawBufferPointer(rebasing: mapping.bytes(0..<mapping.length)[entry.fileOffset..<(entry.fileOffset + entry.length)])
            guard ColdSegmentFile.crc32c(bytes) == entry.crc else { throw ColdFormatError("block \(i) CRC mismatch") }
            return try decode(bytes)
        } catch {
            throw LogError.corrupt(path: path, reason: "block \(i) at file offset \(entry.fileOffset): \(error)")
        }
    }

    /// Block `i` decoded (CRC checked); it must hold exactly the offsets its directory entry
    /// says: readers trust those.
    func flatBlock(_ i: Int) throws(LogError) -> ColdFlatBlock {
        let entry = file.blocks[i]
        let block = try checkedBlock(i) { try ColdBlock.decodeFlat($0) }
        try checkBatchOffsets(block.batches, block: i)
        return block
    }

    /// Each batch inside block `i`'s [firstOffset, nextOffset), in order, its last offset computed
    /// without wrapping: readers do offset arithmetic on these that traps on overflow.
    private func checkBatchOffsets(_ batches: [ColdFlatBlock.Batch], block i: Int) throws(LogError) {
        let entry = file.blocks[i]
        var expected = entry.firstOffset
        var ordered = batches.first?.baseOffset == entry.firstOffset
        for b in batches where ordered {
            let (last, overflow) = b.baseOffset.addingReportingOverflow(Int64(b.lastOffsetDelta))
            ordered = b.lastOffsetDelta >= 0 && !overflow && b.baseOffset >= expected && last < entry.nextOffset
            expected = last &+ 1
        }
        guard ordered, expected == entry.nextOffset else {
            throw LogError.corrupt(path: path, reason: "block \(i) does not hold offsets [\(entry.firstOffset), \(entry.nextOffset)) in order")
        }
    }

    /// Block `i` opened for a column scan (CRC checked; batch offsets checked as `flatBlock`
    /// does; record offsets checked inside the block's, ascending, when they are decoded).
    func columnarBlock(_ i: Int) throws(LogError) -> ColdColumnarBlock {
        let entry = file.blocks[i]
        let block = try checkedBlock(i) {
            // The streams stay views into the mapping, which the block keeps (cold files are
            // never written again: a conversion or compaction replaces them by a rename).
            try ColdColumnarBlock($0, offsets: entry.firstOffset..<entry.nextOffset, origin: "\(path): block \(i) at file offset \(entry.fileOffset)",
                                  owner: mapping)
        }
        try checkBatchOffsets(block.batches, block: i)
        return block
    }

    /// `compression` nil: each batch's original codec.
    private func decode(block i: Int, compression: CompressionCodec?) throws(LogError) -> MaterializedBlock {
        let entry = file.blocks[i]
        let flat = try flatBlock(i)
        if compression == CompressionCodec.none {
            // Uncompressed (the default for readers): sized first, then written in place.
            let sizes = flat.batches.indices.map { flat.uncompressedBatchSize($0) }
            let total = sizes.reduce(0, +)
            let memory = try Mapping(anonymousLength: total, populate: true)
            var at = 0
            for (b, size) in sizes.enumerated() {
                flat.writeUncompressedBatch(b, into: memory.mutableBytes(at..<at + size))
                at += size
            }
            return MaterializedBlock(mapping: memory, length: total, firstOffset: entry.firstOffset, nextOffset: entry.nextOffset)
        }
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
        let memory = try Mapping(anonymousLength: total, populate: true)
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
        let memory = try Mapping(anonymousLength: total, populate: true)
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
        /// Blocks some thread is decoding now: others wait for them instead of decoding again.
        var inFlight = Set<Key>()
        var bytes = 0
        var tick: UInt64 = 0
        var hits = 0
        var misses = 0
    }

    /// Guards `state` (a condition lock: readers wait for blocks in flight).
    private let lock = ConditionLock()
    /// `nonisolated(unsafe)`: read and written only under `lock`.
    nonisolated(unsafe) private var state = State()
    private let budget = Atomic<Int>(ColdBlockCache.defaultBudgetBytes)

    init() {}

    /// Most bytes of decoded blocks kept (at least one block is always kept).
    public var budgetBytes: Int {
        get { budget.load(ordering: .relaxed) }
        set { budget.store(max(0, newValue), ordering: .relaxed) }
    }

    /// Lookups answered from the cache, and blocks decoded, since the process started.
    public var counts: (hits: Int, misses: Int, bytes: Int) { lock.withLock { (state.hits, state.misses, state.bytes) } }

    /// The cached block; or, when another thread is decoding it, that block once it is done;
    /// else nil, and the caller now owns its decoding (`insert` or `abandon` it).
    func lookupOrClaim(_ key: Key) -> MaterializedBlock? {
        lock.withLock {
            while true {
                state.tick += 1
                if let e = state.entries[key] {
                    state.entries[key] = (e.block, state.tick)
                    state.hits += 1
                    return e.block
                }
                if state.inFlight.contains(key) {
                    lock.wait()
                    continue
                }
                state.misses += 1
                state.inFlight.insert(key)
                return nil
            }
        }
    }

    /// Claims a block nobody has or is decoding (the read-ahead); false otherwise.
    func claimIfAbsent(_ key: Key) -> Bool {
        lock.withLock {
            guard state.entries[key] == nil, !state.inFlight.contains(key) else { return false }
            state.inFlight.insert(key)
            return true
        }
    }

    /// A claimed block could not be decoded: waiters decode it themselves (and see the error).
    func abandon(_ key: Key) {
        lock.withLock {
            state.inFlight.remove(key)
            lock.broadcast()
        }
    }

    /// Whether the block is decoded and kept (not merely being decoded).
    func holds(_ key: Key) -> Bool { lock.withLock { state.entries[key] != nil } }

    func insert(_ key: Key, _ block: MaterializedBlock) {
        let limit = budgetBytes
        // Evicted blocks are released after the lock (their memory is unmapped in deinit).
        var evicted: [MaterializedBlock] = []
        lock.withLock {
            state.inFlight.remove(key)
            state.tick += 1
            if let old = state.entries.updateValue((block, state.tick), forKey: key) { state.bytes -= old.block.length }
            state.bytes += block.length
            while state.bytes > limit, state.entries.count > 1 {
                guard let victim = state.entries.min(by: { $0.value.tick < $1.value.tick }), victim.key != key else { break }
                state.entries[victim.key] = nil
                state.bytes -= victim.value.block.length
                evicted.append(victim.value.block)
            }
            lock.broadcast()
        }
        evicted.removeAll()
    }

    /// Drops every block of one cold segment (it was deleted or replaced).
    func drop(segment id: UInt64) {
        var dropped: [MaterializedBlock] = []
        lock.withLock {
            for (key, e) in state.entries where key.segment == id {
                state.entries[key] = nil
                state.bytes -= e.block.length
                dropped.append(e.block)
            }
        }
        dropped.removeAll()
    }
}

/// Background threads that decode cold blocks ahead of their readers (`ColdSegment.materialize`
/// submits the next `depth` blocks): decoding (~110 MB/s of log per core) is what a read of cold
/// data waits for, so two blocks are decoded at once while the current one is served. At most
/// `limit` wait: past that a request is dropped (its claim abandoned), so a burst of readers
/// never queues unbounded work or memory.
final class ColdReadAhead: @unchecked Sendable {
    static let shared = ColdReadAhead()
    static let limit = 8
    static let depth = 2
    static let threads = 2
    private let lock = ConditionLock()
    /// Read and written only under `lock` (hence `@unchecked Sendable`); the thread starts on
    /// the first submission and then waits for work forever.
    private var queue: [(key: ColdBlockCache.Key, work: @Sendable () -> Void)] = []
    private var started = false

    func submit(_ key: ColdBlockCache.Key, _ work: @escaping @Sendable () -> Void) {
        let accepted = lock.withLock { () -> Bool in
            guard queue.count < Self.limit else { return false }
            if !started {
                for _ in 0..<Self.threads {
                    guard let thread = startThread({ [self] in loop() }) else { continue }
                    pthread_detach(thread)
                    started = true
                }
                guard started else { return false }
            }
            queue.append((key, work))
            lock.broadcast()
            return true
        }
        // Not queued: the claim is given up, so a reader waiting for the block decodes it.
        if !accepted { ColdBlockCache.shared.abandon(key) }
    }

    private func loop() {
        while true {
            let work = lock.withLock { () -> @Sendable () -> Void in
                while queue.isEmpty { lock.wait() }
                return queue.removeFirst().work
            }
            work()
        }
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

    /// The block's batches and records, exactly as they were in the log, in one buffer.
    public func flat() throws(LogError) -> ColdFlatBlock { try segment.flatBlock(blockIndex) }

    /// The block opened for a column scan: no value is reassembled.
    public func columnar() throws(LogError) -> ColdColumnarBlock { try segment.columnarBlock(blockIndex) }
}
