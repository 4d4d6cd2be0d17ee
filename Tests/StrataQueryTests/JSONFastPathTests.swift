import CStrataScan
import Foundation
import Testing
@testable import StrataBroker
@testable import StrataLog
@testable import StrataQuery

/// The fast paths (member columns, the `->>` override, GroupedRows) must give exactly what
/// SQLite's own json_extract and sorter give: every test runs both and compares.
@Suite struct JSONFastPathTests {
    /// Values chosen to hit every branch: escapes, nesting, duplicates, number forms, literals,
    /// whitespace, missing members, non-objects, and types that SQLite groups together (1, 1.0).
    static let tricky: [String] = [
        #"{"k":"plain","n":1}"#,
        #"{"k":"esc\"aped\\ \u00e9","n":-0}"#,
        #"{ "k" : "spaces" , "n" : 1.0 }"#,
        #"{"a":{"k":"nested"},"k":"outer","n":1e2}"#,
        #"{"k":"first","k":"second","n":100}"#,
        #"{"k":null,"n":true}"#,
        #"{"k":[1,2,{"x":"]"}],"n":false}"#,
        #"{"k":{"deep":[{"k":1}]},"n":-12.5e-1}"#,
        #"{"n":123456789012345678901234}"#,
        #"{"k":"","n":0.1}"#,
        #"{"k\u0041":"escaped key","n":3}"#,
        #"{"k":"1","n":"1"}"#,
        #"{"k":1,"n":1}"#,
        #"{"k":1.0,"n":1.5}"#,
        #"[1,2,3]"#,
        #"{}"#,
        #"{"k":"trailing ws"}   "#,
        #"{"k":"ünïcödé ✓","n":9223372036854775807}"#,
        #"{"k":"big","n":-9223372036854775808}"#,
    ]

    static func broker(_ dir: QDir, values: [String], partitions: Int32 = 2) throws -> Broker {
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t", partitions: partitions)
        for (i, v) in values.enumerated() {
            try broker.produce(topic: "t", records: [ProducerRecord(key: Array("k\(i)".utf8), value: Array(v.utf8), timestamp: Int64(i))], acks: .leader)
        }
        return broker
    }

    func rows(_ engine: QueryEngine, _ sql: String) throws -> [[String?]] {
        var out: [[String?]] = []
        try engine.run(sql, header: { _ in }, row: { out.append($0) })
        return out
    }

    @Test func membersMatchJSONExtractOnTrickyValues() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, values: Self.tricky)
        for members in [[], ["k", "n"]] {
            let engine = try QueryEngine(broker: broker, jsonMembers: members)
            for path in ["k", "n", "a", "kA"] {
                let fast = try rows(engine, "SELECT offset, partition, value->>'$.\(path)', typeof(value->>'$.\(path)') FROM t ORDER BY partition, offset")
                let slow = try rows(engine, "SELECT offset, partition, json_extract(value, '$.\(path)'), typeof(json_extract(value, '$.\(path)')) FROM t ORDER BY partition, offset")
                #expect(fast == slow, "path \(path), members \(members)")
                #expect(fast.count == Self.tricky.count)
            }
            // The short form and nested paths go through the override too.
            #expect(try rows(engine, "SELECT value->>'k' FROM t ORDER BY partition, offset") == rows(engine, "SELECT json_extract(value, '$.k') FROM t ORDER BY partition, offset"))
            #expect(try rows(engine, "SELECT value->>'$.a.k' FROM t ORDER BY partition, offset") == rows(engine, "SELECT json_extract(value, '$.a.k') FROM t ORDER BY partition, offset"))
        }
        try broker.close()
    }

    @Test func randomObjectsMatchJSONExtract() throws {
        var rng = SystemRandomNumberGenerator()
        var seed = UInt64.random(in: 0...UInt64.max, using: &rng)
        func next() -> UInt64 { seed = seed &* 6364136223846793005 &+ 1442695040888963407; return seed >> 33 }
        let names = ["a", "b", "event_type", "amount", "x"]
        func scalar() -> String {
            switch next() % 7 {
            case 0: return "\(Int64(next()) - (1 << 30))"
            case 1: return "\(Double(next() % 100000) / 100)"
            case 2: return "\"s\(next() % 50)\""
            case 3: return ["true", "false", "null"][Int(next() % 3)]
            case 4: return "\"q\\\"\(next() % 5)\""
            case 5: return "{\"a\":\(next() % 9),\"b\":[\"}\",1]}"
            default: return "\(next() % 4)"
            }
        }
        var values: [String] = []
        for _ in 0..<400 {
            let members = (0..<Int(next() % 6)).map { _ in "\"\(names[Int(next() % 5)])\"\(next() % 3 == 0 ? " " : ""):\(scalar())" }
            values.append("{" + members.joined(separator: ",") + "}")
        }
        let dir = QDir()
        let broker = try Self.broker(dir, values: values, partitions: 1)
        let engine = try QueryEngine(broker: broker, jsonMembers: ["event_type", "amount", "a"])
        for name in names {
            #expect(try rows(engine, "SELECT value->>'$.\(name)', typeof(value->>'$.\(name)') FROM t ORDER BY offset")
                    == rows(engine, "SELECT json_extract(value, '$.\(name)'), typeof(json_extract(value, '$.\(name)')) FROM t ORDER BY offset"),
                    "member \(name), seed \(seed)")
            // GroupedRows (member column GROUP BY) against SQLite's sorter (json_extract is not rewritten).
            #expect(try rows(engine, "SELECT value->>'$.\(name)', count(*) FROM t GROUP BY 1 ORDER BY 1")
                    == rows(engine, "SELECT json_extract(value, '$.\(name)'), count(*) FROM t GROUP BY 1 ORDER BY 1"), "group by \(name)")
        }
        try broker.close()
    }

    @Test func groupedScanEqualsTheSorter() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, values: Self.tricky.filter { $0.hasPrefix("{") } + (0..<500).map { i in
            #"{"k":"\#(["a", "b", "c", "d"][i % 4])","n":\#(i % 7 == 0 ? "1.0" : "\(i % 3)")}"#
        })
        let engine = try QueryEngine(broker: broker, jsonMembers: ["k", "n"])
        let queries = [
            ("SELECT value->>'$.k', count(*), sum(offset) FROM t GROUP BY 1", "SELECT json_extract(value,'$.k'), count(*), sum(offset) FROM t GROUP BY 1"),
            ("SELECT value->>'$.n', count(*) FROM t GROUP BY 1", "SELECT json_extract(value,'$.n'), count(*) FROM t GROUP BY 1"),
            ("SELECT value->>'$.k', value->>'$.n', count(*) FROM t GROUP BY 1, 2 ORDER BY 1 DESC, 2",
             "SELECT json_extract(value,'$.k'), json_extract(value,'$.n'), count(*) FROM t GROUP BY 1, 2 ORDER BY 1 DESC, 2"),
            ("SELECT DISTINCT value->>'$.k' FROM t", "SELECT DISTINCT json_extract(value,'$.k') FROM t"),
            ("SELECT value->>'$.k', offset, partition FROM t ORDER BY 1 DESC, partition, offset",
             "SELECT json_extract(value,'$.k'), offset, partition FROM t ORDER BY 1 DESC, partition, offset"),
        ]
        for (fast, slow) in queries {
            var (a, b) = (try rows(engine, fast), try rows(engine, slow))
            if !fast.contains("ORDER BY") {
                // Without ORDER BY any row order is right: compare as multisets.
                let key = { (r: [String?]) in r.map { $0 ?? "\u{0}NULL" }.joined(separator: "\u{1}") }
                (a, b) = (a.sorted { key($0) < key($1) }, b.sorted { key($0) < key($1) })
            }
            #expect(a == b, "\(fast): \(a) vs \(b)")
            #expect(try !rows(engine, fast).isEmpty)
        }
        // The fast form really skips the sorter.
        let plan = try engine.plan("SELECT value->>'$.k', count(*) FROM t GROUP BY 1").joined(separator: "\n")
        #expect(!plan.contains("TEMP B-TREE"), "\(plan)")
        try broker.close()
    }

    @Test func memberFiltersInTheScanKeepSQLiteSemantics() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, values: Self.tricky.filter { $0.hasPrefix("{") } + (0..<300).map { i in
            #"{"k":"\#(["a", "b", "c"][i % 3])","n":\#(["1", "1.0", "\"1\"", "2", "null"][i % 5])}"#
        })
        let engine = try QueryEngine(broker: broker, jsonMembers: ["k", "n"])
        let conditions = ["= 'a'", "IN ('a', 'c')", "= 1", "= 1.0", "= '1'", "IN (1, '1')", "IN (2, 'b')", "= ''", "IS NULL", "IN (SELECT 'b')"]
        for member in ["k", "n"] {
            for condition in conditions {
                for shape in ["SELECT partition, offset FROM t WHERE %@ ORDER BY 1, 2",
                              "SELECT value->>'$.k', count(*) FROM t WHERE %@ GROUP BY 1 ORDER BY 1"] {
                    let fast = shape.replacingOccurrences(of: "%@", with: "value->>'$.\(member)' \(condition)")
                    let slow = shape.replacingOccurrences(of: "%@", with: "json_extract(value, '$.\(member)') \(condition)")
                        .replacingOccurrences(of: "SELECT value->>'$.k'", with: "SELECT json_extract(value, '$.k')")
                    let (a, b) = (try rows(engine, fast), try rows(engine, slow))
                    #expect(a == b, "\(fast): \(a.count) rows vs \(b.count)")
                }
            }
        }
        let plan = try engine.plan("SELECT count(*) FROM t WHERE value->>'$.k' IN ('a', 'b')").joined()
        #expect(plan.contains("M7"), "the IN list reaches the scan at once: \(plan)")
        try broker.close()
    }

    @Test func countDistinctOfAMemberMatchesSQLite() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, values: Self.tricky.filter { $0.hasPrefix("{") } + (0..<400).map { i in
            #"{"k":"\#(["a", "b", "c", "d"][i % 4])","n":\#(["1", "1.0", "\"1\"", "2", "null", "2.5", "\"x\(i % 37)\""][i % 7])}"#
        })
        let engine = try QueryEngine(broker: broker, jsonMembers: ["k", "n"])
        let pairs = [
            ("SELECT count(DISTINCT value->>'$.n') FROM t", "SELECT count(DISTINCT json_extract(value, '$.n')) FROM t"),
            ("SELECT count(DISTINCT value->>'$.k'), count(*) FROM t", "SELECT count(DISTINCT json_extract(value, '$.k')), count(*) FROM t"),
            ("SELECT partition, count(DISTINCT value->>'$.n') FROM t GROUP BY 1 ORDER BY 1",
             "SELECT partition, count(DISTINCT json_extract(value, '$.n')) FROM t GROUP BY 1 ORDER BY 1"),
            ("SELECT value->>'$.k', count(DISTINCT value->>'$.n') FROM t GROUP BY 1 ORDER BY 1",
             "SELECT json_extract(value, '$.k'), count(DISTINCT json_extract(value, '$.n')) FROM t GROUP BY 1 ORDER BY 1"),
            ("SELECT count(DISTINCT value->>'$.n') FILTER (WHERE offset % 2 = 0) FROM t",
             "SELECT count(DISTINCT json_extract(value, '$.n')) FILTER (WHERE offset % 2 = 0) FROM t"),
            ("SELECT count(DISTINCT t.value->>'$.n') FROM t", "SELECT count(DISTINCT json_extract(value, '$.n')) FROM t"),
        ]
        for (fast, slow) in pairs {
            let (a, b) = (try rows(engine, fast), try rows(engine, slow))
            #expect(a == b, "\(fast): \(a) vs \(b)")
        }
        // Where it does not fold into the scan (FoldTests), the hash-set aggregate replaces SQLite's b-tree.
        let program = try rows(engine, "EXPLAIN SELECT count(DISTINCT value->>'$.n') FILTER (WHERE offset % 2 = 0) FROM t")
            .map { $0.compactMap { $0 }.joined(separator: " ") }.joined(separator: "\n")
        #expect(program.contains(DistinctCount.functionName), "the hash-set aggregate replaces SQLite's b-tree")
        #expect(try engine.plan("SELECT count(DISTINCT value->>'$.n') FROM t").joined().contains(",f"), "folded into the scan")
        try broker.close()
    }

    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func compressedBatchesAreReadTransparently(_ codec: CompressionCodec) throws {
        let dir = QDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t")
        var expected: [String: Int] = [:]
        for round in 0..<6 {
            let records = (0..<300).map { i -> ProducerRecord in
                let type = ["click", "view", "buy"][(i + round) % 3]
                expected[type, default: 0] += 1
                return ProducerRecord(key: Array("k\(i)".utf8), value: Array(#"{"type":"\#(type)","i":\#(i)}"#.utf8),
                                      headers: i == 0 ? [ProducerRecord.Header(key: "round", value: Array("\(round)".utf8))] : [],
                                      timestamp: Int64(round * 1000 + i))
            }
            // Compressed and plain batches interleaved in one partition.
            var bytes = RecordBatchBuilder.build(records)
            if round % 2 == 0 {
                let packed = Compression.compress(codec, Array(bytes[RecordBatch.headerSize...]))!
                bytes = Array(bytes[..<RecordBatch.headerSize]) + packed
                bytes.withUnsafeMutableBytes { p in
                    p.storeBytes(of: Int32(p.count - RecordBatch.logOverhead).bigEndian, toByteOffset: 8, as: Int32.self)
                    p.storeBytes(of: codec.rawValue.bigEndian, toByteOffset: 21, as: Int16.self)
                    p.storeBytes(of: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[21...])).bigEndian, toByteOffset: 17, as: UInt32.self)
                }
            }
            _ = try bytes.withUnsafeBytes { try broker.appendBatch(topic: "t", partition: 0, batch: $0, acks: .leader) }
        }
        let engine = try QueryEngine(broker: broker, jsonMembers: ["type", "i"])
        let counts = try rows(engine, "SELECT value->>'$.type', count(*), sum(value->>'$.i') FROM t GROUP BY 1 ORDER BY 1")
        #expect(counts.map { [$0[0]!, $0[1]!] } == expected.sorted { $0.key < $1.key }.map { [$0.key, "\($0.value)"] })
        #expect(try rows(engine, "SELECT sum(value->>'$.i') FROM t") == [["\(6 * (0..<300).reduce(0, +))"]])
        #expect(try rows(engine, "SELECT count(*), min(offset), max(offset) FROM t") == [["1800", "0", "1799"]])
        #expect(try rows(engine, "SELECT headers FROM t WHERE headers IS NOT NULL ORDER BY offset").map { $0[0]! }
                == (0..<6).map { #"{"round":"\#($0)"}"# })
        #expect(try rows(engine, "SELECT key, value->>'$.type' FROM t WHERE offset = 1") == [["k1", "view"]])
        try broker.close()
    }

    @Test func manyGroupsAcrossManyChunks() throws {
        // 30,000 records over 3 partitions with 1,000 distinct users: a chunk holds hundreds of
        // groups and every group has runs in many chunks.
        let dir = QDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t", partitions: 3, configs: ["segment.bytes": "65536"])
        for start in stride(from: 0, to: 30_000, by: 1000) {
            try broker.produce(topic: "t", records: (start..<(start + 1000)).map { i in
                ProducerRecord(key: Array("k\(i % 7)".utf8), value: Array(#"{"u":"user-\#(i * 7919 % 1000)","n":\#(i % 13)}"#.utf8),
                               timestamp: Int64(i))
            }, acks: .leader)
        }
        let engine = try QueryEngine(broker: broker, jsonMembers: ["u", "n"])
        let pairs = [
            ("SELECT value->>'$.u', count(*), sum(value->>'$.n') FROM t GROUP BY 1 ORDER BY 1",
             "SELECT json_extract(value, '$.u'), count(*), sum(json_extract(value, '$.n')) FROM t GROUP BY 1 ORDER BY 1"),
            ("SELECT value->>'$.u', partition, offset FROM t ORDER BY 1 DESC, 2, 3 LIMIT 2000",
             "SELECT json_extract(value, '$.u'), partition, offset FROM t ORDER BY 1 DESC, 2, 3 LIMIT 2000"),
            ("SELECT count(*) FROM (SELECT DISTINCT value->>'$.u' FROM t)", "SELECT count(DISTINCT json_extract(value, '$.u')) FROM t"),
            ("SELECT value->>'$.n', count(DISTINCT value->>'$.u') FROM t GROUP BY 1 ORDER BY 1",
             "SELECT json_extract(value, '$.n'), count(DISTINCT json_extract(value, '$.u')) FROM t GROUP BY 1 ORDER BY 1"),
        ]
        for (fast, slow) in pairs {
            let (a, b) = (try rows(engine, fast), try rows(engine, slow))
            #expect(a == b, "\(fast): \(a.prefix(3)) vs \(b.prefix(3))")
            #expect(!a.isEmpty)
        }
        try broker.close()
    }

    @Test func eventsFunctionAndNames() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, values: Self.tricky)
        try broker.createTopic("other")
        try broker.produce(topic: "other", records: [ProducerRecord(value: Array(#"{"k":"o"}"#.utf8), timestamp: 5)], acks: .leader)
        let engine = try QueryEngine(broker: broker, jsonMembers: ["k"])
        #expect(try rows(engine, "SELECT count(*) FROM events('t')") == [["\(Self.tricky.count)"]])
        #expect(try rows(engine, "SELECT value->>'$.k', topic FROM events('other')") == [["o", "other"]])
        #expect(try rows(engine, "SELECT offset FROM events('t') WHERE partition = 0 ORDER BY offset")
                == rows(engine, "SELECT offset FROM t WHERE partition = 0 ORDER BY offset"))
        #expect(throws: QueryError.self) { try rows(engine, "SELECT * FROM events") }
        #expect(throws: QueryError.self) { try rows(engine, "SELECT * FROM events('nosuch')") }
        var header: [String] = []
        try engine.run("SELECT value->>'$.k', count(*) FROM t GROUP BY 1", header: { header = $0 }, row: { _ in })
        #expect(header == ["value->>'$.k'", "count(*)"])
        // `value` of a CTE is not a topic's: the rewrite steps aside and SQLite answers.
        let cte = try rows(engine, #"WITH c(value) AS (VALUES ('{"k":"cte"}')) SELECT value->>'$.k' FROM c"#)
        #expect(cte == [["cte"]], "\(cte)")
        try broker.close()
    }

    @Test func malformedValuesAreClearErrors() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, values: [#"{"k":"ok"}"#, #"{"k":"truncated"#, "plain text"], partitions: 1)
        for members in [[], ["k"]] {
            let engine = try QueryEngine(broker: broker, jsonMembers: members)
            for sql in ["SELECT value->>'$.k' FROM t", "SELECT value->>'$.k', count(*) FROM t GROUP BY 1"] {
                do {
                    _ = try rows(engine, sql)
                    Issue.record("\(sql) should fail")
                } catch {
                    #expect("\(error)".contains("malformed JSON"), "\(error)")
                }
            }
            #expect(try rows(engine, "SELECT value->>'$.k' FROM t WHERE offset = 0") == [["ok"]])
        }
        try broker.close()
    }

    /// Decimals of up to 15 digits are divided rather than given to strtod (exact operands, one
    /// correctly rounded division): the same double as strtod, bit for bit, for random digits,
    /// signs and scales, zeros included.
    @Test func shortDecimalsConvertAsStrtod() {
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        for _ in 0..<200_000 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            let digits = 1 + Int(state % 17)
            let scale = 1 + Int((state >> 8) % UInt64(digits))
            var text = (state >> 16) & 1 == 1 ? "-" : ""
            var r = state >> 20
            var ds = (0..<digits).map { _ -> Character in defer { r /= 10 }; return Character(String(r % 10)) }
            let whole = digits - scale
            if whole > 1, ds[0] == "0" { ds[0] = "7" }
            text += whole == 0 ? "0" : String(ds[0..<whole])
            text += "." + String(ds[whole...])
            var field = strata_json_field()
            let bytes = Array(text.utf8)
            #expect(strata_json_scalar(bytes, bytes.count, &field) == 1, "\(text)")
            let want = strtod(text, nil)
            #expect(field.kind == Int32(STRATA_JSON_REAL) && field.real.bitPattern == want.bitPattern, "\(text): \(field.real) vs \(want)")
        }
    }

    /// A document cut right after a member's colon (or blanks after it) is refused without a read
    /// past its end (the buffer is exactly the document).
    @Test func topMembersOfACutDocumentAreRefused() {
        for text in [#"{"a":"#, #"{"a":   "#, #"{"a":1,"b":"#] {
            let bytes = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: text.utf8.count)
            defer { bytes.deallocate() }
            _ = bytes.initialize(from: text.utf8)
            var members = [strata_json_member](repeating: strata_json_member(), count: 4)
            #expect(strata_json_top_members(bytes.baseAddress, bytes.count, &members, 4) == -1, "\(text)")
        }
    }
}
