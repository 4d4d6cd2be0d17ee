import Foundation
import StrataCore
import StrataKit
import Testing

final class TempDir: @unchecked Sendable {  // immutable after init; the directory is removed in deinit only
    let path: String
    init() {
        var t = Array((NSTemporaryDirectory() + "/strata-kit-XXXXXX").utf8CString)
        path = String(cString: t.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

struct Purchase: Codable, Equatable, Sendable {
    var user: String
    var amount: Double
    var at: Date
    var items: [String]
}

@Suite struct EmbeddedAPITests {
    @Test func produceAndConsumeEachKeyAndValueType() async throws {
        let dir = TempDir()
        let strata = try Strata(directory: dir.path)
        defer { try? strata.close() }
        #expect(try strata.createTopic("t", partitions: 3))
        #expect(try !strata.createTopic("t", partitions: 3))  // exists: left alone

        let text = try strata.produce("t", key: "u-1", value: "{\"a\":\"é\\n\"}", headers: [.init("source", "test")])
        let bytes = try strata.produce("t", key: [0, 255, 7] as [UInt8], value: [1, 2, 3] as [UInt8])
        let when = Date(timeIntervalSince1970: 1_700_000_000.123)
        let purchase = Purchase(user: "u-2", amount: 12.5, at: when, items: ["a", "ü"])
        let json = try strata.produce("t", key: "u-2", json: purchase, timestamp: 42)
        let tombstone = try strata.produce("t", key: "u-1", value: nil)
        #expect(text.partition == tombstone.partition)  // same key, same partition
        #expect(tombstone.offset > text.offset)

        var seen: [Int64: ConsumedRecord] = [:]
        for try await r in strata.consume("t", stopAtEnd: true) { seen[Int64(r.partition) << 32 | r.offset] = r }
        #expect(seen.count == 4)
        func at(_ m: RecordMetadata) -> ConsumedRecord? { seen[Int64(m.partition) << 32 | m.offset] }
        #expect(at(text)?.keyString == "u-1")
        #expect(at(text)?.valueString == "{\"a\":\"é\\n\"}")
        #expect(at(text)?.header("source") == "test")
        #expect(at(bytes)?.key == [0, 255, 7])
        #expect(at(bytes)?.value == [1, 2, 3])
        #expect(at(json)?.timestamp == 42)
        let decoded: Purchase? = try at(json)?.json()
        #expect(decoded == purchase)
        // Dates are epoch milliseconds in the JSON (what event-time extraction reads).
        #expect(at(json)?.valueString?.contains("\"at\":1700000000123") == true)
        #expect(at(tombstone)?.value == nil)
        #expect(throws: MissingRecordData.self) { _ = try at(tombstone)!.json(as: Purchase.self) }
    }

    @Test func batchProduceReportsEveryRecordsOffsetInOrder() async throws {
        let dir = TempDir()
        let strata = try Strata(directory: dir.path)
        defer { try? strata.close() }
        try strata.createTopic("b", partitions: 4)
        // 3 MiB of records: several batches per partition.
        let records = (0..<3000).map { i in ProducerRecord(key: "k\(i % 37)", value: String(repeating: "x", count: 1000) + "\(i)") }
        let results = try strata.produce("b", records)
        #expect(results.count == 3000)
        var byPosition: [String: String] = [:]
        for try await r in strata.consume("b", stopAtEnd: true) { byPosition["\(r.partition)@\(r.offset)"] = r.valueString }
        #expect(byPosition.count == 3000)
        for (i, m) in results.enumerated() {
            #expect(byPosition["\(m.partition)@\(m.offset)"]?.hasSuffix("x\(i)") == true)
        }
        // Keyless records of one call share a partition.
        let keyless = try strata.produce("b", (0..<10).map { ProducerRecord(key: nil, value: "v\($0)") })
        #expect(Set(keyless.map(\.partition)).count == 1)
        // An unknown topic is created (auto-creation, as Kafka).
        let auto = try strata.produce("auto", value: "1")
        #expect(auto.offset == 0 && strata.topics.contains("auto"))
    }

    @Test func consumeStopsAtTheEndOrFollowsAppends() async throws {
        let dir = TempDir()
        let strata = try Strata(directory: dir.path)
        defer { try? strata.close() }
        try strata.createTopic("f", partitions: 2)
        for i in 0..<10 { try strata.produce("f", key: "k\(i)", value: "\(i)") }

        // stopAtEnd: the end as it was when iteration began.
        var n = 0
        for try await _ in strata.consume("f", stopAtEnd: true) { n += 1 }
        #expect(n == 10)
        // From an offset / a time / the end.
        var p0 = 0
        for try await r in strata.consume("f", partition: 0, from: .offset(1), stopAtEnd: true) { #expect(r.offset >= 1); p0 += 1 }
        let total0 = Int(try strata.describeTopic("f").partitions[0].logEndOffset)
        #expect(p0 == max(0, total0 - 1))
        try strata.produce("f", key: "late", value: "x", timestamp: 9_999_999_999_999)
        var byTime: [String] = []
        for try await r in strata.consume("f", from: .timestamp(9_999_999_999_999), stopAtEnd: true) { byTime.append(r.valueString ?? "") }
        #expect(byTime == ["x"])
        var fromEnd = 0
        for try await _ in strata.consume("f", from: .end, stopAtEnd: true) { fromEnd += 1 }
        #expect(fromEnd == 0)

        // Following: records appended after iteration began arrive (woken, not polled); cancelling ends it.
        let follower = Task {
            var values: [String] = []
            for try await r in strata.consume("f", from: .end) {
                values.append(r.valueString ?? "")
                if values.count == 5 { break }
            }
            return values
        }
        try await Task.sleep(nanoseconds: 200_000_000)
        for i in 0..<5 { try strata.produce("f", key: "new", value: "n\(i)") }
        #expect(try await follower.value == ["n0", "n1", "n2", "n3", "n4"])
        let cancelled = Task { () -> Int in
            var k = 0
            for try await _ in strata.consume("f", from: .end) { k += 1 }
            return k
        }
        try await Task.sleep(nanoseconds: 100_000_000)
        cancelled.cancel()
        #expect(try await cancelled.value == 0)
        // An unknown topic is an error, not an endless wait.
        await #expect(throws: BrokerError.self) { for try await _ in strata.consume("nope", stopAtEnd: true) {} }
    }

    @Test func readCommittedByDefault() async throws {
        let dir = TempDir()
        let strata = try Strata(directory: dir.path)
        defer { try? strata.close() }
        try strata.createTopic("tx")
        let producer = try strata.transactionalProducer(id: "p1")
        try producer.produce(topic: "tx", records: [ProducerRecord(key: "a", value: "aborted")])
        try producer.abort()
        try producer.produce(topic: "tx", records: [ProducerRecord(key: "a", value: "committed")])
        try producer.commit()
        try producer.produce(topic: "tx", records: [ProducerRecord(key: "a", value: "open")])
        var committed: [String] = []
        for try await r in strata.consume("tx", stopAtEnd: true) { committed.append(r.valueString!) }
        #expect(committed == ["committed"])
        var all: [String] = []
        for try await r in strata.consume("tx", stopAtEnd: true, readUncommitted: true) { all.append(r.valueString!) }
        #expect(all == ["aborted", "committed", "open"])
        try producer.abort()
    }

    /// A member whose session expired while it was not polling cannot commit: its partitions went
    /// to another member, whose commits stay. It rejoins on its next poll.
    @Test func anExpiredMemberCannotCommitOverItsSuccessor() async throws {
        let dir = TempDir()
        var options = Broker.Options()
        options.consumerGroupHeartbeatIntervalMs = 50
        options.consumerGroupSessionTimeoutMs = 300
        let strata = try Strata(directory: dir.path, options: options)
        defer { try? strata.close() }
        try strata.createTopic("z", partitions: 1)
        try strata.produce("z", (0..<10).map { ProducerRecord(key: "k", value: "\($0)") })
        var manual = GroupConsumerOptions.manual
        manual.maxRecordsPerPoll = 3
        let zombie = strata.consumer(group: "zg", topics: ["z"], options: manual)
        var read = 0
        for _ in 0..<200 where read == 0 { read += try await zombie.poll(timeoutMs: 20).count }
        #expect(read == 3)
        // Silent past its session: the broker's group worker (every second) removes it.
        try await Task.sleep(for: .milliseconds(2_500))
        let successor = strata.consumer(group: "zg", topics: ["z"], options: manual)
        var got: [String] = []
        for _ in 0..<400 where got.count < 10 { got += try await successor.poll(timeoutMs: 20).map { $0.valueString! } }
        #expect(got.count == 10)
        try successor.commit()
        #expect(try strata.committedOffset(group: "zg", topic: "z", partition: 0) == 10)
        do {
            try zombie.commit()
            Issue.record("an expired member's commit must be refused")
        } catch GroupConsumerError.commitFenced {
        }
        #expect(try strata.committedOffset(group: "zg", topic: "z", partition: 0) == 10)
        #expect(zombie.assignment.isEmpty)
        try successor.close()
        try zombie.close()
    }

    @Test func groupConsumersSplitPartitionsAndResumeFromCommits() async throws {
        let dir = TempDir()
        var options = Broker.Options()
        options.consumerGroupHeartbeatIntervalMs = 50
        // A loaded test run can stall this task for longer than a session (both members then
        // expire and the group starts over): sessions outlive any stall here.
        options.consumerGroupSessionTimeoutMs = 600_000
        let strata = try Strata(directory: dir.path, options: options)
        defer { try? strata.close() }
        try strata.createTopic("g", partitions: 4)
        try strata.produce("g", (0..<400).map { ProducerRecord(key: "k\($0)", value: "\($0)") })

        var a = GroupConsumerOptions.manual
        a.maxRecordsPerPoll = 1000
        let c1 = strata.consumer(group: "grp", topics: ["g"], options: a)
        let c2 = strata.consumer(group: "grp", topics: ["g"], options: a)
        var seen: [String: Int] = [:]
        // Both poll until the group settles with two partitions each and everything is read.
        // The deadline is wall time, and a stall can use it up: some rounds always run after it.
        let deadline = monotonicMillis() + 90_000
        var rounds = 0
        while monotonicMillis() < deadline || rounds < 100 {
            rounds += 1
            for c in [c1, c2] { for r in try await c.poll(timeoutMs: 20) { seen[r.valueString!, default: 0] += 1 } }
            if c1.assignment.count == 2 && c2.assignment.count == 2 && seen.count == 400 { break }
        }
        #expect(c1.assignment.count == 2 && c2.assignment.count == 2,
                "assignments \(c1.assignment.map(\.partition)) \(c2.assignment.map(\.partition)), seen \(seen.count), group \(String(describing: strata.broker.consumerGroups.describe("grp")))")
        #expect(Set(c1.assignment.map(\.partition)).isDisjoint(with: Set(c2.assignment.map(\.partition))))
        // Nothing was committed yet: a partition that moved from c1 to c2 while the group formed
        // is read again from the start by c2 (at least once, as in Kafka). Every record arrived.
        #expect(seen.count == 400 && seen.values.allSatisfy { $0 >= 1 })
        try c1.commit()
        try c2.commit()

        // c2 leaves: c1 gets every partition; nothing is delivered again (all committed).
        try c2.close()
        try strata.produce("g", (400..<440).map { ProducerRecord(key: "k\($0)", value: "\($0)") })
        var after: [String] = []
        let deadline2 = monotonicMillis() + 90_000
        rounds = 0
        while (monotonicMillis() < deadline2 || rounds < 100) && (c1.assignment.count < 4 || after.count < 40) {
            rounds += 1
            after += try await c1.poll(timeoutMs: 50).map { $0.valueString! }
        }
        #expect(c1.assignment.count == 4)
        #expect(Set(after) == Set((400..<440).map { "\($0)" }) && after.count == 40)
        try c1.close()

        // A new member resumes from the group's commits: nothing old, only what comes next.
        let c3 = strata.consumer(group: "grp", topics: ["g"], options: a)
        try strata.produce("g", key: "k1", value: "new")
        var resumed: [String] = []
        let deadline3 = monotonicMillis() + 90_000
        rounds = 0
        while (monotonicMillis() < deadline3 || rounds < 100) && resumed.isEmpty {
            rounds += 1
            resumed += try await c3.poll(timeoutMs: 50).map { $0.valueString! }
        }
        #expect(resumed == ["new"])
        try c3.close()
        #expect(try strata.committedOffset(group: "grp", topic: "g", partition: 0) != nil)
    }
}

enum GroupConsumerOptions {
    static var manual: GroupConsumer.Options {
        var o = GroupConsumer.Options()
        o.autoCommitIntervalMs = nil
        return o
    }
}
