// The classic consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
// OffsetCommit, OffsetFetch, DescribeGroups, ListGroups, DeleteGroups, OffsetDelete.

struct FindCoordinatorRequest: KafkaRequestBody {
    var keyType: Int8 = 0
    /// One key before v4, a batch from v4.
    var keys: [String]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> FindCoordinatorRequest {
        var keys: [String] = []
        if v <= 3 { keys = [try r.string()] }
        let keyType = v >= 1 ? try r.int8() : 0
        if v >= 4 { keys = try r.array(minElementBytes: 1) { try $0.string() } }
        try r.taggedFields()
        return FindCoordinatorRequest(keyType: keyType, keys: keys)
    }
}

struct FindCoordinatorResponse: KafkaResponseBody {
    struct Coordinator { var key: String; var nodeId: Int32; var host: String; var port: Int32; var errorCode: ErrorCode = .none; var errorMessage: String? }
    var coordinators: [Coordinator]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 1 { w.int32(0) }
        if v <= 3 {
            let c = coordinators.first ?? Coordinator(key: "", nodeId: -1, host: "", port: -1, errorCode: .coordinatorNotAvailable)
            w.int16(c.errorCode.rawValue)
            if v >= 1 { w.nullableString(c.errorMessage) }
            w.int32(c.nodeId)
            w.string(c.host)
            w.int32(c.port)
        } else {
            w.array(coordinators) { w, c in
                w.string(c.key)
                w.int32(c.nodeId)
                w.string(c.host)
                w.int32(c.port)
                w.int16(c.errorCode.rawValue)
                w.nullableString(c.errorMessage)
                w.taggedFields()
            }
        }
        w.taggedFields()
    }
}

struct JoinGroupRequest: KafkaRequestBody {
    var groupId: String
    var sessionTimeoutMs: Int32
    var rebalanceTimeoutMs: Int32
    var memberId: String
    var groupInstanceId: String?
    var protocolType: String
    var protocols: [(name: String, metadata: [UInt8])]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> JoinGroupRequest {
        let group = try r.string()
        let session = try r.int32()
        let rebalance = v >= 1 ? try r.int32() : session
        let member = try r.string()
        let instance = v >= 5 ? try r.nullableString() : nil
        let protocolType = try r.string()
        let protocols: [(name: String, metadata: [UInt8])] = try r.array(minElementBytes: 2) { r in
            let name = try r.string()
            let metadata = try r.byteArray()
            try r.taggedFields()
            return (name, metadata)
        }
        if v >= 8 { _ = try r.nullableString() }  // reason
        try r.taggedFields()
        return JoinGroupRequest(groupId: group, sessionTimeoutMs: session, rebalanceTimeoutMs: rebalance, memberId: member,
                                groupInstanceId: instance, protocolType: protocolType, protocols: protocols)
    }
}

struct JoinGroupResponse: KafkaResponseBody {
    var errorCode: ErrorCode
    var generationId: Int32 = -1
    var protocolType: String?
    var protocolName: String?
    var leader: String = ""
    var memberId: String
    var members: [(id: String, instanceId: String?, metadata: [UInt8])] = []

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 2 { w.int32(0) }
        w.int16(errorCode.rawValue)
        w.int32(generationId)
        if v >= 7 {
            w.nullableString(protocolType)
            w.nullableString(protocolName)
        } else {
            w.string(protocolName ?? "")
        }
        w.string(leader)
        if v >= 9 { w.bool(false) }  // skip_assignment
        w.string(memberId)
        w.array(members) { w, m in
            w.string(m.id)
            if v >= 5 { w.nullableString(m.instanceId) }
            w.bytes(m.metadata)
            w.taggedFields()
        }
        w.taggedFields()
    }
}

struct SyncGroupRequest: KafkaRequestBody {
    var groupId: String
    var generationId: Int32
    var memberId: String
    var assignments: [(memberId: String, assignment: [UInt8])]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> SyncGroupRequest {
        let group = try r.string()
        let generation = try r.int32()
        let member = try r.string()
        if v >= 3 { _ = try r.nullableString() }  // group_instance_id
        if v >= 5 {
            _ = try r.nullableString()  // protocol_type
            _ = try r.nullableString()  // protocol_name
        }
        let assignments: [(memberId: String, assignment: [UInt8])] = try r.array(minElementBytes: 2) { r in
            let id = try r.string()
            let bytes = try r.byteArray()
            try r.taggedFields()
            return (id, bytes)
        }
        try r.taggedFields()
        return SyncGroupRequest(groupId: group, generationId: generation, memberId: member, assignments: assignments)
    }
}

struct SyncGroupResponse: KafkaResponseBody {
    var errorCode: ErrorCode
    var protocolType: String?
    var protocolName: String?
    var assignment: [UInt8]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 1 { w.int32(0) }
        w.int16(errorCode.rawValue)
        if v >= 5 {
            w.nullableString(protocolType)
            w.nullableString(protocolName)
        }
        w.bytes(assignment)
        w.taggedFields()
    }
}

struct HeartbeatRequest: KafkaRequestBody {
    var groupId: String
    var generationId: Int32
    var memberId: String

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> HeartbeatRequest {
        let group = try r.string()
        let generation = try r.int32()
        let member = try r.string()
        if v >= 3 { _ = try r.nullableString() }
        try r.taggedFields()
        return HeartbeatRequest(groupId: group, generationId: generation, memberId: member)
    }
}

/// Heartbeat's response, and every other response that is a throttle time and an error code.
struct ErrorOnlyResponse: KafkaResponseBody {
    var errorCode: ErrorCode
    /// From which version the throttle time precedes the error code.
    var throttleFromVersion: Int16 = 1

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= throttleFromVersion { w.int32(0) }
        w.int16(errorCode.rawValue)
        w.taggedFields()
    }
}

struct LeaveGroupRequest: KafkaRequestBody {
    var groupId: String
    var memberIds: [String]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> LeaveGroupRequest {
        let group = try r.string()
        var ids: [String] = []
        if v >= 3 {
            ids = try r.array(minElementBytes: 2) { r in
                let id = try r.string()
                _ = try r.nullableString()  // group_instance_id
                if v >= 5 { _ = try r.nullableString() }  // reason
                try r.taggedFields()
                return id
            }
        } else {
            ids = [try r.string()]
        }
        try r.taggedFields()
        return LeaveGroupRequest(groupId: group, memberIds: ids)
    }
}

struct LeaveGroupResponse: KafkaResponseBody {
    var errorCode: ErrorCode
    var members: [(id: String, errorCode: ErrorCode)]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 1 { w.int32(0) }
        w.int16(errorCode.rawValue)
        if v >= 3 {
            w.array(members) { w, m in
                w.string(m.id)
                w.nullableString(nil)
                w.int16(m.errorCode.rawValue)
                w.taggedFields()
            }
        }
        w.taggedFields()
    }
}

struct OffsetCommitRequest: KafkaRequestBody {
    struct Partition { var index: Int32; var offset: Int64; var metadata: String? }
    struct Topic { var name: String; var partitions: [Partition] }
    var groupId: String
    var generationId: Int32 = -1
    var memberId: String = ""
    var topics: [Topic]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> OffsetCommitRequest {
        let group = try r.string()
        let generation = v >= 1 ? try r.int32() : -1
        let member = v >= 1 ? try r.string() : ""
        if v >= 7 { _ = try r.nullableString() }  // group_instance_id
        if (2...4).contains(v) { _ = try r.int64() }  // retention_time_ms
        let topics: [Topic] = try r.array(minElementBytes: 2) { r in
            let name = try r.string()
            let partitions: [Partition] = try r.array(minElementBytes: 13) { r in
                let p = try r.int32()
                let offset = try r.int64()
                if v >= 6 { _ = try r.int32() }  // committed_leader_epoch
                if v == 1 { _ = try r.int64() }  // commit_timestamp
                let metadata = try r.nullableString()
                try r.taggedFields()
                return Partition(index: p, offset: offset, metadata: metadata)
            }
            try r.taggedFields()
            return Topic(name: name, partitions: partitions)
        }
        try r.taggedFields()
        return OffsetCommitRequest(groupId: group, generationId: generation, memberId: member, topics: topics)
    }
}

/// OffsetCommit's and OffsetDelete's shape: per topic, per partition, an error code.
struct PartitionErrorsResponse: KafkaResponseBody {
    struct Topic { var name: String; var partitions: [(index: Int32, errorCode: ErrorCode)] }
    var topics: [Topic]
    /// OffsetCommit: throttle time first, from v3. OffsetDelete: error code then throttle time.
    var topLevelError: ErrorCode?
    var throttleFromVersion: Int16 = 3

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if let topLevelError {
            w.int16(topLevelError.rawValue)
            w.int32(0)
        } else if v >= throttleFromVersion {
            w.int32(0)
        }
        w.array(topics) { w, t in
            w.string(t.name)
            w.array(t.partitions) { w, p in
                w.int32(p.index)
                w.int16(p.errorCode.rawValue)
                w.taggedFields()
            }
            w.taggedFields()
        }
        w.taggedFields()
    }
}

struct OffsetFetchRequest: KafkaRequestBody {
    var groupId: String
    /// nil: every partition the group committed.
    var topics: [(name: String, partitions: [Int32])]?
    /// v7+: a read_committed consumer asks not to be given offsets a transaction may still change.
    var requireStable = false

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> OffsetFetchRequest {
        let group = try r.string()
        let topics: [(name: String, partitions: [Int32])]? = try r.nullableArray(minElementBytes: 2) { r in
            let name = try r.string()
            let partitions = try r.array(minElementBytes: 4) { try $0.int32() }
            try r.taggedFields()
            return (name, partitions)
        }
        let requireStable = v >= 7 ? try r.bool() : false
        try r.taggedFields()
        return OffsetFetchRequest(groupId: group, topics: topics, requireStable: requireStable)
    }
}

struct OffsetFetchResponse: KafkaResponseBody {
    struct Partition { var index: Int32; var offset: Int64; var metadata: String?; var errorCode: ErrorCode = .none }
    struct Topic { var name: String; var partitions: [Partition] }
    var topics: [Topic]
    var errorCode: ErrorCode = .none

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 3 { w.int32(0) }
        w.array(topics) { w, t in
            w.string(t.name)
            w.array(t.partitions) { w, p in
                w.int32(p.index)
                w.int64(p.offset)
                if v >= 5 { w.int32(-1) }
                w.nullableString(p.metadata)
                w.int16(p.errorCode.rawValue)
                w.taggedFields()
            }
            w.taggedFields()
        }
        if v >= 2 { w.int16(errorCode.rawValue) }
        w.taggedFields()
    }
}

struct DescribeGroupsRequest: KafkaRequestBody {
    var groups: [String]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> DescribeGroupsRequest {
        let groups = try r.array(minElementBytes: 1) { try $0.string() }
        if v >= 3 { _ = try r.bool() }
        try r.taggedFields()
        return DescribeGroupsRequest(groups: groups)
    }
}

struct DescribeGroupsResponse: KafkaResponseBody {
    struct Member { var id: String; var instanceId: String?; var clientId: String; var host: String; var metadata: [UInt8]; var assignment: [UInt8] }
    struct Group { var errorCode: ErrorCode = .none; var id: String; var state: String; var protocolType: String; var protocolName: String; var members: [Member] }
    var groups: [Group]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 1 { w.int32(0) }
        w.array(groups) { w, g in
            w.int16(g.errorCode.rawValue)
            w.string(g.id)
            w.string(g.state)
            w.string(g.protocolType)
            w.string(g.protocolName)
            w.array(g.members) { w, m in
                w.string(m.id)
                if v >= 4 { w.nullableString(m.instanceId) }
                w.string(m.clientId)
                w.string(m.host)
                w.bytes(m.metadata)
                w.bytes(m.assignment)
                w.taggedFields()
            }
            if v >= 3 { w.int32(Int32.min) }
            w.taggedFields()
        }
        w.taggedFields()
    }
}

struct ListGroupsRequest: KafkaRequestBody {
    var statesFilter: [String] = []
    /// v5+: "classic" and/or "consumer" (KIP-848); empty: every type.
    var typesFilter: [String] = []

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> ListGroupsRequest {
        var m = ListGroupsRequest()
        if v >= 4 { m.statesFilter = try r.array(minElementBytes: 1) { try $0.string() } }
        if v >= 5 { m.typesFilter = try r.array(minElementBytes: 1) { try $0.string() } }
        try r.taggedFields()
        return m
    }
}

struct ListGroupsResponse: KafkaResponseBody {
    /// `type`: "classic" or "consumer" (the group protocol, v5+).
    var groups: [(id: String, protocolType: String, state: String, type: String)]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 1 { w.int32(0) }
        w.int16(0)
        w.array(groups) { w, g in
            w.string(g.id)
            w.string(g.protocolType)
            if v >= 4 { w.string(g.state) }
            if v >= 5 { w.string(g.type) }
            w.taggedFields()
        }
        w.taggedFields()
    }
}

struct DeleteGroupsRequest: KafkaRequestBody {
    var groups: [String]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> DeleteGroupsRequest {
        let groups = try r.array(minElementBytes: 1) { try $0.string() }
        try r.taggedFields()
        return DeleteGroupsRequest(groups: groups)
    }
}

struct DeleteGroupsResponse: KafkaResponseBody {
    var results: [(groupId: String, errorCode: ErrorCode)]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.array(results) { w, r in
            w.string(r.groupId)
            w.int16(r.errorCode.rawValue)
            w.taggedFields()
        }
        w.taggedFields()
    }
}

struct OffsetDeleteRequest: KafkaRequestBody {
    var groupId: String
    var topics: [(name: String, partitions: [Int32])]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> OffsetDeleteRequest {
        let group = try r.string()
        let topics: [(name: String, partitions: [Int32])] = try r.array(minElementBytes: 2) { r in
            (try r.string(), try r.array(minElementBytes: 4) { try $0.int32() })
        }
        return OffsetDeleteRequest(groupId: group, topics: topics)
    }
}
