import StrataBroker
import StrataLog

extension KafkaRequestHandler {
    /// One broker (this node) at the advertised address, controller = this node. Topics a
    /// request names are auto-created when the request and the broker allow it, except internal
    /// names (`__` prefix: Kafka's own topics are never made as user topics).
    func metadata(_ request: MetadataRequest, _ v: Int16) -> MetadataResponse {
        var names = request.topics ?? broker.topicNames()
        var unknownIds: [[UInt8]] = []
        for id in request.topicIds {
            if let name = broker.topicName(forId: id) { if !names.contains(name) { names.append(name) } } else { unknownIds.append(id) }
        }
        // Read once per request, not per topic: a Metadata request for every topic of a broker
        // with 10,000 partitions stays linear.
        let offline = Set(broker.offlinePartitions.keys)
        let topics: [MetadataResponse.Topic] = names.map { name in
            var error = ErrorCode.none
            var partitions: Int32 = 0
            if TopicName.problem(name) != nil {
                error = .invalidTopicException
            } else if let count = broker.partitionCount(name) {
                partitions = count
            } else if request.allowAutoTopicCreation && broker.options.autoCreateTopics && !name.hasPrefix("__") {
                try? broker.createTopic(name)
                partitions = broker.partitionCount(name) ?? 0
                if partitions == 0 { error = .leaderNotAvailable }
            } else {
                error = .unknownTopicOrPartition
            }
            return MetadataResponse.Topic(
                errorCode: error, name: name, topicId: broker.topicId(name) ?? [UInt8](repeating: 0, count: 16), isInternal: Broker.isInternalTopic(name),
                partitions: (0..<partitions).map { p in
                    // An offline partition has no leader to offer (Kafka: LEADER_NOT_AVAILABLE).
                    let down = !offline.isEmpty && offline.contains(LogManager.partitionDirectoryName(topic: name, partition: p))
                    return MetadataResponse.Partition(errorCode: down ? .kafkaStorageError : .none, index: p, leader: down ? -1 : nodeId,
                                                      replicas: [nodeId], isr: down ? [] : [nodeId])
                })
        }
        let unknown = unknownIds.map { MetadataResponse.Topic(errorCode: .unknownTopicId, name: "", topicId: $0, partitions: []) }
        return MetadataResponse(brokers: [.init(nodeId: nodeId, host: advertisedHost, port: advertisedPort, rack: nil)],
                                clusterId: clusterId, controllerId: nodeId, topics: topics + unknown)
    }

    func describeCluster(_ request: DescribeClusterRequest) -> DescribeClusterResponse {
        DescribeClusterResponse(endpointType: request.endpointType, clusterId: clusterId, controllerId: nodeId,
                                brokers: [(nodeId, advertisedHost, advertisedPort)])
    }
}
