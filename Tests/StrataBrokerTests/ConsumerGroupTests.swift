import Foundation
import Synchronization
import Testing
@testable import StrataBroker

/// KIP-848's coordinator driven by simulated members that do what a client does: send what they
/// own, adopt any assignment they are told (revoking what it leaves out).
@Suite struct ConsumerGroupTests {
    final class Clock: Sendable {
        let now = Atomic<Int64>(1_000_000)
        func advance(_ ms: Int64) { now.add(ms, ordering: .relaxed) }
    }

    struct SimMember {
        var id: String
        var epoch: Int32 = 0
        var owned: [String: Set<Int32>] = [:]
        var topics: [String]
    }

    static let lookup: ConsumerGroupCoordinator.TopicLookup = { name in
        switch name {
        case "a": return (6, [UInt8](repeating: 1, count: 16))
        case "b": return (3, [UInt8](repeating: 2, count: 16))
        default: return nil
        }
    }

    /// `reportOwned` false: the heartbeat says "unchanged" (no owned list), as clients do between changes.
    func beat(_ c: ConsumerGroupCoordinator, _ m: inout SimMember, assignor: String? = nil, reportOwned: Bool = true) throws {
        var hb = ConsumerGroupCoordinator.Heartbeat(groupId: "g", memberId: m.id, memberEpoch: m.epoch)
        if m.epoch == 0 { hb.subscribedTopics = m.topics }
        hb.serverAssignor = assignor
        hb.ownedPartitions = reportOwned || m.epoch == 0 ? m.owned : nil
        let r = try c.heartbeat(hb, topics: Self.lookup)
        m.epoch = r.memberEpoch
        if let a = r.assignment { m.owned = a.mapValues(Set.init) }
    }

    func disjoint(_ members: [SimMember]) -> Bool {
        var seen = Set<String>()
        for m in members { for (t, ps) in m.owned { for p in ps where !seen.insert("\(t)-\(p)").inserted { return false } } }
        return true
    }

    @Test(arguments: ["uniform", "range"], [true, false])
    func membersSplitAndNoPartitionIsEverOwnedTwice(assignor: String, alwaysReportOwned: Bool) throws {
        let clock = Clock()
        let c = ConsumerGroupCoordinator(heartbeatIntervalMs: 100, sessionTimeoutMs: 10_000, nowMs: { clock.now.load(ordering: .relaxed) })
        var members = (0..<3).map { SimMember(id: "m\($0)", topics: ["a", "b"]) }
        var rng = SystemRandomNumberGenerator()
        // Members join one by one, heartbeat in random order; owned sets stay disjoint throughout.
        for round in 0..<60 {
            let active = min(members.count, 1 + round / 10)
            for i in (0..<active).shuffled(using: &rng) {
                try beat(c, &members[i], assignor: assignor, reportOwned: alwaysReportOwned || Bool.random(using: &rng))
                #expect(disjoint(members))
            }
            clock.advance(100)
        }
        let counts = members.map { $0.owned.values.reduce(0) { $0 + $1.count } }
        #expect(counts.reduce(0, +) == 9)
        #expect(counts.max()! - counts.min()! <= (assignor == "uniform" ? 1 : 2))
        #expect(Set(members.map(\.epoch)).count == 1)
        #expect(c.describe("g")?.state == "Stable")
        // One leaves: the others take its partitions.
        var leaving = members.removeLast()
        leaving.epoch = -1
        try beat(c, &leaving)
        for _ in 0..<8 {
            for i in members.indices { try beat(c, &members[i], assignor: assignor, reportOwned: alwaysReportOwned || Bool.random(using: &rng)); #expect(disjoint(members)) }
        }
        for i in members.indices { try beat(c, &members[i], assignor: assignor) }
        for i in members.indices { try beat(c, &members[i], assignor: assignor) }
        #expect(members.map { $0.owned.values.reduce(0) { $0 + $1.count } }.reduce(0, +) == 9)
    }

    @Test func silentMembersExpireAndStaleEpochsAreFenced() throws {
        let clock = Clock()
        let c = ConsumerGroupCoordinator(heartbeatIntervalMs: 100, sessionTimeoutMs: 1000, nowMs: { clock.now.load(ordering: .relaxed) })
        var a = SimMember(id: "a", topics: ["a"])
        var b = SimMember(id: "b", topics: ["a"])
        for _ in 0..<4 { try beat(c, &a); try beat(c, &b) }
        #expect(a.owned["a"]?.count == 3 && b.owned["a"]?.count == 3)
        var stale = a
        stale.epoch = a.epoch + 5
        #expect(throws: ConsumerGroupError.fencedMemberEpoch) { try beat(c, &stale) }
        var unknown = SimMember(id: "nobody", epoch: 3, topics: ["a"])
        #expect(throws: ConsumerGroupError.unknownMemberId) { try beat(c, &unknown) }
        #expect(throws: ConsumerGroupError.unsupportedAssignor) { try beat(c, &a, assignor: "sticky-by-magic") }
        // b stops heartbeating: after the session timeout a gets everything.
        for _ in 0..<3 {
            clock.advance(600)
            try beat(c, &a)
            c.tick(topics: Self.lookup)
        }
        for _ in 0..<3 { try beat(c, &a) }
        #expect(a.owned["a"]?.count == 6)
        #expect(c.validateCommit(groupId: "g", memberId: "b", memberEpoch: b.epoch) == .some(.unknownMemberId))
        #expect(c.validateCommit(groupId: "g", memberId: "a", memberEpoch: a.epoch) == .some(nil))
        #expect(c.validateCommit(groupId: "other", memberId: "a", memberEpoch: 1) == nil)
    }
}
