import Foundation
import StrataCore
import Testing
@testable import StrataLog

/// Cold blocks give back every record exactly: values of every JSON form, non-JSON and binary
/// values, keys, headers, offsets with gaps, batch header fields; hostile bytes never trap.
@Suite struct ColdFormatTests {
    static let documents: [String] = [
        #"{"event_type":"page_view","user_id":"u-1","ts":"2025-10-01T00:00:00.000Z","amount":0.0,"latency_ms":87}"#,
        #"{"event_type":"purchase","user_id":"u-22","ts":"2025-10-01T00:00:01.250Z","amount":12.34,"latency_ms":5}"#,
        #"{"event_type":"purchase","user_id":"u-22","ts":"2025-10-01T00:00:01.250Z","amount":-0.5,"latency_ms":-7}"#,
        #"{"n":[1,2.5,-0,1e3,1E-3,12345678901234567890,-9223372036854775808,0.10,00]}"#,  // 00: not JSON, kept whole
        #"{"n":[1,2.5,-0,1e3,1E-3,12345678901234567890,-9223372036854775808,0.10]}"#,
        #"{"s":"caf\u00e9 \"q\" \\ \/ \n \ud83d\ude00 \u0000","t":"日本語 😀","e":""}"#,
        #"  { "spaced" :  [ true , false , null ] ,"nested":{"a":{"b":[{"c":"d"}]}} }  "#,
        #"{"dup":1,"dup":"two"}"#, #"{}"#, #"[]"#, #"[1,"a",null]"#, #""just a string""#, #"42"#, #"-0.0"#, #"true"#,
        #"{"ts":"2025-02-29T00:00:00.000Z","bad_ts":"2024-02-29T23:59:59.999Z","odd":"2025-10-01T00:00:00Z"}"#,
        "not json", "{\"truncated\":", "{\"a\":1}x", "",
    ]

    static func batches(seed: UInt64 = 1, count: Int = 40) -> [ColdBatch] {
        var rng = SplitMix64(seed: seed)
        var out: [ColdBatch] = []
        var offset: Int64 = 1_000
        var ts: Int64 = 1_759_276_800_000
        for b in 0..<count {
            let n = 1 + Int(rng.next() % 30)
            var records: [ColdRecord] = []
            for i in 0..<n {
                let pick = Int(rng.next() % UInt64(documents.count + 3))
                let value: [UInt8]? = pick < documents.count ? Array(documents[pick].utf8)
                    : pick == documents.count ? nil : pick == documents.count + 1 ? [0xFF, 0x00, 0xFE] : Array("\(rng.next())".utf8)
                // Keys: null, one that is also a string of some values ("u-22"), empty (like the
                // empty string member ""), or their own bytes.
                let key: [UInt8]? = i % 4 == 0 ? nil : i % 4 == 1 ? Array("u-22".utf8) : i % 8 == 2 ? [] : Array("k-\(rng.next() % 50)".utf8)
                let headers = i % 5 == 0 ? [ColdHeader(key: Array("h".utf8), value: nil), ColdHeader(key: [], value: [0, 1, 2])] : []
                // Compacted logs have gaps between offsets; timestamps may go backwards.
                let gap: Int64 = b % 7 == 3 && i > 0 ? Int64(rng.next() % 5) : 0
                offset += gap
                records.append(ColdRecord(offset: offset, timestamp: ts + Int64(rng.next() % 2000) - 500, key: key, value: value, headers: headers))
                offset += 1
            }
            ts += 60_000
            let base = records[0].offset
            out.append(ColdBatch(baseOffset: base, lastOffsetDelta: Int32(records[records.count - 1].offset - base), partitionLeaderEpoch: b % 3 == 0 ? -1 : 7,
                                 attributes: b % 4 == 0 ? 0x14 : 0, producerId: b % 4 == 0 ? 9_000 + Int64(b) : -1, producerEpoch: b % 4 == 0 ? 2 : -1,
                                 baseSequence: b % 4 == 0 ? Int32(b * 10) : -1, baseTimestamp: records[0].timestamp,
                                 maxTimestamp: records.map(\.timestamp).max()!, records: records))
        }
        return out
    }

    @Test(arguments: [1, 2, 3] as [UInt64]) func blocksGiveBackEveryRecordExactly(seed: UInt64) throws {
        let input = Self.batches(seed: seed)
        let bytes = try ColdBlock.encode(input)
        let output = try bytes.withUnsafeBytes { try ColdBlock.decode($0) }
        #expect(output == input)
    }

    @Test func typedTokensRoundTripOrStayText() throws {
        // Every spelling a typed form does not produce itself must stay text.
        let tokens = ["0", "-1", "9223372036854775807", "-9223372036854775808", "9223372036854775808", "-0", "007", "+1", "1.50", "-0.5",
                      "-0.0", "0.000000000000000001", "1.2.3", ".5", "5.", "2025-10-01T00:00:00.000Z", "2025-13-01T00:00:00.000Z",
                      "2024-02-29T23:59:59.999Z", "2023-02-29T00:00:00.000Z", "0000-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z", "", "x"]
        for t in tokens {
            for column in [[t], [t, t, "1"], [t, "2025-10-01T00:00:00.000Z"], [t, "0.5"]] {
                var arena: [UInt8] = []
                var ranges: [Range<Int>] = []
                for s in column {
                    let start = arena.count
                    arena.append(contentsOf: Array(s.utf8))
                    ranges.append(start..<arena.count)
                }
                var w = ColdWriter()
                arena.withUnsafeBytes { TokenColumn.encode(ranges, in: $0, into: &w) }
                var out: [UInt8] = []
                var ends: [Int] = []
                try w.bytes.withUnsafeBytes { b in
                    var r = ColdReader(b)
                    try TokenColumn.decode(&r, count: column.count, into: &out, ends: &ends)
                }
                var back: [String] = []
                var at = 0
                for e in ends {
                    back.append(String(decoding: out[at..<e], as: UTF8.self))
                    at = e
                }
                #expect(back == column, "\(column) came back as \(back) (encoding \(w.bytes.first ?? 0))")
            }
        }
        #expect(TokenColumn.canonicalInteger(UnsafeRawBufferPointer(start: nil, count: 0)) == nil)
        var a: [UInt8] = []
        try TokenColumn.formatTimestampMillisZ(0, into: &a)
        #expect(String(decoding: a, as: UTF8.self) == "1970-01-01T00:00:00.000Z")
    }

    @Test func segmentFilesFindBlocksAndCheckCRCs() throws {
        let input = Self.batches(seed: 5, count: 60)
        let blocks = [Array(input[0..<20]), Array(input[20..<45]), Array(input[45...])]
        var file = try ColdSegmentFile.encode(blocks: blocks, baseOffset: input[0].baseOffset, nextOffset: 99_999, hotBytes: 12_345,
                                              largestTimestamp: 42)
        try file.withUnsafeBytes { f in
            let segment = try ColdSegmentFile(parsing: f)
            #expect(segment.blocks.count == 3 && segment.hotBytes == 12_345 && segment.nextOffset == 99_999)
            #expect(segment.blocks[1].firstOffset == input[20].baseOffset)
            for i in 0..<3 { #expect(try segment.batches(ofBlock: i, in: f) == blocks[i]) }
        }
        // A flipped bit in a block is found by its CRC; in the directory, by the header CRC.
        let at = file.count - 10
        file[at] ^= 0x40
        file.withUnsafeBytes { f in
            let segment = try? ColdSegmentFile(parsing: f)
            #expect(segment != nil)
            #expect(throws: (any Error).self) { try segment!.batches(ofBlock: 2, in: f) }
        }
        file[at] ^= 0x40
        file[30] ^= 0x01
        file.withUnsafeBytes { f in #expect(throws: ColdFormatError.self) { try ColdSegmentFile(parsing: f) } }
    }

    /// Mutated and truncated blocks: decoding refuses or returns something, never traps or
    /// allocates past its bounds.
    @Test func hostileBlocksNeverTrap() throws {
        let bytes = try ColdBlock.encode(Self.batches(seed: 9, count: 10))
        var rng = SplitMix64(seed: 77)
        for round in 0..<3000 {
            var b = bytes
            switch round % 3 {
            case 0: b = Array(b.prefix(Int(rng.next() % UInt64(b.count))))
            case 1:
                for _ in 0..<(1 + Int(rng.next() % 4)) { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            default:
                // Lengths and counts near the front (the stream table) set to large values.
                let i = Int(rng.next() % UInt64(min(64, b.count)))
                b[i] = 0xFF
            }
            _ = try? b.withUnsafeBytes { try ColdBlock.decode($0, maxBytes: 1 << 24) }
        }
    }
}

/// Batches re-encoded from cold for readers: valid RecordBatch v2 (CRC, structure, Kafka's own
/// validation) whose records equal the originals, uncompressed and zstd.
@Suite struct ColdServingTests {
    @Test(arguments: [CompressionCodec.none, .zstd]) func reencodedBatchesAreValidAndIdentical(codec: CompressionCodec) throws {
        let input = ColdFormatTests.batches(seed: 11, count: 30)
        let decoded = try ColdBlock.encode(input).withUnsafeBytes { try ColdBlock.decode($0) }
        for (original, cold) in zip(input, decoded) {
            let bytes = try cold.recordBatch(compression: codec)
            try bytes.withUnsafeBytes { p in
                let batch = RecordBatch(unchecked: p)
                // Not strict: compacted batches legitimately hold fewer records than their offset span.
                try batch.validate(strictRecords: false)
                #expect(batch.baseOffset == original.baseOffset && batch.lastOffsetDelta == original.lastOffsetDelta)
                #expect(batch.producerId == original.producerId && batch.baseSequence == original.baseSequence)
                #expect(batch.isTransactional == (original.attributes & 0x10 != 0))
                #expect(batch.compression == codec || batch.compression == CompressionCodec.none)
                // Read back through the log engine's own record decoder.
                let again = try ColdBatch(batch)
                #expect(again.records == original.records)
                #expect(again.maxTimestamp == original.maxTimestamp && again.baseTimestamp == original.baseTimestamp)
            }
        }
    }
}

/// Blocks written by hand to lie in the ways a review found: each is refused with an error, not
/// a trap or an allocation the size of the lie.
@Suite struct ColdHostileBlockTests {
    /// A block of `records` records in one batch, all of one shape with one slot, whose column is `column`.
    static func block(records: Int, literal: [UInt8] = Array("{\"a\":".utf8), column: [UInt8], zstdKinds: Bool = false) throws -> [UInt8] {
        var batches = ColdWriter()
        batches.signed(0); batches.varint(UInt64(records - 1)); batches.signed(0); batches.varint(0)
        batches.signed(-1); batches.signed(-1); batches.signed(-1); batches.signed(0); batches.signed(0); batches.varint(UInt64(records))
        var recs = ColdWriter()
        for _ in 0..<records { recs.signed(0); recs.signed(0); recs.varint(0); recs.varint(0) }
        let kinds = [UInt8](repeating: 2, count: records)
        var shapes = ColdWriter()
        shapes.varint(1); shapes.varint(1); shapes.varint(1)
        shapes.blob(literal); shapes.blob(Array("}".utf8)); shapes.varint(0)
        var out = ColdWriter()
        out.varint(1); out.varint(UInt64(records)); out.varint(7)
        for (i, s) in [batches.bytes, recs.bytes, [], kinds, [], shapes.bytes, column].enumerated() {
            if i == 3 && zstdKinds {
                out.bytes.append(1); out.varint(UInt64(s.count)); out.blob(try ColdBlock.zstd(s))
            } else {
                out.bytes.append(0); out.varint(UInt64(s.count)); out.blob(s)
            }
        }
        return out.bytes
    }

    @Test func aWellFormedHandWrittenBlockDecodes() throws {
        var column = ColdWriter()
        column.bytes.append(1)  // integers
        column.bytes.append(0)  // as deltas
        for _ in 0..<3 { column.signed(1) }
        let batches = try Self.block(records: 3, column: column.bytes).withUnsafeBytes { try ColdBlock.decode($0) }
        #expect(batches.first?.records.map { String(decoding: $0.value ?? [], as: UTF8.self) } == [#"{"a":1}"#, #"{"a":2}"#, #"{"a":3}"#])
    }

    @Test func lyingBlocksAreRefused() throws {
        // A dictionary with no entries that tokens index into.
        #expect(throws: (any Error).self) { try Self.block(records: 1, column: [4, 0, 0]).withUnsafeBytes { try ColdBlock.decode($0) } }
        // More tokens than the column has bytes (each token takes at least one).
        #expect(throws: (any Error).self) { try Self.block(records: 100, column: [5]).withUnsafeBytes { try ColdBlock.decode($0) } }
        // A stream that decompresses past the block's budget.
        let inflating = try Self.block(records: 100_000, column: [5] + [UInt8](repeating: 0, count: 100_000), zstdKinds: true)
        #expect(throws: (any Error).self) { try inflating.withUnsafeBytes { try ColdBlock.decode($0, maxBytes: 64 << 10) } }
        // A long literal repeated by every record: the output, not the input, passes the budget.
        let amplified = try Self.block(records: 2_000, literal: [UInt8](repeating: 0x20, count: 64 << 10) + Array("{\"a\":".utf8),
                                       column: [5] + [UInt8](repeating: 0, count: 2_000), zstdKinds: true)
        #expect(throws: (any Error).self) { try amplified.withUnsafeBytes { try ColdBlock.decode($0, maxBytes: 16 << 20) } }
    }
}
