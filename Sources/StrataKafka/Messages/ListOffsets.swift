struct ListOffsetsRequest: KafkaRequestBody {
    struct Partition { var index: Int32; var timestamp: Int64; var maxNumOffsets: Int32 = 1 }
    struct Topic { var name: String; var partitions: [Partition] }
    var isolationLevel: Int8 = 0
    var topics: [Topic]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> ListOffsetsRequest {
        _ = try r.int32()  // replica_id
        let isolation = v >= 2 ? try r.int8() : 0
        let topics: [Topic] = try r.array(minElementBytes: 2) { r in
            let name = try r.string()
            let partitions: [Partition] = try r.array(minElementBytes: 12) { r in
                let index = try r.int32()
                if v >= 4 { _ = try r.int32() }  // current_leader_epoch
                let timestamp = try r.int64()
                let maxNum = v == 0 ? try r.int32() : 1
                try r.taggedFields()
                return Partition(index: index, timestamp: timestamp, maxNumOffsets: maxNum)
            }
            try r.taggedFields()
            return Topic(name: name, partitions: partitions)
        }
        try r.taggedFields()
        return ListOffsetsRequest(isolationLevel: isolation, topics: topics)
    }
}

struct ListOffsetsResponse: KafkaResponseBody {
    struct Partition { var index: Int32; var errorCode: ErrorCode = .none; var timestamp: Int64 = -1; var offset: Int64 = -1; var oldStyleOffsets: [Int64] = [] }
    struct Topic { var name: String; var partitions: [Partition] }
    var topics: [Topic]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 2 { w.int32(0) }
        w.array(topics) { w, t in
            w.string(t.name)
            w.array(t.partitions) { w, p in
                w.int32(p.index)
                w.int16(p.errorCode.rawValue)
                if v == 0 {
                    w.array(p.oldStyleOffsets) { $0.int64($1) }
                } else {
                    w.int64(p.timestamp)
                    w.int64(p.offset)
                    if v >= 4 { w.int32(0) }  // leader_epoch: one leader, epoch 0
                }
                w.taggedFields()
            }
            w.taggedFields()
        }
        w.taggedFields()
    }
}
