import Foundation
import Testing
@testable import StrataBroker
@testable import StrataLog
@testable import StrataQuery

/// Block summaries (SegmentSummary, BlockSkips) may only ever skip blocks that cannot hold a
/// match: every test compares a pruned query with one SQLite evaluates over every row.
@Suite struct BlockSummaryTests {
    func rows(_ engine: QueryEngine, _ sql: String) throws -> [[String?]] {
        var out: [[String?]] = []
        try engine.run(sql, header: { _ in }, row: { out.append($0) })
        return out
    }

    /// A topic with 3 MiB segments (so each has three 1 MiB blocks), values whose
    /// members are text, integers, reals, null, escaped or nested, and keys from a skewed set.
    static func broker(_ dir: QDir, seed: UInt64, records: Int = 60_000) throws -> Broker {
        var state = seed
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t", partitions: 2, configs: ["segment.bytes": "3145728", "retention.ms": "-1",
                                                             "query.index.members": "user_id,geo.city,n"])
        var batch: [ProducerRecord] = []
        let padding = String(repeating: "x", count: 120)
        for i in 0..<records {
            // Hot users everywhere; rare ones (u-9000+) in a few places only.
            let user = next() % 500 == 0 ? "u-\(9000 + next() % 40)" : "u-\(next() % 30)"
            let userJSON: String
            switch next() % 12 {
            case 0: userJSON = "null"
            case 1: userJSON = "\(next() % 7)"                       // a number where text is usual
            case 2: userJSON = "\"\(user.replacingOccurrences(of: "u", with: "\\u0075"))\""  // escaped
            default: userJSON = "\"\(user)\""
            }
            let n = next() % 3000 == 0 ? "\(100_000 + i)" : next() % 5 == 0 ? "\(Double(next() % 100) + 0.5)" : "\(next() % 100)"
            let city = ["Paris", "K\\u00f6ln", "Köln", "Lyon"][Int(next() % 4)]
            let rareCity = i == records / 2 ? "Atlantis" : city
            let value = #"{"user_id":\#(userJSON),"geo":{"city":"\#(rareCity)"},"n":\#(n),"pad":"\#(padding)"}"#
            let key = next() % 1000 == 0 ? "rare-\(next() % 20)" : "k\(next() % 16)"
            batch.append(ProducerRecord(key: Array(key.utf8), value: Array(value.utf8), timestamp: Int64(i)))
            if batch.count == 200 {
                try broker.produce(topic: "t", records: batch, acks: .leader)
                batch = []
            }
        }
        if !batch.isEmpty { try broker.produce(topic: "t", records: batch, acks: .leader) }
        return broker
    }

    static let predicates: [(fast: String, slow: String)] = [
        ("value->>'$.user_id' = 'u-9003'", "json_extract(value,'$.user_id') = 'u-9003'"),
        ("value->>'$.user_id' IN ('u-9001', 'u-9039', 'nobody')", "json_extract(value,'$.user_id') IN ('u-9001', 'u-9039', 'nobody')"),
        ("value->>'$.user_id' = 'u-3'", "json_extract(value,'$.user_id') = 'u-3'"),
        ("value->>'$.user_id' = 5", "json_extract(value,'$.user_id') = 5"),
        ("value->>'$.user_id' = 5.0", "json_extract(value,'$.user_id') = 5.0"),
        ("value->>'$.user_id' = '5'", "json_extract(value,'$.user_id') = '5'"),
        ("value->>'$.user_id' = NULL", "json_extract(value,'$.user_id') = NULL"),
        ("value->>'$.n' = 42", "json_extract(value,'$.n') = 42"),
        ("value->>'$.n' = 42.5", "json_extract(value,'$.n') = 42.5"),
        ("value->>'$.n' IN (7, 99.5, 'x')", "json_extract(value,'$.n') IN (7, 99.5, 'x')"),
        ("value->>'$.geo.city' = 'Atlantis'", "json_extract(value,'$.geo.city') = 'Atlantis'"),
        ("value->>'$.geo.city' = 'Köln'", "json_extract(value,'$.geo.city') = 'Köln'"),
        ("key = 'rare-7'", "key || '' = 'rare-7'"),
        ("key IN ('rare-1', 'rare-19', 'none')", "key || '' IN ('rare-1', 'rare-19', 'none')"),
        ("key = 'k3'", "key || '' = 'k3'"),
        ("key = 12", "key || '' = '12'"),
        ("key = 'rare-2' AND value->>'$.user_id' = 'u-9005'", "key || '' = 'rare-2' AND json_extract(value,'$.user_id') = 'u-9005'"),
        ("value->>'$.user_id' = 'u-9002' AND timestamp >= 5000", "json_extract(value,'$.user_id') = 'u-9002' AND timestamp >= 5000"),
        // Ranges: numbers by min/max; text is above every number, NULL matches nothing.
        ("value->>'$.n' > 50000", "json_extract(value,'$.n') > 50000"),
        ("value->>'$.n' >= 100000.0 AND value->>'$.n' <= 130000", "json_extract(value,'$.n') >= 100000.0 AND json_extract(value,'$.n') <= 130000"),
        ("value->>'$.n' < -1", "json_extract(value,'$.n') < -1"),
        ("value->>'$.n' <= 0.5", "json_extract(value,'$.n') <= 0.5"),
        ("value->>'$.user_id' > 5", "json_extract(value,'$.user_id') > 5"),
        ("value->>'$.user_id' < 3", "json_extract(value,'$.user_id') < 3"),
        ("value->>'$.geo.city' > 'M'", "json_extract(value,'$.geo.city') > 'M'"),
        ("value->>'$.geo.city' < 'M'", "json_extract(value,'$.geo.city') < 'M'"),
        ("value->>'$.n' > 99999999999999999", "json_extract(value,'$.n') > 99999999999999999"),
    ]

    @Test(arguments: [1, 2] as [UInt64])
    func pruningNeverDropsAMatchingRow(_ seed: UInt64) throws {
        let dir = QDir()
        let broker = try Self.broker(dir, seed: seed)
        defer { try? broker.close() }
        let report = try BlockSummaries.build(broker: broker, topic: "t")
        #expect(report.segmentsBuilt > 2 && report.blocks > report.segmentsBuilt, "\(report)")
        // Built once: a second pass finds them up to date.
        #expect(try BlockSummaries.build(broker: broker, topic: "t").segmentsBuilt == 0)
        var prunedSomething = false
        for (fast, slow) in Self.predicates {
            let engine = try QueryEngine(broker: broker, jsonMembers: ["user_id", "geo.city", "n"])
            let a = try rows(engine, "SELECT count(*), sum(offset), group_concat(partition || ':' || offset) FROM t WHERE \(fast)")
            let pruned = engine.stats.blocksPruned
            let b = try rows(QueryEngine(broker: broker), "SELECT count(*), sum(offset), group_concat(partition || ':' || offset) FROM t WHERE \(slow)")
            #expect(a == b, "\(fast): \(a.map { $0.prefix(2) }) vs \(b.map { $0.prefix(2) })")
            if pruned > 0 { prunedSomething = true }
            // (An IN list is compared like another table's column: blocks holding numbers stay.)
            if fast.contains("rare") || (fast.contains("u-90") && !fast.contains(" IN ")) || fast.contains("Atlantis") || fast.contains("= NULL")
                || fast.contains("> 50000") || fast.contains("< -1") {
                #expect(pruned > 0, "\(fast): nothing pruned (\(engine.stats))")
            }
        }
        #expect(prunedSomething)
        // An operand with an affinity (a column of another table): SQLite may convert, so a number
        // can equal a text; the same statement gives the same rows with and without summaries.
        let joins = ["SELECT count(*), sum(t.offset) FROM (SELECT CAST(5 AS TEXT) AS x UNION SELECT 'u-9003') u JOIN t ON t.value->>'$.user_id' = u.x",
                     "SELECT count(*), sum(t.offset) FROM (SELECT CAST(5 AS REAL) AS x) u JOIN t ON t.value->>'$.user_id' = u.x",
                     "SELECT count(*), sum(t.offset) FROM (SELECT CAST('7' AS INTEGER) AS x) u JOIN t ON t.key = u.x"]
        let withSummaries = try joins.map { try rows(QueryEngine(broker: broker, jsonMembers: ["user_id"]), $0) }
        let summaries = broker.dataDirectory + "/summaries"
        #expect(rename(summaries, summaries + ".away") == 0)
        let without = try joins.map { try rows(QueryEngine(broker: broker, jsonMembers: ["user_id"]), $0) }
        #expect(rename(summaries + ".away", summaries) == 0)
        #expect(withSummaries == without)
    }

    /// Summaries describe a segment by its offsets, log bytes and timestamps, which the cold tier
    /// keeps: a summary built on a hot segment still prunes after the segment turns cold, and one
    /// built on a cold segment prunes its cold blocks — never dropping a matching row.
    @Test func summariesPruneColdSegments() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, seed: 3)
        defer { try? broker.close() }
        #expect(try BlockSummaries.build(broker: broker, topic: "t").segmentsBuilt >= 2)
        var converted = 0
        for p: Int32 in 0..<2 {
            let log = try broker.log(topic: "t", partition: p)
            try log.flush()
            converted += try log.convertToCold(olderThanMs: nil).segmentsConverted
        }
        #expect(converted >= 2)
        func check(_ stage: String) throws {
            var pruned = 0
            for (fast, slow) in Self.predicates {
                let engine = try QueryEngine(broker: broker, jsonMembers: ["user_id", "geo.city", "n"])
                let a = try rows(engine, "SELECT count(*), sum(offset), group_concat(partition || ':' || offset) FROM t WHERE \(fast)")
                pruned += engine.stats.blocksPruned
                #expect(engine.stats.segmentsWithoutSummary == 0, "\(stage) \(fast): \(engine.stats)")
                let b = try rows(QueryEngine(broker: broker), "SELECT count(*), sum(offset), group_concat(partition || ':' || offset) FROM t WHERE \(slow)")
                #expect(a == b, "\(stage) \(fast): \(a.map { $0.prefix(2) }) vs \(b.map { $0.prefix(2) })")
            }
            #expect(pruned > 10, "\(stage): \(pruned) blocks pruned")
        }
        // The summaries of the hot segments, still current for their cold copies.
        #expect(try BlockSummaries.build(broker: broker, topic: "t").segmentsBuilt == 0)
        try check("summaries of hot segments")
        // Summaries built afresh over the cold segments (a block per cold block).
        try FileManager.default.removeItem(atPath: broker.dataDirectory + "/summaries")
        #expect(try BlockSummaries.build(broker: broker, topic: "t").segmentsBuilt >= converted)
        try check("summaries of cold segments")
    }

    /// The active segment's flushed beginning gets a prefix summary that later passes extend;
    /// records appended after it are read in full, and a roll replaces it with a full summary.
    @Test func theActiveSegmentIsSummarisedUpToItsFlushedEnd() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, seed: 4, records: 20_000)
        defer { try? broker.close() }
        // Only flushed records are summarised (an unclean stop may cut the unflushed tail).
        try broker.log(topic: "t", partition: 0).flush()
        _ = try BlockSummaries.build(broker: broker, topic: "t")
        let directory = SegmentSummary.directory(dataDirectory: broker.dataDirectory, topic: "t", partition: 0)
        let log = try broker.log(topic: "t", partition: 0)
        let active = try #require(try log.segmentInfos().last)
        let prefix = try #require(SegmentSummary.loadPrefix(directory: directory, baseOffset: active.baseOffset, upTo: active.nextOffset,
                                                            members: ["user_id", "geo.city", "n"]))
        #expect(prefix.isPrefix && prefix.identity.nextOffset == log.recoveryPoint && !prefix.blocks.isEmpty)
        let query = "SELECT count(*), sum(offset) FROM t WHERE value->>'$.user_id' = 'u-new' OR key = 'k-new'"
        // Appended after the summary: found, whatever the summary says.
        try broker.produce(topic: "t", records: [ProducerRecord(key: Array("k-new".utf8), value: Array(#"{"user_id":"u-new"}"#.utf8), timestamp: 1)],
                           partition: 0, acks: .leader)
        for q in [query, "SELECT count(*), sum(offset) FROM t WHERE value->>'$.user_id' = 'u-new'", "SELECT count(*), sum(offset) FROM t WHERE key = 'k-new'"] {
            let engine = try QueryEngine(broker: broker, jsonMembers: ["user_id"])
            #expect(try rows(engine, q).first?.first == "1", "\(q)")
        }
        // The next pass extends the prefix; the record is still found, now through the summary.
        try log.flush()
        _ = try BlockSummaries.build(broker: broker, topic: "t")
        let extended = try #require(SegmentSummary.loadPrefix(directory: directory, baseOffset: active.baseOffset, upTo: log.logEndOffset,
                                                              members: ["user_id", "geo.city", "n"]))
        #expect(extended.identity.nextOffset == log.logEndOffset && extended.blocks.count > prefix.blocks.count)
        let engine = try QueryEngine(broker: broker, jsonMembers: ["user_id"])
        #expect(try rows(engine, "SELECT count(*) FROM t WHERE value->>'$.user_id' = 'u-new'") == [["1"]])
        #expect(engine.stats.blocksPruned > 0)
        // After a roll the old prefix summary no longer counts for the closed segment.
        try log.roll()
        let closedInfo = try #require(try log.segmentInfos().first { $0.baseOffset == active.baseOffset })
        #expect(SegmentSummary.load(directory: directory, identity: .init(baseOffset: closedInfo.baseOffset, nextOffset: closedInfo.nextOffset,
                                                                          sizeInBytes: Int64(closedInfo.sizeInBytes), largestTimestamp: closedInfo.largestTimestamp),
                                    members: ["user_id", "geo.city", "n"]) == nil)
        #expect(try BlockSummaries.build(broker: broker, topic: "t").segmentsBuilt >= 1)
        #expect(try rows(QueryEngine(broker: broker, jsonMembers: ["user_id"]), "SELECT count(*) FROM t WHERE value->>'$.user_id' = 'u-new'") == [["1"]])
    }

    /// A topic deleted and created again under its name: the old summaries (still on disk until
    /// the next pass removes them) describe other batches at the same offsets and must not count.
    @Test func summariesOfARecreatedTopicAreNotUsed() throws {
        let dir = QDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        defer { try? broker.close() }
        func fill(_ user: String) throws {
            try broker.createTopic("t", partitions: 1, configs: ["segment.bytes": "1048576", "query.index.members": "user_id"])
            for i in 0..<40 {
                let records = (0..<200).map { j in
                    let id = i * 200 + j == 3_777 ? user : "u-\(j % 50)"
                    let pad = String(repeating: "p", count: 150)
                    return ProducerRecord(key: Array("k\(j)".utf8), value: Array(#"{"user_id":"\#(id)","pad":"\#(pad)"}"#.utf8), timestamp: Int64(i))
                }
                try broker.produce(topic: "t", records: records, acks: .leader)
            }
            try broker.log(topic: "t", partition: 0).flush()
        }
        try fill("u-old")
        let first = try BlockSummaries.build(broker: broker, topic: "t")
        #expect(first.segmentsBuilt >= 1)
        try broker.deleteTopic("t")
        try fill("u-new")
        let summaries = SegmentSummary.directory(dataDirectory: broker.dataDirectory, topic: "t", partition: 0)
        #expect(!((try? FileIO.listDirectory(summaries)) ?? []).isEmpty, "the old files are still there")
        for (user, expected) in [("u-new", "1"), ("u-old", "0")] {
            let engine = try QueryEngine(broker: broker, jsonMembers: ["user_id"])
            #expect(try rows(engine, "SELECT count(*) FROM t WHERE value->>'$.user_id' = '\(user)'") == [[expected]], "\(user)")
            #expect(engine.stats.blocksSummarized == 0, "no old summary may be used: \(engine.stats)")
        }
        // The next pass replaces them; then they prune again, and still find the record.
        _ = BlockSummaries.buildAll(broker: broker)
        let engine = try QueryEngine(broker: broker, jsonMembers: ["user_id"])
        #expect(try rows(engine, "SELECT count(*) FROM t WHERE value->>'$.user_id' = 'u-new'") == [["1"]])
        #expect(engine.stats.blocksPruned > 0)
        // A deleted topic's summaries go with the next pass.
        try broker.deleteTopic("t")
        _ = BlockSummaries.buildAll(broker: broker)
        #expect(!FileIO.exists(summaries))
    }

    /// The server's pass reads a bounded amount of log per pass and continues where it stopped.
    @Test func passesAreBoundedAndContinue() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, seed: 5, records: 40_000)
        defer { try? broker.close() }
        let memory = BlockSummaries.Memory()
        var built = 0
        var passes = 0
        while passes < 20 {
            passes += 1
            let results = BlockSummaries.buildAll(broker: broker, maxBytesPerPass: 1, memory: memory)
            let report = try #require(try results.first?.result.get())
            built += report.segmentsBuilt
            #expect(report.segmentsBuilt <= 1, "one segment per pass at most with a 1-byte budget")
            if report.segmentsBuilt == 0 && built > 0 { break }
        }
        let closed = try (0..<2).reduce(0) { n, p in try n + broker.log(topic: "t", partition: Int32(p)).segmentInfos().filter { !$0.isActive }.count }
        #expect(built == closed && passes > closed, "\(built) of \(closed) in \(passes) passes")
        #expect(try BlockSummaries.build(broker: broker, topic: "t").segmentsBuilt == 0)
        // Topics that did not ask for summaries are left alone by the server's pass.
        try broker.createTopic("plain", partitions: 1, configs: ["segment.bytes": "65536", "max.message.bytes": "65536"])
        for start in stride(from: 0, to: 8_000, by: 1_000) {
            try broker.produce(topic: "plain", records: (start..<start + 1_000).map { ProducerRecord(key: nil, value: Array(#"{"i":\#($0)}"#.utf8), timestamp: 0) },
                               acks: .leader)
        }
        #expect(!BlockSummaries.buildAll(broker: broker, memory: memory).contains { $0.topic == "plain" })
        #expect(!FileIO.exists(SegmentSummary.directory(dataDirectory: broker.dataDirectory, topic: "plain", partition: 0)))
        #expect(try BlockSummaries.build(broker: broker, topic: "plain").segmentsBuilt > 0, "strata index summarises it on request")
    }

    /// Compaction rewrites closed segments: their summaries stop counting at once (the segment's
    /// identity changed), queries read those segments in full, and the next pass summarises the
    /// compacted segments, which prune again.
    @Test func compactedSegmentsGetNewSummaries() throws {
        let dir = QDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        defer { try? broker.close() }
        try broker.createTopic("c", partitions: 1, configs: ["cleanup.policy": "compact", "segment.bytes": "1048576",
                                                             "query.index.members": "user_id", "min.cleanable.dirty.ratio": "0.01"])
        for round in 0..<6 {
            let records = (0..<2_000).map { i in
                let user = round == 5 && i == 7 ? "u-last" : round == 0 && i == 3 ? "u-gone" : "u-\(i % 400)"
                return ProducerRecord(key: Array("k\(i % 400)".utf8), value: Array(#"{"user_id":"\#(user)","pad":"\#(String(repeating: "z", count: 120))"}"#.utf8),
                                      timestamp: Int64(round * 10_000 + i))
            }
            try broker.produce(topic: "c", records: records, acks: .leader)
        }
        let log = try broker.log(topic: "c", partition: 0)
        try log.flush()
        _ = try BlockSummaries.build(broker: broker, topic: "c")
        let query = "SELECT count(*) FROM c WHERE value->>'$.user_id' IN ('u-last', 'u-gone', 'u-7')"
        let slow = "SELECT count(*) FROM c WHERE json_extract(value,'$.user_id') IN ('u-last', 'u-gone', 'u-7')"
        #expect(try rows(QueryEngine(broker: broker, jsonMembers: ["user_id"]), query) == rows(QueryEngine(broker: broker), slow))
        let before = try rows(QueryEngine(broker: broker), slow)
        let report = try log.compact(strategy: .keyLatest, deleteRetentionMs: 0)
        #expect(report.segmentsIn > 0, "compaction ran: \(report)")
        let after = try rows(QueryEngine(broker: broker), slow)
        #expect(after != before, "compaction removed superseded records")
        let stale = try QueryEngine(broker: broker, jsonMembers: ["user_id"])
        #expect(try rows(stale, query) == after)
        #expect(stale.stats.segmentsWithoutSummary > 0, "rewritten segments are read in full: \(stale.stats)")
        #expect(try BlockSummaries.build(broker: broker, topic: "c").segmentsBuilt > 0)
        let fresh = try QueryEngine(broker: broker, jsonMembers: ["user_id"])
        #expect(try rows(fresh, "SELECT count(*) FROM c WHERE value->>'$.user_id' = 'u-gone'") == rows(QueryEngine(broker: broker), "SELECT count(*) FROM c WHERE json_extract(value,'$.user_id') = 'u-gone'"))
        #expect(fresh.stats.segmentsWithoutSummary == 0 && fresh.stats.blocksPruned > 0, "\(fresh.stats)")
    }

    @Test func staleDamagedOrMissingSummariesAreReadInFull() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, seed: 3, records: 40_000)
        defer { try? broker.close() }
        _ = try BlockSummaries.build(broker: broker, topic: "t")
        let summaries = SegmentSummary.directory(dataDirectory: broker.dataDirectory, topic: "t", partition: 0)
        let files = try FileIO.listDirectory(summaries).sorted()
        #expect(!files.isEmpty)
        let query = "SELECT count(*), sum(offset) FROM t WHERE value->>'$.user_id' = 'u-9004'"
        let expected = try rows(QueryEngine(broker: broker), "SELECT count(*), sum(offset) FROM t WHERE json_extract(value,'$.user_id') = 'u-9004'")
        // Damage: a flipped byte (CRC), a truncated file, garbage, one for another segment size.
        var bytes = try FileIO.readAll(path: summaries + "/" + files[0])
        bytes[bytes.count / 2] ^= 0x40
        try FileIO.replaceAtomically(directory: summaries, name: files[0], with: bytes)
        if files.count > 1 {
            let other = try FileIO.readAll(path: summaries + "/" + files[1])
            try FileIO.replaceAtomically(directory: summaries, name: files[1], with: Array(other.prefix(other.count / 3)))
        }
        let engine = try QueryEngine(broker: broker, jsonMembers: ["user_id"])
        #expect(try rows(engine, query) == expected)
        #expect(engine.stats.segmentsWithoutSummary >= min(2, files.count), "\(engine.stats)")
        // The next build pass replaces them.
        #expect(try BlockSummaries.build(broker: broker, topic: "t").segmentsBuilt == min(2, files.count))
        // A summary of a rewritten segment (different size) does not match it.
        var summary = try SegmentSummary.decode(try FileIO.readAll(path: summaries + "/" + files[0]))
        summary.identity.sizeInBytes += 1
        try summary.write(directory: summaries)
        let again = try QueryEngine(broker: broker, jsonMembers: ["user_id"])
        #expect(try rows(again, query) == expected)
        #expect(again.stats.segmentsWithoutSummary >= 1)
        // Files of segments that are gone are removed.
        try FileIO.replaceAtomically(directory: summaries, name: SegmentSummary.fileName(baseOffset: 999_999_999), with: [1, 2, 3])
        #expect(try BlockSummaries.build(broker: broker, topic: "t").filesRemoved >= 1)
        #expect(!FileIO.exists(summaries + "/" + SegmentSummary.fileName(baseOffset: 999_999_999)))
    }

    @Test func mutatedSummaryFilesAreRefusedWithinBounds() throws {
        let summary = SegmentSummary(
            identity: .init(baseOffset: 100, nextOffset: 300, sizeInBytes: 4096, largestTimestamp: 7),
            members: ["user_id", "geo.city"],
            blocks: [.init(startOffset: 100, endOffset: 200, bytes: 2048, records: 100, keys: BloomFilter(hashes: [1, 2, 3]),
                           members: [.init(flags: 1, bloom: BloomFilter(hashes: [4])), .init(flags: 3, bloom: BloomFilter(hashes: [5, 6]))]),
                     .init(startOffset: 200, endOffset: 300, bytes: 2048, records: 100, keys: BloomFilter(hashes: []),
                           members: [.init(flags: 4, bloom: BloomFilter(hashes: [])), .init(flags: 0, bloom: BloomFilter(hashes: [9]))])])
        let bytes = summary.encoded()
        #expect(try SegmentSummary.decode(bytes) == summary)
        var seed: UInt64 = 11
        func next() -> UInt64 { seed = seed &* 6364136223846793005 &+ 1442695040888963407; return seed >> 33 }
        for _ in 0..<3000 {
            var mutated = bytes
            switch next() % 3 {
            case 0: mutated[Int(next() % UInt64(mutated.count))] ^= UInt8(1 << (next() % 8))
            case 1: mutated = Array(mutated.prefix(Int(next() % UInt64(mutated.count))))
            default:
                // A lying length with a recomputed CRC: the bounds checks, not the CRC, must catch it.
                let at = Int(next() % UInt64(mutated.count - 4))
                mutated[at] = 0xFF
                mutated.removeLast(4)
                let crc = mutated.withUnsafeBytes { CRC32C.checksum($0) }
                withUnsafeBytes(of: crc.littleEndian) { mutated += $0 }
            }
            if let decoded = try? SegmentSummary.decode(mutated) { #expect(decoded.blocks.count <= 2) }
        }
    }

    @Test func bloomFiltersHoldWhatWasInsertedAndRejectMostOfTheRest() {
        let inserted = Set((0..<5000).map { SummaryHash.text(Array("u-\($0)".utf8)) })
        let bloom = BloomFilter(hashes: inserted)
        #expect(inserted.allSatisfy(bloom.mayContain))
        let others = (5000..<105_000).filter { bloom.mayContain(SummaryHash.text(Array("u-\($0)".utf8))) }.count
        #expect(others < 200, "\(others) false positives in 100000")  // ~0.05% expected
        #expect(SummaryHash.real(5.0) == SummaryHash.integer(5))
        #expect(SummaryHash.real(-0.0) == SummaryHash.integer(0))
        #expect(SummaryHash.real(5.5) != SummaryHash.integer(5))
        #expect(SummaryHash.text(Array("5".utf8)) != SummaryHash.integer(5))
    }

    @Test func theMembersConfigIsValidated() throws {
        let dir = QDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        defer { try? broker.close() }
        #expect(throws: (any Error).self) { try broker.createTopic("a", configs: ["query.index.members": "a,b,c,d,e,f,g,h,i"]) }
        #expect(throws: (any Error).self) { try broker.createTopic("b", configs: ["query.index.members": "$.user_id"]) }
        #expect(throws: (any Error).self) { try broker.createTopic("c", configs: ["query.index.members": "\"quoted\""]) }
        try broker.createTopic("d", configs: ["query.index.members": "user_id, geo.city,items[0].sku"])
        #expect(broker.topicConfig("d")?.queryIndexMembers == ["user_id", "geo.city", "items[0].sku"])
    }
}
