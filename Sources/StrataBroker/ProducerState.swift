import Synchronization

/// Idempotent producers (KIP-98 without transactions): the sequence numbers of the last batches
/// each (producer, partition) wrote, so a retried batch is acknowledged with its original offset
/// instead of appended again, and a gap in sequences is refused. Owned by the broker, so the
/// Kafka server and embedded producers share it. Kept in memory: a restart forgets it (Kafka
/// rebuilds it from producer snapshots), documented in docs/protocol.md.
public final class ProducerStateTable: Sendable {
    public enum Check: Equatable, Sendable { case accept, duplicate(baseOffset: Int64), outOfOrder(expected: Int32) }

    private struct Key: Hashable { let producerId: Int64; let topic: String; let partition: Int32 }
    private struct Entry { var epoch: Int16; var batches: [(first: Int32, last: Int32, offset: Int64)] }
    private let entries = Mutex<[Key: Entry]>([:])
    /// Kafka keeps the last five batches per producer and partition (max.in.flight is at most 5).
    public static let batchesRemembered = 5
    public static let maxProducers = 100_000

    public init() {}

    public func check(producerId: Int64, epoch: Int16, topic: String, partition: Int32, firstSequence: Int32, lastSequence: Int32) -> Check {
        entries.withLock { entries in
            guard let e = entries[Key(producerId: producerId, topic: topic, partition: partition)], e.epoch == epoch else { return .accept }
            if let dup = e.batches.first(where: { $0.first == firstSequence && $0.last == lastSequence }) { return .duplicate(baseOffset: dup.offset) }
            guard let last = e.batches.last else { return .accept }
            let expected = last.last &+ 1
            return firstSequence == expected ? .accept : .outOfOrder(expected: expected)
        }
    }

    public func record(producerId: Int64, epoch: Int16, topic: String, partition: Int32, firstSequence: Int32, lastSequence: Int32, baseOffset: Int64) {
        entries.withLock { entries in
            let key = Key(producerId: producerId, topic: topic, partition: partition)
            // Bounded: past the limit the table starts over (those producers' next batch is
            // accepted as a first one; a retry of an older batch would then be appended again).
            if entries[key] == nil && entries.count >= Self.maxProducers { entries.removeAll() }
            var e = entries[key] ?? Entry(epoch: epoch, batches: [])
            if e.epoch != epoch { e = Entry(epoch: epoch, batches: []) }
            e.batches.append((firstSequence, lastSequence, baseOffset))
            if e.batches.count > Self.batchesRemembered { e.batches.removeFirst() }
            entries[key] = e
        }
    }
}
