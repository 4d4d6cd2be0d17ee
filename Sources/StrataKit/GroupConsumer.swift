import StrataCore
import Synchronization

/// A consumer-group member embedded in a Swift program (`Strata.consumer(group:topics:)`).
///
/// Membership uses the broker's KIP-848 coordinator — the one Kafka clients reach with
/// `group.protocol=consumer` — so embedded members and Kafka clients can share one group: the
/// broker splits the partitions of the subscribed topics between the members, moves them when
/// members come and go (a partition is handed over only after its previous owner released it),
/// and each member resumes from the group's committed offsets.
///
/// Use it from one task at a time, as a Kafka consumer: `poll` (or iterate `records`), process,
/// `commit()`; `close()` commits and leaves. Heartbeats ride on `poll`: a member that does not
/// poll for the session timeout (45 s by default, `group.consumer.session.timeout.ms`) is
/// removed and its partitions move. Delivery is at least once: after a crash, what was
/// delivered after the last commit is delivered again (to whichever member owns it then).
public final class GroupConsumer: Sendable {
    public struct Options: Sendable {
        /// Where a partition without a committed offset starts (Kafka's `auto.offset.reset`;
        /// `.beginning` here, the useful default for an event log).
        public var startWithoutCommit: StartPosition = .beginning
        /// Commit the delivered positions at most this often from `poll` (Kafka's
        /// `enable.auto.commit` + `auto.commit.interval.ms`): a poll commits what earlier polls
        /// delivered. nil: only `commit()` (and `close()`, and partitions taken away) commit.
        public var autoCommitIntervalMs: Int64? = 5000
        /// At most this many records per `poll`.
        public var maxRecordsPerPoll = 500
        /// Read records of open and aborted transactions too (`read_uncommitted`).
        public var readUncommitted = false
        /// The broker's assignor: `uniform` (default) or `range`.
        public var assignor: String?
        public init() {}
    }

    public let group: String
    public let topics: [String]
    public let options: Options
    private let broker: Broker
    private let reader: PartitionReader

    private struct TopicPartition: Hashable, Comparable {
        var topic: String
        var partition: Int32
        static func < (a: Self, b: Self) -> Bool { (a.topic, a.partition) < (b.topic, b.partition) }
    }

    private struct State {
        var memberId = ""
        var epoch: Int32 = 0
        /// Owned partitions and the next offset to deliver from each.
        var positions: [TopicPartition: Int64] = [:]
        /// What was last committed (or found committed) per owned partition.
        var committed: [TopicPartition: Int64] = [:]
        var heartbeatIntervalMs: Int64 = 0
        var nextHeartbeatMs: Int64 = .min
        var lastAutoCommitMs = monotonicMillis()
        var turn = 0
        var closed = false
        /// Records read past a poll's limit, per partition: (their first offset, the records,
        /// the offset after the read), served by the next poll instead of decoding them again.
        var readAhead: [TopicPartition: (from: Int64, records: ArraySlice<ConsumedRecord>, next: Int64)] = [:]
    }
    private let state = Mutex(State())

    init(broker: Broker, group: String, topics: [String], options: Options) {
        self.broker = broker
        self.group = group
        self.topics = topics
        self.options = options
        reader = PartitionReader(broker: broker, committedOnly: !options.readUncommitted)
    }

    /// The member id the coordinator gave (empty until the first poll).
    public var memberId: String { state.withLock { $0.memberId } }

    /// The partitions this member owns now.
    public var assignment: [(topic: String, partition: Int32)] {
        state.withLock { $0.positions.keys.sorted().map { ($0.topic, $0.partition) } }
    }

    /// The next offset to deliver of each owned partition: what `commit()` commits, and what a
    /// consume-transform-produce loop passes to `TransactionalProducer.sendOffsets` to commit
    /// its input positions with its outputs (exactly once).
    public var positions: [(topic: String, partition: Int32, offset: Int64)] {
        state.withLock { $0.positions.sorted { $0.key < $1.key }.map { ($0.key.topic, $0.key.partition, $0.value) } }
    }

    /// Up to `maxRecordsPerPoll` records from the owned partitions, waiting up to `timeoutMs`
    /// for some (woken by appends). Heartbeats, takes and gives up partitions, and auto-commits
    /// as due. Returns an empty array on timeout or when the task is cancelled.
    public func poll(timeoutMs: Int64 = 1000) async throws -> [ConsumedRecord] {
        let deadline = monotonicMillis() &+ max(0, timeoutMs)
        while !Task.isCancelled {
            if state.withLock({ $0.closed }) { throw GroupConsumerError.closed }
            try heartbeatIfDue()
            try autoCommitIfDue()
            let (owned, turn) = state.withLock { s in (s.positions.sorted { $0.key < $1.key }, s.turn) }
            var out: [ConsumedRecord] = []
            var moved: [(TopicPartition, Int64, Int64)] = []
            for step in 0..<owned.count where out.count < options.maxRecordsPerPoll {
                let (tp, position) = owned[(turn + step) % owned.count]
                var records: ArraySlice<ConsumedRecord>
                var next: Int64
                if let ahead = state.withLock({ $0.readAhead.removeValue(forKey: tp) }), ahead.from == position {
                    (records, next) = (ahead.records, ahead.next)
                } else {
                    let read = try reader.read(tp.topic, tp.partition, from: position)
                    (records, next) = (read.records[...], read.next)
                }
                let room = options.maxRecordsPerPoll - out.count
                if records.count > room {
                    let rest = records.dropFirst(room)
                    let after = next
                    records = records.prefix(room)
                    next = rest.first!.offset
                    state.withLock { $0.readAhead[tp] = (next, rest, after) }
                }
                out += records
                if next != position { moved.append((tp, position, next)) }
            }
            state.withLock { s in
                s.turn = owned.isEmpty ? 0 : (turn + 1) % owned.count
                // A partition given up meanwhile (heartbeats run on this task, so only by close) stays given up.
                for (tp, from, next) in moved where s.positions[tp] == from { s.positions[tp] = next }
            }
            if !out.isEmpty { return out }
            let now = monotonicMillis()
            if now >= deadline { return [] }
            let nextHeartbeat = state.withLock { $0.nextHeartbeatMs }
            let wait = max(1, min(deadline - now, nextHeartbeat - now))
            if owned.isEmpty {
                try? await Task.sleep(nanoseconds: UInt64(min(wait, 100)) * 1_000_000)
            } else {
                await broker.waitForData(owned.map { ($0.key.topic, $0.key.partition, $0.value) }, timeoutMs: wait,
                                         committedOnly: !options.readUncommitted)
            }
        }
        return []
    }

    /// Commits the positions delivered so far (every record returned by `poll`) for the owned
    /// partitions — Kafka's `commitSync()`.
    public func commit() throws {
        let pending = state.withLock { s in s.positions.filter { s.committed[$0.key] != $0.value } }
        try commit(pending)
    }

    private func commit(_ offsets: [TopicPartition: Int64]) throws {
        guard !offsets.isEmpty else { return }
        // As Kafka's OffsetCommit: a member the group no longer has (its session expired while it
        // was not polling) or one of an older epoch is fenced. Its partitions belong to someone
        // else by now; committing its positions would move their offsets back.
        let (id, epoch) = state.withLock { ($0.memberId, $0.epoch) }
        if case .some(.some(let error)) = broker.consumerGroups.validateCommit(groupId: group, memberId: id, memberEpoch: epoch) {
            dropMembership()
            throw GroupConsumerError.commitFenced("\(error)")
        }
        try broker.commitOffsets(group: group, offsets: offsets.map { ($0.key.topic, $0.key.partition, $0.value) })
        state.withLock { s in for (tp, o) in offsets { s.committed[tp] = o } }
    }

    /// Commits and leaves the group: its partitions go to the other members at once.
    public func close() throws {
        guard !state.withLock({ $0.closed }) else { return }
        defer {
            let (id, epoch) = state.withLock { s -> (String, Int32) in
                s.closed = true
                s.positions = [:]
                return (s.memberId, s.epoch)
            }
            // Epoch -1 leaves: the coordinator hands the partitions to the others at once.
            if !id.isEmpty && epoch > 0 {
                _ = try? broker.consumerGroups.heartbeat(.init(groupId: group, memberId: id, memberEpoch: -1), topics: broker.topicLookup)
            }
        }
        try commit()
    }

    /// The records of the owned partitions as an `AsyncSequence` (polling underneath): ends when
    /// the task is cancelled or the consumer closed.
    public var records: Records { Records(consumer: self) }

    public struct Records: AsyncSequence, Sendable {
        public typealias Element = ConsumedRecord
        public typealias Failure = any Error
        let consumer: GroupConsumer
        public func makeAsyncIterator() -> Iterator { Iterator(consumer: consumer) }

        public struct Iterator: AsyncIteratorProtocol {
            let consumer: GroupConsumer
            var buffer: [ConsumedRecord] = []
            var index = 0
            public mutating func next() async throws -> ConsumedRecord? { try await next(isolation: nil) }

            /// On the caller's actor: buffered records come without an executor hop.
            public mutating func next(isolation actor: isolated (any Actor)?) async throws(any Error) -> ConsumedRecord? {
                while index >= buffer.count {
                    if Task.isCancelled || consumer.state.withLock({ $0.closed }) { return nil }
                    buffer = try await consumer.poll(timeoutMs: 1000)
                    index = 0
                }
                defer { index += 1 }
                return buffer[index]
            }
        }
    }

    // MARK: Membership

    private func heartbeatIfDue() throws {
        while true {
            let (due, hb) = state.withLock { s -> (Bool, ConsumerGroupCoordinator.Heartbeat) in
                var hb = ConsumerGroupCoordinator.Heartbeat(groupId: group, memberId: s.memberId, memberEpoch: s.epoch)
                if s.epoch == 0 {
                    hb.subscribedTopics = topics
                    hb.serverAssignor = options.assignor
                }
                var owned: [String: Set<Int32>] = [:]
                for tp in s.positions.keys { owned[tp.topic, default: []].insert(tp.partition) }
                hb.ownedPartitions = owned
                hb.clientId = "strata-embedded"
                return (monotonicMillis() >= s.nextHeartbeatMs, hb)
            }
            guard due else { return }
            let result: ConsumerGroupCoordinator.HeartbeatResult
            do {
                result = try broker.consumerGroups.heartbeat(hb, topics: broker.topicLookup)
            } catch {
                switch error {
                case .unknownMemberId, .fencedMemberEpoch:
                    // Removed (session timeout) or fenced: its partitions are someone else's now.
                    // Rejoin from nothing owned, without committing (the positions may be stale).
                    dropMembership()
                    continue
                default:
                    throw GroupConsumerError.refused("\(error)")
                }
            }
            let revoked = try apply(result)
            // Partitions given up are reported at once, so their new owner can start.
            if !revoked { return }
        }
    }

    /// Forgets the partitions and the epoch of a membership the group no longer has: the next
    /// poll rejoins at once, owning nothing.
    private func dropMembership() {
        state.withLock { s in
            s.epoch = 0
            s.positions = [:]
            s.committed = [:]
            s.readAhead = [:]
            s.nextHeartbeatMs = .min
        }
    }

    /// Applies a heartbeat's answer; returns whether partitions were given up.
    private func apply(_ result: ConsumerGroupCoordinator.HeartbeatResult) throws -> Bool {
        let (removed, added) = state.withLock { s -> ([TopicPartition: Int64], [TopicPartition]) in
            s.memberId = result.memberId
            s.epoch = result.memberEpoch
            s.heartbeatIntervalMs = Int64(result.heartbeatIntervalMs)
            s.nextHeartbeatMs = monotonicMillis() &+ max(1, s.heartbeatIntervalMs)
            guard let assignment = result.assignment else { return ([:], []) }
            var target: Set<TopicPartition> = []
            for (t, ps) in assignment { for p in ps { target.insert(TopicPartition(topic: t, partition: p)) } }
            let removed = s.positions.filter { !target.contains($0.key) }
            let added = target.filter { s.positions[$0] == nil }
            return (removed, Array(added))
        }
        if !removed.isEmpty {
            // Commit what was delivered before letting go (Kafka: auto-commit on revocation).
            let moved = state.withLock { s in removed.filter { s.committed[$0.key] != $0.value } }
            try commit(moved)
            state.withLock { s in for tp in removed.keys { s.positions[tp] = nil; s.committed[tp] = nil; s.readAhead[tp] = nil } }
        }
        for tp in added {
            let committed = try broker.committedOffset(group: group, topic: tp.topic, partition: tp.partition)
            let start = try committed ?? reader.offset(tp.topic, tp.partition, options.startWithoutCommit)
            state.withLock { s in
                s.positions[tp] = start
                if let committed { s.committed[tp] = committed }
            }
        }
        if !removed.isEmpty { state.withLock { $0.nextHeartbeatMs = .min } }
        return !removed.isEmpty
    }

    private func autoCommitIfDue() throws {
        guard let interval = options.autoCommitIntervalMs else { return }
        let due = state.withLock { s -> Bool in
            guard monotonicMillis() - s.lastAutoCommitMs >= interval else { return false }
            s.lastAutoCommitMs = monotonicMillis()
            return true
        }
        guard due else { return }
        do {
            try commit()
        } catch GroupConsumerError.commitFenced {
            // Expired while not polling: its partitions are dropped and this poll rejoins (an
            // explicit commit() reports this; an automatic one need not fail the poll).
        }
    }
}

public enum GroupConsumerError: Error, CustomStringConvertible, Sendable {
    case closed
    case refused(String)
    /// The member was no longer in the group (session expired) or had been fenced: nothing was
    /// committed, its partitions are dropped, and the next poll rejoins (Kafka's CommitFailedException).
    case commitFenced(String)
    public var description: String {
        switch self {
        case .closed: return "the consumer is closed"
        case .refused(let why): return "the group coordinator refused the member: \(why)"
        case .commitFenced(let why): return "the commit was refused (\(why)): the member had left the group; it rejoins on the next poll"
        }
    }
}
