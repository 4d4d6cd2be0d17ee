import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StrataBroker
import StrataCore
import StrataLog
import StrataMetadata

/// A parsed request header (v1; v2 adds tagged fields we skip for ApiVersions only).
struct RequestHeader {
    let apiKey: Int16
    let apiVersion: Int16
    let correlationId: Int32
    let clientId: String?
}

/// Answers Kafka requests from the broker. Cheap requests complete on the connection's event loop;
/// produce (which may wait for an fdatasync) runs on a thread pool; fetch long-polls as a Swift task.
final class KafkaRequestHandler: @unchecked Sendable {
    let broker: Broker
    let coordinator: GroupCoordinator
    let threadPool: NIOThreadPool
    let nodeId: Int32 = 1
    /// (host, port) clients are told to connect to; set once the listener is bound.
    let advertised: NIOLockedValueBox<(host: String, port: Int32)>
    var advertisedHost: String { advertised.withLockedValue { $0.host } }
    var advertisedPort: Int32 { advertised.withLockedValue { $0.port } }
    let clusterId: String
    let producers = ProducerStateTable()

    /// Where storage problems met while serving are reported (the server's log).
    let log: @Sendable (String) -> Void
    private let reported = NIOLockedValueBox(Set<String>())

    /// Logs a storage problem of a partition once per distinct message (clients retry; the log
    /// must name the file once, not flood).
    func reportStorageProblem(_ topic: String, _ partition: Int32, _ error: Error) {
        let line = "error: partition \(topic)-\(partition): \(error)"
        let fresh = reported.withLockedValue { seen in
            guard seen.count < 10_000 else { return false }
            return seen.insert(line).inserted
        }
        if fresh { log(line) }
    }

    init(broker: Broker, coordinator: GroupCoordinator, threadPool: NIOThreadPool, advertisedHost: String, advertisedPort: Int,
         log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.log = log
        self.broker = broker
        self.coordinator = coordinator
        self.threadPool = threadPool
        self.advertised = NIOLockedValueBox((advertisedHost, Int32(advertisedPort)))
        self.clusterId = (try? broker.metadata.clusterId()) ?? "strata"
    }

    /// The response body (after the correlation id), nil when no response must be sent (acks=0).
    func handle(_ header: RequestHeader, _ body: inout KafkaReader, eventLoop: EventLoop, clientHost: String) throws -> EventLoopFuture<ByteBuffer?> {
        guard let api = ApiKey(rawValue: header.apiKey) else { throw ProtocolError("unknown API key \(header.apiKey)") }
        let v = header.apiVersion
        if api == .apiVersions && v > api.advertised.upperBound {
            return eventLoop.makeSucceededFuture(apiVersionsResponse(version: 0, error: .unsupportedVersion))
        }
        guard api.advertised.contains(v) else { throw ProtocolError("\(api) version \(v) is not supported") }
        guard api.accepted.contains(v) else {
            // Advertised for librdkafka's feature detection but refused: old message formats.
            throw ProtocolError("\(api) version \(v) (pre-RecordBatch-v2 message format) is not supported")
        }
        switch api {
        case .apiVersions: return eventLoop.makeSucceededFuture(apiVersionsResponse(version: v, error: .none))
        case .metadata: return eventLoop.makeSucceededFuture(try metadata(&body, v))
        case .produce: return try produce(&body, v, eventLoop: eventLoop)
        case .fetch: return try fetch(&body, v, eventLoop: eventLoop)
        case .listOffsets: return eventLoop.makeSucceededFuture(try listOffsets(&body, v))
        case .initProducerId: return eventLoop.makeSucceededFuture(try initProducerId(&body, v))
        case .findCoordinator: return eventLoop.makeSucceededFuture(try findCoordinator(&body, v))
        case .joinGroup: return try joinGroup(&body, v, clientId: header.clientId ?? "", clientHost: clientHost, eventLoop: eventLoop)
        case .syncGroup: return try syncGroup(&body, v, eventLoop: eventLoop)
        case .heartbeat: return eventLoop.makeSucceededFuture(try heartbeat(&body, v))
        case .leaveGroup: return eventLoop.makeSucceededFuture(try leaveGroup(&body, v))
        case .offsetCommit: return eventLoop.makeSucceededFuture(try offsetCommit(&body, v))
        case .offsetFetch: return eventLoop.makeSucceededFuture(try offsetFetch(&body, v))
        case .createTopics: return eventLoop.makeSucceededFuture(try createTopics(&body, v))
        case .deleteTopics: return eventLoop.makeSucceededFuture(try deleteTopics(&body, v))
        case .describeConfigs: return eventLoop.makeSucceededFuture(try describeConfigs(&body, v))
        case .deleteRecords: return eventLoop.makeSucceededFuture(try deleteRecords(&body, v))
        case .listGroups: return eventLoop.makeSucceededFuture(listGroups(v))
        case .describeGroups: return eventLoop.makeSucceededFuture(try describeGroups(&body, v))
        }
    }

    // MARK: ApiVersions

    func apiVersionsResponse(version: Int16, error: ErrorCode) -> ByteBuffer {
        var w = KafkaWriter()
        w.int16(error.rawValue)
        w.array(ApiKey.allCases) { w, api in
            w.int16(api.rawValue)
            w.int16(api.advertised.lowerBound)
            w.int16(api.advertised.upperBound)
        }
        if version >= 1 { w.int32(0) }
        return w.buffer
    }

    // MARK: Metadata

    func metadata(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        let requested: [String]? = v == 0
            ? try r.array(minElementBytes: 2) { try $0.string() }
            : try r.nullableArray(minElementBytes: 2) { try $0.string() }
        let allowAutoCreate = v >= 4 ? try r.bool() : true
        let topics: [String] = (requested == nil || (v == 0 && requested!.isEmpty)) ? broker.topicNames() : requested!
        var w = KafkaWriter()
        if v >= 3 { w.int32(0) }
        w.array([0]) { w, _ in
            w.int32(self.nodeId)
            w.string(self.advertisedHost)
            w.int32(self.advertisedPort)
            if v >= 1 { w.nullableString(nil) }
        }
        if v >= 2 { w.nullableString(clusterId) }
        if v >= 1 { w.int32(nodeId) }
        w.array(topics) { w, name in
            var error = ErrorCode.none
            var partitions: Int32 = 0
            if let why = TopicName.problem(name) {
                _ = why
                error = .invalidTopicException
            } else if let count = self.broker.partitionCount(name) {
                partitions = count
            } else if allowAutoCreate && self.broker.options.autoCreateTopics {
                do {
                    try self.broker.createTopic(name)
                    partitions = self.broker.partitionCount(name) ?? 0
                } catch {
                    partitions = self.broker.partitionCount(name) ?? 0
                }
                if partitions == 0 { error = .leaderNotAvailable }
            } else {
                error = .unknownTopicOrPartition
            }
            w.int16(error.rawValue)
            w.string(name)
            if v >= 1 { w.bool(false) }
            w.array(Array(0..<partitions)) { w, p in
                w.int16(0)
                w.int32(p)
                w.int32(self.nodeId)
                if v >= 7 { w.int32(0) }
                w.array([self.nodeId]) { $0.int32($1) }
                w.array([self.nodeId]) { $0.int32($1) }
                if v >= 5 { w.array([Int32]()) { $0.int32($1) } }
            }
            if v >= 8 { w.int32(Int32.min) }
        }
        if v >= 8 { w.int32(Int32.min) }
        return w.buffer
    }

    // MARK: Produce

    struct PartitionResult {
        var error: ErrorCode
        var baseOffset: Int64 = -1
        var logStartOffset: Int64 = -1
        var message: String?
        /// One past the last offset appended (0 when nothing was).
        var nextOffset: Int64 = 0
    }

    static func storageError(_ message: String) -> PartitionResult { PartitionResult(error: .kafkaStorageError, message: message) }

    func produce(_ r: inout KafkaReader, _ v: Int16, eventLoop: EventLoop) throws -> EventLoopFuture<ByteBuffer?> {
        _ = try r.nullableString()  // transactional_id: transactions are not supported; batches are stored as sent
        let acks = try r.int16()
        _ = try r.int32()  // timeout_ms
        let topics: [(String, [(Int32, ByteBuffer?)])] = try r.array(minElementBytes: 6) { r in
            (try r.string(), try r.array(minElementBytes: 8) { r in (try r.int32(), try r.nullableBytes()) })
        }
        // Appends happen here, on the connection's event loop, in the order the requests
        // arrived: pipelined requests of one producer append in order, and idempotent sequence
        // checks see them in that order. Only the wait for durability (acks=all on a `sync`
        // topic) leaves the loop, so concurrent producers still share fdatasyncs.
        var results: [(String, [(Int32, PartitionResult)])] = []
        var durable: [(topic: Int, partition: Int, upTo: Int64)] = []
        for (t, (name, partitions)) in topics.enumerated() {
            var out: [(Int32, PartitionResult)] = []
            for (p, records) in partitions {
                let result = append(topic: name, partition: p, records: records, acks: acks)
                if acks == -1, result.error == .none, result.nextOffset > 0, broker.appendsWaitForDisk(topic: name) {
                    durable.append((t, out.count, result.nextOffset))
                }
                out.append((p, result))
            }
            results.append((name, out))
        }
        let respond: @Sendable ([(String, [(Int32, PartitionResult)])]) -> ByteBuffer? = { results in
            guard acks != 0 else { return nil }
            var w = KafkaWriter()
            w.array(results) { w, topic in
                w.string(topic.0)
                w.array(topic.1) { w, pr in
                    w.int32(pr.0)
                    w.int16(pr.1.error.rawValue)
                    w.int64(pr.1.baseOffset)
                    if v >= 2 { w.int64(-1) }  // log_append_time: CreateTime topics
                    if v >= 5 { w.int64(pr.1.logStartOffset) }
                    if v >= 8 {
                        w.array([Int32]()) { $0.int32($1) }
                        w.nullableString(pr.1.message)
                    }
                }
            }
            if v >= 1 { w.int32(0) }
            return w.buffer
        }
        if durable.isEmpty { return eventLoop.makeSucceededFuture(respond(results)) }
        let appended = results
        let waits = durable
        let broker = self.broker
        return threadPool.runIfActive(eventLoop: eventLoop) {
            var results = appended
            for d in waits {
                let (name, partitions) = results[d.topic]
                do {
                    try broker.waitForDurability(topic: name, partition: partitions[d.partition].0, upTo: d.upTo)
                } catch {
                    results[d.topic].1[d.partition].1 = Self.storageError("\(error)")
                }
            }
            return results
        }.map(respond)
    }

    /// Validates and appends the batches of one partition. Runs on the thread pool.
    func append(topic: String, partition: Int32, records: ByteBuffer?, acks: Int16) -> PartitionResult {
        guard acks == -1 || acks == 0 || acks == 1 else { return PartitionResult(error: .invalidRequiredAcks) }
        if TopicName.problem(topic) != nil { return PartitionResult(error: .invalidTopicException) }
        guard let count = broker.partitionCount(topic), partition >= 0, partition < count else {
            return PartitionResult(error: .unknownTopicOrPartition)
        }
        guard let records, records.readableBytes > 0 else { return PartitionResult(error: .corruptMessage, message: "no records") }
        return records.withUnsafeReadableBytes { all -> PartitionResult in
            var position = 0
            var first: Int64 = -1
            var next: Int64 = 0
            while position < all.count {
                let rest = UnsafeRawBufferPointer(rebasing: all[position...])
                guard rest.count > RecordBatch.magicOffset else { return PartitionResult(error: .corruptMessage, message: "truncated batch") }
                guard Int8(bitPattern: rest[RecordBatch.magicOffset]) == RecordBatch.currentMagic else {
                    return PartitionResult(error: .unsupportedForMessageFormat, message: "only RecordBatch v2 (magic 2) is supported")
                }
                guard let size = RecordBatch.declaredSize(at: rest), size <= rest.count else {
                    return PartitionResult(error: .corruptMessage, message: "batch length does not match the data")
                }
                let bytes = UnsafeRawBufferPointer(rebasing: rest[..<size])
                let batch = RecordBatch(unchecked: bytes)
                let result = appendOne(topic: topic, partition: partition, batch: batch, bytes: bytes, acks: acks)
                guard result.error == .none else { return result }
                if first < 0 { first = result.baseOffset }
                next = max(next, result.nextOffset)
                position += size
            }
            let start = (try? broker.log(topic: topic, partition: partition).logStartOffset) ?? 0
            return PartitionResult(error: .none, baseOffset: first, logStartOffset: start, nextOffset: next)
        }
    }

    private func appendOne(topic: String, partition: Int32, batch: RecordBatch, bytes: UnsafeRawBufferPointer, acks: Int16) -> PartitionResult {
        let idempotent = batch.producerId >= 0 && bytes.count >= RecordBatch.headerSize
        if idempotent {
            switch producers.check(producerId: batch.producerId, epoch: batch.producerEpoch, topic: topic, partition: partition,
                                   firstSequence: batch.baseSequence, lastSequence: batch.baseSequence &+ batch.lastOffsetDelta) {
            case .duplicate(let offset):
                return PartitionResult(error: .none, baseOffset: offset)
            case .outOfOrder:
                return PartitionResult(error: .outOfOrderSequenceNumber, message: "sequence \(batch.baseSequence) is not the next one")
            case .accept:
                break
            }
        }
        do {
            // Durability (acks=all) is waited for by the caller, after every append of the request.
            let info = try broker.appendBatch(topic: topic, partition: partition, batch: bytes, acks: .leader)
            if idempotent {
                producers.record(producerId: batch.producerId, epoch: batch.producerEpoch, topic: topic, partition: partition,
                                 firstSequence: batch.baseSequence, lastSequence: batch.baseSequence &+ batch.lastOffsetDelta, baseOffset: info.baseOffset)
            }
            return PartitionResult(error: .none, baseOffset: info.baseOffset, nextOffset: info.lastOffset + 1)
        } catch {
            return PartitionResult(error: ErrorCode(any: error), message: "\(error)")
        }
    }

    static func result(for error: LogError) -> PartitionResult {
        PartitionResult(error: ErrorCode(error), message: error.description)
    }

    // MARK: Fetch

    struct FetchPartition {
        let partition: Int32
        let offset: Int64
        let maxBytes: Int32
    }

    func fetch(_ r: inout KafkaReader, _ v: Int16, eventLoop: EventLoop) throws -> EventLoopFuture<ByteBuffer?> {
        _ = try r.int32()  // replica_id
        let maxWaitMs = Int64(max(0, try r.int32()))
        let minBytes = Int(max(0, try r.int32()))
        let maxBytes = Int(try r.int32())
        _ = try r.int8()  // isolation_level: no transactions, so read_committed == read_uncommitted
        if v >= 7 {
            _ = try r.int32()  // session_id
            _ = try r.int32()  // session_epoch: answered with session 0 (no incremental sessions)
        }
        let topics: [(String, [FetchPartition])] = try r.array(minElementBytes: 6) { r in
            let name = try r.string()
            let parts: [FetchPartition] = try r.array(minElementBytes: 16) { r in
                let p = try r.int32()
                if v >= 9 { _ = try r.int32() }
                let offset = try r.int64()
                if v >= 5 { _ = try r.int64() }
                return FetchPartition(partition: p, offset: offset, maxBytes: try r.int32())
            }
            return (name, parts)
        }
        let broker = self.broker
        let budget = maxBytes <= 0 ? 52_428_800 : min(maxBytes, 64 << 20)
        return eventLoop.makeFutureWithTask {
            var response = self.buildFetch(topics, v, budget: budget)
            if response.bytes < max(1, minBytes) && maxWaitMs > 0 && response.waitable {
                let positions = topics.flatMap { t in t.1.map { (topic: t.0, partition: $0.partition, offset: $0.offset) } }
                await broker.waitForData(positions, timeoutMs: min(maxWaitMs, 300_000))
                response = self.buildFetch(topics, v, budget: budget)
            }
            return response.buffer
        }
    }

    private func buildFetch(_ topics: [(String, [FetchPartition])], _ v: Int16, budget: Int) -> (buffer: ByteBuffer, bytes: Int, waitable: Bool) {
        // Read first, then write once into a buffer of the right size: the batches are copied
        // exactly once, from the segment mapping into the response.
        struct Part { var error: ErrorCode = .none; var hw: Int64 = -1; var logStart: Int64 = -1; var slice: SegmentSlice? }
        var total = 0
        var waitable = true
        var nameBytes = 0
        let parts: [[Part]] = topics.map { topic in
            nameBytes += topic.0.utf8.count
            return topic.1.map { fp in
                var part = Part()
                do {
                    let log = try self.broker.log(topic: topic.0, partition: fp.partition)
                    part.hw = log.logEndOffset
                    part.logStart = log.logStartOffset
                    if fp.offset < part.logStart || fp.offset > part.hw {
                        part.error = .offsetOutOfRange
                    } else if fp.offset < part.hw {
                        // Bounded by the partition's and the response's max_bytes; the first
                        // partition with data always gets one whole batch, even past both (KIP-74).
                        let partitionLimit = min(Int(fp.maxBytes), budget - total)
                        let limit = total == 0 ? max(1, partitionLimit) : partitionLimit
                        if limit > 0, let slice = try log.read(from: fp.offset, maxBytes: limit).slice {
                            part.slice = slice
                            total += slice.count
                        }
                    }
                } catch {
                    part.error = ErrorCode(any: error)
                    if part.error == .kafkaStorageError { self.reportStorageProblem(topic.0, fp.partition, error) }
                }
                if part.error != .none { waitable = false }
                return part
            }
        }
        let partitionCount = topics.reduce(0) { $0 + $1.1.count }
        var w = KafkaWriter(capacity: 64 + nameBytes + topics.count * 8 + partitionCount * 64 + total)
        if v >= 1 { w.int32(0) }
        if v >= 7 {
            w.int16(0)
            w.int32(0)
        }
        w.array(Array(zip(topics, parts))) { w, pair in
            w.string(pair.0.0)
            w.array(Array(zip(pair.0.1, pair.1))) { w, fp in
                let part = fp.1
                w.int32(fp.0.partition)
                w.int16(part.error.rawValue)
                w.int64(part.hw)
                if v >= 4 {
                    w.int64(part.hw)  // last_stable_offset: no transactions
                    if v >= 5 { w.int64(part.logStart) }
                    w.nullableArray(nil as [Int]?) { _, _ in }  // aborted_transactions
                }
                if v >= 11 { w.int32(-1) }
                if let slice = part.slice {
                    withExtendedLifetime(slice) { w.rawBytes(slice.bytes) }
                } else {
                    w.int32(0)  // empty records
                }
            }
        }
        return (w.buffer, total, waitable)
    }

    // MARK: ListOffsets

    func listOffsets(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        _ = try r.int32()
        if v >= 2 { _ = try r.int8() }
        let topics: [(String, [(Int32, Int64)])] = try r.array(minElementBytes: 6) { r in
            (try r.string(), try r.array(minElementBytes: 12) { r in
                let p = try r.int32()
                if v >= 4 { _ = try r.int32() }
                return (p, try r.int64())
            })
        }
        var w = KafkaWriter()
        if v >= 2 { w.int32(0) }
        w.array(topics) { w, topic in
            w.string(topic.0)
            w.array(topic.1) { w, req in
                var error = ErrorCode.none
                var offset: Int64 = -1
                var timestamp: Int64 = -1
                do {
                    let log = try self.broker.log(topic: topic.0, partition: req.0)
                    // Kafka's specs: -1 latest, -2 earliest, -3 max timestamp (v7+, KIP-734), -4
                    // earliest local (v8+, KIP-405: no tiered storage, so the log start); a time
                    // finds the first record at or after it and answers with that record's own
                    // timestamp. Nothing found: offset -1, timestamp -1, no error.
                    switch req.1 {
                    case -2: offset = log.logStartOffset
                    case -4 where v >= 8: offset = log.logStartOffset
                    case -1: offset = log.logEndOffset
                    case -3 where v >= 7:
                        if let found = try log.maxTimestampRecord() { (offset, timestamp) = found }
                    case ..<0:
                        error = .unsupportedVersion
                    default:
                        if let found = try log.record(forTimestamp: req.1), found.offset < log.logEndOffset { (offset, timestamp) = found }
                    }
                } catch let thrown {
                    error = ErrorCode(any: thrown)
                }
                w.int32(req.0)
                w.int16(error.rawValue)
                w.int64(timestamp)
                w.int64(offset)
                if v >= 4 { w.int32(0) }
            }
        }
        return w.buffer
    }

    // MARK: InitProducerId

    func initProducerId(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        _ = try r.nullableString()
        _ = try r.int32()
        var w = KafkaWriter()
        w.int32(0)
        do {
            let id = try broker.metadata.nextProducerId()
            w.int16(0)
            w.int64(id)
            w.int16(0)
        } catch {
            w.int16(ErrorCode.unknownServerError.rawValue)
            w.int64(-1)
            w.int16(-1)
        }
        return w.buffer
    }

    // MARK: Groups

    func findCoordinator(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        _ = try r.string()
        if v >= 1 { _ = try r.int8() }
        var w = KafkaWriter()
        if v >= 1 { w.int32(0) }
        w.int16(0)
        if v >= 1 { w.nullableString(nil) }
        w.int32(nodeId)
        w.string(advertisedHost)
        w.int32(advertisedPort)
        return w.buffer
    }

    func joinGroup(_ r: inout KafkaReader, _ v: Int16, clientId: String, clientHost: String, eventLoop: EventLoop) throws -> EventLoopFuture<ByteBuffer?> {
        let group = try r.string()
        let session = Int64(try r.int32())
        let rebalance = v >= 1 ? Int64(try r.int32()) : session
        let member = try r.string()
        let instance = v >= 5 ? try r.nullableString() : nil
        let protocolType = try r.string()
        let protocols: [(name: String, metadata: [UInt8])] = try r.array(minElementBytes: 6) { r in
            let name = try r.string()
            var bytes = try r.bytes()
            return (name, bytes.readBytes(length: bytes.readableBytes) ?? [])
        }
        let promise = eventLoop.makePromise(of: GroupCoordinator.JoinResult.self)
        coordinator.join(groupId: group, memberId: member, instanceId: instance, clientId: clientId, clientHost: clientHost,
                         sessionTimeoutMs: session, rebalanceTimeoutMs: rebalance, protocolType: protocolType, protocols: protocols,
                         version: v, promise: promise)
        return promise.futureResult.map { res in
            var w = KafkaWriter()
            if v >= 2 { w.int32(0) }
            w.int16(res.error.rawValue)
            w.int32(res.generation)
            w.string(res.protocolName)
            w.string(res.leader)
            w.string(res.memberId)
            w.array(res.members) { w, m in
                w.string(m.id)
                if v >= 5 { w.nullableString(m.instanceId) }
                w.bytes(m.metadata)
            }
            return w.buffer
        }
    }

    func syncGroup(_ r: inout KafkaReader, _ v: Int16, eventLoop: EventLoop) throws -> EventLoopFuture<ByteBuffer?> {
        let group = try r.string()
        let generation = try r.int32()
        let member = try r.string()
        if v >= 3 { _ = try r.nullableString() }
        let assignments: [(String, [UInt8])] = try r.array(minElementBytes: 6) { r in
            let id = try r.string()
            var bytes = try r.bytes()
            return (id, bytes.readBytes(length: bytes.readableBytes) ?? [])
        }
        let promise = eventLoop.makePromise(of: (ErrorCode, [UInt8]).self)
        coordinator.sync(groupId: group, generation: generation, memberId: member, assignments: assignments, promise: promise)
        return promise.futureResult.map { error, assignment in
            var w = KafkaWriter()
            if v >= 1 { w.int32(0) }
            w.int16(error.rawValue)
            w.bytes(assignment)
            return w.buffer
        }
    }

    func heartbeat(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        let group = try r.string()
        let generation = try r.int32()
        let member = try r.string()
        if v >= 3 { _ = try r.nullableString() }
        var w = KafkaWriter()
        if v >= 1 { w.int32(0) }
        w.int16(coordinator.heartbeat(groupId: group, generation: generation, memberId: member).rawValue)
        return w.buffer
    }

    func leaveGroup(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        let group = try r.string()
        let ids: [String]
        if v >= 3 {
            ids = try r.array(minElementBytes: 4) { r in
                let id = try r.string()
                _ = try r.nullableString()
                return id
            }
        } else {
            ids = [try r.string()]
        }
        let results = coordinator.leave(groupId: group, memberIds: ids)
        var w = KafkaWriter()
        if v >= 1 { w.int32(0) }
        if v >= 3 {
            w.int16(0)
            w.array(results) { w, res in
                w.string(res.0)
                w.nullableString(nil)
                w.int16(res.1.rawValue)
            }
        } else {
            w.int16(results.first?.1.rawValue ?? 0)
        }
        return w.buffer
    }

    func offsetCommit(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        let group = try r.string()
        let generation = v >= 1 ? try r.int32() : -1
        let member = v >= 1 ? try r.string() : ""
        if v >= 7 { _ = try r.nullableString() }
        if (2...4).contains(v) { _ = try r.int64() }  // retention_time_ms
        let topics: [(String, [(Int32, Int64, String?)])] = try r.array(minElementBytes: 6) { r in
            (try r.string(), try r.array(minElementBytes: 14) { r in
                let p = try r.int32()
                let offset = try r.int64()
                if v >= 6 { _ = try r.int32() }
                if v == 1 { _ = try r.int64() }
                return (p, offset, try r.nullableString())
            })
        }
        var error = group.isEmpty ? ErrorCode.invalidGroupId : coordinator.validateCommit(groupId: group, generation: generation, memberId: member)
        var perPartition: [String: [Int32: ErrorCode]] = [:]
        if error == .none {
            var commits: [(topic: String, partition: Int32, offset: Int64)] = []
            var metadataText = ""
            for (topic, parts) in topics {
                for (p, offset, meta) in parts {
                    if broker.partitionCount(topic).map({ p >= 0 && p < $0 }) != true {
                        perPartition[topic, default: [:]][p] = .unknownTopicOrPartition
                    } else {
                        commits.append((topic, p, offset))
                        metadataText = meta ?? ""
                    }
                }
            }
            do {
                try broker.commitOffsets(group: group, offsets: commits, metadata: metadataText)
            } catch _ {
                error = .coordinatorNotAvailable
            }
        }
        var w = KafkaWriter()
        if v >= 3 { w.int32(0) }
        w.array(topics) { w, topic in
            w.string(topic.0)
            w.array(topic.1) { w, part in
                w.int32(part.0)
                w.int16((perPartition[topic.0]?[part.0] ?? error).rawValue)
            }
        }
        return w.buffer
    }

    func offsetFetch(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        let group = try r.string()
        let requested: [(String, [Int32])]? = try r.nullableArray(minElementBytes: 6) { r in
            (try r.string(), try r.array(minElementBytes: 4) { try $0.int32() })
        }
        var topics: [(String, [Int32])]
        if let requested {
            topics = requested
        } else {
            var byTopic: [String: [Int32]] = [:]
            for c in (try? broker.metadata.committedOffsets(group: group)) ?? [] { byTopic[c.topic, default: []].append(c.partition) }
            topics = byTopic.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        }
        var w = KafkaWriter()
        if v >= 3 { w.int32(0) }
        w.array(topics) { w, topic in
            w.string(topic.0)
            w.array(topic.1) { w, p in
                let committed = (try? self.broker.metadata.committedOffset(group: group, topic: topic.0, partition: p)) ?? nil
                w.int32(p)
                w.int64(committed?.offset ?? -1)
                if v >= 5 { w.int32(-1) }
                w.nullableString(committed?.metadata ?? "")
                w.int16(0)
            }
        }
        if v >= 2 { w.int16(0) }
        return w.buffer
    }

    func listGroups(_ v: Int16) -> ByteBuffer {
        var all: [String: String] = [:]
        for g in (try? broker.metadata.groups()) ?? [] { all[g] = "consumer" }
        for g in coordinator.groupList() { all[g.id] = g.protocolType }
        var w = KafkaWriter()
        if v >= 1 { w.int32(0) }
        w.int16(0)
        w.array(all.sorted { $0.key < $1.key }) { w, g in
            w.string(g.key)
            w.string(g.value)
        }
        return w.buffer
    }

    func describeGroups(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        let ids: [String] = try r.array(minElementBytes: 2) { try $0.string() }
        if v >= 3 { _ = try r.bool() }
        var w = KafkaWriter()
        if v >= 1 { w.int32(0) }
        w.array(ids) { w, id in
            let d = self.coordinator.describe(id)
            w.int16(0)
            w.string(id)
            w.string(d?.state ?? "Dead")
            w.string(d?.protocolType ?? "")
            w.string(d?.protocolName ?? "")
            w.array(d?.members ?? []) { w, m in
                w.string(m.id)
                if v >= 4 { w.nullableString(m.instanceId) }
                w.string(m.clientId)
                w.string(m.host)
                w.bytes(m.metadata)
                w.bytes(m.assignment)
            }
            if v >= 3 { w.int32(Int32.min) }
        }
        return w.buffer
    }

    // MARK: Admin

    func createTopics(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        struct Spec { let name: String; let partitions: Int32; let replication: Int16; let configs: [String: String] }
        let specs: [Spec] = try r.array(minElementBytes: 12) { r in
            let name = try r.string()
            let partitions = try r.int32()
            let replication = try r.int16()
            _ = try r.array(minElementBytes: 8) { r in (try r.int32(), try r.array(minElementBytes: 4) { try $0.int32() }) }
            let configs: [(String, String?)] = try r.array(minElementBytes: 4) { r in (try r.string(), try r.nullableString()) }
            var map: [String: String] = [:]
            for (k, value) in configs { if let value { map[k] = value } }
            return Spec(name: name, partitions: partitions, replication: replication, configs: map)
        }
        _ = try r.int32()
        let validateOnly = v >= 1 ? try r.bool() : false
        var w = KafkaWriter()
        if v >= 2 { w.int32(0) }
        w.array(specs) { w, spec in
            var error = ErrorCode.none
            var message: String?
            if let why = TopicName.problem(spec.name) {
                error = .invalidTopicException
                message = why
            } else if spec.replication != -1 && spec.replication != 1 {
                error = .invalidReplicationFactor
                message = "a single Strata node keeps one replica; replication factor must be 1 or -1"
            } else if spec.partitions != -1 && (spec.partitions < 1 || spec.partitions > Broker.Options.maxPartitions) {
                error = .invalidPartitions
                message = "partitions must be in 1...\(Broker.Options.maxPartitions)"
            } else if self.broker.partitionCount(spec.name) != nil {
                error = .topicAlreadyExists
                message = "topic '\(spec.name)' already exists"
            } else {
                do {
                    _ = try TopicConfig.parse(spec.configs)
                    if !validateOnly {
                        try self.broker.createTopic(spec.name, partitions: spec.partitions == -1 ? nil : spec.partitions, configs: spec.configs)
                    }
                } catch let problem as TopicConfig.Problem {
                    error = .invalidConfig
                    message = problem.description
                } catch let e as BrokerError {
                    if case .topicExists = e { error = .topicAlreadyExists } else { error = .invalidRequest }
                    message = e.description
                } catch let other {
                    error = .unknownServerError
                    message = "\(other)"
                }
            }
            w.string(spec.name)
            w.int16(error.rawValue)
            if v >= 1 { w.nullableString(message) }
        }
        return w.buffer
    }

    func deleteTopics(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        let names: [String] = try r.array(minElementBytes: 2) { try $0.string() }
        _ = try r.int32()
        var w = KafkaWriter()
        if v >= 1 { w.int32(0) }
        w.array(names) { w, name in
            var error = ErrorCode.none
            if TopicName.problem(name) != nil {
                error = .invalidTopicException
            } else if self.broker.partitionCount(name) == nil {
                error = .unknownTopicOrPartition
            } else {
                do { try self.broker.deleteTopic(name) } catch _ { error = .unknownServerError }
            }
            w.string(name)
            w.int16(error.rawValue)
        }
        return w.buffer
    }

    /// DeleteRecords: moves each partition's log start to the given offset (-1: the high watermark).
    func deleteRecords(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        let topics: [(String, [(Int32, Int64)])] = try r.array(minElementBytes: 6) { r in
            (try r.string(), try r.array(minElementBytes: 12) { r in (try r.int32(), try r.int64()) })
        }
        _ = try r.int32()
        var w = KafkaWriter()
        w.int32(0)
        w.array(topics) { w, topic in
            w.string(topic.0)
            w.array(topic.1) { w, req in
                var error = ErrorCode.none
                var low: Int64 = -1
                do {
                    let log = try self.broker.log(topic: topic.0, partition: req.0)
                    low = try self.broker.deleteRecords(topic: topic.0, partition: req.0, before: req.1 == -1 ? log.logEndOffset : req.1)
                } catch let e as LogError {
                    if case .offsetOutOfRange = e { error = .offsetOutOfRange } else { error = .unknownServerError }
                } catch _ {
                    error = .unknownTopicOrPartition
                }
                w.int32(req.0)
                w.int64(low)
                w.int16(error.rawValue)
            }
        }
        return w.buffer
    }

    func describeConfigs(_ r: inout KafkaReader, _ v: Int16) throws -> ByteBuffer {
        let resources: [(Int8, String, [String]?)] = try r.array(minElementBytes: 7) { r in
            (try r.int8(), try r.string(), try r.nullableArray(minElementBytes: 2) { try $0.string() })
        }
        if v >= 1 { _ = try r.bool() }
        if v >= 3 { _ = try r.bool() }
        var w = KafkaWriter()
        w.int32(0)
        w.array(resources) { w, res in
            var error = ErrorCode.none
            var message: String?
            var entries: [(String, String, Bool)] = []
            if res.0 == 2 {
                if let d = try? self.broker.describeTopic(res.1) {
                    entries = d.configs.sorted { $0.key < $1.key }.map { ($0.key, $0.value, d.overrides[$0.key] == nil) }
                    if let keys = res.2 { entries = entries.filter { keys.contains($0.0) } }
                } else {
                    error = .unknownTopicOrPartition
                    message = "unknown topic '\(res.1)'"
                }
            } else if res.0 != 4 {
                error = .invalidRequest
                message = "resource type \(res.0) is not supported"
            }
            w.int16(error.rawValue)
            w.nullableString(message)
            w.int8(res.0)
            w.string(res.1)
            w.array(entries) { w, e in
                w.string(e.0)
                w.nullableString(e.1)
                w.bool(false)
                if v == 0 { w.bool(e.2) } else { w.int8(e.2 ? 5 : 1) }  // DEFAULT_CONFIG / TOPIC_CONFIG
                w.bool(false)
                if v >= 1 { w.array([Int]()) { _, _ in } }
                if v >= 3 {
                    w.int8(0)
                    w.nullableString(nil)
                }
            }
        }
        return w.buffer
    }
}

/// Idempotent producers: the sequence numbers of the last batches each (producer, partition)
/// wrote, so a retried batch is acknowledged with its original offset instead of appended again.
/// Kept in memory (a restart forgets it; Kafka rebuilds it from producer snapshots).
final class ProducerStateTable: @unchecked Sendable {
    enum Check { case accept, duplicate(Int64), outOfOrder }

    private struct Key: Hashable { let producerId: Int64; let topic: String; let partition: Int32 }
    private struct Entry { var epoch: Int16; var batches: [(first: Int32, last: Int32, offset: Int64)] }
    private let lock = NIOLock()
    private var entries: [Key: Entry] = [:]
    static let batchesRemembered = 5
    static let maxProducers = 100_000

    func check(producerId: Int64, epoch: Int16, topic: String, partition: Int32, firstSequence: Int32, lastSequence: Int32) -> Check {
        lock.withLock {
            guard let e = entries[Key(producerId: producerId, topic: topic, partition: partition)], e.epoch == epoch else { return .accept }
            if let dup = e.batches.first(where: { $0.first == firstSequence && $0.last == lastSequence }) { return .duplicate(dup.offset) }
            guard let last = e.batches.last else { return .accept }
            return firstSequence == last.last &+ 1 ? .accept : .outOfOrder
        }
    }

    func record(producerId: Int64, epoch: Int16, topic: String, partition: Int32, firstSequence: Int32, lastSequence: Int32, baseOffset: Int64) {
        lock.withLock {
            let key = Key(producerId: producerId, topic: topic, partition: partition)
            if entries[key] == nil && entries.count >= Self.maxProducers { entries.removeAll() }
            var e = entries[key] ?? Entry(epoch: epoch, batches: [])
            if e.epoch != epoch { e = Entry(epoch: epoch, batches: []) }
            e.batches.append((firstSequence, lastSequence, baseOffset))
            if e.batches.count > Self.batchesRemembered { e.batches.removeFirst() }
            entries[key] = e
        }
    }
}
