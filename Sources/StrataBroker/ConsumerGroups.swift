import StrataCore
import Synchronization

/// Why a ConsumerGroupHeartbeat was refused (the Kafka layer maps each to its code).
public enum ConsumerGroupError: Error, Equatable, Sendable {
    case unknownMemberId, fencedMemberEpoch, unsupportedAssignor, invalidRequest(String), groupMaxSizeReached
    /// The id belongs to a classic group with members (INCONSISTENT_GROUP_PROTOCOL).
    case inconsistentGroupProtocol
}

/// KIP-848's consumer group protocol: the broker, not a group leader, assigns partitions. Each
/// member heartbeats its subscription and the partitions it owns; the coordinator computes a
/// target assignment per group epoch (uniform or range assignor) and moves each member towards
/// it: partitions to give up are revoked first (the member's next heartbeats show it no longer
/// owns them), and a partition is handed to its new owner only once its previous owner released
/// it, so no partition is ever owned twice. Membership lives in memory, as the classic
/// coordinator's does; offsets are committed through OffsetCommit as usual (LMDB).
public final class ConsumerGroupCoordinator: Sendable {
    public static let assignors = ["uniform", "range"]
    public static let maxMembersPerGroup = 1000
    public static let maxGroups = 10_000

    /// group.consumer.heartbeat.interval.ms and group.consumer.session.timeout.ms (Kafka: 5 s, 45 s).
    public let heartbeatIntervalMs: Int32
    public let sessionTimeoutMs: Int64

    /// A topic's partition count and id (nil: the topic does not exist), asked at each heartbeat.
    public typealias TopicLookup = @Sendable (String) -> (partitions: Int32, id: [UInt8])?

    struct Member {
        var id: String
        var instanceId: String?
        var rackId: String?
        var clientId: String
        var clientHost: String
        var epoch: Int32 = 0
        var previousEpoch: Int32 = -1
        var subscribedTopics: [String] = []
        var assignor: String?
        var rebalanceTimeoutMs: Int64 = 300_000
        var lastHeartbeatMs: Int64
        /// What the coordinator has given the member and not yet seen it give up.
        var assigned: [String: Set<Int32>] = [:]
        /// What the member last said it owns (heartbeats send it when it changes).
        var reportedOwned: [String: Set<Int32>] = [:]
        /// What it was last told.
        var lastSent: [String: Set<Int32>]?
        /// Since when the member has partitions to revoke (nil: none).
        var revokingSinceMs: Int64?
    }

    struct Group {
        var id: String
        var epoch: Int32 = 0
        var members: [String: Member] = [:]
        var target: [String: [String: Set<Int32>]] = [:]
        /// Partition counts the target was computed with: a change (CreatePartitions) moves the epoch.
        var partitionCounts: [String: Int32] = [:]
        var assignor = "uniform"
    }

    private let groups = Mutex<[String: Group]>([:])
    private let nowMs: @Sendable () -> Int64

    public init(heartbeatIntervalMs: Int32 = 5000, sessionTimeoutMs: Int64 = 45_000, nowMs: @escaping @Sendable () -> Int64 = { monotonicMillis() }) {
        self.heartbeatIntervalMs = heartbeatIntervalMs
        self.sessionTimeoutMs = sessionTimeoutMs
        self.nowMs = nowMs
    }

    public struct Heartbeat: Sendable {
        public var groupId: String
        public var memberId: String
        public var memberEpoch: Int32
        public var instanceId: String?
        public var rackId: String?
        public var rebalanceTimeoutMs: Int32 = -1
        /// nil: unchanged since the last heartbeat.
        public var subscribedTopics: [String]?
        public var serverAssignor: String?
        /// The partitions the member owns (by topic name), nil when unchanged.
        public var ownedPartitions: [String: Set<Int32>]?
        public var clientId = ""
        public var clientHost = ""
        public init(groupId: String, memberId: String, memberEpoch: Int32) {
            self.groupId = groupId
            self.memberId = memberId
            self.memberEpoch = memberEpoch
        }
    }

    public struct HeartbeatResult: Sendable, Equatable {
        public var memberId: String
        public var memberEpoch: Int32
        public var heartbeatIntervalMs: Int32
        /// The member's assignment, by topic name; nil when the member already has it.
        public var assignment: [String: [Int32]]?
    }

    /// One heartbeat: join (epoch 0), leave (epoch -1 or -2), or keep going and reconcile.
    public func heartbeat(_ hb: Heartbeat, topics: TopicLookup) throws(ConsumerGroupError) -> HeartbeatResult {
        let now = nowMs()
        return try groups.withLock { (groups: inout [String: Group]) throws(ConsumerGroupError) -> HeartbeatResult in
            if groups[hb.groupId] == nil {
                guard hb.memberEpoch == 0 else { throw .unknownMemberId }
                guard groups.count < Self.maxGroups else { throw .groupMaxSizeReached }
                groups[hb.groupId] = Group(id: hb.groupId)
            }
            var group = groups[hb.groupId]!
            defer { groups[hb.groupId] = group.members.isEmpty ? nil : group }
            if hb.memberEpoch < 0 {
                // Leaving (-1), or a static member leaving for a while (-2): its partitions go now.
                if group.members.removeValue(forKey: hb.memberId) != nil { Self.bump(&group, topics: topics) }
                return HeartbeatResult(memberId: hb.memberId, memberEpoch: hb.memberEpoch, heartbeatIntervalMs: heartbeatIntervalMs, assignment: nil)
            }
            var memberId = hb.memberId
            var changed = false
            var member: Member
            if hb.memberEpoch == 0 {
                if memberId.isEmpty { memberId = Self.newMemberId() }  // v0: the coordinator names members
                guard hb.subscribedTopics != nil else { throw .invalidRequest("a joining member must send its subscription") }
                if let existing = group.members[memberId] {
                    member = existing
                    member.assigned = [:]  // a rejoin starts again from nothing owned
                } else {
                    guard group.members.count < Self.maxMembersPerGroup else { throw .groupMaxSizeReached }
                    member = Member(id: memberId, instanceId: hb.instanceId, rackId: hb.rackId, clientId: hb.clientId, clientHost: hb.clientHost, lastHeartbeatMs: now)
                    changed = true
                }
            } else {
                guard let existing = group.members[memberId] else { throw .unknownMemberId }
                // The previous epoch is accepted too: the member may not have seen our last answer.
                guard hb.memberEpoch == existing.epoch || hb.memberEpoch == existing.previousEpoch else { throw .fencedMemberEpoch }
                member = existing
            }
            member.lastHeartbeatMs = now
            if let topics = hb.subscribedTopics {
                let sorted = Array(Set(topics)).sorted()
                if sorted != member.subscribedTopics { member.subscribedTopics = sorted; changed = true }
            }
            if let assignor = hb.serverAssignor {
                guard Self.assignors.contains(assignor) else { throw .unsupportedAssignor }
                if member.assignor != assignor { member.assignor = assignor; changed = true }
            }
            if hb.rebalanceTimeoutMs > 0 { member.rebalanceTimeoutMs = Int64(hb.rebalanceTimeoutMs) }
            if let instance = hb.instanceId { member.instanceId = instance }
            if let owned = hb.ownedPartitions { member.reportedOwned = owned.filter { !$0.value.isEmpty } }
            group.members[memberId] = member
            // Partition counts of subscribed topics changing also moves the group to a new epoch.
            let subscribed = Set(group.members.values.flatMap(\.subscribedTopics))
            var counts: [String: Int32] = [:]
            for t in subscribed { if let info = topics(t) { counts[t] = info.partitions } }
            if changed || counts != group.partitionCounts { Self.bump(&group, topics: topics) }
            member = group.members[memberId]!
            let view = Self.reconcile(&member, in: group, now: now)
            let send = hb.memberEpoch == 0 || member.lastSent != view || (hb.ownedPartitions != nil && member.reportedOwned != view)
            member.lastSent = view
            if send {
                // What it is told it may take counts as owned until a heartbeat lists what it owns
                // without it (a heartbeat without the list means "unchanged", not "nothing").
                for (t, ps) in view { member.reportedOwned[t, default: []].formUnion(ps) }
            }
            group.members[memberId] = member
            return HeartbeatResult(memberId: memberId, memberEpoch: member.epoch, heartbeatIntervalMs: heartbeatIntervalMs,
                                   assignment: send ? view.mapValues { $0.sorted() } : nil)
        }
    }

    /// A new group epoch: the target assignment recomputed for the current members.
    private static func bump(_ group: inout Group, topics: TopicLookup) {
        group.epoch = group.epoch == Int32.max ? 1 : group.epoch + 1
        var counts: [String: Int32] = [:]
        let subscribed = Set(group.members.values.flatMap(\.subscribedTopics))
        for t in subscribed { if let info = topics(t) { counts[t] = info.partitions } }
        group.partitionCounts = counts
        // The assignor most members ask for (ties: uniform).
        let votes = Dictionary(grouping: group.members.values.compactMap(\.assignor), by: { $0 }).mapValues(\.count)
        group.assignor = votes.max { ($0.value, $1.key) < ($1.value, $0.key) }?.key ?? "uniform"
        group.target = group.assignor == "range" ? rangeAssignment(group, counts) : uniformAssignment(group, counts)
    }

    /// Kafka's uniform assignor for the common case: every partition of the subscribed topics,
    /// balanced over the members subscribed to its topic, each partition kept by its current
    /// owner while that owner is under its share (few moves on a rebalance).
    static func uniformAssignment(_ group: Group, _ counts: [String: Int32]) -> [String: [String: Set<Int32>]] {
        let memberIds = group.members.keys.sorted()
        var target: [String: [String: Set<Int32>]] = Dictionary(uniqueKeysWithValues: memberIds.map { ($0, [:]) })
        var load: [String: Int] = Dictionary(uniqueKeysWithValues: memberIds.map { ($0, 0) })
        let all = counts.keys.sorted().flatMap { t in (0..<counts[t]!).map { (t, $0) } }
        let share = memberIds.isEmpty ? 0 : (all.count + memberIds.count - 1) / memberIds.count
        var unassigned: [(String, Int32)] = []
        for (t, p) in all {
            if let owner = memberIds.first(where: { group.members[$0]!.assigned[t]?.contains(p) == true }),
               group.members[owner]!.subscribedTopics.contains(t), load[owner]! < share {
                target[owner]![t, default: []].insert(p)
                load[owner]! += 1
            } else {
                unassigned.append((t, p))
            }
        }
        for (t, p) in unassigned {
            let candidates = memberIds.filter { group.members[$0]!.subscribedTopics.contains(t) }
            guard let least = candidates.min(by: { (load[$0]!, $0) < (load[$1]!, $1) }) else { continue }
            target[least]![t, default: []].insert(p)
            load[least]! += 1
        }
        return target
    }

    /// Kafka's range assignor: per topic, its members in id order take contiguous ranges.
    static func rangeAssignment(_ group: Group, _ counts: [String: Int32]) -> [String: [String: Set<Int32>]] {
        var target: [String: [String: Set<Int32>]] = Dictionary(uniqueKeysWithValues: group.members.keys.map { ($0, [:]) })
        for (t, n) in counts {
            let members = group.members.keys.filter { group.members[$0]!.subscribedTopics.contains(t) }.sorted()
            guard !members.isEmpty else { continue }
            let per = Int(n) / members.count
            let extra = Int(n) % members.count
            var next: Int32 = 0
            for (i, m) in members.enumerated() {
                let take = per + (i < extra ? 1 : 0)
                if take > 0 { target[m]![t] = Set(next..<next + Int32(take)) }
                next += Int32(take)
            }
        }
        return target
    }

    /// Moves a member towards its target and returns the assignment to tell it. Partitions it
    /// must give up are left out of what it is told, but stay its own on our side until a
    /// heartbeat shows it no longer owns them; only then are target partitions that no other
    /// member holds added. Its epoch reaches the group epoch once nothing is left to revoke.
    private static func reconcile(_ member: inout Member, in group: Group, now: Int64) -> [String: Set<Int32>] {
        let target = group.target[member.id] ?? [:]
        var keep: [String: Set<Int32>] = [:]
        var revoked = false
        for (t, ps) in member.assigned {
            let kept = ps.intersection(target[t] ?? [])
            if !kept.isEmpty { keep[t] = kept }
            if kept.count < ps.count { revoked = true }
        }
        if revoked {
            let stillOwned = member.assigned.contains { t, ps in
                !(member.reportedOwned[t] ?? []).isDisjoint(with: ps.subtracting(keep[t] ?? []))
            }
            if stillOwned {
                member.revokingSinceMs = member.revokingSinceMs ?? now
                return keep
            }
            member.assigned = keep
        }
        member.revokingSinceMs = nil
        var assigned = keep
        for (t, ps) in target {
            for p in ps where !(assigned[t]?.contains(p) ?? false) {
                let heldElsewhere = group.members.values.contains { other in
                    other.id != member.id && (other.assigned[t]?.contains(p) ?? false)
                }
                if !heldElsewhere { assigned[t, default: []].insert(p) }
            }
        }
        member.assigned = assigned
        if member.epoch != group.epoch {
            member.previousEpoch = member.epoch
            member.epoch = group.epoch
        }
        return assigned
    }

    /// Members silent past the session timeout, or holding revoked partitions past their
    /// rebalance timeout, are removed (their partitions go to the others at the next epoch).
    public func tick(topics: TopicLookup) {
        let now = nowMs()
        groups.withLock { groups in
            for id in Array(groups.keys) {
                var group = groups[id]!
                let expired = group.members.values.filter { m in
                    now - m.lastHeartbeatMs > sessionTimeoutMs || (m.revokingSinceMs.map { now - $0 > m.rebalanceTimeoutMs } ?? false)
                }
                guard !expired.isEmpty else { continue }
                for m in expired { group.members[m.id] = nil }
                Self.bump(&group, topics: topics)
                groups[id] = group.members.isEmpty ? nil : group
            }
        }
    }

    /// What ConsumerGroupDescribe and ListGroups show of a group.
    public struct Description: Sendable {
        public struct Member: Sendable {
            public var memberId: String
            public var instanceId: String?
            public var rackId: String?
            public var memberEpoch: Int32
            public var clientId: String
            public var clientHost: String
            public var subscribedTopics: [String]
            public var assignment: [String: [Int32]]
            public var target: [String: [Int32]]
        }
        public var groupId: String
        public var state: String
        public var epoch: Int32
        public var assignor: String
        public var members: [Member]
    }

    public func describe(_ groupId: String) -> Description? {
        groups.withLock { groups in
            guard let g = groups[groupId] else { return nil }
            let stable = g.members.values.allSatisfy { $0.epoch == g.epoch && $0.revokingSinceMs == nil }
            return Description(groupId: g.id, state: stable ? "Stable" : "Reconciling", epoch: g.epoch, assignor: g.assignor,
                               members: g.members.values.sorted { $0.id < $1.id }.map { m in
                Description.Member(memberId: m.id, instanceId: m.instanceId, rackId: m.rackId, memberEpoch: m.epoch, clientId: m.clientId,
                                   clientHost: m.clientHost, subscribedTopics: m.subscribedTopics,
                                   assignment: m.assigned.mapValues { $0.sorted() },
                                   target: (g.target[m.id] ?? [:]).mapValues { $0.sorted() })
            })
        }
    }

    public var groupIds: [String] { groups.withLock { Array($0.keys) }.sorted() }

    /// OffsetCommit from a member of a consumer group (its member epoch is the generation):
    /// nil when `groupId` is not such a group (the classic rules apply), else whether it may commit.
    public func validateCommit(groupId: String, memberId: String, memberEpoch: Int32) -> ConsumerGroupError?? {
        groups.withLock { groups in
            guard let g = groups[groupId] else { return nil }
            if memberEpoch < 0 && memberId.isEmpty { return .some(nil) }  // admin tools commit outside the group
            guard let m = g.members[memberId] else { return .some(.unknownMemberId) }
            // A commit of the epoch before (sent before the member heard of the new one) is fine.
            return memberEpoch > m.epoch ? .some(.fencedMemberEpoch) : .some(nil)
        }
    }

    private static func newMemberId() -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<16 { bytes[i] = UInt8.random(in: 0...255) }
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        return String(decoding: bytes.map { alphabet[Int($0) & 63] }.prefix(22), as: UTF8.self)
    }
}
