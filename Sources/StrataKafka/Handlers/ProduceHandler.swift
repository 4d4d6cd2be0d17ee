import NIOCore
import StrataBroker
import StrataLog

extension KafkaRequestHandler {
    /// Appends happen here, on the connection's event loop, in the order the requests arrived:
    /// pipelined requests of one producer append in order, and idempotent sequence checks see them
    /// in that order. Only the wait for durability (acks=all on a `sync` topic) leaves the loop, so
    /// concurrent producers still share fdatasyncs.
    func produce(_ request: ProduceRequest, _ v: Int16, eventLoop: EventLoop) -> EventLoopFuture<ByteBuffer?> {
        let acks = request.acks
        var response = ProduceResponse(topics: [])
        var durable: [(topic: Int, partition: Int, upTo: Int64)] = []
        for (t, topic) in request.topics.enumerated() {
            var partitions: [ProduceResponse.Partition] = []
            for p in topic.partitions {
                // v0-v2: magic 0/1 message sets, up-converted (LegacyMessageSets.swift).
                let (result, nextOffset) = v < 3 ? appendLegacy(topic: topic.name, partition: p.index, records: p.records, acks: acks)
                    : append(topic: topic.name, partition: p.index, records: p.records, acks: acks)
                if acks == -1, result.errorCode == .none, nextOffset > 0, broker.appendsWaitForDisk(topic: topic.name) {
                    durable.append((t, partitions.count, nextOffset))
                }
                partitions.append(result)
            }
            response.topics.append(.init(name: topic.name, partitions: partitions))
        }
        let flexible = ApiKey.produce.isFlexible(v)
        let respond: @Sendable (ProduceResponse) -> ByteBuffer? = { response in
            acks == 0 ? nil : response.encoded(version: v, flexible: flexible)
        }
        if durable.isEmpty { return eventLoop.makeSucceededFuture(respond(response)) }
        let appended = response
        let waits = durable
        let broker = self.broker
        return threadPool.runIfActive(eventLoop: eventLoop) {
            var response = appended
            for d in waits {
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

    /// Validates and appends the batches of one partition's records; returns the result and one
    /// past the last offset appended (0 when nothing was).
    func append(topic: String, partition: Int32, records: ByteBuffer?, acks: Int16) -> (ProduceResponse.Partition, Int64) {
        func failed(_ code: ErrorCode, _ message: String? = nil) -> (ProduceResponse.Partition, Int64) {
            (ProduceResponse.Partition(index: partition, errorCode: code, errorMessage: message), 0)
        }
        guard acks == -1 || acks == 0 || acks == 1 else { return failed(.invalidRequiredAcks) }
        if TopicName.problem(topic) != nil { return failed(.invalidTopicException) }
        // Kafka's internal topics are written by the broker only (TOPIC_AUTHORIZATION_FAILED there).
        if Broker.isInternalTopic(topic) { return failed(.invalidTopicException, "\(topic) is an internal topic written by the broker") }
        guard partitionExists(topic, partition) else { return failed(.unknownTopicOrPartition) }
        guard let records, records.readableBytes > 0 else { return failed(.corruptMessage, "no records") }
        return records.withUnsafeReadableBytes { all -> (ProduceResponse.Partition, Int64) in
            var position = 0
            var first: Int64 = -1
            var next: Int64 = 0
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
                    // Durability (acks=all) is waited for by the caller, after every append of the request.
                    let info = try broker.appendBatch(topic: topic, partition: partition,
                                                      batch: UnsafeRawBufferPointer(rebasing: rest[..<size]), acks: .leader)
                    if first < 0 { first = info.baseOffset }
                    next = max(next, info.lastOffset + 1)
                } catch {
                    let code = ErrorCode(any: error)
                    if code == .kafkaStorageError { reportStorageProblem(topic, partition, error) }
                    var result = failed(code, "\(error)")
                    if case .log(.invalidBatch(.missingKeys(let indexes)))? = error as? BrokerError {
                        // Kafka lists the offending records so the producer fails only those with
                        // INVALID_RECORD (the others of the batch: retriable as a different batch).
                        result.0.recordErrors = indexes.map { (Int32(clamping: $0), "Compacted topic cannot accept message without key in topic partition \(topic)-\(partition).") }
                    }
                    return result
                }
                position += size
            }
            let start = (try? broker.log(topic: topic, partition: partition).logStartOffset) ?? 0
            return (ProduceResponse.Partition(index: partition, errorCode: .none, baseOffset: first, logStartOffset: start), next)
        }
    }
}
