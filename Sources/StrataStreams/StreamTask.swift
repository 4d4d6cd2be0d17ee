#if canImport(Glibc)
import Glibc
#endif
import StrataBroker
import StrataCore
import StrataLog
import StrataMetadata
import Synchronization

/// A unit of work: one partition of one subtopology's (co-partitioned) source topics.
public struct TaskId: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let subtopology: Int
    public let partition: Int32
    public init(subtopology: Int, partition: Int32) {
        self.subtopology = subtopology
        self.partition = partition
    }
    public var description: String { "\(subtopology)_\(partition)" }
    public static func < (a: TaskId, b: TaskId) -> Bool {
        (a.partition, a.subtopology) < (b.partition, b.subtopology)
    }
}

/// Input positions and commit sequence as checkpointed (in LMDB and in the changelog).
struct Checkpoint {
    var sequence: Int64
    var offsets: [(topic: String, partition: Int32, offset: Int64)]
    /// For topics this application writes and reads back: the last (input offset, sequence) seen
    /// per upstream input partition, to drop what an upstream task re-emits after a crash.
    var origins: [String: Origin] = [:]

    func encode() -> [UInt8] {
        var out: [UInt8] = []
        BE.append(sequence, to: &out)
        BE.append(UInt32(offsets.count), to: &out)
        for o in offsets {
            let t = Array(o.topic.utf8)
            BE.append(UInt32(t.count), to: &out)
            out += t
            BE.append(UInt32(bitPattern: o.partition), to: &out)
            BE.append(o.offset, to: &out)
        }
        BE.append(UInt32(origins.count), to: &out)
        for (k, o) in origins.sorted(by: { $0.key < $1.key }) {
            let t = Array(k.utf8)
            BE.append(UInt32(t.count), to: &out)
            out += t
            BE.append(o.offset, to: &out)
            BE.append(o.sequence, to: &out)
        }
        return out
    }

    static func decode(_ b: [UInt8]) -> Checkpoint? {
        guard b.count >= 12 else { return nil }
        var c = Checkpoint(sequence: BE.int64(b, at: 0), offsets: [])
        var i = 8
        // Both lists are a count, then entries of a length-prefixed name and 12 fixed bytes.
        func entries(_ body: (String, Int) -> Void) -> Bool {
            let n = Int(BE.uint32(b, at: i))
            i += 4
            for _ in 0..<n {
                guard i + 4 <= b.count else { return false }
                let len = Int(BE.uint32(b, at: i))
                i += 4
                guard i + len + 12 <= b.count else { return false }
                let name = String(decoding: b[i..<(i + len)], as: UTF8.self)
                body(name, i + len)
                i += len + 12
            }
            return true
        }
        guard entries({ topic, at in c.offsets.append((topic, Int32(bitPattern: BE.uint32(b, at: at)), BE.int64(b, at: at + 4))) }) else {
            return nil
        }
        guard i + 4 <= b.count else { return c }
        guard entries({ key, at in c.origins[key] = Origin(offset: BE.int64(b, at: at), sequence: BE.uint32(b, at: at + 8)) }) else {
            return nil
        }
        return c
    }

    func offset(_ topic: String, _ partition: Int32) -> Int64? {
        offsets.first { $0.topic == topic && $0.partition == partition }?.offset
    }
}

/// The task record kept in LMDB next to the task's state, written in the same transaction.
struct TaskRecord {
    var checkpoint: Checkpoint
    /// Changelog offset just after this commit's checkpoint record (0 for stateless tasks).
    var changelogEnd: Int64

    func encode() -> [UInt8] {
        var out: [UInt8] = []
        BE.append(changelogEnd, to: &out)
        return out + checkpoint.encode()
    }

    static func decode(_ b: [UInt8]) -> TaskRecord? {
        guard b.count >= 8, let c = Checkpoint.decode(Array(b[8...])) else { return nil }
        return TaskRecord(checkpoint: c, changelogEnd: BE.int64(b, at: 0))
    }
}

/// Runs one task: reads its source partitions in chunks (waiting on the broker's append
/// notifications when caught up), pushes records through its processors, produces their output
/// in batches, and commits state and input offsets together.
final class StreamTask: @unchecked Sendable {
    struct Position {
        let topic: String
        let log: PartitionLog
        var next: Int64
        let node: ProcessorNode
        /// The topology also writes this topic: its records carry their origin, for deduplication.
        let dedup: Bool
    }

    /// A record read from a source of a multi-source task, waiting for the event-time merge; its
    /// origin (read-back topics) is checked against `origins` only when it is processed, so that
    /// checkpoints never count buffered records as seen.
    struct Buffered {
        var record: StreamRecord
        var origin: (key: String, origin: Origin)?
    }

    enum StopMode: Int { case running = 0, graceful = 1, abort = 2 }

    static let checkpointKey: [UInt8] = [0xFF] + Array("checkpoint".utf8)

    let id: TaskId
    let sub: Subtopology
    let app: AppRuntime
    private let stopMode = Atomic<Int>(0)
    /// The running Swift task (set by `start`, cancelled by `requestStop` to end an idle wait).
    private let handle = Mutex<Task<Void, Never>?>(nil)
    /// Set when the task stopped on an error (it stays stopped until the application restarts).
    let failed = Atomic<Bool>(false)
    /// An exactly-once task with processed work not yet committed: not caught up (what it
    /// produced is not visible downstream yet).
    private let outputsInvisible = Atomic<Bool>(false)
    /// (log, next offset) per source after the last processed chunk, for `caughtUp`.
    private let progress = Mutex<[(topic: String, log: PartitionLog, next: Int64)]>([])
    private let started = Atomic<Bool>(false)

    // Owned by the running task only.
    private var positions: [Position] = []
    private var context: TaskContext!
    private var stores: [AnyStateStore] = []
    private var sequence: Int64 = 0
    private var changelogEnd: Int64 = 0
    /// Exactly-once tasks' transactional producer (id `<applicationId>-<task>`), made in `setup`.
    private var transaction: TransactionalProducer?
    private var changelogTopic: String?
    private var origins: [String: Origin] = [:]
    private var uncommitted = false
    private var recordsSinceCommit = 0
    private var duplicates = 0
    /// Multi-source tasks: records read but not processed yet, per source, and the next one's index.
    private var buffers: [[Buffered]] = []
    private var heads: [Int] = []

    init(id: TaskId, sub: Subtopology, app: AppRuntime) {
        self.id = id
        self.sub = sub
        self.app = app
    }

    var taskKey: [UInt8] { Array(id.description.utf8) }

    func start() {
        handle.withLock { h in
            guard h == nil else { return }
            h = Task { await self.run() }
        }
    }

    /// Asks the task to stop; `graceful` commits first, otherwise it stops as if it crashed (no
    /// commit: what was processed since the last commit is processed again by the next owner).
    /// The Swift task is cancelled, which ends an idle wait at once (the task does not wake up
    /// periodically to look for stop requests). Its commit does not await, so cancellation does
    /// not interrupt it.
    func requestStop(graceful: Bool) {
        _ = stopMode.compareExchange(expected: StopMode.running.rawValue, desired: (graceful ? StopMode.graceful : .abort).rawValue,
                                     ordering: .sequentiallyConsistent)
        handle.withLock { $0 }?.cancel()
    }

    func join() async { await handle.withLock { $0 }?.value }

    /// True when every source has been processed to its current log end (and the outputs produced).
    /// A source deleted (or recreated) since the task started is not caught up: the task is about
    /// to fail on it (`checkSourcesExist`).
    var caughtUp: Bool {
        guard started.load(ordering: .acquiring) else { return false }
        let snapshot = progress.withLock { $0 }
        let broker = app.broker
        let partition = id.partition
        return !outputsInvisible.load(ordering: .acquiring) && snapshot.allSatisfy { topic, log, next in
            next >= log.lastStableOffset && (try? broker.log(topic: topic, partition: partition)) === log
        }
    }

    private var stopping: StopMode { StopMode(rawValue: stopMode.load(ordering: .relaxed)) ?? .running }

    // MARK: Running

    private func run() async {
        do {
            try setup()
            started.store(true, ordering: .releasing)
            var lastCommit = monotonicMillis()
            // Exactly once: a transaction must end well before its timeout, or the coordinator
            // aborts it and fences this task (Kafka Streams keeps commit.interval.ms below
            // transaction.timeout.ms for the same reason).
            let commitIntervalMs = transaction == nil ? app.config.commitIntervalMs
                : min(app.config.commitIntervalMs, Int64(app.config.transactionTimeoutMs) / 2)
            while stopping == .running {
                let progressed = try processChunk()
                let now = monotonicMillis()
                let dueByTime = now - lastCommit >= commitIntervalMs
                let dueByCount = app.config.commitEveryRecords > 0 && recordsSinceCommit >= app.config.commitEveryRecords
                if uncommitted && (dueByTime || dueByCount) {
                    try commit()
                    lastCommit = now
                }
                if !progressed && uncommitted && transaction != nil {
                    // Exactly once: what an idle task produced is invisible until it commits, and
                    // the tasks reading it wait for that; an idle task commits at once.
                    try commit()
                    lastCommit = now
                    continue
                }
                if !progressed {
                    try checkSourcesExist()
                    // Sleep until an append to a source, a stop request (cancellation), or the next
                    // due commit; with nothing to commit, no timer at all (unless idleWaitMs bounds it).
                    var timeout: Int64? = app.config.idleWaitMs > 0 ? app.config.idleWaitMs : nil
                    if uncommitted {
                        let due = max(1, commitIntervalMs - (monotonicMillis() - lastCommit))
                        timeout = min(timeout ?? due, due)
                    }
                    if let punctuation = context.nextPunctuationDueMs {
                        let due = max(1, punctuation - monotonicMillis())
                        timeout = min(timeout ?? due, due)
                    }
                    await app.broker.waitForData(positions.map { ($0.topic, id.partition, $0.next) }, timeoutMs: timeout, committedOnly: true)
                } else {
                    await Task.yield()
                }
            }
            if stopping == .graceful && uncommitted { try commit() }
        } catch {
            // The task stays stopped (its partitions are not processed) until the application is
            // restarted: visible in `errors`, `metrics.failedTasks` and `waitUntilCaughtUp`.
            failed.store(true, ordering: .releasing)
            app.metrics.failedTasks.add(1, ordering: .relaxed)
            app.report("task \(id): \(error)")
        }
    }

    /// A deleted (or deleted and recreated) source topic makes `waitForData` return at once: fail
    /// the task with a clear error instead of spinning.
    private func checkSourcesExist() throws {
        for pos in positions {
            guard let current = try? app.broker.log(topic: pos.topic, partition: id.partition), current === pos.log else {
                throw StreamsError.sourceTopicGone(pos.topic)
            }
        }
    }

    /// The offset of the next record of source `i` to process: past the buffered records not
    /// processed yet (what checkpoints and progress report).
    private func processedOffset(_ i: Int) -> Int64 {
        i < buffers.count && heads[i] < buffers[i].count ? buffers[i][heads[i]].record.offset : positions[i].next
    }

    private func publishProgress() {
        let snapshot = positions.indices.map { (positions[$0].topic, positions[$0].log, processedOffset($0)) }
        // Exactly once: outputs are invisible until the transaction commits. Windows closing on
        // the wall clock (`onWindowCloseOrIdle`) are output still to come without new input.
        outputsInvisible.store((transaction != nil && uncommitted) || context.outputPendingWithoutInput, ordering: .releasing)
        app.progress.bump()
        progress.withLock { $0 = snapshot }
        app.progress.notify()
    }


    /// Reads what is available (up to maxReadBytes per source), processes it and produces the
    /// output. Returns whether any source position moved.
    private func processChunk() throws -> Bool {
        var count = 0
        let before = positions.map(\.next)
        let context = self.context!
        let output = context.output
        let broker = app.broker
        if positions.count == 1 {
            let node = positions[0].node
            count = try readSource(0, deferDedup: false) { r, _ in
                context.beginInput(topicIndex: 0, offset: r.offset)
                node.process(r)
                try output.checkFailure()
            }
        } else {
            count = try mergeSources(context)
        }
        context.counters.processed += count
        if count > 0 { context.lastInputMonotonicMs = monotonicMillis() }
        // Wall-clock punctuations (custom processors, windows closing on idle) emit with the chunk.
        let punctuated = context.punctuateDue()
        if punctuated { uncommitted = true }
        try output.checkFailure()
        _ = try output.flush(broker)
        recordsSinceCommit += count
        app.metrics.add(context.counters)
        context.counters = TaskCounters()
        publishProgress()
        return count > 0 || punctuated || positions.map(\.next) != before
    }

    /// Several sources (a stream and the table it joins, merged streams): records are processed in
    /// event-time order across the sources (ties: earlier sources first), each partition in offset
    /// order. A record is only processed when every other source has a buffered record or is at
    /// its log end, so the order does not depend on read chunk sizes: a table's backlog larger
    /// than a chunk is applied up to each stream record's time before that record is joined. (A
    /// source at its log end does not hold the others back: live input is processed as it comes.)
    private func mergeSources(_ context: TaskContext) throws -> Int {
        if buffers.count != positions.count {
            buffers = Array(repeating: [], count: positions.count)
            heads = Array(repeating: 0, count: positions.count)
        }
        let output = context.output
        // Refill the drained buffers; a source that yields nothing now does not block the merge.
        var dry = Array(repeating: false, count: positions.count)
        for i in positions.indices where heads[i] >= buffers[i].count {
            buffers[i].removeAll(keepingCapacity: true)
            heads[i] = 0
            let from = positions[i].next
            _ = try readSource(i, deferDedup: true) { r, origin in buffers[i].append(Buffered(record: r, origin: origin)) }
            if buffers[i].isEmpty && positions[i].next == from { dry[i] = true }
        }
        var count = 0
        while true {
            var best = -1
            var blocked = false
            for i in positions.indices {
                if heads[i] < buffers[i].count {
                    if best < 0 || buffers[i][heads[i]].record.timestamp < buffers[best][heads[best]].record.timestamp { best = i }
                } else if !dry[i] && positions[i].next < positions[i].log.lastStableOffset {
                    blocked = true  // more of source i is in its log: read it before ordering past it
                }
            }
            if best < 0 || blocked { break }
            let b = buffers[best][heads[best]]
            heads[best] += 1
            if let o = b.origin {
                if let seen = origins[o.key], o.origin <= seen {
                    context.counters.duplicatesDropped += 1
                    continue
                }
                origins[o.key] = o.origin
            }
            count += 1
            context.beginInput(topicIndex: best, offset: b.record.offset)
            positions[best].node.process(b.record)
            try output.checkFailure()
        }
        return count
    }

    /// Decodes the records of one read from source `i` and passes each to `body`. Records of
    /// read-back topics are deduplicated here (`deferDedup` false), or their origin is passed on
    /// for the caller to check when it processes them.
    private func readSource(_ i: Int, deferDedup: Bool, _ body: (StreamRecord, (key: String, origin: Origin)?) throws -> Void) throws -> Int {
        let pos = positions[i]
        let result: LogReadResult
        do throws(LogError) {
            // Committed records only: an open transaction's records wait, aborted ones are skipped.
            result = try pos.log.read(from: pos.next, maxBytes: app.config.maxReadBytes, committedOnly: true)
        } catch {
            guard case .offsetOutOfRange = error else { throw error }
            // Retention removed records past our position: continue from the log start (Kafka's
            // auto.offset.reset=earliest); past the end (a recreated topic): from the end.
            positions[i].next = pos.next < pos.log.logStartOffset ? pos.log.logStartOffset : pos.log.logEndOffset
            uncommitted = true
            return 0
        }
        guard let slice = result.slice else { return 0 }
        let from = pos.next
        let topic = pos.topic
        let partition = id.partition
        let dedup = pos.dedup
        var n = 0
        var filter = ReadCommittedFilter(aborted: pos.log.abortedTransactions(from: from, upTo: slice.nextOffset))
        try slice.forEachBatch { batch in
            guard filter.accepts(batch) else { return }
            try batch.forEachRecord { r in
                guard r.offset >= from else { return }
                var rec = StreamRecord(key: r.key.map { Array($0) }, value: r.value.map { Array($0) }, timestamp: r.timestamp,
                                       topic: topic, partition: partition, offset: r.offset)
                var deferred: (key: String, origin: Origin)?
                if !r.headers.isEmpty {
                    rec.headers = r.headers.map { .init(key: String(decoding: $0.key, as: UTF8.self), value: $0.value.map { Array($0) }) }
                    if dedup, let i = rec.headers.firstIndex(where: { $0.key == Origin.header }) {
                        let h = rec.headers.remove(at: i)
                        // Keyed by (this read-back topic, upstream input partition): origins only
                        // increase per upstream partition within ONE read-back topic partition (an
                        // upstream input's outputs to two read-back topics share one sequence).
                        if let v = h.value, let (upstream, origin) = Origin.decode(v) {
                            let key = Origin.dedupKey(readBackTopic: topic, upstream: upstream)
                            if deferDedup {
                                deferred = (key, origin)
                            } else {
                                if let seen = origins[key], origin <= seen {
                                    duplicates += 1
                                    return
                                }
                                origins[key] = origin
                            }
                        }
                    }
                }
                n += 1
                try body(rec, deferred)
            }
        }
        positions[i].next = result.nextOffset
        if result.nextOffset != from { uncommitted = true }
        if duplicates > 0 {
            context.counters.duplicatesDropped += duplicates
            duplicates = 0
        }
        return n
    }

    // MARK: Commit

    private func stateKey(_ tagged: [UInt8]) -> [UInt8] { taskKey + [0] + tagged }

    private var currentCheckpoint: Checkpoint {
        Checkpoint(sequence: sequence, offsets: positions.indices.map { (positions[$0].topic, id.partition, processedOffset($0)) }, origins: origins)
    }

    /// Makes the work so far durable: outputs are already produced; dirty state goes to the
    /// changelog (one batch ending with a checkpoint record), output and changelog topics are
    /// flushed, then state and input offsets are written in ONE LMDB transaction, and finally the
    /// offsets are committed to the broker's consumer group (for visibility and stateless restarts).
    ///
    /// Exactly once (`transaction`): the changelog batch, the outputs produced since the last
    /// commit and the input offsets go into the task's transaction, which commits them together
    /// (its markers synced) before LMDB follows. A crash before the commit aborts everything (the
    /// next instance's InitProducerId does it at once) and the task resumes from the previous
    /// commit; a crash after it leaves LMDB older than the changelog, which `setup` detects.
    private func commit() throws {
        sequence += 1
        let checkpoint = currentCheckpoint
        var ops: [(key: [UInt8], value: [UInt8]?)] = []
        if let changelogTopic {
            var records: [ProducerRecord] = []
            let now = wallClockMillis()
            for (i, store) in stores.enumerated() {
                for (k, v) in store.drainDirty() {
                    let tagged = [UInt8(i)] + k
                    records.append(ProducerRecord(key: tagged, value: v, timestamp: now))
                    ops.append((stateKey(tagged), v))
                }
            }
            records.append(ProducerRecord(key: Self.checkpointKey, value: checkpoint.encode(), timestamp: now))
            let results = try OutputCollector.produceChunked(app.broker, topic: changelogTopic, records: records, partition: id.partition,
                                                             maxBytes: AppRuntime.changelogRequestBytes, transaction: transaction)
            // Exactly once, the commit marker follows the checkpoint record.
            if let last = results.last { changelogEnd = last.baseOffset + Int64(last.recordCount) + (transaction == nil ? 0 : 1) }
            context.output.touched.insert(changelogTopic)
        }
        if let transaction {
            try transaction.sendOffsets(group: app.applicationId, offsets: checkpoint.offsets)
            try transaction.commit()
        } else {
            for topic in context.output.touched.sorted() { try app.broker.flush(topic: topic) }
        }
        context.output.touched.removeAll()
        let record = TaskRecord(checkpoint: checkpoint, changelogEnd: changelogEnd)
        let key = taskKey
        try app.environment.write { txn in
            for op in ops {
                if let v = op.value { try txn.put(AppRuntime.stateDB, op.key, v) } else { try txn.delete(AppRuntime.stateDB, op.key) }
            }
            try txn.put(AppRuntime.tasksDB, key, record.encode())
        }
        if transaction == nil { try app.broker.commitOffsets(group: app.applicationId, offsets: checkpoint.offsets) }
        uncommitted = false
        recordsSinceCommit = 0
        app.metrics.commits.add(1, ordering: .relaxed)
        // Exactly once, its outputs just became visible: caught up again.
        publishProgress()
    }

    /// Calls `body` with each batch of `log` in [from, end) that a read_committed reader sees
    /// (transaction markers and aborted transactions left out), and returns where it stopped.
    private func forEachCommittedBatch(_ log: PartitionLog, from start: Int64, _ body: (RecordBatch, Int64) throws -> Void) throws {
        var next = max(start, log.logStartOffset)
        let end = log.lastStableOffset
        while next < end {
            let result = try log.read(from: next, maxBytes: 4 << 20, committedOnly: true)
            guard let slice = result.slice, result.nextOffset > next else { break }
            let from = next
            var filter = ReadCommittedFilter(aborted: log.abortedTransactions(from: from, upTo: slice.nextOffset))
            try slice.forEachBatch { batch in
                if filter.accepts(batch) { try body(batch, from) }
            }
            next = result.nextOffset
        }
    }

    // MARK: Restore

    private func setup() throws {
        let broker = app.broker
        let p = id.partition
        if app.config.processingGuarantee == .exactlyOnce {
            // First: fences any older instance of this task and aborts what it left open, so
            // everything read below is committed and stays so.
            transaction = try TransactionalProducer(broker: broker, transactionalId: "\(app.applicationId)-\(id)",
                                                    transactionTimeoutMs: app.config.transactionTimeoutMs)
        }
        changelogTopic = sub.stores.isEmpty ? nil : Topology.resolve(Topology.changelogSuffix(sub.stores), applicationId: app.applicationId)
        let key = taskKey
        let prefix = key + [0]

        // 1. LMDB: state and offsets of the last commit, consistent with each other.
        var restored: [[(key: [UInt8], value: [UInt8])]] = Array(repeating: [], count: sub.stores.count)
        var checkpoint: Checkpoint?
        var fromChangelog = false
        try app.environment.read { txn in
            if let raw = try txn.get(AppRuntime.tasksDB, key), let rec = TaskRecord.decode(raw) {
                checkpoint = rec.checkpoint
                changelogEnd = rec.changelogEnd
                for (k, v) in try txn.scan(AppRuntime.stateDB, prefix: prefix) {
                    let tagged = k[prefix.count...]
                    guard let tag = tagged.first, Int(tag) < restored.count else { continue }
                    restored[Int(tag)].append((Array(tagged.dropFirst()), v))
                }
            }
        }
        // 1b. LMDB older than the changelog: the task committed elsewhere since (an instance with
        // another state directory ran it, or LMDB came back from a backup), or a commit was
        // interrupted after its checkpoint record but before its LMDB transaction. The changelog's
        // last checkpoint is then the newer consistent state: rebuild from it.
        if let cp = checkpoint, let changelogTopic, try changelogHasCheckpoint(changelogTopic, from: changelogEnd, newerThan: cp.sequence) {
            checkpoint = nil
            restored = Array(repeating: [], count: sub.stores.count)
            app.metrics.staleStateDetected.add(1, ordering: .relaxed)
        }
        // 2. No (usable) local state: rebuild it from the changelog up to its last checkpoint.
        if checkpoint == nil, let changelogTopic {
            if let (entries, cp, end) = try restoreFromChangelog(changelogTopic) {
                restored = entries
                checkpoint = cp
                changelogEnd = end
                fromChangelog = true
                app.metrics.restoredFromChangelog.add(1, ordering: .relaxed)
            } else {
                changelogEnd = 0
            }
        }
        sequence = checkpoint?.sequence ?? 0
        origins = checkpoint?.origins ?? [:]

        // Positions: the checkpoint; for stateless tasks without one, the group's committed
        // offsets; otherwise the log start (auto.offset.reset=earliest).
        var sourceNodes: [String: ProcessorNode] = [:]
        var named: [String: [(key: [UInt8], value: [UInt8])]] = [:]
        for (i, s) in sub.stores.enumerated() { named[s] = restored[i] }
        let sourceTopics = sub.sourceTopics.map { Topology.resolve($0, applicationId: app.applicationId) }
        context = TaskContext(applicationId: app.applicationId, partition: p, restored: named, sourceTopics: sourceTopics,
                              readBack: app.readBackTopics)
        context.output.broker = app.broker
        context.output.transaction = transaction
        sourceNodes = app.topology.instantiate(sub, context: context)
        stores = sub.stores.map { name in
            guard let s = context.stores[name] else { preconditionFailure("store \(name) was not created by its processor") }
            return s
        }
        positions = []
        for t in sourceTopics {
            let log = try broker.log(topic: t, partition: p)
            var next: Int64
            if let c = checkpoint?.offset(t, p) {
                next = c
            } else if changelogTopic == nil, let c = try broker.committedOffset(group: app.applicationId, topic: t, partition: p) {
                next = c
            } else {
                next = log.logStartOffset
            }
            next = min(max(next, log.logStartOffset), log.logEndOffset)
            guard let node = sourceNodes[t] else { throw StreamsError.invalidTopology("no source node for topic '\(t)'") }
            positions.append(Position(topic: t, log: log, next: next, node: node, dedup: app.readBackTopics.contains(t)))
        }
        if fromChangelog {
            // Keep what was restored in LMDB, so the next start is local again.
            try writeFullState(restored, checkpoint: checkpoint!)
        }
        try repairChangelogTail()
        publishProgress()
    }

    /// Replays the changelog partition: values up to the last checkpoint record count, anything
    /// after it (an interrupted commit) is ignored. Returns the entries per store, the checkpoint
    /// and the offset after it; nil when the changelog holds no checkpoint.
    private func restoreFromChangelog(_ topic: String) throws -> ([[(key: [UInt8], value: [UInt8])]], Checkpoint, Int64)? {
        let log = try app.broker.log(topic: topic, partition: id.partition)
        var applied: [[[UInt8]: [UInt8]]] = Array(repeating: [:], count: sub.stores.count)
        var pending: [(tag: Int, key: [UInt8], value: [UInt8]?)] = []
        var last: (Checkpoint, Int64)?
        try forEachCommittedBatch(log, from: log.logStartOffset) { batch, from in
            try batch.forEachRecord { r in
                guard r.offset >= from, let k = r.key, let tag = k.first else { return }
                if tag == 0xFF {
                    guard let v = r.value, let cp = Checkpoint.decode(Array(v)) else { return }
                    for e in pending where e.tag < applied.count {
                        if let v = e.value { applied[e.tag][e.key] = v } else { applied[e.tag][e.key] = nil }
                    }
                    pending.removeAll()
                    // Exactly once: the commit marker follows the checkpoint record.
                    last = (cp, r.offset + (batch.isTransactional ? 2 : 1))
                } else {
                    pending.append((Int(tag), Array(k.dropFirst()), r.value.map { Array($0) }))
                }
            }
        }
        guard let (cp, after) = last else { return nil }
        return (applied.map { $0.map { ($0.key, $0.value) } }, cp, after)
    }

    /// Whether the changelog holds, from `offset` on, a checkpoint record of a commit sequence
    /// greater than `sequence`. Normally nothing follows LMDB's changelog position: a short read.
    private func changelogHasCheckpoint(_ topic: String, from offset: Int64, newerThan sequence: Int64) throws -> Bool {
        let log = try app.broker.log(topic: topic, partition: id.partition)
        var newer = false
        try forEachCommittedBatch(log, from: offset) { batch, from in
            guard !newer else { return }
            try batch.forEachRecord { r in
                guard r.offset >= from, let k = r.key, k.first == 0xFF, let v = r.value, let cp = Checkpoint.decode(Array(v)) else { return }
                if cp.sequence > sequence { newer = true }
            }
        }
        return newer
    }

    private func writeFullState(_ restored: [[(key: [UInt8], value: [UInt8])]], checkpoint: Checkpoint) throws {
        let key = taskKey
        let prefix = key + [0]
        var entries: [([UInt8], [UInt8])] = []
        for (i, store) in restored.enumerated() {
            for (k, v) in store { entries.append((prefix + [UInt8(i)] + k, v)) }
        }
        let record = TaskRecord(checkpoint: checkpoint, changelogEnd: changelogEnd)
        try app.environment.write { txn in
            for (k, _) in try txn.scan(AppRuntime.stateDB, prefix: prefix) { try txn.delete(AppRuntime.stateDB, k) }
            for (k, v) in entries { try txn.put(AppRuntime.stateDB, k, v) }
            try txn.put(AppRuntime.tasksDB, key, record.encode())
        }
    }

    /// A commit interrupted after its changelog batch but before its LMDB transaction leaves
    /// changelog records past the checkpoint the task restarted from. They are overwritten with
    /// the restored values (or tombstones) and a checkpoint, so that the changelog's last
    /// checkpoint always describes exactly the state LMDB holds.
    private func repairChangelogTail() throws {
        // Exactly once: an interrupted commit's changelog records were aborted (invisible).
        guard let changelogTopic, transaction == nil else { return }
        let log = try app.broker.log(topic: changelogTopic, partition: id.partition)
        let end = log.logEndOffset
        guard end > changelogEnd else { return }
        var keys: Set<[UInt8]> = []
        var next = max(changelogEnd, log.logStartOffset)
        while next < end {
            let result = try log.read(from: next, maxBytes: 4 << 20)
            guard let slice = result.slice, result.nextOffset > next else { break }
            let from = next
            try slice.forEachBatch { batch in
                try batch.forEachRecord { r in
                    guard r.offset >= from, let k = r.key, let tag = k.first, tag != 0xFF else { return }
                    keys.insert(Array(k))
                }
            }
            next = result.nextOffset
        }
        let now = wallClockMillis()
        var records: [ProducerRecord] = []
        for k in keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) where Int(k[0]) < stores.count {
            records.append(ProducerRecord(key: k, value: stores[Int(k[0])].encodedValue(Array(k.dropFirst())), timestamp: now))
        }
        records.append(ProducerRecord(key: Self.checkpointKey, value: currentCheckpoint.encode(), timestamp: now))
        let results = try OutputCollector.produceChunked(app.broker, topic: changelogTopic, records: records, partition: id.partition,
                                                         maxBytes: AppRuntime.changelogRequestBytes)
        if let last = results.last { changelogEnd = last.baseOffset + Int64(last.recordCount) }
        try app.broker.flush(topic: changelogTopic)
        let record = TaskRecord(checkpoint: currentCheckpoint, changelogEnd: changelogEnd)
        let key = taskKey
        try app.environment.write { txn in try txn.put(AppRuntime.tasksDB, key, record.encode()) }
        app.metrics.changelogRepairs.add(1, ordering: .relaxed)
    }
}

/// Where a record written to a topic the application reads back came from: the upstream task's
/// input (topic, partition), input offset and the record's sequence among that input's outputs.
/// Carried in the `strata.origin` header; deterministic processing re-emits the same origins
/// after a crash, and the reading task drops those it has seen.
struct Origin: Comparable {
    static let header = "strata.origin"
    var offset: Int64
    var sequence: UInt32

    static func < (a: Origin, b: Origin) -> Bool { (a.offset, a.sequence) < (b.offset, b.sequence) }

    static func encode(topic: String, partition: Int32, offset: Int64, sequence: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16 + topic.utf8.count)
        BE.append(offset, to: &out)
        BE.append(sequence, to: &out)
        BE.append(UInt32(bitPattern: partition), to: &out)
        out.append(contentsOf: topic.utf8)
        return out
    }

    /// The deduplication position key: `<read-back topic>|<upstream topic>/<partition>` (topic
    /// names cannot contain `|`).
    static func dedupKey(readBackTopic: String, upstream: String) -> String { "\(readBackTopic)|\(upstream)" }

    /// (upstream input key "topic/partition", origin)
    static func decode(_ b: [UInt8]) -> (String, Origin)? {
        guard b.count >= 16 else { return nil }
        let p = Int32(bitPattern: BE.uint32(b, at: 12))
        return ("\(String(decoding: b[16...], as: UTF8.self))/\(p)", Origin(offset: BE.int64(b, at: 0), sequence: BE.uint32(b, at: 8)))
    }
}
