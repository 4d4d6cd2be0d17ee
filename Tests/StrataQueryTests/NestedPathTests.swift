import Foundation
import Testing
@testable import StrataBroker
@testable import StrataLog
@testable import StrataQuery

/// Nested paths (`$.geo.city`, `$.items[0].sku`) on the fast path must answer exactly what
/// SQLite's json_extract answers, on every shape: each test compares the two.
@Suite struct NestedPathTests {
    static let tricky: [String] = [
        #"{"geo":{"city":"Paris","zip":75001},"items":[{"sku":"a1","qty":2},{"sku":"b2"}]}"#,
        #"{"geo":{"city":"Lyon"},"items":[]}"#,
        #"{"geo":"not an object","items":"not an array"}"#,
        #"{"geo":null,"items":null}"#,
        #"{"geo":{"city":{"name":"nested object"}},"items":[[1,2],{"sku":null}]}"#,
        #"{"geo":{"city":"first","city":"second"},"items":[{"sku":"x","sku":"y"}]}"#,
        #"{"geo":{"city":"esc\"aped \u00e9"},"items":[{"sku":"\ud83d\ude00"}]}"#,
        #"{"geo":{"zip":1},"items":[{"qty":1}]}"#,
        #"{"geo" : { "city" : "spaces" } , "items" : [ { "sku" : "s" } , 3 ] }"#,
        #"{"geo":{"c\u0069ty":"escaped key"},"items":[{"sku":1.5e3}]}"#,
        #"{"geo":{"city":12345678901234567890},"items":[{"sku":true},{"sku":false}]}"#,
        #"{"geo":{"city":"ü✓"},"items":[1,2,3,4,5,6,7,8,9,10,{"sku":"eleventh"}]}"#,
        #"{"items":[{"sku":"only items"}]}"#,
        #"{"geo":{"city":"broken after" "zip":1}}"#,
        #"[{"geo":{"city":"top-level array"}}]"#,
        #"{"geo":{"city":"x"},"items":[{"sku":"y"}],"deep":{"a":{"b":{"c":[0,[1,{"d":"found"}]]}}}}"#,
        "{}",
        #"{"geo":{}}"#,
    ]

    static let paths = ["geo.city", "geo.zip", "items[0].sku", "items[1].sku", "items[0]", "items[10].sku", "items[1]",
                        "items[99]", "deep.a.b.c[1][1].d", "geo.city.name", "geo", "nope.x"]


    @Test func pathsParseIntoScannerKeys() {
        #expect(JSONColumns.memberName("$.geo.city") == "geo.city")
        #expect(JSONColumns.memberName("$.items[0].sku") == "items[0].sku")
        #expect(JSONColumns.memberName("geo.city") == nil)           // a label, not a path: SQLite's `$."geo.city"`
        #expect(JSONColumns.memberName("$.items[#-1]") == nil)
        #expect(JSONColumns.memberName("$[0]") == nil)
        #expect(JSONColumns.memberName("$.a[]") == nil)
        #expect(JSONColumns.memberName("$.\"quoted\"") == nil)
        #expect(JSONColumns.scanKey("geo.city") == Array("geo".utf8) + [0, UInt8(ascii: "m")] + Array("city".utf8))
        #expect(JSONColumns.scanKey("items[12].sku") == Array("items".utf8) + [0, UInt8(ascii: "i")] + Array("12".utf8)
                + [0, UInt8(ascii: "m")] + Array("sku".utf8))
        #expect(JSONColumns.scanKey("plain") == Array("plain".utf8))
    }

    @Test func nestedPathsMatchJSONExtract() throws {
        // Each value on its own: one malformed value must not hide the answers for the others.
        for value in Self.tricky {
            let dir = QDir()
            let broker = try JSONFastPathTests.broker(dir, values: [value], partitions: 1)
            for members in [[], Self.paths] {
                let engine = try QueryEngine(broker: broker, jsonMembers: members)
                for path in Self.paths {
                    let fast = rows(engine, "SELECT value->>'$.\(path)', typeof(value->>'$.\(path)') FROM t")
                    let slow = rows(engine, "SELECT json_extract(value, '$.\(path)'), typeof(json_extract(value, '$.\(path)')) FROM t")
                    #expect(same(fast, slow), "value \(value), path \(path), members \(members.count): \(fast) vs \(slow)")
                }
            }
            try broker.close()
        }
    }

    @Test func randomNestedDocumentsMatchJSONExtract() throws {
        var rng = SystemRandomNumberGenerator()
        var seed = UInt64.random(in: 0...UInt64.max, using: &rng)
        func next() -> UInt64 { seed = seed &* 6364136223846793005 &+ 1442695040888963407; return seed >> 33 }
        let names = ["a", "b", "geo", "city", "items"]
        func value(_ depth: Int) -> String {
            switch next() % (depth > 3 ? 5 : 8) {
            case 0: return "\(Int64(next()) - (1 << 30))"
            case 1: return "\(Double(next() % 100000) / 100)"
            case 2: return "\"s\(next() % 20)\""
            case 3: return ["true", "false", "null"][Int(next() % 3)]
            case 4: return "\"e\\\"\(next() % 3)\\u00e9\""
            case 5, 6: return "{" + (0..<Int(next() % 4)).map { _ in "\"\(names[Int(next() % 5)])\":\(value(depth + 1))" }.joined(separator: ",") + "}"
            default: return "[" + (0..<Int(next() % 4)).map { _ in value(depth + 1) }.joined(separator: ",") + "]"
            }
        }
        let values = (0..<500).map { _ in "{" + (0..<Int(1 + next() % 4)).map { _ in "\"\(names[Int(next() % 5)])\":\(value(1))" }.joined(separator: ",") + "}" }
        let dir = QDir()
        let broker = try JSONFastPathTests.broker(dir, values: values, partitions: 1)
        let paths = ["geo.city", "a.b", "items[0]", "items[1].city", "a[0].geo", "geo.items[2]", "b.a.a", "items[0][1]"]
        let engine = try QueryEngine(broker: broker, jsonMembers: paths)
        for path in paths {
            let fast = rows(engine, "SELECT value->>'$.\(path)', typeof(value->>'$.\(path)') FROM t ORDER BY offset")
            let slow = rows(engine, "SELECT json_extract(value, '$.\(path)'), typeof(json_extract(value, '$.\(path)')) FROM t ORDER BY offset")
            #expect(same(fast, slow), "path \(path), seed \(seed)")
            // Grouped scans (member column GROUP BY) against SQLite's sorter.
            #expect(same(rows(engine, "SELECT value->>'$.\(path)', count(*) FROM t GROUP BY 1 ORDER BY 1"),
                         rows(engine, "SELECT json_extract(value, '$.\(path)'), count(*) FROM t GROUP BY 1 ORDER BY 1")), "group by \(path), seed \(seed)")
            // Filters on a nested member (pushed into the scan).
            #expect(same(rows(engine, "SELECT offset FROM t WHERE value->>'$.\(path)' = 's3' ORDER BY offset"),
                         rows(engine, "SELECT offset FROM t WHERE json_extract(value, '$.\(path)') = 's3' ORDER BY offset")), "filter \(path)")
        }
        try broker.close()
    }

    /// Damaged documents (a byte dropped or changed): the fast path answers only when SQLite
    /// would answer the same, and otherwise steps aside (SQLite reports the error).
    @Test func damagedDocumentsMatchJSONExtract() throws {
        let base = #"{"geo":{"city":"Paris","tags":["a","b\n"],"n":-1.5e3},"items":[{"sku":"x","ok":true},{"sku":null}],"k":"v"}"#
        let bytes = Array(base.utf8)
        var cases: [String] = []
        for i in stride(from: 0, to: bytes.count, by: 3) {
            var dropped = bytes
            dropped.remove(at: i)
            cases.append(String(decoding: dropped, as: UTF8.self))
            var changed = bytes
            changed[i] = [UInt8(ascii: ","), UInt8(ascii: "x"), UInt8(ascii: "\""), UInt8(ascii: "}")][i % 4]
            cases.append(String(decoding: changed, as: UTF8.self))
        }
        let paths = ["geo.city", "geo.tags[1]", "geo.n", "items[0].sku", "items[1].sku", "k"]
        let dir = QDir()
        let broker = try JSONFastPathTests.broker(dir, values: [], partitions: 1)
        for (i, value) in cases.enumerated() {
            let topic = "d\(i)"
            try broker.createTopic(topic, partitions: 1)
            try broker.produce(topic: topic, records: [ProducerRecord(key: nil, value: Array(value.utf8), timestamp: 0)], acks: .leader)
        }
        let engine = try QueryEngine(broker: broker, jsonMembers: paths)
        for i in cases.indices {
            for path in paths {
                #expect(same(rows(engine, "SELECT value->>'$.\(path)', typeof(value->>'$.\(path)') FROM d\(i)"),
                             rows(engine, "SELECT json_extract(value, '$.\(path)'), typeof(json_extract(value, '$.\(path)')) FROM d\(i)")),
                        "value \(cases[i]), path \(path)")
            }
        }
        try broker.close()
    }

    /// A nested-path GROUP BY is a member column: no sorter, no json_extract per row.
    @Test func nestedGroupByUsesTheMemberColumn() throws {
        let dir = QDir()
        let broker = try JSONFastPathTests.broker(dir, values: (0..<300).map { #"{"geo":{"city":"c\#($0 % 7)"},"n":\#($0)}"# })
        let engine = try QueryEngine(broker: broker, jsonMembers: ["geo.city"])
        let plan = try engine.plan("SELECT value->>'$.geo.city', count(*) FROM t GROUP BY 1").joined(separator: "\n")
        #expect(!plan.contains("TEMP B-TREE"), "\(plan)")
        #expect(same(rows(engine, "SELECT value->>'$.geo.city', count(*) FROM t GROUP BY 1 ORDER BY 1"),
                     .success((0..<7).map { ["c\($0)", String((300 - $0 + 6) / 7)] })))
        try broker.close()
    }
}
