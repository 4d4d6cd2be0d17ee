import Foundation
import Testing
@testable import StrataBroker
@testable import StrataLog
@testable import StrataQuery

/// `key->>'$.path'` becomes a member column like `value->>…` (extracted on the scan threads from
/// the record key): every answer is compared with SQLite's json_extract over the key.
@Suite struct KeyMemberTests {
    static func broker(_ dir: QDir) throws -> Broker {
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t", partitions: 2)
        var records: [ProducerRecord] = []
        for i in 0..<3_000 {
            let key: [UInt8]?
            switch i % 10 {
            case 0: key = nil                                              // a null key
            case 1: key = Array("plain-\(i % 7)".utf8)                     // not JSON: SQLite's error
            case 2: key = Array(#"{"id":"caf\u00e9-\#(i % 5)","tenant":{"name":"t\#(i % 3)"}}"#.utf8)
            case 3: key = Array(#"{"id":\#(i % 9),"tenant":{"name":null}}"#.utf8)
            default: key = Array(#"{"id":"u-\#(i % 11)","tenant":{"name":"t\#(i % 3)"},"tags":["a","b"]}"#.utf8)
            }
            let value: [UInt8]? = i % 13 == 0 ? nil : Array(#"{"amount":\#(i % 17),"id":"v-\#(i % 4)"}"#.utf8)
            records.append(ProducerRecord(key: key, value: value, timestamp: Int64(i)))
        }
        try broker.produce(topic: "t", records: records, acks: .leader)
        return broker
    }

    @Test func keyMembersMatchJSONExtractOverTheKey() throws {
        let dir = QDir()
        let broker = try Self.broker(dir)
        defer { try? broker.close() }
        // Non-JSON keys make json_extract fail: compare on the JSON ones, and check both refuse the rest.
        let json = "(key IS NULL OR key LIKE '{%')"
        let queries: [(String, String)] = [
            ("SELECT key->>'$.id', count(*), sum(value->>'$.amount') FROM t WHERE \(json) GROUP BY 1 ORDER BY 1",
             "SELECT json_extract(key,'$.id'), count(*), sum(json_extract(value,'$.amount')) FROM t WHERE \(json) GROUP BY 1 ORDER BY 1"),
            ("SELECT key->>'$.tenant.name', value->>'$.id', count(*) FROM t WHERE \(json) GROUP BY 1, 2 ORDER BY 1, 2",
             "SELECT json_extract(key,'$.tenant.name'), json_extract(value,'$.id'), count(*) FROM t WHERE \(json) GROUP BY 1, 2 ORDER BY 1, 2"),
            ("SELECT count(*), sum(offset) FROM t WHERE \(json) AND key->>'$.id' = 'u-3'",
             "SELECT count(*), sum(offset) FROM t WHERE \(json) AND json_extract(key,'$.id') = 'u-3'"),
            ("SELECT count(*) FROM t WHERE \(json) AND key->>'$.id' = 4",
             "SELECT count(*) FROM t WHERE \(json) AND json_extract(key,'$.id') = 4"),
            ("SELECT count(DISTINCT key->>'$.id') FROM t WHERE \(json)",
             "SELECT count(DISTINCT json_extract(key,'$.id')) FROM t WHERE \(json)"),
            ("SELECT offset, key->>'$.tags[1]', typeof(key->>'$.tenant') FROM t WHERE \(json) AND partition = 0 ORDER BY offset LIMIT 50",
             "SELECT offset, json_extract(key,'$.tags[1]'), typeof(json_extract(key,'$.tenant')) FROM t WHERE \(json) AND partition = 0 ORDER BY offset LIMIT 50"),
            ("SELECT key->>'$.id' FROM t", "SELECT json_extract(key,'$.id') FROM t"),  // non-JSON keys: both refuse
        ]
        for (fast, slow) in queries {
            let members = QueryEngine.jsonMembers(in: fast)
            #expect(members.contains { $0.hasPrefix(".") }, "\(fast): \(members)")
            let a = rows(try QueryEngine(broker: broker, jsonMembers: members), fast)
            let b = rows(try QueryEngine(broker: broker), slow)
            #expect(same(a, b), "\(fast): \(a) vs \(b)")
            if case .success(let r) = a { #expect(!r.isEmpty) }
        }
        // The GROUP BY over a key member is a grouped scan, not SQLite's sorter.
        let engine = try QueryEngine(broker: broker, jsonMembers: [".id"])
        let plan = try engine.plan("SELECT key->>'$.id', count(*) FROM t GROUP BY 1").joined(separator: "\n")
        #expect(!plan.contains("TEMP B-TREE"), "\(plan)")
    }

    /// A grouped scan reads members ahead of SQLite's WHERE; a member SQLite cannot read fails
    /// the statement only if the row survives the WHERE, as with SQLite's own evaluation.
    @Test func unreadableMembersOfRowsTheWhereDropsDoNotFailAGroupedScan() throws {
        let dir = QDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        defer { try? broker.close() }
        try broker.createTopic("v", partitions: 1)
        let values = (0..<200).map { i in i % 10 == 0 ? "not json \(i)" : #"{"m":"g\#(i % 3)"}"# }
        try broker.produce(topic: "v", records: values.map { ProducerRecord(key: nil, value: Array($0.utf8), timestamp: 0) }, acks: .leader)
        let engine = try QueryEngine(broker: broker, jsonMembers: ["m"])
        let fast = rows(engine, "SELECT value->>'$.m', count(*) FROM v WHERE value LIKE '{%' GROUP BY 1 ORDER BY 1")
        let slow = rows(try QueryEngine(broker: broker), "SELECT json_extract(value,'$.m'), count(*) FROM v WHERE value LIKE '{%' GROUP BY 1 ORDER BY 1")
        #expect(same(fast, slow) && (try? fast.get())?.count == 3, "\(fast) vs \(slow)")
        // Without the WHERE, the malformed rows are read: an error, as SQLite's.
        if case .success = rows(engine, "SELECT value->>'$.m', count(*) FROM v GROUP BY 1") { Issue.record("malformed JSON must be an error") }
    }

    @Test func keyAndValueMembersOfTheSamePathAreDistinct() throws {
        #expect(JSONColumns.members(in: "SELECT key->>'$.id', value->>'$.id', \"key\" ->> 'id' FROM t") == [".id", "id"])
        #expect(JSONColumns.columnName(".id") == "key->>'$.id'")
        #expect(JSONColumns.columnName("id") == "value->>'$.id'")
        #expect(JSONColumns.wantedKey(".id") == [0xFF] + Array("id".utf8))
        let dir = QDir()
        let broker = try Self.broker(dir)
        defer { try? broker.close() }
        let sql = "SELECT key->>'$.id', value->>'$.id' FROM t WHERE key LIKE '{%' AND value IS NOT NULL ORDER BY partition, offset LIMIT 20"
        let a = rows(try QueryEngine(broker: broker, jsonMembers: QueryEngine.jsonMembers(in: sql)), sql)
        let b = rows(try QueryEngine(broker: broker), "SELECT json_extract(key,'$.id'), json_extract(value,'$.id') FROM t WHERE key LIKE '{%' AND value IS NOT NULL ORDER BY partition, offset LIMIT 20")
        #expect(same(a, b), "\(a) vs \(b)")
    }
}
