import NIOCore
import StrataBroker

extension KafkaRequestHandler {
    /// The broker's group coordinator (shared with embedded users of the broker).
    var coordinator: GroupCoordinator { broker.groups }

    func findCoordinator(_ request: FindCoordinatorRequest) -> FindCoordinatorResponse {
        // This node coordinates every group (and would every transaction).
        FindCoordinatorResponse(coordinators: request.keys.map { .init(key: $0, nodeId: nodeId, host: advertisedHost, port: advertisedPort) })
    }

    func joinGroup(_ request: JoinGroupRequest, _ v: Int16, clientId: String, clientHost: String, eventLoop: EventLoop) -> EventLoopFuture<ByteBuffer?> {
        if let kip848 = broker.consumerGroups.describe(request.groupId), !kip848.members.isEmpty {
            // The id belongs to a KIP-848 group with members: one group, one protocol.
            let response = JoinGroupResponse(errorCode: .inconsistentGroupProtocol, protocolType: nil, protocolName: nil, memberId: request.memberId)
            metrics.countErrors(.joinGroup, response)
            return eventLoop.makeSucceededFuture(response.encoded(version: v, flexible: ApiKey.joinGroup.isFlexible(v)))
        }
        let promise = eventLoop.makePromise(of: GroupCoordinator.JoinResult.self)
        coordinator.join(groupId: request.groupId, memberId: request.memberId, instanceId: request.groupInstanceId, clientId: clientId,
                         clientHost: clientHost, sessionTimeoutMs: Int64(request.sessionTimeoutMs), rebalanceTimeoutMs: Int64(request.rebalanceTimeoutMs),
                         protocolType: request.protocolType, protocols: request.protocols, requiresKnownMemberId: v >= 4,
                         completion: { promise.succeed($0) })
        let flexible = ApiKey.joinGroup.isFlexible(v)
        let protocolType = request.protocolType
        return promise.futureResult.map { res in
            let response = JoinGroupResponse(errorCode: ErrorCode(res.error), generationId: res.generation, protocolType: res.error == .none ? protocolType : nil,
                                             protocolName: res.error == .none ? res.protocolName : nil, leader: res.leader, memberId: res.memberId,
                                             members: res.members)
            self.metrics.countErrors(.joinGroup, response)
            return response.encoded(version: v, flexible: flexible)
        }
    }

    func syncGroup(_ request: SyncGroupRequest, _ v: Int16, eventLoop: EventLoop) -> EventLoopFuture<ByteBuffer?> {
        let promise = eventLoop.makePromise(of: (ErrorCode, [UInt8]).self)
        coordinator.sync(groupId: request.groupId, generation: request.generationId, memberId: request.memberId,
                         assignments: request.assignments.map { ($0.memberId, $0.assignment) },
                         completion: { error, assignment in promise.succeed((ErrorCode(error), assignment)) })
        let flexible = ApiKey.syncGroup.isFlexible(v)
        let described = coordinator.describe(request.groupId)
        return promise.futureResult.map { error, assignment in
            let response = SyncGroupResponse(errorCode: error, protocolType: described?.protocolType, protocolName: described?.protocolName,
                                             assignment: assignment)
            self.metrics.countErrors(.syncGroup, response)
            return response.encoded(version: v, flexible: flexible)
        }
    }

    func heartbeat(_ request: HeartbeatRequest) -> ErrorOnlyResponse {
        ErrorOnlyResponse(errorCode: ErrorCode(coordinator.heartbeat(groupId: request.groupId, generation: request.generationId, memberId: request.memberId)))
    }

    func leaveGroup(_ request: LeaveGroupRequest) -> LeaveGroupResponse {
        let results = coordinator.leave(groupId: request.groupId, memberIds: request.memberIds)
        // v0-2 carry one member and its error at the top level; v3+ a list.
        return LeaveGroupResponse(errorCode: request.memberIds.count == 1 ? ErrorCode(results.first?.1 ?? .none) : .none,
                                  members: results.map { ($0.0, ErrorCode($0.1)) })
    }

    func offsetCommit(_ request: OffsetCommitRequest) -> PartitionErrorsResponse {
        let group = request.groupId
        var error: ErrorCode
        if group.isEmpty {
            error = .invalidGroupId
        } else if let verdict = broker.consumerGroups.validateCommit(groupId: group, memberId: request.memberId, memberEpoch: request.generationId) {
            // A KIP-848 group: the generation is the member epoch.
            error = verdict.map { $0 == .unknownMemberId ? ErrorCode.unknownMemberId : .fencedMemberEpoch } ?? .none
        } else {
            error = ErrorCode(coordinator.validateCommit(groupId: group, generation: request.generationId, memberId: request.memberId))
        }
        var perPartition: [String: [Int32: ErrorCode]] = [:]
        if error == .none {
            var commits: [(topic: String, partition: Int32, offset: Int64)] = []
            var metadataText = ""
            for topic in request.topics {
                for p in topic.partitions {
                    if !partitionExists(topic.name, p.index) {
                        perPartition[topic.name, default: [:]][p.index] = .unknownTopicOrPartition
                    } else if (p.metadata?.utf8.count ?? 0) > 4096 {
                        perPartition[topic.name, default: [:]][p.index] = .offsetMetadataTooLarge  // offset.metadata.max.bytes
                    } else {
                        commits.append((topic.name, p.index, p.offset))
                        metadataText = p.metadata ?? ""
                    }
                }
            }
            do {
                try broker.commitOffsets(group: group, offsets: commits, metadata: metadataText)
            } catch let thrown {
                error = ErrorCode(any: thrown) == .unknownServerError ? .coordinatorNotAvailable : ErrorCode(any: thrown)
            }
        }
        return PartitionErrorsResponse(topics: request.topics.map { topic in
            .init(name: topic.name, partitions: topic.partitions.map { p in (p.index, perPartition[topic.name]?[p.index] ?? error) })
        })
    }

    func offsetFetch(_ request: OffsetFetchRequest) -> OffsetFetchResponse {
        let group = request.groupId
        var topics: [(name: String, partitions: [Int32])]
        if let requested = request.topics {
            topics = requested
        } else {
            var byTopic: [String: [Int32]] = [:]
            for c in (try? broker.metadata.committedOffsets(group: group)) ?? [] { byTopic[c.topic, default: []].append(c.partition) }
            topics = byTopic.sorted { $0.key < $1.key }.map { ($0.key, $0.value.sorted()) }
        }
        return OffsetFetchResponse(topics: topics.map { topic in
            .init(name: topic.name, partitions: topic.partitions.map { p in
                if request.requireStable && broker.hasPendingTransactionalOffset(group: group, topic: topic.name, partition: p) {
                    return .init(index: p, offset: -1, metadata: nil, errorCode: .unstableOffsetCommit)
                }
                let committed = (try? broker.metadata.committedOffset(group: group, topic: topic.name, partition: p)) ?? nil
                return .init(index: p, offset: committed?.offset ?? -1, metadata: committed?.metadata ?? "")
            })
        })
    }

    func listGroups(_ request: ListGroupsRequest) -> ListGroupsResponse {
        var all: [String: (protocolType: String, state: String, type: String)] = [:]
        for g in (try? broker.metadata.groups()) ?? [] { all[g] = ("consumer", "Empty", "classic") }
        for g in coordinator.groupList() { all[g.id] = (g.protocolType, coordinator.describe(g.id)?.state ?? "Empty", "classic") }
        for id in broker.consumerGroups.groupIds { all[id] = ("consumer", broker.consumerGroups.describe(id)?.state ?? "Empty", "consumer") }
        let states = Set(request.statesFilter.map { $0.lowercased() })
        let types = Set(request.typesFilter.map { $0.lowercased() })
        return ListGroupsResponse(groups: all.sorted { $0.key < $1.key }
            .filter { (states.isEmpty || states.contains($0.value.state.lowercased())) && (types.isEmpty || types.contains($0.value.type)) }
            .map { ($0.key, $0.value.protocolType, $0.value.state, $0.value.type) })
    }

    func describeGroups(_ request: DescribeGroupsRequest) -> DescribeGroupsResponse {
        DescribeGroupsResponse(groups: request.groups.map { id in
            let d = coordinator.describe(id)
            let hasOffsets = !((try? broker.metadata.committedOffsets(group: id)) ?? []).isEmpty
            return .init(id: id, state: d?.state ?? (hasOffsets ? "Empty" : "Dead"), protocolType: d?.protocolType ?? (hasOffsets ? "consumer" : ""),
                         protocolName: d?.protocolName ?? "",
                         members: (d?.members ?? []).map { .init(id: $0.id, instanceId: $0.instanceId, clientId: $0.clientId, host: $0.host,
                                                                 metadata: $0.metadata, assignment: $0.assignment) })
        })
    }

    /// DeleteGroups: a group with live members is NON_EMPTY_GROUP; one that never existed,
    /// GROUP_ID_NOT_FOUND; otherwise its committed offsets and its empty coordinator entry go.
    func deleteGroups(_ request: DeleteGroupsRequest) -> DeleteGroupsResponse {
        DeleteGroupsResponse(results: request.groups.map { group in
            if let d = coordinator.describe(group), !d.members.isEmpty { return (group, .nonEmptyGroup) }
            do {
                return (group, try broker.deleteGroup(group) ? .none : .groupIdNotFound)
            } catch {
                return (group, ErrorCode(any: error))
            }
        })
    }

    /// OffsetDelete: refused per partition while a live member of the group subscribes to the
    /// topic (GROUP_SUBSCRIBED_TO_TOPIC), as Kafka does.
    func offsetDelete(_ request: OffsetDeleteRequest) -> PartitionErrorsResponse {
        let d = coordinator.describe(request.groupId)
        guard d != nil || !((try? broker.metadata.committedOffsets(group: request.groupId)) ?? []).isEmpty else {
            return PartitionErrorsResponse(topics: [], topLevelError: .groupIdNotFound)
        }
        let subscribed = Set((d?.members ?? []).flatMap { ConsumerProtocol.subscribedTopics($0.metadata) })
        var topics: [PartitionErrorsResponse.Topic] = []
        var deletions: [(topic: String, partition: Int32)] = []
        for topic in request.topics {
            topics.append(.init(name: topic.name, partitions: topic.partitions.map { p in
                if subscribed.contains(topic.name) { return (p, .groupSubscribedToTopic) }
                if !partitionExists(topic.name, p) { return (p, .unknownTopicOrPartition) }
                deletions.append((topic.name, p))
                return (p, .none)
            }))
        }
        var top = ErrorCode.none
        do { try broker.deleteCommittedOffsets(group: request.groupId, partitions: deletions) } catch { top = ErrorCode(any: error) }
        return PartitionErrorsResponse(topics: topics, topLevelError: top)
    }
}

/// Kafka's consumer protocol (ConsumerProtocolSubscription): what a member's join metadata says
/// it subscribes to. Bounds-checked; garbage yields no topics.
enum ConsumerProtocol {
    static func subscribedTopics(_ metadata: [UInt8]) -> [String] {
        var r = KafkaReader(ByteBuffer(bytes: metadata))
        guard (try? r.int16()) != nil, let topics = try? r.array(minElementBytes: 2, { try $0.string() }) else { return [] }
        return topics
    }
}
