/// The transactional APIs a producer sends its coordinator (KIP-98): AddPartitionsToTxn (24),
/// AddOffsetsToTxn (25), EndTxn (26) and TxnOffsetCommit (28), v0-3 (v3 flexible). Their
/// responses reuse `PartitionErrorsResponse` and `ErrorOnlyResponse`, whose layouts these match.

struct AddPartitionsToTxnRequest: KafkaRequestBody {
    var transactionalId: String
    var producerId: Int64
    var producerEpoch: Int16
    var topics: [(name: String, partitions: [Int32])]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> AddPartitionsToTxnRequest {
        let id = try r.string()
        let pid = try r.int64()
        let epoch = try r.int16()
        let topics: [(name: String, partitions: [Int32])] = try r.array(minElementBytes: 2) { r in
            let name = try r.string()
            let partitions = try r.array(minElementBytes: 4) { try $0.int32() }
            try r.taggedFields()
            return (name, partitions)
        }
        try r.taggedFields()
        return AddPartitionsToTxnRequest(transactionalId: id, producerId: pid, producerEpoch: epoch, topics: topics)
    }
}

struct AddOffsetsToTxnRequest: KafkaRequestBody {
    var transactionalId: String
    var producerId: Int64
    var producerEpoch: Int16
    var groupId: String

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> AddOffsetsToTxnRequest {
        let m = AddOffsetsToTxnRequest(transactionalId: try r.string(), producerId: try r.int64(), producerEpoch: try r.int16(), groupId: try r.string())
        try r.taggedFields()
        return m
    }
}

struct EndTxnRequest: KafkaRequestBody {
    var transactionalId: String
    var producerId: Int64
    var producerEpoch: Int16
    var committed: Bool

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> EndTxnRequest {
        let m = EndTxnRequest(transactionalId: try r.string(), producerId: try r.int64(), producerEpoch: try r.int16(), committed: try r.bool())
        try r.taggedFields()
        return m
    }
}

struct TxnOffsetCommitRequest: KafkaRequestBody {
    struct Partition { var index: Int32; var offset: Int64; var metadata: String? }
    var transactionalId: String
    var groupId: String
    var producerId: Int64
    var producerEpoch: Int16
    var generationId: Int32 = -1
    var memberId: String = ""
    var topics: [(name: String, partitions: [Partition])]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> TxnOffsetCommitRequest {
        let id = try r.string()
        let group = try r.string()
        let pid = try r.int64()
        let epoch = try r.int16()
        var generation: Int32 = -1
        var member = ""
        if v >= 3 {
            generation = try r.int32()
            member = try r.string()
            _ = try r.nullableString()  // group_instance_id
        }
        let topics: [(name: String, partitions: [Partition])] = try r.array(minElementBytes: 2) { r in
            let name = try r.string()
            let partitions: [Partition] = try r.array(minElementBytes: 13) { r in
                let index = try r.int32()
                let offset = try r.int64()
                if v >= 2 { _ = try r.int32() }  // committed_leader_epoch
                let metadata = try r.nullableString()
                try r.taggedFields()
                return Partition(index: index, offset: offset, metadata: metadata)
            }
            try r.taggedFields()
            return (name, partitions)
        }
        try r.taggedFields()
        return TxnOffsetCommitRequest(transactionalId: id, groupId: group, producerId: pid, producerEpoch: epoch,
                                      generationId: generation, memberId: member, topics: topics)
    }
}
