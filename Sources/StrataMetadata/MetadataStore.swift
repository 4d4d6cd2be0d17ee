#if canImport(Glibc)
import Glibc
#endif
import StrataCore
import Synchronization

/// A topic as the metadata store keeps it: partition count and Kafka-named configs.
public struct TopicRecord: Sendable, Equatable {
    public var name: String
    public var partitions: Int32
    public var configs: [String: String]
    public var createdMs: Int64

    public init(name: String, partitions: Int32, configs: [String: String], createdMs: Int64) {
        self.name = name
        self.partitions = partitions
        self.configs = configs
        self.createdMs = createdMs
    }
}

/// A committed consumer-group offset.
public struct CommittedOffset: Sendable, Equatable {
    public var offset: Int64
    public var metadata: String
    public var commitTimeMs: Int64

    public init(offset: Int64, metadata: String = "", commitTimeMs: Int64) {
        self.offset = offset
        self.metadata = metadata
        self.commitTimeMs = commitTimeMs
    }
}

public struct OffsetCommit: Sendable, Equatable {
    public var group: String
    public var topic: String
    public var partition: Int32
    public var committed: CommittedOffset

    public init(group: String, topic: String, partition: Int32, committed: CommittedOffset) {
        self.group = group
        self.topic = topic
        self.partition = partition
        self.committed = committed
    }
}

/// Typed access to Strata's metadata (design.md §6). Keys and values use a small length-prefixed
/// binary encoding (`Codec`); nothing here ever holds event payloads.
///
/// Offset commits are group-committed: concurrent `commitOffsets` calls are merged into one LMDB
/// transaction (one sync), so thousands of commits per second do not mean thousands of fsyncs.
/// `@unchecked Sendable`: the group-commit queue (`pending`, the sequences, `committing`) is read
/// and written only under `commitLock`; everything else is a `let` of a thread-safe type.
public final class MetadataStore: @unchecked Sendable {
    public let environment: MetadataEnvironment
    public static let formatVersion = "1"

    private let commitLock = ConditionLock()
    private var pending: [OffsetCommit] = []
    private var pendingSequence: UInt64 = 0   // sequence of the last queued commit call
    private var durableSequence: UInt64 = 0   // every call up to this is committed
    private var committing = false
    private var commitFailure: Error?
    private let transactionCount = Atomic<Int>(0)

    public init(directory: String, readOnly: Bool = false) throws {
        environment = try MetadataEnvironment(path: directory, readOnly: readOnly)
        // Written once, at the first open; later opens only read (a write transaction on a full
        // disk would fail, and must not keep the data from being served).
        let present = try environment.read { txn in
            (try txn.get("cluster", Array("cluster_id".utf8)), try txn.get("cluster", Array("format_version".utf8)))
        }
        if let version = present.1.map({ String(decoding: $0, as: UTF8.self) }), version != Self.formatVersion {
            throw MetadataError(code: -1, context: "metadata format version \(version) is not supported (this build reads \(Self.formatVersion))")
        }
        if !readOnly && (present.0 == nil || present.1 == nil) {
            try environment.write { txn in
                if try txn.get("cluster", Array("cluster_id".utf8)) == nil {
                    try txn.put("cluster", Array("cluster_id".utf8), Array(Self.newClusterId().utf8))
                }
                if let v = try txn.get("cluster", Array("format_version".utf8)) {
                    let version = String(decoding: v, as: UTF8.self)
                    guard version == Self.formatVersion else {
                        throw MetadataError(code: -1, context: "metadata format version \(version) is not supported (this build reads \(Self.formatVersion))")
                    }
                } else {
                    try txn.put("cluster", Array("format_version".utf8), Array(Self.formatVersion.utf8))
                }
            }
        }
    }

    /// LMDB write transactions committed by offset commits (for benchmarks: commits per sync).
    public var offsetTransactionCount: Int { transactionCount.load(ordering: .relaxed) }

    static func newClusterId() -> String {
        // Kafka cluster ids are 16 random bytes in URL-safe base64 without padding (22 chars).
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<16 { bytes[i] = UInt8.random(in: 0...255) }
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var out: [UInt8] = []
        var bits = 0
        var acc = 0
        for b in bytes {
            acc = (acc << 8) | Int(b)
            bits += 8
            while bits >= 6 {
                bits -= 6
                out.append(alphabet[(acc >> bits) & 63])
            }
        }
        if bits > 0 { out.append(alphabet[(acc << (6 - bits)) & 63]) }
        return String(decoding: out, as: UTF8.self)
    }

    public func clusterId() throws -> String {
        try environment.read { txn in
            try txn.get("cluster", Array("cluster_id".utf8)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        }
    }

    /// A producer id never handed out before (Kafka's InitProducerId), durable across restarts.
    public func nextProducerId() throws -> Int64 {
        try environment.write { txn in
            let key = Array("next_producer_id".utf8)
            let next = try txn.get("cluster", key).flatMap(Codec.readInt64) ?? 1000
            try txn.put("cluster", key, Codec.int64(next + 1))
            return next
        }
    }

    // MARK: Topics

    public func putTopic(_ topic: TopicRecord) throws {
        try environment.write { txn in try txn.put("topics", Array(topic.name.utf8), Codec.encode(topic)) }
    }

    public func topic(_ name: String) throws -> TopicRecord? {
        try environment.read { txn in try txn.get("topics", Array(name.utf8)).flatMap { Codec.decodeTopic(name: name, $0) } }
    }

    public func topics() throws -> [TopicRecord] {
        try environment.read { txn in
            try txn.scan("topics").compactMap { Codec.decodeTopic(name: String(decoding: $0.key, as: UTF8.self), $0.value) }
        }
    }

    /// Removes the topic and everything keyed by it (partition records, committed offsets).
    public func deleteTopic(_ name: String) throws {
        try environment.write { txn in
            try txn.delete("topics", Array(name.utf8))
            for (key, _) in try txn.scan("partitions", prefix: Codec.topicPrefix(name)) { try txn.delete("partitions", key) }
            for (key, _) in try txn.scan("cleaner", prefix: Codec.topicPrefix(name)) { try txn.delete("cleaner", key) }
            for (key, value) in try txn.scan("group_offsets") {
                if let k = Codec.decodeOffsetKey(key), k.topic == name { _ = value; try txn.delete("group_offsets", key) }
            }
        }
    }

    // MARK: Partitions

    public func putPartitionState(topic: String, partition: Int32, logStartOffset: Int64) throws {
        try environment.write { txn in
            try txn.put("partitions", Codec.partitionKey(topic, partition), Codec.int64(logStartOffset))
        }
    }

    public func partitionLogStartOffset(topic: String, partition: Int32) throws -> Int64? {
        try environment.read { txn in try txn.get("partitions", Codec.partitionKey(topic, partition)).flatMap(Codec.readInt64) }
    }

    // MARK: Consumer group offsets

    /// Durably stores the commits; returns once they are on disk. Concurrent callers share one
    /// LMDB transaction (group commit, as the log's flusher).
    public func commitOffsets(_ commits: [OffsetCommit]) throws {
        guard !commits.isEmpty else { return }
        commitLock.lock()
        defer { commitLock.unlock() }
        pending.append(contentsOf: commits)
        pendingSequence += 1
        let mine = pendingSequence
        while durableSequence < mine {
            if committing {
                commitLock.wait()
                continue
            }
            committing = true
            let batch = pending
            let upTo = pendingSequence
            pending.removeAll(keepingCapacity: true)
            commitLock.unlock()
            var failure: Error?
            do {
                try environment.write { txn in
                    for c in batch {
                        try txn.put("group_offsets", Codec.offsetKey(c.group, c.topic, c.partition), Codec.encode(c.committed))
                    }
                }
                transactionCount.add(1, ordering: .relaxed)
            } catch {
                failure = error
            }
            commitLock.lock()
            committing = false
            if let failure {
                commitLock.broadcast()
                throw failure  // every caller in this batch retries or fails on its own
            }
            durableSequence = upTo
            commitLock.broadcast()
        }
    }

    public func committedOffset(group: String, topic: String, partition: Int32) throws -> CommittedOffset? {
        try environment.read { txn in try txn.get("group_offsets", Codec.offsetKey(group, topic, partition)).flatMap(Codec.decodeCommitted) }
    }

    /// Every committed offset of a group: (topic, partition) → offset.
    public func committedOffsets(group: String) throws -> [(topic: String, partition: Int32, committed: CommittedOffset)] {
        try environment.read { txn in
            try txn.scan("group_offsets", prefix: Codec.groupPrefix(group)).compactMap { kv in
                guard let k = Codec.decodeOffsetKey(kv.key), let c = Codec.decodeCommitted(kv.value) else { return nil }
                return (k.topic, k.partition, c)
            }
        }
    }

    /// Deletes committed offsets of a group: all of them (`partitions` nil) or those listed.
    /// Returns how many were deleted.
    @discardableResult
    public func deleteCommittedOffsets(group: String, partitions: [(topic: String, partition: Int32)]? = nil) throws -> Int {
        try environment.write { txn in
            var deleted = 0
            if let partitions {
                for p in partitions {
                    let key = Codec.offsetKey(group, p.topic, p.partition)
                    if try txn.get("group_offsets", key) != nil {
                        try txn.delete("group_offsets", key)
                        deleted += 1
                    }
                }
            } else {
                for (key, _) in try txn.scan("group_offsets", prefix: Codec.groupPrefix(group)) {
                    try txn.delete("group_offsets", key)
                    deleted += 1
                }
            }
            return deleted
        }
    }

    public func groups() throws -> [String] {
        try environment.read { txn in
            var names: [String] = []
            for (key, _) in try txn.scan("group_offsets") {
                if let k = Codec.decodeOffsetKey(key), names.last != k.group { names.append(k.group) }
            }
            return names
        }
    }

    // MARK: Cleaner state per partition

    /// What the cleaner last did to a partition; `cleanedUpTo` is its checkpoint (the log end
    /// when the last pass started: bytes appended after it are dirty).
    public struct CleanerRecord: Sendable, Equatable {
        public var cleanedUpTo: Int64 = 0
        public var lastCleanMs: Int64 = 0
        public var bytesReclaimed: Int64 = 0
        public var passes: Int64 = 0
        public var errors: Int64 = 0
        public var lastError: String = ""
        public init() {}
    }

    public func putCleanerRecord(topic: String, partition: Int32, _ r: CleanerRecord) throws {
        var v = Codec.int64(r.cleanedUpTo) + Codec.int64(r.lastCleanMs) + Codec.int64(r.bytesReclaimed) + Codec.int64(r.passes) + Codec.int64(r.errors)
        Codec.appendString(String(r.lastError.prefix(1000)), &v)
        try environment.write { txn in try txn.put("cleaner", Codec.partitionKey(topic, partition), v) }
    }

    public func cleanerRecord(topic: String, partition: Int32) throws -> CleanerRecord? {
        try environment.read { txn in
            guard let b = try txn.get("cleaner", Codec.partitionKey(topic, partition)), b.count >= 42 else { return nil }
            var r = CleanerRecord()
            r.cleanedUpTo = Codec.readInt64(Array(b[0..<8])) ?? 0
            r.lastCleanMs = Codec.readInt64(Array(b[8..<16])) ?? 0
            r.bytesReclaimed = Codec.readInt64(Array(b[16..<24])) ?? 0
            r.passes = Codec.readInt64(Array(b[24..<32])) ?? 0
            r.errors = Codec.readInt64(Array(b[32..<40])) ?? 0
            var i = 40
            r.lastError = Codec.readString(b, &i) ?? ""
            return r
        }
    }

    // MARK: Group state (the coordinator's; opaque here)

    public func putGroupState(group: String, state: [UInt8]) throws {
        try environment.write { txn in try txn.put("groups", Array(group.utf8), state) }
    }

    public func groupState(group: String) throws -> [UInt8]? {
        try environment.read { txn in try txn.get("groups", Array(group.utf8)) }
    }
}

/// The binary encodings of keys and values. Strings are length-prefixed (u16), integers big-endian
/// so keys sort by (group, topic, partition) numerically.
enum Codec {
    static func int64(_ v: Int64) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
    static func readInt64(_ b: [UInt8]) -> Int64? {
        guard b.count >= 8 else { return nil }
        return b.withUnsafeBytes { Int64(bigEndian: $0.loadUnaligned(as: Int64.self)) }
    }

    static func appendString(_ s: String, _ out: inout [UInt8]) {
        let u = Array(s.utf8)
        precondition(u.count <= Int(UInt16.max))
        out.append(UInt8(u.count >> 8))
        out.append(UInt8(u.count & 0xFF))
        out.append(contentsOf: u)
    }

    static func readString(_ b: [UInt8], _ i: inout Int) -> String? {
        guard i + 2 <= b.count else { return nil }
        let n = Int(b[i]) << 8 | Int(b[i + 1])
        i += 2
        guard i + n <= b.count else { return nil }
        defer { i += n }
        return String(decoding: b[i..<i + n], as: UTF8.self)
    }

    static func appendInt32(_ v: Int32, _ out: inout [UInt8]) { withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) } }
    static func readInt32(_ b: [UInt8], _ i: inout Int) -> Int32? {
        guard i + 4 <= b.count else { return nil }
        defer { i += 4 }
        return b[i..<i + 4].reduce(0) { ($0 << 8) | Int32($1) }
    }

    static func topicPrefix(_ topic: String) -> [UInt8] { var o: [UInt8] = []; appendString(topic, &o); return o }
    static func partitionKey(_ topic: String, _ p: Int32) -> [UInt8] { var o = topicPrefix(topic); appendInt32(p, &o); return o }
    static func groupPrefix(_ group: String) -> [UInt8] { var o: [UInt8] = []; appendString(group, &o); return o }

    static func offsetKey(_ group: String, _ topic: String, _ p: Int32) -> [UInt8] {
        var o: [UInt8] = []
        appendString(group, &o)
        appendString(topic, &o)
        appendInt32(p, &o)
        return o
    }

    static func decodeOffsetKey(_ b: [UInt8]) -> (group: String, topic: String, partition: Int32)? {
        var i = 0
        guard let g = readString(b, &i), let t = readString(b, &i), let p = readInt32(b, &i) else { return nil }
        return (g, t, p)
    }

    static func encode(_ c: CommittedOffset) -> [UInt8] {
        var o = int64(c.offset) + int64(c.commitTimeMs)
        appendString(c.metadata, &o)
        return o
    }

    static func decodeCommitted(_ b: [UInt8]) -> CommittedOffset? {
        guard b.count >= 18, let offset = readInt64(Array(b[0..<8])), let time = readInt64(Array(b[8..<16])) else { return nil }
        var i = 16
        return CommittedOffset(offset: offset, metadata: readString(b, &i) ?? "", commitTimeMs: time)
    }

    static func encode(_ t: TopicRecord) -> [UInt8] {
        var o: [UInt8] = [1]  // version
        appendInt32(t.partitions, &o)
        o += int64(t.createdMs)
        appendInt32(Int32(t.configs.count), &o)
        for (k, v) in t.configs.sorted(by: { $0.key < $1.key }) {
            appendString(k, &o)
            appendString(v, &o)
        }
        return o
    }

    static func decodeTopic(name: String, _ b: [UInt8]) -> TopicRecord? {
        guard b.first == 1 else { return nil }
        var i = 1
        guard let partitions = readInt32(b, &i), i + 8 <= b.count, let created = readInt64(Array(b[i..<i + 8])) else { return nil }
        i += 8
        guard let count = readInt32(b, &i), count >= 0 else { return nil }
        var configs: [String: String] = [:]
        for _ in 0..<count {
            guard let k = readString(b, &i), let v = readString(b, &i) else { return nil }
            configs[k] = v
        }
        return TopicRecord(name: name, partitions: partitions, configs: configs, createdMs: created)
    }
}
