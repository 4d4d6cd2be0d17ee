import NIOCore

/// A request or response that does not parse. The connection that sent it is closed.
public struct ProtocolError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ d: String) { description = d }
}

/// Reads Kafka's (non-flexible) primitive types from a request body, bounds-checked: every read
/// throws on truncation, and every length is checked against what is left before allocating.
struct KafkaReader {
    var buffer: ByteBuffer

    init(_ buffer: ByteBuffer) { self.buffer = buffer }

    var remaining: Int { buffer.readableBytes }

    mutating func int8() throws -> Int8 {
        guard let v = buffer.readInteger(as: Int8.self) else { throw ProtocolError("truncated int8") }
        return v
    }
    mutating func int16() throws -> Int16 {
        guard let v = buffer.readInteger(as: Int16.self) else { throw ProtocolError("truncated int16") }
        return v
    }
    mutating func int32() throws -> Int32 {
        guard let v = buffer.readInteger(as: Int32.self) else { throw ProtocolError("truncated int32") }
        return v
    }
    mutating func int64() throws -> Int64 {
        guard let v = buffer.readInteger(as: Int64.self) else { throw ProtocolError("truncated int64") }
        return v
    }
    mutating func bool() throws -> Bool { try int8() != 0 }

    mutating func nullableString() throws -> String? {
        let n = try int16()
        if n == -1 { return nil }
        guard n >= 0, Int(n) <= remaining, let s = buffer.readString(length: Int(n)) else { throw ProtocolError("bad string length \(n)") }
        return s
    }

    mutating func string() throws -> String {
        guard let s = try nullableString() else { throw ProtocolError("null where a string is required") }
        return s
    }

    mutating func nullableBytes() throws -> ByteBuffer? {
        let n = try int32()
        if n == -1 { return nil }
        guard n >= 0, Int(n) <= remaining, let b = buffer.readSlice(length: Int(n)) else { throw ProtocolError("bad bytes length \(n)") }
        return b
    }

    mutating func bytes() throws -> ByteBuffer { try nullableBytes() ?? ByteBuffer() }

    /// An array length: -1 (null) is returned as nil. Each element needs at least `minElementBytes`
    /// bytes, so a hostile count cannot make us allocate or loop beyond the frame.
    mutating func arrayCount(minElementBytes: Int = 1) throws -> Int? {
        let n = try int32()
        if n == -1 { return nil }
        guard n >= 0, Int(n) * max(1, minElementBytes) <= remaining else { throw ProtocolError("bad array length \(n)") }
        return Int(n)
    }

    mutating func array<T>(minElementBytes: Int = 1, _ element: (inout KafkaReader) throws -> T) throws -> [T] {
        guard let n = try arrayCount(minElementBytes: minElementBytes) else { return [] }
        var out: [T] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try element(&self)) }
        return out
    }

    mutating func nullableArray<T>(minElementBytes: Int = 1, _ element: (inout KafkaReader) throws -> T) throws -> [T]? {
        guard let n = try arrayCount(minElementBytes: minElementBytes) else { return nil }
        var out: [T] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try element(&self)) }
        return out
    }

    mutating func unsignedVarint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard let b = buffer.readInteger(as: UInt8.self) else { throw ProtocolError("truncated varint") }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            guard shift < 64 else { throw ProtocolError("varint too long") }
        }
    }
}

/// Writes Kafka's primitive types into a response. The first 8 bytes are left for the frame size
/// and correlation id, which the connection fills in: the body is never copied to be framed.
struct KafkaWriter {
    static let frameHeaderBytes = 8
    var buffer: ByteBuffer

    init(allocator: ByteBufferAllocator = ByteBufferAllocator(), capacity: Int = 256) {
        buffer = allocator.buffer(capacity: capacity + Self.frameHeaderBytes)
        buffer.writeRepeatingByte(0, count: Self.frameHeaderBytes)
    }

    mutating func int8(_ v: Int8) { buffer.writeInteger(v) }
    mutating func int16(_ v: Int16) { buffer.writeInteger(v) }
    mutating func int32(_ v: Int32) { buffer.writeInteger(v) }
    mutating func int64(_ v: Int64) { buffer.writeInteger(v) }
    mutating func bool(_ v: Bool) { buffer.writeInteger(v ? Int8(1) : 0) }

    /// A string with an int16 length. One longer than 32,767 bytes cannot be encoded: it is cut
    /// at a character boundary (only messages echoing client input can be that long; names are
    /// limited long before), so no client value can make the writer trap.
    mutating func string(_ s: String) {
        let utf8 = s.utf8
        guard utf8.count > Int(Int16.max) else {
            buffer.writeInteger(Int16(utf8.count))
            buffer.writeString(s)
            return
        }
        var end = utf8.index(utf8.startIndex, offsetBy: Int(Int16.max))
        while end > utf8.startIndex && UTF8.isContinuation(utf8[end]) { end = utf8.index(before: end) }
        let cut = utf8[..<end]
        buffer.writeInteger(Int16(cut.count))
        buffer.writeBytes(cut)
    }

    mutating func nullableString(_ s: String?) {
        guard let s else { buffer.writeInteger(Int16(-1)); return }
        string(s)
    }

    mutating func bytes(_ b: ByteBuffer?) {
        guard var b else { buffer.writeInteger(Int32(-1)); return }
        buffer.writeInteger(Int32(b.readableBytes))
        buffer.writeBuffer(&b)
    }

    mutating func bytes(_ b: [UInt8]) {
        buffer.writeInteger(Int32(b.count))
        buffer.writeBytes(b)
    }

    mutating func rawBytes(_ p: UnsafeRawBufferPointer) {
        buffer.writeInteger(Int32(p.count))
        buffer.writeBytes(p)
    }

    mutating func array<T>(_ items: [T], _ element: (inout KafkaWriter, T) -> Void) {
        buffer.writeInteger(Int32(items.count))
        for item in items { element(&self, item) }
    }

    mutating func nullableArray<T>(_ items: [T]?, _ element: (inout KafkaWriter, T) -> Void) {
        guard let items else { buffer.writeInteger(Int32(-1)); return }
        array(items, element)
    }
}

/// Kafka error codes (Errors.java): every code Strata can return. `ErrorMapping.swift` is the one
/// table from broker and log errors to these.
enum ErrorCode: Int16 {
    case none = 0
    case unknownServerError = -1
    case offsetOutOfRange = 1
    case corruptMessage = 2
    case unknownTopicOrPartition = 3
    case invalidFetchSize = 4
    case leaderNotAvailable = 5
    case notLeaderOrFollower = 6
    case requestTimedOut = 7
    case messageTooLarge = 10
    case offsetMetadataTooLarge = 12
    case coordinatorLoadInProgress = 14
    case coordinatorNotAvailable = 15
    case notCoordinator = 16
    case invalidTopicException = 17
    case recordListTooLarge = 18
    case notEnoughReplicas = 19
    case invalidRequiredAcks = 21
    case illegalGeneration = 22
    case inconsistentGroupProtocol = 23
    case invalidGroupId = 24
    case unknownMemberId = 25
    case invalidSessionTimeout = 26
    case rebalanceInProgress = 27
    case invalidCommitOffsetSize = 28
    case topicAuthorizationFailed = 29
    case groupAuthorizationFailed = 30
    case clusterAuthorizationFailed = 31
    case invalidTimestamp = 32
    case unsupportedSaslMechanism = 33
    case illegalSaslState = 34
    case unsupportedVersion = 35
    case topicAlreadyExists = 36
    case invalidPartitions = 37
    case invalidReplicationFactor = 38
    case invalidReplicaAssignment = 39
    case invalidConfig = 40
    case notController = 41
    case invalidRequest = 42
    case unsupportedForMessageFormat = 43
    case policyViolation = 44
    case outOfOrderSequenceNumber = 45
    case duplicateSequenceNumber = 46
    case invalidProducerEpoch = 47
    case invalidTxnState = 48
    case invalidProducerIdMapping = 49
    case invalidTransactionTimeout = 50
    case concurrentTransactions = 51
    case securityDisabled = 54
    case kafkaStorageError = 56
    case logDirNotFound = 57
    case unknownProducerId = 59
    case reassignmentInProgress = 60
    case nonEmptyGroup = 68
    case groupIdNotFound = 69
    case fetchSessionIdNotFound = 70
    case invalidFetchSessionEpoch = 71
    case electionNotNeeded = 84
    case noReassignmentInProgress = 85
    case groupSubscribedToTopic = 86
    case unsupportedCompressionType = 76
    case memberIdRequired = 79
    case preferredLeaderNotAvailable = 80
    case fencedInstanceId = 82
    case invalidRecord = 87
    case unstableOffsetCommit = 88
}

/// API keys this broker speaks, with the versions it advertises (minimum always 0: librdkafka
/// before 2.11.1 enables features only when single old versions are inside the range, see
/// notes/kafka-protocol.md) and the versions it actually accepts.
enum ApiKey: Int16, CaseIterable {
    case produce = 0, fetch = 1, listOffsets = 2, metadata = 3, offsetCommit = 8, offsetFetch = 9,
         findCoordinator = 10, joinGroup = 11, heartbeat = 12, leaveGroup = 13, syncGroup = 14,
         describeGroups = 15, listGroups = 16, apiVersions = 18, createTopics = 19, deleteTopics = 20,
         deleteRecords = 21, initProducerId = 22, describeConfigs = 32

    var advertised: ClosedRange<Int16> {
        switch self {
        case .produce: return 0...8
        case .fetch: return 0...11
        case .listOffsets: return 0...5
        case .metadata: return 0...8
        case .offsetCommit: return 0...7
        case .offsetFetch: return 0...5
        case .findCoordinator: return 0...2
        case .joinGroup: return 0...5
        case .heartbeat: return 0...3
        case .leaveGroup: return 0...3
        case .syncGroup: return 0...3
        case .describeGroups: return 0...4
        case .listGroups: return 0...2
        case .apiVersions: return 0...2
        case .createTopics: return 0...4
        case .deleteTopics: return 0...3
        case .initProducerId: return 0...1
        case .deleteRecords: return 0...1
        case .describeConfigs: return 0...3
        }
    }

    /// Versions whose requests are handled; others inside `advertised` are refused (Produce 0-2:
    /// message format 0/1; Fetch 0-3; ListOffsets 0).
    var accepted: ClosedRange<Int16> {
        switch self {
        case .produce: return 3...8
        case .fetch: return 4...11
        case .listOffsets: return 1...5
        default: return advertised
        }
    }
}
