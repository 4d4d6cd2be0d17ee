/// One record to be written: what a producer hands over.
public struct ProducerRecord: Sendable, Equatable {
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [Header]
    /// Milliseconds since the epoch (CreateTime).
    public var timestamp: Int64

    public struct Header: Sendable, Equatable {
        public var key: String
        public var value: [UInt8]?
        public init(key: String, value: [UInt8]?) {
            self.key = key
            self.value = value
        }
    }

    public init(key: [UInt8]? = nil, value: [UInt8]?, headers: [Header] = [], timestamp: Int64) {
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
    }
}

/// Builds uncompressed RecordBatch v2 bytes, the same bytes a Kafka producer sends, so the
/// embedded API and the CLI write exactly what network clients write.
public enum RecordBatchBuilder {
    /// Encodes `records` as one batch with the given base offset (the log rewrites it on append).
    /// `producerId` -1 means "no idempotent producer", as in Kafka.
    public static func build(
        _ records: [ProducerRecord], baseOffset: Int64 = 0, partitionLeaderEpoch: Int32 = -1,
        producerId: Int64 = -1, producerEpoch: Int16 = -1, baseSequence: Int32 = -1, transactional: Bool = false
    ) -> [UInt8] {
        precondition(!records.isEmpty, "a record batch holds at least one record")
        precondition(records.count <= Int(Int32.max))
        let baseTimestamp = records[0].timestamp
        var maxTimestamp = baseTimestamp
        var body: [UInt8] = []
        body.reserveCapacity(records.reduce(0) { $0 + 24 + ($1.key?.count ?? 0) + ($1.value?.count ?? 0) })
        var scratch: [UInt8] = []
        for (i, record) in records.enumerated() {
            maxTimestamp = max(maxTimestamp, record.timestamp)
            scratch.removeAll(keepingCapacity: true)
            scratch.append(0)  // record attributes: unused in v2
            Varint.append(record.timestamp &- baseTimestamp, to: &scratch)
            Varint.append(Int64(i), to: &scratch)
            appendNullable(record.key, to: &scratch)
            appendNullable(record.value, to: &scratch)
            Varint.append(Int64(record.headers.count), to: &scratch)
            for header in record.headers {
                let k = Array(header.key.utf8)
                Varint.append(Int64(k.count), to: &scratch)
                scratch.append(contentsOf: k)
                appendNullable(header.value, to: &scratch)
            }
            Varint.append(Int64(scratch.count), to: &body)
            body.append(contentsOf: scratch)
        }

        return assemble(records: body, baseOffset: baseOffset, partitionLeaderEpoch: partitionLeaderEpoch, attributes: transactional ? 0x10 : 0,
                        lastOffsetDelta: Int32(records.count - 1), baseTimestamp: baseTimestamp, maxTimestamp: maxTimestamp,
                        producerId: producerId, producerEpoch: producerEpoch, baseSequence: baseSequence, recordCount: Int32(records.count))
    }

    /// A batch from its records section (already compressed when `attributes` says so) and its
    /// header fields: the 61-byte header, its length and CRC-32C filled in.
    public static func assemble(records body: [UInt8], baseOffset: Int64, partitionLeaderEpoch: Int32, attributes: Int16, lastOffsetDelta: Int32,
                                baseTimestamp: Int64, maxTimestamp: Int64, producerId: Int64, producerEpoch: Int16, baseSequence: Int32,
                                recordCount: Int32) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: RecordBatch.headerSize)
        out.reserveCapacity(RecordBatch.headerSize + body.count)
        out.append(contentsOf: body)
        out.withUnsafeMutableBytes { p in
            storeHeader(p, baseOffset: baseOffset, partitionLeaderEpoch: partitionLeaderEpoch, attributes: attributes,
                        lastOffsetDelta: lastOffsetDelta, baseTimestamp: baseTimestamp, maxTimestamp: maxTimestamp, producerId: producerId,
                        producerEpoch: producerEpoch, baseSequence: baseSequence, recordCount: recordCount)
        }
        return out
    }

    /// Fills the 61-byte header of the batch `p` (its records already written after it):
    /// the fields, the batch length from `p.count`, magic 2, and the CRC over attributes..end.
    static func storeHeader(_ p: UnsafeMutableRawBufferPointer, baseOffset: Int64, partitionLeaderEpoch: Int32, attributes: Int16,
                            lastOffsetDelta: Int32, baseTimestamp: Int64, maxTimestamp: Int64, producerId: Int64, producerEpoch: Int16,
                            baseSequence: Int32, recordCount: Int32) {
        p.storeBytes(of: baseOffset.bigEndian, toByteOffset: 0, as: Int64.self)
        p.storeBytes(of: Int32(truncatingIfNeeded: p.count - RecordBatch.logOverhead).bigEndian, toByteOffset: 8, as: Int32.self)
        p.storeBytes(of: partitionLeaderEpoch.bigEndian, toByteOffset: 12, as: Int32.self)
        p.storeBytes(of: RecordBatch.currentMagic, toByteOffset: 16, as: Int8.self)
        p.storeBytes(of: attributes.bigEndian, toByteOffset: 21, as: Int16.self)
        p.storeBytes(of: lastOffsetDelta.bigEndian, toByteOffset: 23, as: Int32.self)
        p.storeBytes(of: baseTimestamp.bigEndian, toByteOffset: 27, as: Int64.self)
        p.storeBytes(of: maxTimestamp.bigEndian, toByteOffset: 35, as: Int64.self)
        p.storeBytes(of: producerId.bigEndian, toByteOffset: 43, as: Int64.self)
        p.storeBytes(of: producerEpoch.bigEndian, toByteOffset: 51, as: Int16.self)
        p.storeBytes(of: baseSequence.bigEndian, toByteOffset: 53, as: Int32.self)
        p.storeBytes(of: recordCount.bigEndian, toByteOffset: 57, as: Int32.self)
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[RecordBatch.attributesOffset...]))
        p.storeBytes(of: crc.bigEndian, toByteOffset: RecordBatch.crcOffset, as: UInt32.self)
    }

    /// A transaction marker as Kafka's coordinator writes it: a control, transactional batch of
    /// one record whose key is version 0 + the marker type and value version 0 + the epoch.
    public static func controlBatch(producerId: Int64, epoch: Int16, type: ControlRecordType, coordinatorEpoch: Int32, timestamp: Int64) -> [UInt8] {
        var key = [UInt8](repeating: 0, count: 4)
        key[3] = UInt8(type.rawValue)
        var value = [UInt8](repeating: 0, count: 6)
        withUnsafeBytes(of: coordinatorEpoch.bigEndian) { for i in 0..<4 { value[2 + i] = $0[i] } }
        var batch = build([ProducerRecord(key: key, value: value, timestamp: timestamp)], producerId: producerId, producerEpoch: epoch, baseSequence: -1)
        batch.withUnsafeMutableBytes { p in
            p.storeBytes(of: Int16(0x30).bigEndian, toByteOffset: RecordBatch.attributesOffset, as: Int16.self)  // control | transactional
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[RecordBatch.attributesOffset...]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: RecordBatch.crcOffset, as: UInt32.self)
        }
        return batch
    }

    /// A nullable byte string as records hold them: a zigzag varint length (-1 for null), the bytes.
    public static func appendNullable(_ bytes: [UInt8]?, to out: inout [UInt8]) {
        guard let bytes else {
            Varint.append(-1, to: &out)
            return
        }
        Varint.append(Int64(bytes.count), to: &out)
        out.append(contentsOf: bytes)
    }

    public static func appendNullable(_ bytes: UnsafeRawBufferPointer?, to out: inout [UInt8]) {
        guard let bytes else {
            Varint.append(-1, to: &out)
            return
        }
        Varint.append(Int64(bytes.count), to: &out)
        out.append(contentsOf: bytes)
    }
}

/// Streams records into one uncompressed batch without per-record allocations: the fast path of
/// `strata produce`. Produces the same bytes as `RecordBatchBuilder.build` for the same records.
public struct RecordBatchWriter: Sendable {
    private var body: [UInt8] = []
    public private(set) var recordCount = 0
    private var baseTimestamp: Int64 = 0
    private var maxTimestamp: Int64 = 0

    public init(reservingCapacity bytes: Int = 0) { body.reserveCapacity(bytes) }

    /// Bytes the finished batch will have.
    public var sizeInBytes: Int { RecordBatch.headerSize + body.count }
    public var isEmpty: Bool { recordCount == 0 }

    /// Bytes a record adds, at most (for size limits before appending).
    public static func maxRecordOverhead(keyCount: Int?, valueCount: Int?) -> Int {
        1 + 3 * Varint.maxLength + (keyCount ?? 0) + (valueCount ?? 0) + 2 * Varint.maxLength
    }

    public mutating func append(key: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer?, timestamp: Int64) {
        if recordCount == 0 {
            baseTimestamp = timestamp
            maxTimestamp = timestamp
        } else if timestamp > maxTimestamp {
            maxTimestamp = timestamp
        }
        let tsDelta = timestamp &- baseTimestamp
        let offsetDelta = Int64(recordCount)
        let keyLength = key.map { Int64($0.count) } ?? -1
        let valueLength = value.map { Int64($0.count) } ?? -1
        // The record's length prefix comes first, so its size is computed rather than measured.
        let length = 1 + Varint.encodedLength(tsDelta) + Varint.encodedLength(offsetDelta)
            + Varint.encodedLength(keyLength) + max(0, Int(keyLength))
            + Varint.encodedLength(valueLength) + max(0, Int(valueLength)) + 1
        Varint.append(Int64(length), to: &body)
        body.append(0)
        Varint.append(tsDelta, to: &body)
        Varint.append(offsetDelta, to: &body)
        Varint.append(keyLength, to: &body)
        if let key { body.append(contentsOf: key) }
        Varint.append(valueLength, to: &body)
        if let value { body.append(contentsOf: value) }
        body.append(0)  // no headers
        recordCount += 1
    }

    /// The finished batch (baseOffset 0; the log assigns it). Resets the writer for reuse.
    public mutating func finish() -> [UInt8] {
        precondition(recordCount > 0, "a record batch holds at least one record")
        let out = RecordBatchBuilder.assemble(records: body, baseOffset: 0, partitionLeaderEpoch: -1, attributes: 0,
                                              lastOffsetDelta: Int32(recordCount - 1), baseTimestamp: baseTimestamp, maxTimestamp: maxTimestamp,
                                              producerId: -1, producerEpoch: -1, baseSequence: -1, recordCount: Int32(recordCount))
        body.removeAll(keepingCapacity: true)
        recordCount = 0
        return out
    }
}
