import StrataBroker
import StrataCore
import StrataLog

/// Counters a task accumulates while processing a chunk (folded into the app's metrics after it).
struct TaskCounters {
    var processed = 0
    var produced = 0
    var lateDropped = 0
    var invalidTimestamps = 0
    var duplicatesDropped = 0
    var timestampOutOfRange = 0
    var keyTooLong = 0
}

/// Limits on what state stores accept from input data.
enum StateLimits {
    /// Longest record key a store keeps. LMDB keys are at most 511 bytes and a store's LMDB key is
    /// `<task id> 0x00 <store tag> [window start(8)] <key>`; longer keys are refused up front
    /// (record skipped, `metrics.keyTooLong`) rather than failing the commit after the changelog
    /// write, which would fail the task again on every restart.
    static let maxKeyBytes = 400
}

/// `a - b`, clamped to Int64's range instead of trapping.
@inline(__always) func saturatingSub(_ a: Int64, _ b: Int64) -> Int64 {
    let (r, o) = a.subtractingReportingOverflow(b)
    return o ? (b > 0 ? .min : .max) : r
}

/// Records a task's processors send to topics, produced in batches after each chunk — and as
/// soon as `maxPendingBytes` are pending, even in the middle of one input record (a record that
/// closes the windows of many keys emits all their results at once).
final class OutputCollector {
    var pending: [String: [ProducerRecord]] = [:]
    var pendingBytes = 0
    /// Topics appended to since the last commit (flushed to disk before offsets are committed).
    var touched: Set<String> = []
    static let maxRequestBytes = 768 * 1024
    static let maxPendingBytes = 8 << 20
    /// Where to produce when the limit is reached inside `append` (set by the task).
    var broker: Broker?
    /// Exactly-once tasks: every record goes out inside the task's transaction.
    var transaction: TransactionalProducer?
    /// A produce that failed inside `append` (which cannot throw): the task rethrows it after the
    /// record, and fails without committing, so nothing dropped here counts as done.
    private(set) var failure: Error?

    @inline(__always)
    func append(_ topic: String, _ record: ProducerRecord) {
        guard failure == nil else { return }
        pending[topic, default: []].append(record)
        var size = 32 + (record.key?.count ?? 0) + (record.value?.count ?? 0)
        for h in record.headers { size += 8 + h.key.utf8.count + (h.value?.count ?? 0) }
        pendingBytes += size
        if pendingBytes > Self.maxPendingBytes, let broker {
            do { try flushPending(broker) } catch { failure = error }
        }
    }

    /// Throws the failure of a produce done inside `append`, if any.
    func checkFailure() throws {
        if let failure { throw failure }
    }

    /// Records produced by `append` itself since the last `flush`.
    private var producedInAppend = 0

    /// Produces everything pending, in requests small enough for the broker's max.message.bytes;
    /// returns the records produced since the last call.
    func flush(_ broker: Broker) throws -> Int {
        try checkFailure()
        try flushPending(broker)
        defer { producedInAppend = 0 }
        return producedInAppend
    }

    private func flushPending(_ broker: Broker) throws {
        guard !pending.isEmpty else { return }
        for (topic, records) in pending {
            try Self.produceChunked(broker, topic: topic, records: records, partition: nil, transaction: transaction)
            touched.insert(topic)
            producedInAppend += records.count
        }
        pending.removeAll(keepingCapacity: true)
        pendingBytes = 0
    }

    @discardableResult
    static func produceChunked(_ broker: Broker, topic: String, records: [ProducerRecord], partition: Int32?,
                               maxBytes: Int = maxRequestBytes, transaction: TransactionalProducer? = nil) throws -> [ProduceResult] {
        func produce(_ slice: [ProducerRecord]) throws -> [ProduceResult] {
            if let transaction { return try transaction.produce(topic: topic, records: slice, partition: partition) }
            return try broker.produce(topic: topic, records: slice, partition: partition, acks: .leader)
        }
        var results: [ProduceResult] = []
        var start = 0
        var bytes = 0
        for (i, r) in records.enumerated() {
            let size = 32 + (r.key?.count ?? 0) + (r.value?.count ?? 0) + r.headers.reduce(0) { $0 + 8 + $1.key.utf8.count + ($1.value?.count ?? 0) }
            if bytes + size > maxBytes && i > start {
                results += try produce(Array(records[start..<i]))
                start = i
                bytes = 0
            }
            bytes += size
        }
        if start < records.count {
            results += try produce(start == 0 ? records : Array(records[start...]))
        }
        return results
    }
}

/// What processors of one task share: its partition, output collector, counters and stores.
final class TaskContext {
    let applicationId: String
    let partition: Int32
    let output = OutputCollector()
    var counters = TaskCounters()
    /// Store contents restored before the processors are built, by store name.
    var restored: [String: [(key: [UInt8], value: [UInt8])]]
    private(set) var stores: [String: AnyStateStore] = [:]

    /// Source topics of the task (resolved) and the topics the application writes and reads back.
    let sourceTopics: [String]
    let readBack: Set<String>
    /// The input record being processed: index in `sourceTopics`, offset, and how many records
    /// were sent to read-back topics for it so far.
    var inputTopic = 0
    var inputOffset: Int64 = -1
    var inputSequence: UInt32 = 0

    /// Nodes that asked to be punctuated (wall clock), with their period and next due time
    /// (monotonic ms).
    private(set) var punctuations: [(node: ProcessorNode, everyMs: Int64, dueMs: Int64)] = []
    /// Monotonic time at which the task last processed input records (set per chunk): windowed
    /// nodes that follow the wall clock while idle measure from it.
    var lastInputMonotonicMs = monotonicMillis()

    init(applicationId: String, partition: Int32, restored: [String: [(key: [UInt8], value: [UInt8])]],
         sourceTopics: [String] = [], readBack: Set<String> = []) {
        self.applicationId = applicationId
        self.partition = partition
        self.restored = restored
        self.sourceTopics = sourceTopics
        self.readBack = readBack
    }

    @inline(__always) func beginInput(topicIndex: Int, offset: Int64) {
        inputTopic = topicIndex
        inputOffset = offset
        inputSequence = 0
    }

    /// The origin header of the next record sent to a read-back topic.
    func nextOrigin() -> ProducerRecord.Header {
        defer { inputSequence += 1 }
        return ProducerRecord.Header(key: Origin.header, value: Origin.encode(topic: sourceTopics[inputTopic], partition: partition,
                                                                             offset: inputOffset, sequence: inputSequence))
    }

    func resolve(_ topic: String) -> String { Topology.resolve(topic, applicationId: applicationId) }

    /// Calls `node.punctuate` about every `everyMs` of wall-clock time while the task runs.
    func schedule(_ node: ProcessorNode, everyMs: Int64) {
        punctuations.append((node, max(1, everyMs), monotonicMillis() &+ max(1, everyMs)))
    }

    /// When the next punctuation is due (monotonic ms), nil when none is scheduled.
    /// (Windows closing on idle are punctuated only while some are open: an idle task with
    /// nothing to close sleeps without a timer.)
    var nextPunctuationDueMs: Int64? { punctuations.filter { $0.node.wantsPunctuation }.map(\.dueMs).min() }

    /// Punctuates the nodes that are due; returns whether any of them changed state or emitted.
    func punctuateDue() -> Bool {
        guard !punctuations.isEmpty else { return false }
        let now = monotonicMillis()
        let wall = wallClockMillis()
        var changed = false
        for i in punctuations.indices where punctuations[i].dueMs <= now && punctuations[i].node.wantsPunctuation {
            punctuations[i].dueMs = now &+ punctuations[i].everyMs
            if punctuations[i].node.punctuate(wallClockMs: wall, monotonicMs: now) { changed = true }
        }
        return changed
    }

    /// Whether a scheduled node will still emit without further input.
    var outputPendingWithoutInput: Bool { punctuations.contains { $0.node.emitsWithoutInput } }

    func store<S: AnyStateStore>(_ name: String, make: ([(key: [UInt8], value: [UInt8])]) -> S) -> S {
        if let s = stores[name] {
            guard let typed = s as? S else { preconditionFailure("store '\(name)' is used with two different value types") }
            return typed
        }
        let s = make(restored[name] ?? [])
        restored[name] = nil
        stores[name] = s
        return s
    }
}

/// One node of a task's processor graph. Records are pushed synchronously from the sources down.
class ProcessorNode {
    var children: [ProcessorNode] = []
    func process(_ record: StreamRecord) { forward(record) }
    /// A scheduled wall-clock punctuation (`TaskContext.schedule`); returns whether the node
    /// changed state or emitted records (the task then has something to commit).
    func punctuate(wallClockMs: Int64, monotonicMs: Int64) -> Bool { false }
    /// Whether the node will still emit without further input (windows that close on the wall
    /// clock): the task is not caught up until it has.
    var emitsWithoutInput: Bool { false }
    /// Whether a scheduled punctuation is worth running now.
    var wantsPunctuation: Bool { true }
    @inline(__always) final func forward(_ record: StreamRecord) {
        for child in children { child.process(record) }
    }
}

final class SourceNode: ProcessorNode {
    let extractor: TimestampExtractor
    let field: [UInt8]
    unowned let context: TaskContext
    init(extractor: TimestampExtractor, context: TaskContext) {
        self.extractor = extractor
        if case .jsonField(let f) = extractor { field = Array(f.utf8) } else { field = [] }
        self.context = context
    }
    override func process(_ record: StreamRecord) {
        guard !field.isEmpty else { return forward(record) }
        var r = record
        if let value = r.value, let t = JSON.timestampField(field, in: value) {
            r.timestamp = t
        } else {
            context.counters.invalidTimestamps += 1
        }
        forward(r)
    }
}

final class MapNode: ProcessorNode {
    let f: @Sendable (StreamRecord) -> StreamRecord
    init(_ f: @escaping @Sendable (StreamRecord) -> StreamRecord) { self.f = f }
    override func process(_ record: StreamRecord) { forward(f(record)) }
}

final class FilterNode: ProcessorNode {
    let p: @Sendable (StreamRecord) -> Bool
    init(_ p: @escaping @Sendable (StreamRecord) -> Bool) { self.p = p }
    override func process(_ record: StreamRecord) { if p(record) { forward(record) } }
}

final class FlatMapNode: ProcessorNode {
    let f: @Sendable (StreamRecord) -> [StreamRecord]
    init(_ f: @escaping @Sendable (StreamRecord) -> [StreamRecord]) { self.f = f }
    override func process(_ record: StreamRecord) { for r in f(record) { forward(r) } }
}

final class PeekNode: ProcessorNode {
    let f: @Sendable (StreamRecord) -> Void
    init(_ f: @escaping @Sendable (StreamRecord) -> Void) { self.f = f }
    override func process(_ record: StreamRecord) {
        f(record)
        forward(record)
    }
}

/// Sends each record to the first branch whose predicate holds (children are the branches, in order).
final class BranchNode: ProcessorNode {
    let predicates: [@Sendable (StreamRecord) -> Bool]
    init(_ predicates: [@Sendable (StreamRecord) -> Bool]) { self.predicates = predicates }
    override func process(_ record: StreamRecord) {
        for (i, p) in predicates.enumerated() where p(record) {
            if i < children.count { children[i].process(record) }
            return
        }
    }
}

final class PassNode: ProcessorNode {}

/// Your own processing step (`KStream.process`): called for each record, and on the wall clock
/// when scheduled. One instance per task, used by that task's thread only.
public protocol StreamProcessor: AnyObject {
    /// Handles one record; `emit` sends records downstream (any number, any keys).
    func process(_ record: StreamRecord, emit: (StreamRecord) -> Void)
    /// Called about every `punctuateEveryMs` of wall-clock time (ms since the epoch), even when
    /// no record arrives.
    func punctuate(wallClockMs: Int64, emit: (StreamRecord) -> Void)
}

extension StreamProcessor {
    public func punctuate(wallClockMs: Int64, emit: (StreamRecord) -> Void) {}
}

final class CustomProcessorNode: ProcessorNode {
    let processor: any StreamProcessor
    init(_ processor: any StreamProcessor) { self.processor = processor }
    override func process(_ record: StreamRecord) { processor.process(record) { forward($0) } }
    override func punctuate(wallClockMs: Int64, monotonicMs: Int64) -> Bool {
        var emitted = false
        processor.punctuate(wallClockMs: wallClockMs) { r in
            emitted = true
            forward(r)
        }
        return emitted
    }
}

final class SinkNode: ProcessorNode {
    let topic: String
    let readBack: Bool
    unowned let context: TaskContext
    init(topic: String, context: TaskContext) {
        self.topic = topic
        self.context = context
        readBack = context.readBack.contains(topic)
    }
    override func process(_ record: StreamRecord) {
        var headers = record.headers
        if readBack { headers.append(context.nextOrigin()) }
        context.output.append(topic, ProducerRecord(key: record.key, value: record.value, headers: headers, timestamp: record.timestamp))
        context.counters.produced += 1
    }
}

/// The KTable of a topic: latest value per key (a null value deletes the key), forwarded downstream.
final class TableSourceNode: ProcessorNode {
    let store: KeyValueStore<[UInt8]>
    unowned let context: TaskContext
    init(store: KeyValueStore<[UInt8]>, context: TaskContext) {
        self.store = store
        self.context = context
    }
    override func process(_ record: StreamRecord) {
        guard let key = record.key else { return }
        guard key.count <= StateLimits.maxKeyBytes else { context.counters.keyTooLong += 1; return }
        store.put(key, record.value)
        forward(record)
    }
}

/// Stream–table join: looks each stream record's key up in the table's store. The store is used
/// through `AnyStateStore`, so tables of any value type join: a topic's table (`[UInt8]`, values
/// as they are) or a non-windowed aggregation (`count` → decimal text, `aggregate` → the
/// value's `stateBytes`), the same bytes the table emits downstream.
final class JoinNode: ProcessorNode {
    let store: AnyStateStore
    let joiner: @Sendable (StreamRecord, [UInt8]?) -> [UInt8]?
    let left: Bool
    init(store: AnyStateStore, left: Bool, joiner: @escaping @Sendable (StreamRecord, [UInt8]?) -> [UInt8]?) {
        self.store = store
        self.left = left
        self.joiner = joiner
    }
    override func process(_ record: StreamRecord) {
        guard let key = record.key else { return }
        let tableValue = store.encodedValue(key)
        if tableValue == nil && !left { return }
        forward(record.withValue(joiner(record, tableValue)))
    }
}

/// Non-windowed aggregation (count, reduce, aggregate): one value per key, an update forwarded
/// for every record. Records with a null key or value are skipped, as in Kafka Streams.
final class AggregateNode<V: StateValue>: ProcessorNode {
    let store: KeyValueStore<V>
    let aggregate: @Sendable (StreamRecord, V?) -> V
    unowned let context: TaskContext
    init(store: KeyValueStore<V>, context: TaskContext, aggregate: @escaping @Sendable (StreamRecord, V?) -> V) {
        self.store = store
        self.context = context
        self.aggregate = aggregate
    }
    override func process(_ record: StreamRecord) {
        guard let key = record.key, record.value != nil else { return }
        guard key.count <= StateLimits.maxKeyBytes else { context.counters.keyTooLong += 1; return }
        let agg = aggregate
        let new = store.update(key) { agg(record, $0) }
        var out = record
        out.value = new?.stateBytes
        out.headers = []
        forward(out)
    }
}

/// When windowed aggregations emit results.
public enum EmitStrategy: Sendable, Equatable {
    /// An update for every record that changes a window (a KTable changelog).
    case onUpdate
    /// One final result per key and window, once stream time passes its end plus grace
    /// (Kafka's `suppress(untilWindowCloses)` / emit-final). Without crashes each key and window
    /// is emitted exactly once. After a crash the windows closed since the last commit are emitted
    /// again by the restarted task, with the same values (state and stream time are restored from
    /// that commit): at-least-once, the same record possibly twice, never a different value.
    case onWindowClose
    /// As `.onWindowClose` — Kafka's `suppress(untilWindowCloses)` — with a wall-clock bound:
    /// while the task receives no input, stream time follows the wall clock. Once `idleMs` have
    /// passed since the last input record, stream time advances by the wall-clock time elapsed
    /// since that record, so the last windows of a stream that went quiet are emitted (at most
    /// `max(idleMs, end + grace - streamTime)` after the last record) instead of waiting for a
    /// later event. Quiet time counts as time passed: a record arriving afterwards for a window
    /// closed that way is late (dropped, `metrics.lateDropped`). The advanced stream time is
    /// committed like any other, so a restart keeps it.
    case onWindowCloseOrIdle(idleMs: Int64)

    var isFinal: Bool { self != .onUpdate }

    var idleMs: Int64? {
        if case .onWindowCloseOrIdle(let ms) = self { return ms }
        return nil
    }

    /// How often a node with a wall-clock bound checks it.
    var punctuationMs: Int64? { idleMs.map { min(1000, max(10, $0 / 4)) } }
}

/// Stream time while idle (`EmitStrategy.onWindowCloseOrIdle`): the stream time reached by the
/// last record plus the wall-clock time elapsed since it. Remembers that base, so repeated
/// punctuations of one quiet period do not add the elapsed time twice.
struct IdleStreamTime {
    /// Stream time when the current quiet period began (the last record's), and what the
    /// punctuations of this period advanced it to.
    private var base: Int64 = .min
    private var advancedTo: Int64 = .min

    mutating func advanced(from streamTime: Int64, quietMs: Int64) -> Int64 {
        // A stream time other than the one we set means records came in: a new quiet period.
        if streamTime != advancedTo { base = streamTime }
        let (t, o) = base.addingReportingOverflow(quietMs)
        advancedTo = o ? .max : t
        return advancedTo
    }
}

/// Tumbling/hopping window aggregation over event time with a grace period.
final class WindowAggregateNode<V: StateValue>: ProcessorNode {
    let store: WindowStore<V>
    let windows: TimeWindows
    let emit: EmitStrategy
    let aggregate: @Sendable (StreamRecord, V?) -> V
    unowned let context: TaskContext
    /// Smallest window end among stored windows (a lower bound), to find closed windows rarely.
    var earliestEnd: Int64 = .min

    init(store: WindowStore<V>, windows: TimeWindows, emit: EmitStrategy, context: TaskContext,
         aggregate: @escaping @Sendable (StreamRecord, V?) -> V) {
        self.store = store
        self.windows = windows
        self.emit = emit
        self.context = context
        self.aggregate = aggregate
        super.init()
        earliestEnd = store.map.keys.map { $0.start &+ windows.sizeMs }.min() ?? .max
        if let every = emit.punctuationMs { context.schedule(self, everyMs: every) }
    }

    /// `.onWindowCloseOrIdle`: once the task has been idle for `idleMs`, stream time follows the
    /// wall clock from the last record on.
    override func punctuate(wallClockMs: Int64, monotonicMs: Int64) -> Bool {
        guard let idle = emit.idleMs, store.streamTime != .min else { return false }
        let quiet = monotonicMs &- context.lastInputMonotonicMs
        guard quiet >= idle else { return false }
        let target = idleStreamTime.advanced(from: store.streamTime, quietMs: quiet)
        guard target > store.streamTime, windows.isValid(eventTime: target) else { return false }
        store.advance(to: target)
        let closeTime = saturatingSub(target, windows.graceMs)
        if earliestEnd <= closeTime { closeWindows(closeTime) }
        return true
    }
    var idleStreamTime = IdleStreamTime()
    override var emitsWithoutInput: Bool { emit.idleMs != nil && earliestEnd != .max }
    override var wantsPunctuation: Bool { emitsWithoutInput }

    override func process(_ record: StreamRecord) {
        guard let key = record.key, record.value != nil else { return }
        let t = record.timestamp
        // Negative times (Kafka's -1 = no timestamp) and times so large that `t + size + grace`
        // would overflow are not event times: skipped and counted, never a trap. In range, none
        // of the arithmetic below can overflow (0 <= start <= t, end <= t + size).
        guard windows.isValid(eventTime: t) else { context.counters.timestampOutOfRange += 1; return }
        guard key.count <= StateLimits.maxKeyBytes else { context.counters.keyTooLong += 1; return }
        store.advance(to: t)
        let closeTime = saturatingSub(store.streamTime, windows.graceMs)
        var start = windows.lastStart(containing: t)
        let agg = aggregate
        var any = false
        while start > t - windows.sizeMs && start >= 0 {
            let end = start + windows.sizeMs
            if end > closeTime {
                any = true
                let new = store.update(WindowStore<V>.Key(start: start, key: key), timestamp: t) { agg(record, $0) }
                if end < earliestEnd { earliestEnd = end }
                if emit == .onUpdate {
                    var out = record
                    let w = Window(start: start, end: end)
                    out.key = WindowedKey.encode(key, w)
                    out.window = w
                    out.value = new?.stateBytes
                    out.headers = []
                    forward(out)
                }
            }
            start -= windows.advanceMs
        }
        if !any { context.counters.lateDropped += 1 }
        if earliestEnd <= closeTime { closeWindows(closeTime) }
    }

    /// Emits (emit-final) and evicts every window whose end + grace has passed, in (start, key) order.
    func closeWindows(_ closeTime: Int64) {
        var closed: [(WindowStore<V>.Key, WindowStore<V>.Entry)] = []
        var nextEarliest = Int64.max
        for (k, e) in store.map where e.value != nil {
            let end = k.start &+ windows.sizeMs  // starts in the store come from valid event times
            if end <= closeTime { closed.append((k, e)) } else if end < nextEarliest { nextEarliest = end }
        }
        earliestEnd = nextEarliest
        guard !closed.isEmpty else { return }
        closed.sort { $0.0.start != $1.0.start ? $0.0.start < $1.0.start : $0.0.key.lexicographicallyPrecedes($1.0.key) }
        for (k, e) in closed {
            store.remove(k)
            if emit.isFinal, let v = e.value {
                let w = Window(start: k.start, end: k.start &+ windows.sizeMs)
                var out = StreamRecord(key: WindowedKey.encode(k.key, w), value: v.stateBytes, timestamp: e.timestamp)
                out.window = w
                forward(out)
            }
        }
    }
}

/// Session window aggregation: sessions of a key merge when records fall within the inactivity gap.
final class SessionAggregateNode<V: StateValue>: ProcessorNode {
    let store: SessionStore<V>
    let windows: SessionWindows
    let emit: EmitStrategy
    let aggregate: @Sendable (StreamRecord, V?) -> V
    let merge: @Sendable (V, V) -> V
    unowned let context: TaskContext
    var earliestEnd: Int64 = .min

    init(store: SessionStore<V>, windows: SessionWindows, emit: EmitStrategy, context: TaskContext,
         aggregate: @escaping @Sendable (StreamRecord, V?) -> V, merge: @escaping @Sendable (V, V) -> V) {
        self.store = store
        self.windows = windows
        self.emit = emit
        self.context = context
        self.aggregate = aggregate
        self.merge = merge
        super.init()
        earliestEnd = store.map.values.flatMap { $0.sessions.map(\.end) }.min() ?? .max
        if let every = emit.punctuationMs { context.schedule(self, everyMs: every) }
    }

    /// `.onWindowCloseOrIdle`: as for time windows.
    override func punctuate(wallClockMs: Int64, monotonicMs: Int64) -> Bool {
        guard let idle = emit.idleMs, store.streamTime != .min else { return false }
        let quiet = monotonicMs &- context.lastInputMonotonicMs
        guard quiet >= idle else { return false }
        let target = idleStreamTime.advanced(from: store.streamTime, quietMs: quiet)
        guard target > store.streamTime, windows.isValid(eventTime: target) else { return false }
        store.advance(to: target)
        let closeTime = windows.closeTime(streamTime: target)
        if earliestEnd < closeTime { closeSessions(closeTime) }
        return true
    }
    var idleStreamTime = IdleStreamTime()
    override var emitsWithoutInput: Bool { emit.idleMs != nil && earliestEnd != .max }
    override var wantsPunctuation: Bool { emitsWithoutInput }

    override func process(_ record: StreamRecord) {
        guard let key = record.key, record.value != nil else { return }
        let t = record.timestamp
        // As for time windows: negative or overflowing event times are skipped and counted. In
        // range, `end + gap (+ grace)` and `start - gap` cannot overflow.
        guard windows.isValid(eventTime: t) else { context.counters.timestampOutOfRange += 1; return }
        guard key.count <= StateLimits.maxKeyBytes else { context.counters.keyTooLong += 1; return }
        store.advance(to: t)
        let closeTime = windows.closeTime(streamTime: store.streamTime)
        var sessions = store.sessions(key)
        var start = t, end = t
        var merged: V?
        var removed: [Window] = []
        var kept: [SessionStore<V>.Session] = []
        for s in sessions {
            // Written around t (valid, so t ± gap cannot overflow) rather than around stored bounds.
            if s.start <= t + windows.inactivityGapMs && t - windows.inactivityGapMs <= s.end {
                start = min(start, s.start)
                end = max(end, s.end)
                merged = merged.map { merge($0, s.value) } ?? s.value
                removed.append(Window(start: s.start, end: s.end))
            } else {
                kept.append(s)
            }
        }
        // Late: the merged session closed already (its end + gap + grace is before stream time:
        // until then a record could still extend it, as in Kafka Streams).
        if end < closeTime {
            context.counters.lateDropped += 1
            if earliestEnd < closeTime { closeSessions(closeTime) }
            return
        }
        let value = aggregate(record, merged)
        kept.append(SessionStore<V>.Session(start: start, end: end, value: value))
        kept.sort { $0.start < $1.start }
        sessions = kept
        store.set(key, sessions)
        if end < earliestEnd { earliestEnd = end }
        if emit == .onUpdate {
            let w = Window(start: start, end: end)
            for old in removed where old != w {
                var tomb = StreamRecord(key: WindowedKey.encode(key, old), value: nil, timestamp: t)
                tomb.window = old
                forward(tomb)
            }
            var out = record
            out.key = WindowedKey.encode(key, w)
            out.window = w
            out.value = value.stateBytes
            out.headers = []
            forward(out)
        }
        if earliestEnd < closeTime { closeSessions(closeTime) }
    }

    func closeSessions(_ closeTime: Int64) {
        var closed: [(key: [UInt8], session: SessionStore<V>.Session)] = []
        var nextEarliest = Int64.max
        var changed: [([UInt8], [SessionStore<V>.Session])] = []
        for (k, e) in store.map where !e.sessions.isEmpty {
            var keep: [SessionStore<V>.Session] = []
            for s in e.sessions {
                if s.end < closeTime { closed.append((k, s)) } else {
                    keep.append(s)
                    nextEarliest = min(nextEarliest, s.end)
                }
            }
            if keep.count != e.sessions.count { changed.append((k, keep)) }
        }
        earliestEnd = nextEarliest
        for (k, keep) in changed { store.set(k, keep) }
        guard emit.isFinal else { return }
        closed.sort { $0.session.start != $1.session.start ? $0.session.start < $1.session.start : $0.key.lexicographicallyPrecedes($1.key) }
        for (k, s) in closed {
            let w = Window(start: s.start, end: s.end)
            var out = StreamRecord(key: WindowedKey.encode(k, w), value: s.value.stateBytes, timestamp: s.end)
            out.window = w
            forward(out)
        }
    }
}
