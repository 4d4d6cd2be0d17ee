import Benchmark
import CSQLite
import CStrataScan
import StrataBroker
import StrataLog

// The scan's hot paths, each beside the implementation it replaced, in the same run:
//   record decoding: CStrataScan's strata_decode_records vs RecordBatch.forEachRecord (Swift);
//   member extraction: strata_json_members (2 members, whole object walked) vs SQLite's
//   json_extract (2 calls, the engine's fallback) vs JSONScanner.validate (the broker's validator).
// Events shaped like gen_events.py's, ~185 bytes.

let countries = ["US", "BR", "NL", "CA", "GB", "FR", "DE", "IN"]
let types = ["page_view", "click", "purchase", "user_login", "search", "add_to_cart", "user_logout", "error"]
func event(_ i: Int) -> [UInt8] {
    let amount = i % 8 == 2 ? "\(i % 500).\(i % 100)" : "0.0"
    let s = #"{"event_type":"\#(types[i % 8])","user_id":"u-\#(i * 7919 % 100_000)","ip":"203.0.113.\#(i % 255)","ts":"2025-10-01T00:00:\#(String(format2: i % 60)).000Z","session_id":"s-\#(String(i * 2654435761 % 4_294_967_296, radix: 16))","country":"\#(countries[i % 8])","amount":\#(amount),"latency_ms":\#(i % 900),"path":"/p/\#(i % 1000)"}"#
    return Array(s.utf8)
}
extension String { init(format2 v: Int) { self = v < 10 ? "0\(v)" : "\(v)" } }

let values = (0..<10_000).map(event)
let valueBytes = values.reduce(0) { $0 + $1.count }
let batchBytes = RecordBatchBuilder.build(values.prefix(5000).enumerated().map { i, v in
    ProducerRecord(key: Array("u-\(i)".utf8), value: v, timestamp: 1_759_276_800_000 + Int64(i))
})

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .throughput], maxDuration: .seconds(2))

    Benchmark("decode records: CStrataScan (5000 per batch)", configuration: .init(scalingFactor: .kilo)) { benchmark in
        var views = [strata_record_view](repeating: strata_record_view(), count: 5000)
        for _ in benchmark.scaledIterations {
            batchBytes.withUnsafeBytes { p in
                let section = UnsafeRawBufferPointer(rebasing: p[RecordBatch.headerSize...])
                blackHole(strata_decode_records(section.baseAddress!.assumingMemoryBound(to: UInt8.self), section.count, 5000, &views))
            }
        }
    }
    Benchmark("decode records: baseline RecordBatch.forEachRecord (Swift)", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations {
            try batchBytes.withUnsafeBytes { p in
                var n = 0
                try RecordBatch(unchecked: p).forEachRecord { r in n &+= r.value?.count ?? 0 }
                blackHole(n)
            }
        }
    }

    Benchmark("members: strata_json_members, 2 of 9, whole walk (10k values)") { benchmark in
        let keys = [Array("event_type".utf8), Array("amount".utf8)]
        var out = [strata_json_field](repeating: strata_json_field(), count: 2)
        for _ in benchmark.scaledIterations {
            keys[0].withUnsafeBufferPointer { k0 in
                keys[1].withUnsafeBufferPointer { k1 in
                    var pointers: [UnsafePointer<UInt8>?] = [k0.baseAddress, k1.baseAddress]
                    var lengths: [UInt32] = [UInt32(k0.count), UInt32(k1.count)]
                    for v in values {
                        v.withUnsafeBufferPointer { strata_json_members($0.baseAddress, $0.count, &pointers, &lengths, 2, 0, &out) }
                    }
                }
            }
            blackHole(out[1].real)
        }
    }
    Benchmark("members: baseline SQLite json_extract x2 (10k values)") { benchmark in
        var db: OpaquePointer?
        sqlite3_open(":memory:", &db)
        var stmt: OpaquePointer?
        sqlite3_prepare_v2(db, "SELECT json_extract(?1, '$.event_type'), json_extract(?1, '$.amount')", -1, &stmt, nil)
        for _ in benchmark.scaledIterations {
            for v in values {
                v.withUnsafeBufferPointer { b in
                    sqlite3_bind_text(stmt, 1, UnsafeRawPointer(b.baseAddress!).assumingMemoryBound(to: CChar.self), Int32(b.count), nil)
                }
                _ = sqlite3_step(stmt)
                blackHole(sqlite3_column_double(stmt, 1))
                sqlite3_reset(stmt)
            }
        }
        sqlite3_finalize(stmt)
        sqlite3_close(db)
    }
    Benchmark("members: baseline JSONScanner.validate (10k values)") { benchmark in
        for _ in benchmark.scaledIterations {
            for v in values { blackHole(v.withUnsafeBytes { JSONScanner.isValid($0) }) }
        }
    }
    _ = valueBytes
}
