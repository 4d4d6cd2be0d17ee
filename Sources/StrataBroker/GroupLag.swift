import StrataCore
import StrataLog

/// One committed position of a consumer group and how far behind the log it is.
public struct GroupPartitionLag: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    /// The committed offset: the next record the group will read.
    public var committed: Int64
    public var logEnd: Int64
    /// Records between the committed offset and the log end (0 when caught up).
    public var lag: Int64
    /// Now minus the timestamp of the first unconsumed record (0 when caught up): how far behind
    /// in time the group is, which a record count alone cannot tell.
    public var lagSeconds: Double
    /// The member the partition is assigned to, when the group is active.
    public var memberId: String?
    public var clientId: String?
    public var host: String?

    public init(topic: String, partition: Int32, committed: Int64, logEnd: Int64, lag: Int64, lagSeconds: Double) {
        self.topic = topic
        self.partition = partition
        self.committed = committed
        self.logEnd = logEnd
        self.lag = lag
        self.lagSeconds = lagSeconds
    }
}

/// A consumer group as `strata groups describe` and the admin API show it.
public struct GroupReport: Sendable {
    public struct Member: Sendable, Equatable {
        public var memberId: String
        public var clientId: String
        public var host: String
        public var assignment: [TopicPartitions]

        public init(memberId: String, clientId: String, host: String, assignment: [TopicPartitions]) {
            (self.memberId, self.clientId, self.host, self.assignment) = (memberId, clientId, host, assignment)
        }
    }
    public struct TopicPartitions: Sendable, Equatable {
        public var topic: String
        public var partitions: [Int32]
    }
    public var group: String
    /// Kafka's group states: Empty (no members, offsets only), Stable, PreparingRebalance, ...
    public var state: String
    public var members: [Member]
    public var partitions: [GroupPartitionLag]

    public init(group: String, state: String, members: [Member], partitions: [GroupPartitionLag]) {
        (self.group, self.state, self.members, self.partitions) = (group, state, members, partitions)
    }
}

extension Broker {
    /// Every group with committed offsets or live members, sorted.
    public func groupNames() throws -> [String] {
        var names = Set(try metadata.groups())
        for g in groups.groupList() { names.insert(g.id) }
        return names.sorted()
    }

    /// The group's members, assignments and, per committed partition, the lag in records and in
    /// seconds (from the timestamp of the record at the committed offset). Nil for an unknown group.
    public func groupReport(_ group: String, nowMs: Int64 = wallClockMillis()) throws -> GroupReport? {
        let live = groups.describe(group)
        let committed = try metadata.committedOffsets(group: group)
        guard live != nil || !committed.isEmpty else { return nil }
        var owner: [String: GroupReport.Member] = [:]
        let members: [GroupReport.Member] = (live?.members ?? []).map { m in
            let assigned = ConsumerAssignment.decode(m.assignment) ?? []
            let member = GroupReport.Member(memberId: m.id, clientId: m.clientId, host: m.host, assignment: assigned)
            for tp in assigned { for p in tp.partitions { owner["\(tp.topic)\u{0}\(p)"] = member } }
            return member
        }
        let rows = committed.sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }.map { c -> GroupPartitionLag in
            var row = partitionLag(topic: c.topic, partition: c.partition, committed: c.committed.offset, nowMs: nowMs)
            if let m = owner["\(c.topic)\u{0}\(c.partition)"] { (row.memberId, row.clientId, row.host) = (m.memberId, m.clientId, m.host) }
            return row
        }
        return GroupReport(group: group, state: live?.state ?? "Empty", members: members, partitions: rows)
    }

    /// Lag of one committed offset. A partition that is gone or offline reports log end -1 and lag 0.
    public func partitionLag(topic: String, partition: Int32, committed: Int64, nowMs: Int64 = wallClockMillis()) -> GroupPartitionLag {
        var row = GroupPartitionLag(topic: topic, partition: partition, committed: committed, logEnd: -1, lag: 0, lagSeconds: 0)
        guard let log = try? log(topic: topic, partition: partition) else { return row }
        if isReadOnly { _ = try? log.refresh() }  // a writer next door may have appended since
        let end = log.logEndOffset
        row.logEnd = end
        row.lag = max(0, end.saturatingSubtract(committed))
        guard row.lag > 0, let timestamp = Self.timestamp(of: max(committed, log.logStartOffset), in: log) else { return row }
        row.lagSeconds = max(0, Double(nowMs.saturatingSubtract(timestamp)) / 1000)
        return row
    }

    /// The timestamp of the first record at or after `offset` (the batch holding it is read and,
    /// if compressed, decompressed; LogAppendTime batches carry it in their header).
    static func timestamp(of offset: Int64, in log: PartitionLog) -> Int64? {
        guard let slice = try? log.read(from: offset, maxBytes: 1).slice else { return nil }
        var found: Int64?
        try? slice.forEachBatch { batch in
            guard found == nil, batch.lastOffset >= offset else { return }
            if batch.isLogAppendTime { found = batch.maxTimestamp; return }
            try batch.forEachRecord { r in
                if found == nil, r.offset >= offset { found = r.timestamp }
            }
        }
        return found
    }
}

/// Kafka's ConsumerProtocolAssignment (what a classic consumer group's leader hands each member
/// in SyncGroup): version, [topic, [partition]], user data. Decoded defensively: it comes from a
/// client, and anything that does not parse is shown as no assignment.
public enum ConsumerAssignment {
    public static func decode(_ bytes: [UInt8]) -> [GroupReport.TopicPartitions]? {
        var at = 0
        func int16() -> Int16? {
            guard at + 2 <= bytes.count else { return nil }
            defer { at += 2 }
            return Int16(bitPattern: UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]))
        }
        func int32() -> Int32? {
            guard at + 4 <= bytes.count else { return nil }
            defer { at += 4 }
            return Int32(bitPattern: bytes[at..<at + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        }
        guard let version = int16(), version >= 0, let topicCount = int32(), topicCount >= 0, Int(topicCount) <= bytes.count / 6 else { return nil }
        var out: [GroupReport.TopicPartitions] = []
        for _ in 0..<Int(topicCount) {
            guard let length = int16(), length >= 0, at + Int(length) <= bytes.count else { return nil }
            let topic = String(decoding: bytes[at..<at + Int(length)], as: UTF8.self)
            at += Int(length)
            guard let count = int32(), count >= 0, Int(count) <= (bytes.count - at) / 4 else { return nil }
            var partitions: [Int32] = []
            partitions.reserveCapacity(Int(count))
            for _ in 0..<Int(count) { guard let p = int32() else { return nil }; partitions.append(p) }
            out.append(.init(topic: topic, partitions: partitions.sorted()))
        }
        return out
    }
}
