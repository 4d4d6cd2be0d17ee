import CCompression
import Dispatch
import Glibc
import StrataCore
import Synchronization

#if _endian(big)
#error("PLAIN encoding below copies values as they lie in memory: little-endian only")
#endif

public struct ParquetError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Writes a Parquet file (format 2.x, one row group) from filled columns: each column chunk
/// dictionary-encoded when its distinct values are few enough, else PLAIN; optional columns
/// carry RLE definition levels; pages (data page v1) are zstd-compressed; the chunk statistics
/// (null count, min/max) let readers skip it. The footer is Thrift compact (ThriftCompactWriter).
/// Layout, byte by byte: docs/format.md, "Parquet export".
public enum ParquetFile {
    public static let magic: [UInt8] = Array("PAR1".utf8)
    /// A dictionary is abandoned past this many distinct values or bytes (PLAIN instead).
    static let dictionaryEntryLimit = 1 << 16
    static let dictionaryByteLimit = 1 << 20
    /// Uncompressed bytes of values a data page aims at.
    static let pageTargetBytes = 1 << 20
    /// Statistics of byte arrays longer than this are left out (min/max would bloat the footer).
    static let statisticsMaxBytes = 64

    enum Encoding: Int32 { case plain = 0, rle = 3, deltaBinaryPacked = 5, rleDictionary = 8 }
    enum PageType: Int32 { case data = 0, dictionary = 2 }
    static let zstdCodec: Int32 = 6

    /// The file's bytes: `rowCount` rows of `columns` (each holding exactly that many rows), with
    /// `metadata` as the footer's key/value metadata.
    public static func encode(rowCount: Int, columns: [ParquetColumnBuilder], metadata: [(key: String, value: String)] = [],
                              createdBy: String) throws -> [UInt8] {
        for c in columns where c.rowCount != rowCount {
            throw ParquetError("column \(c.name) has \(c.rowCount) rows, not \(rowCount)")
        }
        // Column chunks are independent: encoded (and compressed) on every core.
        let results = Mutex<[Result<EncodedChunk, Error>?]>(Array(repeating: nil, count: columns.count))
        DispatchQueue.concurrentPerform(iterations: columns.count) { i in
            let r = Result { try encodeChunk(columns[i], rows: rowCount) }
            results.withLock { $0[i] = r }
        }
        var file = magic
        var placed: [(chunk: EncodedChunk, offset: Int)] = []
        for r in results.withLock({ $0 }) {
            let chunk = try r!.get()
            placed.append((chunk, file.count))
            file.append(contentsOf: chunk.bytes)
        }
        let footer = footer(rowCount: rowCount, columns: columns, chunks: placed, metadata: metadata, createdBy: createdBy)
        file.append(contentsOf: footer)
        let length = UInt32(footer.count)
        for shift in stride(from: 0, to: 32, by: 8) { file.append(UInt8(truncatingIfNeeded: length >> UInt32(shift))) }
        file.append(contentsOf: magic)
        return file
    }

    struct EncodedChunk {
        var bytes: [UInt8] = []
        /// Offsets within `bytes`.
        var dictionaryPageOffset: Int?
        var dataPageOffset = 0
        var uncompressedSize = 0
        var encodings: [Encoding] = []
        var nullCount = 0
        var minValue: [UInt8]?
        var maxValue: [UInt8]?
    }

    // MARK: - Column chunks

    static func encodeChunk(_ c: ParquetColumnBuilder, rows: Int) throws -> EncodedChunk {
        var chunk = EncodedChunk()
        let values = c.valueCount
        chunk.nullCount = rows - values
        (chunk.minValue, chunk.maxValue) = statistics(c)
        // No dictionary for booleans (a bit each already) or a chunk without values.
        let dictionary = c.type == .boolean || values == 0 ? nil : buildDictionary(c)
        if let dictionary {
            chunk.dictionaryPageOffset = 0
            try appendPage(&chunk, type: .dictionary, body: dictionary.plain, count: dictionary.count)
        }
        chunk.dataPageOffset = chunk.bytes.count
        var valueCursor = 0
        var pageStart = 0
        var levels: [UInt32] = []
        while pageStart < rows || (rows == 0 && pageStart == 0) {
            let pageEnd = Self.pageEnd(c, from: pageStart, firstValue: valueCursor, rows: rows, dictionary: dictionary != nil)
            var body: [UInt8] = []
            var pageValues = pageEnd - pageStart
            if c.optional {
                levels.removeAll(keepingCapacity: true)
                pageValues = 0
                for r in pageStart..<pageEnd {
                    let d = c.defined[r]
                    levels.append(UInt32(d))
                    pageValues += Int(d)
                }
                var encoded: [UInt8] = []
                levels.withUnsafeBufferPointer { RLEHybrid.encode($0, bitWidth: 1, into: &encoded) }
                let n = UInt32(encoded.count)
                for shift in stride(from: 0, to: 32, by: 8) { body.append(UInt8(truncatingIfNeeded: n >> UInt32(shift))) }
                body.append(contentsOf: encoded)
            }
            let range = valueCursor..<(valueCursor + pageValues)
            if let dictionary {
                let width = max(1, RLEHybrid.bitWidth(UInt32(max(0, dictionary.count - 1))))
                body.append(UInt8(width))
                dictionary.indexes.withUnsafeBufferPointer { all in
                    RLEHybrid.encode(UnsafeBufferPointer(rebasing: all[range]), bitWidth: width, into: &body)
                }
            } else {
                valueEncoding(c, dictionary: false) == .deltaBinaryPacked ? delta(c, range, into: &body) : plain(c, range, into: &body)
            }
            try appendPage(&chunk, type: .data, body: body, count: pageEnd - pageStart, encoding: valueEncoding(c, dictionary: dictionary != nil))
            valueCursor = range.upperBound
            pageStart = pageEnd
            if rows == 0 { break }
        }
        chunk.encodings = dictionary != nil ? [.plain, .rle, .rleDictionary] : [.rle, valueEncoding(c, dictionary: false)]
        return chunk
    }

    /// Where the page starting at row `start` ends: at most 65,536 rows, and without a dictionary
    /// once its PLAIN values reach ~1 MiB (counted value by value: one long value makes a short
    /// page, never a huge one; at least one row).
    static func pageEnd(_ c: ParquetColumnBuilder, from start: Int, firstValue: Int, rows: Int, dictionary: Bool) -> Int {
        let limit = min(rows, start + (1 << 16))
        guard !dictionary else { return limit }
        var bytes = 0
        var value = firstValue
        var row = start
        while row < limit {
            if !c.optional || c.defined[row] != 0 {
                bytes += c.type == .byteArray ? 4 + (c.ends[value] - (value == 0 ? 0 : c.ends[value - 1])) : (c.type == .boolean ? 1 : 8)
                value += 1
            }
            row += 1
            if bytes >= pageTargetBytes { break }
        }
        return max(row, min(rows, start + 1))
    }

    /// How a chunk's data pages hold values: dictionary indexes, deltas for integers (offsets,
    /// times and counters shrink to a few bits), PLAIN for the rest.
    static func valueEncoding(_ c: ParquetColumnBuilder, dictionary: Bool) -> Encoding {
        if dictionary { return .rleDictionary }
        return c.type == .int64 || c.type == .int32 ? .deltaBinaryPacked : .plain
    }

    /// DELTA_BINARY_PACKED (Encodings.md) of values `range` of an INT32/INT64 column: a header
    /// (block size 128, 4 miniblocks, value count, first value), then per block of 128 deltas the
    /// smallest delta and per miniblock of 32 its bit width and the deltas above the smallest,
    /// bit-packed LSB first. Wrapping arithmetic throughout, as the specification's readers use.
    static func delta(_ c: ParquetColumnBuilder, _ range: Range<Int>, into out: inout [UInt8]) {
        let values: [Int64] = c.type == .int64 ? Array(c.int64s[range]) : c.int32s[range].map { Int64($0) }
        func zigzag(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }
        RLEHybrid.varint(128, into: &out)
        RLEHybrid.varint(4, into: &out)
        RLEHybrid.varint(UInt64(values.count), into: &out)
        RLEHybrid.varint(zigzag(values.first ?? 0), into: &out)
        guard values.count > 1 else { return }
        var deltas: [Int64] = []
        deltas.reserveCapacity(values.count - 1)
        for i in 1..<values.count { deltas.append(values[i] &- values[i - 1]) }
        var blockStart = 0
        var packed: [UInt64] = []
        while blockStart < deltas.count {
            let block = deltas[blockStart..<min(deltas.count, blockStart + 128)]
            let minDelta = block.min()!
            RLEHybrid.varint(zigzag(minDelta), into: &out)
            packed.removeAll(keepingCapacity: true)
            for d in block { packed.append(UInt64(bitPattern: d &- minDelta)) }
            // Miniblocks with no values keep a width byte (0) and no body.
            let miniblocks = (packed.count + 31) / 32
            var widths: [Int] = []
            for m in 0..<4 {
                guard m < miniblocks else {
                    widths.append(0)
                    continue
                }
                let top = packed[(m * 32)..<min(packed.count, m * 32 + 32)].reduce(0, |)
                widths.append(top == 0 ? 0 : 64 - top.leadingZeroBitCount)
            }
            for w in widths { out.append(UInt8(w)) }
            for m in 0..<miniblocks {
                let width = widths[m]
                var accumulator: UInt64 = 0
                var bits = 0
                for k in 0..<32 {
                    var x = m * 32 + k < packed.count ? packed[m * 32 + k] : 0  // the last miniblock is padded
                    var left = width
                    while left > 0 {
                        let take = min(left, 56 - bits)
                        let mask: UInt64 = take == 64 ? .max : (1 << UInt64(take)) - 1
                        accumulator |= (x & mask) << UInt64(bits)
                        bits += take
                        x = take == 64 ? 0 : x >> UInt64(take)
                        left -= take
                        while bits >= 8 {
                            out.append(UInt8(truncatingIfNeeded: accumulator))
                            accumulator >>= 8
                            bits -= 8
                        }
                    }
                }
            }
            blockStart += 128
        }
    }

    /// PLAIN encoding of values `range` of `c`.
    static func plain(_ c: ParquetColumnBuilder, _ range: Range<Int>, into out: inout [UInt8]) {
        switch c.type {
        case .int32: c.int32s[range].withUnsafeBytes { out.append(contentsOf: $0) }
        case .int64: c.int64s[range].withUnsafeBytes { out.append(contentsOf: $0) }
        case .double: c.doubles[range].withUnsafeBytes { out.append(contentsOf: $0) }
        case .boolean:
            var byte: UInt8 = 0
            var bit = 0
            for v in c.booleans[range] {
                if v { byte |= 1 << UInt8(bit) }
                bit += 1
                if bit == 8 {
                    out.append(byte)
                    (byte, bit) = (0, 0)
                }
            }
            if bit > 0 { out.append(byte) }
        case .byteArray:
            for i in range {
                c.withValue(i) { v in
                    let n = UInt32(v.count)
                    for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: n >> UInt32(shift))) }
                    out.append(contentsOf: v)
                }
            }
        }
    }

    static func appendPage(_ chunk: inout EncodedChunk, type: PageType, body: [UInt8], count: Int, encoding: Encoding = .plain) throws {
        guard body.count <= Int(Int32.max), count <= Int(Int32.max) else { throw ParquetError("a page of \(body.count) bytes is too large") }
        let compressed = try zstd(body)
        var h = ThriftCompactWriter()
        h.i32(1, type.rawValue)
        h.i32(2, Int32(body.count))
        h.i32(3, Int32(compressed.count))
        if type == .data {
            h.beginStruct(5)
            h.i32(1, Int32(count))
            h.i32(2, encoding.rawValue)
            h.i32(3, Encoding.rle.rawValue)
            h.i32(4, Encoding.rle.rawValue)
            h.endStruct()
        } else {
            h.beginStruct(7)
            h.i32(1, Int32(count))
            h.i32(2, Encoding.plain.rawValue)
            h.endStruct()
        }
        let header = h.finish()
        chunk.bytes.append(contentsOf: header)
        chunk.bytes.append(contentsOf: compressed)
        chunk.uncompressedSize += header.count + body.count
    }

    static func zstd(_ body: [UInt8]) throws -> [UInt8] {
        var out: UnsafeMutablePointer<UInt8>?
        var outCount = 0
        let rc = body.withUnsafeBufferPointer { strata_compress(Int32(STRATA_CODEC_ZSTD), $0.baseAddress, $0.count, &out, &outCount) }
        defer { free(out) }
        guard rc == 0, let out else { throw ParquetError("zstd compression failed (\(rc))") }
        return Array(UnsafeBufferPointer(start: out, count: outCount))
    }

    // MARK: - Dictionaries

    struct DictionaryEncoding {
        var count = 0
        var plain: [UInt8] = []
        var indexes: [UInt32] = []
    }

    /// The column's values as dictionary indexes plus the PLAIN dictionary page, or nil when
    /// the distinct values pass the limits (then PLAIN is about as small after zstd).
    static func buildDictionary(_ c: ParquetColumnBuilder) -> DictionaryEncoding? {
        var d = DictionaryEncoding()
        d.indexes.reserveCapacity(c.valueCount)
        switch c.type {
        case .byteArray:
            var table = ByteStringTable()
            for i in 0..<c.valueCount {
                let index = c.withValue(i) { v -> UInt32? in
                    table.index(of: v) { count in
                        guard d.count < dictionaryEntryLimit, d.plain.count + 4 + v.count <= dictionaryByteLimit else { return false }
                        _ = count
                        let n = UInt32(v.count)
                        for shift in stride(from: 0, to: 32, by: 8) { d.plain.append(UInt8(truncatingIfNeeded: n >> UInt32(shift))) }
                        d.plain.append(contentsOf: v)
                        d.count += 1
                        return true
                    }
                }
                guard let index else { return nil }
                d.indexes.append(index)
            }
        case .int32, .int64, .double:
            var seen: [UInt64: UInt32] = [:]
            let width = c.type == .int32 ? 4 : 8
            for i in 0..<c.valueCount {
                let bits: UInt64 = switch c.type {
                case .int32: UInt64(UInt32(bitPattern: c.int32s[i]))
                case .int64: UInt64(bitPattern: c.int64s[i])
                default: c.doubles[i].bitPattern
                }
                if let index = seen[bits] {
                    d.indexes.append(index)
                    continue
                }
                guard d.count < dictionaryEntryLimit else { return nil }
                seen[bits] = UInt32(d.count)
                d.indexes.append(UInt32(d.count))
                for shift in stride(from: 0, to: width * 8, by: 8) { d.plain.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
                d.count += 1
            }
        case .boolean:
            return nil
        }
        // Mostly distinct values (offsets, ids): the dictionary would repeat the column.
        if d.count * 2 > c.valueCount && c.valueCount > 64 { return nil }
        return d
    }

    // MARK: - Statistics

    /// PLAIN min and max of the chunk's values (byte arrays without a length prefix), as the
    /// column's type orders them; nil when there are none or they would be too long.
    static func statistics(_ c: ParquetColumnBuilder) -> ([UInt8]?, [UInt8]?) {
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        switch c.type {
        case .int32:
            guard let lo = c.int32s.min(), let hi = c.int32s.max() else { return (nil, nil) }
            return (le(lo), le(hi))
        case .int64:
            guard let lo = c.int64s.min(), let hi = c.int64s.max() else { return (nil, nil) }
            return (le(lo), le(hi))
        case .double:
            let finite = c.doubles.lazy.filter { !$0.isNaN }
            guard var lo = finite.min(), var hi = finite.max() else { return (nil, nil) }
            // The specification's rule for signed zeros: -0.0 as a minimum, +0.0 as a maximum.
            if lo == 0 { lo = -0.0 }
            if hi == 0 { hi = 0.0 }
            return (le(lo.bitPattern), le(hi.bitPattern))
        case .boolean:
            guard !c.booleans.isEmpty else { return (nil, nil) }
            return ([c.booleans.contains(false) ? 0 : 1], [c.booleans.contains(true) ? 1 : 0])
        case .byteArray:
            // Unannotated byte arrays have had more than one sort order in readers' history.
            guard c.logicalType == .string || c.logicalType == .json, c.valueCount > 0 else { return (nil, nil) }
            var lo = 0, hi = 0
            for i in 1..<c.valueCount {
                if c.withValue(i, { v in c.withValue(lo) { compareBytes(v, $0) < 0 } }) { lo = i }
                if c.withValue(i, { v in c.withValue(hi) { compareBytes(v, $0) > 0 } }) { hi = i }
            }
            let minValue = c.withValue(lo) { Array($0) }
            let maxValue = c.withValue(hi) { Array($0) }
            guard minValue.count <= statisticsMaxBytes, maxValue.count <= statisticsMaxBytes else { return (nil, nil) }
            return (minValue, maxValue)
        }
    }

    static func compareBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
        let n = min(a.count, b.count)
        if n > 0 {
            let r = memcmp(a.baseAddress!, b.baseAddress!, n)
            if r != 0 { return Int(r) }
        }
        return a.count - b.count
    }

    // MARK: - Footer

    static func footer(rowCount: Int, columns: [ParquetColumnBuilder], chunks: [(chunk: EncodedChunk, offset: Int)],
                       metadata: [(key: String, value: String)], createdBy: String) -> [UInt8] {
        var w = ThriftCompactWriter()
        w.i32(1, 2)
        w.listHeader(2, of: .structure, count: columns.count + 1)
        w.beginElementStruct()
        w.string(4, "schema")
        w.i32(5, Int32(columns.count))
        w.endStruct()
        for c in columns {
            w.beginElementStruct()
            w.i32(1, c.type.rawValue)
            w.i32(3, c.optional ? 1 : 0)
            w.string(4, c.name)
            switch c.logicalType {
            case .none: break
            case .string: w.i32(6, 0)
            case .json: w.i32(6, 19)
            case .timestampMillisUTC: w.i32(6, 9)
            }
            switch c.logicalType {
            case .none: break
            case .string:
                w.beginStruct(10)
                w.emptyStruct(1)
                w.endStruct()
            case .json:
                w.beginStruct(10)
                w.emptyStruct(12)
                w.endStruct()
            case .timestampMillisUTC:
                w.beginStruct(10)
                w.beginStruct(8)
                w.bool(1, true)
                w.beginStruct(2)
                w.emptyStruct(1)
                w.endStruct()
                w.endStruct()
                w.endStruct()
            }
            w.endStruct()
        }
        w.i64(3, Int64(rowCount))
        w.listHeader(4, of: .structure, count: 1)
        w.beginElementStruct()
        w.listHeader(1, of: .structure, count: columns.count)
        var totalUncompressed = 0
        var totalCompressed = 0
        for (c, placed) in zip(columns, chunks) {
            let chunk = placed.chunk
            let start = placed.offset
            totalUncompressed += chunk.uncompressedSize
            totalCompressed += chunk.bytes.count
            w.beginElementStruct()
            w.i64(2, 0)
            w.beginStruct(3)
            w.i32(1, c.type.rawValue)
            w.listHeader(2, of: .i32, count: chunk.encodings.count)
            for e in chunk.encodings { w.elementI32(e.rawValue) }
            w.listHeader(3, of: .binary, count: 1)
            w.elementString(c.name)
            w.i32(4, zstdCodec)
            w.i64(5, Int64(rowCount))
            w.i64(6, Int64(chunk.uncompressedSize))
            w.i64(7, Int64(chunk.bytes.count))
            w.i64(9, Int64(start + chunk.dataPageOffset))
            if let d = chunk.dictionaryPageOffset { w.i64(11, Int64(start + d)) }
            w.beginStruct(12)
            w.i64(3, Int64(chunk.nullCount))
            if let maxValue = chunk.maxValue, let minValue = chunk.minValue {
                w.binary(5, maxValue)
                w.binary(6, minValue)
            }
            w.endStruct()
            w.endStruct()
            w.endStruct()
        }
        w.i64(2, Int64(totalUncompressed))
        w.i64(3, Int64(rowCount))
        w.i64(5, Int64(chunks.first?.offset ?? magic.count))
        w.i64(6, Int64(totalCompressed))
        w.i16(7, 0)
        w.endStruct()
        if !metadata.isEmpty {
            w.listHeader(5, of: .structure, count: metadata.count)
            for kv in metadata {
                w.beginElementStruct()
                w.string(1, kv.key)
                w.string(2, kv.value)
                w.endStruct()
            }
        }
        w.string(6, createdBy)
        w.listHeader(7, of: .structure, count: columns.count)
        for _ in columns {
            w.beginElementStruct()
            w.emptyStruct(1)
            w.endStruct()
        }
        return w.finish()
    }
}
