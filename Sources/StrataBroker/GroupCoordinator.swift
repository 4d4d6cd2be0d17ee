#if canImport(Glibc)
import Glibc
#endif
import StrataCore
import Synchronization

/// Why a group call was refused; the Kafka layer maps each to its error code (ErrorMapping).
public enum GroupError: Sendable, Equatable {
    case none, unknownMemberId, illegalGeneration, rebalanceInProgress, invalidSessionTimeout,
         inconsistentGroupProtocol, invalidGroupId, memberIdRequired, coordinatorNotAvailable
}

/// Kafka's classic consumer-group protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup) for one
/// node, owned by the broker so that the Kafka server and embedded users share one coordinator.
/// Members, generations and assignments live in memory (clients rejoin after a restart);
/// committed offsets live in LMDB through the broker. Time comes from an injected clock
/// (`nowMs`), and a background worker calls `tick()` to expire sessions and end rebalances; tests
/// drive both by hand.
///
/// States: Empty → PreparingRebalance (joins collected until every known member has rejoined or
/// the rebalance timeout passes) → CompletingRebalance (the leader's SyncGroup brings the
/// assignments) → Stable. The broker only elects a protocol all members support and relays the
/// leader's opaque assignments.
public final class GroupCoordinator: Sendable {
    public enum State: String, Sendable { case empty = "Empty", preparingRebalance = "PreparingRebalance", completingRebalance = "CompletingRebalance", stable = "Stable", dead = "Dead" }

    public struct JoinResult: Sendable {
        public var error: GroupError
        public var generation: Int32 = -1
        public var protocolName: String = ""
        public var leader: String = ""
        public var memberId: String
        public var members: [(id: String, instanceId: String?, metadata: [UInt8])] = []
    }

    /// A group's state as Kafka stores it (GroupMetadataValue): what `__consumer_offsets` carries
    /// after each completed rebalance and when the group empties.
    public struct StoredGroup: Sendable {
        public struct Member: Sendable {
            public var memberId: String
            public var instanceId: String?
            public var clientId: String
            public var clientHost: String
            public var rebalanceTimeoutMs: Int64
            public var sessionTimeoutMs: Int64
            public var subscription: [UInt8]
            public var assignment: [UInt8]
        }
        public var protocolType: String
        public var generation: Int32
        public var protocolName: String?
        public var leader: String?
        public var members: [Member]
    }
    public typealias GroupStore = @Sendable (_ groupId: String, _ state: StoredGroup) -> Void

    public typealias JoinCompletion = @Sendable (JoinResult) -> Void
    public typealias SyncCompletion = @Sendable (GroupError, [UInt8]) -> Void

    final class Member {
        let id: String
        let clientId: String
        let clientHost: String
        var instanceId: String?
        var sessionTimeoutMs: Int64
        var rebalanceTimeoutMs: Int64
        var protocols: [(name: String, metadata: [UInt8])]
        var assignment: [UInt8] = []
        var lastSeenMs: Int64
        var joinPromise: JoinCompletion?
        var syncPromise: SyncCompletion?
        var joined = false

        init(id: String, clientId: String, clientHost: String, sessionTimeoutMs: Int64, rebalanceTimeoutMs: Int64,
             protocols: [(name: String, metadata: [UInt8])], now: Int64) {
            self.id = id
            self.clientId = clientId
            self.clientHost = clientHost
            self.sessionTimeoutMs = sessionTimeoutMs
            self.rebalanceTimeoutMs = rebalanceTimeoutMs
            self.protocols = protocols
            lastSeenMs = now
        }
    }

    final class Group {
        let id: String
        var state: State = .empty
        var generation: Int32 = 0
        var protocolType: String?
        var protocolName: String?
        var leader: String?
        var members: [Member] = []
        var pendingMemberIds: Set<String> = []
        var rebalanceDeadlineMs: Int64 = 0
        /// While the first generation of an empty group gathers its members (Kafka's
        /// InitialDelayedJoin): the join does not complete before this, even when every member
        /// known so far has joined. 0: no delay pending.
        var initialJoinDeadlineMs: Int64 = 0
        init(id: String) { self.id = id }
        func member(_ id: String) -> Member? { members.first { $0.id == id } }
    }

    public static let minSessionTimeoutMs: Int64 = 1000
    public static let maxSessionTimeoutMs: Int64 = 1_800_000
    public static let maxMembersPerGroup = 1000
    public static let maxGroups = 10_000

    /// Everything mutable, behind one lock. Groups and members are reference types that never
    /// leave it (callers get copies: JoinResult, GroupDescription).
    private struct Registry {
        var groups: [String: Group] = [:]
        var memberCounter = 0
    }
    private let registry = Mutex(Registry())
    private let nowMs: @Sendable () -> Int64
    private let timer = Mutex<PeriodicWorker?>(nil)
    private let groupStore = Mutex<GroupStore?>(nil)

    /// group.initial.rebalance.delay.ms: how long an empty group's first join waits for more
    /// members before it completes, each new member extending the wait by as much (up to the
    /// rebalance timeout), as Kafka does. Without it, consumers started together get a
    /// generation of one member and then a rebalance, whose revocation callbacks they did not
    /// expect (librdkafka's test 0118 commits in one and fails).
    public let initialRebalanceDelayMs: Int64

    /// `nowMs`: the clock (monotonic milliseconds); tests inject their own.
    public init(initialRebalanceDelayMs: Int64 = 0, nowMs: @escaping @Sendable () -> Int64 = { monotonicMillis() }) {
        self.initialRebalanceDelayMs = max(0, initialRebalanceDelayMs)
        self.nowMs = nowMs
    }

    /// Completions are collected under the lock and run after it: a completion can run code
    /// inline that re-enters the coordinator, which must not happen while it is locked.
    private typealias Completion = @Sendable () -> Void

    /// Sets what receives each stored group state (the broker mirrors it to `__consumer_offsets`).
    /// It runs after the coordinator's lock is released.
    public func setGroupStore(_ store: GroupStore?) {
        groupStore.withLock { $0 = store }
    }

    /// A completion that hands `group`'s current state to the group store; built under the lock.
    private func storeCompletion(_ group: Group) -> Completion {
        let stored = StoredGroup(
            protocolType: group.protocolType ?? "consumer", generation: group.generation,
            protocolName: group.protocolName, leader: group.leader,
            members: group.members.map { m in
                StoredGroup.Member(memberId: m.id, instanceId: m.instanceId, clientId: m.clientId, clientHost: m.clientHost,
                                   rebalanceTimeoutMs: m.rebalanceTimeoutMs, sessionTimeoutMs: m.sessionTimeoutMs,
                                   subscription: m.protocols.first { $0.name == group.protocolName }?.metadata ?? [],
                                   assignment: m.assignment)
            })
        let id = group.id
        return { self.groupStore.withLock { $0 }?(id, stored) }
    }

    /// Starts the background tick (every 100 ms): session expiry and rebalance deadlines.
    public func start() {
        let worker = PeriodicWorker(intervalMs: 100) { [weak self] in self?.tick() }
        timer.withLock { old in
            old?.stop()
            old = worker
        }
        worker.start()
    }

    /// Stops the tick and answers every parked join and sync with COORDINATOR_NOT_AVAILABLE.
    public func stop() {
        timer.withLock { t in
            t?.stop()
            t = nil
        }
        let completions: [Completion] = registry.withLock { r in
            var out: [Completion] = []
            for group in r.groups.values {
                for m in group.members {
                    if let p = m.joinPromise { let id = m.id; out.append { p(JoinResult(error: .coordinatorNotAvailable, memberId: id)) } }
                    if let p = m.syncPromise { out.append { p(.coordinatorNotAvailable, []) } }
                    m.joinPromise = nil
                    m.syncPromise = nil
                }
            }
            return out
        }
        completions.forEach { $0() }
    }

    // MARK: JoinGroup

    /// JoinGroup. `completion` runs once the join phase ends for this member (or at once when
    /// the request is refused); `requiresKnownMemberId` is KIP-394 (JoinGroup v4+).
    public func join(groupId: String, memberId: String, instanceId: String?, clientId: String, clientHost: String,
                     sessionTimeoutMs: Int64, rebalanceTimeoutMs: Int64, protocolType: String,
                     protocols: [(name: String, metadata: [UInt8])], requiresKnownMemberId: Bool, completion promise: @escaping JoinCompletion) {
        let now = nowMs()
        var completions: [Completion] = []
        let immediate: JoinResult? = registry.withLock { r in
            guard !groupId.isEmpty else { return JoinResult(error: .invalidGroupId, memberId: memberId) }
            guard (Self.minSessionTimeoutMs...Self.maxSessionTimeoutMs).contains(sessionTimeoutMs) else {
                return JoinResult(error: .invalidSessionTimeout, memberId: memberId)
            }
            guard !protocols.isEmpty, !protocolType.isEmpty else { return JoinResult(error: .inconsistentGroupProtocol, memberId: memberId) }
            if r.groups[groupId] == nil {
                guard r.groups.count < Self.maxGroups else { return JoinResult(error: .coordinatorNotAvailable, memberId: memberId) }
                r.groups[groupId] = Group(id: groupId)
            }
            let group = r.groups[groupId]!
            if let type = group.protocolType, !group.members.isEmpty {
                let names = Set(protocols.map(\.name))
                let common = group.members.allSatisfy { m in m.protocols.contains { names.contains($0.name) } }
                if type != protocolType || !common { return JoinResult(error: .inconsistentGroupProtocol, memberId: memberId) }
            }
            var id = memberId
            if id.isEmpty {
                r.memberCounter += 1
                id = "\(clientId.isEmpty ? "member" : clientId)-\(r.memberCounter)-\(UInt32.random(in: 0...UInt32.max))"
                if requiresKnownMemberId {
                    // KIP-394: hand out the id and make the client come back with it. Ids that are
                    // never used are bounded: past the limit the oldest are forgotten wholesale
                    // (such a client gets UNKNOWN_MEMBER_ID and starts over).
                    if group.pendingMemberIds.count >= Self.maxMembersPerGroup { group.pendingMemberIds.removeAll() }
                    group.pendingMemberIds.insert(id)
                    return JoinResult(error: .memberIdRequired, memberId: id)
                }
            } else if group.member(id) == nil && !group.pendingMemberIds.contains(id) {
                return JoinResult(error: .unknownMemberId, memberId: id)
            }
            group.pendingMemberIds.remove(id)
            let member: Member
            if let existing = group.member(id) {
                member = existing
                member.protocols = protocols
                member.sessionTimeoutMs = sessionTimeoutMs
                member.rebalanceTimeoutMs = rebalanceTimeoutMs
                if let old = member.joinPromise { let memberId = id; completions.append { old(JoinResult(error: .rebalanceInProgress, memberId: memberId)) } }
            } else {
                guard group.members.count < Self.maxMembersPerGroup else { return JoinResult(error: .coordinatorNotAvailable, memberId: id) }
                member = Member(id: id, clientId: clientId, clientHost: clientHost, sessionTimeoutMs: sessionTimeoutMs,
                                rebalanceTimeoutMs: rebalanceTimeoutMs, protocols: protocols, now: now)
                group.members.append(member)
            }
            member.instanceId = instanceId
            member.lastSeenMs = now
            member.joinPromise = promise
            group.protocolType = protocolType
            if group.state != .preparingRebalance {
                let firstJoin = group.state == .empty
                prepareRebalance(group, now: now, completions: &completions)
                if firstJoin && initialRebalanceDelayMs > 0 { group.initialJoinDeadlineMs = now + initialRebalanceDelayMs }
            } else if group.initialJoinDeadlineMs > 0 {
                // Another member in the initial window: wait as long again, within the rebalance timeout.
                group.initialJoinDeadlineMs = min(now + initialRebalanceDelayMs, group.rebalanceDeadlineMs)
            }
            member.joined = true
            if group.members.allSatisfy(\.joined) && now >= group.initialJoinDeadlineMs {
                completeJoin(group, now: now, completions: &completions)
            }
            return nil
        }
        completions.forEach { $0() }
        if let immediate { promise(immediate) }
    }

    private func prepareRebalance(_ group: Group, now: Int64, completions: inout [Completion]) {
        Self.trace("\(group.id) prepareRebalance from \(group.state) gen \(group.generation) members \(group.members.map(\.id))")
        if group.state == .completingRebalance {
            for m in group.members {
                if let p = m.syncPromise { completions.append { p(.rebalanceInProgress, []) } }
                m.syncPromise = nil
            }
        }
        group.state = .preparingRebalance
        for m in group.members { m.joined = false }
        group.rebalanceDeadlineMs = now + (group.members.map(\.rebalanceTimeoutMs).max() ?? 0)
    }

    /// Every member rejoined (or the deadline passed): a new generation.
    static let tracing = getenv("STRATA_TRACE_GROUPS") != nil
    static func trace(_ s: @autoclosure () -> String) {
        guard tracing else { return }
        let line = "group: " + s() + "\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
    }

    private func completeJoin(_ group: Group, now: Int64, completions: inout [Completion]) {
        Self.trace("\(group.id) completeJoin gen \(group.generation + 1) joined \(group.members.filter(\.joined).map(\.id)) dropped \(group.members.filter { !$0.joined }.map(\.id))")
        let gone = group.members.filter { !$0.joined }
        for m in gone { if let p = m.syncPromise { completions.append { p(.rebalanceInProgress, []) } } }
        group.members.removeAll { !$0.joined }
        group.initialJoinDeadlineMs = 0
        group.generation &+= 1
        guard !group.members.isEmpty else {
            group.state = .empty
            group.leader = nil
            group.protocolName = nil
            completions.append(storeCompletion(group))
            return
        }
        // Protocol election: candidates every member supports; each member votes for its first
        // candidate; most votes wins, ties broken by the leader's preference order.
        if group.leader == nil || group.member(group.leader!) == nil { group.leader = group.members[0].id }
        let leader = group.member(group.leader!)!
        let candidates = leader.protocols.map(\.name).filter { name in group.members.allSatisfy { m in m.protocols.contains { $0.name == name } } }
        var votes: [String: Int] = [:]
        for m in group.members { if let first = m.protocols.first(where: { candidates.contains($0.name) }) { votes[first.name, default: 0] += 1 } }
        let chosen = candidates.max { (votes[$0] ?? 0) < (votes[$1] ?? 0) } ?? leader.protocols[0].name
        let best = votes[chosen] ?? 0
        group.protocolName = candidates.first { (votes[$0] ?? 0) == best } ?? chosen
        group.state = .completingRebalance
        let membersForLeader = group.members.map { m in
            (id: m.id, instanceId: m.instanceId, metadata: m.protocols.first { $0.name == group.protocolName }?.metadata ?? [])
        }
        for m in group.members {
            m.assignment = []
            m.lastSeenMs = now
            guard let p = m.joinPromise else { continue }
            m.joinPromise = nil
            let result = JoinResult(error: .none, generation: group.generation, protocolName: group.protocolName!, leader: group.leader!,
                                    memberId: m.id, members: m.id == group.leader ? membersForLeader : [])
            completions.append { p(result) }
        }
    }

    // MARK: SyncGroup

    /// SyncGroup. `completion` runs when the leader's assignment is there (or at once).
    public func sync(groupId: String, generation: Int32, memberId: String, assignments: [(String, [UInt8])],
                     completion promise: @escaping SyncCompletion) {
        var completions: [Completion] = []
        let now = nowMs()
        let immediate: (GroupError, [UInt8])? = registry.withLock { r in
            guard let group = r.groups[groupId], let member = group.member(memberId) else { return (.unknownMemberId, []) }
            guard generation == group.generation else { return (.illegalGeneration, []) }
            member.lastSeenMs = now
            switch group.state {
            case .preparingRebalance: return (.rebalanceInProgress, [])
            case .stable: return (.none, member.assignment)
            case .empty, .dead: return (.unknownMemberId, [])
            case .completingRebalance:
                if let old = member.syncPromise { completions.append { old(.rebalanceInProgress, []) } }
                member.syncPromise = promise
                if memberId == group.leader {
                    for (id, assignment) in assignments { group.member(id)?.assignment = assignment }
                    group.state = .stable
                    completions.append(storeCompletion(group))
                    for m in group.members {
                        guard let p = m.syncPromise else { continue }
                        m.syncPromise = nil
                        let a = m.assignment
                        completions.append { p(.none, a) }
                    }
                }
                return nil
            }
        }
        completions.forEach { $0() }
        if let immediate { promise(immediate.0, immediate.1) }
    }

    // MARK: Heartbeat, LeaveGroup, commits

    public func heartbeat(groupId: String, generation: Int32, memberId: String) -> GroupError {
        let now = nowMs()
        return registry.withLock { r in
            guard let group = r.groups[groupId], let member = group.member(memberId) else { return .unknownMemberId }
            guard generation == group.generation else { return .illegalGeneration }
            member.lastSeenMs = now
            return group.state == .preparingRebalance ? .rebalanceInProgress : .none
        }
    }

    public func leave(groupId: String, memberIds: [String]) -> [(String, GroupError)] {
        var completions: [Completion] = []
        let now = nowMs()
        let result: [(String, GroupError)] = registry.withLock { r in
            guard let group = r.groups[groupId] else { return memberIds.map { ($0, .unknownMemberId) } }
            var out: [(String, GroupError)] = []
            for id in memberIds {
                guard let m = group.member(id) else { out.append((id, .unknownMemberId)); continue }
                if let p = m.joinPromise { completions.append { p(JoinResult(error: .unknownMemberId, memberId: id)) } }
                if let p = m.syncPromise { completions.append { p(.unknownMemberId, []) } }
                group.members.removeAll { $0.id == id }
                out.append((id, .none))
            }
            membersChanged(group, now: now, completions: &completions)
            return out
        }
        completions.forEach { $0() }
        return result
    }

    private func membersChanged(_ group: Group, now: Int64, completions: inout [Completion]) {
        if group.members.isEmpty {
            group.state = .empty
            group.leader = nil
            group.protocolName = nil
            group.initialJoinDeadlineMs = 0
            group.generation &+= 1
            completions.append(storeCompletion(group))
            return
        }
        if group.state != .preparingRebalance { prepareRebalance(group, now: now, completions: &completions) }
        if group.members.allSatisfy(\.joined) && now >= group.initialJoinDeadlineMs { completeJoin(group, now: now, completions: &completions) }
    }

    /// Whether an OffsetCommit from (generation, member) may be stored. Generation -1 with no
    /// member id is a "simple" commit, allowed for a group without members.
    public func validateCommit(groupId: String, generation: Int32, memberId: String) -> GroupError {
        let now = nowMs()
        return registry.withLock { r in
            Self.trace("\(groupId) commit gen \(generation) member '\(memberId)' in state \(r.groups[groupId].map { "\($0.state) gen \($0.generation) members \($0.members.map(\.id))" } ?? "none")")
            guard let group = r.groups[groupId], !group.members.isEmpty else {
                return generation < 0 ? .none : (memberId.isEmpty ? .none : .unknownMemberId)
            }
            if generation < 0 && memberId.isEmpty { return .none }  // manual commits beside a group, as Kafka allows for admin tools
            guard let member = group.member(memberId) else { return .unknownMemberId }
            guard generation == group.generation else { return .illegalGeneration }
            member.lastSeenMs = now
            // Kafka's ClassicGroup: while a rebalance is being prepared the generation has not
            // moved, and members commit what they consumed in it (a consumer closing, or one
            // whose partitions are about to be revoked): accepted. Only between the join and the
            // leader's assignment (CompletingRebalance) must a member rejoin first.
            return group.state == .completingRebalance ? .rebalanceInProgress : .none
        }
    }

    // MARK: Timers

    /// Expires members that stopped heartbeating and finishes rebalances whose deadline passed.
    public func tick() {
        let now = nowMs()
        var completions: [Completion] = []
        registry.withLock { r in
            for group in r.groups.values {
                let expired = group.members.filter { $0.joinPromise == nil && now - $0.lastSeenMs > $0.sessionTimeoutMs }
                if !expired.isEmpty {
                    for m in expired { if let p = m.syncPromise { completions.append { p(.unknownMemberId, []) } } }
                    group.members.removeAll { m in expired.contains { $0 === m } }
                    membersChanged(group, now: now, completions: &completions)
                }
                if group.state == .preparingRebalance
                    && (now >= group.rebalanceDeadlineMs
                        || (group.initialJoinDeadlineMs > 0 && now >= group.initialJoinDeadlineMs && group.members.allSatisfy(\.joined)))
                {
                    completeJoin(group, now: now, completions: &completions)
                }
            }
        }
        completions.forEach { $0() }
    }

    // MARK: Describe

    public struct GroupDescription: Sendable {
        public let id: String
        public let state: String
        public let protocolType: String
        public let protocolName: String
        public let members: [(id: String, instanceId: String?, clientId: String, host: String, metadata: [UInt8], assignment: [UInt8])]
    }

    public func describe(_ groupId: String) -> GroupDescription? {
        registry.withLock { r in
            guard let g = r.groups[groupId] else { return nil }
            return GroupDescription(
                id: g.id, state: g.state.rawValue, protocolType: g.protocolType ?? "", protocolName: g.protocolName ?? "",
                members: g.members.map { m in
                    (m.id, m.instanceId, m.clientId, m.clientHost, m.protocols.first { $0.name == g.protocolName }?.metadata ?? [], m.assignment)
                })
        }
    }

    /// Drops an empty group's entry (DeleteGroups); a group with members is kept.
    public func forget(groupId: String) {
        registry.withLock { r in
            if let g = r.groups[groupId], g.members.isEmpty { r.groups[groupId] = nil }
        }
    }

    public func groupList() -> [(id: String, protocolType: String)] {
        registry.withLock { r in r.groups.values.map { ($0.id, $0.protocolType ?? "consumer") } }
    }
}
