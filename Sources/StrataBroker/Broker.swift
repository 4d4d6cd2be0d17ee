#if canImport(Glibc)
import Glibc
#endif
import StrataCore
import StrataLog
import StrataMetadata
import Synchronization

public enum BrokerError: Error, CustomStringConvertible, Sendable {
    case unknownTopic(String)
    case topicExists(String)
    case invalidTopicName(String)
    case invalidConfig(TopicConfig.Problem)
    case invalidPartitions(String)
    case unknownPartition(topic: String, partition: Int32)
    /// A record of a produce request was refused; nothing of that request was appended.
    case invalidRecord(index: Int, reason: String)
    case log(LogError)
    case metadata(String)
    case readOnly(String)
    /// The partition's files are damaged or missing; it is offline until repaired.
    case partitionOffline(topic: String, partition: Int32, reason: String)
    /// Beyond a limit this broker sets on what a topic may cost (POLICY_VIOLATION).
    case policyViolation(String)

    public var description: String {
        switch self {
        case .unknownTopic(let t): return "unknown topic '\(t)'"
        case .topicExists(let t): return "topic '\(t)' already exists"
        case .invalidTopicName(let why): return why
        case .invalidConfig(let p): return p.description
        case .invalidPartitions(let why): return why
        case .unknownPartition(let t, let p): return "topic '\(t)' has no partition \(p)"
        case .invalidRecord(let i, let why): return "record \(i) refused, nothing appended: \(why)"
        case .log(let e): return e.description
        case .metadata(let why): return "metadata: \(why)"
        case .readOnly(let why): return why
        case .partitionOffline(let t, let p, let why): return "partition \(t)-\(p) is offline: \(why)"
        case .policyViolation(let why): return why
        }
    }
}

/// When a produce is acknowledged. `all` waits for durability as the topic's flush.mode defines it
/// (an fdatasync in `sync` mode); `leader` and `none` return once the batch is in the log.
public enum Acks: String, Sendable { case none = "0", leader = "1", all }

public struct ProduceResult: Sendable, Equatable {
    public let partition: Int32
    public let baseOffset: Int64
    public let recordCount: Int
}

/// A record read back, with its bytes copied out of the log (safe to keep and send anywhere).
public struct ConsumedRecord: Sendable, Equatable {
    public let topic: String
    public let partition: Int32
    public let offset: Int64
    public let timestamp: Int64
    public let key: [UInt8]?
    public let value: [UInt8]?
    public let headers: [ProducerRecord.Header]

    public init(topic: String, partition: Int32, offset: Int64, timestamp: Int64, key: [UInt8]?, value: [UInt8]?,
                headers: [ProducerRecord.Header]) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers
    }
}

public struct PartitionDescription: Sendable {
    public let partition: Int32
    public let logStartOffset: Int64
    public let logEndOffset: Int64
    public let sizeInBytes: Int
    public let segments: Int
    /// Compact topics: what the cleaner last did (from LMDB), and the current dirty ratio.
    public var cleaner: MetadataStore.CleanerRecord?
    public var dirtyRatio: Double?
    /// Why the partition is offline (damaged or missing files), nil when it serves.
    public var offlineReason: String?
    /// Bytes on disk by tier (nil when a cold segment's header could not be read).
    public var tiers: PartitionLog.TierSizes?
}

public struct TopicDescription: Sendable {
    public let name: String
    public let partitions: [PartitionDescription]
    /// Every config with its effective value.
    public let configs: [String: String]
    /// The configs set on this topic (the rest are defaults).
    public let overrides: [String: String]
}

/// Strata's broker: topics and partitions over the log engine, configs and consumer offsets in
/// LMDB, Kafka's key partitioner, produce and long-poll fetch. Embeddable from Swift; the Kafka
/// protocol server and the CLI are its clients.
///
/// One process owns a data directory for writing (`open`); any number of others may read it
/// alongside (`openReadOnly`), seeing new data on `refresh` / fetch.
///
/// `@unchecked Sendable`, and why that is sound: every piece of state shared between threads is a
/// `let` of a Sendable type (Mutex, Atomic, the stores and logs, which synchronise themselves).
/// The few `var`s — `orphanPartitions`, `offsetCommitsAllowed` and the two background workers —
/// are written only inside `open`/`openReadOnly` before the instance is returned to anyone, and the
/// workers once more in `close()`, which the owner calls once after its users are done.
public final class Broker: @unchecked Sendable {
    public struct Options: Sendable {
        public var defaultTopicConfig = TopicConfig()
        public var autoCreateTopics = true
        public var defaultPartitions: Int32 = 1
        /// log.retention.check.interval.ms: how often retention runs in the background (0: never).
        public var retentionCheckIntervalMs: Int64 = 5 * 60 * 1000
        /// log.cold.check.interval.ms (Strata): how often the cold worker looks for segments past
        /// their topic's cold.after.ms (0: never).
        public var coldCheckIntervalMs: Int64 = 60_000
        /// log.cleaner.backoff.ms: how often the cleaner looks for a partition to compact (0: never).
        public var cleanerBackoffMs: Int64 = 15_000
        /// log.cleaner.io.max.bytes.per.second: the cleaner's read budget (0: unlimited).
        public var cleanerMaxBytesPerSecond = 0
        /// The most partitions any topic may have, whatever the settings.
        public static let maxPartitions: Int32 = 10_000
        /// max.partitions.per.topic (Strata): partitions one topic may have (at most `maxPartitions`).
        public var maxPartitionsPerTopic: Int32 = 10_000
        /// max.partitions (Strata): partitions this broker holds in all, `__consumer_offsets`
        /// included. Each costs one descriptor (its active log) and three mappings
        /// (docs/architecture.md, resource costs), so this is what keeps a CreateTopics from
        /// exhausting the process's descriptors or `vm.max_map_count`.
        public var maxPartitionsPerBroker = 12_000
        /// max.segment.bytes (Strata): the largest segment.bytes a topic may set. An active
        /// segment is mapped at its full size (address space, not memory or disk: the file
        /// grows in steps as data arrives).
        public var maxSegmentBytes = 1 << 30
        /// offsets.topic.num.partitions: partitions of `__consumer_offsets`, where commits are
        /// mirrored as Kafka writes them (0: no mirror).
        public var offsetsTopicPartitions: Int32 = 50
        /// group.initial.rebalance.delay.ms: how long an empty consumer group's first join waits
        /// for more members (Kafka's default: 3 s), so consumers started together share the first
        /// generation instead of rebalancing at once.
        public var initialRebalanceDelayMs: Int64 = 3000
        /// Failed SASL authentications from one address within `failedAuthenticationWindowMs`
        /// after which further attempts are refused until the window passes.
        public var maxFailedAuthentications = 5
        public var failedAuthenticationWindowMs: Int64 = 60_000
        /// transaction.max.timeout.ms: the longest transaction.timeout.ms a producer may ask for.
        public var transactionMaxTimeoutMs: Int32 = 900_000
        /// transactional.id.expiration.ms: idle transactional ids are forgotten after this.
        public var transactionalIdExpirationMs: Int64 = 604_800_000
        /// How often the transaction coordinator looks for timed-out transactions (0: never).
        public var transactionCheckIntervalMs: Int64 = 1000
        /// group.consumer.heartbeat.interval.ms / group.consumer.session.timeout.ms (KIP-848 groups).
        public var consumerGroupHeartbeatIntervalMs: Int32 = 5000
        public var consumerGroupSessionTimeoutMs: Int64 = 45_000
        /// The broker settings given explicitly (`serve --config`), by Kafka name, for
        /// DescribeConfigs (STATIC_BROKER_CONFIG vs DEFAULT_CONFIG).
        public var settings: [String: String] = [:]
        public init() {}
    }

    /// One partition of a topic: its log, or why it is offline (a damaged or missing directory).
    /// An offline partition answers KAFKA_STORAGE_ERROR; the others keep serving.
    enum PartitionSlot: Sendable {
        case online(PartitionLog)
        case offline(String)

        var log: PartitionLog? { if case .online(let l) = self { return l } else { return nil } }
    }

    /// A topic's state: immutable, replaced as a whole under the `topics` lock when the topic
    /// changes (configs altered, partitions added), so a reader holding one never sees a
    /// half-made change.
    final class TopicState: Sendable {
        let name: String
        let record: TopicRecord
        let config: TopicConfig
        let partitions: [PartitionSlot]
        /// Shared by every version of one topic's state (round-robin position of keyless produce).
        let stickyCounter: StickyCounter

        final class StickyCounter: Sendable {
            let value = Atomic<Int>(0)
        }

        init(name: String, record: TopicRecord, config: TopicConfig, partitions: [PartitionSlot], stickyCounter: StickyCounter = StickyCounter()) {
            self.name = name
            self.record = record
            self.config = config
            self.partitions = partitions
            self.stickyCounter = stickyCounter
            // Every version of a topic's state is made here (open, create, alter, grow), so the
            // settings its open logs read live follow the config from this one place.
            for slot in partitions { slot.log?.coldFetchCompression = config.coldFetchCompression }
        }

        func replacing(record: TopicRecord? = nil, config: TopicConfig? = nil, partitions: [PartitionSlot]? = nil) -> TopicState {
            TopicState(name: name, record: record ?? self.record, config: config ?? self.config, partitions: partitions ?? self.partitions,
                       stickyCounter: stickyCounter)
        }

        /// The partitions that are online, with their numbers.
        var onlineLogs: [(partition: Int32, log: PartitionLog)] {
            partitions.enumerated().compactMap { p, slot in slot.log.map { (Int32(p), $0) } }
        }
    }

    public let dataDirectory: String
    public let options: Options
    public let isReadOnly: Bool
    public let logManager: LogManager
    public let metadata: MetadataStore
    /// The transaction coordinator's records (Transactions.swift); producer sequence state lives
    /// with each partition's log (`PartitionLog.producerStates`), shared by every way of producing.
    public let transactions: TransactionTable
    /// Failed SASL authentications per client address, shared by every listener.
    public let authFailures: AuthFailureLimiter
    /// Kafka's classic consumer-group coordinator (the Kafka server's JoinGroup/SyncGroup/...),
    /// ticking while the broker is open for writing.
    public let groups: GroupCoordinator
    /// KIP-848's consumer groups (ConsumerGroupHeartbeat), beside the classic ones.
    public let consumerGroups: ConsumerGroupCoordinator
    let consumerOffsetsMirrorFailures = Atomic<Int>(0)
    /// Partition directories found on disk that no topic in the metadata claims (left alone).
    public private(set) var orphanPartitions: [String] = []
    /// Partitions of topics that could not be opened ("topic-p" → why), found at open.
    public var offlinePartitions: [String: String] { offline.withLock { $0 } }
    private let offline = Mutex<[String: String]>([:])
    private let topics: Mutex<[String: TopicState]>
    private let waiters = FetchWaiters()
    /// Serializes topic creation, deletion and alteration (rare, and they touch several stores).
    private let adminLock = Mutex(())
    private var retentionWorker: PeriodicWorker?
    private var cleanerWorker: PeriodicWorker?
    private var coldWorker: PeriodicWorker?
    private var transactionWorker: PeriodicWorker?
    private var consumerGroupWorker: PeriodicWorker?
    /// Warnings from finishing transactions at open (for the server's log).
    public private(set) var transactionRecoveryWarnings: [String] = []
    /// Per partition: the log end offset when it was last compacted (bytes appended since are dirty).
    private let cleanedUpTo = Mutex<[String: Int64]>([:])

    /// What the cleaner has done.
    public struct CleanerStatus: Sendable {
        public var passes = 0
        public var bytesReclaimed = 0
        public var errors = 0
        public var lastError: String?
    }
    private let cleanerState = Mutex(CleanerStatus())
    public var cleanerStatus: CleanerStatus { cleanerState.withLock { $0 } }

    /// What the retention worker has done, for `topics describe` and logs.
    public struct RetentionStatus: Sendable {
        public var runs = 0
        public var segmentsDeleted = 0
        public var bytesDeleted = 0
        public var errors = 0
        public var lastError: String?
        public var lastRunMs: Int64 = 0
    }
    private let retentionState = Mutex(RetentionStatus())
    public var retentionStatus: RetentionStatus { retentionState.withLock { $0 } }

    private init(dataDirectory: String, options: Options, readOnly: Bool, logManager: LogManager, metadata: MetadataStore, topics: [String: TopicState]) {
        self.dataDirectory = dataDirectory
        self.options = options
        self.isReadOnly = readOnly
        self.logManager = logManager
        self.metadata = metadata
        self.topics = Mutex(topics)
        self.groups = GroupCoordinator(initialRebalanceDelayMs: options.initialRebalanceDelayMs)
        self.authFailures = AuthFailureLimiter(maxFailures: options.maxFailedAuthentications, windowMs: options.failedAuthenticationWindowMs)
        self.transactions = TransactionTable(maxTimeoutMs: options.transactionMaxTimeoutMs, idExpirationMs: options.transactionalIdExpirationMs)
        self.consumerGroups = ConsumerGroupCoordinator(heartbeatIntervalMs: options.consumerGroupHeartbeatIntervalMs,
                                                       sessionTimeoutMs: options.consumerGroupSessionTimeoutMs)
    }

    /// A topic's partition count and id, for the consumer-group coordinator's assignors.
    public var topicLookup: ConsumerGroupCoordinator.TopicLookup {
        { [weak self] name in
            guard let self, let count = self.partitionCount(name), let id = self.topicId(name) else { return nil }
            return (count, id)
        }
    }

    /// The topic whose id (`topicId`) is `id`, nil when none.
    public func topicName(forId id: [UInt8]) -> String? { topicNames().first { topicId($0) == id } }

    // MARK: Opening

    /// Opens `dataDirectory` for writing: takes its lock, opens LMDB (`meta/`) and every
    /// partition (recovering after a crash), and creates partitions the metadata lists but the
    /// disk lacks (a crash between the two during topic creation).
    public static func open(dataDirectory: String, options: Options = Options()) throws -> Broker {
        let lock = try DataDirectoryLock.acquire(dataDirectory: dataDirectory)
        let metadata = try MetadataStore(directory: dataDirectory + "/meta")
        var configs: [String: TopicConfig] = [:]
        var records: [String: TopicRecord] = [:]
        for record in try metadata.topics() {
            records[record.name] = record
            configs[record.name] = (try? TopicConfig.parse(record.configs, over: options.defaultTopicConfig)) ?? options.defaultTopicConfig
        }
        let manager = try LogManager.open(dataDirectory: dataDirectory, defaultConfig: options.defaultTopicConfig.log, lock: lock,
                                          configForTopic: { configs[$0]?.log })
        var states: [String: TopicState] = [:]
        var offline: [String: String] = [:]
        for (name, record) in records {
            let config = configs[name]!
            var slots: [PartitionSlot] = []
            for p in 0..<record.partitions {
                let directory = LogManager.partitionDirectoryName(topic: name, partition: p)
                if let log = manager.log(topic: name, partition: p) {
                    slots.append(.online(log))
                } else if let why = manager.offlinePartitions[directory] {
                    slots.append(.offline(why))
                    offline[directory] = why
                } else {
                    // Never recreated silently: committed offsets may point into the lost data.
                    let why = "partition directory logs/\(directory) is missing; `strata inspect --repair` recreates it empty"
                    slots.append(.offline(why))
                    offline[directory] = why
                }
            }
            states[name] = TopicState(name: name, record: record, config: config, partitions: slots)
        }
        let broker = Broker(dataDirectory: dataDirectory, options: options, readOnly: false, logManager: manager, metadata: metadata, topics: states)
        broker.offline.withLock { [offline] in $0 = offline }
        broker.orphanPartitions = manager.partitionNames.filter { name in
            guard let (t, p) = LogManager.splitPartitionDirectory(name), let r = records[t] else { return true }
            return p >= r.partitions
        }
        broker.groups.setGroupStore { [weak broker] group, stored in
            broker?.mirrorGroupToConsumerOffsets(group: group, stored)
        }
        broker.groups.start()
        broker.transactionRecoveryWarnings = try broker.recoverTransactions()
        if options.transactionCheckIntervalMs > 0 {
            let ticks = Atomic<Int>(0)
            let worker = PeriodicWorker(intervalMs: options.transactionCheckIntervalMs) { [weak broker] in
                broker?.tickTransactions()
                // Hanging transactions are rare (a lost record, a hostile client): looked for
                // every tenth tick.
                if ticks.add(1, ordering: .relaxed).newValue % 10 == 0 { broker?.abortHangingTransactions() }
            }
            broker.transactionWorker = worker
            worker.start()
        }
        let groupWorker = PeriodicWorker(intervalMs: 1000) { [weak broker] in
            guard let broker else { return }
            broker.consumerGroups.tick(topics: broker.topicLookup)
        }
        broker.consumerGroupWorker = groupWorker
        groupWorker.start()
        if options.retentionCheckIntervalMs > 0 {
            let worker = PeriodicWorker(intervalMs: options.retentionCheckIntervalMs) { [weak broker] in
                _ = broker?.runRetention()
            }
            broker.retentionWorker = worker
            worker.start()
        }
        if options.coldCheckIntervalMs > 0 {
            let worker = PeriodicWorker(intervalMs: options.coldCheckIntervalMs) { [weak broker] in
                _ = broker?.runColdTier()
            }
            broker.coldWorker = worker
            worker.start()
        }
        if options.cleanerBackoffMs > 0 {
            let cleaner = PeriodicWorker(intervalMs: options.cleanerBackoffMs) { [weak broker] in
                _ = broker?.runCleaner()
            }
            broker.cleanerWorker = cleaner
            cleaner.start()
        }
        return broker
    }

    /// Opens `dataDirectory` for reading next to a writer that may be running. Produce and admin
    /// calls fail with `readOnly`; fetches see the writer's appends (by re-reading the files).
    ///
    /// With `allowOffsetCommits` the metadata store is opened writable so that consumer groups can
    /// commit offsets alongside a running writer: LMDB serializes writers across processes, and
    /// offsets live only in LMDB, never in the log files the writer owns.
    public static func openReadOnly(dataDirectory: String, options: Options = Options(), allowOffsetCommits: Bool = false) throws -> Broker {
        let metadata = try MetadataStore(directory: dataDirectory + "/meta", readOnly: !allowOffsetCommits)
        let manager = try LogManager.openReadOnly(dataDirectory: dataDirectory, defaultConfig: options.defaultTopicConfig.log)
        var states: [String: TopicState] = [:]
        for record in try metadata.topics() {
            let config = (try? TopicConfig.parse(record.configs, over: options.defaultTopicConfig)) ?? options.defaultTopicConfig
            let slots: [PartitionSlot] = (0..<record.partitions).map { p in
                manager.log(topic: record.name, partition: p).map { .online($0) }
                    ?? .offline("partition directory logs/\(LogManager.partitionDirectoryName(topic: record.name, partition: p)) is missing or unreadable")
            }
            states[record.name] = TopicState(name: record.name, record: record, config: config, partitions: slots)
        }
        let broker = Broker(dataDirectory: dataDirectory, options: options, readOnly: true, logManager: manager, metadata: metadata, topics: states)
        broker.offsetCommitsAllowed = allowOffsetCommits
        return broker
    }

    private var offsetCommitsAllowed = true

    /// Resumes every parked long-poll fetch now (server shutdown).
    public func wakeParkedFetches() { waiters.notifyAll() }

    /// Closes every log cleanly (writing the clean-shutdown marker) and wakes parked fetches.
    public func close() throws {
        groups.stop()
        transactionWorker?.stop()
        transactionWorker = nil
        if !isReadOnly { storeAllTransactions() }
        consumerGroupWorker?.stop()
        consumerGroupWorker = nil
        retentionWorker?.stop()
        retentionWorker = nil
        cleanerWorker?.stop()
        cleanerWorker = nil
        coldWorker?.stop()
        coldWorker = nil
        waiters.notifyAll()
        try logManager.close()
    }

    // MARK: Retention

    /// One retention pass over every topic whose cleanup.policy includes `delete`: whole closed
    /// segments past `retention.ms` or beyond `retention.bytes` are deleted (oldest first). A
    /// failure on one partition is counted and reported, and does not stop the others or later runs.
    @discardableResult
    public func runRetention(nowMs: Int64 = wallClockMillis()) -> [String: PartitionLog.RetentionResult] {
        var results: [String: PartitionLog.RetentionResult] = [:]
        let errors = forEachOnlineLog(where: { $0.cleanupPolicy.contains("delete") }) { state, name, log in
            let r = try log.applyRetention(retentionMs: state.config.retentionMs, retentionBytes: state.config.retentionBytes, nowMs: nowMs)
            if r.segmentsDeleted > 0 { results[name] = r }
        }
        retentionState.withLock { s in
            s.runs += 1
            s.lastRunMs = nowMs
            s.segmentsDeleted += results.values.reduce(0) { $0 + $1.segmentsDeleted }
            s.bytesDeleted += results.values.reduce(0) { $0 + $1.bytesDeleted }
            s.errors += errors.count
            if let e = errors.first { s.lastError = e }
        }
        return results
    }

    /// Runs `body` on every online partition of the topics whose config `selects`; a failure
    /// on one is collected ("topic-p: error") and does not stop the others.
    private func forEachOnlineLog(where selects: (TopicConfig) -> Bool,
                                  _ body: (TopicState, String, PartitionLog) throws -> Void) -> [String] {
        var errors: [String] = []
        for state in topics.withLock({ Array($0.values) }) where selects(state.config) {
            for (p, log) in state.onlineLogs {
                do { try body(state, "\(state.name)-\(p)", log) } catch { errors.append("\(state.name)-\(p): \(error)") }
            }
        }
        return errors
    }

    // MARK: Cold tier

    /// What the cold worker has done since the broker started.
    public struct ColdTierStatus: Sendable {
        public var runs = 0
        public var lastRunMs: Int64 = 0
        public var converted = ColdConversionReport()
        public var errors = 0
        public var lastError: String?
    }
    private let coldState = Mutex(ColdTierStatus())
    public var coldTierStatus: ColdTierStatus { coldState.withLock { $0 } }

    /// One cold-tier pass: in every topic with `cold.after.ms` set, closed segments older than
    /// it are rewritten as cold segments (`PartitionLog.convertToCold`). A failure on one
    /// partition is counted and reported, and does not stop the others; the segment stays hot
    /// and is tried again on a later pass.
    @discardableResult
    public func runColdTier(nowMs: Int64 = wallClockMillis()) -> [String: ColdConversionReport] {
        var results: [String: ColdConversionReport] = [:]
        let errors = forEachOnlineLog(where: { $0.coldAfterMs >= 0 }) { state, name, log in
            try log.flush()  // only synced segments convert
            let r = try log.convertToCold(olderThanMs: state.config.coldAfterMs, nowMs: nowMs)
            if r.segmentsConverted > 0 { results[name] = r }
        }
        coldState.withLock { s in
            s.runs += 1
            s.lastRunMs = nowMs
            for r in results.values { s.converted.add(r) }
            s.errors += errors.count
            if let e = errors.first { s.lastError = e }
        }
        return results
    }

    /// One cleaner pass: compacts the filthiest partition of a `compact` topic whose dirty ratio
    /// (closed bytes appended since its last compaction / all closed bytes) is at least the topic's
    /// min.cleanable.dirty.ratio. One partition per pass (bounded concurrency: one cleaner); a
    /// failure is counted and the partition is tried again on a later pass.
    @discardableResult
    public func runCleaner(nowMs: Int64 = wallClockMillis()) -> (partition: String, report: CompactionReport)? {
        var best: (name: String, log: PartitionLog, config: TopicConfig, ratio: Double)?
        for state in topics.withLock({ Array($0.values) }) where state.config.cleanupPolicy.contains("compact") {
            for (p, log) in state.onlineLogs {
                let name = "\(state.name)-\(p)"
                var ratio = dirtyRatio(name: name, log: log)
                // max.compaction.lag.ms: a dirty record older than the lag makes the partition
                // due whatever its dirty ratio (ranked first).
                if ratio > 0, state.config.maxCompactionLagMs < .max, overdue(name: name, log: log, lagMs: state.config.maxCompactionLagMs, nowMs: nowMs) {
                    ratio = 1 + ratio
                }
                if ratio > 0 && (ratio >= state.config.minCleanableDirtyRatio || ratio > 1) && ratio > (best?.ratio ?? -1) {
                    best = (name, log, state.config, ratio)
                }
            }
        }
        guard let best else { return nil }
        var end = best.log.logEndOffset
        // Segments min.compaction.lag.ms keeps out of this pass stay dirty for the next ones.
        if best.config.minCompactionLagMs > 0, let infos = try? best.log.segmentInfos(),
           let young = infos.dropLast().first(where: { nowMs.saturatingSubtract($0.largestTimestamp) < best.config.minCompactionLagMs }) {
            end = min(end, young.baseOffset)
        }
        let (topic, partition) = LogManager.splitPartitionDirectory(best.name)!
        var record = (try? metadata.cleanerRecord(topic: topic, partition: partition)) ?? nil ?? MetadataStore.CleanerRecord()
        do {
            try best.log.flush()
            let report = try best.log.compact(strategy: best.config.compactionStrategy, deleteRetentionMs: best.config.deleteRetentionMs,
                                              nowMs: nowMs, maxBytesPerSecond: options.cleanerMaxBytesPerSecond,
                                              minCompactionLagMs: best.config.minCompactionLagMs)
            cleanedUpTo.withLock { $0[best.name] = end }
            BrokerMetrics.cleanerDuration.recordNanoseconds(Int64(report.seconds * 1e9))
            cleanerState.withLock { s in
                s.passes += 1
                s.bytesReclaimed += report.bytesBefore - report.bytesAfter
            }
            record.cleanedUpTo = end
            record.lastCleanMs = nowMs
            record.bytesReclaimed += Int64(report.bytesBefore - report.bytesAfter)
            record.passes += 1
            try? metadata.putCleanerRecord(topic: topic, partition: partition, record)
            return (best.name, report)
        } catch {
            cleanerState.withLock { s in
                s.errors += 1
                s.lastError = "\(best.name): \(error)"
            }
            record.errors += 1
            record.lastError = "\(error)"
            try? metadata.putCleanerRecord(topic: topic, partition: partition, record)
            return nil
        }
    }

    /// Whether a closed, not yet compacted segment holds records older than `lagMs`.
    private func overdue(name: String, log: PartitionLog, lagMs: Int64, nowMs: Int64) -> Bool {
        guard let infos = try? log.segmentInfos(), infos.count > 1 else { return false }
        let cleaned = cleanedUpTo.withLock { $0[name] } ?? 0
        return infos.dropLast().contains { $0.nextOffset > cleaned && nowMs.saturatingSubtract($0.largestTimestamp) > lagMs }
    }

    private func dirtyRatio(name: String, log: PartitionLog) -> Double {
        guard let infos = try? log.segmentInfos(), infos.count > 1 else { return 0 }
        let closed = infos.dropLast()
        let total = closed.reduce(0) { $0 + $1.sizeInBytes }
        guard total > 0 else { return 0 }
        // The cleaner's checkpoint: in memory, else from LMDB (so a restart does not rescan all).
        var cleaned = cleanedUpTo.withLock { $0[name] }
        if cleaned == nil, let (t, p) = LogManager.splitPartitionDirectory(name),
           let r = (try? metadata.cleanerRecord(topic: t, partition: p)) ?? nil {
            cleaned = r.cleanedUpTo
            cleanedUpTo.withLock { $0[name] = r.cleanedUpTo }
        }
        let cleaned0 = cleaned ?? 0
        let dirty = closed.filter { $0.nextOffset > cleaned0 }.reduce(0) { $0 + $1.sizeInBytes }
        return Double(dirty) / Double(total)
    }

    /// Kafka's DeleteRecords for one partition: records below `offset` are dropped.
    public func deleteRecords(topic: String, partition: Int32, before offset: Int64) throws -> Int64 {
        try requireWritable()
        return try log(topic: topic, partition: partition).deleteRecords(before: offset)
    }

    func requireWritable() throws(BrokerError) {
        if isReadOnly { throw .readOnly("\(dataDirectory) is opened read-only (another process owns it for writing)") }
    }

    // MARK: Topics

    public func createTopic(_ name: String, partitions: Int32? = nil, configs: [String: String] = [:]) throws {
        try requireWritable()
        if let why = TopicName.problem(name) { throw BrokerError.invalidTopicName(why) }
        let count = partitions ?? options.defaultPartitions
        let config: TopicConfig
        do { config = try TopicConfig.parse(configs, over: options.defaultTopicConfig) } catch { throw BrokerError.invalidConfig(error) }
        try adminLock.withLock { _ in
            if topics.withLock({ $0[name] }) != nil { throw BrokerError.topicExists(name) }
            try checkLimits(newTopicPartitions: count, adding: count, config: config)
            let record = TopicRecord(name: name, partitions: count, configs: configs, createdMs: wallClockMillis())
            // Partition directories first, then the metadata: a crash in between leaves orphan
            // directories (reported, and reused by the next creation of the name), never a topic
            // whose partitions are missing (which the next open reports as damage).
            var logs: [PartitionLog] = []
            do {
                for p in 0..<count { logs.append(try logManager.getOrCreateLog(topic: name, partition: p, config: config.log)) }
                try metadata.putTopic(record)
            } catch {
                for p in 0..<count { try? logManager.deleteLog(topic: name, partition: p) }
                throw error
            }
            topics.withLock { $0[name] = TopicState(name: name, record: record, config: config, partitions: logs.map { .online($0) }) }
        }
    }

    public func topicNames() -> [String] { topics.withLock { Array($0.keys) }.sorted() }

    /// Partitions of every topic.
    public var totalPartitions: Int { topics.withLock { $0.values.reduce(0) { $0 + Int($1.record.partitions) } } }

    /// Refuses a topic (or a change to one) beyond this broker's limits: a topic of
    /// `newTopicPartitions` partitions, `adding` of them new, with `config` (nil: unchanged).
    /// Partition counts outside 1...maxPartitionsPerTopic are INVALID_PARTITIONS; the broker
    /// total and segment.bytes are POLICY_VIOLATION, as Kafka's create-topic policies answer.
    public func checkLimits(newTopicPartitions: Int32, adding: Int32, config: TopicConfig?) throws(BrokerError) {
        let perTopic = min(options.maxPartitionsPerTopic, Options.maxPartitions)
        guard newTopicPartitions >= 1, newTopicPartitions <= perTopic else {
            throw .invalidPartitions("partitions must be in 1...\(perTopic) (max.partitions.per.topic), got \(newTopicPartitions)")
        }
        if adding > 0 {
            let total = totalPartitions
            guard total + Int(adding) <= options.maxPartitionsPerBroker else {
                throw .policyViolation("this broker holds \(total) partitions; \(adding) more would pass its limit of \(options.maxPartitionsPerBroker) (max.partitions)")
            }
        }
        if let config, config.log.segmentBytes > options.maxSegmentBytes {
            throw .policyViolation("segment.bytes \(config.log.segmentBytes) is above this broker's limit of \(options.maxSegmentBytes) (max.segment.bytes)")
        }
    }

    public func partitionCount(_ topic: String) -> Int32? { topics.withLock { $0[topic]?.record.partitions } }

    /// A topic's id (Kafka's topic UUID): stable for one creation of the name, different after a
    /// delete and re-create (derived from the name and the creation time; never all zeros).
    public func topicId(_ topic: String) -> [UInt8]? {
        guard let record = topics.withLock({ $0[topic]?.record }) else { return nil }
        func fnv(_ seed: UInt64) -> UInt64 {
            var h = seed
            for b in Array(topic.utf8) + withUnsafeBytes(of: record.createdMs.littleEndian, Array.init) {
                h = (h ^ UInt64(b)) &* 0x100_0000_01b3
            }
            return h == 0 ? 1 : h
        }
        return withUnsafeBytes(of: fnv(0xcbf2_9ce4_8422_2325).bigEndian, Array.init) + withUnsafeBytes(of: fnv(0x84222325_cbf29ce4).bigEndian, Array.init)
    }

    /// The topic's configs set explicitly on it (the rest come from broker defaults).
    public func topicOverrides(_ topic: String) -> [String: String]? { topics.withLock { $0[topic]?.record.configs } }

    public func topicConfig(_ topic: String) -> TopicConfig? { topics.withLock { $0[topic]?.config } }

    public func describeTopic(_ name: String) throws -> TopicDescription {
        guard let state = topics.withLock({ $0[name] }) else { throw BrokerError.unknownTopic(name) }
        if isReadOnly { for (_, log) in state.onlineLogs { try log.refresh() } }
        let compacted = state.config.cleanupPolicy.contains("compact")
        let partitions = state.partitions.enumerated().map { p, slot in
            guard case .online(let log) = slot else {
                guard case .offline(let why) = slot else { fatalError("unreachable") }
                var d = PartitionDescription(partition: Int32(p), logStartOffset: -1, logEndOffset: -1, sizeInBytes: 0, segments: 0)
                d.offlineReason = why
                return d
            }
            var d = PartitionDescription(partition: Int32(p), logStartOffset: log.logStartOffset, logEndOffset: log.logEndOffset,
                                         sizeInBytes: log.sizeInBytes, segments: log.segmentCount)
            d.tiers = try? log.tierSizes()
            if compacted {
                d.cleaner = (try? metadata.cleanerRecord(topic: name, partition: Int32(p))) ?? nil
                d.dirtyRatio = dirtyRatio(name: "\(name)-\(p)", log: log)
            }
            return d
        }
        return TopicDescription(name: name, partitions: partitions, configs: state.config.effective, overrides: state.record.configs)
    }

    /// Changes topic configs. retention.*, cleanup.policy and value.format apply at once; settings
    /// of the log files themselves (segment.*, flush.*, index.*, max.message.bytes) apply when the
    /// partitions are next opened (the next start).
    public func alterTopicConfigs(_ name: String, set: [String: String], remove: [String] = []) throws {
        try requireWritable()
        try adminLock.withLock { _ in
            guard let state = topics.withLock({ $0[name] }) else { throw BrokerError.unknownTopic(name) }
            var merged = state.record.configs
            for key in remove { merged[key] = nil }
            for (k, v) in set { merged[k] = v }
            let config: TopicConfig
            do throws(TopicConfig.Problem) { config = try TopicConfig.parse(merged, over: options.defaultTopicConfig) } catch {
                throw BrokerError.invalidConfig(error)
            }
            try checkLimits(newTopicPartitions: state.record.partitions, adding: 0, config: config)
            var record = state.record
            record.configs = merged
            try metadata.putTopic(record)
            var applied = config
            applied.log = state.config.log  // the open logs keep theirs until reopened
            applied.log.maxMessageBytes = min(config.log.maxMessageBytes, state.config.log.maxMessageBytes)
            let replacement = state.replacing(record: record, config: applied)
            topics.withLock { $0[name] = replacement }
        }
    }

    /// Grows a topic to `total` partitions (Kafka never shrinks a topic: keys would move).
    public func addPartitions(_ name: String, total: Int32) throws {
        try requireWritable()
        try adminLock.withLock { _ in
            guard let state = topics.withLock({ $0[name] }) else { throw BrokerError.unknownTopic(name) }
            let current = state.record.partitions
            guard total > current else {
                throw BrokerError.invalidPartitions("topic '\(name)' has \(current) partitions; the new count must be more")
            }
            try checkLimits(newTopicPartitions: total, adding: total - current, config: nil)
            var record = state.record
            record.partitions = total
            // Directories first, then the metadata (as in createTopic).
            var slots = state.partitions
            for p in current..<total { slots.append(.online(try logManager.getOrCreateLog(topic: name, partition: p, config: state.config.log))) }
            try metadata.putTopic(record)
            let replacement = state.replacing(record: record, partitions: slots)
            topics.withLock { $0[name] = replacement }
        }
    }

    /// Brings back partitions whose directory is missing, empty (their old records are gone;
    /// consumers whose committed offsets point past the new end get OFFSET_OUT_OF_RANGE and
    /// reset). Explicit, because it accepts data loss: `strata inspect --repair`. Returns the
    /// partitions recreated. Damaged (not missing) partitions stay offline: their files need a
    /// person's look first.
    @discardableResult
    public func recreateMissingPartitions() throws -> [String] {
        try requireWritable()
        return try adminLock.withLock { _ in
            var recreated: [String] = []
            for state in topics.withLock({ Array($0.values) }).sorted(by: { $0.name < $1.name }) {
                var slots = state.partitions
                for (p, slot) in slots.enumerated() {
                    guard case .offline = slot else { continue }
                    let name = LogManager.partitionDirectoryName(topic: state.name, partition: Int32(p))
                    guard access(logManager.logsDirectory + "/" + name, F_OK) != 0 else { continue }
                    slots[p] = .online(try logManager.getOrCreateLog(topic: state.name, partition: Int32(p), config: state.config.log))
                    offline.withLock { $0[name] = nil }
                    recreated.append(name)
                }
                let replacement = state.replacing(partitions: slots)
                topics.withLock { $0[state.name] = replacement }
            }
            return recreated
        }
    }

    /// Deletes a topic: its metadata and committed offsets, then its partition directories.
    public func deleteTopic(_ name: String) throws {
        try requireWritable()
        try adminLock.withLock { _ in
            guard let state = topics.withLock({ $0.removeValue(forKey: name) }) else { throw BrokerError.unknownTopic(name) }
            try metadata.deleteTopic(name)
            for p in 0..<state.record.partitions {
                waiters.notify(topic: name, partition: p)
                try logManager.deleteLog(topic: name, partition: p)
            }
        }
    }

    func state(_ topic: String) throws(BrokerError) -> TopicState {
        guard let s = topics.withLock({ $0[topic] }) else { throw .unknownTopic(topic) }
        return s
    }

    func stateOrCreate(_ topic: String) throws -> TopicState {
        if let s = topics.withLock({ $0[topic] }) { return s }
        guard options.autoCreateTopics, !isReadOnly else { throw BrokerError.unknownTopic(topic) }
        do { try createTopic(topic) } catch BrokerError.topicExists(_) {}
        return try state(topic)
    }

    /// Every partition of every topic, sorted by topic, with its log (nil when offline): for the
    /// metrics scrape and health checks, which must not look each one up by name.
    public func forEachPartition(_ body: (_ topic: String, _ partition: Int32, _ log: PartitionLog?) throws -> Void) rethrows {
        let states = topics.withLock { Array($0.values) }.sorted { $0.name < $1.name }
        for state in states {
            for (p, slot) in state.partitions.enumerated() { try body(state.name, Int32(p), slot.log) }
        }
    }

    public func log(topic: String, partition: Int32) throws(BrokerError) -> PartitionLog {
        let s = try state(topic)
        guard partition >= 0, Int(partition) < s.partitions.count else { throw .unknownPartition(topic: topic, partition: partition) }
        switch s.partitions[Int(partition)] {
        case .online(let log): return log
        case .offline(let why): throw .partitionOffline(topic: topic, partition: partition, reason: why)
        }
    }

    // MARK: Produce

    /// Partitions, validates, batches and appends `records`. Records go to `partition` if given,
    /// else by murmur2 of the key (Kafka's partitioner), else all to one partition chosen
    /// round-robin per call (Kafka's sticky partitioner). For `value.format=json` topics every
    /// value must be valid JSON; one invalid record refuses the whole call and appends nothing.
    @discardableResult
    ///
    /// With `transaction`, the batches are written inside that producer's open transaction
    /// (see `TransactionalProducer`).
    public func produce(topic: String, records: [ProducerRecord], partition: Int32? = nil, acks: Acks = .all,
                        transaction: TransactionalProducer? = nil) throws -> [ProduceResult] {
        try requireWritable()
        guard !records.isEmpty else { return [] }
        let state = try stateOrCreate(topic)
        let partitions = Int32(state.partitions.count)
        if let partition, partition < 0 || partition >= partitions { throw BrokerError.unknownPartition(topic: topic, partition: partition) }
        if state.config.requiresJSON {
            for (i, record) in records.enumerated() {
                guard let value = record.value else { continue }  // a tombstone is not a value
                if let failure = JSONScanner.failure(in: value) {
                    throw BrokerError.invalidRecord(index: i, reason: "value is not valid JSON (\(failure)); topic '\(topic)' has value.format=json")
                }
            }
        }
        let sticky = Int32(state.stickyCounter.value.add(1, ordering: .relaxed).oldValue % Int(partitions))
        var byPartition: [Int32: [ProducerRecord]] = [:]
        for record in records {
            let p = partition ?? record.key.map { Partitioner.partition(forKey: $0, partitions: partitions) } ?? sticky
            byPartition[p, default: []].append(record)
        }
        var results: [ProduceResult] = []
        // All the partitions this call writes to join the transaction in one AddPartitionsToTxn.
        try transaction?.add(topic: topic, partitions: Array(byPartition.keys))
        for (p, group) in byPartition.sorted(by: { $0.key < $1.key }) {
            let info: AppendInfo
            if let transaction {
                let batch = try transaction.batch(topic: topic, partition: p, records: group)
                info = try batch.withUnsafeBytes { bytes in
                    try appendBatch(topic: topic, partition: p, batch: bytes, acks: acks, valuesValidatedAsJSON: true, transactionalId: transaction.transactionalId)
                }
                transaction.appended(topic: topic, partition: p, count: group.count)
            } else {
                let batch = RecordBatchBuilder.build(group)
                info = try batch.withUnsafeBytes { bytes in try append(state, partition: p, batch: bytes, acks: acks) }
            }
            results.append(ProduceResult(partition: p, baseOffset: info.baseOffset, recordCount: group.count))
        }
        return results
    }

    /// Appends one RecordBatch v2 as a Kafka producer sends it (the protocol layer's path, and the
    /// CLI's fast path). `valuesValidatedAsJSON` lets a caller that already checked every value
    /// skip the check for `value.format=json` topics.
    @discardableResult
    public func appendBatch(topic: String, partition: Int32, batch: UnsafeRawBufferPointer, acks: Acks = .all,
                            valuesValidatedAsJSON: Bool = false, transactionalId: String? = nil) throws -> AppendInfo {
        let prepared = try prepareAppend(topic: topic, partition: partition, batch: batch, valuesValidatedAsJSON: valuesValidatedAsJSON)
        return try appendPrepared(topic: topic, partition: partition, batch: batch, prepared, acks: acks, transactionalId: transactionalId)
    }

    /// The first half of `appendBatch`, which does not depend on the log's state and may run on any
    /// thread, in any order: the topic's checks (JSON values), Kafka's LogValidator, re-encoding
    /// for `compression.type`. `appendPrepared` then appends in the order the caller needs.
    public func prepareAppend(topic: String, partition: Int32, batch: UnsafeRawBufferPointer,
                              valuesValidatedAsJSON: Bool = false) throws -> PreparedBatch {
        let state = try stateOrCreate(topic)
        guard partition >= 0, Int(partition) < state.partitions.count else { throw BrokerError.unknownPartition(topic: topic, partition: partition) }
        let log: PartitionLog
        switch state.partitions[Int(partition)] {
        case .online(let l): log = l
        case .offline(let why): throw BrokerError.partitionOffline(topic: state.name, partition: partition, reason: why)
        }
        if state.config.requiresJSON && !valuesValidatedAsJSON {
            let view = RecordBatch(unchecked: batch)
            do throws(RecordBatchError) { try view.validate(maxBatchBytes: state.config.log.maxMessageBytes, strictRecords: true) } catch {
                throw BrokerError.log(.invalidBatch(error))
            }
            var index = 0
            var failure: BrokerError?
            try view.forEachRecord { record in
                defer { index += 1 }
                guard failure == nil, let value = record.value else { return }
                if !JSONScanner.isValid(value) {
                    failure = .invalidRecord(index: index, reason: "value is not valid JSON; topic '\(topic)' has value.format=json")
                }
            }
            if let failure { throw failure }
        }
        do throws(LogError) { return try log.prepare(batch, policy: state.config.appendPolicy) } catch { throw BrokerError.log(error) }
    }

    /// The second half of `appendBatch`: a transactional batch's producer checked against its
    /// open transaction; then, in the log under its writer lock, an idempotent producer's
    /// sequence check (a retried batch is answered with its original offsets, a gap or a fenced
    /// epoch refused), offsets assigned, the batch stored; waiting fetches woken. `batch` is the
    /// one given to `prepareAppend`.
    @discardableResult
    public func appendPrepared(topic: String, partition: Int32, batch: UnsafeRawBufferPointer, _ prepared: PreparedBatch,
                               acks: Acks = .all, transactionalId: String? = nil) throws -> AppendInfo {
        try requireWritable()
        let state = try stateOrCreate(topic)
        guard partition >= 0, Int(partition) < state.partitions.count else { throw BrokerError.unknownPartition(topic: topic, partition: partition) }
        let view = RecordBatch(unchecked: batch)
        guard batch.count >= RecordBatch.headerSize && view.isTransactional else {
            return try append(state, partition: partition, acks: acks) { log throws(LogError) in try log.appendPrepared(batch, prepared) }
        }
        // Checked under the partition's writer lock, which the transaction's markers also take:
        // EndTxn stores its decision before writing any marker, so a batch is either admitted
        // before the marker (and ended by it) or refused — never left open after it.
        var refusal: Error?
        let producerId = view.producerId, epoch = view.producerEpoch
        do {
            return try append(state, partition: partition, acks: acks) { log throws(LogError) in
                try log.appendPrepared(batch, prepared, admit: {
                    do {
                        try self.verifyTransactionalAppend(transactionalId: transactionalId, producerId: producerId, epoch: epoch, topic: topic, partition: partition)
                        return true
                    } catch {
                        refusal = error
                        return false
                    }
                })
            }
        } catch {
            // The admission check's own error, not the log's stand-in for it.
            if let refusal { throw refusal }
            throw error
        }
    }

    /// Wakes fetches waiting on a partition (after an append made outside `append`, a marker).
    func notifyAppend(topic: String, partition: Int32) { waiters.notify(topic: topic, partition: partition) }

    private func append(_ state: TopicState, partition: Int32, batch: UnsafeRawBufferPointer, acks: Acks) throws(BrokerError) -> AppendInfo {
        let policy = state.config.appendPolicy
        return try append(state, partition: partition, acks: acks) { log throws(LogError) in try log.appendWithoutFlush(batch, policy: policy) }
    }

    /// Runs one append on the partition's log, wakes its waiting fetches, and waits for durability
    /// when acks=all asks for it on a `sync` topic.
    private func append(_ state: TopicState, partition: Int32, acks: Acks,
                        _ write: (PartitionLog) throws(LogError) -> AppendInfo) throws(BrokerError) -> AppendInfo {
        let log: PartitionLog
        switch state.partitions[Int(partition)] {
        case .online(let l): log = l
        case .offline(let why): throw .partitionOffline(topic: state.name, partition: partition, reason: why)
        }
        do throws(LogError) {
            let info = try write(log)
            // A retry answered with the original's offsets appended nothing to wake anyone for,
            // but acks=all still means the original is durable before the answer.
            if !info.duplicate { waiters.notify(topic: state.name, partition: partition) }
            if acks == .all && log.config.flushMode == .sync { try log.flush(upTo: info.lastOffset + 1) }
            return info
        } catch {
            throw .log(error)
        }
    }

    /// Waits until every offset below `offset` is durable as the partition's flush.mode defines
    /// it (an fdatasync shared with concurrent appenders in `sync` mode; nothing otherwise). The
    /// Kafka layer appends with `.leader` in request order, then waits here off its event loop.
    public func waitForDurability(topic: String, partition: Int32, upTo offset: Int64) throws {
        let log = try log(topic: topic, partition: partition)
        guard log.config.flushMode == .sync else { return }
        do throws(LogError) { try log.flush(upTo: offset) } catch { throw BrokerError.log(error) }
    }

    /// Whether an acks=all append to this topic waits for an fdatasync.
    public func appendsWaitForDisk(topic: String) -> Bool { topicConfig(topic)?.log.flushMode == .sync }

    /// Makes every append so far durable (used by `produce --acks 1` before it reports).
    public func flush(topic: String) throws {
        for (_, log) in try state(topic).onlineLogs { try log.flush() }
    }

    // MARK: Fetch

    /// Whole batches from `offset`, at most `maxBytes` (at least one batch). At the log end, waits
    /// up to `maxWaitMs` and returns as soon as data arrives (empty result on timeout).
    ///
    /// `committedOnly` reads as a `read_committed` consumer: up to the last stable offset (and
    /// waits there while a transaction is open).
    public func fetch(topic: String, partition: Int32, offset: Int64, maxBytes: Int = 1 << 20, maxWaitMs: Int64 = 0,
                      committedOnly: Bool = false) async throws -> LogReadResult {
        let log = try log(topic: topic, partition: partition)
        if isReadOnly {
            try log.refresh()
            if committedOnly { try log.catchUpProducerState() }
        }
        if committedOnly && offset >= log.lastStableOffset && offset < log.logEndOffset && maxWaitMs > 0 && !isReadOnly {
            await waiters.wait(topic: topic, partition: partition, timeoutMs: maxWaitMs) { log.lastStableOffset <= offset }
        }
        if offset == log.logEndOffset && maxWaitMs > 0 {
            if isReadOnly {
                // Another process appends: nothing can wake us, so look again every 50 ms.
                let deadline = monotonicMillis() + maxWaitMs
                while monotonicMillis() < deadline, try log.refresh() == offset {
                    try await Task.sleep(nanoseconds: 50_000_000)
                }
            } else {
                await waiters.wait(topic: topic, partition: partition, timeoutMs: maxWaitMs) { log.logEndOffset == offset }
            }
        }
        return try log.read(from: offset, maxBytes: maxBytes, committedOnly: committedOnly)
    }

    /// Waits until any of `positions` (topic, partition, offset) has data past its offset, or
    /// `timeoutMs` passes (nil: no timeout), or the calling task is cancelled: the long-poll of a
    /// multi-partition Kafka Fetch, and the idle wait of stream tasks. Returns at once when none
    /// of the partitions exists.
    /// `committedOnly`: data means data below the last stable offset (read_committed).
    public func waitForData(_ positions: [(topic: String, partition: Int32, offset: Int64)], timeoutMs: Int64?, committedOnly: Bool = false) async {
        let logs = positions.compactMap { p in (try? log(topic: p.topic, partition: p.partition)).map { ($0, p.offset) } }
        guard !logs.isEmpty else { return }
        await waiters.waitAny(positions.map { ($0.topic, $0.partition) }, timeoutMs: timeoutMs) {
            logs.allSatisfy { (committedOnly ? $0.0.lastStableOffset : $0.0.logEndOffset) <= $0.1 }
        }
    }

    /// First offset whose timestamp is >= `timestamp`, or the log end when every record is older.
    public func offset(topic: String, partition: Int32, forTimestamp timestamp: Int64) throws -> Int64 {
        let log = try log(topic: topic, partition: partition)
        if isReadOnly { try log.refresh() }
        return try log.offset(forTimestamp: timestamp) ?? log.logEndOffset
    }

    /// Records from `offset` on, as they arrive: an endless sequence for embedded consumers,
    /// woken by appends like a long-poll fetch. Cancel the consuming task to stop.
    public func subscribe(topic: String, partition: Int32, from offset: Int64) -> AsyncThrowingStream<ConsumedRecord, Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                var next = offset
                do {
                    while !Task.isCancelled {
                        let result = try await self.fetch(topic: topic, partition: partition, offset: next, maxWaitMs: 30_000)
                        guard let slice = result.slice else { continue }
                        for record in try Self.records(in: slice, topic: topic, partition: partition, from: next) {
                            continuation.yield(record)
                        }
                        next = result.nextOffset
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Copies the records at or after `from` out of a slice.
    /// Transaction markers (control batches) are never records; with `aborted` (the partition's
    /// producer state, for read_committed) records of aborted transactions are left out.
    public static func records(in slice: SegmentSlice, topic: String, partition: Int32, from: Int64,
                               aborted: ProducerStates? = nil) throws -> [ConsumedRecord] {
        var out: [ConsumedRecord] = []
        try slice.forEachBatch { batch in
            if batch.isControl { return }
            if let aborted, batch.isTransactional, aborted.isAborted(producerId: batch.producerId, offset: batch.baseOffset) { return }
            try batch.forEachRecord { r in
                guard r.offset >= from else { return }
                out.append(ConsumedRecord(
                    topic: topic, partition: partition, offset: r.offset, timestamp: r.timestamp,
                    key: r.key.map(Array.init), value: r.value.map(Array.init),
                    headers: r.headers.map { .init(key: String(decoding: $0.key, as: UTF8.self), value: $0.value.map(Array.init)) }))
            }
        }
        return out
    }

    // MARK: Consumer offsets

    public func commitOffsets(group: String, offsets: [(topic: String, partition: Int32, offset: Int64)], metadata info: String = "") throws {
        guard offsetCommitsAllowed else { try requireWritable(); return }
        guard !group.isEmpty, group.utf8.count <= 255 else { throw BrokerError.invalidPartitions("group id must be 1-255 bytes") }
        let now = wallClockMillis()
        try metadata.commitOffsets(offsets.map {
            OffsetCommit(group: group, topic: $0.topic, partition: $0.partition, committed: CommittedOffset(offset: $0.offset, metadata: info, commitTimeMs: now))
        })
        mirrorToConsumerOffsets(group: group, offsets.map {
            ($0.topic, $0.partition, ConsumerOffsetsTopic.value(offset: $0.offset, metadata: info, commitTimeMs: now))
        })
    }

    /// Appends to `__consumer_offsets` that failed (the commits themselves are in LMDB).
    public var consumerOffsetsMirrorFailureCount: Int { consumerOffsetsMirrorFailures.load(ordering: .relaxed) }

    /// Whether `topic` is one of Kafka's internal topics (reported as such in Metadata).
    public static func isInternalTopic(_ topic: String) -> Bool { topic == ConsumerOffsetsTopic.name }

    /// Deletes a group's committed offsets: all (DeleteGroups) or the listed ones (OffsetDelete).
    @discardableResult
    public func deleteCommittedOffsets(group: String, partitions: [(topic: String, partition: Int32)]? = nil) throws -> Int {
        guard offsetCommitsAllowed else { try requireWritable(); return 0 }
        let targets = try partitions ?? metadata.committedOffsets(group: group).map { ($0.topic, $0.partition) }
        let deleted = try metadata.deleteCommittedOffsets(group: group, partitions: partitions)
        mirrorToConsumerOffsets(group: group, targets.map { ($0.topic, $0.partition, nil) })
        return deleted
    }

    /// Deletes an empty group (DeleteGroups): its committed offsets, its coordinator entry and, in
    /// `__consumer_offsets`, its group record. Returns whether there was anything to delete.
    /// A group with live members is left alone and reported by the caller (NON_EMPTY_GROUP).
    public func deleteGroup(_ group: String) throws -> Bool {
        let known = groups.describe(group) != nil
        let deleted = try deleteCommittedOffsets(group: group)
        groups.forget(groupId: group)
        if known && offsetCommitsAllowed { mirrorGroupToConsumerOffsets(group: group, nil) }
        return known || deleted > 0
    }

    public func committedOffset(group: String, topic: String, partition: Int32) throws -> Int64? {
        try metadata.committedOffset(group: group, topic: topic, partition: partition)?.offset
    }
}
