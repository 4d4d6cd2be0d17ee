struct MetadataRequest: KafkaRequestBody {
    /// nil: every topic.
    var topics: [String]?
    /// v10+: topics asked for by id (name null), as KIP-848 consumers do for their assignment.
    var topicIds: [[UInt8]] = []
    var allowAutoTopicCreation = true

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> MetadataRequest {
        var m = MetadataRequest()
        let topics: [(id: [UInt8]?, name: String?)]? = try r.nullableArray(minElementBytes: 1) { r in
            let id = v >= 10 ? try r.uuid() : nil
            let name = try r.nullableString()
            try r.taggedFields()
            return (id, name)
        }
        // v0: an empty list means every topic; v1+: null does.
        if let topics, !(v == 0 && topics.isEmpty) {
            m.topics = topics.compactMap(\.name)
            m.topicIds = topics.compactMap { t in t.name == nil ? t.id.flatMap { $0.contains { $0 != 0 } ? $0 : nil } : nil }
        } else {
            m.topics = nil
        }
        if v >= 4 { m.allowAutoTopicCreation = try r.bool() }
        if (8...10).contains(v) { _ = try r.bool() }  // include_cluster_authorized_operations
        if v >= 8 { _ = try r.bool() }  // include_topic_authorized_operations
        try r.taggedFields()
        return m
    }
}

struct MetadataResponse: KafkaResponseBody {
    struct Broker { var nodeId: Int32; var host: String; var port: Int32; var rack: String? }
    struct Partition {
        var errorCode: ErrorCode = .none
        var index: Int32
        var leader: Int32
        var leaderEpoch: Int32 = 0
        var replicas: [Int32]
        var isr: [Int32]
    }
    struct Topic {
        var errorCode: ErrorCode
        var name: String
        var topicId: [UInt8]
        var isInternal = false
        var partitions: [Partition]
    }
    var brokers: [Broker]
    var clusterId: String?
    var controllerId: Int32
    var topics: [Topic]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 3 { w.int32(0) }
        w.array(brokers) { w, b in
            w.int32(b.nodeId)
            w.string(b.host)
            w.int32(b.port)
            if v >= 1 { w.nullableString(b.rack) }
            w.taggedFields()
        }
        if v >= 2 { w.nullableString(clusterId) }
        if v >= 1 { w.int32(controllerId) }
        w.array(topics) { w, t in
            w.int16(t.errorCode.rawValue)
            if v >= 12 && t.name.isEmpty { w.nullableString(nil) } else { w.string(t.name) }  // an unknown topic id
            if v >= 10 { w.uuid(t.topicId) }
            if v >= 1 { w.bool(t.isInternal) }
            w.array(t.partitions) { w, p in
                w.int16(p.errorCode.rawValue)
                w.int32(p.index)
                w.int32(p.leader)
                if v >= 7 { w.int32(p.leaderEpoch) }
                w.array(p.replicas) { $0.int32($1) }
                w.array(p.isr) { $0.int32($1) }
                if v >= 5 { w.array([Int32]()) { $0.int32($1) } }
                w.taggedFields()
            }
            if v >= 8 { w.int32(Int32.min) }  // topic_authorized_operations: not computed
            w.taggedFields()
        }
        if (8...10).contains(v) { w.int32(Int32.min) }
        w.taggedFields()
    }
}
