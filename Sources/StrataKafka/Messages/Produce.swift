import NIOCore

struct ProduceRequest: KafkaRequestBody {
    struct Partition { var index: Int32; var records: ByteBuffer? }
    struct Topic { var name: String; var partitions: [Partition] }
    var transactionalId: String?
    var acks: Int16
    var timeoutMs: Int32
    var topics: [Topic]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> ProduceRequest {
        let transactionalId = v >= 3 ? try r.nullableString() : nil
        let acks = try r.int16()
        let timeoutMs = try r.int32()
        let topics: [Topic] = try r.array(minElementBytes: 2) { r in
            let name = try r.string()
            let partitions: [Partition] = try r.array(minElementBytes: 5) { r in
                let index = try r.int32()
                let records = try r.nullableBytes()
                try r.taggedFields()
                return Partition(index: index, records: records)
            }
            try r.taggedFields()
            return Topic(name: name, partitions: partitions)
        }
        try r.taggedFields()
        return ProduceRequest(transactionalId: transactionalId, acks: acks, timeoutMs: timeoutMs, topics: topics)
    }
}

struct ProduceResponse: KafkaResponseBody {
    struct Partition {
        var index: Int32
        var errorCode: ErrorCode
        var baseOffset: Int64 = -1
        var logAppendTimeMs: Int64 = -1
        var logStartOffset: Int64 = -1
        var errorMessage: String?
        /// v8+: the records of the batch that caused the error (batch index, message).
        var recordErrors: [(index: Int32, message: String?)] = []
    }
    struct Topic { var name: String; var partitions: [Partition] }
    var topics: [Topic]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.array(topics) { w, t in
            w.string(t.name)
            w.array(t.partitions) { w, p in
                w.int32(p.index)
                w.int16(p.errorCode.rawValue)
                w.int64(p.baseOffset)
                if v >= 2 { w.int64(p.logAppendTimeMs) }
                if v >= 5 { w.int64(p.logStartOffset) }
                if v >= 8 {
                    w.array(p.recordErrors) { w, e in
                        w.int32(e.index)
                        w.nullableString(e.message)
                        w.taggedFields()
                    }
                    w.nullableString(p.errorMessage)
                }
                w.taggedFields()
            }
            w.taggedFields()
        }
        if v >= 1 { w.int32(0) }
        w.taggedFields()
    }
}
