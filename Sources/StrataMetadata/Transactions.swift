/// Where a transaction is (Kafka's TransactionState). `prepareCommit`/`prepareAbort` are the
/// decision, written before any marker: a restart finds them and finishes writing the markers.
public enum TransactionState: UInt8, Sendable, CustomStringConvertible {
    case empty = 0, ongoing = 1, prepareCommit = 2, prepareAbort = 3, completeCommit = 4, completeAbort = 5

    public var description: String {
        switch self {
        case .empty: return "Empty"
        case .ongoing: return "Ongoing"
        case .prepareCommit: return "PrepareCommit"
        case .prepareAbort: return "PrepareAbort"
        case .completeCommit: return "CompleteCommit"
        case .completeAbort: return "CompleteAbort"
        }
    }
}

/// An offset a transaction commits for a consumer group when (and only if) it commits.
public struct PendingOffset: Sendable, Equatable {
    public var group: String
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var metadata: String

    public init(group: String, topic: String, partition: Int32, offset: Int64, metadata: String) {
        self.group = group
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.metadata = metadata
    }
}

/// One transactional id as the transaction coordinator keeps it (Kafka's TransactionMetadata),
/// stored in LMDB (`transactions`, keyed by the id) at every state change.
public struct TransactionRecord: Sendable, Equatable {
    public var transactionalId: String
    public var producerId: Int64
    public var epoch: Int16
    /// The epoch before the last bump by the coordinator (abort on timeout), -1 when none: a
    /// producer still holding it may re-initialise (KIP-588) instead of being fenced.
    public var lastEpoch: Int16 = -1
    public var timeoutMs: Int32
    public var state: TransactionState = .empty
    public var startMs: Int64 = -1
    public var updateMs: Int64
    public var partitions: [TopicPartitionName] = []
    public var groups: [String] = []
    public var pendingOffsets: [PendingOffset] = []

    public init(transactionalId: String, producerId: Int64, epoch: Int16, timeoutMs: Int32, updateMs: Int64) {
        self.transactionalId = transactionalId
        self.producerId = producerId
        self.epoch = epoch
        self.timeoutMs = timeoutMs
        self.updateMs = updateMs
    }

    /// Limits on what one record holds, checked by the coordinator before it grows one (a client
    /// adding partitions without end must not grow an LMDB value without end).
    public static let maxPartitions = 100_000
    public static let maxPendingOffsets = 100_000
    public static let maxGroups = 1000
    /// Transactional ids are LMDB keys (LMDB's limit: 511 bytes).
    public static let maxTransactionalIdBytes = 500

    func encoded() -> [UInt8] {
        var out: [UInt8] = [1]
        out += Codec.int64(producerId)
        out += withUnsafeBytes(of: epoch.bigEndian) { Array($0) }
        out += withUnsafeBytes(of: lastEpoch.bigEndian) { Array($0) }
        Codec.appendInt32(timeoutMs, &out)
        out.append(state.rawValue)
        out += Codec.int64(startMs)
        out += Codec.int64(updateMs)
        Codec.appendInt32(Int32(partitions.count), &out)
        for p in partitions { Codec.appendString(p.topic, &out); Codec.appendInt32(p.partition, &out) }
        Codec.appendInt32(Int32(groups.count), &out)
        for g in groups { Codec.appendString(g, &out) }
        Codec.appendInt32(Int32(pendingOffsets.count), &out)
        for o in pendingOffsets {
            Codec.appendString(o.group, &out); Codec.appendString(o.topic, &out); Codec.appendInt32(o.partition, &out)
            out += Codec.int64(o.offset); Codec.appendString(o.metadata, &out)
        }
        return out
    }

    /// nil when the value is not a record this build wrote (counts are checked against the
    /// bytes left before anything is reserved).
    static func decode(id: String, _ b: [UInt8]) -> TransactionRecord? {
        guard b.count >= 36, b[0] == 1 else { return nil }
        var i = 1
        func int64() -> Int64? {
            guard i + 8 <= b.count else { return nil }
            defer { i += 8 }
            return Codec.readInt64(Array(b[i..<i + 8]))
        }
        func int16() -> Int16? {
            guard i + 2 <= b.count else { return nil }
            defer { i += 2 }
            return Int16(bitPattern: UInt16(b[i]) << 8 | UInt16(b[i + 1]))
        }
        func count(_ minBytes: Int) -> Int? {
            guard let n = Codec.readInt32(b, &i), n >= 0, Int(n) <= (b.count - i) / minBytes else { return nil }
            return Int(n)
        }
        guard let pid = int64(), let epoch = int16(), let lastEpoch = int16(), let timeout = Codec.readInt32(b, &i),
              i < b.count, let state = TransactionState(rawValue: b[i]) else { return nil }
        i += 1
        guard let start = int64(), let update = int64() else { return nil }
        var r = TransactionRecord(transactionalId: id, producerId: pid, epoch: epoch, timeoutMs: timeout, updateMs: update)
        r.lastEpoch = lastEpoch
        r.state = state
        r.startMs = start
        guard let np = count(6) else { return nil }
        for _ in 0..<np {
            guard let t = Codec.readString(b, &i), let p = Codec.readInt32(b, &i) else { return nil }
            r.partitions.append(TopicPartitionName(topic: t, partition: p))
        }
        guard let ng = count(2) else { return nil }
        for _ in 0..<ng {
            guard let g = Codec.readString(b, &i) else { return nil }
            r.groups.append(g)
        }
        guard let no = count(20) else { return nil }
        for _ in 0..<no {
            guard let g = Codec.readString(b, &i), let t = Codec.readString(b, &i), let p = Codec.readInt32(b, &i),
                  let o = int64(), let m = Codec.readString(b, &i) else { return nil }
            r.pendingOffsets.append(PendingOffset(group: g, topic: t, partition: p, offset: o, metadata: m))
        }
        return i == b.count ? r : nil
    }
}

public struct TopicPartitionName: Sendable, Hashable, Comparable {
    public var topic: String
    public var partition: Int32
    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }
    public static func < (a: Self, b: Self) -> Bool { (a.topic, a.partition) < (b.topic, b.partition) }
}

extension MetadataStore {
    public func putTransaction(_ record: TransactionRecord) throws {
        try environment.write { txn in try txn.put("transactions", Array(record.transactionalId.utf8), record.encoded()) }
    }

    public func deleteTransaction(_ transactionalId: String) throws {
        try environment.write { txn in _ = try txn.delete("transactions", Array(transactionalId.utf8)) }
    }

    /// Every stored transactional id; records that do not decode are reported, not dropped.
    public func transactions() throws -> (records: [TransactionRecord], undecodable: [String]) {
        try environment.read { txn in
            var records: [TransactionRecord] = []
            var bad: [String] = []
            for (key, value) in try txn.scan("transactions") {
                let id = String(decoding: key, as: UTF8.self)
                if let r = TransactionRecord.decode(id: id, value) { records.append(r) } else { bad.append(id) }
            }
            return (records, bad)
        }
    }
}
