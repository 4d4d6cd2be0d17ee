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
        let n = Int(BE.uint32(b, at: 8))
        var i = 12
        for _ in 0..<n {
            guard i + 4 <= b.count else { return nil }
            let len = Int(BE.uint32(b, at: i))
            i += 4
            guard i + len + 12 <= b.count else { return nil }
            let topic = String(decoding: b[i..<(i + len)], as: UTF8.self)
            i += len
            c.offsets.append((topic, Int32(bitPattern: BE.uint32(b, at: i)), BE.int64(b, at: i + 4)))
            i += 12
        }
        guard i + 4 <= b.count else { return c }
        let m = Int(BE.uint32(b, at: i))
        i += 4
        for _ in 0..<m {
            guard i + 4 <= b.count else { return nil }
            let len = Int(BE.uint32(b, at: i))
            i += 4
            guard i + len + 12 <= b.count else { return nil }
            let key = String(decoding: b[i..<(i + len)], as: UTF8.self)
            i += len
            c.origins[key] = Origin(offset: BE.int64(b, at: i), sequence: BE.uint32(b, at: i + 8))
            i += 12
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

    enum StopMode: Int { case running = 0, graceful = 1, abort = 2 }

    static let checkpointKey: [UInt8] = [0xFF] + Array("checkpoint".utf8)

    let id: TaskId
    let sub: Subtopology
    let app: AppRuntime
    private let stopMode = Atomic<Int>(0)
    private var handle: Task<Void, Never>?
    /// (log, next offset) per source after the last processed chunk, for `caughtUp`.
    private let progress = Mutex<[(PartitionLog, Int64)]>([])
    private let started = Atomic<Bool>(false)

    // Owned by the running task only.
    private var positions: [Position] = []
    private var context: TaskContext!
    private var stores: [AnyStateStore] = []
    private var sequence: Int64 = 0
    private var changelogEnd: Int64 = 0
    private var changelogTopic: String?
    private var origins: [String: Origin] = [:]
    private var uncommitted = false
    private var recordsSinceCommit = 0
    private var duplicates = 0

    init(id: TaskId, sub: Subtopology, app: AppRuntime) {
        self.id = id
        self.sub = sub
        self.app = app
    }

    var taskKey: [UInt8] { Array(id.description.utf8) }

    func start() {
        handle = Task { await self.run() }
    }

    /// Asks the task to stop; `graceful` commits first, otherwise it stops as if it crashed (no
    /// commit: what was processed since the last commit is processed again by the next owner).
    func requestStop(graceful: Bool) {
        _ = stopMode.compareExchange(expected: StopMode.running.rawValue, desired: (graceful ? StopMode.graceful : .abort).rawValue,
                                     ordering: .sequentiallyConsistent)
    }

    func join() async { await handle?.value }

    /// True when every source has been processed to its current log end (and the outputs produced).
    var caughtUp: Bool {
        guard started.load(ordering: .acquiring) else { return false }
        return progress.withLock { p in p.allSatisfy { $0.1 >= $0.0.logEndOffset } }
    }

    var positionsSnapshot: [Int64] { progress.withLock { $0.map(\.1) } }

    private var stopping: StopMode { StopMode(rawValue: stopMode.load(ordering: .relaxed)) ?? .running }

    // MARK: Running

    private func run() async {
        do {
            try setup()
            started.store(true, ordering: .releasing)
            var lastCommit = monotonicMillis()
            while stopping == .running {
                let n = try processChunk()
                let now = monotonicMillis()
                let dueByTime = now - lastCommit >= app.config.commitIntervalMs
                let dueByCount = app.config.commitEveryRecords > 0 && recordsSinceCommit >= app.config.commitEveryRecords
                if uncommitted && (dueByTime || dueByCount) {
                    try commit()
                    lastCommit = now
                }
                if n == 0 {
                    var timeout = app.config.idleWaitMs
                    if uncommitted { timeout = max(1, min(timeout, app.config.commitIntervalMs - (now - lastCommit))) }
                    await app.broker.waitForData(positions.map { ($0.topic, id.partition, $0.next) }, timeoutMs: timeout)
                } else {
                    await Task.yield()
                }
            }
            if stopping == .graceful && uncommitted { try commit() }
        } catch {
            app.report("task \(id): \(error)")
        }
    }

    private func publishProgress() {
        let snapshot = positions.map { ($0.log, $0.next) }
        progress.withLock { $0 = snapshot }
    }

    /// Reads what is available (up to maxReadBytes per source), processes it and produces the output.
    private func processChunk() throws -> Int {
        var count = 0
        if positions.count == 1 {
            let node = positions[0].node
            let context = self.context!
            count = try readSource(0) { r in
                context.beginInput(topicIndex: 0, offset: r.offset)
                node.process(r)
            }
        } else {
            var buffers: [[StreamRecord]] = Array(repeating: [], count: positions.count)
            for i in positions.indices { _ = try readSource(i) { buffers[i].append($0) } }
            count = buffers.reduce(0) { $0 + $1.count }
            if count > 0 {
                // Merge by event time across the sources (ties: table/earlier sources first),
                // keeping each partition's offset order.
                var heads = Array(repeating: 0, count: buffers.count)
                while true {
                    var best = -1
                    for i in buffers.indices where heads[i] < buffers[i].count {
                        if best < 0 || buffers[i][heads[i]].timestamp < buffers[best][heads[best]].timestamp { best = i }
                    }
                    if best < 0 { break }
                    let r = buffers[best][heads[best]]
                    context.beginInput(topicIndex: best, offset: r.offset)
                    positions[best].node.process(r)
                    heads[best] += 1
                }
            }
        }
        context.counters.processed += count
        let produced = try context.output.flush(app.broker)
        _ = produced
        recordsSinceCommit += count
        app.metrics.add(context.counters)
        context.counters = TaskCounters()
        publishProgress()
        return count
    }

    /// Decodes the records of one read from source `i` and passes each to `body`.
    private func readSource(_ i: Int, _ body: (StreamRecord) -> Void) throws -> Int {
        let pos = positions[i]
        let result: LogReadResult
        do throws(LogError) {
            result = try pos.log.read(from: pos.next, maxBytes: app.config.maxReadBytes)
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
        try slice.forEachBatch { batch in
            if batch.isControl { return }
            try batch.forEachRecord { r in
                guard r.offset >= from else { return }
                var rec = StreamRecord(key: r.key.map { Array($0) }, value: r.value.map { Array($0) }, timestamp: r.timestamp,
                                       topic: topic, partition: partition, offset: r.offset)
                if !r.headers.isEmpty {
                    rec.headers = r.headers.map { .init(key: String(decoding: $0.key, as: UTF8.self), value: $0.value.map { Array($0) }) }
                    if dedup, let i = rec.headers.firstIndex(where: { $0.key == Origin.header }) {
                        let h = rec.headers.remove(at: i)
                        if let v = h.value, let (key, origin) = Origin.decode(v) {
                            if let seen = origins[key], origin <= seen {
                                duplicates += 1
                                return
                            }
                            origins[key] = origin
                        }
                    }
                }
                n += 1
                body(rec)
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
        Checkpoint(sequence: sequence, offsets: positions.map { ($0.topic, id.partition, $0.next) }, origins: origins)
    }

    /// Makes the work so far durable: outputs are already produced; dirty state goes to the
    /// changelog (one batch ending with a checkpoint record), output and changelog topics are
    /// flushed, then state and input offsets are written in ONE LMDB transaction, and finally the
    /// offsets are committed to the broker's consumer group (for visibility and stateless restarts).
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
                                                             maxBytes: AppRuntime.changelogRequestBytes)
            if let last = results.last { changelogEnd = last.baseOffset + Int64(last.recordCount) }
            context.output.touched.insert(changelogTopic)
        }
        for topic in context.output.touched.sorted() { try app.broker.flush(topic: topic) }
        context.output.touched.removeAll()
        let record = TaskRecord(checkpoint: checkpoint, changelogEnd: changelogEnd)
        let key = taskKey
        try app.environment.write { txn in
            for op in ops {
                if let v = op.value { try txn.put(AppRuntime.stateDB, op.key, v) } else { try txn.delete(AppRuntime.stateDB, op.key) }
            }
            try txn.put(AppRuntime.tasksDB, key, record.encode())
        }
        try app.broker.commitOffsets(group: app.applicationId, offsets: checkpoint.offsets)
        uncommitted = false
        recordsSinceCommit = 0
        app.metrics.commits.add(1, ordering: .relaxed)
    }

    // MARK: Restore

    private func setup() throws {
        let broker = app.broker
        let p = id.partition
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
        // 2. No local state: rebuild it from the changelog up to its last checkpoint.
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
            positions.append(Position(topic: t, log: log, next: next, node: sourceNodes[t]!, dedup: app.readBackTopics.contains(t)))
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
        var next = log.logStartOffset
        let end = log.logEndOffset
        while next < end {
            let result = try log.read(from: next, maxBytes: 4 << 20)
            guard let slice = result.slice else { break }
            let from = next
            try slice.forEachBatch { batch in
                try batch.forEachRecord { r in
                    guard r.offset >= from, let k = r.key, let tag = k.first else { return }
                    if tag == 0xFF {
                        guard let v = r.value, let cp = Checkpoint.decode(Array(v)) else { return }
                        for e in pending where e.tag < applied.count {
                            if let v = e.value { applied[e.tag][e.key] = v } else { applied[e.tag][e.key] = nil }
                        }
                        pending.removeAll()
                        last = (cp, r.offset + 1)
                    } else {
                        pending.append((Int(tag), Array(k.dropFirst()), r.value.map { Array($0) }))
                    }
                }
            }
            next = result.nextOffset
        }
        guard let (cp, after) = last else { return nil }
        return (applied.map { $0.map { ($0.key, $0.value) } }, cp, after)
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
        guard let changelogTopic else { return }
        let log = try app.broker.log(topic: changelogTopic, partition: id.partition)
        let end = log.logEndOffset
        guard end > changelogEnd else { return }
        var keys: Set<[UInt8]> = []
        var next = max(changelogEnd, log.logStartOffset)
        while next < end {
            let result = try log.read(from: next, maxBytes: 4 << 20)
            guard let slice = result.slice else { break }
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

    /// (upstream input key "topic/partition", origin)
    static func decode(_ b: [UInt8]) -> (String, Origin)? {
        guard b.count >= 16 else { return nil }
        let p = Int32(bitPattern: BE.uint32(b, at: 12))
        return ("\(String(decoding: b[16...], as: UTF8.self))/\(p)", Origin(offset: BE.int64(b, at: 0), sequence: BE.uint32(b, at: 8)))
    }
}
