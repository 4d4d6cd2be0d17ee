import Foundation
import Testing
@testable import StrataBroker
@testable import StrataLog
@testable import StrataQuery

/// `count(*)` folded into grouped scans (one row per group carrying its count): every answer is
/// compared with SQLite's own evaluation, and the plan shows when the fold ran.
@Suite struct FoldTests {
    static func broker(_ dir: QDir, malformed: Bool = false) throws -> Broker {
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t", partitions: 3, configs: ["segment.bytes": "65536"])
        var state: UInt64 = 99
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        let kinds = [#""a""#, #""b""#, #""\u0062""#, "1", "1.0", "2.5", "null", #""Zürich""#, #""""#, "true"]
        var records: [ProducerRecord] = []
        for i in 0..<6_000 {
            let k = kinds[Int(next() % UInt64(kinds.count))]
            let g = next() % 4 == 0 ? "" : #","geo":{"city":"c\#(next() % 5)"}"#
            let value = malformed && i == 4_321 ? "{broken" : #"{"k":\#(k),"n":\#(next() % 100)\#(g)}"#
            records.append(ProducerRecord(key: Array("key\(i % 7)".utf8), value: next() % 50 == 0 ? nil : Array(value.utf8), timestamp: Int64(i)))
        }
        for start in stride(from: 0, to: records.count, by: 300) {
            try broker.produce(topic: "t", records: Array(records[start..<min(records.count, start + 300)]), acks: .leader)
        }
        return broker
    }

    /// (statement, SQLite's own form, whether the fold must run)
    static let cases: [(String, String, Bool)] = [
        ("SELECT value->>'$.k', count(*) FROM t GROUP BY 1 ORDER BY 1",
         "SELECT json_extract(value,'$.k'), count(*) FROM t GROUP BY 1 ORDER BY 1", true),
        ("SELECT value->>'$.geo.city' AS city, count(*) AS n FROM t GROUP BY city ORDER BY n DESC, city LIMIT 3",
         "SELECT json_extract(value,'$.geo.city') AS city, count(*) AS n FROM t GROUP BY city ORDER BY n DESC, city LIMIT 3", true),
        ("SELECT value->>'$.k', value->>'$.geo.city', count(*), count(*) * 2 + 1 FROM t GROUP BY 1, 2 HAVING count(*) > 40 ORDER BY 3 DESC, 1, 2",
         "SELECT json_extract(value,'$.k'), json_extract(value,'$.geo.city'), count(*), count(*) * 2 + 1 FROM t GROUP BY 1, 2 HAVING count(*) > 40 ORDER BY 3 DESC, 1, 2", true),
        ("SELECT count(*) FROM t AS x GROUP BY x.value->>'$.k' ORDER BY 1",
         "SELECT count(*) FROM t AS x GROUP BY json_extract(x.value,'$.k') ORDER BY 1", true),
        // Not folded (still right): a WHERE, another aggregate, a bare column, a join, no GROUP BY.
        ("SELECT value->>'$.k', count(*) FROM t WHERE value->>'$.n' > 50 GROUP BY 1 ORDER BY 1",
         "SELECT json_extract(value,'$.k'), count(*) FROM t WHERE json_extract(value,'$.n') > 50 GROUP BY 1 ORDER BY 1", false),
        ("SELECT value->>'$.k', count(*), sum(value->>'$.n') FROM t GROUP BY 1 ORDER BY 1",
         "SELECT json_extract(value,'$.k'), count(*), sum(json_extract(value,'$.n')) FROM t GROUP BY 1 ORDER BY 1", false),
        ("SELECT value->>'$.k', count(*), max(offset) FROM t GROUP BY 1 ORDER BY 1",
         "SELECT json_extract(value,'$.k'), count(*), max(offset) FROM t GROUP BY 1 ORDER BY 1", false),
        ("SELECT partition, count(*) FROM t GROUP BY 1 ORDER BY 1", "SELECT partition, count(*) FROM t GROUP BY 1 ORDER BY 1", false),
        ("SELECT count(*) FROM t", "SELECT count(*) FROM t", false),
        ("SELECT value->>'$.k', count(*) FROM t, (SELECT 1) GROUP BY 1 ORDER BY 1",
         "SELECT json_extract(value,'$.k'), count(*) FROM t, (SELECT 1) GROUP BY 1 ORDER BY 1", false),
        ("SELECT DISTINCT value->>'$.k' FROM t ORDER BY 1", "SELECT DISTINCT json_extract(value,'$.k') FROM t ORDER BY 1", false),
    ]

    @Test func foldedCountsEqualSQLite() throws {
        let dir = QDir()
        let broker = try Self.broker(dir)
        defer { try? broker.close() }
        for (fast, slow, folds) in Self.cases {
            let engine = try QueryEngine(broker: broker, jsonMembers: QueryEngine.jsonMembers(in: fast))
            let a = rows(engine, fast)
            let b = rows(try QueryEngine(broker: broker), slow)
            #expect(same(a, b), "\(fast): \(a) vs \(b)")
            if case .success(let r) = a { #expect(!r.isEmpty, "\(fast)") }
            let plan = try engine.plan(fast).joined(separator: "\n")
            #expect(plan.contains(",f") == folds, "\(fast): \(plan)")
        }
    }

    @Test func foldedCountsWithinTimeBoundsAndWithBrokenDocuments() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, malformed: true)
        defer { try? broker.close() }
        let fast = "SELECT value->>'$.k', count(*) FROM t GROUP BY 1 ORDER BY 1"
        // The malformed document is in the scan: an error, as SQLite's own evaluation gives.
        if case .success = rows(try QueryEngine(broker: broker, jsonMembers: ["k"]), fast) { Issue.record("malformed JSON must be an error") }
        // Outside the time bounds it is not read: the counts of the window.
        let bounded = try QueryEngine(broker: broker, sinceMs: 0, untilMs: 4_000, jsonMembers: ["k"])
        let a = rows(bounded, fast)
        let b = rows(try QueryEngine(broker: broker, sinceMs: 0, untilMs: 4_000), "SELECT json_extract(value,'$.k'), count(*) FROM t GROUP BY 1 ORDER BY 1")
        #expect(same(a, b) && (try? a.get()) != nil, "\(a) vs \(b)")
        #expect(try bounded.plan(fast).joined().contains(",f"))
    }

    @Test func onlyWholeCountStarIsRewritten() {
        #expect(JSONColumns.foldCount("SELECT [value->>'$.k'], count(*) FROM t GROUP BY 1") == "SELECT [value->>'$.k'], sum(strata_rows) FROM t GROUP BY 1")
        #expect(JSONColumns.foldCount("SELECT a, COUNT ( * ) FROM \"my-topic\" x GROUP BY a") == "SELECT a, sum(strata_rows) FROM \"my-topic\" x GROUP BY a")
        #expect(JSONColumns.foldCount("SELECT a, count(*) FROM t WHERE a = 1 GROUP BY a") == nil)
        #expect(JSONColumns.foldCount("SELECT a, count(*) FROM t JOIN u GROUP BY a") == nil)
        #expect(JSONColumns.foldCount("SELECT a, count(*) FROM t, u GROUP BY a") == nil)
        #expect(JSONColumns.foldCount("SELECT a, count(*) FROM events('t') GROUP BY a") == nil)
        #expect(JSONColumns.foldCount("SELECT a, (SELECT 1), count(*) FROM t GROUP BY a") == nil)
        #expect(JSONColumns.foldCount("SELECT a, count(a) FROM t GROUP BY a") == nil)
        #expect(JSONColumns.foldCount("SELECT a, count(*) OVER () FROM t GROUP BY a") == nil)
        #expect(JSONColumns.foldCount("SELECT 'count(*)', count(*) FROM t GROUP BY 1") == "SELECT 'count(*)', sum(strata_rows) FROM t GROUP BY 1")
    }
}
