import CStrataScan
import Testing
@testable import StrataBroker
@testable import StrataLog

/// The scan's C record decoder against the Swift one (RecordBatch.forEachRecord), and on garbage.
@Suite struct RecordDecoderTests {
    static func batch(_ n: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        let records = (0..<n).map { i -> ProducerRecord in
            let key: [UInt8]? = next() % 5 == 0 ? nil : Array("key-\(next() % 1000)".utf8)
            let value: [UInt8]? = next() % 7 == 0 ? nil : Array(repeating: UInt8(ascii: "v"), count: Int(next() % 300))
            let headers = (0..<Int(next() % 3)).map { h in ProducerRecord.Header(key: "h\(h)", value: next() % 2 == 0 ? nil : [UInt8(h)]) }
            return ProducerRecord(key: key, value: value, headers: headers, timestamp: 1_700_000_000_000 + Int64(i) * Int64(next() % 100_000))
        }
        return RecordBatchBuilder.build(records)
    }

    @Test func decodesWhatTheSwiftDecoderDecodes() throws {
        for seed in 1...40 as ClosedRange<UInt64> {
            let bytes = Self.batch(Int(seed * 7 % 200) + 1, seed: seed)
            try bytes.withUnsafeBytes { p in
                let batch = RecordBatch(unchecked: p)
                let section = UnsafeRawBufferPointer(rebasing: p[RecordBatch.headerSize...])
                let count = Int(batch.recordCount)
                var views = [strata_record_view](repeating: strata_record_view(), count: count)
                #expect(strata_decode_records(section.baseAddress!.assumingMemoryBound(to: UInt8.self), section.count, Int32(count), &views) == 0)
                var i = 0
                try batch.forEachRecord { r in
                    let v = views[i]
                    #expect(batch.baseOffset + Int64(v.offset_delta) == r.offset)
                    #expect(batch.baseTimestamp &+ v.timestamp_delta == r.timestamp)
                    #expect(v.key_length == (r.key.map { Int32($0.count) } ?? -1))
                    #expect(v.value_length == (r.value.map { Int32($0.count) } ?? -1))
                    if let key = r.key { #expect(section.baseAddress! + Int(v.key_offset) == key.baseAddress!) }
                    if let value = r.value, value.count > 0 { #expect(section.baseAddress! + Int(v.value_offset) == value.baseAddress!) }
                    #expect(Int(v.header_count) == r.headers.count)
                    i += 1
                }
                #expect(i == count)
            }
        }
    }

    @Test func garbageIsRefusedWithinBounds() {
        var state: UInt64 = 99
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        var refused = 0
        for round in 0..<3000 {
            var bytes = Array(Self.batch(20, seed: UInt64(round % 17 + 1))[RecordBatch.headerSize...])
            // Flip, truncate or append: the decoder must stay inside the buffer and say no.
            switch round % 3 {
            case 0: for _ in 0..<Int(next() % 4 + 1) { bytes[Int(next()) % bytes.count] ^= UInt8(next() % 255 + 1) }
            case 1: bytes.removeLast(Int(next()) % bytes.count)
            default: bytes += (0..<Int(next() % 9 + 1)).map { _ in UInt8(next() & 0xFF) }
            }
            var views = [strata_record_view](repeating: strata_record_view(), count: 20)
            let rc = bytes.withUnsafeBytes { strata_decode_records($0.baseAddress?.assumingMemoryBound(to: UInt8.self), $0.count, 20, &views) }
            if rc != 0 { refused += 1; continue }
            for v in views {
                #expect(v.key_length < 0 || Int(v.key_offset) + Int(v.key_length) <= bytes.count)
                #expect(v.value_length < 0 || Int(v.value_offset) + Int(v.value_length) <= bytes.count)
            }
        }
        #expect(refused > 1500, "truncations and appended bytes are always refused; most flips are")
    }
}
