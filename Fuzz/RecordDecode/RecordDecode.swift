// libFuzzer target: the record decoders on arbitrary batch bytes that pass the header checks
// (`validate(strictRecords: false)`, what a stored batch is checked with before it is read):
// `RecordBatch.forEachRecord` (decompressing), `RecordBatch.firstOffset(atOrAfter:)`, and the C
// decoder of StrataQuery's scans (`strata_decode_records`), called as ScanPipeline calls it and
// checked against the Swift decoder: whatever the C decoder accepts, the Swift one must decode
// to the same records. Traps, ASan reports and broken preconditions are findings.
//
// Unless the top bit of the input's first byte is set, the harness first writes the batch's real
// length and CRC-32C into it, so mutations get past the CRC check. See docs/fuzzing.md.
import CStrataScan
import StrataLog

/// `precondition` that keeps its message in optimized builds (tools/fuzz.sh prints it).
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String = "invariant broken",
             file: StaticString = #file, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}

/// Writes batchLength and the CRC-32C the bytes need to pass the header checks.
func fixLengthAndCRC(_ bytes: inout [UInt8]) {
    guard bytes.count >= RecordBatch.headerSize, bytes[0] & 0x80 == 0 else { return }
    bytes.withUnsafeMutableBytes { p in
        p.storeBytes(of: Int32(truncatingIfNeeded: p.count - RecordBatch.logOverhead).bigEndian, toByteOffset: 8, as: Int32.self)
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(p)[RecordBatch.attributesOffset...]))
        p.storeBytes(of: crc.bigEndian, toByteOffset: RecordBatch.crcOffset, as: UInt32.self)
    }
}

struct Decoded: Equatable {
    var offset: Int64
    var timestamp: Int64
    var keyLength: Int
    var valueLength: Int
    var headerCount: Int
}

func check(_ bytes: UnsafeRawBufferPointer) {
    let batch = RecordBatch(unchecked: bytes)
    guard (try? batch.validate(strictRecords: false)) != nil else { return }

    var records: [Decoded]? = []
    do {
        try batch.forEachRecord { r in
            records!.append(Decoded(offset: r.offset, timestamp: r.timestamp, keyLength: r.key.map(\.count) ?? -1,
                                    valueLength: r.value.map(\.count) ?? -1, headerCount: r.headers.count))
            for h in r.headers {
                require(h.key.count >= 0 && (h.value?.count ?? 0) >= 0)
            }
        }
    } catch {
        records = nil
    }

    for ts in [Int64.min, batch.baseTimestamp, batch.maxTimestamp, Int64.max] {
        let found: Int64?
        do throws(RecordBatchError) { found = try batch.firstOffset(atOrAfter: ts) } catch { continue }
        // LogAppendTime batches answer with their base offset and header time, records unread.
        if ts == Int64.min, !batch.isLogAppendTime, let first = records?.first {
            require(found == first.offset, "firstOffset(atOrAfter: min) = \(String(describing: found)), first record at \(first.offset)")
        }
    }

    // StrataQuery's decoder, on the record section (decompressed first, as the scan does).
    guard let codec = batch.compression else { return }
    let count = Int(batch.recordCount)
    let section = UnsafeRawBufferPointer(rebasing: bytes[RecordBatch.headerSize...])
    let plain: [UInt8]
    if codec == .none {
        plain = Array(section)
    } else {
        guard let out = try? Compression.decompress(codec, section) else { return }
        plain = out
    }
    guard count >= 0, count <= plain.count / 7 + 1 else { return }  // ScanPipeline's guard
    let views = UnsafeMutableBufferPointer<strata_record_view>.allocate(capacity: max(count, 1))
    defer { views.deallocate() }
    let rc = plain.withUnsafeBufferPointer { p in
        strata_decode_records(p.baseAddress ?? UnsafePointer(bitPattern: 1)!, p.count, Int32(count), views.baseAddress!)
    }
    guard rc == 0 else { return }
    guard let records else { fatalError("the C decoder accepts records the Swift decoder refuses") }
    require(records.count == count, "C decoded \(count) records, Swift \(records.count)")
    for (i, r) in records.enumerated() {
        let v = views[i]
        let c = Decoded(offset: batch.baseOffset &+ Int64(v.offset_delta), timestamp: batch.baseTimestamp &+ v.timestamp_delta,
                        keyLength: Int(v.key_length), valueLength: Int(v.value_length), headerCount: Int(v.header_count))
        require(c == r, "record \(i): C decoded \(c), Swift \(r)")
        if v.key_length > 0 { require(Int(v.key_offset) + Int(v.key_length) <= plain.count) }
        if v.value_length > 0 { require(Int(v.value_offset) + Int(v.value_length) <= plain.count) }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRecordDecode(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var bytes = [UInt8](UnsafeRawBufferPointer(start: data, count: size))
    fixLengthAndCRC(&bytes)
    bytes.withUnsafeBytes { check($0) }
    return 0
}
