import StrataCore
import StrataLog
import StrataMetadata

/// A transactional producer for embedded use (StrataStreams' exactly-once tasks, applications):
/// the same protocol a Kafka client follows, through the broker's coordinator. `init` registers
/// the transactional id (bumping its epoch: any older instance is fenced and its open
/// transaction aborted); `produce` adds partitions to the transaction as it first writes to
/// them and numbers batches per partition; `sendOffsets` commits consumer offsets with the
/// transaction; `commit`/`abort` end it. One thread at a time uses an instance.
public final class TransactionalProducer {
    public let broker: Broker
    public let transactionalId: String
    public private(set) var producerId: Int64
    public private(set) var epoch: Int16
    private var sequences: [TopicPartitionName: Int32] = [:]
    private var added: Set<TopicPartitionName> = []
    private var offsetGroups: Set<String> = []
    /// Whether anything was written or committed since the last commit/abort.
    public var inTransaction: Bool { !added.isEmpty || !offsetGroups.isEmpty }

    public init(broker: Broker, transactionalId: String, transactionTimeoutMs: Int32 = 60_000) throws {
        self.broker = broker
        self.transactionalId = transactionalId
        (producerId, epoch) = try broker.initProducerId(transactionalId: transactionalId, transactionTimeoutMs: transactionTimeoutMs)
    }

    /// Produces `records` inside the transaction (partitioned as `Broker.produce` does).
    @discardableResult
    public func produce(topic: String, records: [ProducerRecord], partition: Int32? = nil) throws -> [ProduceResult] {
        try broker.produce(topic: topic, records: records, partition: partition, acks: .leader, transaction: self)
    }

    /// Adds the partitions not yet in the transaction, in one call.
    func add(topic: String, partitions: [Int32]) throws {
        let new = partitions.map { TopicPartitionName(topic: topic, partition: $0) }.filter { !added.contains($0) }
        guard !new.isEmpty else { return }
        let failures = try broker.addPartitionsToTransaction(transactionalId, producerId: producerId, epoch: epoch, partitions: new)
        if let failure = failures.values.first { throw failure }
        added.formUnion(new)
    }

    /// The batch for `records` to `topic`-`partition`: the partition added to the transaction
    /// first, the batch numbered after the previous one. Called by `Broker.produce`.
    func batch(topic: String, partition: Int32, records: [ProducerRecord]) throws -> [UInt8] {
        let tp = TopicPartitionName(topic: topic, partition: partition)
        try add(topic: topic, partitions: [partition])
        return RecordBatchBuilder.build(records, producerId: producerId, producerEpoch: epoch, baseSequence: sequences[tp] ?? 0, transactional: true)
    }

    /// After a batch of `count` records was appended to `topic`-`partition`.
    func appended(topic: String, partition: Int32, count: Int) {
        let tp = TopicPartitionName(topic: topic, partition: partition)
        let next = Int64(sequences[tp] ?? 0) + Int64(count)
        sequences[tp] = Int32(truncatingIfNeeded: next & Int64(Int32.max))
    }

    /// Commits `offsets` for `group` if and when the transaction commits.
    public func sendOffsets(group: String, offsets: [(topic: String, partition: Int32, offset: Int64)], metadata: String = "") throws {
        if !offsetGroups.contains(group) {
            try broker.addOffsetsToTransaction(transactionalId, producerId: producerId, epoch: epoch, group: group)
            offsetGroups.insert(group)
        }
        try broker.commitTransactionalOffsets(transactionalId, producerId: producerId, epoch: epoch, group: group,
                                              offsets: offsets.map { ($0.topic, $0.partition, $0.offset, metadata) })
    }

    public func commit() throws { try end(commit: true) }
    public func abort() throws { try end(commit: false) }

    private func end(commit: Bool) throws {
        guard inTransaction else { return }
        try broker.endTransaction(transactionalId, producerId: producerId, epoch: epoch, commit: commit)
        added.removeAll()
        offsetGroups.removeAll()
    }
}
