import NIOCore
import StrataLog

struct FetchRequest: KafkaRequestBody {
    struct Partition { var index: Int32; var fetchOffset: Int64; var maxBytes: Int32 }
    struct Topic { var name: String; var partitions: [Partition] }
    var maxWaitMs: Int32
    var minBytes: Int32
    var maxBytes: Int32 = Int32.max
    var isolationLevel: Int8 = 0
    var topics: [Topic]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> FetchRequest {
        _ = try r.int32()  // replica_id
        let maxWaitMs = try r.int32()
        let minBytes = try r.int32()
        let maxBytes = v >= 3 ? try r.int32() : Int32.max
        let isolation = v >= 4 ? try r.int8() : 0
        if v >= 7 {
            _ = try r.int32()  // session_id
            _ = try r.int32()  // session_epoch: answered with session 0 (no incremental sessions)
        }
        let topics: [Topic] = try r.array(minElementBytes: 2) { r in
            let name = try r.string()
            let partitions: [Partition] = try r.array(minElementBytes: 16) { r in
                let index = try r.int32()
                if v >= 9 { _ = try r.int32() }  // current_leader_epoch
                let offset = try r.int64()
                if v >= 12 { _ = try r.int32() }  // last_fetched_epoch
                if v >= 5 { _ = try r.int64() }  // log_start_offset (followers)
                let maxBytes = try r.int32()
                try r.taggedFields()
                return Partition(index: index, fetchOffset: offset, maxBytes: maxBytes)
            }
            try r.taggedFields()
            return Topic(name: name, partitions: partitions)
        }
        if v >= 7 {
            _ = try r.array(minElementBytes: 2) { r in  // forgotten_topics_data: no sessions to forget from
                _ = try r.string()
                _ = try r.array(minElementBytes: 4) { try $0.int32() }
                try r.taggedFields()
            }
        }
        if v >= 11 { _ = try r.string() }  // rack_id
        try r.taggedFields()
        return FetchRequest(maxWaitMs: maxWaitMs, minBytes: minBytes, maxBytes: maxBytes, isolationLevel: isolation, topics: topics)
    }
}

struct FetchResponse: KafkaResponseBody {
    struct Partition {
        var index: Int32
        var errorCode: ErrorCode = .none
        var highWatermark: Int64 = -1
        var logStartOffset: Int64 = -1
        var lastStableOffset: Int64 = -1
        /// read_committed: the aborted transactions overlapping the records returned (nil: none).
        var abortedTransactions: [AbortedTransaction]?
        /// Whole batches, zero-copy from the segment mapping until written.
        var records: SegmentSlice?
        /// v0-v3: the records down-converted to a magic 0/1 message set (LegacyMessageSets.swift).
        var messageSet: [UInt8]?
        /// The partition's traffic counters, kept from the read so that counting what the
        /// response delivers needs no second lookup (not encoded).
        var traffic: PartitionLog.Traffic?
    }
    struct Topic { var name: String; var partitions: [Partition] }
    var topics: [Topic]

    /// The bytes of records in this response (for sizing the buffer once).
    var recordBytes: Int { topics.reduce(0) { $0 + $1.partitions.reduce(0) { $0 + ($1.records?.count ?? 0) + ($1.messageSet?.count ?? 0) } } }

    func write(_ w: inout KafkaWriter, version v: Int16) {
        if v >= 1 { w.int32(0) }
        if v >= 7 {
            w.int16(0)
            w.int32(0)  // session_id: no fetch sessions
        }
        w.array(topics) { w, t in
            w.string(t.name)
            w.array(t.partitions) { w, p in
                w.int32(p.index)
                w.int16(p.errorCode.rawValue)
                w.int64(p.highWatermark)
                if v >= 4 {
                    w.int64(p.lastStableOffset >= 0 ? p.lastStableOffset : p.highWatermark)
                    if v >= 5 { w.int64(p.logStartOffset) }
                    w.nullableArray(p.abortedTransactions) { w, a in
                        w.int64(a.producerId)
                        w.int64(a.firstOffset)
                        w.taggedFields()
                    }
                }
                if v >= 11 { w.int32(-1) }  // preferred_read_replica
                if let messageSet = p.messageSet {
                    w.bytes(messageSet)
                } else if let slice = p.records {
                    withExtendedLifetime(slice) { w.rawBytes(slice.bytes) }
                } else {
                    w.bytes([UInt8]())  // empty records
                }
                w.taggedFields()
            }
            w.taggedFields()
        }
        w.taggedFields()
    }
}
