import Foundation
import Testing
@testable import StrataLog

/// Inputs found by the fuzz targets (tools/fuzz.sh, docs/fuzzing.md), minimized, kept as
/// regression tests: each once trapped, ran out of memory or broke an invariant.
@Suite struct FuzzRegressionTests {
    /// A batch around `records` (the bytes after the 61-byte header): `count` records, the given
    /// base offset and attributes, real length and CRC, so that `validate(strictRecords: false)`
    /// passes and only the records are wrong.
    static func batch(records: [UInt8], count: Int32, baseOffset: Int64 = 0, attributes: Int16 = 0,
                      lastOffsetDelta: Int32? = nil) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: RecordBatch.headerSize) + records
        out.withUnsafeMutableBytes { p in
            p.storeBytes(of: baseOffset.bigEndian, toByteOffset: 0, as: Int64.self)
            p.storeBytes(of: Int32(p.count - RecordBatch.logOverhead).bigEndian, toByteOffset: 8, as: Int32.self)
            p.storeBytes(of: RecordBatch.currentMagic, toByteOffset: RecordBatch.magicOffset, as: Int8.self)
            p.storeBytes(of: attributes.bigEndian, toByteOffset: RecordBatch.attributesOffset, as: Int16.self)
            p.storeBytes(of: (lastOffsetDelta ?? max(0, count - 1)).bigEndian, toByteOffset: 23, as: Int32.self)
            p.storeBytes(of: Int64(-1).bigEndian, toByteOffset: 43, as: Int64.self)  // producerId
            p.storeBytes(of: count.bigEndian, toByteOffset: 57, as: Int32.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(p)[RecordBatch.attributesOffset...]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: RecordBatch.crcOffset, as: UInt32.self)
        }
        return out
    }

    /// Fuzz/RecordDecode: a record claiming 2^31-1 headers in 10 bytes made `forEachRecord`
    /// reserve room for all of them (a 2.4 GB allocation: out of memory, or a trap) before reading
    /// the first. The validator bounds the count by the bytes left; the record decoder now does
    /// too, and refuses negative counts as the validator and CStrataScan do.
    @Test func aHugeHeaderCountIsRefusedBeforeAnyAllocation() throws {
        // length 10, attributes, timestamp delta 0, offset delta 0, null key, null value,
        // header count Int32.max (zig-zag varint fe ff ff ff 0f).
        let record: [UInt8] = [0x14, 0x00, 0x00, 0x00, 0x01, 0x01, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F]
        let bytes = Self.batch(records: record, count: 1)
        try bytes.withUnsafeBytes { p in
            let batch = RecordBatch(unchecked: p)
            try batch.validate(strictRecords: false)
            #expect(throws: RecordBatchError.self) { try batch.forEachRecord { _ in } }
            #expect(throws: RecordBatchError.self) { try batch.validateForAppend(maxBatchBytes: 1 << 20, nowMs: 0) }
        }
        // Negative header count (zig-zag 0x01 = -1): refused, not read as "no headers".
        let negative = Self.batch(records: [0x0C, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01], count: 1)
        try negative.withUnsafeBytes { p in
            let batch = RecordBatch(unchecked: p)
            try batch.validate(strictRecords: false)
            #expect(throws: RecordBatchError.self) { try batch.forEachRecord { _ in } }
        }
        // The same record with one real header still decodes.
        let ok = Self.batch(records: [0x12, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x02, 0x68, 0x01], count: 1)
        try ok.withUnsafeBytes { p in
            var headers: [Int] = []
            try RecordBatch(unchecked: p).forEachRecord { headers.append($0.headers.count) }
            #expect(headers == [1])
        }
    }

    /// Fuzz/RecordDecode: a batch whose baseOffset (outside the CRC) is Int64.max trapped in
    /// `forEachRecord` on the second record's offset (baseOffset + 1 overflows). Offsets wrap
    /// now, as `firstRecord(atOrAfter:)`'s always did; the log never stores such a batch (its
    /// loader checks every baseOffset against the one expected).
    @Test func anOffsetPastInt64MaxDoesNotTrap() throws {
        // Two records: offset deltas 0 and 1, null keys, values "a" and "b", no headers.
        let records: [UInt8] = [0x0E, 0x00, 0x00, 0x00, 0x01, 0x02, 0x61, 0x00,
                                0x0E, 0x00, 0x00, 0x02, 0x01, 0x02, 0x62, 0x00]
        let bytes = Self.batch(records: records, count: 2, baseOffset: .max)
        try bytes.withUnsafeBytes { p in
            let batch = RecordBatch(unchecked: p)
            try batch.validate(strictRecords: true)
            var offsets: [Int64] = []
            try batch.forEachRecord { offsets.append($0.offset) }
            #expect(offsets == [.max, .min])
            #expect(try batch.firstOffset(atOrAfter: .min) == .max)
        }
    }
}
