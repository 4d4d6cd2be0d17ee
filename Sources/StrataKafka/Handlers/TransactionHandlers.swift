import StrataBroker
import StrataMetadata

/// The transaction coordinator's APIs: translation between the messages and the broker's
/// `Transactions.swift`, with Kafka's ACL checks (WRITE on the transactional id; WRITE on the
/// topics added; READ on the group whose offsets are committed). They write LMDB and markers, so
/// the dispatcher runs them off the event loop.
extension KafkaRequestHandler {
    func addPartitionsToTxn(_ request: AddPartitionsToTxnRequest, _ access: Access) -> PartitionErrorsResponse {
        func all(_ code: ErrorCode) -> PartitionErrorsResponse {
            PartitionErrorsResponse(topics: request.topics.map { .init(name: $0.name, partitions: $0.partitions.map { ($0, code) }) }, throttleFromVersion: 0)
        }
        guard access.allows(.write, .transactionalId, request.transactionalId) else { return all(.transactionalIdAuthorizationFailed) }
        let denied = deniedTopics(request.topics.map(\.name), .write, access)
        if !denied.isEmpty {
            // Kafka: the denied topics fail, the rest were not attempted.
            return PartitionErrorsResponse(topics: request.topics.map { t in
                .init(name: t.name, partitions: t.partitions.map { ($0, denied.contains(t.name) ? .topicAuthorizationFailed : .operationNotAttempted) })
            }, throttleFromVersion: 0)
        }
        let partitions = request.topics.flatMap { t in t.partitions.map { TopicPartitionName(topic: t.name, partition: $0) } }
        do {
            let failures = try broker.addPartitionsToTransaction(request.transactionalId, producerId: request.producerId,
                                                                 epoch: request.producerEpoch, partitions: partitions)
            return PartitionErrorsResponse(topics: request.topics.map { t in
                .init(name: t.name, partitions: t.partitions.map { p in
                    if failures.isEmpty { return (p, .none) }
                    return (p, failures[TopicPartitionName(topic: t.name, partition: p)].map { ErrorCode(any: $0) } ?? .operationNotAttempted)
                })
            }, throttleFromVersion: 0)
        } catch {
            return all(ErrorCode(any: error))
        }
    }

    func addOffsetsToTxn(_ request: AddOffsetsToTxnRequest, _ access: Access) -> ErrorOnlyResponse {
        guard access.allows(.write, .transactionalId, request.transactionalId) else { return ErrorOnlyResponse(errorCode: .transactionalIdAuthorizationFailed, throttleFromVersion: 0) }
        guard access.group(.read, request.groupId) else { return ErrorOnlyResponse(errorCode: .groupAuthorizationFailed, throttleFromVersion: 0) }
        do {
            try broker.addOffsetsToTransaction(request.transactionalId, producerId: request.producerId, epoch: request.producerEpoch, group: request.groupId)
            return ErrorOnlyResponse(errorCode: .none, throttleFromVersion: 0)
        } catch {
            return ErrorOnlyResponse(errorCode: ErrorCode(any: error), throttleFromVersion: 0)
        }
    }

    func endTxn(_ request: EndTxnRequest, _ access: Access) -> ErrorOnlyResponse {
        guard access.allows(.write, .transactionalId, request.transactionalId) else { return ErrorOnlyResponse(errorCode: .transactionalIdAuthorizationFailed, throttleFromVersion: 0) }
        do {
            try broker.endTransaction(request.transactionalId, producerId: request.producerId, epoch: request.producerEpoch, commit: request.committed)
            return ErrorOnlyResponse(errorCode: .none, throttleFromVersion: 0)
        } catch {
            return ErrorOnlyResponse(errorCode: ErrorCode(any: error), throttleFromVersion: 0)
        }
    }

    func txnOffsetCommit(_ request: TxnOffsetCommitRequest, _ access: Access) -> PartitionErrorsResponse {
        func all(_ code: ErrorCode) -> PartitionErrorsResponse {
            PartitionErrorsResponse(topics: request.topics.map { .init(name: $0.name, partitions: $0.partitions.map { ($0.index, code) }) }, throttleFromVersion: 0)
        }
        guard access.allows(.write, .transactionalId, request.transactionalId) else { return all(.transactionalIdAuthorizationFailed) }
        guard access.group(.read, request.groupId) else { return all(.groupAuthorizationFailed) }
        let denied = deniedTopics(request.topics.map(\.name), .read, access)
        if !denied.isEmpty {
            return PartitionErrorsResponse(topics: request.topics.map { t in
                .init(name: t.name, partitions: t.partitions.map { ($0.index, denied.contains(t.name) ? .topicAuthorizationFailed : .operationNotAttempted) })
            }, throttleFromVersion: 0)
        }
        // v3+: the consumer's generation and member id, checked as an OffsetCommit's are, so that a
        // producer whose consumer lost its partitions in a rebalance cannot commit for them.
        if request.generationId >= 0 || !request.memberId.isEmpty {
            if let verdict = broker.consumerGroups.validateCommit(groupId: request.groupId, memberId: request.memberId, memberEpoch: request.generationId) {
                if let verdict { return all(verdict == .unknownMemberId ? .unknownMemberId : .fencedMemberEpoch) }
            } else {
                let error = ErrorCode(coordinator.validateCommit(groupId: request.groupId, generation: request.generationId, memberId: request.memberId))
                if error != .none { return all(error) }
            }
        }
        // Kafka's offset.metadata.max.bytes (4096).
        if request.topics.contains(where: { $0.partitions.contains { ($0.metadata?.utf8.count ?? 0) > 4096 } }) { return all(.offsetMetadataTooLarge) }
        do {
            try broker.commitTransactionalOffsets(request.transactionalId, producerId: request.producerId, epoch: request.producerEpoch,
                                                  group: request.groupId,
                                                  offsets: request.topics.flatMap { t in t.partitions.map { (t.name, $0.index, $0.offset, $0.metadata ?? "") } })
            return all(.none)
        } catch {
            return all(ErrorCode(any: error))
        }
    }
}
