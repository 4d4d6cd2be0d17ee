import StrataCore
import Synchronization

/// Strata embedded in a Swift program: a data directory opened as a broker, with a client API
/// for topics, producing and consuming — the same broker that `strata serve` runs, so a Kafka
/// client can be pointed at the same data later (`strata serve --data DIR`).
///
/// ```swift
/// import StrataKit
///
/// let strata = try Strata(directory: "strata-data")           // relative paths are fine
/// try strata.createTopic("purchases", partitions: 4)
/// try strata.produce("purchases", key: "u-1", json: Purchase(user: "u-1", amount: 12.5))
/// for try await record in strata.consume("purchases", stopAtEnd: true) {
///     let p: Purchase = try record.json()
/// }
/// try strata.close()
/// ```
///
/// Thread safety: every method may be called from any thread or task. One process opens a data
/// directory at a time (a second `Strata` on the same directory fails with a clear error).
public final class Strata: Sendable {
    /// The broker underneath: everything not wrapped here (configs, retention, DeleteRecords,
    /// transactions, offsets) is there.
    public let broker: Broker
    static let maxBatchBytes = 1 << 20
    /// Round-robin partition for keyless records, per call.
    private let sticky = Atomic<Int>(0)

    /// The default data directory, relative to the working directory (as `strata serve`'s).
    public static let defaultDirectory = "strata-data"

    /// Opens (creating it if needed) the data directory: recovers what a crash left, loads the
    /// topics. `options` are the broker's (default partitions, topic defaults, limits).
    public init(directory: String = Strata.defaultDirectory, options: Broker.Options = Broker.Options()) throws {
        broker = try Broker.open(dataDirectory: directory, options: options)
    }

    /// Wraps a broker opened elsewhere (for example the one a `strata serve`-like program runs).
    public init(broker: Broker) {
        self.broker = broker
    }

    /// Flushes and closes every log. Stop `StreamsApp`s and consumers first.
    public func close() throws { try broker.close() }

    // MARK: Topics

    /// Creates `name`; with `ifNotExists` (the default) an existing topic is left as it is.
    /// Returns whether the topic was created. `configs` are Kafka topic configs
    /// (`retention.ms`, `cleanup.policy`, `value.format=json`, ...: docs/cli.md).
    @discardableResult
    public func createTopic(_ name: String, partitions: Int32 = 1, configs: [String: String] = [:], ifNotExists: Bool = true) throws -> Bool {
        do {
            try broker.createTopic(name, partitions: partitions, configs: configs)
            return true
        } catch BrokerError.topicExists(_) where ifNotExists {
            return false
        }
    }

    /// Topics, sorted (internal ones included: `__consumer_offsets`, StrataStreams' topics).
    public var topics: [String] { broker.topicNames() }

    /// Partitions with their offsets and sizes, and the topic's configs.
    public func describeTopic(_ name: String) throws -> TopicDescription { try broker.describeTopic(name) }

    // MARK: Produce

    /// Appends one record. The partition is `partition` if given, else murmur2 of the key (as
    /// Kafka's producer: same key → same partition), else round-robin. `acks: .all` (the
    /// default) returns once the record is as durable as the topic's `flush.mode` promises.
    @discardableResult
    public func produce(_ topic: String, key: (any RecordBytesConvertible)? = nil, value: (any RecordBytesConvertible)?,
                        headers: [ProducerRecord.Header] = [], timestamp: Int64? = nil, partition: Int32? = nil,
                        acks: Acks = .all) throws -> RecordMetadata {
        let record = ProducerRecord(key: key, value: value, headers: headers, timestamp: timestamp)
        return try produce(topic, [record], partition: partition, acks: acks)[0]
    }

    /// Appends one record whose value is `json` encoded as JSON (`StrataJSON`: dates as epoch ms).
    @discardableResult
    public func produce<T: Encodable>(_ topic: String, key: (any RecordBytesConvertible)? = nil, json: T,
                                      headers: [ProducerRecord.Header] = [], timestamp: Int64? = nil, partition: Int32? = nil,
                                      acks: Acks = .all) throws -> RecordMetadata {
        let record = try ProducerRecord(key: key, json: json, headers: headers, timestamp: timestamp)
        return try produce(topic, [record], partition: partition, acks: acks)[0]
    }

    /// Appends records in batches (one batch per partition: far faster than one call per
    /// record). Returns each record's partition and offset, in the order given. All or nothing
    /// per partition: a refused record (an invalid value for a `value.format=json` topic)
    /// refuses the call before anything is appended.
    @discardableResult
    public func produce(_ topic: String, _ records: [ProducerRecord], partition: Int32? = nil, acks: Acks = .all) throws -> [RecordMetadata] {
        guard !records.isEmpty else { return [] }
        if broker.partitionCount(topic) == nil {
            // An unknown topic is created with the default partitions, as Kafka's auto-creation
            // does (unless `Broker.Options.autoCreateTopics` is off).
            guard broker.options.autoCreateTopics else { throw BrokerError.unknownTopic(topic) }
            do { try broker.createTopic(topic) } catch BrokerError.topicExists(_) {}
        }
        guard let partitions = broker.partitionCount(topic) else { throw BrokerError.unknownTopic(topic) }
        // Partitions are decided here (the broker's rule: murmur2 of the key, keyless records of
        // one call to one partition, round-robin between calls) so that each record's offset can
        // be reported: the broker appends a partition's records as one batch, in the order given.
        let keyless = partition ?? Int32(truncatingIfNeeded: sticky.add(1, ordering: .relaxed).oldValue % Int(partitions))
        var byPartition: [Int32: [Int]] = [:]
        for (i, r) in records.enumerated() {
            let p = partition ?? r.key.map { Partitioner.partition(forKey: $0, partitions: partitions) } ?? keyless
            byPartition[p, default: []].append(i)
        }
        var out = [RecordMetadata?](repeating: nil, count: records.count)
        for (p, indexes) in byPartition.sorted(by: { $0.key < $1.key }) {
            // Batches of at most ~1 MiB, under the default max.message.bytes.
            var first = 0
            var bytes = 0
            func append(upTo end: Int) throws {
                let chunk = indexes[first..<end]
                let results = try broker.produce(topic: topic, records: chunk.map { records[$0] }, partition: p, acks: acks)
                let base = results.first?.baseOffset ?? 0
                for (n, i) in chunk.enumerated() { out[i] = RecordMetadata(topic: topic, partition: p, offset: base + Int64(n)) }
                first = end
                bytes = 0
            }
            for (n, i) in indexes.enumerated() {
                let r = records[i]
                let size = 32 + (r.key?.count ?? 0) + (r.value?.count ?? 0) + r.headers.reduce(0) { $0 + 8 + $1.key.utf8.count + ($1.value?.count ?? 0) }
                if bytes + size > Self.maxBatchBytes && n > first { try append(upTo: n) }
                bytes += size
            }
            if first < indexes.count { try append(upTo: indexes.count) }
        }
        return out.map { $0! }
    }

    // MARK: Consume

    /// The records of `topic` (every partition, or only `partition`) from `start`, as an
    /// `AsyncSequence`. With `stopAtEnd` the sequence ends at the log end as it is when iteration
    /// begins; otherwise it follows new appends (woken by them, no polling) until the consuming
    /// task is cancelled. Reads committed records only (as a `read_committed` consumer) unless
    /// `readUncommitted`. Records of one partition come in offset order; partitions interleave.
    public func consume(_ topic: String, partition: Int32? = nil, from start: StartPosition = .beginning, stopAtEnd: Bool = false,
                        readUncommitted: Bool = false) -> RecordSequence {
        RecordSequence(broker: broker, topic: topic, partition: partition, start: start, stopAtEnd: stopAtEnd, committedOnly: !readUncommitted)
    }

    /// A member of consumer group `group` reading `topics`: the group's partitions are shared
    /// with its other members — embedded or Kafka clients using `group.protocol=consumer` — and
    /// each member resumes from the group's committed offsets. See `GroupConsumer`.
    public func consumer(group: String, topics: [String], options: GroupConsumer.Options = GroupConsumer.Options()) -> GroupConsumer {
        GroupConsumer(broker: broker, group: group, topics: topics, options: options)
    }

    /// The group's committed offset for one partition (nil: none).
    public func committedOffset(group: String, topic: String, partition: Int32) throws -> Int64? {
        try broker.committedOffset(group: group, topic: topic, partition: partition)
    }

    // MARK: Transactions and streams

    /// A transactional producer (`commit`/`abort`, offsets committed with the transaction): a
    /// new instance with the same id fences the older one and aborts its open transaction.
    public func transactionalProducer(id: String, transactionTimeoutMs: Int32 = 60_000) throws -> TransactionalProducer {
        try TransactionalProducer(broker: broker, transactionalId: id, transactionTimeoutMs: transactionTimeoutMs)
    }

    /// A StrataStreams application on this data directory (start it with `start()`).
    public func streamsApp(_ applicationId: String, topology: Topology, config: StreamsConfig = StreamsConfig()) -> StreamsApp {
        StreamsApp(applicationId: applicationId, topology: topology, broker: broker, config: config)
    }
}

/// Where a produced record went.
public struct RecordMetadata: Sendable, Equatable, CustomStringConvertible {
    public let topic: String
    public let partition: Int32
    public let offset: Int64
    public var description: String { "\(topic)-\(partition)@\(offset)" }
}

/// Where a consumer starts in each partition.
public enum StartPosition: Sendable, Equatable {
    /// The log start (the oldest record retention kept).
    case beginning
    /// The log end: only records appended from now on.
    case end
    /// This offset in every partition read (clamped to the log's range).
    case offset(Int64)
    /// The first record whose timestamp is at or after this time (ms since the epoch).
    case timestamp(Int64)
}
