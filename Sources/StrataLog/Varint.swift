/// Kafka's variable-length integers (protobuf style, zig-zag for signed values), used inside
/// RecordBatch v2 records for lengths, deltas and counts.
public enum Varint {
    /// Largest encoding of a 64-bit value.
    public static let maxLength = 10

    @inlinable
    public static func zigzag(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }

    @inlinable
    public static func unzigzag(_ u: UInt64) -> Int64 { Int64(bitPattern: u >> 1) ^ -Int64(bitPattern: u & 1) }

    @inlinable
    public static func encodedLength(_ v: Int64) -> Int {
        var u = zigzag(v)
        var n = 1
        while u >= 0x80 { u >>= 7; n += 1 }
        return n
    }

    /// Appends the zig-zag varint of `v`.
    @inlinable
    public static func append(_ v: Int64, to out: inout [UInt8]) {
        var u = zigzag(v)
        while u >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: u) | 0x80)
            u >>= 7
        }
        out.append(UInt8(u))
    }

    /// Unsigned (non-zig-zag) varint, used by the flexible versions of the Kafka protocol.
    @inlinable
    public static func appendUnsigned(_ v: UInt64, to out: inout [UInt8]) {
        var u = v
        while u >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: u) | 0x80)
            u >>= 7
        }
        out.append(UInt8(u))
    }
}

/// A bounds-checked forward reader over raw bytes. Every read throws on truncation, so a
/// malformed record can never read past its batch.
public struct ByteReader {
    public let bytes: UnsafeRawBufferPointer
    public var position: Int

    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer, position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    @inlinable public var remaining: Int { bytes.count - position }

    @inlinable
    public mutating func readUnsignedVarint() throws(RecordBatchError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < bytes.count else { throw .malformedRecord("truncated varint") }
            let b = bytes[position]
            position += 1
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            guard shift < 64 else { throw .malformedRecord("varint longer than 10 bytes") }
        }
    }

    @inlinable
    public mutating func readVarlong() throws(RecordBatchError) -> Int64 {
        Varint.unzigzag(try readUnsignedVarint())
    }

    @inlinable
    public mutating func readVarint() throws(RecordBatchError) -> Int32 {
        let v = try readVarlong()
        guard let i = Int32(exactly: v) else { throw .malformedRecord("varint out of 32-bit range") }
        return i
    }

    @inlinable
    public mutating func readInt8() throws(RecordBatchError) -> Int8 {
        guard position < bytes.count else { throw .malformedRecord("truncated record") }
        defer { position += 1 }
        return Int8(bitPattern: bytes[position])
    }

    /// A slice of `count` bytes, or nil for a length of -1 (Kafka's null).
    @inlinable
    public mutating func readNullableBytes(length: Int32) throws(RecordBatchError) -> UnsafeRawBufferPointer? {
        if length == -1 { return nil }
        guard length >= 0, Int(length) <= remaining else { throw .malformedRecord("length \(length) past end of record") }
        let start = position
        position += Int(length)
        return UnsafeRawBufferPointer(rebasing: bytes[start..<position])
    }

    @inlinable
    public mutating func skip(_ count: Int) throws(RecordBatchError) {
        guard count >= 0, count <= remaining else { throw .malformedRecord("skip past end") }
        position += count
    }
}
