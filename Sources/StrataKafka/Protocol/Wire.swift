import NIOCore

/// A request or response that does not parse. The connection that sent it is closed.
public struct ProtocolError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ d: String) { description = d }
}

/// Reads Kafka's primitive types from a request body, bounds-checked: every read throws on
/// truncation, and every length and count is checked against the bytes that remain before
/// anything is allocated. `flexible` selects KIP-482's encodings (compact strings, bytes and
/// arrays with unsigned-varint lengths, and tagged-field sections), so one field layout per API
/// serves classic and flexible versions alike.
struct KafkaReader {
    var buffer: ByteBuffer
    var flexible: Bool

    init(_ buffer: ByteBuffer, flexible: Bool = false) {
        self.buffer = buffer
        self.flexible = flexible
    }

    var remaining: Int { buffer.readableBytes }

    mutating func int8() throws -> Int8 {
        guard let v = buffer.readInteger(as: Int8.self) else { throw ProtocolError("truncated int8") }
        return v
    }
    mutating func int16() throws -> Int16 {
        guard let v = buffer.readInteger(as: Int16.self) else { throw ProtocolError("truncated int16") }
        return v
    }
    mutating func int32() throws -> Int32 {
        guard let v = buffer.readInteger(as: Int32.self) else { throw ProtocolError("truncated int32") }
        return v
    }
    mutating func int64() throws -> Int64 {
        guard let v = buffer.readInteger(as: Int64.self) else { throw ProtocolError("truncated int64") }
        return v
    }
    mutating func bool() throws -> Bool { try int8() != 0 }

    mutating func uuid() throws -> [UInt8] {
        guard remaining >= 16, let b = buffer.readBytes(length: 16) else { throw ProtocolError("truncated uuid") }
        return b
    }

    mutating func unsignedVarint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard let b = buffer.readInteger(as: UInt8.self) else { throw ProtocolError("truncated varint") }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            guard shift < 64 else { throw ProtocolError("varint too long") }
        }
    }

    /// A compact length: the varint holds length + 1, 0 meaning null (nil).
    private mutating func compactLength(_ what: String) throws -> Int? {
        let n = try unsignedVarint()
        if n == 0 { return nil }
        guard n - 1 <= UInt64(remaining) else { throw ProtocolError("bad \(what) length \(n - 1)") }
        return Int(n - 1)
    }

    mutating func nullableString() throws -> String? {
        let length: Int
        if flexible {
            guard let n = try compactLength("string") else { return nil }
            length = n
        } else {
            let n = try int16()
            if n == -1 { return nil }
            guard n >= 0, Int(n) <= remaining else { throw ProtocolError("bad string length \(n)") }
            length = Int(n)
        }
        guard let s = buffer.readString(length: length) else { throw ProtocolError("bad string length \(length)") }
        return s
    }

    mutating func string() throws -> String {
        guard let s = try nullableString() else { throw ProtocolError("null where a string is required") }
        return s
    }

    /// The request header's client id: always an int16-length string, even in header v2.
    mutating func classicNullableString() throws -> String? {
        let saved = flexible
        flexible = false
        defer { flexible = saved }
        return try nullableString()
    }

    mutating func nullableBytes() throws -> ByteBuffer? {
        let length: Int
        if flexible {
            guard let n = try compactLength("bytes") else { return nil }
            length = n
        } else {
            let n = try int32()
            if n == -1 { return nil }
            guard n >= 0, Int(n) <= remaining else { throw ProtocolError("bad bytes length \(n)") }
            length = Int(n)
        }
        guard let b = buffer.readSlice(length: length) else { throw ProtocolError("bad bytes length \(length)") }
        return b
    }

    mutating func bytes() throws -> ByteBuffer { try nullableBytes() ?? ByteBuffer() }

    mutating func byteArray() throws -> [UInt8] {
        var b = try bytes()
        return b.readBytes(length: b.readableBytes) ?? []
    }

    /// An array length: null is returned as nil. Each element needs at least `minElementBytes`
    /// bytes, so a hostile count cannot make us allocate or loop beyond the frame.
    mutating func arrayCount(minElementBytes: Int = 1) throws -> Int? {
        let count: Int
        if flexible {
            let n = try unsignedVarint()
            if n == 0 { return nil }
            guard n - 1 <= UInt64(remaining) else { throw ProtocolError("bad array length \(n - 1)") }
            count = Int(n - 1)
        } else {
            let n = try int32()
            if n == -1 { return nil }
            guard n >= 0 else { throw ProtocolError("bad array length \(n)") }
            count = Int(n)
        }
        let (needed, overflow) = count.multipliedReportingOverflow(by: max(1, minElementBytes))
        guard !overflow, needed <= remaining else {
            throw ProtocolError("bad array length \(count)")
        }
        return count
    }

    mutating func array<T>(minElementBytes: Int = 1, _ element: (inout KafkaReader) throws -> T) throws -> [T] {
        try nullableArray(minElementBytes: minElementBytes, element) ?? []
    }

    mutating func nullableArray<T>(minElementBytes: Int = 1, _ element: (inout KafkaReader) throws -> T) throws -> [T]? {
        guard let n = try arrayCount(minElementBytes: minElementBytes) else { return nil }
        var out: [T] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try element(&self)) }
        return out
    }

    /// A tagged-field section (flexible versions only; nothing in classic ones). Strata reads no
    /// optional field yet, so every field is skipped, bounds-checked.
    mutating func taggedFields() throws {
        guard flexible else { return }
        let count = try unsignedVarint()
        guard count <= UInt64(remaining) else { throw ProtocolError("bad tagged field count \(count)") }
        for _ in 0..<count {
            _ = try unsignedVarint()  // tag
            let size = try unsignedVarint()
            guard size <= UInt64(remaining) else { throw ProtocolError("bad tagged field size \(size)") }
            buffer.moveReaderIndex(forwardBy: Int(size))
        }
    }
}

/// Writes Kafka's primitive types into a response. The first 8 bytes are left for the frame size
/// and correlation id, which the connection fills in: the body is never copied to be framed.
/// Nothing here can trap on a value's size: a string longer than its length field allows is cut
/// (see `string`), and counts are clamped to the field's range (arrays that large cannot exist in
/// memory anyway).
struct KafkaWriter {
    static let frameHeaderBytes = 8
    var buffer: ByteBuffer
    var flexible: Bool

    init(allocator: ByteBufferAllocator = ByteBufferAllocator(), capacity: Int = 256, flexible: Bool = false) {
        buffer = allocator.buffer(capacity: capacity + Self.frameHeaderBytes)
        buffer.writeRepeatingByte(0, count: Self.frameHeaderBytes)
        self.flexible = flexible
    }

    mutating func int8(_ v: Int8) { buffer.writeInteger(v) }
    mutating func int16(_ v: Int16) { buffer.writeInteger(v) }
    mutating func int32(_ v: Int32) { buffer.writeInteger(v) }
    mutating func int64(_ v: Int64) { buffer.writeInteger(v) }
    mutating func bool(_ v: Bool) { buffer.writeInteger(v ? Int8(1) : 0) }
    mutating func uuid(_ v: [UInt8]) {
        buffer.writeBytes(v.count == 16 ? v : [UInt8](repeating: 0, count: 16))
    }

    mutating func unsignedVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        buffer.writeInteger(UInt8(v))
    }

    private mutating func length(_ n: Int, int16Field: Bool) {
        if flexible {
            unsignedVarint(UInt64(n) + 1)
        } else if int16Field {
            buffer.writeInteger(Int16(clamping: n))
        } else {
            buffer.writeInteger(Int32(clamping: n))
        }
    }

    /// A string: int16 length (classic) or compact. One longer than 32,767 bytes cannot be
    /// encoded in a classic field: it is cut at a character boundary (only messages echoing client
    /// input can be that long; names are limited long before), so no client value can make the
    /// writer trap.
    mutating func string(_ s: String) {
        let utf8 = s.utf8
        guard !flexible, utf8.count > Int(Int16.max) else {
            length(utf8.count, int16Field: true)
            buffer.writeString(s)
            return
        }
        var end = utf8.index(utf8.startIndex, offsetBy: Int(Int16.max))
        while end > utf8.startIndex && UTF8.isContinuation(utf8[end]) { end = utf8.index(before: end) }
        let cut = utf8[..<end]
        buffer.writeInteger(Int16(cut.count))
        buffer.writeBytes(cut)
    }

    mutating func nullableString(_ s: String?) {
        guard let s else {
            if flexible { unsignedVarint(0) } else { buffer.writeInteger(Int16(-1)) }
            return
        }
        string(s)
    }

    mutating func bytes(_ b: ByteBuffer?) {
        guard var b else {
            if flexible { unsignedVarint(0) } else { buffer.writeInteger(Int32(-1)) }
            return
        }
        length(b.readableBytes, int16Field: false)
        buffer.writeBuffer(&b)
    }

    mutating func bytes(_ b: [UInt8]) {
        length(b.count, int16Field: false)
        buffer.writeBytes(b)
    }

    mutating func rawBytes(_ p: UnsafeRawBufferPointer) {
        length(p.count, int16Field: false)
        buffer.writeBytes(p)
    }

    mutating func array<T>(_ items: [T], _ element: (inout KafkaWriter, T) -> Void) {
        length(items.count, int16Field: false)
        for item in items { element(&self, item) }
    }

    mutating func nullableArray<T>(_ items: [T]?, _ element: (inout KafkaWriter, T) -> Void) {
        guard let items else {
            if flexible { unsignedVarint(0) } else { buffer.writeInteger(Int32(-1)) }
            return
        }
        array(items, element)
    }

    /// An empty tagged-field section (flexible versions only).
    mutating func taggedFields() {
        if flexible { unsignedVarint(0) }
    }
}
