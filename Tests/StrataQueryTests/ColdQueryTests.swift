import Foundation
import Testing
@testable import StrataBroker
@testable import StrataLog
@testable import StrataQuery

/// `strata query` and `strata export` over cold segments answer exactly as over the hot
/// segments they were made from.
@Suite struct ColdQueryTests {
    static let values: [String] = [
        #"{"event_type":"purchase","user_id":"u-1","amount":12.5,"geo":{"city":"Zürich"},"items":[{"sku":"a"}]}"#,
        #"{"event_type":"click","user_id":"u-2","amount":0,"geo":{"city":"東京"}}"#,
        #"{"event_type":"page_view","user_id":"u-\"3\"","amount":-0.0,"n":9007199254740993}"#,
        #"{"event_type":"purchase","user_id":"u-4","amount":1e3,"dup":1,"dup":2}"#,
        #"{"event_type":"esc\u00e9","user_id":"u-5","amount":"7"}"#,
        "not json",
        #"[1,2,3]"#,
        #"{"event_type":"click","nested":{"deep":[1,{"x":null}]},"amount":null}"#,
    ]

    /// 2 partitions of small segments: JSON of many forms, keys, headers, nulls, an aborted
    /// transaction in partition 0.
    static func fixture(_ dir: QDir) throws -> Broker {
        var options = Broker.Options()
        options.retentionCheckIntervalMs = 0
        options.cleanerBackoffMs = 0
        options.coldCheckIntervalMs = 0
        let broker = try Broker.open(dataDirectory: dir.path, options: options)
        try broker.createTopic("events", partitions: 2, configs: ["segment.bytes": "8192", "retention.ms": "-1"])
        let t0: Int64 = 1_759_276_800_000
        for i in 0..<3000 {
            let value: [UInt8]? = i % 41 == 0 ? nil : Array(values[i % values.count].utf8)
            let headers = i % 9 == 0 ? [ProducerRecord.Header(key: "h", value: i % 2 == 0 ? nil : Array("v\(i)".utf8))] : []
            let record = ProducerRecord(key: i % 6 == 0 ? nil : Array("u-\(i % 13)".utf8), value: value, headers: headers, timestamp: t0 + Int64(i) * 60_000)
            try broker.produce(topic: "events", records: [record], acks: .leader)
            if i == 1500 {
                let log = try broker.log(topic: "events", partition: 0)
                _ = try log.append(RecordBatchBuilder.build([ProducerRecord(key: nil, value: Array(#"{"event_type":"aborted"}"#.utf8), timestamp: t0)],
                                                            producerId: 4242, producerEpoch: 0, baseSequence: 0, transactional: true))
                _ = try log.appendTransactionMarker(producerId: 4242, epoch: 0, type: .abort)
            }
        }
        return broker
    }

    static let statements = [
        "SELECT count(*) FROM events",
        "SELECT value->>'$.event_type' AS t, count(*), sum(value->>'$.amount'), min(value->>'$.amount'), max(value->>'$.user_id') FROM events WHERE json_valid(value) GROUP BY 1 ORDER BY 1",
        "SELECT value->>'$.geo.city', count(*) FROM events WHERE json_valid(value) GROUP BY 1 ORDER BY 1",
        "SELECT key, count(*) FROM events GROUP BY key ORDER BY key",
        "SELECT partition, offset, timestamp, key, value, headers FROM events ORDER BY partition, offset",
        "SELECT offset, value->>'$.n', value->>'$.dup', value->'$.items' FROM events WHERE json_valid(value) AND value->>'$.user_id' = 'u-1' AND partition = 1 ORDER BY offset",
        "SELECT count(DISTINCT value->>'$.user_id') FROM events WHERE json_valid(value) AND offset BETWEEN 100 AND 900",
        "SELECT headers, count(*) FROM events WHERE headers IS NOT NULL GROUP BY 1 ORDER BY 1",
        "SELECT count(*) FROM events WHERE json_valid(value) AND value->>'$.event_type' = 'aborted'",
        // SQLite's error on the first value that is not JSON, the same from cold.
        "SELECT value->>'$.event_type', count(*) FROM events GROUP BY 1",
    ]

    /// Each statement's rows, or its error, as text.
    func answers(_ broker: Broker) throws -> [String] {
        var out: [String] = []
        func run(_ engine: QueryEngine, _ sql: String) -> String {
            switch rows(engine, sql) {
            case .success(let r): return "\(r)"
            case .failure(let e): return "error: \(e)"
            }
        }
        for sql in Self.statements { out.append(run(try QueryEngine(broker: broker), sql)) }
        let bounded = try QueryEngine(broker: broker, sinceMs: 1_759_276_800_000 + 500 * 60_000, untilMs: 1_759_276_800_000 + 2100 * 60_000)
        out.append(run(bounded, "SELECT partition, offset, value FROM events ORDER BY 1, 2"))
        let uncommitted = try QueryEngine(broker: broker, readCommitted: false)
        out.append(run(uncommitted, "SELECT count(*) FROM events WHERE json_valid(value) AND value->>'$.event_type' = 'aborted'"))
        return out
    }

    /// Each statement's answer on the fast paths, as text, after checking it equals SQLite's own
    /// evaluation (no member columns: json_extract on every row).
    func fastAnswersEqualSQLite(_ broker: Broker, _ statements: [String]) throws -> [String] {
        try statements.map { sql in
            let fast = rows(try QueryEngine(broker: broker, jsonMembers: QueryEngine.jsonMembers(in: sql)), sql)
            let slow = rows(try QueryEngine(broker: broker), sql)
            #expect(same(fast, slow), "\(sql): \(fast) vs \(slow)")
            return "\(fast)"
        }
    }

    /// JSON only (so that grouped scans over member columns run): every form a member can take.
    static let jsonValues: [String] = [
        #"{"t":"a","n":1,"geo":{"city":"Zürich"},"items":[{"sku":"x"},{"sku":"y"}],"flag":true}"#,
        #"{"t":"b","n":2.5,"geo":{"city":"東京"},"items":[],"flag":false}"#,
        #"{"t":"a\u00e9","n":-0.0,"geo":{},"flag":null}"#,
        #"{"t":"a","n":1e3, "geo":{"city":"a\"q\""},"items":[{"sku":"z"}]}"#,
        #"{"n":12345678901234567,"t":"c"}"#,
        #"{ "t" : "b" , "n" : 0 , "extra" : [1, {"k": null}] }"#,
        #"{"t":"a","n":1,"t":"shadowed"}"#,
        #"[{"t":"array at the top"}]"#,
        #"{"t":"c","n":-7,"geo":{"city":null,"zip":"8000"}}"#,
        #""just a string""#,
        #"{}"#,
    ]

    /// Grouped scans over member columns read cold blocks from their token columns: the same
    /// answers as hot and as SQLite's own evaluation, and the plan really read columns.
    @Test func groupedScansReadColdColumns() throws {
        let dir = QDir()
        let broker = try coldTestBroker(dir, topic: "j", partitions: 2, segmentBytes: 8192)
        defer { try? broker.close() }
        let t0: Int64 = 1_759_276_800_000
        for start in stride(from: 0, to: 4_000, by: 40) {
            let records = (start..<(start + 40)).map { i in
                // Two records only SQLite reads (an escaped member name; an integer of 20 digits): their
                // blocks are decoded whole, after the column scan of one gave up half-way.
                let odd = i == 1_234 ? #"{"\u0074":"escaped name","n":1}"# : i == 2_345 ? #"{"t":"big","n":12345678901234567890}"# : nil
                let value = odd ?? Self.jsonValues[(i * 7) % Self.jsonValues.count]
                return ProducerRecord(key: Array("k\(i % 7)".utf8), value: i % 53 == 0 ? nil : Array(value.utf8),
                                      timestamp: t0 + Int64(i) * 1_000 - Int64(i % 5) * 3_000)
            }
            try broker.produce(topic: "j", records: records, acks: .leader)
        }
        let statements = [
            "SELECT value->>'$.t', count(*), sum(value->>'$.n'), min(value->>'$.n'), max(value->>'$.geo.city'), count(value->>'$.flag') FROM j GROUP BY 1 ORDER BY 1",
            "SELECT value->>'$.geo.city', value->>'$.flag', count(*), total(value->>'$.n') FROM j GROUP BY 1, 2 ORDER BY 1, 2",
            "SELECT value->>'$.items[1].sku', count(*) FROM j GROUP BY 1 ORDER BY 1",
            "SELECT DISTINCT value->>'$.t' FROM j ORDER BY 1",
            "SELECT value->>'$.t', count(*), avg(value->>'$.n') FROM j WHERE timestamp >= \(t0 + 500_000) AND timestamp < \(t0 + 2_500_000) GROUP BY 1 ORDER BY 1",
            "SELECT value->>'$.n', count(*) FROM j WHERE value->>'$.t' = 'a' GROUP BY 1 ORDER BY 1",
            "SELECT value->>'$.t', partition, count(*) FROM j GROUP BY 1, 2 ORDER BY 1, 2",
            // The date of the timestamp as a GROUP BY term (the day column, from the block's timestamps).
            "SELECT value->>'$.t', date(timestamp / 1000, 'unixepoch') AS day, count(*), sum(value->>'$.n') FROM j WHERE value->>'$.flag' = 1 GROUP BY 1, 2 ORDER BY 1, 2",
            // Not grouped, members only: read from columns too (`C` plans), filters first.
            "SELECT partition, offset, timestamp, value->>'$.t', value->>'$.n', value->>'$.items[1].sku', value->>'$.flag' FROM j WHERE value->>'$.t' = 'a' ORDER BY 1, 2",
            "SELECT partition, offset, value->>'$.geo.city' FROM j WHERE offset BETWEEN 300 AND 420 ORDER BY 1, 2",
            // A container member: those blocks are decoded whole (->> gives the JSON text).
            "SELECT value->>'$.geo', count(*) FROM j GROUP BY 1 ORDER BY 1",
        ]
        func answers() throws -> [String] { try fastAnswersEqualSQLite(broker, statements) }
        let hot = try answers()
        #expect(hot.allSatisfy { $0.hasPrefix("success") }, "\(hot)")
        for p: Int32 in 0..<2 {
            let log = try broker.log(topic: "j", partition: p)
            try log.flush()
            _ = try log.convertToCold(olderThanMs: nil)
        }
        let cold = try answers()
        for (i, (a, b)) in zip(hot, cold).enumerated() { #expect(a == b, "\(statements[i])") }
        // The first statement read columns but for the two odd records' blocks; the container one
        // decoded its blocks whole.
        let engine = try QueryEngine(broker: broker, jsonMembers: QueryEngine.jsonMembers(in: statements[0]))
        _ = rows(engine, statements[0])
        #expect(engine.stats.coldBlocksFromColumns > 10 && engine.stats.coldBlocksDecoded == 2, "\(engine.stats)")
        let container = try QueryEngine(broker: broker, jsonMembers: QueryEngine.jsonMembers(in: statements.last!))
        _ = rows(container, statements.last!)
        #expect(container.stats.coldBlocksDecoded > 0, "\(container.stats)")
    }

    /// Columns stored typed (integers, decimals, timestamps, dictionaries) are converted without
    /// their text — decimals divided exactly where that equals strtod's rounding, the rest through
    /// the text — and filtered members are read first: the answers are SQLite's own, hot and
    /// cold, and blocks without a passing record are skipped after their filter column.
    @Test func typedColdColumnsAndFiltersReadFirst() throws {
        let dir = QDir()
        let broker = try coldTestBroker(dir, topic: "t", partitions: 1, segmentBytes: 16384)
        defer { try? broker.close() }
        let t0: Int64 = 1_759_276_800_000
        // Decimals that round in every way: quotients of exact doubles, halfway-looking values,
        // and unscaled values past 2^53 (converted through their text).
        let amounts = ["0.1", "2.675", "1.005", "0.00000000000000001", "9007199254740991.5", "0.123456789012345678",
                       "123456789.123456789", "-0.5", "-17.25", "4.35", "0.3", "1.7976931348623157", "999999999999.99"]
        let kinds = ["a", "b", #"a\"b"#, #"\u00e9t\u00e9"#, "c"]
        for i in 0..<3_000 {
            let kind = i == 1_777 ? "rare" : kinds[i % kinds.count]
            // One block holds an integer of 19 digits: only SQLite reads it (decoded whole).
            let id = i == 2_500 ? "1000000000000000001" : "\((i * 7919) % 1_000 - 300)"
            let flag = ["true", "false", "null"][i % 3]
            let ts = "2025-10-\(10 + i % 9)T0\(i % 10):00:00.\(100 + i % 900)Z"
            let value = #"{"kind":"\#(kind)","amount":\#(amounts[(i * 5) % amounts.count]),"id":\#(id),"code":"\#(i % 11 * 41)","ts":"\#(ts)","flag":\#(flag)}"#
            try broker.produce(topic: "t", records: [ProducerRecord(key: nil, value: Array(value.utf8), timestamp: t0 + Int64(i) * 1_000)], acks: .leader)
        }
        let statements = [
            "SELECT value->>'$.kind', count(*), sum(value->>'$.amount'), total(value->>'$.amount'), avg(value->>'$.amount'), min(value->>'$.amount'), max(value->>'$.amount') FROM t GROUP BY 1 ORDER BY 1",
            "SELECT value->>'$.kind', printf('%.17g', sum(value->>'$.amount')), count(1) FROM t GROUP BY 1 ORDER BY 1",
            "SELECT value->>'$.amount', count(*) FROM t GROUP BY 1 ORDER BY 1",
            "SELECT value->>'$.code', count(*), min(value->>'$.id'), max(value->>'$.id') FROM t GROUP BY 1 ORDER BY 1",
            "SELECT min(value->>'$.ts'), max(value->>'$.ts'), count(DISTINCT value->>'$.kind'), count(DISTINCT value->>'$.code') FROM t",
            "SELECT value->>'$.flag', count(*) FROM t GROUP BY 1 ORDER BY 1",
            "SELECT count(*), sum(value->>'$.amount'), max(value->>'$.ts') FROM t WHERE value->>'$.kind' = 'rare'",
            "SELECT value->>'$.kind', count(*) FROM t WHERE value->>'$.id' IN (5, -300, 699) GROUP BY 1 ORDER BY 1",
            "SELECT value->>'$.kind', count(*) FROM t WHERE value->>'$.code' = '123' GROUP BY 1 ORDER BY 1",
            "SELECT value->>'$.kind', count(*) FROM t WHERE value->>'$.code' = 123 GROUP BY 1 ORDER BY 1",
            "SELECT count(*), max(value->>'$.amount') FROM t WHERE value->>'$.kind' = 'a\"b'",
            // Not folded (count(1)): the filter only drops rows it certainly fails; SQLite re-checks.
            "SELECT value->>'$.code', count(1) FROM t WHERE value->>'$.kind' IN ('rare', 'c') GROUP BY 1 ORDER BY 1",
            "SELECT value->>'$.kind', count(*) FROM t WHERE timestamp BETWEEN \(t0 + 100_000) AND \(t0 + 900_000) AND value->>'$.flag' = 1 GROUP BY 1 ORDER BY 1",
            // Not grouped, members only (`C` plans): from columns, the filtered member first.
            "SELECT offset, timestamp, value->>'$.amount', value->>'$.ts', value->>'$.code', value->>'$.flag' FROM t WHERE value->>'$.kind' = 'rare'",
            "SELECT offset, value->>'$.kind', value->>'$.amount' FROM t WHERE value->>'$.code' IN ('41', '82') AND offset < 1000 ORDER BY offset",
            "SELECT offset, value->>'$.id' FROM t WHERE value->>'$.id' > 690 ORDER BY offset",
            // Reads the value: decoded whole.
            "SELECT offset, value FROM t WHERE value->>'$.kind' = 'rare'",
            // Folded under ranges and IS NOT NULL, applied on the columns first.
            "SELECT value->>'$.kind', count(*), sum(value->>'$.amount') FROM t WHERE value->>'$.amount' > 1.5 AND value->>'$.ts' >= '2025-10-15' GROUP BY 1 ORDER BY 1",
            "SELECT value->>'$.code', count(*), min(value->>'$.amount') FROM t WHERE value->>'$.code' IS NOT NULL AND value->>'$.id' <= 0 GROUP BY 1 ORDER BY 1",
        ]
        func answers() throws -> [String] { try fastAnswersEqualSQLite(broker, statements) }
        let hot = try answers()
        #expect(hot.allSatisfy { $0.hasPrefix("success") }, "\(hot)")
        #expect(hot[6].contains(#"[[Optional("1"), "#), "\(hot[6])")
        let log = try broker.log(topic: "t", partition: 0)
        try log.flush()
        #expect(try log.convertToCold(olderThanMs: nil).segmentsConverted > 5)
        let cold = try answers()
        for (i, (a, b)) in zip(hot, cold).enumerated() { #expect(a == b, "\(statements[i])") }
        // Column scans, the needle's blocks skipped after their filter column; only the block
        // with the 19-digit id is decoded whole, and only by statements reading `id`.
        let needle = try QueryEngine(broker: broker, jsonMembers: QueryEngine.jsonMembers(in: statements[6]))
        _ = rows(needle, statements[6])
        #expect(needle.stats.coldBlocksFromColumns > 5 && needle.stats.coldBlocksDecoded == 0, "\(needle.stats)")
        #expect(needle.stats.coldBlocksFilteredOut == needle.stats.coldBlocksFromColumns - 1, "\(needle.stats)")
        let rowsNeedle = try QueryEngine(broker: broker, jsonMembers: QueryEngine.jsonMembers(in: statements[13]))
        _ = rows(rowsNeedle, statements[13])
        #expect(rowsNeedle.stats.coldBlocksFromColumns > 5 && rowsNeedle.stats.coldBlocksDecoded == 0, "\(rowsNeedle.stats)")
        #expect(rowsNeedle.stats.coldBlocksFilteredOut == rowsNeedle.stats.coldBlocksFromColumns - 1, "\(rowsNeedle.stats)")
        let values = try QueryEngine(broker: broker, jsonMembers: QueryEngine.jsonMembers(in: statements[16]))
        _ = rows(values, statements[16])
        #expect(values.stats.coldBlocksFromColumns == 0 && values.stats.coldBlocksDecoded > 5, "\(values.stats)")
        let ids = try QueryEngine(broker: broker, jsonMembers: QueryEngine.jsonMembers(in: statements[3]))
        _ = rows(ids, statements[3])
        #expect(ids.stats.coldBlocksDecoded == 1 && ids.stats.coldBlocksFromColumns > 5, "\(ids.stats)")
        for sql in statements.suffix(2) {
            let folded = try QueryEngine(broker: broker, jsonMembers: QueryEngine.jsonMembers(in: sql))
            _ = rows(folded, sql)
            #expect(try folded.plan(sql).joined().contains(",f"), "\(sql)")
            #expect(folded.stats.coldBlocksFromColumns > 5, "\(sql): \(folded.stats)")
        }
        let amounts0 = try QueryEngine(broker: broker, jsonMembers: QueryEngine.jsonMembers(in: statements[0]))
        _ = rows(amounts0, statements[0])
        #expect(amounts0.stats.coldBlocksDecoded == 0, "\(amounts0.stats)")
    }

    @Test func queriesAndExportsAnswerAlikeHotAndCold() throws {
        let dir = QDir()
        let broker = try Self.fixture(dir)
        defer { try? broker.close() }
        let hot = try answers(broker)
        #expect(hot[0] == #"[[Optional("3000")]]"#)
        #expect(hot.last == #"[[Optional("1")]]"#)
        #expect(hot[9].hasPrefix("error: ") && hot.filter { $0.hasPrefix("error") }.count == 1, "\(hot.map { $0.prefix(80) })")
        var hotExport = ParquetExport.Options(topic: "events", outputDirectory: dir.path + "/hot")
        hotExport.maxRowsPerFile = 700
        let hotFiles = try ParquetExport(broker: broker, options: hotExport).run()
        var converted = 0
        for p: Int32 in 0..<2 {
            let log = try broker.log(topic: "events", partition: p)
            try log.flush()
            converted += try log.convertToCold(olderThanMs: nil).segmentsConverted
        }
        #expect(converted > 10)
        let cold = try answers(broker)
        for (i, (a, b)) in zip(hot, cold).enumerated() { #expect(a == b, "statement \(i)") }
        var coldExport = hotExport
        coldExport.outputDirectory = dir.path + "/cold"
        let coldFiles = try ParquetExport(broker: broker, options: coldExport).run()
        #expect(hotFiles.count == coldFiles.count && hotFiles.count > 2)
        for (h, c) in zip(hotFiles, coldFiles) {
            #expect(h.name == c.name)
            let (a, b) = (FileManager.default.contents(atPath: dir.path + "/hot/" + h.name), FileManager.default.contents(atPath: dir.path + "/cold/" + c.name))
            #expect(a != nil && a == b, "\(c.name)")
        }
    }
}
