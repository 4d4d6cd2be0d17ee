import NIOCore
import StrataBroker
import StrataCore
import StrataLog

extension KafkaRequestHandler {
    /// Kafka's fetch.max.bytes cap on one response, whatever the request asks.
    static let maxFetchResponseBytes = 64 << 20

    /// `denied`: topics the session may not READ (TOPIC_AUTHORIZATION_FAILED).
    func fetch(_ request: FetchRequest, _ v: Int16, eventLoop: EventLoop, denied: Set<String> = []) -> EventLoopFuture<ByteBuffer?> {
        let budget = request.maxBytes <= 0 ? 52_428_800 : min(Int(request.maxBytes), Self.maxFetchResponseBytes)
        let flexible = ApiKey.fetch.isFlexible(v)
        return longPoll(request, eventLoop: eventLoop, read: { self.readFetch(request, budget: budget, denied: denied) }) { response in
            self.delivered(request, response)
            return response.encoded(version: v, flexible: flexible, capacity: 64 + response.recordBytes + request.topics.count * 64)
        }
    }

    /// Counts what a fetch response hands out (per-partition traffic, errors by code), once, for
    /// the response actually sent (a long poll may read more than once).
    func delivered(_ request: FetchRequest, _ response: FetchResponse) {
        metrics.countErrors(.fetch, response)
        for (rt, t) in zip(request.topics, response.topics) {
            for (rp, p) in zip(rt.partitions, t.partitions) {
                let bytes = (p.records?.count ?? 0) + (p.messageSet?.count ?? 0)
                guard bytes > 0, let traffic = p.traffic else { continue }
                let through = p.records?.nextOffset ?? rp.fetchOffset
                traffic.countRead(bytes: bytes, records: Int(clamping: through.saturatingSubtract(rp.fetchOffset)))
            }
        }
    }

    /// Kafka's fetch wait: answers at once when min_bytes are there, max_wait_ms is 0, or a
    /// partition has an error; otherwise parks until an append to any requested partition (or the
    /// wait ends) and reads again. The first read runs right here on the event loop, so only real
    /// waits involve a Swift task.
    func longPoll(_ request: FetchRequest, eventLoop: EventLoop, read: @escaping @Sendable () -> (FetchResponse, waitable: Bool),
                  encode: @escaping @Sendable (FetchResponse) -> ByteBuffer) -> EventLoopFuture<ByteBuffer?> {
        let maxWaitMs = Int64(max(0, request.maxWaitMs))
        let minBytes = Int(max(0, request.minBytes))
        let (first, waitable) = read()
        if first.recordBytes >= max(1, minBytes) || maxWaitMs == 0 || !waitable {
            return eventLoop.makeSucceededFuture(encode(first))
        }
        let broker = self.broker
        let positions = request.topics.flatMap { t in t.partitions.map { (topic: t.name, partition: $0.index, offset: $0.fetchOffset) } }
        return eventLoop.makeFutureWithTask {
            await broker.waitForData(positions, timeoutMs: min(maxWaitMs, 300_000), committedOnly: request.isolationLevel == 1)
            return encode(read().0)
        }
    }

    /// Reads every requested partition: whole batches, zero-copy slices of the segment mappings,
    /// within each partition's and the response's max_bytes; the first partition with data always
    /// gets one whole batch even past both (KIP-74), so a consumer always makes progress.
    private func readFetch(_ request: FetchRequest, budget: Int, denied: Set<String>) -> (FetchResponse, waitable: Bool) {
        let committedOnly = request.isolationLevel == 1
        return readFetchPartitions(request, budget: budget, refuse: { denied.contains($0) ? .topicAuthorizationFailed : nil }) { log, fp, limit, part in
            guard let slice = try log.read(from: fp.fetchOffset, maxBytes: limit, committedOnly: committedOnly).slice else { return 0 }
            part.records = slice
            if committedOnly {
                let aborted = log.abortedTransactions(from: fp.fetchOffset, upTo: slice.nextOffset)
                if !aborted.isEmpty { part.abortedTransactions = aborted }
            }
            return slice.count
        }
    }

    /// The frame of every fetch (current and old versions): per partition, the offsets, the
    /// range check, the byte limit left in the response, errors mapped and logged; `fill` reads
    /// up to `limit` bytes into the partition and says how many it used. `refuse` may answer a
    /// topic with an error instead. A response with any error does not wait for data.
    func readFetchPartitions(_ request: FetchRequest, budget: Int, refuse: (String) -> ErrorCode? = { _ in nil },
                             fill: (PartitionLog, FetchRequest.Partition, Int, inout FetchResponse.Partition) throws -> Int) -> (FetchResponse, waitable: Bool) {
        var total = 0
        var waitable = true
        let topics: [FetchResponse.Topic] = request.topics.map { topic in
            let refused = refuse(topic.name)
            return FetchResponse.Topic(name: topic.name, partitions: topic.partitions.map { fp in
                var part = FetchResponse.Partition(index: fp.index)
                do {
                    let log = try broker.log(topic: topic.name, partition: fp.index)
                    part.traffic = log.traffic
                    part.highWatermark = log.logEndOffset
                    part.logStartOffset = log.logStartOffset
                    part.lastStableOffset = log.lastStableOffset
                    if let refused {
                        part.errorCode = refused
                    } else if fp.fetchOffset < part.logStartOffset || fp.fetchOffset > part.highWatermark {
                        part.errorCode = .offsetOutOfRange
                    } else if fp.fetchOffset < part.highWatermark {
                        let partitionLimit = min(Int(fp.maxBytes), budget - total)
                        let limit = total == 0 ? max(1, partitionLimit) : partitionLimit
                        if limit > 0 { total += try fill(log, fp, limit, &part) }
                    }
                } catch {
                    part.errorCode = ErrorCode(any: error)
                    if part.errorCode == .kafkaStorageError { reportStorageProblem(topic.name, fp.index, error) }
                }
                if part.errorCode != .none { waitable = false }
                return part
            })
        }
        return (FetchResponse(topics: topics), waitable)
    }

    func listOffsets(_ request: ListOffsetsRequest, _ v: Int16) -> ListOffsetsResponse {
        ListOffsetsResponse(topics: request.topics.map { topic in
            .init(name: topic.name, partitions: topic.partitions.map { req in
                var out = ListOffsetsResponse.Partition(index: req.index)
                do {
                    let log = try broker.log(topic: topic.name, partition: req.index)
                    // Kafka's specs: -1 latest, -2 earliest, -3 max timestamp (v7+, KIP-734), -4
                    // earliest local (v8+: no tiered storage, so the log start); a time finds the
                    // first record at or after it and answers with that record's own timestamp.
                    // Nothing found: offset -1, timestamp -1, no error.
                    switch req.timestamp {
                    case -2: out.offset = log.logStartOffset
                    case -1: out.offset = request.isolationLevel == 1 ? log.lastStableOffset : log.logEndOffset
                    case -3 where v >= 7:
                        if let found = try log.maxTimestampRecord() { (out.offset, out.timestamp) = found }
                    case -4 where v >= 8: out.offset = log.logStartOffset
                    case ..<0: out.errorCode = .unsupportedVersion
                    default:
                        // read_committed: nothing at or past the last stable offset (Kafka).
                        let visibleEnd = request.isolationLevel == 1 ? log.lastStableOffset : log.logEndOffset
                        if let found = try log.record(forTimestamp: req.timestamp), found.offset < visibleEnd {
                            (out.offset, out.timestamp) = found
                        }
                    }
                    if v == 0 {
                        // Old-style offsets: the one precise offset (Kafka answered with segment
                        // base offsets), the log end when no record is that recent; none for
                        // max_num_offsets 0 (docs/protocol.md, "Old message formats").
                        let offset = out.offset >= 0 ? out.offset : log.logEndOffset
                        out.oldStyleOffsets = out.errorCode != .none || req.maxNumOffsets <= 0 ? [] : [offset]
                    }
                } catch {
                    out.errorCode = ErrorCode(any: error)
                }
                return out
            })
        })
    }

    func deleteRecords(_ request: DeleteRecordsRequest) -> DeleteRecordsResponse {
        DeleteRecordsResponse(topics: request.topics.map { topic in
            (topic.name, topic.partitions.map { req in
                do {
                    let log = try broker.log(topic: topic.name, partition: req.index)
                    let low = try broker.deleteRecords(topic: topic.name, partition: req.index, before: req.offset == -1 ? log.logEndOffset : req.offset)
                    return (req.index, low, ErrorCode.none)
                } catch {
                    return (req.index, Int64(-1), ErrorCode(any: error))
                }
            })
        })
    }

    func initProducerId(_ request: InitProducerIdRequest) -> InitProducerIdResponse {
        do {
            let (id, epoch) = try broker.initProducerId(transactionalId: request.transactionalId, transactionTimeoutMs: request.transactionTimeoutMs,
                                                        producerId: request.producerId, epoch: request.producerEpoch)
            return InitProducerIdResponse(errorCode: .none, producerId: id, producerEpoch: epoch)
        } catch {
            return InitProducerIdResponse(errorCode: ErrorCode(any: error), producerId: -1, producerEpoch: -1)
        }
    }
}
