import StrataCore

/// Kafka's `message.timestamp.type`.
public enum TimestampType: String, Sendable {
    case createTime = "CreateTime"
    case logAppendTime = "LogAppendTime"
}

/// What an append requires of a batch beyond its structure (per topic, Kafka's LogValidator
/// settings). The defaults accept what Kafka accepts by default.
public struct AppendPolicy: Sendable, Equatable {
    /// message.timestamp.type.
    public var timestampType: TimestampType = .createTime
    /// message.timestamp.before.max.ms: how far in the past a CreateTime may be (Int64.max: any).
    public var timestampBeforeMaxMs: Int64 = .max
    /// message.timestamp.after.max.ms: how far in the future a CreateTime may be (Int64.max: any).
    public var timestampAfterMaxMs: Int64 = .max
    /// Compacted topics: a record without a key could never be compacted away.
    public var requireKeys = false
    /// compression.type naming a codec: batches are stored re-encoded with it (nil: as sent).
    public var recompression: CompressionCodec?

    public init() {}
}

/// What validating a batch found: the summary the header should have carried.
public struct ValidatedBatch: Sendable, Equatable {
    public let recordCount: Int
    /// The largest record timestamp (LogAppendTime: the append time).
    public let maxTimestamp: Int64
    /// Offset delta of the first record carrying `maxTimestamp`.
    public let offsetDeltaOfMaxTimestamp: Int32
    /// True when the stored header must differ from the one sent (maxTimestamp recomputed, or
    /// LogAppendTime stamped): the caller rewrites it and the CRC.
    public let headerNeedsRewrite: Bool
}

extension RecordBatch {
    /// Kafka's `LogValidator` for a produced batch: the header (length, magic, CRC, size limit,
    /// count) and then every record, decompressing compressed batches: lengths, varints, offset
    /// deltas 0..<count, the record count against the records really there, every byte of the
    /// payload used, timestamps that do not overflow and sit inside the policy's bounds, keys where
    /// required. The header's maxTimestamp is a client's claim and is recomputed from the records
    /// (Sarama before 1.45.1 sends -1; trusting it lets time retention delete fresh data).
    public func validateForAppend(maxBatchBytes: Int, policy: AppendPolicy = AppendPolicy(), nowMs: Int64) throws(RecordBatchError) -> ValidatedBatch {
        // The header checks; the record walk below replaces validate's own (one pass, not two).
        try validate(maxBatchBytes: maxBatchBytes, strictRecords: false)
        guard Int64(recordCount) == Int64(lastOffsetDelta) + 1 else {
            throw .badRecordCount(count: recordCount, lastOffsetDelta: lastOffsetDelta)
        }
        guard !isControl else { throw .malformedRecord("control batches are written by the broker, not produced") }
        let count = Int(recordCount)
        guard let codec = compression else { throw .malformedRecord("unknown compression codec \(attributes & 0x7)") }
        let summary: (maxTimestamp: Int64, delta: Int32)
        if codec == .none {
            summary = try Self.walkRecords(bytes, from: RecordBatch.headerSize, count: count, baseTimestamp: baseTimestamp, policy: policy, nowMs: nowMs)
        } else {
            // A payload of a few bytes may claim any count; a record takes at least 7 bytes
            // decompressed, so the count bounds what decompression may produce as well.
            let limit = min(Compression.maxDecompressedBytes, max(1 << 20, count.multipliedReportingOverflow(by: 64).overflow ? Int.max : count * 64))
            let payload = UnsafeRawBufferPointer(rebasing: bytes[RecordBatch.headerSize...])
            let baseTs = baseTimestamp
            summary = try Compression.withDecompressed(codec, payload, maxBytes: limit) { (records) throws(RecordBatchError) in
                try Self.walkRecords(records, from: 0, count: count, baseTimestamp: baseTs, policy: policy, nowMs: nowMs)
            }
        }
        if policy.timestampType == .logAppendTime {
            return ValidatedBatch(recordCount: count, maxTimestamp: nowMs, offsetDeltaOfMaxTimestamp: lastOffsetDelta,
                                  headerNeedsRewrite: !isLogAppendTime || maxTimestamp != nowMs)
        }
        return ValidatedBatch(recordCount: count, maxTimestamp: summary.maxTimestamp, offsetDeltaOfMaxTimestamp: summary.delta,
                              headerNeedsRewrite: isLogAppendTime || summary.maxTimestamp != maxTimestamp)
    }

    /// Walks `count` records from `start`, which must fill `bytes` exactly; returns the largest
    /// timestamp and the offset delta of its first record.
    private static func walkRecords(_ bytes: UnsafeRawBufferPointer, from start: Int, count: Int, baseTimestamp: Int64,
                                    policy: AppendPolicy, nowMs: Int64) throws(RecordBatchError) -> (Int64, Int32) {
        var reader = ByteReader(bytes, position: start)
        var maxTimestamp = Int64.min
        var maxDelta: Int32 = 0
        var missingKeys: [Int] = []
        for index in 0..<count {
            let length = try reader.readVarint()
            guard length >= 0, Int(length) <= reader.remaining else {
                throw .malformedRecord("record \(index) length \(length) past the end of the batch (the batch claims \(count) records)")
            }
            let end = reader.position + Int(length)
            var r = ByteReader(UnsafeRawBufferPointer(rebasing: bytes[..<end]), position: reader.position)
            _ = try r.readInt8()  // attributes: unused in v2 records
            let timestampDelta = try r.readVarlong()
            let (timestamp, overflow) = baseTimestamp.addingReportingOverflow(timestampDelta)
            guard !overflow else { throw .malformedRecord("record \(index): base timestamp \(baseTimestamp) + delta \(timestampDelta) overflows") }
            let offsetDelta = try r.readVarint()
            guard offsetDelta == Int32(index) else { throw .malformedRecord("record \(index) has offset delta \(offsetDelta)") }
            let keyLength = try r.readVarint()
            if keyLength < 0 && policy.requireKeys { missingKeys.append(index) }
            _ = try r.readNullableBytes(length: keyLength)
            _ = try r.readNullableBytes(length: try r.readVarint())
            let headerCount = try r.readVarint()
            guard headerCount >= 0, Int(headerCount) <= r.remaining / 2 else {
                throw .malformedRecord("record \(index) header count \(headerCount)")
            }
            for _ in 0..<Int(headerCount) {
                let keyLength = try r.readVarint()
                guard keyLength >= 0 else { throw .malformedRecord("record \(index) has a null header key") }
                _ = try r.readNullableBytes(length: keyLength)
                _ = try r.readNullableBytes(length: try r.readVarint())
            }
            guard r.position == end else { throw .malformedRecord("record \(index) has \(end - r.position) trailing bytes") }
            try reader.skip(Int(length))
            // NO_TIMESTAMP (-1, e.g. an up-converted magic 0 message) is exempt, as in Kafka's LogValidator.
            if policy.timestampType == .createTime && timestamp != -1 {
                try checkBounds(timestamp, index: index, policy: policy, nowMs: nowMs)
            }
            if timestamp > maxTimestamp {
                maxTimestamp = timestamp
                maxDelta = offsetDelta
            }
        }
        guard reader.remaining == 0 else { throw .malformedRecord("\(reader.remaining) bytes after the last of \(count) records") }
        if !missingKeys.isEmpty { throw .missingKeys(indexes: missingKeys) }
        return (count == 0 ? -1 : maxTimestamp, maxDelta)
    }

    private static func checkBounds(_ timestamp: Int64, index: Int, policy: AppendPolicy, nowMs: Int64) throws(RecordBatchError) {
        if policy.timestampBeforeMaxMs != .max, nowMs.saturatingSubtract(timestamp) > policy.timestampBeforeMaxMs {
            throw .invalidTimestamp("record \(index) timestamp \(timestamp) is more than message.timestamp.before.max.ms=\(policy.timestampBeforeMaxMs) before the broker's time \(nowMs)")
        }
        if policy.timestampAfterMaxMs != .max, timestamp.saturatingSubtract(nowMs) > policy.timestampAfterMaxMs {
            throw .invalidTimestamp("record \(index) timestamp \(timestamp) is more than message.timestamp.after.max.ms=\(policy.timestampAfterMaxMs) after the broker's time \(nowMs)")
        }
    }

    /// A copy of a validated batch whose header carries `validated`'s summary, CRC rewritten.
    public static func rewritingHeader(_ bytes: UnsafeRawBufferPointer, validated: ValidatedBatch, timestampType: TimestampType) -> [UInt8] {
        var copy = [UInt8](bytes)
        copy.withUnsafeMutableBytes { p in
            var attributes = UInt16(bigEndian: p.loadUnaligned(fromByteOffset: attributesOffset, as: UInt16.self))
            if timestampType == .logAppendTime { attributes |= 0x8 } else { attributes &= ~0x8 }
            p.storeBytes(of: attributes.bigEndian, toByteOffset: attributesOffset, as: UInt16.self)
            p.storeBytes(of: validated.maxTimestamp.bigEndian, toByteOffset: 35, as: Int64.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(p)[attributesOffset...]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: crcOffset, as: UInt32.self)
        }
        return copy
    }
}

/// A produced batch that passed validation, in the form it will be stored: everything an append
/// does that does not depend on the log's state (CRC, the record walk, decompression,
/// re-encoding, header rewrite), so it can run on any thread while appends stay in order.
public struct PreparedBatch: Sendable {
    /// The bytes to store instead of those sent (header rewritten or re-encoded); nil: as sent.
    public let replacement: [UInt8]?
    /// lastOffsetDelta of the stored batch (recordCount - 1, checked).
    public let lastOffsetDelta: Int64
    public let maxTimestamp: Int64
    /// Size of the stored batch.
    public let storedBytes: Int
}

extension RecordBatch {
    /// Validates `bytes` for appending (`validateForAppend`) and produces what is stored:
    /// re-encoded with `policy.recompression` when it names another codec, header and CRC
    /// rewritten when the header's summary was wrong or LogAppendTime applies. A re-encoded batch
    /// is held to `maxBatchBytes` again (Kafka re-checks sizes that re-compression changed).
    public static func prepareForAppend(_ bytes: UnsafeRawBufferPointer, maxBatchBytes: Int, policy: AppendPolicy,
                                        nowMs: Int64) throws(RecordBatchError) -> PreparedBatch {
        let view = RecordBatch(unchecked: bytes)
        let validated = try view.validateForAppend(maxBatchBytes: maxBatchBytes, policy: policy, nowMs: nowMs)
        var replacement: [UInt8]?
        if let codec = policy.recompression, view.compression != codec {
            let encoded = try reencoded(bytes, codec: codec)
            guard encoded.count <= maxBatchBytes else { throw .tooLarge(size: encoded.count, max: maxBatchBytes) }
            replacement = encoded
        }
        if validated.headerNeedsRewrite {
            replacement = replacement.map { encoded in encoded.withUnsafeBytes { rewritingHeader($0, validated: validated, timestampType: policy.timestampType) } }
                ?? rewritingHeader(bytes, validated: validated, timestampType: policy.timestampType)
        }
        return PreparedBatch(replacement: replacement, lastOffsetDelta: Int64(validated.recordCount - 1),
                             maxTimestamp: validated.maxTimestamp, storedBytes: replacement?.count ?? bytes.count)
    }

    /// The same batch with its records encoded with `codec` (compression.type on a topic): the
    /// header is kept, the payload decompressed and compressed again, attributes, length and CRC
    /// rewritten. The records themselves are unchanged byte for byte.
    public static func reencoded(_ bytes: UnsafeRawBufferPointer, codec: CompressionCodec) throws(RecordBatchError) -> [UInt8] {
        let batch = RecordBatch(unchecked: bytes)
        guard bytes.count >= headerSize, let from = batch.compression else { throw .malformedRecord("unknown compression codec") }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[headerSize...])
        let encoded: [UInt8] = try Compression.withDecompressed(from, payload, maxBytes: Compression.maxDecompressedBytes) { (records) throws(RecordBatchError) -> [UInt8] in
            if codec == .none { return Array(records) }
            guard let out = Compression.compress(codec, Array(records)) else { throw .malformedRecord("\(codec) compression failed") }
            return out
        }
        let total = headerSize + encoded.count
        guard total - logOverhead <= Int(Int32.max) else { throw .tooLarge(size: total, max: Int(Int32.max)) }
        var out = [UInt8](bytes[..<headerSize])
        out += encoded
        out.withUnsafeMutableBytes { p in
            p.storeBytes(of: Int32(total - logOverhead).bigEndian, toByteOffset: 8, as: Int32.self)
            var attributes = UInt16(bigEndian: p.loadUnaligned(fromByteOffset: attributesOffset, as: UInt16.self))
            attributes = (attributes & ~7) | UInt16(codec.rawValue)
            p.storeBytes(of: attributes.bigEndian, toByteOffset: attributesOffset, as: UInt16.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(p)[attributesOffset...]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: crcOffset, as: UInt32.self)
        }
        return out
    }
}
