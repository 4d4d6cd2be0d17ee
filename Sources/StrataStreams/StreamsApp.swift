#if canImport(Glibc)
import Glibc
#endif
import StrataBroker
import StrataCore
import StrataLog
import StrataMetadata
import Synchronization

public struct StreamsConfig: Sendable {
    /// How often each task commits (state to LMDB and the changelog, offsets), in ms.
    public var commitIntervalMs: Int64 = 1000
    /// Also commit after this many records of a task (0: only by time).
    public var commitEveryRecords = 0
    /// Bytes read from a source partition per chunk.
    public var maxReadBytes = 4 << 20
    /// 0 (default): an idle task sleeps until an append to one of its sources, a stop request,
    /// or (with uncommitted work) its next due commit — it never wakes up just to check. A value
    /// > 0 additionally bounds each idle wait (nothing needs it; kept for compatibility).
    public var idleWaitMs: Int64 = 0
    /// Where the application's LMDB state lives (default `<broker data>/streams/<applicationId>`).
    public var stateDirectory: String?
    /// LMDB address space reserved for the state.
    public var stateMapSize = 8 << 30
    /// Configs of changelog topics (they are always compacted).
    public var changelogTopicConfigs: [String: String] = ["cleanup.policy": "compact", "max.message.bytes": String(64 << 20)]
    /// `.atLeastOnce` (default) or `.exactlyOnce`: each task's outputs, changelog and input
    /// offsets are committed in one Kafka transaction (docs/streams.md, "Exactly once").
    public var processingGuarantee: ProcessingGuarantee = .atLeastOnce
    /// transaction.timeout.ms of exactly-once tasks: a task that stops without committing has its
    /// open transaction aborted after this (or at once when its next instance starts).
    public var transactionTimeoutMs: Int32 = 60_000
    public init() {}
}

/// Kafka Streams' processing.guarantee.
public enum ProcessingGuarantee: String, Sendable {
    case atLeastOnce = "at_least_once"
    case exactlyOnce = "exactly_once_v2"
}

/// Counters of one application instance.
public final class StreamsMetrics: Sendable {
    let processed = Atomic<Int>(0)
    let produced = Atomic<Int>(0)
    let lateDropped = Atomic<Int>(0)
    let invalidTimestamps = Atomic<Int>(0)
    let commits = Atomic<Int>(0)
    let restoredFromChangelog = Atomic<Int>(0)
    let changelogRepairs = Atomic<Int>(0)
    let duplicatesDropped = Atomic<Int>(0)
    let timestampOutOfRange = Atomic<Int>(0)
    let keyTooLong = Atomic<Int>(0)
    let failedTasks = Atomic<Int>(0)
    let staleStateDetected = Atomic<Int>(0)

    public struct Snapshot: Sendable, Equatable {
        /// Input records pushed through the topology.
        public var processed: Int
        /// Records written to sink and repartition topics (not changelogs).
        public var produced: Int
        /// Records dropped by windowed aggregations because their windows had closed.
        public var lateDropped: Int
        /// Records whose event-time JSON field was missing or unreadable (record timestamp used).
        public var invalidTimestamps: Int
        public var commits: Int
        /// Tasks whose state was rebuilt from their changelog (no LMDB state).
        public var restoredFromChangelog: Int
        /// Changelog tails rewritten after an interrupted commit.
        public var changelogRepairs: Int
        /// Records of read-back topics dropped because an upstream task re-emitted them after a crash.
        /// (Also what happens when an upstream input topic is recreated and its offsets restart:
        /// a count growing without crashes means that — use a new applicationId then.)
        public var duplicatesDropped: Int
        /// Records skipped by windowed aggregations because their event time is negative (Kafka's
        /// -1 = no timestamp) or too large for the window arithmetic (`t + size + grace` overflows).
        public var timestampOutOfRange: Int
        /// Records skipped by aggregations and tables because their key is longer than a state
        /// store accepts (400 bytes: LMDB's key limit).
        public var keyTooLong: Int
        /// Task starts whose LMDB state was older than their changelog's last checkpoint (and was
        /// therefore rebuilt from the changelog; also counted in `restoredFromChangelog`).
        public var staleStateDetected: Int
        /// Tasks that stopped on an error (see `StreamsApp.errors`); they stay stopped until the
        /// application is restarted.
        public var failedTasks: Int
    }

    func add(_ c: TaskCounters) {
        if c.processed > 0 { processed.add(c.processed, ordering: .relaxed) }
        if c.produced > 0 { produced.add(c.produced, ordering: .relaxed) }
        if c.lateDropped > 0 { lateDropped.add(c.lateDropped, ordering: .relaxed) }
        if c.invalidTimestamps > 0 { invalidTimestamps.add(c.invalidTimestamps, ordering: .relaxed) }
        if c.duplicatesDropped > 0 { duplicatesDropped.add(c.duplicatesDropped, ordering: .relaxed) }
        if c.timestampOutOfRange > 0 { timestampOutOfRange.add(c.timestampOutOfRange, ordering: .relaxed) }
        if c.keyTooLong > 0 { keyTooLong.add(c.keyTooLong, ordering: .relaxed) }
    }

    public var snapshot: Snapshot {
        Snapshot(processed: processed.load(ordering: .relaxed), produced: produced.load(ordering: .relaxed),
                 lateDropped: lateDropped.load(ordering: .relaxed), invalidTimestamps: invalidTimestamps.load(ordering: .relaxed),
                 commits: commits.load(ordering: .relaxed), restoredFromChangelog: restoredFromChangelog.load(ordering: .relaxed),
                 changelogRepairs: changelogRepairs.load(ordering: .relaxed), duplicatesDropped: duplicatesDropped.load(ordering: .relaxed),
                 timestampOutOfRange: timestampOutOfRange.load(ordering: .relaxed), keyTooLong: keyTooLong.load(ordering: .relaxed),
                 staleStateDetected: staleStateDetected.load(ordering: .relaxed), failedTasks: failedTasks.load(ordering: .relaxed))
    }
}

/// What the tasks of one instance share.
final class AppRuntime: Sendable {
    static let stateDB = "state"
    static let tasksDB = "tasks"
    static let changelogRequestBytes = 16 << 20

    let applicationId: String
    let topology: Topology
    let broker: Broker
    let config: StreamsConfig
    let environment: MetadataEnvironment
    let metrics: StreamsMetrics
    let errors: ErrorLog
    /// Notified when a task publishes progress or fails (the group's signal: `waitUntilCaughtUp`).
    let progress: ProgressSignal
    /// Topics the topology both writes and reads (repartition and intermediate topics), resolved.
    let readBackTopics: Set<String>

    init(applicationId: String, topology: Topology, broker: Broker, config: StreamsConfig, environment: MetadataEnvironment, metrics: StreamsMetrics,
         errors: ErrorLog, progress: ProgressSignal) {
        self.errors = errors
        self.progress = progress
        self.applicationId = applicationId
        self.topology = topology
        self.broker = broker
        self.config = config
        self.environment = environment
        self.metrics = metrics
        let sources = Set(topology.subtopologies.flatMap(\.sourceTopics))
        let sinks = Set(topology.subtopologies.flatMap(\.sinkTopics))
        readBackTopics = Set(sources.intersection(sinks).map { Topology.resolve($0, applicationId: applicationId) })
    }

    func report(_ error: String) {
        errors.entries.withLock { $0.append(error) }
        progress.notify()
    }
}

/// Wakes those waiting for tasks' progress (`waitUntilCaughtUp`) instead of them polling: a
/// generation counter bumped by every `notify`, and the continuations of the waiters.
final class ProgressSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var nextId = 0
        /// Waits whose timer has not fired and that have not parked yet.
        var pending: Set<Int> = []
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }
    private let state = Mutex(State())

    var generation: UInt64 { state.withLock { $0.generation } }

    /// Marks that progress is about to be published, before it is: a `waitUntilCaughtUp` whose
    /// status check saw the new state then also sees a new generation, and looks again.
    func bump() {
        state.withLock { $0.generation &+= 1 }
    }

    func notify() {
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.generation &+= 1
            guard !s.waiters.isEmpty else { return [] }
            defer { s.waiters.removeAll() }
            return Array(s.waiters.values)
        }
        for c in woken { c.resume() }
    }

    /// Returns once the generation differs from `seen`, or after `timeoutMs`.
    func wait(after seen: UInt64, timeoutMs: Int64) async {
        let id = state.withLock { s -> Int in
            s.nextId += 1
            s.pending.insert(s.nextId)
            return s.nextId
        }
        let timer = Task {
            guard (try? await Task.sleep(nanoseconds: UInt64(max(1, min(timeoutMs, 1 << 30))) * 1_000_000)) != nil else { return }
            self.expire(id)
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                // Not pending any more: the timer fired before we parked.
                guard s.pending.remove(id) != nil, s.generation == seen else { return true }
                s.waiters[id] = c
                return false
            }
            if now { c.resume() }
        }
        timer.cancel()
    }

    private func expire(_ id: Int) {
        state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.pending.remove(id) != nil { return nil }  // not parked yet: it will see it is not pending
            return s.waiters.removeValue(forKey: id)
        }?.resume()
    }
}

/// Errors that stopped tasks of an instance, kept across stop and restart.
final class ErrorLog: Sendable {
    let entries = Mutex<[String]>([])
}

/// LMDB allows one open environment per file per process: instances of one application in a
/// process share it, counted, and the last one out closes it.
enum StateEnvironments {
    private static let open = Mutex<[String: (env: MetadataEnvironment, refs: Int)]>([:])

    static func acquire(path: String, mapSize: Int) throws -> MetadataEnvironment {
        try open.withLock { all in
            if let e = all[path] {
                all[path] = (e.env, e.refs + 1)
                return e.env
            }
            // Relative paths stay relative (a leading "/" only when the path has one).
            var dir = path.hasPrefix("/") ? "" : "."
            for part in path.split(separator: "/", omittingEmptySubsequences: true) {
                dir += "/" + part
                mkdir(dir, 0o700)
            }
            let env = try MetadataEnvironment(path: path, mapSize: mapSize, databases: [AppRuntime.stateDB, AppRuntime.tasksDB])
            all[path] = (env, 1)
            return env
        }
    }

    static func release(path: String) {
        open.withLock { all in
            guard let e = all[path] else { return }
            all[path] = e.refs <= 1 ? nil : (e.env, e.refs - 1)
        }
    }
}

/// One instance of a stream processing application (Kafka's `KafkaStreams`). Instances of the
/// same `applicationId` on the same broker form a group and split the tasks (partitions) between
/// them; when one stops or crashes the others take its tasks over from their last commit.
///
/// ```swift
/// let app = StreamsApp(applicationId: "dashboard", topology: topology, broker: broker)
/// try await app.start()
/// ...
/// try await app.stop()   // commits and leaves the group
/// ```
public final class StreamsApp: @unchecked Sendable {
    public let applicationId: String
    public let topology: Topology
    public let broker: Broker
    public let config: StreamsConfig
    public let metrics = StreamsMetrics()
    private let errorLog = ErrorLog()
    let memberId: Int
    private static let nextMember = Atomic<Int>(1)

    private struct State {
        /// Set from the beginning of `start()` (before its awaits), so two concurrent starts cannot both proceed.
        var starting = false
        var runtime: AppRuntime?
        var group: StreamsGroup?
        var tasks: [TaskId: StreamTask] = [:]
        var allTasks: [TaskId] = []
    }
    private let state = Mutex(State())
    private var statePath: String { config.stateDirectory ?? "\(broker.dataDirectory)/streams/\(applicationId)" }

    public init(applicationId: String, topology: Topology, broker: Broker, config: StreamsConfig = StreamsConfig()) {
        precondition(Topology.isValidName(applicationId), "applicationId must match [A-Za-z0-9._-]+")
        self.applicationId = applicationId
        self.topology = topology
        self.broker = broker
        self.config = config
        memberId = Self.nextMember.add(1, ordering: .relaxed).oldValue
    }

    /// Creates the internal topics, opens the state, joins the group and starts the assigned tasks.
    public func start() async throws {
        let claimed = state.withLock { s -> Bool in
            guard !s.starting && s.runtime == nil else { return false }
            s.starting = true
            return true
        }
        guard claimed else { throw StreamsError.alreadyStarted }
        defer { state.withLock { $0.starting = false } }
        let tasks = try prepareTopics()
        let env = try StateEnvironments.acquire(path: statePath, mapSize: config.stateMapSize)
        let group = StreamsGroup.group(for: broker, applicationId: applicationId)
        let runtime = AppRuntime(applicationId: applicationId, topology: topology, broker: broker, config: config, environment: env, metrics: metrics,
                                 errors: errorLog, progress: group.progress)
        state.withLock {
            $0.runtime = runtime
            $0.group = group
            $0.allTasks = tasks
        }
        await group.join(self)
    }

    /// Commits every task, leaves the group (the other instances take the tasks over) and closes
    /// the state.
    public func stop() async {
        await leave(graceful: true)
    }

    /// Stops as a crash would: tasks end without committing, so whoever runs them next restarts
    /// from the last commit and re-processes (and re-emits) what came after it.
    public func abort() async {
        await leave(graceful: false)
    }

    private func leave(graceful: Bool) async {
        // Taken and cleared in one step: of two concurrent stops, one leaves and releases.
        guard let group = state.withLock({ s -> StreamsGroup? in
            defer { s.group = nil }
            return s.group
        }) else { return }
        await group.leave(self, graceful: graceful)
        state.withLock { $0.runtime = nil }
        StateEnvironments.release(path: statePath)
    }

    /// The open state environment while the instance runs (interactive queries read it).
    var stateEnvironment: MetadataEnvironment? { state.withLock { $0.runtime?.environment } }

    /// Tasks this instance runs now.
    public var assignedTasks: [TaskId] { state.withLock { $0.tasks.keys.sorted() } }

    /// Every task of the application (subtopology × partition).
    public var allTasks: [TaskId] { state.withLock { $0.allTasks } }

    /// Errors that stopped tasks (empty when all is well), including those of earlier runs of this instance.
    public var errors: [String] { errorLog.entries.withLock { $0 } }

    /// Waits until every task of the group is assigned and has processed its sources to their
    /// current ends (output produced), or until the deadline; false at once when a task of the
    /// group failed (see `errors`). Woken by the tasks' progress, it does not poll. A task
    /// publishes its positions only after producing the chunk's output, so one snapshot in which
    /// every task is at its sources' ends means nothing is in flight. For tests and demos over
    /// finite input.
    public func waitUntilCaughtUp(timeoutMs: Int64 = 30_000) async -> Bool {
        guard let group = state.withLock({ $0.group }) else { return false }
        let now = monotonicMillis()
        let deadline = timeoutMs >= Int64.max - now ? Int64.max : now + timeoutMs
        while true {
            let seen = group.progress.generation
            switch group.status() {
            case .caughtUp:
                // Tasks are checked one after another: a task that published (bumping the
                // generation first) while others were checked may have fed one checked earlier.
                if group.progress.generation == seen { return true }
                continue
            case .failed: return false
            case .busy: break
            }
            let now = monotonicMillis()
            if now >= deadline || Task.isCancelled { return false }
            await group.progress.wait(after: seen, timeoutMs: deadline - now)
        }
    }

    // MARK: Group callbacks

    func revoke(_ ids: Set<TaskId>, graceful: Bool) async {
        let tasks = state.withLock { s in ids.compactMap { s.tasks.removeValue(forKey: $0) } }
        for t in tasks { t.requestStop(graceful: graceful) }
        for t in tasks { await t.join() }
    }

    func assign(_ ids: Set<TaskId>) -> [StreamTask] {
        state.withLock { s in
            guard let runtime = s.runtime else { return [] }
            var started: [StreamTask] = []
            for id in ids.sorted() where s.tasks[id] == nil {
                let t = StreamTask(id: id, sub: topology.subtopologies[id.subtopology], app: runtime)
                s.tasks[id] = t
                t.start()
                started.append(t)
            }
            return started
        }
    }

    var runningTasks: [StreamTask] { state.withLock { Array($0.tasks.values) } }

    // MARK: Topics

    /// Checks sources, creates missing internal and intermediate topics, and lists the tasks.
    func prepareTopics() throws -> [TaskId] {
        let subs = topology.subtopologies
        func resolve(_ t: String) -> String { Topology.resolve(t, applicationId: applicationId) }
        var counts: [Int: Int32] = [:]
        var changed = true
        while changed {
            changed = false
            for s in subs where counts[s.id] == nil {
                let known = s.sourceTopics.compactMap { broker.partitionCount(resolve($0)) }
                if let first = known.first {
                    if known.contains(where: { $0 != first }) {
                        throw StreamsError.notCoPartitioned("subtopology \(s.id) reads \(s.sourceTopics.map(resolve)) with partition counts \(known)")
                    }
                    counts[s.id] = first
                    changed = true
                }
            }
            // Topics this application writes and also reads (repartition and intermediate
            // topics): created with the partition count of the subtopology writing them.
            for s in subs {
                for t in s.sourceTopics where broker.partitionCount(resolve(t)) == nil {
                    guard let writer = subs.first(where: { $0.sinkTopics.contains(t) }), let n = counts[writer.id] else { continue }
                    do { try broker.createTopic(resolve(t), partitions: n) } catch BrokerError.topicExists(_) {}
                    changed = true
                }
            }
        }
        var tasks: [TaskId] = []
        for s in subs {
            guard let n = counts[s.id] else {
                let missing = s.sourceTopics.map(resolve).first { broker.partitionCount($0) == nil } ?? "?"
                throw StreamsError.missingSourceTopic(missing)
            }
            if !s.stores.isEmpty {
                let changelog = resolve(Topology.changelogSuffix(s.stores))
                if let existing = broker.partitionCount(changelog) {
                    if existing != n { throw StreamsError.notCoPartitioned("changelog \(changelog) has \(existing) partitions, sources have \(n)") }
                } else {
                    do { try broker.createTopic(changelog, partitions: n, configs: config.changelogTopicConfigs) } catch BrokerError.topicExists(_) {}
                }
            }
            for p in 0..<n { tasks.append(TaskId(subtopology: s.id, partition: p)) }
        }
        return tasks.sorted()
    }

    /// Names of the internal topics (repartition and changelog) for `applicationId`.
    public static func internalTopics(of topology: Topology, applicationId: String) -> [String] {
        var out: Set<String> = []
        for s in topology.subtopologies {
            for t in s.sourceTopics + s.sinkTopics where t.hasPrefix("$") { out.insert(Topology.resolve(t, applicationId: applicationId)) }
            if !s.stores.isEmpty { out.insert(Topology.resolve(Topology.changelogSuffix(s.stores), applicationId: applicationId)) }
        }
        return out.sorted()
    }
}

/// In-process group membership of the instances of one application on one broker: tasks are
/// assigned by partition (partition p of every subtopology to member p mod n, members in join
/// order), and every rebalance first stops (with a commit) the tasks that move, then starts them
/// on their new owner, so a task never runs twice at once. Rebalances are serialized.
actor StreamsGroup {
    private static let registry = Mutex<[String: (broker: WeakBroker, group: StreamsGroup)]>([:])

    struct WeakBroker: @unchecked Sendable { weak var broker: Broker? }

    static func group(for broker: Broker, applicationId: String) -> StreamsGroup {
        let key = "\(broker.dataDirectory)\u{0}\(applicationId)"
        return registry.withLock { all in
            if let e = all[key], e.broker.broker === broker { return e.group }
            let g = StreamsGroup()
            all[key] = (WeakBroker(broker: broker), g)
            return g
        }
    }

    private var members: [StreamsApp] = []
    private var assignment: [Int: Set<TaskId>] = [:]
    private var tail: Task<Void, Never>?
    /// Running tasks of every member, readable without entering the actor.
    private nonisolated let running = Mutex<(total: Int, tasks: [TaskId: StreamTask])>((0, [:]))
    /// Notified on task progress, task failures and rebalances.
    nonisolated let progress = ProgressSignal()

    private func serially(_ op: @escaping @Sendable () async -> Void) async {
        let previous = tail
        let t = Task {
            await previous?.value
            await op()
        }
        tail = t
        await t.value
    }

    func join(_ member: StreamsApp) async {
        await serially { await self.doJoin(member) }
    }

    func leave(_ member: StreamsApp, graceful: Bool) async {
        await serially { await self.doLeave(member, graceful: graceful) }
    }

    private func doJoin(_ member: StreamsApp) async {
        members.append(member)
        members.sort { $0.memberId < $1.memberId }
        await rebalance()
    }

    private func doLeave(_ member: StreamsApp, graceful: Bool) async {
        guard members.contains(where: { $0 === member }) else { return }
        let owned = assignment[member.memberId] ?? []
        await member.revoke(owned, graceful: graceful)
        assignment[member.memberId] = nil
        members.removeAll { $0 === member }
        running.withLock { r in for id in owned { r.tasks[id] = nil } }
        await rebalance()
    }

    private func rebalance() async {
        guard let first = members.first else {
            running.withLock { $0 = (0, [:]) }
            return
        }
        let all = first.allTasks
        var target: [Int: Set<TaskId>] = [:]
        for m in members { target[m.memberId] = [] }
        for t in all { target[members[Int(t.partition) % members.count].memberId]!.insert(t) }
        // Stop what moves (committing), then start it on its new owner.
        for m in members {
            let revoked = (assignment[m.memberId] ?? []).subtracting(target[m.memberId]!)
            if !revoked.isEmpty {
                await m.revoke(revoked, graceful: true)
                running.withLock { r in for id in revoked { r.tasks[id] = nil } }
            }
        }
        for m in members {
            let added = target[m.memberId]!.subtracting(assignment[m.memberId] ?? [])
            let started = m.assign(added)
            running.withLock { r in for t in started { r.tasks[t.id] = t } }
        }
        assignment = target
        running.withLock { $0.total = all.count }
        progress.notify()
    }

    enum Status { case caughtUp, busy, failed }

    /// `.failed` when a running task failed; `.caughtUp` when all tasks run and are caught up.
    nonisolated func status() -> Status {
        running.withLock { r -> Status in
            if r.tasks.values.contains(where: { $0.failed.load(ordering: .acquiring) }) { return .failed }
            guard r.total > 0, r.tasks.count == r.total else { return .busy }
            return r.tasks.values.allSatisfy(\.caughtUp) ? .caughtUp : .busy
        }
    }
}
