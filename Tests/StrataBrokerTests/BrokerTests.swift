import Foundation
import Synchronization
import Testing
import StrataCore
@testable import StrataBroker
@testable import StrataLog

final class TempDir: @unchecked Sendable {
    let path: String
    init() {
        var t = Array((NSTemporaryDirectory() + "/strata-broker-XXXXXX").utf8CString)
        path = String(cString: t.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func json(_ i: Int, user: String? = nil) -> [UInt8] {
    Array("{\"event_type\":\"page_view\",\"user_id\":\"\(user ?? "u-\(i % 50)")\",\"seq\":\(i)}".utf8)
}

@Suite struct PartitionerTests {
    /// Values from Kafka's own murmur2 test vectors (UtilsTest), cross-checked with kafka-python.
    @Test func murmur2MatchesKafka() {
        let vectors: [(String, Int32)] = [
            ("21", -973_932_308), ("foobar", -790_332_482), ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829), ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
        ]
        for (key, expected) in vectors { #expect(Partitioner.murmur2(Array(key.utf8)) == expected, "\(key)") }
    }

    /// Partitions of u-0...u-39 over 8 and 3 partitions, and an aggregate over u-0...u-99999, as
    /// computed by kafka-python's DefaultPartitioner (the Java client's algorithm).
    @Test func partitionsMatchTheJavaClientsDefaultPartitioner() {
        let over8: [Int32] = [5, 7, 6, 5, 6, 7, 0, 3, 0, 3, 2, 3, 4, 5, 6, 4, 1, 1, 7, 5, 7, 4, 0, 0, 6, 5, 0, 3, 0, 0, 1, 1, 2, 4, 3, 2, 3, 0, 1, 4]
        let over3: [Int32] = [1, 1, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 2, 0, 0, 0, 0, 2, 0, 2, 2, 0, 0, 2, 0, 0, 2, 0, 2, 0, 0, 2, 1, 0, 0]
        #expect((0..<40).map { Partitioner.partition(forKey: Array("u-\($0)".utf8), partitions: 8) } == over8)
        #expect((0..<40).map { Partitioner.partition(forKey: Array("u-\($0)".utf8), partitions: 3) } == over3)
        var weighted = 0
        var counts = [Int](repeating: 0, count: 8)
        for i in 0..<100_000 {
            let p = Int(Partitioner.partition(forKey: Array("u-\(i)".utf8), partitions: 8))
            weighted += p * (i % 7 + 1)
            counts[p] += 1
        }
        #expect(weighted == 1_402_795)
        #expect(counts == [12321, 12639, 12414, 12468, 12546, 12601, 12415, 12596])
    }
}

@Suite struct JSONScannerTests {
    @Test(arguments: [
        #"{}"#, #"[]"#, #"0"#, #"-0.5e+10"#, #""a\"\\\/\b\f\n\r\t\u00e9""#, #"{"a":[1,2,{"b":null}],"c":true,"d":false}"#,
        "  {\"x\" : 1 }  ", "\"é ü 中 😀\"", #"[[[[[]]]]]"#,
    ])
    func validDocuments(_ text: String) {
        #expect(JSONScanner.failure(in: Array(text.utf8)) == nil, "\(text)")
    }

    @Test(arguments: [
        "", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "[1,]", "01", "1.", ".5", "-", "1e", "tru", "nul", "\"abc",
        "\"\\x\"", "\"\\u12\"", "{\"a\":1}x", "{a:1}", "'a'", "\"tab\there\"", "NaN", "[1 2]",
    ])
    func invalidDocuments(_ text: String) {
        #expect(JSONScanner.failure(in: Array(text.utf8)) != nil, "\(text)")
    }

    @Test func invalidUTF8AndDepthAreRefused() {
        #expect(JSONScanner.failure(in: [0x22, 0xC0, 0xAF, 0x22]) != nil, "overlong")
        #expect(JSONScanner.failure(in: [0x22, 0xED, 0xA0, 0x80, 0x22]) != nil, "surrogate")
        #expect(JSONScanner.failure(in: [0x22, 0xE2, 0x82, 0x22]) != nil, "truncated")
        let deep = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(JSONScanner.failure(in: Array(deep.utf8)) != nil)
    }

    @Test func capturesTopLevelFieldsOnly() throws {
        let text = Array(#"{"nested":{"user_id":"inner"},"user_id":"u-7","ts":1759276800123,"s":"a\"b"}"#.utf8)
        var found: [JSONScanner.Field?] = []
        try text.withUnsafeBytes { p in
            try JSONScanner.validate(p, capturing: [Array("user_id".utf8), Array("ts".utf8), Array("missing".utf8), Array("s".utf8)], into: &found)
        }
        #expect(found[0].map { String(decoding: text[$0.range], as: UTF8.self) } == "u-7")
        #expect(found[0]?.isString == true)
        #expect(found[1].map { String(decoding: text[$0.range], as: UTF8.self) } == "1759276800123")
        #expect(found[1]?.isString == false)
        #expect(found[2] == nil)
        #expect(found[3]?.hasEscapes == true)
    }

    @Test func timestamps() {
        #expect(Timestamps.parseRFC3339("2025-10-01T00:00:00Z") == 1_759_276_800_000)
        #expect(Timestamps.parseRFC3339("2025-10-01T00:00:25.920Z") == 1_759_276_825_920)
        #expect(Timestamps.parseRFC3339("2025-10-01T02:00:00+02:00") == 1_759_276_800_000)
        #expect(Timestamps.parseRFC3339("1970-01-01T00:00:00Z") == 0)
        #expect(Timestamps.parseRFC3339("2024-02-29T12:00:00Z") == 1_709_208_000_000)
        #expect(Timestamps.parseRFC3339("2025-13-01T00:00:00Z") == nil)
        #expect(Timestamps.parseRFC3339("yesterday") == nil)
        #expect(Timestamps.parseUserTime("2h", nowMs: 10_000_000) == Int64(2_800_000))
        #expect(Timestamps.parseUserTime("7d", nowMs: 1_000_000_000) == Int64(395_200_000))
        #expect(Timestamps.parseUserTime("1759276800000", nowMs: 0) == 1_759_276_800_000)
        #expect(Timestamps.parseUserTime("2025-10-01", nowMs: 0) == 1_759_276_800_000)
        #expect(Timestamps.parseUserTime("2025-13-01", nowMs: 0) == nil)
        #expect(Timestamps.parseUserTime("2x", nowMs: 0) == nil)
    }
}

@Suite struct BrokerTests {
    @Test func createDescribeAlterAddDeleteTopics() throws {
        let dir = TempDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("events", partitions: 3, configs: ["retention.ms": "3600000", "value.format": "json"])
        #expect(throws: BrokerError.self) { try broker.createTopic("events") }
        let d = try broker.describeTopic("events")
        #expect(d.partitions.count == 3)
        #expect(d.configs["retention.ms"] == "3600000")
        #expect(d.overrides == ["retention.ms": "3600000", "value.format": "json"])
        try broker.alterTopicConfigs("events", set: ["retention.ms": "60000"])
        #expect(try broker.describeTopic("events").configs["retention.ms"] == "60000")
        #expect(throws: BrokerError.self) { try broker.alterTopicConfigs("events", set: ["retention.ms": "soon"]) }
        #expect(throws: BrokerError.self) { try broker.alterTopicConfigs("events", set: ["no.such.config": "1"]) }
        try broker.addPartitions("events", total: 5)
        #expect(throws: BrokerError.self) { try broker.addPartitions("events", total: 4) }
        #expect(broker.partitionCount("events") == 5)
        try broker.produce(topic: "events", records: [ProducerRecord(key: Array("k".utf8), value: json(1), timestamp: 1)])
        try broker.commitOffsets(group: "g", offsets: [("events", 0, 1)])
        try broker.close()

        let reopened = try Broker.open(dataDirectory: dir.path)
        // The commit is mirrored to Kafka's internal __consumer_offsets topic, created on first use.
        #expect(reopened.topicNames() == ["__consumer_offsets", "events"])
        #expect(reopened.partitionCount("__consumer_offsets") == 50)
        #expect(reopened.partitionCount("events") == 5)
        #expect(try reopened.describeTopic("events").configs["retention.ms"] == "60000")
        try reopened.deleteTopic("events")
        #expect(reopened.topicNames() == ["__consumer_offsets"])
        #expect(try reopened.committedOffset(group: "g", topic: "events", partition: 0) == nil)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/logs/events-0"))
        try reopened.createTopic("events", partitions: 1)
        #expect(try reopened.describeTopic("events").partitions[0].logEndOffset == 0, "a re-created topic starts empty")
        try reopened.close()
    }

    /// Kafka tools read groups from `__consumer_offsets` (GroupMetadata key v2 / value v3): a
    /// completed rebalance stores the generation, leader and members; the group emptying stores
    /// it without members; DeleteGroups writes its tombstone.
    @Test func groupStatesAreMirroredToConsumerOffsets() throws {
        let dir = TempDir()
        var options = Broker.Options()
        options.initialRebalanceDelayMs = 0  // the join completes at once
        let broker = try Broker.open(dataDirectory: dir.path, options: options)
        let joined = Mutex<GroupCoordinator.JoinResult?>(nil)
        broker.groups.join(groupId: "readers", memberId: "", instanceId: "reader-1", clientId: "app", clientHost: "/127.0.0.1",
                           sessionTimeoutMs: 10_000, rebalanceTimeoutMs: 20_000, protocolType: "consumer",
                           protocols: [(name: "range", metadata: [9, 8, 7])], requiresKnownMemberId: false) { r in joined.withLock { $0 = r } }
        let join = try #require(joined.withLock { $0 })
        #expect(join.error == .none)
        let synced = Mutex<GroupError?>(nil)
        broker.groups.sync(groupId: "readers", generation: join.generation, memberId: join.memberId,
                           assignments: [(join.memberId, [1, 2, 3])]) { e, _ in synced.withLock { $0 = e } }
        #expect(synced.withLock { $0 } == GroupError.none)
        _ = broker.groups.leave(groupId: "readers", memberIds: [join.memberId])
        #expect(try broker.deleteGroup("readers"))
        #expect(try !broker.deleteGroup("never-existed"))

        let p = ConsumerOffsetsTopic.partition(forGroup: "readers", partitions: 50)
        let log = try broker.log(topic: "__consumer_offsets", partition: p)
        let records = try Broker.records(in: try log.read(from: 0, maxBytes: 1 << 20).slice!, topic: "__consumer_offsets", partition: p, from: 0)
        #expect(records.map(\.key) == Array(repeating: ConsumerOffsetsTopic.groupKey("readers"), count: 3))
        #expect(Array(records[0].key!.prefix(2)) == [0, 2], "key version 2: GroupMetadataKey")

        // Stable: value v3 with one member, its subscription and assignment.
        var r = BigEndianReader(try #require(records[0].value))
        #expect(r.int16() == 3)
        #expect(r.string() == "consumer")
        #expect(r.int32() == join.generation)
        #expect(r.string() == "range")
        #expect(r.string() == join.memberId, "leader")
        _ = r.int64()
        #expect(r.int32() == 1)
        #expect(r.string() == join.memberId)
        #expect(r.string() == "reader-1")
        #expect(r.string() == "app")
        #expect(r.string() == "/127.0.0.1")
        #expect(r.int32() == 20_000)
        #expect(r.int32() == 10_000)
        #expect(r.bytes() == [9, 8, 7])
        #expect(r.bytes() == [1, 2, 3])
        #expect(r.atEnd)

        // Empty: a new generation, no protocol, no leader, no members.
        var e = BigEndianReader(try #require(records[1].value))
        #expect(e.int16() == 3)
        #expect(e.string() == "consumer")
        #expect(e.int32() == join.generation + 1)
        #expect(e.string() == nil)
        #expect(e.string() == nil)
        _ = e.int64()
        #expect(e.int32() == 0)
        #expect(e.atEnd)

        #expect(records[2].value == nil, "DeleteGroups: tombstone")
        try broker.close()
    }

    @Test(arguments: ["../x", "a/b", String(repeating: "t", count: 250), "", ".", ".."])
    func invalidTopicNamesCreateNothing(_ name: String) throws {
        let dir = TempDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        #expect(throws: BrokerError.self) { try broker.createTopic(name) }
        #expect(throws: (any Error).self) { try broker.produce(topic: name, records: [ProducerRecord(value: [1], timestamp: 0)]) }
        #expect(broker.topicNames().isEmpty)
        #expect((try FileManager.default.contentsOfDirectory(atPath: dir.path + "/logs")).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/x"))
        try broker.close()
    }

    @Test func keyedRecordsLandInTheKafkaPartitionInOrder() throws {
        let dir = TempDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t", partitions: 8)
        for i in 0..<400 {
            try broker.produce(topic: "t", records: [ProducerRecord(key: Array("u-\(i % 40)".utf8), value: json(i), timestamp: Int64(i))], acks: .leader)
        }
        for p in Int32(0)..<8 {
            let log = try broker.log(topic: "t", partition: p)
            var seqByKey: [String: [Int]] = [:]
            var offset: Int64 = 0
            while offset < log.logEndOffset {
                let r = try log.read(from: offset)
                for rec in try Broker.records(in: r.slice!, topic: "t", partition: p, from: offset) {
                    let key = String(decoding: rec.key!, as: UTF8.self)
                    #expect(Partitioner.partition(forKey: rec.key!, partitions: 8) == p)
                    let text = String(decoding: rec.value!, as: UTF8.self)
                    let seq = Int(text.split(separator: ":").last!.dropLast())!
                    seqByKey[key, default: []].append(seq)
                }
                offset = r.nextOffset
            }
            for (_, seqs) in seqByKey { #expect(seqs == seqs.sorted(), "per-key order") }
        }
        try broker.close()
    }

    @Test func unkeyedRecordsSpreadRoundRobinPerCall() throws {
        let dir = TempDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t", partitions: 4)
        var partitions: [Int32] = []
        for i in 0..<8 {
            let r = try broker.produce(topic: "t", records: [ProducerRecord(value: json(i), timestamp: 0), ProducerRecord(value: json(i), timestamp: 0)])
            #expect(r.count == 1, "one call, one partition (sticky)")
            partitions.append(r[0].partition)
        }
        #expect(Set(partitions) == [0, 1, 2, 3])
        try broker.close()
    }

    @Test func jsonTopicsRefuseInvalidJSONAndAppendNothing() throws {
        let dir = TempDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("j", partitions: 2, configs: ["value.format": "json"])
        let records = [
            ProducerRecord(key: Array("a".utf8), value: json(0), timestamp: 0),
            ProducerRecord(key: Array("b".utf8), value: Array("{not json".utf8), timestamp: 0),
        ]
        do {
            try broker.produce(topic: "j", records: records)
            Issue.record("invalid JSON accepted")
        } catch let error as BrokerError {
            guard case .invalidRecord(let index, _) = error else { Issue.record("wrong error \(error)"); return }
            #expect(index == 1, "the error names the record")
        }
        #expect(try broker.describeTopic("j").partitions.allSatisfy { $0.logEndOffset == 0 })
        // The same through the raw batch path (what Kafka clients use).
        let batch = RecordBatchBuilder.build(records)
        #expect(throws: BrokerError.self) { try batch.withUnsafeBytes { try broker.appendBatch(topic: "j", partition: 0, batch: $0) } }
        #expect(try broker.describeTopic("j").partitions.allSatisfy { $0.logEndOffset == 0 })
        // Tombstones (null values) are allowed in a JSON topic.
        try broker.produce(topic: "j", records: [ProducerRecord(key: Array("a".utf8), value: nil, timestamp: 0)])
        try broker.close()
    }

    @Test func longPollFetchWakesOnAppendAndTimesOut() async throws {
        let dir = TempDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t")
        let started = monotonicMillis()
        let empty = try await broker.fetch(topic: "t", partition: 0, offset: 0, maxWaitMs: 100)
        #expect(empty.isEmpty)
        #expect(monotonicMillis() - started >= 90, "waited for the deadline")

        // A deadline far beyond anything a busy test machine causes: finishing well before it
        // can only mean the append woke the fetch.
        let waiter = Task { try await broker.fetch(topic: "t", partition: 0, offset: 0, maxWaitMs: 300_000) }
        try await Task.sleep(nanoseconds: 50_000_000)
        let produced = monotonicMillis()
        try broker.produce(topic: "t", records: [ProducerRecord(value: json(1), timestamp: 0)], acks: .leader)
        let result = try await waiter.value
        #expect(!result.isEmpty)
        #expect(monotonicMillis() - produced < 250_000, "woken by the append, not the 300 s deadline")
        try broker.close()
    }

    /// A wait on several partitions (a multi-partition Fetch) wakes on an append to any of them
    /// and leaves no registration behind on the others; a wait on one partition wakes only on
    /// its own.
    @Test func multiPartitionWaitsWakeOnAnyOfTheirPartitionsOnly() async throws {
        let dir = TempDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t", partitions: 3)
        final class Woke: Sendable { let names = Mutex<[String]>([]) }
        let box = Woke()
        let both = Task {
            await broker.waitForData([("t", 0, 0), ("t", 1, 0)], timeoutMs: 300_000)
            box.names.withLock { $0.append("both") }
        }
        let second = Task {
            await broker.waitForData([("t", 1, 0)], timeoutMs: 300_000)
            box.names.withLock { $0.append("second") }
        }
        try await Task.sleep(nanoseconds: 100_000_000)
        try broker.produce(topic: "t", records: [ProducerRecord(value: json(1), timestamp: 0)], partition: 2, acks: .leader)
        try await Task.sleep(nanoseconds: 100_000_000)
        #expect(box.names.withLock { $0 }.isEmpty, "an append to another partition wakes nobody")
        try broker.produce(topic: "t", records: [ProducerRecord(value: json(1), timestamp: 0)], partition: 0, acks: .leader)
        await both.value
        #expect(box.names.withLock { $0 } == ["both"], "only the wait that includes partition 0")
        try broker.produce(topic: "t", records: [ProducerRecord(value: json(2), timestamp: 0)], partition: 1, acks: .leader)
        await second.value
        #expect(box.names.withLock { $0 } == ["both", "second"])
        try broker.close()
    }

    @Test func subscriptionDeliversExistingAndNewRecords() async throws {
        let dir = TempDir()
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t")
        for i in 0..<5 { try broker.produce(topic: "t", records: [ProducerRecord(value: json(i), timestamp: Int64(i))], acks: .leader) }
        let stream = broker.subscribe(topic: "t", partition: 0, from: 2)
        let producer = Task {
            try await Task.sleep(nanoseconds: 50_000_000)
            for i in 5..<10 { try broker.produce(topic: "t", records: [ProducerRecord(value: json(i), timestamp: Int64(i))], acks: .leader) }
        }
        var offsets: [Int64] = []
        for try await record in stream {
            offsets.append(record.offset)
            #expect(record.value == json(Int(record.offset)))
            if offsets.count == 8 { break }
        }
        #expect(offsets == Array(2..<10))
        try await producer.value
        try broker.close()
    }

    @Test func aSecondWriterIsRefusedAndReadersWorkAlongside() async throws {
        let dir = TempDir()
        let writer = try Broker.open(dataDirectory: dir.path)
        try writer.createTopic("t", partitions: 2)
        try writer.produce(topic: "t", records: [ProducerRecord(key: Array("x".utf8), value: json(1), timestamp: 5)])
        do {
            _ = try Broker.open(dataDirectory: dir.path)
            Issue.record("second writer opened")
        } catch {
            #expect("\(error)".contains("pid \(getpid())"), "the error names the holder: \(error)")
        }
        let reader = try Broker.openReadOnly(dataDirectory: dir.path)
        #expect(reader.topicNames() == ["t"])
        #expect(throws: BrokerError.self) { try reader.produce(topic: "t", records: [ProducerRecord(value: [1], timestamp: 0)]) }
        let p = Partitioner.partition(forKey: Array("x".utf8), partitions: 2)
        #expect(try reader.describeTopic("t").partitions[Int(p)].logEndOffset == 1)
        try writer.produce(topic: "t", records: [ProducerRecord(key: Array("x".utf8), value: json(2), timestamp: 6)])
        let r = try await reader.fetch(topic: "t", partition: p, offset: 1, maxWaitMs: 2000)
        #expect(!r.isEmpty, "the reader sees the writer's new record")
        try writer.close()
    }

    @Test func groupOffsetsSurviveRestart() throws {
        let dir = TempDir()
        do {
            let broker = try Broker.open(dataDirectory: dir.path)
            try broker.createTopic("t", partitions: 2)
            try broker.commitOffsets(group: "readers", offsets: [("t", 0, 17), ("t", 1, 4)])
            try broker.close()
        }
        let broker = try Broker.open(dataDirectory: dir.path)
        #expect(try broker.committedOffset(group: "readers", topic: "t", partition: 0) == 17)
        #expect(try broker.committedOffset(group: "readers", topic: "t", partition: 1) == 4)
        #expect(try broker.committedOffset(group: "other", topic: "t", partition: 0) == nil)
        try broker.close()
    }

    @Test func retentionRunsPerTopicPolicyAndConsumersBelowTheStartGetOutOfRange() async throws {
        let dir = TempDir()
        var options = Broker.Options()
        options.retentionCheckIntervalMs = 0  // driven by hand here
        let broker = try Broker.open(dataDirectory: dir.path, options: options)
        try broker.createTopic("old", partitions: 1, configs: ["retention.ms": "3600000", "segment.bytes": "4096"])
        try broker.createTopic("kept", partitions: 1, configs: ["retention.ms": "-1", "segment.bytes": "4096"])
        try broker.createTopic("compacted", partitions: 1, configs: ["retention.ms": "1", "segment.bytes": "4096", "cleanup.policy": "compact"])
        let now = wallClockMillis()
        for topic in ["old", "kept", "compacted"] {
            for i in 0..<60 {
                // Compacted topics refuse keyless records (Kafka's rule), so every record has a key.
                try broker.produce(topic: topic, records: [ProducerRecord(key: Array("k\(i)".utf8), value: json(i), timestamp: now - 10 * 3_600_000)], acks: .leader)
            }
        }
        let results = broker.runRetention(nowMs: now)
        #expect(results.keys.sorted() == ["old-0"], "only delete-policy topics past their retention")
        let start = try broker.log(topic: "old", partition: 0).logStartOffset
        #expect(start > 0)
        #expect(try broker.log(topic: "kept", partition: 0).logStartOffset == 0)
        #expect(try broker.log(topic: "compacted", partition: 0).logStartOffset == 0)
        await #expect(throws: LogError.self) { try await broker.fetch(topic: "old", partition: 0, offset: 0) }
        #expect(broker.retentionStatus.segmentsDeleted == results["old-0"]!.segmentsDeleted)
        #expect(try broker.deleteRecords(topic: "kept", partition: 0, before: 10) == 10)
        try broker.close()
    }

    @Test func theCleanerCompactsTheFilthiestCompactTopicAndReadersKeepReading() async throws {
        let dir = TempDir()
        var options = Broker.Options()
        options.cleanerBackoffMs = 0  // driven by hand
        options.retentionCheckIntervalMs = 0
        let broker = try Broker.open(dataDirectory: dir.path, options: options)
        try broker.createTopic("users", partitions: 1, configs: ["cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.3"])
        try broker.createTopic("events", partitions: 1, configs: ["segment.bytes": "4096"])
        for i in 0..<400 {
            for topic in ["users", "events"] {
                try broker.produce(topic: topic, records: [ProducerRecord(key: Array("u-\(i % 10)".utf8), value: json(i), timestamp: Int64(i))], acks: .leader)
            }
        }
        let log = try broker.log(topic: "users", partition: 0)
        let end = log.logEndOffset
        // A reader walks the whole partition while the cleaner swaps segments under it.
        let reader = Task.detached { () -> Int in
            var seen = 0
            for _ in 0..<20 {
                var offset: Int64 = 0
                while offset < end {
                    guard let r = try? log.read(from: offset, maxBytes: 2048), let slice = r.slice else { break }
                    try slice.forEachBatch { b in try b.validate(strictRecords: false); try b.forEachRecord { _ in seen += 1 } }
                    offset = r.nextOffset
                }
            }
            return seen
        }
        let pass = try #require(broker.runCleaner())
        #expect(pass.partition == "users-0", "only compact topics are cleaned")
        #expect(pass.report.recordsAfter < pass.report.recordsBefore)
        #expect(try await reader.value > 0)
        #expect(broker.runCleaner() == nil, "nothing dirty is left")
        #expect(broker.cleanerStatus.passes == 1 && broker.cleanerStatus.bytesReclaimed > 0)
        // Every key's latest value is still there; the untouched topic kept everything.
        var latest: [String: String] = [:]
        var offset: Int64 = 0
        while offset < log.logEndOffset {
            let r = try log.read(from: offset)
            for rec in try Broker.records(in: r.slice!, topic: "users", partition: 0, from: offset) {
                latest[String(decoding: rec.key!, as: UTF8.self)] = String(decoding: rec.value!, as: UTF8.self)
            }
            offset = r.nextOffset
        }
        for k in 0..<10 { #expect(latest["u-\(k)"] == String(decoding: json(390 + k), as: UTF8.self)) }
        #expect(try broker.describeTopic("events").partitions[0].logEndOffset == 400)
        let status = try #require(try broker.describeTopic("users").partitions[0].cleaner)
        #expect(status.passes == 1 && status.bytesReclaimed > 0 && status.cleanedUpTo == end && status.errors == 0)
        try broker.close()
        // The cleaner's checkpoint is in LMDB: a restarted broker does not compact the same bytes again.
        let reopened = try Broker.open(dataDirectory: dir.path, options: options)
        #expect(reopened.runCleaner() == nil)
        #expect(try reopened.describeTopic("users").partitions[0].dirtyRatio == 0)
        try reopened.close()
    }

    @Test func aMissingPartitionDirectoryIsOfflineNotSilentlyRecreated() async throws {
        let dir = TempDir()
        do {
            let broker = try Broker.open(dataDirectory: dir.path)
            try broker.createTopic("t", partitions: 3)
            for p: Int32 in 0..<3 { try broker.produce(topic: "t", records: (0..<40).map { ProducerRecord(value: json($0), timestamp: 1) }, partition: p) }
            try broker.commitOffsets(group: "g", offsets: [("t", 2, 40)])
            try broker.close()
        }
        try FileManager.default.removeItem(atPath: dir.path + "/logs/t-2")
        try FileManager.default.createDirectory(atPath: dir.path + "/logs/stray-0", withIntermediateDirectories: true)
        let broker = try Broker.open(dataDirectory: dir.path)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/logs/t-2"), "never recreated behind the operator's back")
        #expect(broker.offlinePartitions.keys.sorted() == ["t-2"])
        #expect(broker.orphanPartitions == ["stray-0"])
        // The others serve; the missing one says why, and so does describe.
        #expect(try broker.log(topic: "t", partition: 0).logEndOffset == 40)
        #expect(throws: BrokerError.self) { try broker.produce(topic: "t", records: [ProducerRecord(value: json(1), timestamp: 1)], partition: 2) }
        let described = try broker.describeTopic("t")
        #expect(described.partitions[2].offlineReason?.contains("missing") == true)
        #expect(described.partitions[0].offlineReason == nil)
        // Explicit repair brings it back empty and writable.
        #expect(try broker.recreateMissingPartitions() == ["t-2"])
        try broker.produce(topic: "t", records: [ProducerRecord(value: json(1), timestamp: 1)], partition: 2)
        #expect(try broker.log(topic: "t", partition: 2).logEndOffset == 1)
        try broker.close()
    }

    @Test func aDamagedSegmentTakesOnlyItsPartitionOffline() throws {
        let dir = TempDir()
        do {
            let broker = try Broker.open(dataDirectory: dir.path)
            try broker.createTopic("d", partitions: 2, configs: ["segment.bytes": "4096"])
            for p: Int32 in 0..<2 {
                for i in 0..<80 { try broker.produce(topic: "d", records: [ProducerRecord(value: json(i), timestamp: 1)], partition: p) }
            }
            try broker.close()
        }
        // A segment in the middle of d-1 replaced by a directory (as a bad restore leaves it).
        let partition = dir.path + "/logs/d-1"
        let segments = try FileManager.default.contentsOfDirectory(atPath: partition).filter { $0.hasSuffix(".log") }.sorted()
        #expect(segments.count > 2)
        let middle = partition + "/" + segments[1]
        try FileManager.default.removeItem(atPath: middle)
        try FileManager.default.createDirectory(atPath: middle, withIntermediateDirectories: false)
        let broker = try Broker.open(dataDirectory: dir.path)
        #expect(broker.offlinePartitions["d-1"]?.contains(segments[1]) == true, "the reason names the file")
        #expect(try broker.log(topic: "d", partition: 0).logEndOffset == 80)
        #expect(throws: BrokerError.self) { try broker.log(topic: "d", partition: 1) }
        try broker.produce(topic: "d", records: [ProducerRecord(value: json(1), timestamp: 1)], partition: 0)
        try broker.close()
    }
}

/// Reads the big-endian fields of Kafka's internal records (int16-length strings, -1 for null).
struct BigEndianReader {
    private let data: [UInt8]
    private var at = 0
    init(_ bytes: [UInt8]) { self.data = bytes }
    var atEnd: Bool { at == data.count }
    /// The next `width` bytes as an unsigned big-endian number (all ones past the end).
    private mutating func raw(_ width: Int) -> UInt64 {
        guard at + width <= data.count else { at = data.count; return .max }
        var v: UInt64 = 0
        for b in data[at..<at + width] { v = v << 8 | UInt64(b) }
        at += width
        return v
    }
    mutating func int16() -> Int16 { Int16(bitPattern: UInt16(truncatingIfNeeded: raw(2))) }
    mutating func int32() -> Int32 { Int32(bitPattern: UInt32(truncatingIfNeeded: raw(4))) }
    mutating func int64() -> Int64 { Int64(bitPattern: raw(8)) }
    mutating func string() -> String? {
        let n = Int(int16())
        guard n >= 0, at + n <= data.count else { return nil }
        defer { at += n }
        return String(decoding: data[at..<at + n], as: UTF8.self)
    }
    mutating func bytes() -> [UInt8]? {
        let n = Int(int32())
        guard n >= 0, at + n <= data.count else { return nil }
        defer { at += n }
        return Array(data[at..<at + n])
    }
}
