

/// A cold segment file: the batches of one closed log segment as ColdBlocks, with a directory
/// that finds the block holding an offset or a time without decoding the others. Written once
/// (atomically) and never appended to. Integers are little-endian.
///
///     magic "STRCOLD1", version u32,
///     base offset i64, next offset i64, hot bytes u64, largest timestamp i64, block count u32,
///     per block: first offset i64, next offset i64, max timestamp i64, file offset u64, bytes u32, CRC-32C u32,
///     CRC-32C u32 of everything above, then the blocks.
public struct ColdSegmentFile: Sendable {
    public static let magic: [UInt8] = Array("STRCOLD1".utf8)
    public static let version: UInt32 = 1
    /// Log bytes per block (whole batches; a block holds at least one).
    public static let blockHotBytes = 8 << 20
    static let blockLimit = 1 << 20

    public struct BlockEntry: Sendable, Equatable {
        public let firstOffset: Int64
        public let nextOffset: Int64
        public let maxTimestamp: Int64
        public let fileOffset: Int
        public let length: Int
        public let crc: UInt32
    }

    public let baseOffset: Int64
    public let nextOffset: Int64
    public let hotBytes: Int
    public let largestTimestamp: Int64
    public let blocks: [BlockEntry]

    /// Encodes `blocks` (each a non-empty run of batches, in offset order) of a segment.
    public static func encode(blocks: [[ColdBatch]], baseOffset: Int64, nextOffset: Int64, hotBytes: Int, largestTimestamp: Int64) throws -> [UInt8] {
        var builder = Builder(baseOffset: baseOffset)
        for b in blocks { try builder.addBlock(b) }
        return builder.finish(nextOffset: nextOffset, hotBytes: hotBytes, largestTimestamp: largestTimestamp)
    }

    /// Builds a cold segment block by block (each encoded as soon as it is complete, so only
    /// one block's records are in memory).
    public struct Builder {
        let baseOffset: Int64
        private(set) var entries: [(first: Int64, next: Int64, maxTimestamp: Int64, bytes: [UInt8])] = []

        public init(baseOffset: Int64) { self.baseOffset = baseOffset }

        /// Encodes one block of batches (in offset order, after the previous block's).
        @discardableResult
        public mutating func addBlock(_ batches: [ColdBatch], stats: ((ColdBlock.StreamStats) -> Void)? = nil) throws -> [UInt8] {
            guard let first = batches.first, let last = batches.last else { return [] }
            let bytes = try ColdBlock.encode(batches, stats: stats)
            entries.append((first.baseOffset, last.baseOffset &+ Int64(last.lastOffsetDelta) &+ 1, batches.map(\.maxTimestamp).max() ?? -1, bytes))
            return bytes
        }

        public func finish(nextOffset: Int64, hotBytes: Int, largestTimestamp: Int64) -> [UInt8] {
            var w = ColdWriter()
            w.bytes.append(contentsOf: magic)
            w.fixed(version)
            w.fixed(baseOffset)
            w.fixed(nextOffset)
            w.fixed(UInt64(hotBytes))
            w.fixed(largestTimestamp)
            w.fixed(UInt32(entries.count))
            var at = w.bytes.count + entries.count * 40 + 4
            for e in entries {
                w.fixed(e.first)
                w.fixed(e.next)
                w.fixed(e.maxTimestamp)
                w.fixed(UInt64(at))
                w.fixed(UInt32(e.bytes.count))
                w.fixed(crc32c(e.bytes))
                at += e.bytes.count
            }
            w.fixed(crc32c(w.bytes))
            for e in entries { w.bytes.append(contentsOf: e.bytes) }
            return w.bytes
        }
    }

    static func crc32c(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { crc32c($0) } }
    static func crc32c(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        CRC32C.checksum(bytes)
    }

    /// Reads the header and directory of a cold segment (`file`: the whole file), checking them.
    public init(parsing file: UnsafeRawBufferPointer) throws(ColdFormatError) {
        var r = ColdReader(file)
        guard Array(try r.take(8)) == Self.magic else { throw ColdFormatError("not a cold segment") }
        let version = try r.fixed(UInt32.self)
        guard version == Self.version else { throw ColdFormatError("cold segment version \(version)") }
        baseOffset = try r.fixed(Int64.self)
        nextOffset = try r.fixed(Int64.self)
        let hot = try r.fixed(UInt64.self)
        // A segment is at most 2 GiB of log (segment.bytes): sums of these must not overflow.
        guard hot <= UInt64(1) << 40 else { throw ColdFormatError("hot size \(hot)") }
        hotBytes = Int(hot)
        largestTimestamp = try r.fixed(Int64.self)
        let count = Int(try r.fixed(UInt32.self))
        guard count <= Self.blockLimit, count * 40 + 4 <= r.remaining else { throw ColdFormatError("\(count) blocks") }
        var entries: [BlockEntry] = []
        for _ in 0..<count {
            let first = try r.fixed(Int64.self)
            let next = try r.fixed(Int64.self)
            let maxTs = try r.fixed(Int64.self)
            let at = try r.fixed(UInt64.self)
            let length = Int(try r.fixed(UInt32.self))
            let crc = try r.fixed(UInt32.self)
            guard at <= UInt64(file.count), length <= file.count - Int(at) else { throw ColdFormatError("a block past the end of the file") }
            entries.append(BlockEntry(firstOffset: first, nextOffset: next, maxTimestamp: maxTs, fileOffset: Int(at), length: length, crc: crc))
        }
        let headerCRC = Self.crc32c(UnsafeRawBufferPointer(rebasing: file[0..<r.position]))
        guard try r.fixed(UInt32.self) == headerCRC else { throw ColdFormatError("cold segment header CRC mismatch") }
        blocks = entries
    }

    /// The batches of block `i`, CRC-checked.
    public func batches(ofBlock i: Int, in file: UnsafeRawBufferPointer) throws -> [ColdBatch] {
        let e = blocks[i]
        let bytes = UnsafeRawBufferPointer(rebasing: file[e.fileOffset..<(e.fileOffset + e.length)])
        guard Self.crc32c(bytes) == e.crc else { throw ColdFormatError("block \(i) CRC mismatch") }
        return try ColdBlock.decode(bytes)
    }
}

extension ColdBatch {
    /// The batch's header fields and records (decompressed), copied out of the log.
    public init(_ batch: RecordBatch) throws {
        var records: [ColdRecord] = []
        records.reserveCapacity(Int(max(0, batch.recordCount)))
        try batch.forEachRecord { r in
            records.append(ColdRecord(offset: r.offset, timestamp: r.timestamp, key: r.key.map(Array.init), value: r.value.map(Array.init),
                                      headers: r.headers.map { ColdHeader(key: Array($0.key), value: $0.value.map(Array.init)) }))
        }
        self.init(baseOffset: batch.baseOffset, lastOffsetDelta: batch.lastOffsetDelta, partitionLeaderEpoch: batch.partitionLeaderEpoch,
                  attributes: batch.attributes, producerId: batch.producerId, producerEpoch: batch.producerEpoch,
                  baseSequence: batch.baseSequence, baseTimestamp: batch.baseTimestamp, maxTimestamp: batch.maxTimestamp, records: records)
    }
}
