import NIOCore
import StrataBroker
import StrataLog

/// The order of one connection's appends. Kafka promises a producer its records in the order it
/// sent them, and a producer pipelines its requests on one connection, so that connection's
/// appends must happen in request order. A request is handled in two steps: `prepare` (checks,
/// CRC, the record walk, decompression, re-encoding: most of the work, independent of the log's
/// state) and `apply` (idempotent sequence checks, offsets, the copy into the log). Small requests
/// with nothing queued ahead do both on the event loop at once (no thread hop: the latency of a
/// one-record produce). A large one is prepared on the validation pool while the event loop reads
/// the next requests; its `apply`, and that of every request after it, waits for the previous
/// request's `apply` and runs on the event loop. Only the event loop touches this object.
final class AppendOrder {
    /// Completes when the last queued `apply` has run; nil when nothing is queued.
    fileprivate var tail: EventLoopFuture<Void>?
    /// Requests whose `apply` has not run yet.
    fileprivate var queued = 0

    init() {}
}

@available(*, unavailable)
extension AppendOrder: Sendable {}

extension KafkaRequestHandler {
    /// Requests carrying less than this many bytes of records are prepared on the event loop
    /// when nothing is queued ahead of them.
    static let inlinePrepareBytes = 64 * 1024

    /// One partition of a Produce request after `prepare`: the answer when it failed, or the
    /// batches to append (the records as sent, or up-converted from a v0-v2 message set).
    struct PreparedPartition: Sendable {
        var index: Int32
        var failure: ProduceResponse.Partition?
        var records = ByteBuffer()
        var batches: [(range: Range<Int>, prepared: PreparedBatch)] = []
    }

    /// `denied`: topics the session may not WRITE (TOPIC_AUTHORIZATION_FAILED, nothing appended).
    func produce(_ request: ProduceRequest, _ v: Int16, eventLoop: EventLoop, order: AppendOrder, denied: Set<String> = []) -> EventLoopFuture<ByteBuffer?> {
        let acks = request.acks
        let recordBytes = request.topics.reduce(0) { sum, topic in topic.partitions.reduce(sum) { $0 + ($1.records?.readableBytes ?? 0) } }
        let prepare: @Sendable () -> [[PreparedPartition]] = {
            request.topics.map { topic in
                topic.partitions.map { p in
                    denied.contains(topic.name)
                        ? PreparedPartition(index: p.index, failure: .init(index: p.index, errorCode: .topicAuthorizationFailed))
                        : self.prepare(topic: topic.name, partition: p, acks: acks, legacy: v < 3)
                }
            }
        }
        let appended: EventLoopFuture<(ProduceResponse, durable: [(topic: Int, partition: Int, upTo: Int64)])>
        if order.queued == 0 && recordBytes < Self.inlinePrepareBytes {
            appended = eventLoop.makeSucceededFuture(apply(request, prepare(), acks: acks))
        } else {
            order.queued += 1
            let previous = order.tail ?? eventLoop.makeSucceededVoidFuture()
            let orderBound = NIOLoopBound(order, eventLoop: eventLoop)
            appended = validationPool.runIfActive(eventLoop: eventLoop, prepare).and(previous).map { prepared, _ in
                orderBound.value.queued -= 1
                return self.apply(request, prepared, acks: acks)
            }
            let tail = appended.map { _ in () }.recover { _ in () }
            order.tail = tail
            tail.whenComplete { _ in
                let order = orderBound.value
                if order.queued == 0 { order.tail = nil }
            }
        }
        let flexible = ApiKey.produce.isFlexible(v)
        let respond: @Sendable (ProduceResponse) -> ByteBuffer? = { response in
            self.metrics.countErrors(.produce, response)
            return acks == 0 ? nil : response.encoded(version: v, flexible: flexible)
        }
        let broker = self.broker
        return appended.flatMap { appended, durable in
            if durable.isEmpty { return eventLoop.makeSucceededFuture(respond(appended)) }
            return self.threadPool.runIfActive(eventLoop: eventLoop) {
                var response = appended
                for d in durable {
                    let name = response.topics[d.topic].name
                    do {
                        try broker.waitForDurability(topic: name, partition: response.topics[d.topic].partitions[d.partition].index, upTo: d.upTo)
                    } catch {
                        response.topics[d.topic].partitions[d.partition].errorCode = ErrorCode(any: error)
                        response.topics[d.topic].partitions[d.partition].errorMessage = "\(error)"
                    }
                }
                return response
            }.map(respond)
        }
    }

    /// Appends the prepared partitions in request order (on the event loop); returns the response
    /// so far and the appends that acks=all must see durable before it is sent.
    private func apply(_ request: ProduceRequest, _ prepared: [[PreparedPartition]], acks: Int16)
        -> (ProduceResponse, durable: [(topic: Int, partition: Int, upTo: Int64)]) {
        var response = ProduceResponse(topics: [])
        var durable: [(topic: Int, partition: Int, upTo: Int64)] = []
        for (t, topic) in request.topics.enumerated() {
            var partitions: [ProduceResponse.Partition] = []
            let waitsForDisk = acks == -1 && broker.appendsWaitForDisk(topic: topic.name)
            for p in prepared[t] {
                let (result, nextOffset) = append(topic: topic.name, p, transactionalId: request.transactionalId)
                if waitsForDisk, result.errorCode == .none, nextOffset > 0 {
                    durable.append((t, partitions.count, nextOffset))
                }
                partitions.append(result)
            }
            response.topics.append(.init(name: topic.name, partitions: partitions))
        }
        return (response, durable)
    }

    /// Checks one partition of a Produce request and validates its batches (Kafka validates every
    /// batch before appending any: one bad batch fails the partition with nothing appended).
    /// v0-v2 message sets are up-converted here (LegacyMessageSets.swift).
    func prepare(topic: String, partition: ProduceRequest.Partition, acks: Int16, legacy: Bool) -> PreparedPartition {
        let index = partition.index
        func failed(_ code: ErrorCode, _ message: String? = nil) -> PreparedPartition {
            PreparedPartition(index: index, failure: .init(index: index, errorCode: code, errorMessage: message))
        }
        guard acks == -1 || acks == 0 || acks == 1 else { return failed(.invalidRequiredAcks) }
        if TopicName.problem(topic) != nil { return failed(.invalidTopicException) }
        // Kafka's internal topics are written by the broker only (TOPIC_AUTHORIZATION_FAILED there).
        if Broker.isInternalTopic(topic) { return failed(.invalidTopicException, "\(topic) is an internal topic written by the broker") }
        guard partitionExists(topic, index) else { return failed(.unknownTopicOrPartition) }
        guard var records = partition.records, records.readableBytes > 0 else { return failed(.corruptMessage, "no records") }
        if legacy {
            switch upConverted(records) {
            case .failure(let error): return failed(ErrorCode(error), error.description)
            case .success(let converted): records = converted
            }
        }
        var result = PreparedPartition(index: index, records: records)
        let refused = records.withUnsafeReadableBytes { all -> PreparedPartition? in
            var position = 0
            while position < all.count {
                let rest = UnsafeRawBufferPointer(rebasing: all[position...])
                guard rest.count > RecordBatch.magicOffset else { return failed(.corruptMessage, "truncated batch") }
                guard Int8(bitPattern: rest[RecordBatch.magicOffset]) == RecordBatch.currentMagic else {
                    return failed(.unsupportedForMessageFormat, "only RecordBatch v2 (magic 2) is supported in Produce v3+")
                }
                guard let size = RecordBatch.declaredSize(at: rest), size <= rest.count else {
                    return failed(.corruptMessage, "batch length does not match the data")
                }
                do {
                    let prepared = try broker.prepareAppend(topic: topic, partition: index, batch: UnsafeRawBufferPointer(rebasing: rest[..<size]))
                    result.batches.append((position..<(position + size), prepared))
                } catch {
                    return PreparedPartition(index: index, failure: failure(topic, index, error))
                }
                position += size
            }
            return nil
        }
        return refused ?? result
    }

    /// Appends one prepared partition; returns its answer and one past the last offset appended
    /// (0 when nothing was).
    private func append(topic: String, _ p: PreparedPartition, transactionalId: String?) -> (ProduceResponse.Partition, Int64) {
        if let failure = p.failure { return (failure, 0) }
        return p.records.withUnsafeReadableBytes { all -> (ProduceResponse.Partition, Int64) in
            var first: Int64 = -1
            var next: Int64 = 0
            for batch in p.batches {
                do {
                    // Durability (acks=all) is waited for by the caller, after every append of the request.
                    let info = try broker.appendPrepared(topic: topic, partition: p.index, batch: UnsafeRawBufferPointer(rebasing: all[batch.range]),
                                                         batch.prepared, acks: .leader, transactionalId: transactionalId)
                    if first < 0 { first = info.baseOffset }
                    next = max(next, info.lastOffset + 1)
                } catch {
                    return (failure(topic, p.index, error), 0)
                }
            }
            let start = (try? broker.log(topic: topic, partition: p.index).logStartOffset) ?? 0
            return (ProduceResponse.Partition(index: p.index, errorCode: .none, baseOffset: first, logStartOffset: start), next)
        }
    }

    /// The answer for a partition whose append failed with `error`.
    private func failure(_ topic: String, _ partition: Int32, _ error: Error) -> ProduceResponse.Partition {
        let code = ErrorCode(any: error)
        if code == .kafkaStorageError { reportStorageProblem(topic, partition, error) }
        var result = ProduceResponse.Partition(index: partition, errorCode: code, errorMessage: "\(error)")
        if case .log(.invalidBatch(.missingKeys(let indexes)))? = error as? BrokerError {
            // Kafka lists the offending records so the producer fails only those with
            // INVALID_RECORD (the others of the batch: retriable as a different batch).
            result.recordErrors = indexes.map { (Int32(clamping: $0), "Compacted topic cannot accept message without key in topic partition \(topic)-\(partition).") }
        }
        return result
    }
}
