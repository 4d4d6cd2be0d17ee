import StrataBroker

/// KIP-848: translation between ConsumerGroupHeartbeat/ConsumerGroupDescribe and the broker's
/// `ConsumerGroupCoordinator` (topic ids on the wire, names inside).
extension KafkaRequestHandler {
    func consumerGroupHeartbeat(_ request: ConsumerGroupHeartbeatRequest, clientId: String, clientHost: String, _ access: Access) -> ConsumerGroupHeartbeatResponse {
        func refused(_ code: ErrorCode, _ message: String) -> ConsumerGroupHeartbeatResponse {
            ConsumerGroupHeartbeatResponse(errorCode: code, errorMessage: message, memberId: nil, memberEpoch: -1, heartbeatIntervalMs: 0, assignment: nil)
        }
        guard !request.groupId.isEmpty, request.groupId.utf8.count <= 255 else { return refused(.invalidGroupId, "group id must be 1-255 bytes") }
        guard access.group(.read, request.groupId) else { return refused(.groupAuthorizationFailed, "not authorized to read group \(request.groupId)") }
        // Bounds on what one member may make the coordinator keep.
        if (request.subscribedTopicNames?.count ?? 0) > 10_000 || (request.topicPartitions?.count ?? 0) > 10_000
            || (request.topicPartitions?.reduce(0) { $0 + $1.partitions.count } ?? 0) > 100_000 {
            return refused(.invalidRequest, "at most 10000 subscribed topics and 100000 owned partitions")
        }
        if request.memberId.utf8.count > 255 || (request.instanceId?.utf8.count ?? 0) > 255 || (request.rackId?.utf8.count ?? 0) > 255
            || (request.serverAssignor?.utf8.count ?? 0) > 255 || request.subscribedTopicNames?.contains(where: { $0.utf8.count > 249 }) == true {
            return refused(.invalidRequest, "member, instance and rack ids and assignor names are at most 255 bytes, topic names 249")
        }
        if request.subscribedTopicRegex != nil && request.subscribedTopicNames == nil && request.memberEpoch == 0 {
            return refused(.invalidRequest, "subscriptions by regular expression are not served; subscribe by topic names")
        }
        if request.memberEpoch == 0, let classic = coordinator.describe(request.groupId), !classic.members.isEmpty {
            return refused(.inconsistentGroupProtocol, "group \(request.groupId) is a classic group with members")
        }
        var hb = ConsumerGroupCoordinator.Heartbeat(groupId: request.groupId, memberId: request.memberId, memberEpoch: request.memberEpoch)
        hb.instanceId = request.instanceId
        hb.rackId = request.rackId
        hb.rebalanceTimeoutMs = request.rebalanceTimeoutMs
        // Topics the session may not read are left out of the subscription (as Kafka's
        // coordinator does for topics a member is not authorized to describe).
        hb.subscribedTopics = request.subscribedTopicNames.map { names in names.filter { access.topic(.describe, $0) } }
        hb.serverAssignor = request.serverAssignor
        if let owned = request.topicPartitions {
            // One pass over the topics for the whole request, not one per entry.
            var names: [[UInt8]: String] = [:]
            if !owned.isEmpty { for name in broker.topicNames() { if let id = broker.topicId(name) { names[id] = name } } }
            var byName: [String: Set<Int32>] = [:]
            for t in owned { if let name = names[t.topicId] { byName[name, default: []].formUnion(t.partitions) } }
            hb.ownedPartitions = byName
        }
        hb.clientId = clientId
        hb.clientHost = clientHost
        do {
            let result = try broker.consumerGroups.heartbeat(hb, topics: broker.topicLookup)
            let assignment = result.assignment.map { byName in
                byName.sorted { $0.key < $1.key }.compactMap { name, partitions in broker.topicId(name).map { (topicId: $0, partitions: partitions) } }
            }
            return ConsumerGroupHeartbeatResponse(errorCode: .none, errorMessage: nil, memberId: result.memberId, memberEpoch: result.memberEpoch,
                                                  heartbeatIntervalMs: result.heartbeatIntervalMs, assignment: assignment)
        } catch {
            switch error {
            case .unknownMemberId: return refused(.unknownMemberId, "member \(request.memberId) is not in group \(request.groupId)")
            case .fencedMemberEpoch: return refused(.fencedMemberEpoch, "member epoch \(request.memberEpoch) is not the member's current epoch")
            case .unsupportedAssignor: return refused(.unsupportedAssignor, "server assignors are \(ConsumerGroupCoordinator.assignors.joined(separator: ", "))")
            case .invalidRequest(let why): return refused(.invalidRequest, why)
            case .groupMaxSizeReached: return refused(.groupMaxSizeReached, "group or coordinator limit reached")
            case .inconsistentGroupProtocol: return refused(.inconsistentGroupProtocol, "group \(request.groupId) is a classic group")
            }
        }
    }

    func consumerGroupDescribe(_ request: ConsumerGroupDescribeRequest, _ access: Access) -> ConsumerGroupDescribeResponse {
        ConsumerGroupDescribeResponse(groups: request.groupIds.map { id in
            guard access.group(.describe, id) else { return .init(errorCode: .groupAuthorizationFailed, errorMessage: "not authorized", groupId: id) }
            guard let d = broker.consumerGroups.describe(id) else {
                return .init(errorCode: .groupIdNotFound, errorMessage: "no consumer group \(id)", groupId: id)
            }
            func partitions(_ byName: [String: [Int32]]) -> [ConsumerGroupDescribeResponse.TopicPartitions] {
                byName.sorted { $0.key < $1.key }.compactMap { name, ps in broker.topicId(name).map { .init(topicId: $0, name: name, partitions: ps) } }
            }
            return .init(errorCode: .none, errorMessage: nil, groupId: id, state: d.state, epoch: d.epoch, assignmentEpoch: d.epoch, assignor: d.assignor,
                         members: d.members.map { m in
                .init(memberId: m.memberId, instanceId: m.instanceId, rackId: m.rackId, memberEpoch: m.memberEpoch, clientId: m.clientId,
                      clientHost: m.clientHost, subscribedTopicNames: m.subscribedTopics, assignment: partitions(m.assignment),
                      targetAssignment: partitions(m.target))
            })
        })
    }
}
