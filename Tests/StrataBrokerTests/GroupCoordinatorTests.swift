import Synchronization
import Testing
@testable import StrataBroker

/// The broker's group coordinator driven by an injected clock and explicit ticks: Kafka's
/// ClassicGroup rules for joins, commits during rebalances, session expiry.
@Suite struct GroupCoordinatorTests {
    final class Clock: Sendable {
        let now = Atomic<Int64>(1_000)
        func advance(_ ms: Int64) { now.add(ms, ordering: .relaxed) }
    }

    final class Box<T: Sendable>: Sendable {
        let value = Mutex<T?>(nil)
        func set(_ v: T) { value.withLock { $0 = v } }
        var get: T? { value.withLock { $0 } }
    }

    static let protocols: [(name: String, metadata: [UInt8])] = [("range", [0, 1])]

    func join(_ c: GroupCoordinator, _ member: String, into box: Box<GroupCoordinator.JoinResult>) {
        c.join(groupId: "g", memberId: member, instanceId: nil, clientId: "t", clientHost: "h", sessionTimeoutMs: 6000,
               rebalanceTimeoutMs: 10_000, protocolType: "consumer", protocols: Self.protocols, requiresKnownMemberId: false,
               completion: { box.set($0) })
    }

    @Test func commitsAreAcceptedWhileARebalanceIsPreparedAndSessionsExpireOnTheInjectedClock() {
        let clock = Clock()
        let c = GroupCoordinator(nowMs: { clock.now.load(ordering: .relaxed) })
        let a = Box<GroupCoordinator.JoinResult>()
        join(c, "", into: a)
        guard let first = a.get else { Issue.record("a single member's join completes at once"); return }
        #expect(first.error == .none && first.generation == 1)
        let aId = first.memberId
        let synced = Box<GroupError>()
        c.sync(groupId: "g", generation: 1, memberId: aId, assignments: [(aId, [9])], completion: { e, _ in synced.set(e) })
        #expect(synced.get == GroupError.none)
        // A second member joins: the group prepares a rebalance; A's commit of generation 1 is
        // still accepted (Kafka's rule: the generation has not moved yet).
        let b = Box<GroupCoordinator.JoinResult>()
        join(c, "", into: b)
        #expect(b.get == nil, "B waits for A to rejoin")
        #expect(c.validateCommit(groupId: "g", generation: 1, memberId: aId) == GroupError.none)
        #expect(c.heartbeat(groupId: "g", generation: 1, memberId: aId) == GroupError.rebalanceInProgress)
        // A rejoins: generation 2, CompletingRebalance: commits must wait for the assignment.
        let a2 = Box<GroupCoordinator.JoinResult>()
        join(c, aId, into: a2)
        #expect(a2.get?.generation == 2 && b.get?.generation == 2)
        #expect(c.validateCommit(groupId: "g", generation: 2, memberId: aId) == GroupError.rebalanceInProgress)
        #expect(c.validateCommit(groupId: "g", generation: 1, memberId: aId) == GroupError.illegalGeneration)
        // B stops heartbeating: past its session on the injected clock, a tick removes it.
        let bId = b.get!.memberId
        clock.advance(6_001)
        #expect(c.heartbeat(groupId: "g", generation: 2, memberId: aId) == GroupError.none)
        c.tick()
        #expect(c.describe("g")?.members.map(\.id).contains(bId) == false)
        #expect(c.heartbeat(groupId: "g", generation: 2, memberId: bId) == GroupError.unknownMemberId)
    }

    /// Kafka's InitialDelayedJoin: consumers started together share the first generation. The
    /// first join of an empty group waits `initialRebalanceDelayMs`; a member arriving in that
    /// window extends it by as much; the join completes on the tick after the window.
    @Test func anEmptyGroupsFirstJoinWaitsForMoreMembers() {
        let clock = Clock()
        let c = GroupCoordinator(initialRebalanceDelayMs: 3000, nowMs: { clock.now.load(ordering: .relaxed) })
        let a = Box<GroupCoordinator.JoinResult>()
        join(c, "", into: a)
        #expect(a.get == nil, "the first member waits for others")
        clock.advance(2000)
        c.tick()
        #expect(a.get == nil)
        let b = Box<GroupCoordinator.JoinResult>()
        join(c, "", into: b)  // window now ends at 2000 + 3000
        clock.advance(2000)
        c.tick()
        #expect(a.get == nil && b.get == nil, "B's arrival extended the window")
        clock.advance(1001)
        c.tick()
        #expect(a.get?.generation == 1 && b.get?.generation == 1, "both in the first generation")
        #expect(c.describe("g")?.members.count == 2)
        // Later rebalances of a non-empty group are not delayed: A rejoins, B rejoins, done.
        let a2 = Box<GroupCoordinator.JoinResult>()
        let b2 = Box<GroupCoordinator.JoinResult>()
        join(c, a.get!.memberId, into: a2)
        join(c, b.get!.memberId, into: b2)
        #expect(a2.get?.generation == 2 && b2.get?.generation == 2)
    }
}

