import StrataCore
import StrataLog

/// `__consumer_offsets` as Kafka writes it, for tools that read committed offsets from the topic
/// (lag monitors such as Burrow): every commit is also appended there as an OffsetCommit record
/// (key version 1: group, topic, partition; value version 3: offset, leader epoch, metadata,
/// commit time), a deletion as a tombstone, in the partition Kafka would choose for the group
/// (`abs(groupId.hashCode()) % 50`). LMDB stays the source of truth; the topic is a compacted,
/// internal mirror that clients can read but never auto-create or produce to.
enum ConsumerOffsetsTopic {
    static let name = "__consumer_offsets"
    /// offsets.topic.num.partitions (Kafka's default; `Broker.Options.offsetsTopicPartitions`).
    static let defaultPartitions: Int32 = 50
    /// Compacted; small segments and indexes, because Strata preallocates the active segment of
    /// every partition (50 × the 128 MiB default would reserve 7 GB for a few commits).
    static let configs = ["cleanup.policy": "compact", "segment.bytes": "1048576", "segment.index.bytes": "65536", "flush.mode": "os"]

    /// Java's `String.hashCode` over UTF-16 code units, then Kafka's `Utils.abs` and modulo.
    static func partition(forGroup group: String, partitions: Int32) -> Int32 {
        var h: Int32 = 0
        for unit in group.utf16 { h = h &* 31 &+ Int32(unit) }
        let positive = h == Int32.min ? 0 : abs(h)
        return positive % max(1, partitions)
    }

    static func key(group: String, topic: String, partition: Int32) -> [UInt8] {
        var out: [UInt8] = []
        append(Int16(1), to: &out)
        append(group, to: &out)
        append(topic, to: &out)
        append(partition, to: &out)
        return out
    }

    static func value(offset: Int64, metadata: String, commitTimeMs: Int64) -> [UInt8] {
        var out: [UInt8] = []
        append(Int16(3), to: &out)
        append(offset, to: &out)
        append(Int32(-1), to: &out)  // leader epoch: unknown
        append(metadata, to: &out)
        append(commitTimeMs, to: &out)
        return out
    }

    private static func append<T: FixedWidthInteger>(_ v: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) }
    }

    /// An int16-length string; group ids and topic names are far below the limit, metadata is
    /// cut (the full text stays in LMDB).
    private static func append(_ s: String, to out: inout [UInt8]) {
        let bytes = Array(s.utf8.prefix(Int(Int16.max)))
        append(Int16(bytes.count), to: &out)
        out.append(contentsOf: bytes)
    }
}

extension Broker {
    /// Appends the records mirroring `commits` (nil value: a deletion) to `__consumer_offsets`,
    /// creating the topic on first use. Best effort: the commit itself is durable in LMDB already;
    /// a failure here is counted, never returned to the committer.
    func mirrorToConsumerOffsets(group: String, _ entries: [(topic: String, partition: Int32, value: [UInt8]?)]) {
        guard !isReadOnly, !entries.isEmpty, options.offsetsTopicPartitions > 0 else { return }
        do {
            if partitionCount(ConsumerOffsetsTopic.name) == nil {
                do {
                    try createTopic(ConsumerOffsetsTopic.name, partitions: options.offsetsTopicPartitions, configs: ConsumerOffsetsTopic.configs)
                } catch BrokerError.topicExists(_) {}
            }
            let now = wallClockMillis()
            let records = entries.map { e in
                ProducerRecord(key: ConsumerOffsetsTopic.key(group: group, topic: e.topic, partition: e.partition), value: e.value, timestamp: now)
            }
            let count = partitionCount(ConsumerOffsetsTopic.name) ?? options.offsetsTopicPartitions
            try produce(topic: ConsumerOffsetsTopic.name, records: records, partition: ConsumerOffsetsTopic.partition(forGroup: group, partitions: count), acks: .leader)
        } catch {
            consumerOffsetsMirrorFailures.add(1, ordering: .relaxed)
        }
    }
}
