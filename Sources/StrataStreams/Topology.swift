import StrataBroker
import StrataLog

/// Tumbling (advance = size) or hopping (advance < size) windows over event time, aligned to the
/// epoch: `[k·advance, k·advance + size)`. A record is late, and dropped, when the end of every
/// window it belongs to plus `grace` is at or before the stream time (the largest event time the
/// aggregation has seen). Event times must be `>= 0` (others are skipped, `metrics.timestampOutOfRange`).
public struct TimeWindows: Sendable, Equatable {
    public let sizeMs: Int64
    public let advanceMs: Int64
    public let graceMs: Int64

    public static func tumbling(sizeMs: Int64, graceMs: Int64 = 0) -> TimeWindows {
        TimeWindows(sizeMs: sizeMs, advanceMs: sizeMs, graceMs: graceMs)
    }

    public static func hopping(sizeMs: Int64, advanceMs: Int64, graceMs: Int64 = 0) -> TimeWindows {
        TimeWindows(sizeMs: sizeMs, advanceMs: advanceMs, graceMs: graceMs)
    }

    init(sizeMs: Int64, advanceMs: Int64, graceMs: Int64) {
        precondition(sizeMs > 0 && advanceMs > 0 && advanceMs <= sizeMs && graceMs >= 0, "invalid window sizes")
        self.sizeMs = sizeMs
        self.advanceMs = advanceMs
        self.graceMs = graceMs
    }

    /// Start of the latest window containing `t`.
    @inline(__always) func lastStart(containing t: Int64) -> Int64 {
        let r = t % advanceMs
        return t - (r < 0 ? r + advanceMs : r)
    }

    /// Whether `t` is an event time windows can hold: not negative (Kafka's -1 means "no
    /// timestamp") and small enough that `t + size + grace` does not overflow.
    public func isValid(eventTime t: Int64) -> Bool { t >= 0 && t <= Int64.max - sizeMs - graceMs }

    /// Every window containing `t`, earliest first (none for an invalid event time).
    public func windows(containing t: Int64) -> [Window] {
        guard isValid(eventTime: t) else { return [] }
        var out: [Window] = []
        var s = lastStart(containing: t)
        while s > t - sizeMs && s >= 0 {
            out.append(Window(start: s, end: s + sizeMs))
            s -= advanceMs
        }
        return out.reversed()
    }
}

/// Session windows: a key's records closer than `inactivityGapMs` belong to one session
/// `[first, last]`; a record bridging two sessions merges them. A session is closed once its
/// last event time plus `inactivityGapMs` plus `graceMs` is before the stream time (until then a
/// record may still extend it); a record whose (merged) session would be closed is late and
/// dropped. Event times must be `>= 0` (others are skipped, `metrics.timestampOutOfRange`).
public struct SessionWindows: Sendable, Equatable {
    public let inactivityGapMs: Int64
    public let graceMs: Int64
    public init(inactivityGapMs: Int64, graceMs: Int64 = 0) {
        precondition(inactivityGapMs > 0 && graceMs >= 0, "invalid session window")
        self.inactivityGapMs = inactivityGapMs
        self.graceMs = graceMs
    }

    /// Whether `t` is an event time sessions can hold: `>= 0` and `t + gap + grace` does not overflow.
    public func isValid(eventTime t: Int64) -> Bool {
        let (room, o) = (Int64.max - inactivityGapMs).subtractingReportingOverflow(graceMs)
        return t >= 0 && !o && t <= room
    }

    /// Sessions ending before this are closed (Kafka: stream time − grace − gap).
    func closeTime(streamTime: Int64) -> Int64 { saturatingSub(saturatingSub(streamTime, graceMs), inactivityGapMs) }
}

public enum StreamsError: Error, CustomStringConvertible, Sendable {
    case invalidTopology(String)
    case missingSourceTopic(String)
    case notCoPartitioned(String)
    case alreadyStarted
    case notRunning
    /// A source topic was deleted (or deleted and recreated) while the application ran.
    case sourceTopicGone(String)

    public var description: String {
        switch self {
        case .invalidTopology(let why): return "invalid topology: \(why)"
        case .missingSourceTopic(let t): return "source topic '\(t)' does not exist (create it before starting the application)"
        case .notCoPartitioned(let why): return "sources are not co-partitioned: \(why)"
        case .alreadyStarted: return "the application is already running"
        case .notRunning: return "the application is not running"
        case .sourceTopicGone(let t):
            return "source topic '\(t)' was deleted or recreated while the application ran (a recreated topic restarts its offsets: use a new applicationId)"
        }
    }
}

/// The layout of a state store (how its entries are encoded in LMDB and the changelog).
enum StoreKind: Sendable, Equatable {
    case keyValue
    case window(sizeMs: Int64)
    case session
}

enum NodeKind: Sendable {
    case source(topics: [String], extractor: TimestampExtractor)
    case processor(@Sendable (TaskContext) -> ProcessorNode)
    case sink(topic: String)
}

struct NodeDef: Sendable {
    let id: Int
    let name: String
    var parents: [Int]
    let kind: NodeKind
    /// Stores this node reads or writes (nodes sharing a store run in one task).
    let stores: [String]
}

/// A group of connected processors: it runs as one task per partition of its (co-partitioned) sources.
public struct Subtopology: Sendable {
    public let id: Int
    let nodeIDs: [Int]
    /// Source topics (internal ones as `$name`, resolved per application).
    public let sourceTopics: [String]
    public let sinkTopics: [String]
    /// Store names, sorted: their index is their tag in the changelog and LMDB keys.
    public let stores: [String]
}

/// Declares a topology: sources, operators and sinks. Build it once, then run it with `StreamsApp`.
///
/// ```swift
/// let b = StreamsBuilder()
/// b.stream("orders", timestamp: .jsonField("ts"))
///     .filter { $0.jsonString("status") == "placed" }
///     .groupBy(name: "by-product") { $0.jsonString("product") }
///     .windowedBy(.tumbling(sizeMs: 60_000, graceMs: 5_000))
///     .count("orders-per-minute", emit: .onWindowClose)
///     .toStream()
///     .to("orders-per-minute")
/// let topology = try b.build()
/// ```
public final class StreamsBuilder {
    var nodes: [NodeDef] = []
    private var streamsByTopic: [String: Int] = [:]
    private var storeNames: Set<String> = []
    var storeKinds: [String: StoreKind] = [:]
    private var problems: [String] = []

    public init() {}

    func add(_ name: String, parents: [Int], stores: [String] = [], _ kind: NodeKind) -> Int {
        let id = nodes.count
        nodes.append(NodeDef(id: id, name: "\(id)-\(name)", parents: parents, kind: kind, stores: stores))
        return id
    }

    func problem(_ why: String) { problems.append(why) }

    func registerStore(_ name: String, _ kind: StoreKind = .keyValue) {
        if !Topology.isValidName(name) { problems.append("store name '\(name)' must match [A-Za-z0-9._-]+") }
        if !storeNames.insert(name).inserted { problems.append("store name '\(name)' is used twice") }
        storeKinds[name] = kind
    }

    /// A stream of the records of `topics` (all partitions), with event time from `timestamp`.
    public func stream(_ topics: String..., timestamp: TimestampExtractor = .recordTimestamp) -> KStream {
        stream(topics, timestamp: timestamp)
    }

    public func stream(_ topics: [String], timestamp: TimestampExtractor = .recordTimestamp) -> KStream {
        let key = topics.joined(separator: ",")
        if let id = streamsByTopic[key] { return KStream(builder: self, node: id) }
        for t in topics where streamsByTopic.keys.contains(where: { $0.split(separator: ",").contains(Substring(t)) }) {
            problems.append("topic '\(t)' is a source twice")
        }
        let id = add("source", parents: [], .source(topics: topics, extractor: timestamp))
        streamsByTopic[key] = id
        return KStream(builder: self, node: id)
    }

    /// A table of `topic` (normally compacted): the latest value per key; a null value deletes the
    /// key. Materialized in `storeName` (default `<topic>-table`), restored like any state store.
    public func table(_ topic: String, storeName: String? = nil, timestamp: TimestampExtractor = .recordTimestamp) -> KTable {
        let store = storeName ?? "\(topic)-table"
        registerStore(store)
        let source = stream(topic, timestamp: timestamp)
        let id = add("table", parents: [source.node], stores: [store], .processor { ctx in
            TableSourceNode(store: ctx.store(store) { KeyValueStore<[UInt8]>(name: store, restored: $0) }, context: ctx)
        })
        return KTable(builder: self, node: id, storeName: store)
    }

    public func build() throws -> Topology {
        if !problems.isEmpty { throw StreamsError.invalidTopology(problems.joined(separator: "; ")) }
        return try Topology(nodes: nodes, storeKinds: storeKinds)
    }
}

/// A stream of records (Kafka's KStream). Operators return new streams; nothing runs until the
/// built topology is started.
public struct KStream {
    let builder: StreamsBuilder
    let node: Int
    /// Whether an operator since the source (or the last repartition) may have changed keys
    /// (`selectKey`, `map`, `flatMap`): records may then sit in a partition their key does not
    /// decide, and `groupByKey`/`join` repartition first, as Kafka Streams does.
    let keyChanged: Bool

    init(builder: StreamsBuilder, node: Int, keyChanged: Bool = false) {
        self.builder = builder
        self.node = node
        self.keyChanged = keyChanged
    }

    func then(_ name: String, changesKey: Bool = false, _ make: @escaping @Sendable (TaskContext) -> ProcessorNode,
              stores: [String] = []) -> KStream {
        KStream(builder: builder, node: builder.add(name, parents: [node], stores: stores, .processor(make)),
                keyChanged: keyChanged || changesKey)
    }

    /// Transforms each record (key, value, timestamp, headers). A later `groupByKey` or `join`
    /// repartitions (the key may have changed).
    public func map(_ f: @escaping @Sendable (StreamRecord) -> StreamRecord) -> KStream {
        then("map", changesKey: true) { _ in MapNode(f) }
    }

    /// Replaces each record's value.
    public func mapValues(_ f: @escaping @Sendable (StreamRecord) -> [UInt8]?) -> KStream {
        then("mapValues") { _ in MapNode { $0.withValue(f($0)) } }
    }

    /// Replaces each record's value with text (UTF-8), e.g. a JSON string built with `JSONObjectWriter`.
    public func mapValues(_ f: @escaping @Sendable (StreamRecord) -> String?) -> KStream {
        then("mapValues") { _ in MapNode { $0.withValue(f($0)) } }
    }

    /// Replaces each record's key. Records do not move by themselves: a later `groupByKey` or
    /// `join` repartitions first (through `<applicationId>-<name>-repartition`), as in Kafka
    /// Streams; `to(topic)` partitions by the new key anyway.
    public func selectKey(_ f: @escaping @Sendable (StreamRecord) -> [UInt8]?) -> KStream {
        then("selectKey", changesKey: true) { _ in MapNode { $0.withKey(f($0)) } }
    }

    /// Replaces each record's key with text (UTF-8), e.g. `{ $0.jsonString("user") }`.
    public func selectKey(_ f: @escaping @Sendable (StreamRecord) -> String?) -> KStream {
        then("selectKey", changesKey: true) { _ in MapNode { $0.withKey(f($0)) } }
    }

    public func filter(_ p: @escaping @Sendable (StreamRecord) -> Bool) -> KStream {
        then("filter") { _ in FilterNode(p) }
    }

    public func filterNot(_ p: @escaping @Sendable (StreamRecord) -> Bool) -> KStream {
        then("filterNot") { _ in FilterNode { !p($0) } }
    }

    /// Zero or more records per record.
    public func flatMap(_ f: @escaping @Sendable (StreamRecord) -> [StreamRecord]) -> KStream {
        then("flatMap", changesKey: true) { _ in FlatMapNode(f) }
    }

    /// Calls `f` for each record and passes it on unchanged.
    public func peek(_ f: @escaping @Sendable (StreamRecord) -> Void) -> KStream {
        then("peek") { _ in PeekNode(f) }
    }

    /// One stream per predicate; each record goes to the first branch whose predicate holds (and
    /// is dropped when none does).
    public func branch(_ predicates: [@Sendable (StreamRecord) -> Bool]) -> [KStream] {
        let b = then("branch") { _ in BranchNode(predicates) }
        return predicates.indices.map { i in b.then("branch-\(i)") { _ in PassNode() } }
    }

    /// The records of both streams, interleaved as they are processed.
    public func merge(_ other: KStream) -> KStream {
        precondition(other.builder === builder, "streams of different builders")
        return KStream(builder: builder, node: builder.add("merge", parents: [node, other.node], .processor { _ in PassNode() }),
                       keyChanged: keyChanged || other.keyChanged)
    }

    /// Runs your own processor: `process` gets each record and may emit any number of records;
    /// with `punctuateEveryMs`, `punctuate` is also called about that often on the wall clock
    /// (whether or not records arrive), and may emit too — Kafka Streams' wall-clock
    /// punctuation. `make` is called once per task. The processor's own fields are not state
    /// stores: they are not restored after a restart (keep what must survive in an aggregation).
    /// Emitted records may carry new keys: a later `groupByKey`/`join` repartitions.
    public func process(_ name: String = "process", punctuateEveryMs: Int64? = nil,
                        _ make: @escaping @Sendable () -> any StreamProcessor) -> KStream {
        if let every = punctuateEveryMs, every <= 0 { builder.problem("punctuateEveryMs must be > 0") }
        return then(name, changesKey: true) { ctx in
            let node = CustomProcessorNode(make())
            if let every = punctuateEveryMs { ctx.schedule(node, everyMs: every) }
            return node
        }
    }

    /// Writes each record to `topic`, partitioned by key (murmur2, as Kafka's producer does).
    public func to(_ topic: String) {
        _ = builder.add("sink", parents: [node], .sink(topic: topic))
    }

    /// Writes the records to the internal topic `<applicationId>-<name>-repartition` and reads them
    /// back, so that each lands in the partition (and task) of its current key.
    public func repartition(name: String) -> KStream {
        if !Topology.isValidName(name) { builder.problem("repartition name '\(name)' must match [A-Za-z0-9._-]+") }
        let topic = "$\(name)-repartition"
        _ = builder.add("repartition-sink", parents: [node], .sink(topic: topic))
        let source = builder.add("repartition-source", parents: [], .source(topics: [topic], extractor: .recordTimestamp))
        return KStream(builder: builder, node: source)
    }

    /// Repartitions if keys may have changed since the source (`name`, or one derived from the
    /// node's position in the topology — stable as long as the topology code is).
    func repartitionedIfKeyChanged(_ name: String?) -> KStream {
        keyChanged ? repartition(name: name ?? "rekey-\(node)") : self
    }

    /// Groups by the current key. After an operator that may change keys (`selectKey`, `map`,
    /// `flatMap`, `process`) the records first go through the repartition topic
    /// `<applicationId>-<name>-repartition` (default name `rekey-<node>`), so that each key's
    /// records meet in one task, as in Kafka Streams; otherwise nothing moves.
    public func groupByKey(name: String? = nil) -> KGroupedStream {
        KGroupedStream(builder: builder, node: repartitionedIfKeyChanged(name).node)
    }

    /// Groups by a new key: records are re-keyed and sent through `<applicationId>-<name>-repartition`.
    /// Records whose new key is nil are dropped.
    public func groupBy(name: String, _ key: @escaping @Sendable (StreamRecord) -> [UInt8]?) -> KGroupedStream {
        let rekeyed = then("groupBy") { _ in FlatMapNode { r in key(r).map { [r.withKey($0)] } ?? [] } }
        return KGroupedStream(builder: builder, node: rekeyed.repartition(name: name).node)
    }

    /// Groups by a new text key (UTF-8), e.g. `groupBy(name: "by-user") { $0.jsonString("user") }`.
    public func groupBy(name: String, _ key: @escaping @Sendable (StreamRecord) -> String?) -> KGroupedStream {
        groupBy(name: name) { (r: StreamRecord) -> [UInt8]? in key(r).map { Array($0.utf8) } }
    }

    /// Inner stream–table join: each record whose key is in the table gets
    /// `joiner(record, tableValue)` as its value; others are dropped. Stream and table must be
    /// co-partitioned (same partition count, same keys → same partition).
    public func join(_ table: KTable, _ joiner: @escaping @Sendable (StreamRecord, [UInt8]) -> [UInt8]?) -> KStream {
        joinNode(table, left: false) { r, v in v.flatMap { joiner(r, $0) } }
    }

    /// Left stream–table join: every record passes, with `joiner(record, tableValue or nil)`.
    public func leftJoin(_ table: KTable, _ joiner: @escaping @Sendable (StreamRecord, [UInt8]?) -> [UInt8]?) -> KStream {
        joinNode(table, left: true, joiner)
    }

    private func joinNode(_ table: KTable, left: Bool, _ joiner: @escaping @Sendable (StreamRecord, [UInt8]?) -> [UInt8]?) -> KStream {
        guard let store = table.storeName else {
            builder.problem("only tables of topics and non-windowed aggregations can be joined")
            return self
        }
        // Records whose key may have changed move to the table's partition for their key first.
        return repartitionedIfKeyChanged(nil).then(left ? "leftJoin" : "join", { ctx in
            // The table's node (a topic table or an aggregation, of any value type) has a smaller
            // id, so it was instantiated first and created the store.
            let s: AnyStateStore = ctx.stores[store] ?? ctx.store(store) { KeyValueStore<[UInt8]>(name: store, restored: $0) }
            return JoinNode(store: s, left: left, joiner: joiner)
        }, stores: [store])
    }
}

/// A grouped stream, ready for an aggregation.
public struct KGroupedStream {
    let builder: StreamsBuilder
    let node: Int

    func aggregateNode<V: StateValue>(_ store: String, _ type: V.Type, _ aggregate: @escaping @Sendable (StreamRecord, V?) -> V) -> KTable {
        builder.registerStore(store)
        let id = builder.add("aggregate", parents: [node], stores: [store], .processor { ctx in
            AggregateNode(store: ctx.store(store) { KeyValueStore<V>(name: store, restored: $0) }, context: ctx, aggregate: aggregate)
        })
        return KTable(builder: builder, node: id, storeName: store)
    }

    /// Records per key (values: decimal text).
    public func count(_ store: String) -> KTable {
        aggregateNode(store, Int64.self) { _, c in (c ?? 0) + 1 }
    }

    /// Combines the values of a key: the first value as is, then `reducer(aggregate, value)`.
    public func reduce(_ store: String, _ reducer: @escaping @Sendable ([UInt8], [UInt8]) -> [UInt8]) -> KTable {
        aggregateNode(store, [UInt8].self) { r, agg in agg.map { reducer($0, r.value!) } ?? r.value! }
    }

    /// Folds the records of a key into a `V`, starting from `initializer()`.
    public func aggregate<V: StateValue>(_ store: String, initializer: @escaping @Sendable () -> V,
                                         _ aggregator: @escaping @Sendable (StreamRecord, V) -> V) -> KTable {
        aggregateNode(store, V.self) { r, agg in aggregator(r, agg ?? initializer()) }
    }

    public func windowedBy(_ windows: TimeWindows) -> TimeWindowedStream { TimeWindowedStream(builder: builder, node: node, windows: windows) }

    public func windowedBy(_ windows: SessionWindows) -> SessionWindowedStream { SessionWindowedStream(builder: builder, node: node, windows: windows) }
}

/// A grouped stream cut into tumbling or hopping windows.
public struct TimeWindowedStream {
    let builder: StreamsBuilder
    let node: Int
    let windows: TimeWindows

    func windowNode<V: StateValue>(_ store: String, _ emit: EmitStrategy, _ type: V.Type,
                                   _ aggregate: @escaping @Sendable (StreamRecord, V?) -> V) -> KTable {
        builder.registerStore(store, .window(sizeMs: windows.sizeMs))
        if let idle = emit.idleMs, idle < 0 { builder.problem("onWindowCloseOrIdle needs idleMs >= 0") }
        let windows = self.windows
        let id = builder.add("window-aggregate", parents: [node], stores: [store], .processor { ctx in
            WindowAggregateNode(store: ctx.store(store) { WindowStore<V>(name: store, restored: $0) }, windows: windows, emit: emit,
                                context: ctx, aggregate: aggregate)
        })
        return KTable(builder: builder, node: id, storeName: nil)
    }

    public func count(_ store: String, emit: EmitStrategy = .onUpdate) -> KTable {
        windowNode(store, emit, Int64.self) { _, c in (c ?? 0) + 1 }
    }

    public func reduce(_ store: String, emit: EmitStrategy = .onUpdate, _ reducer: @escaping @Sendable ([UInt8], [UInt8]) -> [UInt8]) -> KTable {
        windowNode(store, emit, [UInt8].self) { r, agg in agg.map { reducer($0, r.value!) } ?? r.value! }
    }

    public func aggregate<V: StateValue>(_ store: String, emit: EmitStrategy = .onUpdate, initializer: @escaping @Sendable () -> V,
                                         _ aggregator: @escaping @Sendable (StreamRecord, V) -> V) -> KTable {
        windowNode(store, emit, V.self) { r, agg in aggregator(r, agg ?? initializer()) }
    }
}

/// A grouped stream cut into session windows.
public struct SessionWindowedStream {
    let builder: StreamsBuilder
    let node: Int
    let windows: SessionWindows

    func sessionNode<V: StateValue>(_ store: String, _ emit: EmitStrategy, _ aggregate: @escaping @Sendable (StreamRecord, V?) -> V,
                                    merge: @escaping @Sendable (V, V) -> V) -> KTable {
        builder.registerStore(store, .session)
        if let idle = emit.idleMs, idle < 0 { builder.problem("onWindowCloseOrIdle needs idleMs >= 0") }
        let windows = self.windows
        let id = builder.add("session-aggregate", parents: [node], stores: [store], .processor { ctx in
            SessionAggregateNode(store: ctx.store(store) { SessionStore<V>(name: store, restored: $0) }, windows: windows, emit: emit,
                                 context: ctx, aggregate: aggregate, merge: merge)
        })
        return KTable(builder: builder, node: id, storeName: nil)
    }

    public func count(_ store: String, emit: EmitStrategy = .onUpdate) -> KTable {
        sessionNode(store, emit, { (_, c: Int64?) in (c ?? 0) + 1 }, merge: { $0 + $1 })
    }

    /// `reducer` also merges two sessions' values when a record bridges them.
    public func reduce(_ store: String, emit: EmitStrategy = .onUpdate, _ reducer: @escaping @Sendable ([UInt8], [UInt8]) -> [UInt8]) -> KTable {
        sessionNode(store, emit, { (r, agg: [UInt8]?) in agg.map { reducer($0, r.value!) } ?? r.value! }, merge: reducer)
    }

    /// `merger` combines the aggregates of two sessions that a record joins into one.
    public func aggregate<V: StateValue>(_ store: String, emit: EmitStrategy = .onUpdate, initializer: @escaping @Sendable () -> V,
                                         _ aggregator: @escaping @Sendable (StreamRecord, V) -> V,
                                         merger: @escaping @Sendable (V, V) -> V) -> KTable {
        sessionNode(store, emit, { r, agg in aggregator(r, agg ?? initializer()) }, merge: merger)
    }
}

/// A changelog stream of updates per key (Kafka's KTable): the result of an aggregation, or a
/// topic read as a table. Windowed tables key their records `<key>@<start>-<end>`.
public struct KTable {
    let builder: StreamsBuilder
    let node: Int
    /// Set when the table's latest values are queryable by key (tables and non-windowed
    /// aggregations), which is what `join` needs.
    let storeName: String?

    /// The table's updates as a stream.
    public func toStream() -> KStream { KStream(builder: builder, node: node) }
}

/// A built topology: its nodes and their split into subtopologies (connected components, cut at
/// repartition topics). Immutable and shareable between application instances.
public final class Topology: Sendable, CustomStringConvertible {
    let nodes: [NodeDef]
    public let subtopologies: [Subtopology]
    /// What kind of store each name is (for interactive queries).
    let storeKinds: [String: StoreKind]

    static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x2D
        }
    }

    /// Internal topics are written `$suffix` in the topology and named `<applicationId>-suffix`.
    static func resolve(_ topic: String, applicationId: String) -> String {
        topic.hasPrefix("$") ? "\(applicationId)-\(topic.dropFirst())" : topic
    }

    static func changelogSuffix(_ stores: [String]) -> String { "$\(stores.joined(separator: "_"))-changelog" }

    init(nodes: [NodeDef], storeKinds: [String: StoreKind] = [:]) throws {
        self.nodes = nodes
        self.storeKinds = storeKinds
        // Union-find over parent edges and shared stores.
        var parent = Array(nodes.indices)
        func find(_ x: Int) -> Int {
            var x = x
            while parent[x] != x { parent[x] = parent[parent[x]]; x = parent[x] }
            return x
        }
        func union(_ a: Int, _ b: Int) { parent[find(a)] = find(b) }
        var storeOwner: [String: Int] = [:]
        for n in nodes {
            for p in n.parents { union(n.id, p) }
            for s in n.stores {
                if let o = storeOwner[s] { union(n.id, o) } else { storeOwner[s] = n.id }
            }
        }
        var groups: [Int: [Int]] = [:]
        for n in nodes { groups[find(n.id), default: []].append(n.id) }
        let ordered = groups.values.map { $0.sorted() }.sorted { $0[0] < $1[0] }
        var subs: [Subtopology] = []
        for ids in ordered {
            var sources: [String] = []
            var sinks: [String] = []
            var stores: Set<String> = []
            for id in ids {
                switch nodes[id].kind {
                case .source(let topics, _): sources += topics
                case .sink(let topic): sinks.append(topic)
                case .processor: break
                }
                stores.formUnion(nodes[id].stores)
            }
            if sources.isEmpty { continue }  // nothing feeds it (cannot happen through the builder)
            subs.append(Subtopology(id: subs.count, nodeIDs: ids, sourceTopics: sources, sinkTopics: Array(Set(sinks)).sorted(),
                                    stores: stores.sorted()))
        }
        if subs.isEmpty { throw StreamsError.invalidTopology("no source topics") }
        for s in subs where s.stores.count > 200 { throw StreamsError.invalidTopology("subtopology \(s.id) has more than 200 stores") }
        subtopologies = subs
    }

    public var description: String {
        var out = ""
        for s in subtopologies {
            out += "Sub-topology \(s.id): sources \(s.sourceTopics) sinks \(s.sinkTopics) stores \(s.stores)\n"
            for id in s.nodeIDs {
                let n = nodes[id]
                let children = nodes.filter { $0.parents.contains(id) }.map(\.name)
                out += "  \(n.name)\(children.isEmpty ? "" : " --> \(children.joined(separator: ", "))")\n"
            }
        }
        return out
    }

    /// Instantiates the processors of `subtopology` for one task; returns the source node of each
    /// source topic (resolved names).
    func instantiate(_ sub: Subtopology, context: TaskContext) -> [String: ProcessorNode] {
        var built: [Int: ProcessorNode] = [:]
        var sources: [String: ProcessorNode] = [:]
        for id in sub.nodeIDs {
            let n = nodes[id]
            let p: ProcessorNode
            switch n.kind {
            case .source(let topics, let extractor):
                p = SourceNode(extractor: extractor, context: context)
                for t in topics { sources[context.resolve(t)] = p }
            case .processor(let make): p = make(context)
            case .sink(let topic): p = SinkNode(topic: context.resolve(topic), context: context)
            }
            built[id] = p
        }
        for id in sub.nodeIDs {  // in id order: a branch's outputs become its children in order
            for parentID in nodes[id].parents { built[parentID]?.children.append(built[id]!) }
        }
        return sources
    }
}
