import NIOCore
import StrataBroker
import StrataMetadata

/// What a request's session may do. Listeners that authenticate (SASL, required client
/// certificates) are checked against the ACLs; the others are trusted as a whole (Kafka without
/// an authorizer, and Strata's loopback default).
struct Access {
    let session: Session
    let host: String
    let authorizer: Authorizer?

    var enforced: Bool { session.authenticated && authorizer != nil }

    func allows(_ op: AclOperation, _ type: AclResourceType, _ name: String) -> Bool {
        guard enforced, let authorizer else { return true }
        return authorizer.authorize(principal: session.principal, host: host, operation: op, resourceType: type, name: name)
    }

    func cluster(_ op: AclOperation) -> Bool { allows(op, .cluster, "kafka-cluster") }
    func topic(_ op: AclOperation, _ name: String) -> Bool { allows(op, .topic, name) }
    func group(_ op: AclOperation, _ name: String) -> Bool { allows(op, .group, name) }
}

/// Kafka's authorization of each API (KafkaApis): requests are answered with
/// TOPIC_AUTHORIZATION_FAILED per refused topic, GROUP_AUTHORIZATION_FAILED for a refused group,
/// CLUSTER_AUTHORIZATION_FAILED for cluster operations. Refused parts are taken out of the request
/// before it runs, so nothing is appended, created, committed or deleted for them, and their
/// error entries are put back into the response.
extension KafkaRequestHandler {
    func authorizedMetadata(_ request: MetadataRequest, _ v: Int16, _ access: Access) -> MetadataResponse {
        guard access.enforced else { return metadata(request, v) }
        var r = request
        // Auto-creation needs CREATE on the cluster or the topic.
        if let names = request.topics, request.allowAutoTopicCreation, !access.cluster(.create) {
            if names.contains(where: { !access.topic(.create, $0) }) { r.allowAutoTopicCreation = false }
        }
        var response = metadata(r, v)
        if request.topics == nil {
            response.topics.removeAll { !access.topic(.describe, $0.name) }  // a listing hides what may not be described
        } else {
            for i in response.topics.indices where !access.topic(.describe, response.topics[i].name) {
                response.topics[i].errorCode = .topicAuthorizationFailed
                response.topics[i].partitions = []
                response.topics[i].isInternal = false
            }
        }
        return response
    }

    /// The topics among `names` the session may not `op` (none, without reading `names`, on a
    /// trusted listener: Produce and Fetch pass a lazy view, so they pay nothing there).
    func deniedTopics(_ names: some Sequence<String>, _ op: AclOperation, _ access: Access) -> Set<String> {
        guard access.enforced else { return [] }
        return Set(names.filter { !access.topic(op, $0) })
    }

    func authorizedListOffsets(_ request: ListOffsetsRequest, _ v: Int16, _ access: Access) -> ListOffsetsResponse {
        let denied = deniedTopics(request.topics.map(\.name), .describe, access)
        var r = request
        r.topics.removeAll { denied.contains($0.name) }
        var response = listOffsets(r, v)
        for t in request.topics where denied.contains(t.name) {
            response.topics.append(.init(name: t.name, partitions: t.partitions.map { .init(index: $0.index, errorCode: .topicAuthorizationFailed) }))
        }
        return response
    }

    func authorizedFindCoordinator(_ request: FindCoordinatorRequest, _ access: Access) -> FindCoordinatorResponse {
        var response = findCoordinator(request)
        guard access.enforced else { return response }
        for i in response.coordinators.indices {
            let key = response.coordinators[i].key
            let ok = request.keyType == 1 ? access.allows(.describe, .transactionalId, key) : access.group(.describe, key)
            if !ok {
                response.coordinators[i] = .init(key: key, nodeId: -1, host: "", port: -1,
                                                 errorCode: request.keyType == 1 ? .transactionalIdAuthorizationFailed : .groupAuthorizationFailed)
            }
        }
        return response
    }

    func authorizedOffsetCommit(_ request: OffsetCommitRequest, _ access: Access) -> PartitionErrorsResponse {
        guard access.enforced else { return offsetCommit(request) }
        guard access.group(.read, request.groupId) else {
            return PartitionErrorsResponse(topics: request.topics.map { .init(name: $0.name, partitions: $0.partitions.map { ($0.index, .groupAuthorizationFailed) }) })
        }
        let denied = deniedTopics(request.topics.map(\.name), .read, access)
        var r = request
        r.topics.removeAll { denied.contains($0.name) }
        var response = offsetCommit(r)
        for t in request.topics where denied.contains(t.name) {
            response.topics.append(.init(name: t.name, partitions: t.partitions.map { ($0.index, .topicAuthorizationFailed) }))
        }
        return response
    }

    func authorizedOffsetFetch(_ request: OffsetFetchRequest, _ access: Access) -> OffsetFetchResponse {
        guard access.enforced else { return offsetFetch(request) }
        guard access.group(.describe, request.groupId) else { return OffsetFetchResponse(topics: [], errorCode: .groupAuthorizationFailed) }
        var response = offsetFetch(request)
        if request.topics == nil {
            response.topics.removeAll { !access.topic(.describe, $0.name) }
        } else {
            for i in response.topics.indices where !access.topic(.describe, response.topics[i].name) {
                response.topics[i].partitions = response.topics[i].partitions.map { .init(index: $0.index, offset: -1, metadata: nil, errorCode: .topicAuthorizationFailed) }
            }
        }
        return response
    }

    func authorizedDescribeGroups(_ request: DescribeGroupsRequest, _ access: Access) -> DescribeGroupsResponse {
        var response = describeGroups(request)
        for i in response.groups.indices where !access.group(.describe, response.groups[i].id) {
            response.groups[i] = .init(errorCode: .groupAuthorizationFailed, id: response.groups[i].id, state: "", protocolType: "", protocolName: "", members: [])
        }
        return response
    }

    func authorizedListGroups(_ request: ListGroupsRequest, _ access: Access) -> ListGroupsResponse {
        var response = listGroups(request)
        if !access.cluster(.describe) { response.groups.removeAll { !access.group(.describe, $0.id) } }
        return response
    }

    func authorizedDeleteGroups(_ request: DeleteGroupsRequest, _ access: Access) -> DeleteGroupsResponse {
        let denied = Set(request.groups.filter { !access.group(.delete, $0) })
        var r = request
        r.groups.removeAll { denied.contains($0) }
        var response = deleteGroups(r)
        response.results += denied.sorted().map { ($0, .groupAuthorizationFailed) }
        return response
    }

    func authorizedOffsetDelete(_ request: OffsetDeleteRequest, _ access: Access) -> PartitionErrorsResponse {
        guard access.group(.delete, request.groupId) else {
            return PartitionErrorsResponse(topics: [], topLevelError: .groupAuthorizationFailed)
        }
        let denied = deniedTopics(request.topics.map(\.name), .read, access)
        var r = request
        r.topics.removeAll { denied.contains($0.name) }
        var response = offsetDelete(r)
        for t in request.topics where denied.contains(t.name) {
            response.topics.append(.init(name: t.name, partitions: t.partitions.map { ($0, .topicAuthorizationFailed) }))
        }
        return response
    }

    func authorizedCreateTopics(_ request: CreateTopicsRequest, _ v: Int16, _ access: Access) -> CreateTopicsResponse {
        let denied: Set<String> = access.cluster(.create) ? [] : deniedTopics(request.topics.map(\.name), .create, access)
        var r = request
        r.topics.removeAll { denied.contains($0.name) }
        var response = createTopics(r, v)
        response.topics += request.topics.filter { denied.contains($0.name) }.map {
            .init(name: $0.name, errorCode: .topicAuthorizationFailed, errorMessage: "not authorized to create topic \($0.name)")
        }
        return response
    }

    func authorizedDeleteTopics(_ request: DeleteTopicsRequest, _ access: Access) -> DeleteTopicsResponse {
        let denied = deniedTopics(request.names, .delete, access)
        var r = request
        r.names.removeAll { denied.contains($0) }
        var response = deleteTopics(r)
        response.results += denied.sorted().map { ($0, .topicAuthorizationFailed, "not authorized to delete topic \($0)") }
        return response
    }

    func authorizedDeleteRecords(_ request: DeleteRecordsRequest, _ access: Access) -> DeleteRecordsResponse {
        let denied = deniedTopics(request.topics.map(\.name), .delete, access)
        var r = request
        r.topics.removeAll { denied.contains($0.name) }
        var response = deleteRecords(r)
        for t in request.topics where denied.contains(t.name) {
            response.topics.append((t.name, t.partitions.map { ($0.index, -1, .topicAuthorizationFailed) }))
        }
        return response
    }

    func authorizedCreatePartitions(_ request: CreatePartitionsRequest, _ access: Access) -> TopicErrorsResponse {
        let denied = deniedTopics(request.topics.map(\.name), .alter, access)
        var r = request
        r.topics.removeAll { denied.contains($0.name) }
        var response = createPartitions(r)
        response.results += denied.sorted().map { ($0, .topicAuthorizationFailed, "not authorized to alter topic \($0)") }
        return response
    }

    /// Resource types of the config APIs: 2 topic, 4 broker (the cluster's ACLs).
    func configAllowed(_ type: Int8, _ name: String, _ op: AclOperation, _ access: Access) -> Bool {
        type == 2 ? access.topic(op, name) : access.cluster(op)
    }

    func authorizedDescribeConfigs(_ request: DescribeConfigsRequest, _ v: Int16, _ access: Access) -> DescribeConfigsResponse {
        var response = describeConfigs(request, v)
        for i in response.results.indices where !configAllowed(response.results[i].type, response.results[i].name, .describeConfigs, access) {
            response.results[i].entries = []
            response.results[i].errorCode = response.results[i].type == 2 ? .topicAuthorizationFailed : .clusterAuthorizationFailed
            response.results[i].errorMessage = "not authorized to describe configs"
        }
        return response
    }

    func authorizedAlterConfigs(_ request: AlterConfigsRequest, _ access: Access) -> AlterConfigsResponse {
        let denied = request.resources.filter { !configAllowed($0.type, $0.name, .alterConfigs, access) }
        var r = request
        r.resources.removeAll { res in denied.contains { $0.type == res.type && $0.name == res.name } }
        var response = alterConfigs(r)
        response.results += denied.map { ($0.type == 2 ? .topicAuthorizationFailed : .clusterAuthorizationFailed, "not authorized to alter configs", $0.type, $0.name) }
        return response
    }

    func authorizedInitProducerId(_ request: InitProducerIdRequest, _ access: Access) -> InitProducerIdResponse {
        if access.enforced {
            if let id = request.transactionalId {
                if !access.allows(.write, .transactionalId, id) { return InitProducerIdResponse(errorCode: .transactionalIdAuthorizationFailed, producerId: -1, producerEpoch: -1) }
            } else if !access.cluster(.idempotentWrite), !(access.authorizer?.allowsSomewhere(principal: access.session.principal, host: access.host, operation: .write, resourceType: .topic) ?? true) {
                // Kafka 3.0+: WRITE on any topic implies idempotent writes.
                return InitProducerIdResponse(errorCode: .clusterAuthorizationFailed, producerId: -1, producerEpoch: -1)
            }
        }
        return initProducerId(request)
    }

    // MARK: ACL administration

    func describeAcls(_ request: DescribeAclsRequest, _ access: Access) -> DescribeAclsResponse {
        guard access.cluster(.describe) else { return DescribeAclsResponse(errorCode: .clusterAuthorizationFailed, errorMessage: "not authorized to describe ACLs") }
        guard let authorizer else { return DescribeAclsResponse(errorCode: .securityDisabled, errorMessage: "no authorizer") }
        do {
            return DescribeAclsResponse(bindings: try authorizer.describe(request.filter.filter))
        } catch {
            return DescribeAclsResponse(errorCode: .unknownServerError, errorMessage: "\(error)")
        }
    }

    func createAcls(_ request: CreateAclsRequest, _ access: Access) -> CreateAclsResponse {
        guard access.cluster(.alter) else {
            return CreateAclsResponse(results: request.creations.map { _ in (.clusterAuthorizationFailed, "not authorized to create ACLs") })
        }
        guard let authorizer else { return CreateAclsResponse(results: request.creations.map { _ in (.securityDisabled, "no authorizer") }) }
        var results: [(ErrorCode, String?)] = []
        var valid: [AclBinding] = []
        for b in request.creations {
            if let problem = Authorizer.validate(b) { results.append((.invalidRequest, problem)) } else { results.append((.none, nil)); valid.append(b) }
        }
        do { try authorizer.create(valid) } catch {
            return CreateAclsResponse(results: request.creations.map { _ in (.unknownServerError, "\(error)") })
        }
        return CreateAclsResponse(results: results)
    }

    func deleteAcls(_ request: DeleteAclsRequest, _ access: Access) -> DeleteAclsResponse {
        guard access.cluster(.alter) else {
            return DeleteAclsResponse(results: request.filters.map { _ in (.clusterAuthorizationFailed, "not authorized to delete ACLs", []) })
        }
        guard let authorizer else { return DeleteAclsResponse(results: request.filters.map { _ in (.securityDisabled, "no authorizer", []) }) }
        do {
            let matched = try authorizer.delete(request.filters.map(\.filter))
            return DeleteAclsResponse(results: matched.map { (.none, nil, $0) })
        } catch {
            return DeleteAclsResponse(results: request.filters.map { _ in (.unknownServerError, "\(error)", []) })
        }
    }
}

extension AclFilterFields {
    var filter: AclFilter {
        AclFilter(resourceType: resourceType, resourceName: resourceName, patternType: patternType, principal: principal, host: host,
                  operation: operation, permission: permission)
    }
}
