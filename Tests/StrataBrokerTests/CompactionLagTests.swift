import Testing
@testable import StrataBroker
import StrataCore
import StrataLog

/// min.compaction.lag.ms keeps young records out of compaction; max.compaction.lag.ms makes a
/// partition due whatever its dirty ratio.
@Suite struct CompactionLagTests {
    static func fill(_ broker: Broker, _ topic: String, timestamp: Int64) throws {
        for i in 0..<120 {
            try broker.produce(topic: topic, records: [ProducerRecord(key: Array("k\(i % 3)".utf8), value: json(i), timestamp: timestamp)], partition: 0, acks: .leader)
        }
        try broker.log(topic: topic, partition: 0).roll()
        try broker.flush(topic: topic)
    }

    @Test func minAndMaxCompactionLag() throws {
        let dir = TempDir()
        var options = Broker.Options()
        options.cleanerBackoffMs = 0
        options.retentionCheckIntervalMs = 0
        let broker = try Broker.open(dataDirectory: dir.path, options: options)
        defer { try? broker.close() }
        let now = wallClockMillis()
        let base = ["cleanup.policy": "compact", "segment.bytes": "2048"]
        try broker.createTopic("young", partitions: 1, configs: base.merging(["min.compaction.lag.ms": "3600000"]) { $1 })
        try Self.fill(broker, "young", timestamp: now)
        // Records younger than min.compaction.lag.ms stay, pass after pass.
        let before = try broker.log(topic: "young", partition: 0).sizeInBytes
        for _ in 0..<2 {
            if let pass = broker.runCleaner(nowMs: now) { #expect(pass.report.bytesAfter == pass.report.bytesBefore) }
        }
        #expect(try broker.log(topic: "young", partition: 0).sizeInBytes == before)
        // Two hours later the same records are old enough.
        _ = broker.runCleaner(nowMs: now + 7_200_000)
        #expect(try broker.log(topic: "young", partition: 0).sizeInBytes < before)

        // A dirty ratio far below min.cleanable.dirty.ratio, but a record older than
        // max.compaction.lag.ms: due.
        try broker.createTopic("overdue", partitions: 1, configs: base.merging(["min.cleanable.dirty.ratio": "1", "max.compaction.lag.ms": "1000"]) { $1 })
        try Self.fill(broker, "overdue", timestamp: now - 60_000)
        let overdueBefore = try broker.log(topic: "overdue", partition: 0).sizeInBytes
        let pass = broker.runCleaner(nowMs: now)
        #expect(pass?.partition == "overdue-0")
        #expect(try broker.log(topic: "overdue", partition: 0).sizeInBytes < overdueBefore)
    }
}
