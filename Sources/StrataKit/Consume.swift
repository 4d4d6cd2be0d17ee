import StrataCore
import Synchronization

/// Reads records of partitions from positions: the engine of `RecordSequence` and
/// `GroupConsumer`. Committed-only reads skip aborted transactions and markers, as a
/// `read_committed` Kafka consumer does.
struct PartitionReader {
    let broker: Broker
    let committedOnly: Bool
    static let maxReadBytes = 1 << 20

    /// Records of `topic`-`partition` at and after `offset` (up to ~1 MiB), and the next offset.
    /// A position below the log start (retention removed it) continues from the log start;
    /// one past the end (a recreated topic) from the end.
    func read(_ topic: String, _ partition: Int32, from offset: Int64) throws -> (records: [ConsumedRecord], next: Int64) {
        let log = try broker.log(topic: topic, partition: partition)
        var from = offset
        if from < log.logStartOffset || from > log.logEndOffset {
            from = from < log.logStartOffset ? log.logStartOffset : log.logEndOffset
        }
        let result: LogReadResult
        do {
            result = try log.read(from: from, maxBytes: Self.maxReadBytes, committedOnly: committedOnly)
        } catch {
            // Retention moved the log start between the check and the read: from the new start.
            guard case .offsetOutOfRange = error else { throw error }
            return ([], log.logStartOffset)
        }
        guard let slice = result.slice else { return ([], max(from, result.nextOffset)) }
        var out: [ConsumedRecord] = []
        var filter = ReadCommittedFilter(aborted: committedOnly ? log.abortedTransactions(from: from, upTo: slice.nextOffset) : [])
        try slice.forEachBatch { batch in
            // The filter sees every batch (a marker ends its producer's aborted range); markers
            // are never records.
            if committedOnly && !filter.accepts(batch) { return }
            if batch.isControl { return }
            try batch.forEachRecord { r in
                guard r.offset >= from else { return }
                out.append(ConsumedRecord(
                    topic: topic, partition: partition, offset: r.offset, timestamp: r.timestamp,
                    key: r.key.map(Array.init), value: r.value.map(Array.init),
                    headers: r.headers.map { .init(key: String(decoding: $0.key, as: UTF8.self), value: $0.value.map(Array.init)) }))
            }
        }
        return (out, result.nextOffset)
    }

    /// Where `start` is in a partition.
    func offset(_ topic: String, _ partition: Int32, _ start: StartPosition) throws -> Int64 {
        let log = try broker.log(topic: topic, partition: partition)
        switch start {
        case .beginning: return log.logStartOffset
        case .end: return committedOnly ? log.lastStableOffset : log.logEndOffset
        case .offset(let o): return min(max(o, log.logStartOffset), log.logEndOffset)
        case .timestamp(let t): return try broker.offset(topic: topic, partition: partition, forTimestamp: t)
        }
    }

    /// The end a reader stops at: the last stable offset (committed) or the log end.
    func end(_ topic: String, _ partition: Int32) throws -> Int64 {
        let log = try broker.log(topic: topic, partition: partition)
        return committedOnly ? log.lastStableOffset : log.logEndOffset
    }
}

/// The records of a topic or partition, from a start position, optionally up to the end as it was
/// when iteration began (`Strata.consume`). Iterating twice reads twice, each from `start`.
/// Ends early (returns nil) when the iterating task is cancelled.
public struct RecordSequence: AsyncSequence, Sendable {
    public typealias Element = ConsumedRecord
    public typealias Failure = any Error
    let broker: Broker
    let topic: String
    let partition: Int32?
    let start: StartPosition
    let stopAtEnd: Bool
    let committedOnly: Bool

    public func makeAsyncIterator() -> Iterator {
        Iterator(sequence: self)
    }

    public struct Iterator: AsyncIteratorProtocol {
        let sequence: RecordSequence
        let reader: PartitionReader
        /// Per partition: next offset, and the end to stop at (stopAtEnd).
        var partitions: [(partition: Int32, next: Int64, end: Int64)]?
        var buffer: [ConsumedRecord] = []
        var index = 0
        /// The partition read next (round-robin, so a busy partition does not starve the others).
        var turn = 0

        init(sequence: RecordSequence) {
            self.sequence = sequence
            reader = PartitionReader(broker: sequence.broker, committedOnly: sequence.committedOnly)
        }

        public mutating func next() async throws -> ConsumedRecord? { try await next(isolation: nil) }

        /// Runs on the caller's actor (SE-0421): a buffered record is returned without leaving
        /// it, so a `for try await` loop on the main actor does not hop executors per record.
        public mutating func next(isolation actor: isolated (any Actor)?) async throws(any Error) -> ConsumedRecord? {
            if index < buffer.count {
                defer { index += 1 }
                return buffer[index]
            }
            let topic = sequence.topic
            if partitions == nil {
                let all: [Int32]
                if let p = sequence.partition {
                    all = [p]
                } else {
                    guard let n = sequence.broker.partitionCount(topic) else { throw BrokerError.unknownTopic(topic) }
                    all = Array(0..<n)
                }
                partitions = try all.map { p in
                    (p, try reader.offset(topic, p, sequence.start), sequence.stopAtEnd ? try reader.end(topic, p) : Int64.max)
                }
            }
            while !Task.isCancelled {
                var parts = partitions!
                // One read from the next partition that has something before its end.
                for step in 0..<parts.count {
                    let i = (turn + step) % parts.count
                    guard parts[i].next < parts[i].end else { continue }
                    let (records, next) = try reader.read(topic, parts[i].partition, from: parts[i].next)
                    parts[i].next = next
                    let end = parts[i].end
                    let kept = (records.last?.offset ?? .min) < end ? records : records.filter { $0.offset < end }
                    partitions = parts
                    turn = (i + 1) % parts.count
                    if !kept.isEmpty {
                        buffer = kept
                        index = 1
                        return kept[0]
                    }
                }
                if sequence.stopAtEnd {
                    // Done when every partition reached its end (reads past a gap move `next` on).
                    if parts.allSatisfy({ $0.next >= $0.end }) { return nil }
                    if parts.contains(where: { p in (try? reader.end(topic, p.partition)).map { p.next < $0 } ?? false }) { continue }
                }
                await sequence.broker.waitForData(parts.map { (topic, $0.partition, $0.next) }, timeoutMs: 30_000,
                                                  committedOnly: sequence.committedOnly)
            }
            return nil
        }
    }
}
