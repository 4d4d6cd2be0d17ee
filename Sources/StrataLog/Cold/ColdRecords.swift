

/// What a cold segment keeps of a log segment: every batch's header fields and every record's
/// offset, timestamp, key, headers and exact value bytes. Batches read from cold are re-encoded
/// from these (their CRCs and compression are new; their records are identical).
public struct ColdBatch: Equatable, Sendable {
    public var baseOffset: Int64
    public var lastOffsetDelta: Int32
    public var partitionLeaderEpoch: Int32
    /// The batch's attributes as stored (the compression bits say how it arrived).
    public var attributes: Int16
    public var producerId: Int64
    public var producerEpoch: Int16
    public var baseSequence: Int32
    public var baseTimestamp: Int64
    public var maxTimestamp: Int64
    public var records: [ColdRecord]

    /// Attribute bits as in the batch header.
    public var isTransactional: Bool { attributes & 0x10 != 0 }
    public var isControl: Bool { attributes & 0x20 != 0 }

    public init(baseOffset: Int64, lastOffsetDelta: Int32, partitionLeaderEpoch: Int32, attributes: Int16, producerId: Int64,
                producerEpoch: Int16, baseSequence: Int32, baseTimestamp: Int64, maxTimestamp: Int64, records: [ColdRecord]) {
        self.baseOffset = baseOffset
        self.lastOffsetDelta = lastOffsetDelta
        self.partitionLeaderEpoch = partitionLeaderEpoch
        self.attributes = attributes
        self.producerId = producerId
        self.producerEpoch = producerEpoch
        self.baseSequence = baseSequence
        self.baseTimestamp = baseTimestamp
        self.maxTimestamp = maxTimestamp
        self.records = records
    }
}

public struct ColdRecord: Equatable, Sendable {
    public var offset: Int64
    public var timestamp: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [ColdHeader]

    public init(offset: Int64, timestamp: Int64, key: [UInt8]?, value: [UInt8]?, headers: [ColdHeader] = []) {
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers
    }
}

public struct ColdHeader: Equatable, Sendable {
    public var key: [UInt8]
    public var value: [UInt8]?
    public init(key: [UInt8], value: [UInt8]?) {
        self.key = key
        self.value = value
    }
}

public struct ColdFormatError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Appends varints and fixed-width integers (little-endian).
struct ColdWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) { Varint.appendUnsigned(value, to: &bytes) }

    static func varint(_ value: UInt64, into bytes: inout [UInt8]) { Varint.appendUnsigned(value, to: &bytes) }

    mutating func signed(_ v: Int64) { varint(Varint.zigzag(v)) }

    mutating func fixed<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func blob(_ b: UnsafeRawBufferPointer) {
        varint(UInt64(b.count))
        bytes.append(contentsOf: b)
    }

    mutating func blob(_ b: [UInt8]) { b.withUnsafeBytes { blob($0) } }

    /// A nullable byte string: length + 1, 0 for null.
    mutating func nullableBlob(_ b: [UInt8]?) {
        guard let b else { varint(0); return }
        varint(UInt64(b.count) + 1)
        bytes.append(contentsOf: b)
    }
}

/// Reads what ColdWriter wrote; every length is checked against the bytes left before use, and
/// nothing here traps on hostile input.
struct ColdReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - position }

    mutating func varint() throws(ColdFormatError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < bytes.count else { throw ColdFormatError("truncated varint") }
            let b = bytes[position]
            position += 1
            guard shift < 64 else { throw ColdFormatError("varint too long") }
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return result }
            shift += 7
        }
    }

    mutating func signed() throws(ColdFormatError) -> Int64 {
        let v = try varint()
        return Int64(bitPattern: (v >> 1) ^ (0 &- (v & 1)))
    }

    /// A varint that must be at most `limit`.
    mutating func count(max limit: Int) throws(ColdFormatError) -> Int {
        let v = try varint()
        guard limit >= 0 else { throw ColdFormatError("count \(v) where none is possible") }
        guard v <= UInt64(limit) else { throw ColdFormatError("count \(v) over \(limit)") }
        return Int(v)
    }

    mutating func fixed<T: FixedWidthInteger>(_: T.Type) throws(ColdFormatError) -> T {
        guard remaining >= MemoryLayout<T>.size else { throw ColdFormatError("truncated") }
        let v = T(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: T.self))
        position += MemoryLayout<T>.size
        return v
    }

    mutating func take(_ n: Int) throws(ColdFormatError) -> UnsafeRawBufferPointer {
        guard n >= 0, n <= remaining else { throw ColdFormatError("length \(n) past the end (\(remaining) left)") }
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
    }

    mutating func blob() throws(ColdFormatError) -> UnsafeRawBufferPointer { try take(try count(max: remaining)) }

    mutating func nullableBlob() throws(ColdFormatError) -> [UInt8]? {
        let n = try count(max: remaining + 1)
        return n == 0 ? nil : Array(try take(n - 1))
    }
}

extension ColdBatch {
    /// The batch as RecordBatch v2 bytes for a reader: the same header fields and records,
    /// uncompressed or zstd-compressed (the topic's `cold.fetch.compression`), with a new CRC.
    /// Its records are exactly the ones the batch was made of; the bytes may differ from the
    /// original batch (a producer's compression, record attributes are not kept).
    public func recordBatch(compression: CompressionCodec = .none) throws -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(records.reduce(0) { $0 + 24 + ($1.key?.count ?? 0) + ($1.value?.count ?? 0) })
        var scratch: [UInt8] = []
        for r in records {
            scratch.removeAll(keepingCapacity: true)
            scratch.append(0)
            Varint.append(r.timestamp &- baseTimestamp, to: &scratch)
            Varint.append(r.offset &- baseOffset, to: &scratch)
            RecordBatchBuilder.appendNullable(r.key, to: &scratch)
            RecordBatchBuilder.appendNullable(r.value, to: &scratch)
            Varint.append(Int64(r.headers.count), to: &scratch)
            for h in r.headers {
                Varint.append(Int64(h.key.count), to: &scratch)
                scratch.append(contentsOf: h.key)
                RecordBatchBuilder.appendNullable(h.value, to: &scratch)
            }
            Varint.append(Int64(scratch.count), to: &body)
            body.append(contentsOf: scratch)
        }
        var codec = compression
        if codec != .none {
            if let packed = Compression.compress(codec, body), packed.count < body.count { body = packed } else { codec = .none }
        }
        guard RecordBatch.headerSize + body.count - RecordBatch.logOverhead <= Int(Int32.max) else { throw ColdFormatError("batch too large") }
        return RecordBatchBuilder.assemble(records: body, baseOffset: baseOffset, partitionLeaderEpoch: partitionLeaderEpoch,
                                           attributes: (attributes & ~0x7) | codec.rawValue, lastOffsetDelta: lastOffsetDelta,
                                           baseTimestamp: baseTimestamp, maxTimestamp: maxTimestamp, producerId: producerId,
                                           producerEpoch: producerEpoch, baseSequence: baseSequence, recordCount: Int32(records.count))
    }
}
