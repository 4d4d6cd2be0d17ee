/// KIP-848's consumer group APIs: ConsumerGroupHeartbeat (68, v0-1) and ConsumerGroupDescribe
/// (69, v0), flexible from v0. Topics are named by id (16-byte uuid) in assignments.

struct ConsumerGroupHeartbeatRequest: KafkaRequestBody {
    var groupId: String
    var memberId: String
    var memberEpoch: Int32
    var instanceId: String?
    var rackId: String?
    var rebalanceTimeoutMs: Int32
    var subscribedTopicNames: [String]?
    var subscribedTopicRegex: String?
    var serverAssignor: String?
    var topicPartitions: [(topicId: [UInt8], partitions: [Int32])]?

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> ConsumerGroupHeartbeatRequest {
        let group = try r.string()
        let member = try r.string()
        let epoch = try r.int32()
        let instance = try r.nullableString()
        let rack = try r.nullableString()
        let timeout = try r.int32()
        let topics = try r.nullableArray(minElementBytes: 1) { try $0.string() }
        let regex = v >= 1 ? try r.nullableString() : nil
        let assignor = try r.nullableString()
        let owned: [(topicId: [UInt8], partitions: [Int32])]? = try r.nullableArray(minElementBytes: 18) { r in
            let id = try r.uuid()
            let partitions = try r.array(minElementBytes: 4) { try $0.int32() }
            try r.taggedFields()
            return (id, partitions)
        }
        try r.taggedFields()
        return ConsumerGroupHeartbeatRequest(groupId: group, memberId: member, memberEpoch: epoch, instanceId: instance, rackId: rack,
                                             rebalanceTimeoutMs: timeout, subscribedTopicNames: topics, subscribedTopicRegex: regex,
                                             serverAssignor: assignor, topicPartitions: owned)
    }
}

struct ConsumerGroupHeartbeatResponse: KafkaResponseBody {
    var errorCode: ErrorCode
    var errorMessage: String?
    var memberId: String?
    var memberEpoch: Int32
    var heartbeatIntervalMs: Int32
    /// nil: no assignment in this response (the member already has it).
    var assignment: [(topicId: [UInt8], partitions: [Int32])]?

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.int16(errorCode.rawValue)
        w.nullableString(errorMessage)
        w.nullableString(memberId)
        w.int32(memberEpoch)
        w.int32(heartbeatIntervalMs)
        if let assignment {
            w.int8(1)  // a nullable struct: present
            w.array(assignment) { w, t in
                w.uuid(t.topicId)
                w.array(t.partitions) { w, p in w.int32(p) }
                w.taggedFields()
            }
            w.taggedFields()
        } else {
            w.int8(-1)
        }
        w.taggedFields()
    }

    func forEachErrorCode(_ body: (ErrorCode) -> Void) { body(errorCode) }
}

struct ConsumerGroupDescribeRequest: KafkaRequestBody {
    var groupIds: [String]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> ConsumerGroupDescribeRequest {
        let ids = try r.array(minElementBytes: 1) { try $0.string() }
        _ = try r.bool()  // include_authorized_operations
        try r.taggedFields()
        return ConsumerGroupDescribeRequest(groupIds: ids)
    }
}

struct ConsumerGroupDescribeResponse: KafkaResponseBody {
    struct TopicPartitions { var topicId: [UInt8]; var name: String; var partitions: [Int32] }
    struct Member {
        var memberId: String
        var instanceId: String?
        var rackId: String?
        var memberEpoch: Int32
        var clientId: String
        var clientHost: String
        var subscribedTopicNames: [String]
        var assignment: [TopicPartitions]
        var targetAssignment: [TopicPartitions]
    }
    struct Group {
        var errorCode: ErrorCode
        var errorMessage: String?
        var groupId: String
        var state: String = ""
        var epoch: Int32 = 0
        var assignmentEpoch: Int32 = 0
        var assignor: String = ""
        var members: [Member] = []
    }
    var groups: [Group]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        func partitions(_ w: inout KafkaWriter, _ list: [TopicPartitions]) {
            w.array(list) { w, t in
                w.uuid(t.topicId)
                w.string(t.name)
                w.array(t.partitions) { w, p in w.int32(p) }
                w.taggedFields()
            }
            w.taggedFields()
        }
        w.int32(0)
        w.array(groups) { w, g in
            w.int16(g.errorCode.rawValue)
            w.nullableString(g.errorMessage)
            w.string(g.groupId)
            w.string(g.state)
            w.int32(g.epoch)
            w.int32(g.assignmentEpoch)
            w.string(g.assignor)
            w.array(g.members) { w, m in
                w.string(m.memberId)
                w.nullableString(m.instanceId)
                w.nullableString(m.rackId)
                w.int32(m.memberEpoch)
                w.string(m.clientId)
                w.string(m.clientHost)
                w.array(m.subscribedTopicNames) { w, t in w.string(t) }
                w.nullableString(nil)  // subscribed_topic_regex: not served
                partitions(&w, m.assignment)
                partitions(&w, m.targetAssignment)
                w.taggedFields()
            }
            w.int32(Int32.min)  // authorized_operations: not computed
            w.taggedFields()
        }
        w.taggedFields()
    }

    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for g in groups { body(g.errorCode) } }
}
