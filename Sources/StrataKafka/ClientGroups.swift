import NIOCore
import StrataLog

/// The consumer-group admin calls of `strata groups --bootstrap`, in the classic (non-flexible)
/// versions every Kafka broker since 2.x serves, so the command works against Kafka too.
extension KafkaClient {
    public struct GroupMember: Sendable {
        public let memberId: String
        public let clientId: String
        public let host: String
        public let assignment: [UInt8]
    }

    public struct GroupInfo: Sendable {
        public let error: Int16
        public let group: String
        public let state: String
        public let protocolType: String
        public let members: [GroupMember]
    }

    /// ListGroups v0: (group id, protocol type) of every group the broker coordinates.
    public func listGroups() throws -> [(group: String, protocolType: String)] {
        var r = KafkaReader(try request(apiKey: 16, version: 0, body: Self.strip(KafkaWriter(capacity: 8))))
        let error = try r.int16()
        guard error == 0 else { throw ClientError("ListGroups: Kafka error \(error)") }
        return try r.array { r in (try r.string(), try r.string()) }
    }

    /// DescribeGroups v0 of one group.
    public func describeGroup(_ group: String) throws -> GroupInfo {
        var w = KafkaWriter(capacity: 64)
        w.array([group]) { $0.string($1) }
        var r = KafkaReader(try request(apiKey: 15, version: 0, body: Self.strip(w)))
        let groups: [GroupInfo] = try r.array { r in
            let error = try r.int16()
            let id = try r.string()
            let state = try r.string()
            let protocolType = try r.string()
            _ = try r.string()  // protocol data (the assignor)
            let members: [GroupMember] = try r.array { r in
                let member = try r.string()
                let client = try r.string()
                let host = try r.string()
                _ = try r.bytes()
                return GroupMember(memberId: member, clientId: client, host: host, assignment: try r.byteArray())
            }
            return GroupInfo(error: error, group: id, state: state, protocolType: protocolType, members: members)
        }
        guard let first = groups.first else { throw ClientError("empty DescribeGroups response") }
        return first
    }

    /// OffsetFetch v2 with no topic list: every offset the group committed.
    public func committedOffsets(group: String) throws -> [(topic: String, partition: Int32, offset: Int64)] {
        var w = KafkaWriter(capacity: 64)
        w.string(group)
        w.int32(-1)  // null topics: all
        var r = KafkaReader(try request(apiKey: 9, version: 2, body: Self.strip(w)))
        var out: [(topic: String, partition: Int32, offset: Int64)] = []
        let topics: [(String, [(Int32, Int64, Int16)])] = try r.array { r in
            let name = try r.string()
            return (name, try r.array { r in
                let p = try r.int32(); let o = try r.int64(); _ = try r.classicNullableString(); return (p, o, try r.int16())
            })
        }
        let error = try r.int16()
        guard error == 0 else { throw ClientError("OffsetFetch \(group): Kafka error \(error)") }
        for (topic, parts) in topics { for (p, o, e) in parts where e == 0 && o >= 0 { out.append((topic, p, o)) } }
        return out.sorted { ($0.topic, $0.partition) < ($1.topic, $1.partition) }
    }

    /// OffsetCommit v2 as an admin (generation -1, no member): what kafka-consumer-groups
    /// --reset-offsets sends. The broker refuses it while the group has members. Returns the
    /// error code per partition (0: committed).
    public func commitOffsets(group: String, _ offsets: [(topic: String, partition: Int32, offset: Int64)]) throws -> [(topic: String, partition: Int32, error: Int16)] {
        var byTopic: [String: [(Int32, Int64)]] = [:]
        for o in offsets { byTopic[o.topic, default: []].append((o.partition, o.offset)) }
        var w = KafkaWriter(capacity: 128 + offsets.count * 16)
        w.string(group)
        w.int32(-1)
        w.string("")
        w.int64(-1)
        w.array(byTopic.keys.sorted()) { w, topic in
            w.string(topic)
            w.array(byTopic[topic]!) { w, p in
                w.int32(p.0)
                w.int64(p.1)
                w.nullableString(nil)
            }
        }
        var r = KafkaReader(try request(apiKey: 8, version: 2, body: Self.strip(w)))
        let topics: [(String, [(Int32, Int16)])] = try r.array { r in
            let name = try r.string()
            return (name, try r.array { r in (try r.int32(), try r.int16()) })
        }
        return topics.flatMap { t in t.1.map { (t.0, $0.0, $0.1) } }
    }

    /// DeleteGroups v0: the error code per group (0: deleted; 68: NON_EMPTY_GROUP; 69: GROUP_ID_NOT_FOUND).
    public func deleteGroups(_ groups: [String]) throws -> [(group: String, error: Int16)] {
        var w = KafkaWriter(capacity: 64)
        w.array(groups) { $0.string($1) }
        var r = KafkaReader(try request(apiKey: 42, version: 0, body: Self.strip(w)))
        _ = try r.int32()
        return try r.array { r in (try r.string(), try r.int16()) }
    }

    /// The timestamp of the first record at or after `offset` in a partition (one small Fetch),
    /// nil if there is none.
    public func recordTimestamp(topic: String, partition: Int32, offset: Int64) throws -> Int64? {
        let (error, _, batches) = try fetch(topic: topic, partition: partition, offset: offset, maxBytes: 64 << 10, maxWaitMs: 0)
        guard error == 0 else { return nil }
        var found: Int64?
        batches.withUnsafeReadableBytes { b in
            var position = 0
            while found == nil, position < b.count, let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: b[position...])), position + size <= b.count {
                let batch = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: b[position..<position + size]))
                position += size
                guard batch.lastOffset >= offset else { continue }
                if batch.isLogAppendTime { found = batch.maxTimestamp; break }
                try? batch.forEachRecord { r in if found == nil, r.offset >= offset { found = r.timestamp } }
            }
        }
        return found
    }
}
