// Topic, config, cluster and partition administration APIs.

struct CreateTopicsRequest: KafkaRequestBody {
    struct Topic {
        var name: String
        var numPartitions: Int32
        var replicationFactor: Int16
        /// Manual placement: (partition, its replicas' broker ids).
        var assignments: [(partition: Int32, brokers: [Int32])]
        var configs: [(name: String, value: String?)]
    }
    var topics: [Topic]
    var validateOnly = false

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> CreateTopicsRequest {
        let topics: [Topic] = try r.array(minElementBytes: 8) { r in
            let name = try r.string()
            let partitions = try r.int32()
            let replication = try r.int16()
            let assignments: [(partition: Int32, brokers: [Int32])] = try r.array(minElementBytes: 5) { r in
                let partition = try r.int32()
                let brokers = try r.array(minElementBytes: 4) { try $0.int32() }
                try r.taggedFields()
                return (partition, brokers)
            }
            let configs: [(name: String, value: String?)] = try r.array(minElementBytes: 2) { r in
                let name = try r.string()
                let value = try r.nullableString()
                try r.taggedFields()
                return (name, value)
            }
            try r.taggedFields()
            return Topic(name: name, numPartitions: partitions, replicationFactor: replication, assignments: assignments, configs: configs)
        }
        _ = try r.int32()  // timeout_ms
        let validateOnly = v >= 1 ? try r.bool() : false
        try r.taggedFields()
        return CreateTopicsRequest(topics: topics, validateOnly: validateOnly)
    }
}

struct CreateTopicsResponse: KafkaResponseBody {
    struct Config { var name: String; var value: String?; var readOnly = false; var source: Int8; var sensitive = false }
    struct Topic { var name: String; var errorCode: ErrorCode; var errorMessage: String?; var numPartitions: Int32 = -1; var replicationFactor: Int16 = -1; var configs: [Config]? }
    var topics: [Topic]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 2 { w.int32(0) }
        w.array(topics) { w, t in
            w.string(t.name)
            w.int16(t.errorCode.rawValue)
            if v >= 1 { w.nullableString(t.errorMessage) }
            if v >= 5 {
                w.int32(t.numPartitions)
                w.int16(t.replicationFactor)
                w.nullableArray(t.configs) { w, c in
                    w.string(c.name)
                    w.nullableString(c.value)
                    w.bool(c.readOnly)
                    w.int8(c.source)
                    w.bool(c.sensitive)
                    w.taggedFields()
                }
            }
            w.taggedFields()
        }
        w.taggedFields()
    }
}

struct DeleteTopicsRequest: KafkaRequestBody {
    var names: [String]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> DeleteTopicsRequest {
        let names = try r.array(minElementBytes: 1) { try $0.string() }
        _ = try r.int32()
        try r.taggedFields()
        return DeleteTopicsRequest(names: names)
    }
}

struct DeleteTopicsResponse: KafkaResponseBody {
    var results: [(name: String, errorCode: ErrorCode, message: String?)]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 1 { w.int32(0) }
        w.array(results) { w, r in
            w.string(r.name)
            w.int16(r.errorCode.rawValue)
            if v >= 5 { w.nullableString(r.message) }
            w.taggedFields()
        }
        w.taggedFields()
    }
}

struct DeleteRecordsRequest: KafkaRequestBody {
    var topics: [(name: String, partitions: [(index: Int32, offset: Int64)])]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> DeleteRecordsRequest {
        let topics: [(name: String, partitions: [(index: Int32, offset: Int64)])] = try r.array(minElementBytes: 2) { r in
            let name = try r.string()
            let partitions: [(index: Int32, offset: Int64)] = try r.array(minElementBytes: 12) { r in
                let p = (try r.int32(), try r.int64())
                try r.taggedFields()
                return p
            }
            try r.taggedFields()
            return (name, partitions)
        }
        _ = try r.int32()
        try r.taggedFields()
        return DeleteRecordsRequest(topics: topics)
    }
}

struct DeleteRecordsResponse: KafkaResponseBody {
    var topics: [(name: String, partitions: [(index: Int32, lowWatermark: Int64, errorCode: ErrorCode)])]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.array(topics) { w, t in
            w.string(t.name)
            w.array(t.partitions) { w, p in
                w.int32(p.index)
                w.int64(p.lowWatermark)
                w.int16(p.errorCode.rawValue)
                w.taggedFields()
            }
            w.taggedFields()
        }
        w.taggedFields()
    }
}

struct InitProducerIdRequest: KafkaRequestBody {
    var transactionalId: String?
    var transactionTimeoutMs: Int32 = 60_000
    var producerId: Int64 = -1
    var producerEpoch: Int16 = -1

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> InitProducerIdRequest {
        var m = InitProducerIdRequest(transactionalId: try r.nullableString())
        m.transactionTimeoutMs = try r.int32()
        if v >= 3 {
            m.producerId = try r.int64()
            m.producerEpoch = try r.int16()
        }
        try r.taggedFields()
        return m
    }
}

struct InitProducerIdResponse: KafkaResponseBody {
    var errorCode: ErrorCode
    var producerId: Int64
    var producerEpoch: Int16

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.int16(errorCode.rawValue)
        w.int64(producerId)
        w.int16(producerEpoch)
        w.taggedFields()
    }
}

/// Kafka's ConfigResource.Type.
enum ConfigResourceType: Int8 { case topic = 2, broker = 4, brokerLogger = 8 }

/// DescribeConfigs ConfigSource (v1+).
enum ConfigSource: Int8 {
    case unknown = 0, topicConfig = 1, dynamicBrokerConfig = 2, dynamicDefaultBrokerConfig = 3, staticBrokerConfig = 4, defaultConfig = 5
}

struct DescribeConfigsRequest: KafkaRequestBody {
    struct Resource { var type: Int8; var name: String; var keys: [String]? }
    var resources: [Resource]
    var includeSynonyms = false
    var includeDocumentation = false

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> DescribeConfigsRequest {
        let resources: [Resource] = try r.array(minElementBytes: 3) { r in
            let type = try r.int8()
            let name = try r.string()
            let keys = try r.nullableArray(minElementBytes: 1) { try $0.string() }
            try r.taggedFields()
            return Resource(type: type, name: name, keys: keys)
        }
        let synonyms = v >= 1 ? try r.bool() : false
        let documentation = v >= 3 ? try r.bool() : false
        try r.taggedFields()
        return DescribeConfigsRequest(resources: resources, includeSynonyms: synonyms, includeDocumentation: documentation)
    }
}

struct DescribeConfigsResponse: KafkaResponseBody {
    struct Entry {
        var name: String
        var value: String?
        var readOnly: Bool
        var source: ConfigSource
        var sensitive = false
        /// Kafka's ConfigType (v3+): 1 boolean, 2 string, 3 int, 5 long, 6 double, 7 list.
        var type: Int8 = 2
        var documentation: String?
    }
    struct Result { var errorCode: ErrorCode = .none; var errorMessage: String?; var type: Int8; var name: String; var entries: [Entry] }
    var results: [Result]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.array(results) { w, res in
            w.int16(res.errorCode.rawValue)
            w.nullableString(res.errorMessage)
            w.int8(res.type)
            w.string(res.name)
            w.array(res.entries) { w, e in
                w.string(e.name)
                w.nullableString(e.value)
                w.bool(e.readOnly)
                if v == 0 { w.bool(e.source == .defaultConfig) } else { w.int8(e.source.rawValue) }
                w.bool(e.sensitive)
                if v >= 1 { w.array([Int]()) { _, _ in } }  // synonyms
                if v >= 3 {
                    w.int8(e.type)
                    w.nullableString(e.documentation)
                }
                w.taggedFields()
            }
            w.taggedFields()
        }
        w.taggedFields()
    }
}

/// AlterConfigs and IncrementalAlterConfigs (whose entries carry an operation).
struct AlterConfigsRequest: KafkaRequestBody {
    enum Operation: Int8 { case set = 0, delete = 1, append = 2, subtract = 3 }
    struct Resource { var type: Int8; var name: String; var configs: [(name: String, operation: Operation?, value: String?)] }
    var resources: [Resource]
    var validateOnly: Bool
    /// IncrementalAlterConfigs: entries carry an operation; AlterConfigs replaces the whole set.
    var incremental = false

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> AlterConfigsRequest { try read(&r, version: v, incremental: false) }

    static func read(_ r: inout KafkaReader, version v: Int16, incremental: Bool) throws -> AlterConfigsRequest {
        let resources: [Resource] = try r.array(minElementBytes: 3) { r in
            let type = try r.int8()
            let name = try r.string()
            let configs: [(name: String, operation: Operation?, value: String?)] = try r.array(minElementBytes: 2) { r in
                let key = try r.string()
                var operation: Operation?
                if incremental {
                    let raw = try r.int8()
                    guard let op = Operation(rawValue: raw) else { throw ProtocolError("unknown config operation \(raw)") }
                    operation = op
                }
                let value = try r.nullableString()
                try r.taggedFields()
                return (key, operation, value)
            }
            try r.taggedFields()
            return Resource(type: type, name: name, configs: configs)
        }
        let validateOnly = try r.bool()
        try r.taggedFields()
        return AlterConfigsRequest(resources: resources, validateOnly: validateOnly, incremental: incremental)
    }
}

struct AlterConfigsResponse: KafkaResponseBody {
    var results: [(errorCode: ErrorCode, message: String?, type: Int8, name: String)]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.array(results) { w, r in
            w.int16(r.errorCode.rawValue)
            w.nullableString(r.message)
            w.int8(r.type)
            w.string(r.name)
            w.taggedFields()
        }
        w.taggedFields()
    }
}

struct DescribeLogDirsRequest: KafkaRequestBody {
    /// nil: every partition.
    var topics: [(name: String, partitions: [Int32])]?

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> DescribeLogDirsRequest {
        let topics: [(name: String, partitions: [Int32])]? = try r.nullableArray(minElementBytes: 2) { r in
            let name = try r.string()
            let partitions = try r.array(minElementBytes: 4) { try $0.int32() }
            try r.taggedFields()
            return (name, partitions)
        }
        try r.taggedFields()
        return DescribeLogDirsRequest(topics: topics)
    }
}

struct DescribeLogDirsResponse: KafkaResponseBody {
    struct Partition { var index: Int32; var size: Int64; var offsetLag: Int64 = 0 }
    var logDir: String
    var errorCode: ErrorCode = .none
    var topics: [(name: String, partitions: [Partition])]
    var totalBytes: Int64 = -1
    var usableBytes: Int64 = -1

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        if v >= 3 { w.int16(0) }
        w.array([0]) { w, _ in
            w.int16(errorCode.rawValue)
            w.string(logDir)
            w.array(topics) { w, t in
                w.string(t.name)
                w.array(t.partitions) { w, p in
                    w.int32(p.index)
                    w.int64(p.size)
                    w.int64(p.offsetLag)
                    w.bool(false)  // is_future_key
                    w.taggedFields()
                }
                w.taggedFields()
            }
            if v >= 4 {
                w.int64(totalBytes)
                w.int64(usableBytes)
            }
            w.taggedFields()
        }
        w.taggedFields()
    }
}

struct CreatePartitionsRequest: KafkaRequestBody {
    /// Per topic: the new total and, optionally, the replicas of each new partition.
    var topics: [(name: String, count: Int32, assignments: [[Int32]]?)]
    var validateOnly: Bool

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> CreatePartitionsRequest {
        let topics: [(name: String, count: Int32, assignments: [[Int32]]?)] = try r.array(minElementBytes: 7) { r in
            let name = try r.string()
            let count = try r.int32()
            let assignments: [[Int32]]? = try r.nullableArray(minElementBytes: 1) { r in
                let brokers = try r.array(minElementBytes: 4) { try $0.int32() }
                try r.taggedFields()
                return brokers
            }
            try r.taggedFields()
            return (name, count, assignments)
        }
        _ = try r.int32()  // timeout_ms
        let validateOnly = try r.bool()
        try r.taggedFields()
        return CreatePartitionsRequest(topics: topics, validateOnly: validateOnly)
    }
}

/// CreatePartitions' results: per topic an error code and message.
struct TopicErrorsResponse: KafkaResponseBody {
    var results: [(name: String, errorCode: ErrorCode, message: String?)]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.array(results) { w, r in
            w.string(r.name)
            w.int16(r.errorCode.rawValue)
            w.nullableString(r.message)
            w.taggedFields()
        }
        w.taggedFields()
    }
}

struct ElectLeadersRequest: KafkaRequestBody {
    /// nil: every partition.
    var topics: [(name: String, partitions: [Int32])]?

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> ElectLeadersRequest {
        if v >= 1 { _ = try r.int8() }  // election_type: preferred or unclean, alike on one node
        let topics: [(name: String, partitions: [Int32])]? = try r.nullableArray(minElementBytes: 2) { r in
            let name = try r.string()
            let partitions = try r.array(minElementBytes: 4) { try $0.int32() }
            try r.taggedFields()
            return (name, partitions)
        }
        _ = try r.int32()
        try r.taggedFields()
        return ElectLeadersRequest(topics: topics)
    }
}

/// ElectLeaders' and AlterPartitionReassignments' tail: per topic, per partition an error code
/// and message; then the response's tagged fields.
func writePartitionResults(_ w: inout KafkaWriter, _ results: [(name: String, partitions: [(index: Int32, errorCode: ErrorCode, message: String?)])]) {
    w.array(results) { w, t in
        w.string(t.name)
        w.array(t.partitions) { w, p in
            w.int32(p.index)
            w.int16(p.errorCode.rawValue)
            w.nullableString(p.message)
            w.taggedFields()
        }
        w.taggedFields()
    }
    w.taggedFields()
}

struct ElectLeadersResponse: KafkaResponseBody {
    var results: [(name: String, partitions: [(index: Int32, errorCode: ErrorCode, message: String?)])]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        if v >= 1 { w.int16(0) }
        writePartitionResults(&w, results)
    }
}

struct AlterPartitionReassignmentsRequest: KafkaRequestBody {
    var topics: [(name: String, partitions: [(index: Int32, replicas: [Int32]?)])]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> AlterPartitionReassignmentsRequest {
        _ = try r.int32()  // timeout_ms
        let topics: [(name: String, partitions: [(index: Int32, replicas: [Int32]?)])] = try r.array(minElementBytes: 2) { r in
            let name = try r.string()
            let partitions: [(index: Int32, replicas: [Int32]?)] = try r.array(minElementBytes: 5) { r in
                let index = try r.int32()
                let replicas = try r.nullableArray(minElementBytes: 4) { try $0.int32() }
                try r.taggedFields()
                return (index, replicas)
            }
            try r.taggedFields()
            return (name, partitions)
        }
        try r.taggedFields()
        return AlterPartitionReassignmentsRequest(topics: topics)
    }
}

struct AlterPartitionReassignmentsResponse: KafkaResponseBody {
    var results: [(name: String, partitions: [(index: Int32, errorCode: ErrorCode, message: String?)])]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.int16(0)
        w.nullableString(nil)
        writePartitionResults(&w, results)
    }
}

struct ListPartitionReassignmentsRequest: KafkaRequestBody {
    static func read(_ r: inout KafkaReader, version v: Int16) throws -> ListPartitionReassignmentsRequest {
        _ = try r.int32()  // timeout_ms
        _ = try r.nullableArray(minElementBytes: 2) { r in
            _ = try r.string()
            _ = try r.array(minElementBytes: 4) { try $0.int32() }
            try r.taggedFields()
        }
        try r.taggedFields()
        return ListPartitionReassignmentsRequest()
    }
}

/// One node never reassigns: the list is always empty.
struct ListPartitionReassignmentsResponse: KafkaResponseBody {
    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.int16(0)
        w.nullableString(nil)
        w.array([Int]()) { _, _ in }
        w.taggedFields()
    }
}

struct DescribeClusterRequest: KafkaRequestBody {
    var endpointType: Int8 = 1

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> DescribeClusterRequest {
        _ = try r.bool()  // include_cluster_authorized_operations
        var m = DescribeClusterRequest()
        if v >= 1 { m.endpointType = try r.int8() }
        try r.taggedFields()
        return m
    }
}

struct DescribeClusterResponse: KafkaResponseBody {
    var errorCode: ErrorCode = .none
    var errorMessage: String?
    var endpointType: Int8 = 1
    var clusterId: String
    var controllerId: Int32
    var brokers: [(id: Int32, host: String, port: Int32)]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.int16(errorCode.rawValue)
        w.nullableString(errorMessage)
        if v >= 1 { w.int8(endpointType) }
        w.string(clusterId)
        w.int32(controllerId)
        w.array(brokers) { w, b in
            w.int32(b.id)
            w.string(b.host)
            w.int32(b.port)
            w.nullableString(nil)
            w.taggedFields()
        }
        w.int32(Int32.min)
        w.taggedFields()
    }
}
