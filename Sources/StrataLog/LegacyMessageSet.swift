/// Kafka's message formats v0 and v1 (magic 0 and 1, the "MessageSet" of Produce v0-v2 and
/// Fetch v0-v3), converted to and from RecordBatch v2 at the protocol edge: the log only ever
/// holds RecordBatch v2.
///
/// One log entry (big-endian):
/// ```
/// offset i64 | message_size i32 | crc u32 | magic i8 | attributes i8 | [timestamp i64, magic 1]
///            | key_length i32 | key | value_length i32 | value
/// ```
/// `message_size` counts from `crc` to the end; the CRC-32 (IEEE, zlib's `crc32`, not the
/// Castagnoli CRC of v2) covers magic..end. Attribute bits 0-2 are the codec: a compressed
/// "wrapper" message's value holds a whole inner message set. Bit 3 (magic 1) is the timestamp
/// type, LogAppendTime when set. Magic sits at byte 16 in both formats and in RecordBatch v2,
/// which is how a produced entry's format is recognised.
public enum LegacyMessageSet {
    /// offset + message_size: the bytes before each message.
    public static let logOverhead = 12
    /// Byte of the magic in an entry (the same in RecordBatch v2).
    public static let magicOffset = 16
    /// crc + magic + attributes + key length + value length (+ timestamp for magic 1).
    public static func minMessageSize(magic: Int8) -> Int { magic == 0 ? 14 : 22 }
    /// Bytes one record takes as an entry of the given magic.
    public static func entrySize(magic: Int8, keyCount: Int?, valueCount: Int?) -> Int {
        logOverhead + minMessageSize(magic: magic) + (keyCount ?? 0) + (valueCount ?? 0)
    }

    /// A produced message set converted to one RecordBatch v2.
    public struct UpConverted: Sendable {
        /// The batch (base offset 0: the log assigns offsets), compressed with `codec` when the
        /// producer compressed its messages, as Kafka stores them with compression.type=producer.
        public let batch: [UInt8]
        public let recordCount: Int
        public let magic: Int8
        public let codec: CompressionCodec
    }

    /// One parsed entry; its views point into the bytes it was parsed from.
    struct Message {
        let offset: Int64
        let magic: Int8
        let attributes: Int8
        /// -1 (Kafka's NO_TIMESTAMP) for magic 0.
        let timestamp: Int64
        let key: UnsafeRawBufferPointer?
        let value: UnsafeRawBufferPointer?
        /// Entry bytes including the 12-byte offset/size prefix.
        let entrySize: Int
        var codecBits: Int8 { attributes & 0x07 }
        var isLogAppendTime: Bool { magic >= 1 && attributes & 0x08 != 0 }
    }

    // MARK: Produce: message set -> RecordBatch v2

    /// Validates a produced message set the way Kafka's LogValidator does for magic 0/1 and
    /// converts it to one RecordBatch v2. Every length is checked against the bytes that remain
    /// before it is used, and every message's CRC-32 is verified (the wrapper's and the inner
    /// messages'). Kafka's rules: all entries have one magic; a compressed wrapper is the only
    /// entry of its set, holds at least one message, and its inner messages have the wrapper's
    /// magic and are not compressed themselves; a producer may not claim LogAppendTime.
    ///
    /// Timestamps: a magic 1 message keeps its own (CreateTime). A magic 0 message has none and
    /// becomes a record with timestamp -1 (RecordBatch.NO_TIMESTAMP), which is what Kafka 3.x's
    /// LogValidator stores on a CreateTime topic (on a LogAppendTime topic the append stamps the
    /// broker's time, as for any batch). Inner offsets are ignored: the log assigns offsets.
    public static func upConvert(_ bytes: UnsafeRawBufferPointer) throws(LegacyMessageSetError) -> UpConverted {
        guard !bytes.isEmpty else { throw .corrupt("empty message set") }
        var writer = RecordBatchWriter(reservingCapacity: bytes.count)
        var position = 0
        var index = 0
        var magic: Int8 = -1
        var codec = CompressionCodec.none
        while position < bytes.count {
            let m = try parseEntry(bytes, at: position, index: index, context: "message")
            if index == 0 { magic = m.magic } else if m.magic != magic {
                throw .invalidRecord("message \(index) has magic \(m.magic) but message 0 has magic \(magic)")
            }
            if m.isLogAppendTime {
                throw .invalidTimestamp("message \(index) claims LogAppendTime; a producer may only send CreateTime")
            }
            if m.codecBits == 0 {
                guard codec == .none else { throw .invalidRecord("a compressed message must be the only entry of its message set") }
                writer.append(key: m.key, value: m.value, timestamp: m.timestamp)
            } else {
                guard index == 0, position + m.entrySize == bytes.count else {
                    throw .invalidRecord("a compressed message must be the only entry of its message set")
                }
                codec = try legacyCodec(m.codecBits, index: index)
                try appendInner(of: m, codec: codec, to: &writer)
            }
            position += m.entrySize
            index += 1
        }
        let count = writer.recordCount
        var batch = writer.finish()
        if codec != .none {
            let reencoded = batch.withUnsafeBytes { p in Result { () throws(RecordBatchError) in try RecordBatch.reencoded(p, codec: codec) } }
            switch reencoded {
            case .success(let b): batch = b
            case .failure(let error): throw .corrupt("\(codec) re-compression failed: \(error)")
            }
        }
        return UpConverted(batch: batch, recordCount: count, magic: magic, codec: codec)
    }

    /// The inner message set of a compressed wrapper, appended record by record.
    private static func appendInner(of wrapper: Message, codec: CompressionCodec, to writer: inout RecordBatchWriter) throws(LegacyMessageSetError) {
        guard let value = wrapper.value, !value.isEmpty else { throw .invalidRecord("compressed message 0 has no value") }
        let decompressed: Result<[UInt8], RecordBatchError>
        if codec == .lz4 && wrapper.magic == 0 {
            // Kafka's magic-0 LZ4 framing computed the frame descriptor checksum over the magic
            // number too, and Kafka ignores that byte for magic 0: repair it, so that a standard
            // LZ4 frame decoder accepts the frame.
            var fixed = Array(value)
            LZ4Frame.repairHeaderChecksum(&fixed)
            decompressed = fixed.withUnsafeBytes { p in Result { () throws(RecordBatchError) in try Compression.decompress(codec, p) } }
        } else {
            decompressed = Result { () throws(RecordBatchError) in try Compression.decompress(codec, value) }
        }
        let inner: [UInt8]
        switch decompressed {
        case .success(let b): inner = b
        case .failure(let error): throw .corrupt("compressed message 0 (\(codec)): \(error)")
        }
        let added = try inner.withUnsafeBytes { p in Result { () throws(LegacyMessageSetError) -> Int in
            var position = 0
            var index = 0
            while position < p.count {
                let m = try parseEntry(p, at: position, index: index, context: "inner message")
                guard m.magic == wrapper.magic else {
                    throw .invalidRecord("inner message \(index) has magic \(m.magic) inside a magic \(wrapper.magic) wrapper")
                }
                guard m.codecBits == 0 else { throw .invalidRecord("inner message \(index) is itself compressed") }
                writer.append(key: m.key, value: m.value, timestamp: m.timestamp)
                position += m.entrySize
                index += 1
            }
            return index
        } }.get()
        guard added > 0 else { throw .invalidRecord("compressed message 0 holds no messages") }
    }

    private static func legacyCodec(_ bits: Int8, index: Int) throws(LegacyMessageSetError) -> CompressionCodec {
        switch bits {
        case 1: return .gzip
        case 2: return .snappy
        case 3: return .lz4
        case 4: throw .unsupportedCompression("message \(index) uses zstd, which needs message format v2 (Produce v7+)")
        default: throw .corrupt("message \(index) has unknown compression codec \(bits)")
        }
    }

    /// Parses and verifies (lengths, magic, CRC-32) the entry at `position`.
    static func parseEntry(_ bytes: UnsafeRawBufferPointer, at position: Int, index: Int, context: String) throws(LegacyMessageSetError) -> Message {
        let remaining = bytes.count - position
        guard remaining >= logOverhead else {
            throw .corrupt("\(context) \(index): \(remaining) bytes left, an entry needs \(logOverhead) for offset and size")
        }
        let offset = Int64(bigEndian: bytes.loadUnaligned(fromByteOffset: position, as: Int64.self))
        let declared = Int32(bigEndian: bytes.loadUnaligned(fromByteOffset: position + 8, as: Int32.self))
        guard declared >= Int32(minMessageSize(magic: 0)), Int(declared) <= remaining - logOverhead else {
            throw .corrupt("\(context) \(index) declares message_size \(declared); \(remaining - logOverhead) bytes remain")
        }
        let size = Int(declared)
        let start = position + logOverhead
        let message = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + size)])
        let magic = Int8(bitPattern: message[4])
        if magic == RecordBatch.currentMagic {
            throw .invalidRecord("\(context) \(index) is a RecordBatch v2 inside a magic 0/1 message set")
        }
        guard magic == 0 || magic == 1 else { throw .corrupt("\(context) \(index) has magic \(magic)") }
        guard size >= minMessageSize(magic: magic) else {
            throw .corrupt("\(context) \(index): message_size \(size) is below the \(minMessageSize(magic: magic)) bytes of a magic \(magic) message")
        }
        let stored = UInt32(bigEndian: message.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        let computed = CRC32.checksum(UnsafeRawBufferPointer(rebasing: message[4...]))
        guard stored == computed else {
            throw .crcMismatch("\(context) \(index): stored CRC-32 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16))")
        }
        let attributes = Int8(bitPattern: message[5])
        var p = 6
        var timestamp: Int64 = -1
        if magic == 1 {
            timestamp = Int64(bigEndian: message.loadUnaligned(fromByteOffset: p, as: Int64.self))
            p += 8
        }
        // p + 8 <= size holds here (minimum size); each length is checked against what is left.
        let keyLength = Int32(bigEndian: message.loadUnaligned(fromByteOffset: p, as: Int32.self))
        p += 4
        guard keyLength >= -1, Int(keyLength) <= size - p - 4 else {
            throw .corrupt("\(context) \(index): key length \(keyLength) with \(size - p - 4) bytes left")
        }
        let key = keyLength < 0 ? nil : UnsafeRawBufferPointer(rebasing: message[p..<(p + Int(keyLength))])
        p += max(0, Int(keyLength))
        let valueLength = Int32(bigEndian: message.loadUnaligned(fromByteOffset: p, as: Int32.self))
        p += 4
        guard valueLength >= -1, Int(valueLength) <= size - p else {
            throw .corrupt("\(context) \(index): value length \(valueLength) with \(size - p) bytes left")
        }
        let value = valueLength < 0 ? nil : UnsafeRawBufferPointer(rebasing: message[p..<(p + Int(valueLength))])
        p += max(0, Int(valueLength))
        guard p == size else { throw .corrupt("\(context) \(index) has \(size - p) bytes after its value") }
        return Message(offset: offset, magic: magic, attributes: attributes, timestamp: timestamp, key: key, value: value,
                       entrySize: logOverhead + size)
    }

    // MARK: Fetch: RecordBatch v2 -> message set

    /// What `downConvert` wrote.
    public struct DownConverted: Sendable, Equatable {
        public var messages = 0
        /// One past the offset of the last message written (the fetch position an old consumer
        /// moves to); nil when nothing was written.
        public var nextOffset: Int64?
    }

    /// Appends the records of the RecordBatch v2 batches in `batches` (whole batches, as the log
    /// reads them) with offsets >= `fromOffset` to `out` as uncompressed magic 0 or 1 entries
    /// with their absolute offsets, as Kafka's RecordsUtil.downConvert does for Fetch v0-v3:
    /// control batches are skipped, headers dropped, a LogAppendTime batch gives every message
    /// its maxTimestamp with attribute bit 3 set (magic 1). Compressed batches are decompressed
    /// (zstd too, which Kafka refuses to down-convert) and served uncompressed. Stops before the
    /// entry that would take `out` past `maxBytes`, but always writes at least one message.
    public static func downConvert(_ batches: UnsafeRawBufferPointer, fromOffset: Int64, toMagic: Int8, maxBytes: Int,
                                   into out: inout [UInt8]) throws -> DownConverted {
        precondition(toMagic == 0 || toMagic == 1)
        var result = DownConverted()
        let startCount = out.count
        var full = false
        var position = 0
        while position < batches.count && !full {
            let rest = UnsafeRawBufferPointer(rebasing: batches[position...])
            guard let size = RecordBatch.declaredSize(at: rest), size <= rest.count, size >= RecordBatch.headerSize else { break }
            let batch = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: rest[..<size]))
            position += size
            guard batch.magic == RecordBatch.currentMagic else {
                throw RecordBatchError.badMagic(batch.magic)
            }
            if batch.isControl || batch.lastOffset < fromOffset { continue }
            let logAppendTime = batch.isLogAppendTime
            let batchTimestamp = batch.maxTimestamp
            try batch.forEachRecord { record in
                guard !full, record.offset >= fromOffset else { return }
                let entry = entrySize(magic: toMagic, keyCount: record.key?.count, valueCount: record.value?.count)
                if result.messages > 0 && out.count - startCount + entry > maxBytes {
                    full = true
                    return
                }
                appendEntry(to: &out, magic: toMagic, offset: record.offset, logAppendTime: logAppendTime,
                            timestamp: logAppendTime ? batchTimestamp : record.timestamp, key: record.key, value: record.value)
                result.messages += 1
                result.nextOffset = record.offset + 1
            }
        }
        return result
    }

    /// Appends one uncompressed entry with its CRC-32.
    public static func appendEntry(to out: inout [UInt8], magic: Int8, offset: Int64, logAppendTime: Bool = false, timestamp: Int64,
                                   key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer?) {
        func be<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) } }
        let size = minMessageSize(magic: magic) + (key?.count ?? 0) + (value?.count ?? 0)
        be(offset)
        be(Int32(truncatingIfNeeded: size))
        let crcAt = out.count
        be(UInt32(0))
        out.append(UInt8(bitPattern: magic))
        out.append(magic >= 1 && logAppendTime ? 0x08 : 0)
        if magic >= 1 { be(timestamp) }
        if let key {
            be(Int32(truncatingIfNeeded: key.count))
            out.append(contentsOf: key)
        } else {
            be(Int32(-1))
        }
        if let value {
            be(Int32(truncatingIfNeeded: value.count))
            out.append(contentsOf: value)
        } else {
            be(Int32(-1))
        }
        let crc = out.withUnsafeBytes { CRC32.checksum(UnsafeRawBufferPointer(rebasing: $0[(crcAt + 4)...])) }
        withUnsafeBytes(of: crc.bigEndian) { b in
            for i in 0..<4 { out[crcAt + i] = b[i] }
        }
    }
}

/// Why a magic 0/1 message set was refused; the Kafka layer maps each case to an error code.
public enum LegacyMessageSetError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A message's CRC-32 does not match (CORRUPT_MESSAGE).
    case crcMismatch(String)
    /// Truncated entries, impossible lengths, bad magic, undecodable compressed payloads (CORRUPT_MESSAGE).
    case corrupt(String)
    /// Well-formed but not allowed: mixed magics, nested compression, more than one wrapper (INVALID_RECORD).
    case invalidRecord(String)
    /// A producer claimed LogAppendTime (INVALID_TIMESTAMP).
    case invalidTimestamp(String)
    /// zstd in a magic 0/1 message (UNSUPPORTED_COMPRESSION_TYPE).
    case unsupportedCompression(String)

    public var description: String {
        switch self {
        case .crcMismatch(let s): return "corrupt message: \(s)"
        case .corrupt(let s): return "corrupt message set: \(s)"
        case .invalidRecord(let s): return "invalid message set: \(s)"
        case .invalidTimestamp(let s): return "invalid timestamp: \(s)"
        case .unsupportedCompression(let s): return "unsupported compression: \(s)"
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320; zlib's `crc32`), the checksum of
/// message format v0 and v1. Slicing-by-8 like `CRC32C.software`.
public enum CRC32 {
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        slicing.checksum(bytes, continuing: crc)
    }

    static let slicing = SlicingBy8CRC(reflectedPolynomial: 0xEDB8_8320)
}

/// The LZ4 frame header fix-up for Kafka's magic-0 LZ4 framing (KAFKA-3160, KIP-57).
enum LZ4Frame {
    static let magic: UInt32 = 0x184D_2204

    /// Rewrites the frame descriptor's header checksum (HC) to the value the LZ4 frame format
    /// defines: the second byte of XXH32 (seed 0) over FLG..(content size, dictionary id).
    /// Kafka's old framing hashed the 4 magic bytes as well. Leaves anything that is not an LZ4
    /// frame header untouched (the decoder then refuses it).
    static func repairHeaderChecksum(_ frame: inout [UInt8]) {
        guard frame.count >= 7 else { return }
        let m = UInt32(frame[0]) | UInt32(frame[1]) << 8 | UInt32(frame[2]) << 16 | UInt32(frame[3]) << 24
        guard m == magic else { return }
        let flg = frame[4]
        var end = 6  // FLG, BD
        if flg & 0x08 != 0 { end += 8 }  // content size
        if flg & 0x01 != 0 { end += 4 }  // dictionary id
        guard frame.count > end else { return }
        let hash = frame.withUnsafeBytes { xxh32(UnsafeRawBufferPointer(rebasing: $0[4..<end])) }
        frame[end] = UInt8(truncatingIfNeeded: hash >> 8)
    }

    /// XXH32 with seed 0, for inputs shorter than 16 bytes (a frame descriptor is at most 14).
    static func xxh32(_ p: UnsafeRawBufferPointer) -> UInt32 {
        precondition(p.count < 16)
        let prime1: UInt32 = 2_654_435_761, prime2: UInt32 = 2_246_822_519, prime3: UInt32 = 3_266_489_917
        let prime4: UInt32 = 668_265_263, prime5: UInt32 = 374_761_393
        func rotl(_ x: UInt32, _ r: UInt32) -> UInt32 { (x << r) | (x >> (32 - r)) }
        var h = prime5 &+ UInt32(p.count)
        var i = 0
        while i + 4 <= p.count {
            let word = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            h = rotl(h &+ word &* prime3, 17) &* prime4
            i += 4
        }
        while i < p.count {
            h = rotl(h &+ UInt32(p[i]) &* prime5, 11) &* prime1
            i += 1
        }
        h ^= h >> 15
        h = h &* prime2
        h ^= h >> 13
        h = h &* prime3
        h ^= h >> 16
        return h
    }
}
