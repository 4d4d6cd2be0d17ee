#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import StrataLog

/// A small blocking Kafka protocol client over one TCP connection: what `strata bench` uses to
/// measure a broker (Strata or Kafka) from Swift. Requests can be pipelined: `send` returns the
/// correlation id, `receive` returns responses in order.
public final class KafkaClient: @unchecked Sendable {
    public struct ClientError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    private let fd: Int32
    /// TLS listeners: the bytes go through this instead of `fd` (which is then -1).
    private let tls: TLSStream?
    private var nextCorrelation: Int32 = 1
    private var readBuffer = [UInt8](repeating: 0, count: 1 << 20)
    private var readStart = 0
    private var readEnd = 0
    public let clientId: String

    /// Connects, then (with `security`) runs TLS and SASL before the first request.
    public convenience init(host: String, port: Int, clientId: String = "strata-bench", security: ClientSecurity) throws {
        if let ca = security.tlsCAPath {
            try self.init(clientId: clientId, tls: try TLSStream(host: host, port: port, caPath: ca))
        } else {
            try self.init(host: host, port: port, clientId: clientId)
        }
        try authenticate(security)
    }

    private init(clientId: String, tls: TLSStream) throws {
        self.clientId = clientId
        self.tls = tls
        self.fd = -1
    }

    public init(host: String, port: Int, clientId: String = "strata-bench") throws {
        self.clientId = clientId
        self.tls = nil
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let first = result else {
            throw ClientError("cannot resolve \(host)")
        }
        defer { freeaddrinfo(result) }
        var connected: Int32 = -1
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            let s = socket(a.pointee.ai_family, a.pointee.ai_socktype, a.pointee.ai_protocol)
            if s >= 0 && connect(s, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 {
                connected = s
                break
            }
            if s >= 0 { Glibc.close(s) }
            ai = a.pointee.ai_next
        }
        guard connected >= 0 else { throw ClientError("cannot connect to \(host):\(port): \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(connected, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        fd = connected
    }

    deinit {
        if let tls { tls.close() } else { Glibc.close(fd) }
    }

    /// Sends one request; returns its correlation id.
    @discardableResult
    public func send(apiKey: Int16, version: Int16, body: ByteBuffer) throws -> Int32 {
        let correlation = nextCorrelation
        nextCorrelation &+= 1
        var header = ByteBuffer()
        let client = Array(clientId.utf8)
        header.writeInteger(Int32(10 + client.count + body.readableBytes))
        header.writeInteger(apiKey)
        header.writeInteger(version)
        header.writeInteger(correlation)
        header.writeInteger(Int16(client.count))
        header.writeBytes(client)
        try writeAll(header)
        try writeAll(body)
        return correlation
    }

    private func writeAll(_ buffer: ByteBuffer) throws {
        if let tls { return try tls.write(buffer) }
        try buffer.withUnsafeReadableBytes { p in
            var done = 0
            while done < p.count {
                let n = Glibc.send(fd, p.baseAddress! + done, p.count - done, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ClientError("send: \(String(cString: strerror(errno)))")
                }
                done += n
            }
        }
    }

    /// Receives the next response: its correlation id and body.
    public func receive() throws -> (correlation: Int32, body: ByteBuffer) {
        let size = Int(try readExactly(4).getInteger(at: 0, as: Int32.self)!)
        guard size >= 4, size <= 256 << 20 else { throw ClientError("response size \(size)") }
        var frame = try readExactly(size)
        let correlation = frame.readInteger(as: Int32.self)!
        return (correlation, frame)
    }

    private func readExactly(_ count: Int) throws -> ByteBuffer {
        if readBuffer.count < count { readBuffer += [UInt8](repeating: 0, count: count - readBuffer.count) }
        while readEnd - readStart < count {
            if readStart > 0 {
                readBuffer.withUnsafeMutableBytes { p in
                    if readEnd > readStart { memmove(p.baseAddress!, p.baseAddress! + readStart, readEnd - readStart) }
                }
                readEnd -= readStart
                readStart = 0
            }
            let end = readEnd
            let n = try readBuffer.withUnsafeMutableBytes { p in
                try tls.map { try $0.read(into: UnsafeMutableRawBufferPointer(rebasing: p[end...])) } ?? recv(fd, p.baseAddress! + end, p.count - end, 0)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw ClientError("recv: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw ClientError("connection closed by the broker") }
            readEnd += n
        }
        var out = ByteBuffer()
        readBuffer.withUnsafeBytes { _ = out.writeBytes(UnsafeRawBufferPointer(rebasing: $0[readStart..<readStart + count])) }
        readStart += count
        return out
    }

    public func request(apiKey: Int16, version: Int16, body: ByteBuffer) throws -> ByteBuffer {
        let id = try send(apiKey: apiKey, version: version, body: body)
        let (correlation, response) = try receive()
        guard correlation == id else { throw ClientError("correlation \(correlation), expected \(id)") }
        return response
    }

    // MARK: APIs (non-flexible versions every broker since Kafka 2.1 accepts)

    /// Partition count of `topic` (Metadata v4, auto-creating if the broker allows).
    public func partitionCount(topic: String, autoCreate: Bool = true) throws -> Int {
        let topics = try metadata(topics: [topic], autoCreate: autoCreate)
        guard let t = topics.first, t.error == 0 else { throw ClientError("metadata for \(topic): error \(topics.first?.error ?? -1)") }
        return t.partitions
    }

    /// Topic names and partition counts (Metadata v4, all topics).
    public func topics() throws -> [(name: String, partitions: Int)] {
        try metadata(topics: nil, autoCreate: false).map { ($0.name, $0.partitions) }
    }

    /// Metadata v4 for `topics` (nil: every topic).
    private func metadata(topics: [String]?, autoCreate: Bool) throws -> [(error: Int16, name: String, partitions: Int)] {
        var w = KafkaWriter(capacity: 64)
        w.nullableArray(topics) { $0.string($1) }
        w.bool(autoCreate)
        var r = KafkaReader(try request(apiKey: 3, version: 4, body: Self.strip(w)))
        _ = try r.int32()
        _ = try r.array { r in (try r.int32(), try r.string(), try r.int32(), try r.nullableString()) }
        _ = try r.nullableString()
        _ = try r.int32()
        return try r.array { r in
            let error = try r.int16()
            let name = try r.string()
            _ = try r.bool()
            let parts = try r.array { r -> Int32 in
                _ = try r.int16(); let p = try r.int32(); _ = try r.int32()
                _ = try r.array { try $0.int32() }; _ = try r.array { try $0.int32() }
                return p
            }
            return (error, name, parts.count)
        }
    }

    /// Sends a Produce v7 with one batch for one partition; returns the correlation id.
    public func sendProduce(topic: String, partition: Int32, batch: [UInt8], acks: Int16) throws -> Int32 {
        var w = KafkaWriter(capacity: batch.count + 64)
        w.nullableString(nil)
        w.int16(acks)
        w.int32(30_000)
        w.array([topic]) { w, t in
            w.string(t)
            w.array([partition]) { w, p in
                w.int32(p)
                w.bytes(batch)
            }
        }
        return try send(apiKey: 0, version: 7, body: Self.strip(w))
    }

    /// Parses a Produce v7 response: (error code, base offset) of its only partition.
    public static func parseProduce(_ body: ByteBuffer) throws -> (Int16, Int64) {
        var r = KafkaReader(body)
        let results: [[(Int16, Int64)]] = try r.array { r in
            _ = try r.string()
            return try r.array { r in
                _ = try r.int32()
                let e = try r.int16(); let o = try r.int64()
                _ = try r.int64(); _ = try r.int64()
                return (e, o)
            }
        }
        guard let first = results.first?.first else { throw ClientError("empty produce response") }
        return first
    }

    /// Fetch v4 of one partition: (error, high watermark, raw record batches).
    public func fetch(topic: String, partition: Int32, offset: Int64, maxBytes: Int32 = 1 << 20, maxWaitMs: Int32 = 500) throws -> (Int16, Int64, ByteBuffer) {
        let f = try fetchPartition(topic: topic, partition: partition, offset: offset, maxBytes: maxBytes, maxWaitMs: maxWaitMs)
        return (f.error, f.highWatermark, f.batches)
    }

    /// One partition's Fetch v4 answer.
    public struct FetchedPartition {
        public var error: Int16
        public var highWatermark: Int64
        public var lastStableOffset: Int64
        /// read_committed: (producer id, first offset) of the aborted transactions in `batches`.
        public var aborted: [(producerId: Int64, firstOffset: Int64)]
        public var batches: ByteBuffer
    }

    /// Fetch v4 of one partition; `readCommitted` asks for isolation level 1 (up to the last
    /// stable offset, with the aborted transactions listed).
    public func fetchPartition(topic: String, partition: Int32, offset: Int64, maxBytes: Int32 = 1 << 20, maxWaitMs: Int32 = 500,
                               readCommitted: Bool = false) throws -> FetchedPartition {
        var w = KafkaWriter(capacity: 64)
        w.int32(-1)
        w.int32(maxWaitMs)
        w.int32(1)
        w.int32(maxBytes)
        w.int8(readCommitted ? 1 : 0)
        w.array([topic]) { w, t in
            w.string(t)
            w.array([partition]) { w, p in
                w.int32(p)
                w.int64(offset)
                w.int32(maxBytes)
            }
        }
        var r = KafkaReader(try request(apiKey: 1, version: 4, body: Self.strip(w)))
        _ = try r.int32()
        let parts: [[FetchedPartition]] = try r.array { r in
            _ = try r.string()
            return try r.array { r in
                _ = try r.int32()
                let e = try r.int16(); let hw = try r.int64(); let lso = try r.int64()
                let aborted = try r.nullableArray(minElementBytes: 16) { r in (producerId: try r.int64(), firstOffset: try r.int64()) } ?? []
                return FetchedPartition(error: e, highWatermark: hw, lastStableOffset: lso, aborted: aborted, batches: try r.bytes())
            }
        }
        guard let p = parts.first?.first else { throw ClientError("empty fetch response") }
        return p
    }

    /// Fetch v4 of several partitions of one topic in one request, as a consumer with many
    /// assigned partitions sends it: per partition (index, error, high watermark, raw batches),
    /// in the order the response lists them.
    public func fetch(topic: String, positions: [(partition: Int32, offset: Int64)], partitionMaxBytes: Int32, maxBytes: Int32,
                      maxWaitMs: Int32 = 0) throws -> [(partition: Int32, error: Int16, highWatermark: Int64, batches: ByteBuffer)] {
        var w = KafkaWriter(capacity: 64 + positions.count * 16)
        w.int32(-1)
        w.int32(maxWaitMs)
        w.int32(1)
        w.int32(maxBytes)
        w.int8(0)
        w.array([topic]) { w, t in
            w.string(t)
            w.array(positions) { w, p in
                w.int32(p.partition)
                w.int64(p.offset)
                w.int32(partitionMaxBytes)
            }
        }
        var r = KafkaReader(try request(apiKey: 1, version: 4, body: Self.strip(w)))
        _ = try r.int32()
        let topics: [[(partition: Int32, error: Int16, highWatermark: Int64, batches: ByteBuffer)]] = try r.array { r in
            _ = try r.string()
            return try r.array { r in
                let p = try r.int32()
                let e = try r.int16(); let hw = try r.int64(); _ = try r.int64()
                _ = try r.nullableArray { r in (try r.int64(), try r.int64()) }
                return (p, e, hw, try r.bytes())
            }
        }
        return topics.flatMap { $0 }
    }

    /// ListOffsets v1: -2 earliest, -1 latest, else the first offset with timestamp >= T (or -1).
    public func listOffset(topic: String, partition: Int32, timestamp: Int64, readCommitted: Bool = false) throws -> Int64 {
        var w = KafkaWriter(capacity: 64)
        w.int32(-1)
        if readCommitted { w.int8(1) }  // v2: isolation level
        w.array([topic]) { w, t in
            w.string(t)
            w.array([partition]) { w, p in
                w.int32(p)
                w.int64(timestamp)
            }
        }
        var r = KafkaReader(try request(apiKey: 2, version: readCommitted ? 2 : 1, body: Self.strip(w)))
        if readCommitted { _ = try r.int32() }  // v2: throttle_time_ms
        let parts: [[(Int16, Int64)]] = try r.array { r in
            _ = try r.string()
            return try r.array { r in
                _ = try r.int32(); let e = try r.int16(); _ = try r.int64()
                return (e, try r.int64())
            }
        }
        guard let p = parts.first?.first else { throw ClientError("empty ListOffsets response") }
        guard p.0 == 0 else { throw ClientError("ListOffsets \(topic)-\(partition): Kafka error \(p.0)") }
        return p.1
    }

    /// OffsetFetch v1: the group's committed offsets (-1 where none).
    public func committedOffsets(group: String, topic: String, partitions: [Int32]) throws -> [Int32: Int64] {
        var w = KafkaWriter(capacity: 64)
        w.string(group)
        w.array([topic]) { w, t in
            w.string(t)
            w.array(partitions) { $0.int32($1) }
        }
        var r = KafkaReader(try request(apiKey: 9, version: 1, body: Self.strip(w)))
        var out: [Int32: Int64] = [:]
        _ = try r.array { r in
            _ = try r.string()
            _ = try r.array { r in
                let p = try r.int32(); let o = try r.int64(); _ = try r.nullableString(); _ = try r.int16()
                out[p] = o
            }
        }
        return out
    }

    /// OffsetCommit v2 as a "simple" commit (generation -1, no member).
    public func commitOffsets(group: String, topic: String, offsets: [(Int32, Int64)]) throws {
        var w = KafkaWriter(capacity: 64)
        w.string(group)
        w.int32(-1)
        w.string("")
        w.int64(-1)
        w.array([topic]) { w, t in
            w.string(t)
            w.array(offsets) { w, po in
                w.int32(po.0)
                w.int64(po.1)
                w.nullableString(nil)
            }
        }
        var r = KafkaReader(try request(apiKey: 8, version: 2, body: Self.strip(w)))
        let errors: [[Int16]] = try r.array { r in
            _ = try r.string()
            return try r.array { r in _ = try r.int32(); return try r.int16() }
        }
        if let bad = errors.flatMap({ $0 }).first(where: { $0 != 0 }) { throw ClientError("OffsetCommit: Kafka error \(bad)") }
    }

    /// CreateTopics v2; returns the broker's error message, nil on success.
    public func createTopic(_ name: String, partitions: Int32, configs: [String: String]) throws -> String? {
        var w = KafkaWriter(capacity: 128)
        w.array([name]) { w, n in
            w.string(n)
            w.int32(partitions)
            w.int16(1)
            w.array([Int]()) { _, _ in }
            w.array(configs.sorted { $0.key < $1.key }) { w, kv in
                w.string(kv.key)
                w.nullableString(kv.value)
            }
        }
        w.int32(30_000)
        w.bool(false)
        var r = KafkaReader(try request(apiKey: 19, version: 2, body: Self.strip(w)))
        _ = try r.int32()
        let results: [(Int16, String?)] = try r.array { r in
            _ = try r.string()
            return (try r.int16(), try r.nullableString())
        }
        guard let first = results.first else { throw ClientError("empty CreateTopics response") }
        return first.0 == 0 ? nil : (first.1 ?? "Kafka error \(first.0)")
    }

    /// DeleteTopics v1; returns the Kafka error code (0 on success).
    public func deleteTopic(_ name: String) throws -> Int16 {
        var w = KafkaWriter(capacity: 64)
        w.array([name]) { $0.string($1) }
        w.int32(30_000)
        var r = KafkaReader(try request(apiKey: 20, version: 1, body: Self.strip(w)))
        _ = try r.int32()
        let results: [Int16] = try r.array { r in _ = try r.string(); return try r.int16() }
        return results.first ?? -1
    }

    /// The writer reserves room for a server frame header; a client request body starts without it.
    static func strip(_ w: KafkaWriter) -> ByteBuffer {
        var b = w.buffer
        b.moveReaderIndex(forwardBy: KafkaWriter.frameHeaderBytes)
        return b
    }
}
