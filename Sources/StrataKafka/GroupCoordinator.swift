import NIOConcurrencyHelpers
import NIOCore
import StrataCore
#if canImport(Glibc)
import Glibc
#endif

/// Kafka's classic consumer-group protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup) for one
/// node. Members, generations and assignments live in memory (clients rejoin after a restart);
/// committed offsets live in LMDB through the broker.
///
/// States: Empty → PreparingRebalance (joins collected until every known member has rejoined or
/// the rebalance timeout passes) → CompletingRebalance (the leader's SyncGroup brings the
/// assignments) → Stable. The broker only elects a protocol all members support and relays the
/// leader's opaque assignments.
final class GroupCoordinator: @unchecked Sendable {
    enum State: String { case empty = "Empty", preparingRebalance = "PreparingRebalance", completingRebalance = "CompletingRebalance", stable = "Stable", dead = "Dead" }

    struct JoinResult {
        var error: ErrorCode
        var generation: Int32 = -1
        var protocolName: String = ""
        var leader: String = ""
        var memberId: String
        var members: [(id: String, instanceId: String?, metadata: [UInt8])] = []
    }

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
        var joinPromise: EventLoopPromise<JoinResult>?
        var syncPromise: EventLoopPromise<(ErrorCode, [UInt8])>?
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
        init(id: String) { self.id = id }
        func member(_ id: String) -> Member? { members.first { $0.id == id } }
    }

    static let minSessionTimeoutMs: Int64 = 1000
    static let maxSessionTimeoutMs: Int64 = 1_800_000
    static let maxMembersPerGroup = 1000
    static let maxGroups = 10_000

    private let lock = NIOLock()
    private var groups: [String: Group] = [:]
    private var timer: RepeatedTask?
    private var memberCounter = 0

    /// Completions are collected under the lock and run after it: completing a promise can run its
    /// callbacks inline, and they must not re-enter the coordinator while it is locked.
    private typealias Completion = () -> Void

    func start(on eventLoop: EventLoop) {
        timer = eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { [weak self] _ in
            self?.tick()
        }
    }

    func stop() {
        timer?.cancel()
        let completions: [Completion] = lock.withLock {
            var out: [Completion] = []
            for group in groups.values {
                for m in group.members {
                    if let p = m.joinPromise { let id = m.id; out.append { p.succeed(JoinResult(error: .coordinatorNotAvailable, memberId: id)) } }
                    if let p = m.syncPromise { out.append { p.succeed((.coordinatorNotAvailable, [])) } }
                    m.joinPromise = nil
                    m.syncPromise = nil
                }
            }
            return out
        }
        completions.forEach { $0() }
    }

    // MARK: JoinGroup

    func join(groupId: String, memberId: String, instanceId: String?, clientId: String, clientHost: String,
              sessionTimeoutMs: Int64, rebalanceTimeoutMs: Int64, protocolType: String,
              protocols: [(name: String, metadata: [UInt8])], version: Int16, promise: EventLoopPromise<JoinResult>) {
        let now = monotonicMillis()
        var completions: [Completion] = []
        let immediate: JoinResult? = lock.withLock {
            guard !groupId.isEmpty else { return JoinResult(error: .invalidGroupId, memberId: memberId) }
            guard (Self.minSessionTimeoutMs...Self.maxSessionTimeoutMs).contains(sessionTimeoutMs) else {
                return JoinResult(error: .invalidSessionTimeout, memberId: memberId)
            }
            guard !protocols.isEmpty, !protocolType.isEmpty else { return JoinResult(error: .inconsistentGroupProtocol, memberId: memberId) }
            if groups[groupId] == nil {
                guard groups.count < Self.maxGroups else { return JoinResult(error: .coordinatorNotAvailable, memberId: memberId) }
                groups[groupId] = Group(id: groupId)
            }
            let group = groups[groupId]!
            if let type = group.protocolType, !group.members.isEmpty {
                let names = Set(protocols.map(\.name))
                let common = group.members.allSatisfy { m in m.protocols.contains { names.contains($0.name) } }
                if type != protocolType || !common { return JoinResult(error: .inconsistentGroupProtocol, memberId: memberId) }
            }
            var id = memberId
            if id.isEmpty {
                memberCounter += 1
                id = "\(clientId.isEmpty ? "member" : clientId)-\(memberCounter)-\(UInt32.random(in: 0...UInt32.max))"
                if version >= 4 {
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
                if let old = member.joinPromise { completions.append { old.succeed(JoinResult(error: .rebalanceInProgress, memberId: id)) } }
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
            if group.state != .preparingRebalance { prepareRebalance(group, now: now, completions: &completions) }
            member.joined = true
            if group.members.allSatisfy(\.joined) { completeJoin(group, now: now, completions: &completions) }
            return nil
        }
        completions.forEach { $0() }
        if let immediate { promise.succeed(immediate) }
    }

    private func prepareRebalance(_ group: Group, now: Int64, completions: inout [Completion]) {
        Self.trace("\(group.id) prepareRebalance from \(group.state) gen \(group.generation) members \(group.members.map(\.id))")
        if group.state == .completingRebalance {
            for m in group.members {
                if let p = m.syncPromise { completions.append { p.succeed((.rebalanceInProgress, [])) } }
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
        for m in gone { if let p = m.syncPromise { completions.append { p.succeed((.rebalanceInProgress, [])) } } }
        group.members.removeAll { !$0.joined }
        group.generation &+= 1
        guard !group.members.isEmpty else {
            group.state = .empty
            group.leader = nil
            group.protocolName = nil
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
            completions.append { p.succeed(result) }
        }
    }

    // MARK: SyncGroup

    func sync(groupId: String, generation: Int32, memberId: String, assignments: [(String, [UInt8])],
              promise: EventLoopPromise<(ErrorCode, [UInt8])>) {
        var completions: [Completion] = []
        let immediate: (ErrorCode, [UInt8])? = lock.withLock {
            guard let group = groups[groupId], let member = group.member(memberId) else { return (.unknownMemberId, []) }
            guard generation == group.generation else { return (.illegalGeneration, []) }
            member.lastSeenMs = monotonicMillis()
            switch group.state {
            case .preparingRebalance: return (.rebalanceInProgress, [])
            case .stable: return (.none, member.assignment)
            case .empty, .dead: return (.unknownMemberId, [])
            case .completingRebalance:
                if let old = member.syncPromise { completions.append { old.succeed((.rebalanceInProgress, [])) } }
                member.syncPromise = promise
                if memberId == group.leader {
                    for (id, assignment) in assignments { group.member(id)?.assignment = assignment }
                    group.state = .stable
                    for m in group.members {
                        guard let p = m.syncPromise else { continue }
                        m.syncPromise = nil
                        let a = m.assignment
                        completions.append { p.succeed((.none, a)) }
                    }
                }
                return nil
            }
        }
        completions.forEach { $0() }
        if let immediate { promise.succeed(immediate) }
    }

    // MARK: Heartbeat, LeaveGroup, commits

    func heartbeat(groupId: String, generation: Int32, memberId: String) -> ErrorCode {
        lock.withLock {
            guard let group = groups[groupId], let member = group.member(memberId) else { return .unknownMemberId }
            guard generation == group.generation else { return .illegalGeneration }
            member.lastSeenMs = monotonicMillis()
            return group.state == .preparingRebalance ? .rebalanceInProgress : .none
        }
    }

    func leave(groupId: String, memberIds: [String]) -> [(String, ErrorCode)] {
        var completions: [Completion] = []
        let result: [(String, ErrorCode)] = lock.withLock {
            guard let group = groups[groupId] else { return memberIds.map { ($0, .unknownMemberId) } }
            var out: [(String, ErrorCode)] = []
            for id in memberIds {
                guard let m = group.member(id) else { out.append((id, .unknownMemberId)); continue }
                if let p = m.joinPromise { completions.append { p.succeed(JoinResult(error: .unknownMemberId, memberId: id)) } }
                if let p = m.syncPromise { completions.append { p.succeed((.unknownMemberId, [])) } }
                group.members.removeAll { $0.id == id }
                out.append((id, .none))
            }
            membersChanged(group, completions: &completions)
            return out
        }
        completions.forEach { $0() }
        return result
    }

    private func membersChanged(_ group: Group, completions: inout [Completion]) {
        let now = monotonicMillis()
        if group.members.isEmpty {
            group.state = .empty
            group.leader = nil
            group.generation &+= 1
            return
        }
        if group.state != .preparingRebalance { prepareRebalance(group, now: now, completions: &completions) }
        if group.members.allSatisfy(\.joined) { completeJoin(group, now: now, completions: &completions) }
    }

    /// Whether an OffsetCommit from (generation, member) may be stored. Generation -1 with no
    /// member id is a "simple" commit, allowed for a group without members.
    func validateCommit(groupId: String, generation: Int32, memberId: String) -> ErrorCode {
        lock.withLock {
            guard let group = groups[groupId], !group.members.isEmpty else {
                return generation < 0 ? .none : (memberId.isEmpty ? .none : .unknownMemberId)
            }
            if generation < 0 && memberId.isEmpty { return .none }  // manual commits beside a group, as Kafka allows for admin tools
            guard let member = group.member(memberId) else { return .unknownMemberId }
            guard generation == group.generation else { return .illegalGeneration }
            member.lastSeenMs = monotonicMillis()
            // Kafka's ClassicGroup: while a rebalance is being prepared the generation has not
            // moved, and members commit what they consumed in it (a consumer closing, or one
            // whose partitions are about to be revoked): accepted. Only between the join and the
            // leader's assignment (CompletingRebalance) must a member rejoin first.
            return group.state == .completingRebalance ? .rebalanceInProgress : .none
        }
    }

    // MARK: Timers

    /// Expires members that stopped heartbeating and finishes rebalances whose deadline passed.
    func tick() {
        let now = monotonicMillis()
        var completions: [Completion] = []
        lock.withLock {
            for group in groups.values {
                let expired = group.members.filter { $0.joinPromise == nil && now - $0.lastSeenMs > $0.sessionTimeoutMs }
                if !expired.isEmpty {
                    for m in expired { if let p = m.syncPromise { completions.append { p.succeed((.unknownMemberId, [])) } } }
                    group.members.removeAll { m in expired.contains { $0 === m } }
                    membersChanged(group, completions: &completions)
                }
                if group.state == .preparingRebalance && now >= group.rebalanceDeadlineMs {
                    completeJoin(group, now: now, completions: &completions)
                }
            }
        }
        completions.forEach { $0() }
    }

    // MARK: Describe

    struct GroupDescription {
        let id: String
        let state: String
        let protocolType: String
        let protocolName: String
        let members: [(id: String, instanceId: String?, clientId: String, host: String, metadata: [UInt8], assignment: [UInt8])]
    }

    func describe(_ groupId: String) -> GroupDescription? {
        lock.withLock {
            guard let g = groups[groupId] else { return nil }
            return GroupDescription(
                id: g.id, state: g.state.rawValue, protocolType: g.protocolType ?? "", protocolName: g.protocolName ?? "",
                members: g.members.map { m in
                    (m.id, m.instanceId, m.clientId, m.clientHost, m.protocols.first { $0.name == g.protocolName }?.metadata ?? [], m.assignment)
                })
        }
    }

    /// Drops an empty group's entry (DeleteGroups); a group with members is kept.
    func forget(groupId: String) {
        lock.withLock {
            if let g = groups[groupId], g.members.isEmpty { groups[groupId] = nil }
        }
    }

    func groupList() -> [(id: String, protocolType: String)] {
        lock.withLock { groups.values.map { ($0.id, $0.protocolType ?? "consumer") } }
    }
}
