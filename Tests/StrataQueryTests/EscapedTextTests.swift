import Foundation
import Testing
@testable import StrataBroker
@testable import StrataLog
@testable import StrataQuery
import CStrataScan

/// Escaped strings are decoded on the fast path (strata_json_unescape) and must read exactly as
/// SQLite's `->>` reads them; what only SQLite knows (\u0000, unpaired surrogates, JSON5 escapes)
/// is left to it. Every test compares with json_extract.
@Suite struct EscapedTextTests {
    /// String contents (between the quotes) covering every escape form and its edge cases.
    static let contents: [String] = [
        #"a\"b"#, #"back\\slash"#, #"\/slash"#, #"\b\f\n\r\t"#, #"caf\u00e9"#, #"\u00E9\u00e9"#,
        #"\u20ac euro"#, #"\ud83d\ude00 smile"#, #"\uD83D\uDE00"#, #"\u0041\u0042"#, #"\u007f\u0080\u07ff\u0800\uffff"#,
        #"\u0000nul"#, #"lone \ud83d high"#, #"lone \ude00 low"#, #"\ud83d\u0041 broken pair"#, #"\ud83d"#,
        #"\x41 json5"#, #"\' json5"#, #"\v json5"#, #"\q invalid"#, #"\u12 short"#, #"\u12G4 bad hex"#,
        #"trailing \\"#, #"ünïcödé \"✓\""#, #"\"\"\"\""#, #"\\\\\\"#, "long " + String(repeating: #"x\n"#, count: 300),
    ]


    @Test func escapedStringsReadAsSQLiteReadsThem() throws {
        for content in Self.contents {
            let value = #"{"s":"\#(content)","geo":{"city":"\#(content)"},"items":[{"sku":"\#(content)"}],"n":1}"#
            let dir = QDir()
            let broker = try JSONFastPathTests.broker(dir, values: [value], partitions: 1)
            for members in [[], ["s", "geo.city", "items[0].sku"]] {
                let engine = try QueryEngine(broker: broker, jsonMembers: members)
                for path in ["s", "geo.city", "items[0].sku"] {
                    let fast = rows(engine, "SELECT value->>'$.\(path)', hex(value->>'$.\(path)'), value->>'$.n' FROM t")
                    let slow = rows(engine, "SELECT json_extract(value, '$.\(path)'), hex(json_extract(value, '$.\(path)')), json_extract(value, '$.n') FROM t")
                    #expect(same(fast, slow), "content \(content), path \(path), members \(members.count): \(fast) vs \(slow)")
                }
            }
            try broker.close()
        }
    }

    @Test func unescapeDecodesOrStepsAside() {
        func decode(_ s: String) -> [UInt8]? {
            let bytes = Array(s.utf8)
            var out = [UInt8](repeating: 0, count: max(1, bytes.count))
            let n = strata_json_unescape(bytes, bytes.count, &out)
            return n < 0 ? nil : Array(out.prefix(Int(n)))
        }
        #expect(decode(#"a\"b"#) == Array("a\"b".utf8))
        #expect(decode(#"\u00e9"#) == Array("é".utf8))
        #expect(decode(#"\ud83d\ude00"#) == Array("😀".utf8))
        #expect(decode(#"\n\t\/"#) == Array("\n\t/".utf8))
        #expect(decode(#"\u0000"#) == nil)
        #expect(decode(#"\ud83d"#) == nil)
        #expect(decode(#"\ude00"#) == nil)
        #expect(decode(#"\x41"#) == nil)
        #expect(decode(#"\u00"#) == nil)
        #expect(decode("\\") == nil)
        #expect(decode("raw\u{1}control") == nil)
        // The scanner answers escaped members itself (not .fallback), nested ones too.
        for (json, key) in [(#"{"a":1,"s":"caf\u00e9 \"x\""}"#, "s"), (#"{"geo":{"city":"K\u00f6ln"}}"#, "geo.city")] {
            let scanner = JSONMemberScanner(keys: [JSONColumns.scanKey(key)], stopEarly: false)
            let bytes = Array(json.utf8)
            let text: String? = bytes.withUnsafeBytes { b in
                guard case .text(let p, let n) = scanner.member(in: b) else { return nil }
                return String(decoding: UnsafeRawBufferPointer(start: p, count: Int(n)), as: UTF8.self)
            }
            #expect(text == (key == "s" ? "café \"x\"" : "Köln"), "\(json)")
        }
    }

    /// Grouping, filtering and counting distinct over escaped members agree with SQLite's sorter
    /// and json_extract, on a plain topic and one validated on write (the scan stops early there).
    @Test(arguments: [false, true])
    func groupFilterAndDistinctOverEscapedText(_ validated: Bool) throws {
        let dir = QDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t", partitions: 2, configs: validated ? ["value.format": "json"] : [:])
        let cities = [#"Par\u0069s"#, "Paris", #"Z\u00fcrich"#, "Zürich", #"New \"York\""#, #"S\u00e3o Paulo"#, #"\ud83d\ude00"#, #"tab\there"#]
        var records: [ProducerRecord] = []
        for i in 0..<2_000 {
            let city = cities[(i * 7) % cities.count]
            records.append(ProducerRecord(key: Array("k\(i % 13)".utf8),
                                          value: Array(#"{"city":"\#(city)","geo":{"city":"\#(city)"},"n":\#(i % 5)}"#.utf8), timestamp: Int64(i)))
        }
        try broker.produce(topic: "t", records: records, acks: .leader)
        let engine = try QueryEngine(broker: broker, jsonMembers: ["city", "geo.city", "n"])
        let queries = [
            ("SELECT value->>'$.city', count(*), sum(value->>'$.n') FROM t GROUP BY 1 ORDER BY 1",
             "SELECT json_extract(value,'$.city'), count(*), sum(json_extract(value,'$.n')) FROM t GROUP BY 1 ORDER BY 1"),
            ("SELECT value->>'$.geo.city', count(*) FROM t GROUP BY 1 ORDER BY 1",
             "SELECT json_extract(value,'$.geo.city'), count(*) FROM t GROUP BY 1 ORDER BY 1"),
            ("SELECT count(*) FROM t WHERE value->>'$.city' = 'Zürich'",
             "SELECT count(*) FROM t WHERE json_extract(value,'$.city') = 'Zürich'"),
            ("SELECT count(*) FROM t WHERE value->>'$.city' IN ('New \"York\"', 'Paris', '😀')",
             "SELECT count(*) FROM t WHERE json_extract(value,'$.city') IN ('New \"York\"', 'Paris', '😀')"),
            ("SELECT count(DISTINCT value->>'$.city') FROM t", "SELECT count(DISTINCT json_extract(value,'$.city')) FROM t"),
        ]
        for (fast, slow) in queries {
            let (a, b) = (rows(engine, fast), rows(engine, slow))
            #expect(same(a, b), "\(fast): \(a) vs \(b)")
            if case .success(let r) = a { #expect(!r.isEmpty) }
        }
        // Decoded and plain spellings of one city are one group.
        if case .success(let r) = rows(engine, "SELECT value->>'$.city', count(*) FROM t GROUP BY 1 ORDER BY 1") {
            #expect(r.count == 6, "\(r)")
        }
        try broker.close()
    }
}
