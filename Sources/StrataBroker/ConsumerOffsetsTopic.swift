import StrataCore
import StrataLog

/// `__consumer_offsets` as Kafka writes it, for tools that read committed offsets and groups from
/// the topic (lag monitors such as Burrow): every commit is also appended there as an OffsetCommit
/// record (key version 1: group, topic, partition; value version 3: offset, leader epoch,
/// metadata, commit time), a deletion as a tombstone; every stored group state (a rebalance
/// completed, the group emptied) as a GroupMetadata record (key version 2: group; value version
/// 3: protocol type, generation, protocol, leader, state time, members with their subscriptions
/// and assignments), a deleted group as its tombstone; all in the partition Kafka would choose for
/// the group (`abs(groupId.hashCode()) % 50`). LMDB stays the source of truth; the topic is a compacted,
/// internal mirror that clients can read but never auto-create or produce to.
enum ConsumerOffsetsTopic {
    static let name = "__consumer_offsets"
    /// offsets.topic.num.partitions (Kafka's default; `Broker.Options.offsetsTopicPartitions`).
    static let defaultPartitions: Int32 = 50
    /// Compacted; small segments and indexes: each partition's active segment is mapped at its
    /// full size (50 × the 128 MiB default would be 7 GB of address space for a few commits).
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

    /// GroupMetadataKey, version 2.
    static func groupKey(_ group: String) -> [UInt8] {
        var out: [UInt8] = []
        append(Int16(2), to: &out)
        append(group, to: &out)
        return out
    }

    /// GroupMetadataValue, version 3 (Kafka 2.3+: static members' instance ids).
    static func groupValue(_ g: GroupCoordinator.StoredGroup, stateTimestampMs: Int64) -> [UInt8] {
        var out: [UInt8] = []
        append(Int16(3), to: &out)
        append(g.protocolType, to: &out)
        append(g.generation, to: &out)
        appendNullable(g.protocolName, to: &out)
        appendNullable(g.leader, to: &out)
        append(stateTimestampMs, to: &out)
        append(Int32(g.members.count), to: &out)
        for m in g.members {
            append(m.memberId, to: &out)
            appendNullable(m.instanceId, to: &out)
            append(m.clientId, to: &out)
            append(m.clientHost, to: &out)
            append(Int32(clamping: m.rebalanceTimeoutMs), to: &out)
            append(Int32(clamping: m.sessionTimeoutMs), to: &out)
            append(Int32(clamping: m.subscription.count), to: &out)
            out.append(contentsOf: m.subscription)
            append(Int32(clamping: m.assignment.count), to: &out)
            out.append(contentsOf: m.assignment)
        }
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

    private static func appendNullable(_ s: String?, to out: inout [UInt8]) {
        if let s { append(s, to: &out) } else { append(Int16(-1), to: &out) }
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
    /// Appends the records mirroring `commits` (nil value: a deletion) to `__consumer_offsets`.
    func mirrorToConsumerOffsets(group: String, _ entries: [(topic: String, partition: Int32, value: [UInt8]?)]) {
        mirrorToConsumerOffsets(group: group, records: entries.map { e in
            (ConsumerOffsetsTopic.key(group: group, topic: e.topic, partition: e.partition), e.value)
        })
    }

    /// Appends a group's stored state (nil: the group was deleted) to `__consumer_offsets`.
    func mirrorGroupToConsumerOffsets(group: String, _ stored: GroupCoordinator.StoredGroup?) {
        mirrorToConsumerOffsets(group: group, records: [(ConsumerOffsetsTopic.groupKey(group),
                                                         stored.map { ConsumerOffsetsTopic.groupValue($0, stateTimestampMs: wallClockMillis()) })])
    }

    /// Appends `records` of `group` to `__consumer_offsets`, creating the topic on first use. Best
    /// effort: commits are durable in LMDB already and group states are rebuilt by rejoining; a
    /// failure here is counted, never returned to the client.
    private func mirrorToConsumerOffsets(group: String, records entries: [(key: [UInt8], value: [UInt8]?)]) {
        guard !isReadOnly, !entries.isEmpty, options.offsetsTopicPartitions > 0 else { return }
        do {
            if partitionCount(ConsumerOffsetsTopic.name) == nil {
                do {
                    try createTopic(ConsumerOffsetsTopic.name, partitions: options.offsetsTopicPartitions, configs: ConsumerOffsetsTopic.configs)
                } catch BrokerError.topicExists(_) {}
            }
            let now = wallClockMillis()
            let records = entries.map { ProducerRecord(key: $0.key, value: $0.value, timestamp: now) }
            let count = partitionCount(ConsumerOffsetsTopic.name) ?? options.offsetsTopicPartitions
            try produce(topic: ConsumerOffsetsTopic.name, records: records, partition: ConsumerOffsetsTopic.partition(forGroup: group, partitions: count), acks: .leader)
        } catch {
            consumerOffsetsMirrorFailures.add(1, ordering: .relaxed)
        }
    }
}
