import Testing
@testable import StrataParquet

/// The byte-level encodings against the examples of the Parquet and Thrift specifications; whole
/// files are read back by pyarrow and DuckDB in tools/compat/test_export.py.
@Suite struct EncodingTests {
    func rle(_ values: [UInt32], _ width: Int) -> [UInt8] {
        var out: [UInt8] = []
        values.withUnsafeBufferPointer { RLEHybrid.encode($0, bitWidth: width, into: &out) }
        return out
    }

    @Test func bitPackingMatchesTheSpecificationsExample() {
        // Encodings.md: 0..7 with bit width 3 pack into 10001000 11000110 11111010.
        #expect(rle([0, 1, 2, 3, 4, 5, 6, 7], 3) == [0x03, 0x88, 0xC6, 0xFA])
    }

    @Test func repeatsBecomeRunsAndTheLastGroupIsPadded() {
        #expect(rle(Array(repeating: 5, count: 10), 3) == [0x14, 0x05])  // run of 10: header 10 << 1
        #expect(rle([1, 1, 1], 1) == [0x03, 0x07])                          // one padded group
        #expect(rle(Array(repeating: 300, count: 8), 9) == [0x10, 0x2C, 0x01])  // a 2-byte run value
        // 3 singles, then a run of 20: the run starts inside the first group, so the group takes
        // 8 values and the run goes on with the remaining 15.
        let mixed = rle([1, 0, 1] + Array(repeating: 1, count: 20), 1)
        #expect(mixed == [0x03, 0xFD, 0x1E, 0x01])
        #expect(rle([], 1).isEmpty)
    }

    @Test func runsLongerThanAVarintByte() {
        #expect(rle(Array(repeating: 1, count: 1000), 1) == [0xD0, 0x0F, 0x01])  // 2000 as a varint
    }

    @Test func bitWidths() {
        #expect(RLEHybrid.bitWidth(0) == 0)
        #expect(RLEHybrid.bitWidth(1) == 1)
        #expect(RLEHybrid.bitWidth(255) == 8)
        #expect(RLEHybrid.bitWidth(256) == 9)
        #expect(RLEHybrid.bitWidth(.max) == 32)
    }

    @Test func thriftCompactFieldsAndLists() {
        #expect(ThriftCompactWriter.zigzag(0) == 0)
        #expect(ThriftCompactWriter.zigzag(-1) == 1)
        #expect(ThriftCompactWriter.zigzag(1) == 2)
        #expect(ThriftCompactWriter.zigzag(.min) == .max)
        var w = ThriftCompactWriter()
        w.i32(1, 2)              // delta 1, type i32 (5), zigzag 4
        w.i64(20, -3)            // delta 19 > 15: long form, type i64 (6), id as zigzag varint
        w.bool(21, true)         // the header carries the value
        w.listHeader(22, of: .i32, count: 3)
        for v: Int32 in [0, 3, 8] { w.elementI32(v) }
        w.beginStruct(23)
        w.string(4, "ab")
        w.endStruct()
        let bytes = w.finish()
        #expect(bytes == [0x15, 0x04, 0x06, 0x28, 0x05, 0x11, 0x19, 0x35, 0x00, 0x06, 0x10, 0x1C, 0x48, 0x02, 0x61, 0x62, 0x00, 0x00])
    }

    @Test func longListsCarryTheirSizeAsAVarint() {
        var w = ThriftCompactWriter()
        w.listHeader(1, of: .binary, count: 20)
        for _ in 0..<20 { w.elementString("") }
        let bytes = w.finish()
        #expect(Array(bytes.prefix(3)) == [0x19, 0xF8, 0x14])
    }

    @Test func aFileIsFramedByMagicAndItsFooterLength() throws {
        var id = ParquetColumnBuilder(name: "id", type: .int64, optional: false)
        var name = ParquetColumnBuilder(name: "name", type: .byteArray, logicalType: .string, optional: true)
        var flag = ParquetColumnBuilder(name: "flag", type: .boolean, optional: true)
        for i in 0..<1000 {
            id.append(Int64(i))
            if i % 7 == 0 { name.appendNull() } else { Array("n\(i % 10)".utf8).withUnsafeBytes { name.append(bytes: $0) } }
            if i % 3 == 0 { flag.appendNull() } else { flag.append(i % 2 == 0) }
        }
        let file = try ParquetFile.encode(rowCount: 1000, columns: [id, name, flag], createdBy: "test")
        #expect(Array(file.prefix(4)) == ParquetFile.magic)
        #expect(Array(file.suffix(4)) == ParquetFile.magic)
        let n = file.count
        let footerLength = Int(file[n - 8]) | Int(file[n - 7]) << 8 | Int(file[n - 6]) << 16 | Int(file[n - 5]) << 24
        #expect(footerLength > 0 && footerLength < n - 12)
        // Deterministic: the same columns give the same bytes (reruns of an export compare equal).
        #expect(try ParquetFile.encode(rowCount: 1000, columns: [id, name, flag], createdBy: "test") == file)
        // A column with a different row count is refused, not written.
        #expect(throws: ParquetError.self) { try ParquetFile.encode(rowCount: 999, columns: [id], createdBy: "test") }
    }

    @Test func dictionariesOnlyForRepeatedValues() {
        var repeated = ParquetColumnBuilder(name: "c", type: .byteArray, logicalType: .string, optional: false)
        var distinct = ParquetColumnBuilder(name: "o", type: .int64, optional: false)
        for i in 0..<10_000 {
            Array("v\(i % 12)".utf8).withUnsafeBytes { repeated.append(bytes: $0) }
            distinct.append(Int64(i))
        }
        let d = ParquetFile.buildDictionary(repeated)
        #expect(d?.count == 12)
        #expect(d?.indexes.count == 10_000)
        #expect(d?.indexes[13] == 1)
        #expect(ParquetFile.buildDictionary(distinct) == nil)
    }

    @Test func statisticsFollowTheTypeOrders() {
        var d = ParquetColumnBuilder(name: "d", type: .double, optional: true)
        for v in [3.5, 0.0, -2.0, .nan] { d.append(v) }
        d.appendNull()
        let (lo, hi) = ParquetFile.statistics(d)
        #expect(lo == withUnsafeBytes(of: (-2.0).bitPattern.littleEndian) { Array($0) })
        #expect(hi == withUnsafeBytes(of: (3.5).bitPattern.littleEndian) { Array($0) })
        var z = ParquetColumnBuilder(name: "z", type: .double, optional: false)
        z.append(0.0)
        #expect(ParquetFile.statistics(z).0 == withUnsafeBytes(of: (-0.0).bitPattern.littleEndian) { Array($0) })
        var s = ParquetColumnBuilder(name: "s", type: .byteArray, logicalType: .string, optional: false)
        for v in ["b", "ab", "é", "a"] { Array(v.utf8).withUnsafeBytes { s.append(bytes: $0) } }
        #expect(ParquetFile.statistics(s).0 == Array("a".utf8))
        #expect(ParquetFile.statistics(s).1 == Array("é".utf8))  // unsigned byte order: 0xC3 > 'b'
        var blob = ParquetColumnBuilder(name: "b", type: .byteArray, optional: false)
        [0xFF].withUnsafeBytes { blob.append(bytes: $0) }
        #expect(ParquetFile.statistics(blob).0 == nil)  // unannotated byte arrays: no min/max
    }

    @Test func pagesEndByTheBytesOfTheirValues() {
        var c = ParquetColumnBuilder(name: "v", type: .byteArray, optional: true)
        let big = [UInt8](repeating: 0x61, count: 600 << 10)
        for i in 0..<5000 {
            if i % 2 == 1 { c.appendNull(); continue }
            if i < 10 { big.withUnsafeBytes { c.append(bytes: $0) } } else { [0x62].withUnsafeBytes { c.append(bytes: $0) } }
        }
        // Every two 600 KiB values reach 1 MiB and end a page; then the small values share one.
        #expect(ParquetFile.pageEnd(c, from: 0, firstValue: 0, rows: 5000, dictionary: false) == 3)
        #expect(ParquetFile.pageEnd(c, from: 3, firstValue: 2, rows: 5000, dictionary: false) == 7)
        #expect(ParquetFile.pageEnd(c, from: 7, firstValue: 4, rows: 5000, dictionary: false) == 5000)
        #expect(ParquetFile.pageEnd(c, from: 4999, firstValue: 2500, rows: 5000, dictionary: false) == 5000)
        var empty = ParquetColumnBuilder(name: "e", type: .int64, optional: true)
        empty.appendNull()
        #expect((try? ParquetFile.encode(rowCount: 1, columns: [empty], createdBy: "test")) != nil)  // all null: no dictionary page
    }

    @Test func deltaBinaryPackedMatchesTheSpecificationsExample() {
        // Encodings.md, example 1: 1, 2, 3, 4, 5 → deltas 1 (min delta 1, width 0).
        var c = ParquetColumnBuilder(name: "o", type: .int64, optional: false)
        for v: Int64 in [1, 2, 3, 4, 5] { c.append(v) }
        var out: [UInt8] = []
        ParquetFile.delta(c, 0..<5, into: &out)
        #expect(out == [0x80, 0x01, 0x04, 0x05, 0x02, 0x02, 0, 0, 0, 0])
        // Example 2: 7, 5, 3, 1, 2, 3, 4, 5 → deltas -2 -2 -2 1 1 1 1, min -2, width 2.
        var d = ParquetColumnBuilder(name: "v", type: .int32, optional: false)
        for v: Int32 in [7, 5, 3, 1, 2, 3, 4, 5] { d.append(v) }
        out = []
        ParquetFile.delta(d, 0..<8, into: &out)
        #expect(Array(out.prefix(10)) == [0x80, 0x01, 0x04, 0x08, 0x0E, 0x03, 0x02, 0, 0, 0])
        // Deltas above the minimum 0 0 0 3 | 3 3 3 (then padding 0s) at 2 bits, LSB first: 0b11000000, 0b00111111.
        #expect(Array(out.dropFirst(10)) == [0xC0, 0x3F] + [UInt8](repeating: 0, count: 6))
        // Extremes wrap instead of trapping.
        var e = ParquetColumnBuilder(name: "w", type: .int64, optional: false)
        for v: Int64 in [.max, .min, 0, .max] { e.append(v) }
        out = []
        ParquetFile.delta(e, 0..<4, into: &out)
        #expect(!out.isEmpty)
    }
}
