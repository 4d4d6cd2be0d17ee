/// Why a record batch was refused. Each case names the field so a producer can be told exactly
/// what was wrong (the Kafka layer maps these to CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, ...).
public enum RecordBatchError: Error, Equatable, CustomStringConvertible, Sendable {
    case tooShort(available: Int)
    case lengthMismatch(declared: Int, available: Int)
    case badMagic(Int8)
    case crcMismatch(stored: UInt32, computed: UInt32)
    case tooLarge(size: Int, max: Int)
    case badRecordCount(count: Int32, lastOffsetDelta: Int32)
    case malformedRecord(String)
    /// A record's timestamp is outside message.timestamp.before/after.max.ms (INVALID_TIMESTAMP).
    case invalidTimestamp(String)
    /// Records without a key for a compacted topic (INVALID_RECORD): their indexes in the batch
    /// (every one, so a producer can tell them from the records refused only alongside them).
    case missingKeys(indexes: [Int])

    public var description: String {
        switch self {
        case .tooShort(let n): return "record batch too short: \(n) bytes, header needs \(RecordBatch.headerSize)"
        case .lengthMismatch(let d, let a): return "record batch length field says \(d) bytes but \(a) are present"
        case .badMagic(let m): return "record batch magic is \(m); only magic 2 (RecordBatch v2) is supported"
        case .crcMismatch(let s, let c):
            return "record batch CRC-32C mismatch: stored 0x\(String(s, radix: 16)), computed 0x\(String(c, radix: 16))"
        case .tooLarge(let s, let m): return "record batch of \(s) bytes exceeds max.message.bytes \(m)"
        case .badRecordCount(let c, let d): return "record batch count \(c) does not match lastOffsetDelta \(d)"
        case .malformedRecord(let why): return "malformed record: \(why)"
        case .invalidTimestamp(let why): return "invalid timestamp: \(why)"
        case .missingKeys(let i): return "record\(i.count == 1 ? "" : "s") \(i.prefix(10).map(String.init).joined(separator: ", "))\(i.count > 10 ? ", ..." : "") \(i.count == 1 ? "has" : "have") no key; a compacted topic needs one on every record"
        }
    }
}

/// Compression codec in attribute bits 0-2.
public enum CompressionCodec: Int16, Sendable {
    case none = 0, gzip = 1, snappy = 2, lz4 = 3, zstd = 4
}

/// A read-only view of one Kafka RecordBatch v2 (magic 2) in memory.
///
/// Layout (big-endian), 61-byte header then records:
/// ```
///  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 | 17 crc u32
/// 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64
/// 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 | 57 recordCount i32 | 61 records
/// ```
/// The CRC covers attributes..end, so baseOffset and partitionLeaderEpoch can be rewritten in place.
public struct RecordBatch {
    public static let headerSize = 61
    /// Bytes before and including batchLength; `batchLength` counts everything after them.
    public static let logOverhead = 12
    public static let magicOffset = 16
    public static let crcOffset = 17
    public static let attributesOffset = 21
    public static let currentMagic: Int8 = 2

    public let bytes: UnsafeRawBufferPointer

    /// Wraps exactly one batch. Use `validate` before trusting any field beyond the length.
    @inlinable
    public init(unchecked bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var baseOffset: Int64 { Int64(bigEndian: bytes.loadUnaligned(fromByteOffset: 0, as: Int64.self)) }
    @inlinable public var batchLength: Int32 { Int32(bigEndian: bytes.loadUnaligned(fromByteOffset: 8, as: Int32.self)) }
    @inlinable public var partitionLeaderEpoch: Int32 { Int32(bigEndian: bytes.loadUnaligned(fromByteOffset: 12, as: Int32.self)) }
    @inlinable public var magic: Int8 { Int8(bitPattern: bytes[16]) }
    @inlinable public var crc: UInt32 { UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: 17, as: UInt32.self)) }
    @inlinable public var attributes: Int16 { Int16(bigEndian: bytes.loadUnaligned(fromByteOffset: 21, as: Int16.self)) }
    @inlinable public var lastOffsetDelta: Int32 { Int32(bigEndian: bytes.loadUnaligned(fromByteOffset: 23, as: Int32.self)) }
    @inlinable public var baseTimestamp: Int64 { Int64(bigEndian: bytes.loadUnaligned(fromByteOffset: 27, as: Int64.self)) }
    @inlinable public var maxTimestamp: Int64 { Int64(bigEndian: bytes.loadUnaligned(fromByteOffset: 35, as: Int64.self)) }
    @inlinable public var producerId: Int64 { Int64(bigEndian: bytes.loadUnaligned(fromByteOffset: 43, as: Int64.self)) }
    @inlinable public var producerEpoch: Int16 { Int16(bigEndian: bytes.loadUnaligned(fromByteOffset: 51, as: Int16.self)) }
    @inlinable public var baseSequence: Int32 { Int32(bigEndian: bytes.loadUnaligned(fromByteOffset: 53, as: Int32.self)) }
    @inlinable public var recordCount: Int32 { Int32(bigEndian: bytes.loadUnaligned(fromByteOffset: 57, as: Int32.self)) }

    @inlinable public var lastOffset: Int64 { baseOffset + Int64(lastOffsetDelta) }
    @inlinable public var nextOffset: Int64 { lastOffset + 1 }
    @inlinable public var sizeInBytes: Int { Int(batchLength) + RecordBatch.logOverhead }
    @inlinable public var compression: CompressionCodec? { CompressionCodec(rawValue: attributes & 0x7) }
    @inlinable public var isLogAppendTime: Bool { attributes & 0x8 != 0 }
    @inlinable public var isTransactional: Bool { attributes & 0x10 != 0 }
    @inlinable public var isControl: Bool { attributes & 0x20 != 0 }

    /// Size of the batch starting at `bytes[0]` as declared by its header, or nil when fewer than
    /// 12 bytes are available or the declared length is impossible.
    @inlinable
    public static func declaredSize(at bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= logOverhead else { return nil }
        let len = Int32(bigEndian: bytes.loadUnaligned(fromByteOffset: 8, as: Int32.self))
        guard len >= Int32(headerSize - logOverhead) else { return nil }
        return Int(len) + logOverhead
    }

    /// Full validation of one batch occupying all of `bytes`: length, magic, CRC, size limit,
    /// record count; with `strictRecords` also the structure of every uncompressed record
    /// (lengths add up, offset deltas run 0, 1, 2, ...), as a producer's batch must have.
    /// `checksumFrom`: batches whose last offset lies below it skip the CRC (a read-only view
    /// trusts what the writer already validated and synced below its recovery point, as the
    /// writer's own recovery does); everything else is checked.
    public func validate(maxBatchBytes: Int = Int(Int32.max), strictRecords: Bool, checksumFrom: Int64 = .min) throws(RecordBatchError) {
        guard bytes.count >= RecordBatch.headerSize else { throw .tooShort(available: bytes.count) }
        let declared = Int(batchLength) + RecordBatch.logOverhead
        guard batchLength >= Int32(RecordBatch.headerSize - RecordBatch.logOverhead), declared == bytes.count else {
            throw .lengthMismatch(declared: declared, available: bytes.count)
        }
        guard magic == RecordBatch.currentMagic else { throw .badMagic(magic) }
        guard bytes.count <= maxBatchBytes else { throw .tooLarge(size: bytes.count, max: maxBatchBytes) }
        if checksumFrom == .min || baseOffset &+ Int64(lastOffsetDelta) >= checksumFrom {
            let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[RecordBatch.attributesOffset...]))
            guard computed == crc else { throw .crcMismatch(stored: crc, computed: computed) }
        }
        let count = recordCount
        let delta = lastOffsetDelta
        // A compacted batch keeps its lastOffsetDelta but may hold fewer records, down to none.
        guard count >= 0, delta >= 0, Int64(count) <= Int64(delta) + 1 else {
            throw .badRecordCount(count: count, lastOffsetDelta: delta)
        }
        if strictRecords {
            guard Int64(count) == Int64(delta) + 1 else { throw .badRecordCount(count: count, lastOffsetDelta: delta) }
            if compression == CompressionCodec.none { try validateRecordStructure() }
            else if compression == Optional<CompressionCodec>.none { throw .malformedRecord("unknown compression codec \(attributes & 0x7)") }
        }
    }

    /// Walks every record of an uncompressed batch, checking that each parses inside its declared
    /// length, that offset deltas run 0..count-1, and that records exactly fill the batch.
    func validateRecordStructure() throws(RecordBatchError) {
        var reader = ByteReader(bytes, position: RecordBatch.headerSize)
        let count = Int(recordCount)
        for expectedDelta in 0..<count {
            let length = try reader.readVarint()
            guard length >= 0, Int(length) <= reader.remaining else {
                throw .malformedRecord("record \(expectedDelta) length \(length) past end of batch")
            }
            let end = reader.position + Int(length)
            var r = ByteReader(UnsafeRawBufferPointer(rebasing: bytes[..<end]), position: reader.position)
            _ = try r.readInt8()
            _ = try r.readVarlong()
            let offsetDelta = try r.readVarint()
            guard offsetDelta == Int32(expectedDelta) else {
                throw .malformedRecord("record \(expectedDelta) has offset delta \(offsetDelta)")
            }
            let keyLength = try r.readVarint()
            _ = try r.readNullableBytes(length: keyLength)
            let valueLength = try r.readVarint()
            _ = try r.readNullableBytes(length: valueLength)
            let headerCount = try r.readVarint()
            guard headerCount >= 0 else { throw .malformedRecord("record \(expectedDelta) header count \(headerCount)") }
            for _ in 0..<Int(headerCount) {
                let hk = try r.readVarint()
                guard hk >= 0 else { throw .malformedRecord("record \(expectedDelta) has a null header key") }
                _ = try r.readNullableBytes(length: hk)
                let hv = try r.readVarint()
                _ = try r.readNullableBytes(length: hv)
            }
            guard r.position == end else { throw .malformedRecord("record \(expectedDelta) has \(end - r.position) trailing bytes") }
            try reader.skip(Int(length))
        }
        guard reader.remaining == 0 else { throw .malformedRecord("\(reader.remaining) bytes after the last record") }
    }

    /// Iterates the records of the batch, decompressing a compressed one first (gzip, snappy, lz4,
    /// zstd). The record views live only during the call of `body`.
    public func forEachRecord(_ body: (Record) throws -> Void) throws {
        guard let codec = compression else {
            throw RecordBatchError.malformedRecord("unknown compression codec \(attributes & 0x7)")
        }
        if codec == .none {
            try Self.parseRecords(bytes, from: RecordBatch.headerSize, count: Int(recordCount), baseOffset: baseOffset,
                                  baseTimestamp: baseTimestamp, body)
            return
        }
        let records = try Compression.decompress(codec, UnsafeRawBufferPointer(rebasing: bytes[RecordBatch.headerSize...]))
        let (count, base, baseTs) = (Int(recordCount), baseOffset, baseTimestamp)
        try records.withUnsafeBytes { p in
            try Self.parseRecords(p, from: 0, count: count, baseOffset: base, baseTimestamp: baseTs, body)
        }
    }

    private static func parseRecords(_ bytes: UnsafeRawBufferPointer, from start: Int, count: Int, baseOffset base: Int64,
                                      baseTimestamp baseTs: Int64, _ body: (Record) throws -> Void) throws {
        var reader = ByteReader(bytes, position: start)
        for i in 0..<count {
            let length = try reader.readVarint()
            guard length >= 0, Int(length) <= reader.remaining else {
                throw RecordBatchError.malformedRecord("record \(i) length \(length) past end of batch")
            }
            let end = reader.position + Int(length)
            var r = ByteReader(UnsafeRawBufferPointer(rebasing: bytes[..<end]), position: reader.position)
            _ = try r.readInt8()
            let tsDelta = try r.readVarlong()
            let offsetDelta = try r.readVarint()
            let key = try r.readNullableBytes(length: try r.readVarint())
            let value = try r.readNullableBytes(length: try r.readVarint())
            let headerCount = try r.readVarint()
            // Each header takes at least two bytes (two varint lengths): a larger count is a lie,
            // and reserving it would allocate gigabytes (found by Fuzz/RecordDecode). Negative
            // counts are refused as the validator and CStrataScan's decoder refuse them.
            guard headerCount >= 0, Int(headerCount) <= r.remaining / 2 else {
                throw RecordBatchError.malformedRecord("record \(i) header count \(headerCount)")
            }
            var headers: [(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?)] = []
            if headerCount > 0 {
                headers.reserveCapacity(Int(headerCount))
                for _ in 0..<Int(headerCount) {
                    guard let hk = try r.readNullableBytes(length: try r.readVarint()) else {
                        throw RecordBatchError.malformedRecord("null header key")
                    }
                    headers.append((hk, try r.readNullableBytes(length: try r.readVarint())))
                }
            }
            // Wrapping, as in firstRecord: baseOffset is outside the CRC and these bytes may come
            // from anywhere; Int64.max plus a delta must not trap (found with Fuzz/RecordDecode).
            try body(Record(offset: base &+ Int64(offsetDelta), timestamp: baseTs &+ tsDelta, key: key, value: value, headers: headers))
            try reader.skip(Int(length))
        }
    }

    /// Offset of the first record with timestamp >= `timestamp`, or nil (the time-lookup path).
    public func firstOffset(atOrAfter timestamp: Int64) throws(RecordBatchError) -> Int64? {
        try firstRecord(atOrAfter: timestamp)?.offset
    }

    /// The first record whose timestamp is >= `timestamp`: its offset and its own timestamp
    /// (ListOffsets answers with both). Uncompressed batches are walked reading only lengths and
    /// deltas (no allocation); compressed ones are decompressed; under LogAppendTime every record
    /// carries the batch's time.
    public func firstRecord(atOrAfter timestamp: Int64) throws(RecordBatchError) -> (offset: Int64, timestamp: Int64)? {
        if isLogAppendTime { return maxTimestamp >= timestamp ? (baseOffset, maxTimestamp) : nil }
        guard let codec = compression else { throw .malformedRecord("unknown compression codec \(attributes & 0x7)") }
        let (base, baseTs, count) = (baseOffset, baseTimestamp, Int(recordCount))
        func walk(_ records: UnsafeRawBufferPointer, from start: Int) throws(RecordBatchError) -> (offset: Int64, timestamp: Int64)? {
            var reader = ByteReader(records, position: start)
            for _ in 0..<count {
                let length = try reader.readVarint()
                guard length >= 0, Int(length) <= reader.remaining else { throw .malformedRecord("record length \(length) past end of batch") }
                let end = reader.position + Int(length)
                var r = ByteReader(UnsafeRawBufferPointer(rebasing: records[..<end]), position: reader.position)
                _ = try r.readInt8()
                let ts = baseTs &+ (try r.readVarlong())
                let offsetDelta = try r.readVarint()
                if ts >= timestamp { return (base &+ Int64(offsetDelta), ts) }
                try reader.skip(Int(length))
            }
            return nil
        }
        if codec == .none { return try walk(bytes, from: RecordBatch.headerSize) }
        return try Compression.withDecompressed(codec, UnsafeRawBufferPointer(rebasing: bytes[RecordBatch.headerSize...]),
                                                maxBytes: Compression.maxDecompressedBytes) { (records) throws(RecordBatchError) in
            try walk(records, from: 0)
        }
    }

    /// A decoded record; its byte views point into the batch and live only as long as it does.
    public struct Record {
        public let offset: Int64
        public let timestamp: Int64
        public let key: UnsafeRawBufferPointer?
        public let value: UnsafeRawBufferPointer?
        public let headers: [(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?)]
    }

    /// Rewrites baseOffset in place; it is outside the CRC, so the batch stays valid.
    @inlinable
    public static func setBaseOffset(_ offset: Int64, in bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= headerSize)
        bytes.storeBytes(of: offset.bigEndian, toByteOffset: 0, as: Int64.self)
    }
}
