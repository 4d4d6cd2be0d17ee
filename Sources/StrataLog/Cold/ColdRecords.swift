

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

    @inline(__always)
    mutating func varint() throws(ColdFormatError) -> UInt64 {
        // Most varints of a block (kinds, offset and timestamp deltas, lengths) are one byte.
        if position < bytes.count {
            let b = bytes[position]
            if b < 0x80 {
                position += 1
                return UInt64(b)
            }
        }
        return try longVarint()
    }

    private mutating func longVarint() throws(ColdFormatError) -> UInt64 {
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

    @inline(__always)
    mutating func signed() throws(ColdFormatError) -> Int64 {
        let v = try varint()
        return Int64(bitPattern: (v >> 1) ^ (0 &- (v & 1)))
    }

    /// A varint that must be at most `limit`.
    @inline(__always)
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

    /// `count` varints each below `limit` (at most 0x80), so one byte each — a byte with the
    /// continuation bit set is out of range — widened to `T`; checked together, after one loop.
    mutating func smallVarints<T: FixedWidthInteger>(_ count: Int, below limit: Int, as _: T.Type) throws(ColdFormatError) -> [T] {
        precondition(limit <= 0x80, "one-byte varints only")
        let stored = try take(count)
        var values = [T](repeating: 0, count: count)
        var largest: UInt8 = 0
        values.withUnsafeMutableBufferPointer { out in
            for i in 0..<count {
                let b = stored[i]
                largest = max(largest, b)
                out[i] = T(truncatingIfNeeded: b)
            }
        }
        guard count == 0 || Int(largest) < limit else { throw ColdFormatError("value \(largest) where each is below \(limit)") }
        return values
    }

    @inline(__always)
    mutating func take(_ n: Int) throws(ColdFormatError) -> UnsafeRawBufferPointer {
        guard n >= 0, n <= remaining else { throw ColdFormatError("length \(n) past the end (\(remaining) left)") }
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
    }

    @inline(__always)
    mutating func blob() throws(ColdFormatError) -> UnsafeRawBufferPointer { try take(try count(max: remaining)) }

    mutating func nullableBlob() throws(ColdFormatError) -> [UInt8]? {
        try nullableBlobView().map(Array.init)
    }

    mutating func nullableBlobView() throws(ColdFormatError) -> UnsafeRawBufferPointer? {
        let n = try count(max: remaining + 1)
        return n == 0 ? nil : try take(n - 1)
    }
}

extension ColdBatch {
    /// The batch as RecordBatch v2 bytes for a reader: the same header fields and records,
    /// uncompressed or zstd-compressed (the topic's `cold.fetch.compression`), with a new CRC.
    /// Its records are exactly the ones the batch was made of; the bytes may differ from the
    /// original batch (a producer's compression, record attributes are not kept).
    public func recordBatch(compression: CompressionCodec = .none) throws -> [UInt8] {
        var body = RecordBodyWriter(baseOffset: baseOffset, baseTimestamp: baseTimestamp,
                                    capacity: records.reduce(0) { $0 + 24 + ($1.key?.count ?? 0) + ($1.value?.count ?? 0) })
        for r in records {
            r.key.withOptionalBytes { key in
                r.value.withOptionalBytes { value in
                    body.append(offset: r.offset, timestamp: r.timestamp, key: key, value: value, headerCount: r.headers.count) { w in
                        for h in r.headers { h.key.withUnsafeBytes { k in h.value.withOptionalBytes { w.header(key: k, value: $0) } } }
                    }
                }
            }
        }
        return try body.batch(compression: compression, partitionLeaderEpoch: partitionLeaderEpoch, attributes: attributes,
                              lastOffsetDelta: lastOffsetDelta, maxTimestamp: maxTimestamp, producerId: producerId,
                              producerEpoch: producerEpoch, baseSequence: baseSequence, recordCount: records.count)
    }
}

extension Optional where Wrapped == [UInt8] {
    /// The bytes of the array, or nil, for the duration of `body`.
    func withOptionalBytes<R>(_ body: (UnsafeRawBufferPointer?) throws -> R) rethrows -> R {
        guard let self else { return try body(nil) }
        return try self.withUnsafeBytes { try body($0) }
    }
}

/// The records section of a RecordBatch v2 being written (ColdBatch and ColdFlatBlock share it).
struct RecordBodyWriter {
    let baseOffset: Int64
    let baseTimestamp: Int64
    private(set) var body: [UInt8] = []
    private var scratch: [UInt8] = []

    init(baseOffset: Int64, baseTimestamp: Int64, capacity: Int) {
        self.baseOffset = baseOffset
        self.baseTimestamp = baseTimestamp
        body.reserveCapacity(capacity)
    }

    struct Headers {
        fileprivate var scratch: [UInt8]
        mutating func header(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?) {
            Varint.append(Int64(key.count), to: &scratch)
            scratch.append(contentsOf: key)
            RecordBatchBuilder.appendNullable(value, to: &scratch)
        }
    }

    mutating func append(offset: Int64, timestamp: Int64, key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer?, headerCount: Int,
                         headers: (inout Headers) -> Void) {
        scratch.removeAll(keepingCapacity: true)
        scratch.append(0)
        Varint.append(timestamp &- baseTimestamp, to: &scratch)
        Varint.append(offset &- baseOffset, to: &scratch)
        RecordBatchBuilder.appendNullable(key, to: &scratch)
        RecordBatchBuilder.appendNullable(value, to: &scratch)
        Varint.append(Int64(headerCount), to: &scratch)
        var h = Headers(scratch: scratch)
        scratch = []
        headers(&h)
        scratch = h.scratch
        Varint.append(Int64(scratch.count), to: &body)
        body.append(contentsOf: scratch)
    }

    func batch(compression: CompressionCodec, partitionLeaderEpoch: Int32, attributes: Int16, lastOffsetDelta: Int32, maxTimestamp: Int64,
               producerId: Int64, producerEpoch: Int16, baseSequence: Int32, recordCount: Int) throws -> [UInt8] {
        var records = body
        var codec = compression
        if codec != .none {
            if let packed = Compression.compress(codec, records), packed.count < records.count { records = packed } else { codec = .none }
        }
        guard RecordBatch.headerSize + records.count - RecordBatch.logOverhead <= Int(Int32.max) else { throw ColdFormatError("batch too large") }
        return RecordBatchBuilder.assemble(records: records, baseOffset: baseOffset, partitionLeaderEpoch: partitionLeaderEpoch,
                                           attributes: (attributes & ~0x7) | codec.rawValue, lastOffsetDelta: lastOffsetDelta,
                                           baseTimestamp: baseTimestamp, maxTimestamp: maxTimestamp, producerId: producerId,
                                           producerEpoch: producerEpoch, baseSequence: baseSequence, recordCount: Int32(recordCount))
    }
}

/// A decoded cold block in one buffer (`ColdBlock.decodeFlat`): every key, value and header end
/// to end, records and headers as positions in it. Immutable once made; its bytes live as long
/// as it does, so readers may point into them while they hold it.
/// `@unchecked Sendable`: immutable after init (the buffer is written once, before any reader).
public final class ColdFlatBlock: @unchecked Sendable {
    public struct Batch: Sendable {
        public let baseOffset: Int64
        public let lastOffsetDelta: Int32
        public let partitionLeaderEpoch: Int32
        public let attributes: Int16
        public let producerId: Int64
        public let producerEpoch: Int16
        public let baseSequence: Int32
        public let baseTimestamp: Int64
        public let maxTimestamp: Int64
        public let records: Range<Int>
        public var isTransactional: Bool { attributes & 0x10 != 0 }
        public var isControl: Bool { attributes & 0x20 != 0 }
    }

    /// Positions in `bytes`; -1 for a null key or value.
    public struct Record: Sendable {
        public let offset: Int64
        public let timestamp: Int64
        public let key: Int
        public let keyCount: Int
        public let value: Int
        public let valueCount: Int
        public let headers: Range<Int>
    }

    public struct Header: Sendable {
        public let key: Int
        public let keyCount: Int
        public let value: Int
        public let valueCount: Int
    }

    public let batches: [Batch]
    public let records: [Record]
    public let headers: [Header]
    private let data: Buffer

    /// The bytes being decoded: one allocation that grows by doubling (memcpy appends), then
    /// owned by the block. Used by one thread until the block is made.
    /// `@unchecked Sendable`: written only by the decoder before the block exists, read-only after.
    final class Buffer: @unchecked Sendable {
        private(set) var base: UnsafeMutableRawPointer
        private(set) var count = 0
        private var capacity: Int

        init(capacity: Int) {
            self.capacity = max(64, capacity)
            base = .allocate(byteCount: self.capacity, alignment: 8)
        }
        deinit { base.deallocate() }

        @inline(__always) func append(_ bytes: UnsafeRawBufferPointer) {
            guard let source = bytes.baseAddress, bytes.count > 0 else { return }
            if count + bytes.count > capacity {
                var grown = capacity * 2
                while grown < count + bytes.count { grown *= 2 }
                let moved = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 8)
                moved.copyMemory(from: base, byteCount: count)
                base.deallocate()
                base = moved
                capacity = grown
            }
            copyFewBytes(to: base + count, from: source, count: bytes.count)
            count += bytes.count
        }
    }

    init(data: Buffer, batches: [Batch], records: [Record], headers: [Header]) {
        self.data = data
        self.batches = batches
        self.records = records
        self.headers = headers
    }

    /// The keys, values and headers, end to end.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: data.base, count: data.count) }

    @inline(__always) func view(_ at: Int, _ count: Int) -> UnsafeRawBufferPointer? {
        at < 0 ? nil : UnsafeRawBufferPointer(rebasing: bytes[at..<at + count])
    }
    public func key(_ r: Record) -> UnsafeRawBufferPointer? { view(r.key, r.keyCount) }
    public func value(_ r: Record) -> UnsafeRawBufferPointer? { view(r.value, r.valueCount) }
    public func headerKey(_ h: Header) -> UnsafeRawBufferPointer { view(h.key, h.keyCount)! }
    public func headerValue(_ h: Header) -> UnsafeRawBufferPointer? { view(h.value, h.valueCount) }

    /// The block as ColdBatches (arrays per record: tests, the conversion's verification).
    public func coldBatches() -> [ColdBatch] {
        batches.map { b in
            ColdBatch(baseOffset: b.baseOffset, lastOffsetDelta: b.lastOffsetDelta, partitionLeaderEpoch: b.partitionLeaderEpoch, attributes: b.attributes,
                      producerId: b.producerId, producerEpoch: b.producerEpoch, baseSequence: b.baseSequence,
                      baseTimestamp: b.baseTimestamp, maxTimestamp: b.maxTimestamp,
                      records: records[b.records].map { r in
                          ColdRecord(offset: r.offset, timestamp: r.timestamp, key: key(r).map(Array.init), value: value(r).map(Array.init),
                                     headers: headers[r.headers].map { ColdHeader(key: Array(headerKey($0)), value: headerValue($0).map(Array.init)) })
                      })
        }
    }

    /// Bytes of batch `i` as an uncompressed RecordBatch v2 (what `writeUncompressedBatch` writes).
    func uncompressedBatchSize(_ i: Int) -> Int {
        let b = batches[i]
        var total = RecordBatch.headerSize
        for r in records[b.records] {
            let size = recordSize(r, batch: b)
            total += Varint.encodedLength(Int64(size)) + size
        }
        return total
    }

    @inline(__always) private func recordSize(_ r: Record, batch b: Batch) -> Int {
        var size = 1 + Varint.encodedLength(r.timestamp &- b.baseTimestamp) + Varint.encodedLength(r.offset &- b.baseOffset)
        size += r.key < 0 ? 1 : Varint.encodedLength(Int64(r.keyCount)) + r.keyCount
        size += r.value < 0 ? 1 : Varint.encodedLength(Int64(r.valueCount)) + r.valueCount
        size += Varint.encodedLength(Int64(r.headers.count))
        for h in headers[r.headers] {
            size += Varint.encodedLength(Int64(h.keyCount)) + h.keyCount
            size += h.value < 0 ? 1 : Varint.encodedLength(Int64(h.valueCount)) + h.valueCount
        }
        return size
    }

    /// Writes batch `i` uncompressed into `out` (exactly `uncompressedBatchSize(i)` bytes): the
    /// same bytes as `recordBatch(i, compression: .none)`, without intermediate arrays (a cold
    /// Fetch's hot path: one copy from the decoded block to the served one).
    func writeUncompressedBatch(_ i: Int, into out: UnsafeMutableRawBufferPointer) {
        let b = batches[i]
        var at = RecordBatch.headerSize
        let base = out.baseAddress!
        @inline(__always) func varint(_ v: Int64) {
            var u = Varint.zigzag(v)
            while u >= 0x80 {
                base.storeBytes(of: UInt8(truncatingIfNeeded: u) | 0x80, toByteOffset: at, as: UInt8.self)
                u >>= 7
                at += 1
            }
            base.storeBytes(of: UInt8(u), toByteOffset: at, as: UInt8.self)
            at += 1
        }
        @inline(__always) func bytes(_ start: Int, _ count: Int) {
            guard count > 0 else { return }
            (base + at).copyMemory(from: self.bytes.baseAddress! + start, byteCount: count)
            at += count
        }
        for r in records[b.records] {
            varint(Int64(recordSize(r, batch: b)))
            base.storeBytes(of: UInt8(0), toByteOffset: at, as: UInt8.self)
            at += 1
            varint(r.timestamp &- b.baseTimestamp)
            varint(r.offset &- b.baseOffset)
            if r.key < 0 { varint(-1) } else { varint(Int64(r.keyCount)); bytes(r.key, r.keyCount) }
            if r.value < 0 { varint(-1) } else { varint(Int64(r.valueCount)); bytes(r.value, r.valueCount) }
            varint(Int64(r.headers.count))
            for h in headers[r.headers] {
                varint(Int64(h.keyCount))
                bytes(h.key, h.keyCount)
                if h.value < 0 { varint(-1) } else { varint(Int64(h.valueCount)); bytes(h.value, h.valueCount) }
            }
        }
        precondition(at == out.count, "cold batch written to \(at) bytes, sized \(out.count)")
        RecordBatchBuilder.storeHeader(out, baseOffset: b.baseOffset, partitionLeaderEpoch: b.partitionLeaderEpoch, attributes: b.attributes & ~0x7,
                                       lastOffsetDelta: b.lastOffsetDelta, baseTimestamp: b.baseTimestamp, maxTimestamp: b.maxTimestamp,
                                       producerId: b.producerId, producerEpoch: b.producerEpoch, baseSequence: b.baseSequence,
                                       recordCount: Int32(truncatingIfNeeded: b.records.count))
    }

    /// Batch `i` as RecordBatch v2 bytes, as `ColdBatch.recordBatch` makes them.
    public func recordBatch(_ i: Int, compression: CompressionCodec = .none) throws -> [UInt8] {
        let b = batches[i]
        var body = RecordBodyWriter(baseOffset: b.baseOffset, baseTimestamp: b.baseTimestamp,
                                    capacity: records[b.records].reduce(0) { $0 + 24 + max(0, $1.keyCount) + max(0, $1.valueCount) })
        for r in records[b.records] {
            body.append(offset: r.offset, timestamp: r.timestamp, key: key(r), value: value(r), headerCount: r.headers.count) { w in
                for h in headers[r.headers] { w.header(key: headerKey(h), value: headerValue(h)) }
            }
        }
        return try body.batch(compression: compression, partitionLeaderEpoch: b.partitionLeaderEpoch, attributes: b.attributes,
                              lastOffsetDelta: b.lastOffsetDelta, maxTimestamp: b.maxTimestamp, producerId: b.producerId,
                              producerEpoch: b.producerEpoch, baseSequence: b.baseSequence, recordCount: b.records.count)
    }
}

/// `to.copyMemory(from:byteCount:)` for the copies of a block's assembly, most of them a shape's
/// literal or one token: a few bytes, where a call to memmove costs more than the copy (two
/// overlapping 8-byte moves cover 8...16).
@inline(__always)
func copyFewBytes(to: UnsafeMutableRawPointer, from source: UnsafeRawPointer, count n: Int) {
    if n >= 8 && n <= 16 {
        to.storeBytes(of: source.loadUnaligned(as: UInt64.self), as: UInt64.self)
        (to + (n - 8)).storeBytes(of: (source + (n - 8)).loadUnaligned(as: UInt64.self), as: UInt64.self)
    } else if n < 8 {
        for i in 0..<n { to.storeBytes(of: source.load(fromByteOffset: i, as: UInt8.self), toByteOffset: i, as: UInt8.self) }
    } else {
        to.copyMemory(from: source, byteCount: n)
    }
}
