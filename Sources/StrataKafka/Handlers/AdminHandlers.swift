#if canImport(Glibc)
import Glibc
#endif
import StrataBroker
import StrataLog

extension KafkaRequestHandler {
    func createTopics(_ request: CreateTopicsRequest, _ v: Int16) -> CreateTopicsResponse {
        CreateTopicsResponse(topics: request.topics.map { spec in
            var error = ErrorCode.none
            var message: String?
            var configs: [String: String] = [:]
            var nullKeys: [String] = []
            for c in spec.configs { if let value = c.value { configs[c.name] = value } else { nullKeys.append(c.name) } }
            if let why = TopicName.problem(spec.name) {
                error = .invalidTopicException
                message = why
            } else if spec.name.hasPrefix("__") {
                error = .invalidTopicException
                message = "topic names starting with '__' are reserved for Kafka's internal topics"
            } else if !nullKeys.isEmpty {
                error = .invalidConfig
                message = "Null value not supported for topic configs: \(nullKeys.joined(separator: ","))"
            } else if !spec.assignments.isEmpty && (spec.numPartitions != -1 || spec.replicationFactor != -1) {
                error = .invalidRequest
                message = "both num_partitions or replication_factor and manual assignments were given"
            } else if !spec.assignments.isEmpty && !validAssignment(spec.assignments) {
                error = .invalidReplicaAssignment
                message = "this cluster has one broker (\(nodeId)): each partition 0..<n must be assigned exactly [\(nodeId)]"
            } else if spec.replicationFactor != -1 && spec.replicationFactor != 1 {
                error = .invalidReplicationFactor
                message = "a single Strata node keeps one replica; replication factor must be 1 or -1"
            } else if broker.partitionCount(spec.name) != nil {
                error = .topicAlreadyExists
                message = "topic '\(spec.name)' already exists"
            } else {
                do {
                    let config = try TopicConfig.parse(configs, over: broker.options.defaultTopicConfig)
                    let partitions = !spec.assignments.isEmpty ? Int32(spec.assignments.count) : (spec.numPartitions == -1 ? nil : spec.numPartitions)
                    if request.validateOnly {
                        let count = partitions ?? broker.options.defaultPartitions
                        try broker.checkLimits(newTopicPartitions: count, adding: count, config: config)
                    } else {
                        try broker.createTopic(spec.name, partitions: partitions, configs: configs)
                    }
                } catch let problem as TopicConfig.Problem {
                    error = .invalidConfig
                    message = problem.description
                } catch let thrown {
                    error = ErrorCode(any: thrown)
                    message = "\(thrown)"
                }
            }
            var topic = CreateTopicsResponse.Topic(name: spec.name, errorCode: error, errorMessage: message)
            if error == .none && v >= 5 {
                topic.numPartitions = !spec.assignments.isEmpty ? Int32(spec.assignments.count) : (spec.numPartitions == -1 ? broker.options.defaultPartitions : spec.numPartitions)
                topic.replicationFactor = 1
                topic.configs = topicConfigEntries(overrides: configs, config: (try? TopicConfig.parse(configs, over: broker.options.defaultTopicConfig)) ?? broker.options.defaultTopicConfig)
                    .map { .init(name: $0.name, value: $0.value, source: $0.source.rawValue) }
            }
            return topic
        })
    }

    /// A manual assignment one node can honour: partitions 0..<n, each on exactly this broker.
    func validAssignment(_ assignments: [(partition: Int32, brokers: [Int32])]) -> Bool {
        assignments.count <= Int(Broker.Options.maxPartitions)
            && Set(assignments.map(\.partition)) == Set((0..<Int32(assignments.count)).map { $0 })
            && assignments.allSatisfy { $0.brokers == [nodeId] }
    }

    func deleteTopics(_ request: DeleteTopicsRequest) -> DeleteTopicsResponse {
        DeleteTopicsResponse(results: request.names.map { name in
            if TopicName.problem(name) != nil { return (name, .invalidTopicException, nil) }
            guard broker.partitionCount(name) != nil else { return (name, .unknownTopicOrPartition, nil) }
            do {
                try broker.deleteTopic(name)
                return (name, .none, nil)
            } catch {
                return (name, ErrorCode(any: error), "\(error)")
            }
        })
    }

    func createPartitions(_ request: CreatePartitionsRequest) -> TopicErrorsResponse {
        TopicErrorsResponse(results: request.topics.map { t in
            guard let current = broker.partitionCount(t.name) else { return (t.name, .unknownTopicOrPartition, "unknown topic '\(t.name)'") }
            if let a = t.assignments, a.count != Int(t.count - current) || a.contains(where: { $0 != [nodeId] }) {
                return (t.name, .invalidReplicaAssignment, "this cluster has one broker (\(nodeId)): give each new partition exactly [\(nodeId)]")
            }
            guard t.count > current else {
                return (t.name, .invalidPartitions, "topic '\(t.name)' has \(current) partitions; the new count must be more")
            }
            do {
                if request.validateOnly {
                    try broker.checkLimits(newTopicPartitions: t.count, adding: t.count - current, config: nil)
                    return (t.name, .none, nil)
                }
                try broker.addPartitions(t.name, total: t.count)
                return (t.name, .none, nil)
            } catch {
                return (t.name, ErrorCode(any: error), "\(error)")
            }
        })
    }

    func describeLogDirs(_ request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
        let wanted: [(name: String, partitions: [Int32])] = request.topics
            ?? broker.topicNames().map { ($0, Array(0..<(broker.partitionCount($0) ?? 0))) }
        var topics: [(name: String, partitions: [DescribeLogDirsResponse.Partition])] = []
        for t in wanted {
            let parts: [DescribeLogDirsResponse.Partition] = t.partitions.compactMap { p in
                guard let log = try? broker.log(topic: t.name, partition: p) else { return nil }
                return .init(index: p, size: Int64(log.sizeInBytes))
            }
            if !parts.isEmpty { topics.append((t.name, parts)) }
        }
        var fs = statvfs()
        let stats = statvfs(broker.dataDirectory, &fs) == 0
        let fragment = Int64(fs.f_frsize)
        return DescribeLogDirsResponse(logDir: broker.logManager.logsDirectory, topics: topics,
                                       totalBytes: stats ? Int64(fs.f_blocks) * fragment : -1, usableBytes: stats ? Int64(fs.f_bavail) * fragment : -1)
    }

    /// One replica per partition, always the leader: there is never an election to run.
    func electLeaders(_ request: ElectLeadersRequest) -> ElectLeadersResponse {
        let topics = request.topics ?? broker.topicNames().map { ($0, Array(0..<(broker.partitionCount($0) ?? 0))) }
        return ElectLeadersResponse(results: topics.map { t in
            (t.name, t.partitions.map { p in
                partitionExists(t.name, p)
                    ? (p, ErrorCode.electionNotNeeded, "partition \(p) already has its only replica, broker \(nodeId), as leader")
                    : (p, ErrorCode.unknownTopicOrPartition, nil)
            })
        })
    }

    func alterPartitionReassignments(_ request: AlterPartitionReassignmentsRequest) -> AlterPartitionReassignmentsResponse {
        AlterPartitionReassignmentsResponse(results: request.topics.map { t in
            (t.name, t.partitions.map { p in
                guard partitionExists(t.name, p.index) else { return (p.index, ErrorCode.unknownTopicOrPartition, nil) }
                guard let replicas = p.replicas else {
                    return (p.index, .noReassignmentInProgress, "no reassignment is in progress for \(t.name)-\(p.index)")
                }
                if replicas == [nodeId] { return (p.index, .none, nil) }  // already where it is asked to be
                return (p.index, .invalidReplicaAssignment, "this cluster has one broker (\(nodeId)); a partition's only replica is on it")
            })
        })
    }
}
