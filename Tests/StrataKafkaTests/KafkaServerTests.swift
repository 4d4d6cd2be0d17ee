import Foundation
import Testing
@testable import StrataBroker
@testable import StrataKafka
import StrataLog

/// Raw-socket tests of the Kafka listener: framing, the ApiVersions handshake, and hostile input.
/// (Real clients are exercised by tools/compat/test_clients.py.)
@Suite(.serialized) struct KafkaServerTests {
    final class Fixture: @unchecked Sendable {
        let dir: String
        let broker: Broker
        let server: KafkaServer

        init() throws {
            var t = Array((NSTemporaryDirectory() + "/strata-kafka-XXXXXX").utf8CString)
            dir = String(cString: t.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
            broker = try Broker.open(dataDirectory: dir)
            server = KafkaServer(broker: broker, eventLoopThreads: 1)
            var limits = ConnectionLimits()
            limits.maxRequestBytes = 1 << 20
            try server.start(host: "127.0.0.1", port: 0, limits: limits)
        }

        func close() throws {
            try server.shutdown()
            try broker.close()
            try? FileManager.default.removeItem(atPath: dir)
        }

        /// A connection to the server; reads time out after 15 s of silence (generous: the suite
        /// runs beside heavy tests on 2 cores; a complete response returns at once).
        func connect() throws -> Int32 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = UInt16(server.port).bigEndian
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard rc == 0 else {
                Glibc.close(fd)
                throw CocoaError(.fileReadUnknown)
            }
            var timeout = timeval(tv_sec: 15, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            return fd
        }

        /// Sends `bytes` on a new connection; returns what comes back before EOF or 15 s of silence.
        func exchange(_ bytes: [UInt8]) throws -> [UInt8] {
            let fd = try connect()
            defer { Glibc.close(fd) }
            _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            var out: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break }
                out += chunk[0..<n]
                if out.count >= 4 {
                    let size = Int(Int32(bigEndian: out.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }))
                    if out.count >= 4 + size { break }
                }
            }
            return out
        }
    }

    static func frame(apiKey: Int16, version: Int16, correlation: Int32 = 42, body: [UInt8] = []) -> [UInt8] {
        var msg: [UInt8] = []
        func be<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.bigEndian) { msg.append(contentsOf: $0) } }
        be(apiKey); be(version); be(correlation); be(Int16(1)); msg.append(0x74)
        msg += body
        var out: [UInt8] = []
        withUnsafeBytes(of: Int32(msg.count).bigEndian) { out.append(contentsOf: $0) }
        return out + msg
    }

    static func int16(_ b: [UInt8], at i: Int) -> Int16 { Int16(b[i]) << 8 | Int16(b[i + 1]) }

    @Test func apiVersionsAdvertisesMinimumZeroForEveryApi() throws {
        let f = try Fixture()
        defer { try? f.close() }
        let reply = try f.exchange(Self.frame(apiKey: 18, version: 2))
        #expect(reply.count > 14)
        #expect(Self.int16(reply, at: 8) == 0, "no error")
        let count = Int(Int32(bigEndian: reply[10..<14].withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }))
        #expect(count == ApiKey.allCases.count)
        for i in 0..<count {
            let base = 14 + i * 6
            #expect(Self.int16(reply, at: base + 2) == 0, "min version 0 (librdkafka < 2.11.1 feature detection)")
        }
    }

    @Test func tooNewApiVersionsGetsTheV0ErrorBody() throws {
        let f = try Fixture()
        defer { try? f.close() }
        let reply = try f.exchange(Self.frame(apiKey: 18, version: 4, body: [0, 0, 0]))
        #expect(reply.count > 10)
        #expect(Self.int16(reply, at: 8) == 35, "UNSUPPORTED_VERSION, so the client retries with a lower version")
    }

    @Test func hostileFramesCloseOnlyTheirConnection() throws {
        let f = try Fixture()
        defer { try? f.close() }
        var rng = SystemRandomNumberGenerator()
        let cases: [[UInt8]] = [
            (0..<512).map { _ in UInt8.random(in: 0...255, using: &rng) },
            [0x7F, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 0, count: 64),  // 2 GiB declared
            [0x00, 0x20, 0x00, 0x00],                                      // over the 1 MiB limit
            [0xFF, 0xFF, 0xFF, 0xFB],                                      // negative size
            Self.frame(apiKey: 999, version: 0),                           // unknown API
            Self.frame(apiKey: 3, version: 77),                            // unknown version
            Self.frame(apiKey: 0, version: 8, body: [0xFF]),               // truncated produce
            Self.frame(apiKey: 3, version: 4, body: [0x40, 0, 0, 0]),      // array of a billion topics
        ]
        for bytes in cases {
            let reply = try f.exchange(bytes)
            #expect(reply.isEmpty, "the connection is closed without a reply")
        }
        // Still serving.
        let reply = try f.exchange(Self.frame(apiKey: 18, version: 0))
        #expect(reply.count > 10 && Self.int16(reply, at: 8) == 0)
    }

    @Test func metadataNamesInvalidTopicsWithoutCreatingThem() throws {
        let f = try Fixture()
        defer { try? f.close() }
        var body: [UInt8] = [0, 0, 0, 1, 0, 4]
        body += Array("../x".utf8)
        body.append(1)  // allow_auto_topic_creation
        let reply = try f.exchange(Self.frame(apiKey: 3, version: 4, body: body))
        #expect(reply.count > 20)
        let text = reply.withUnsafeBytes { Array($0) }
        let range = text.firstRange(of: Array("../x".utf8))
        #expect(range != nil)
        if let range { #expect(Self.int16(text, at: range.lowerBound - 4) == 17, "INVALID_TOPIC_EXCEPTION") }
        #expect(f.broker.topicNames().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: f.dir + "/x"))
    }
    /// Pipelined Produce requests on one connection, small ones (appended on the event loop) mixed
    /// with large ones (validated on the pool while later requests arrive), acks=1 and acks=all to
    /// a `sync` topic, plain and idempotent: every request is appended in the order it was sent
    /// (one record per request: the i-th request gets offset i), and no idempotent batch is
    /// refused as out of order.
    @Test(arguments: [false, true]) func pipelinedProducesAppendInRequestOrder(idempotent: Bool) throws {
        let f = try Fixture()
        defer { try? f.close() }
        try f.broker.createTopic("ordered", partitions: 1, configs: ["flush.mode": "sync"])
        let count = 60
        var frames: [UInt8] = []
        for i in 0..<count {
            let size = i % 3 == 0 ? 300_000 : 100
            var value = Array("\(i):".utf8)
            value += [UInt8](repeating: UInt8(ascii: "x"), count: size)
            let batch = RecordBatchBuilder.build([ProducerRecord(value: value, timestamp: 1_700_000_000_000 + Int64(i))],
                                                 producerId: idempotent ? 7 : -1, producerEpoch: idempotent ? 0 : -1,
                                                 baseSequence: idempotent ? Int32(i) : -1)
            var body: [UInt8] = []
            func be<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.bigEndian) { body.append(contentsOf: $0) } }
            be(Int16(-1)); be(Int16(i % 2 == 0 ? -1 : 1)); be(Int32(30_000))
            be(Int32(1)); be(Int16(7)); body += Array("ordered".utf8)
            be(Int32(1)); be(Int32(0)); be(Int32(batch.count)); body += batch
            frames += Self.frame(apiKey: 0, version: 8, correlation: Int32(i), body: body)
        }
        let fd = try f.connect()
        defer { Glibc.close(fd) }
        let all = frames
        let sender = Thread {
            var sent = 0
            while sent < all.count {
                let n = all.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return }
                sent += n
            }
        }
        sender.start()
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        for i in 0..<count {
            var frame: [UInt8] = []
            while frame.isEmpty {
                if pending.count >= 4 {
                    let size = Int(Int32(bigEndian: pending.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }))
                    if pending.count >= 4 + size {
                        frame = Array(pending[4..<(4 + size)])
                        pending.removeFirst(4 + size)
                        break
                    }
                }
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                try #require(n > 0, "response \(i) of \(count) arrived")
                pending += chunk[0..<n]
            }
            // correlation | topics[1] name(7) | partitions[1] index error baseOffset ...
            func int<T: FixedWidthInteger>(_: T.Type, at o: Int) -> T { frame.withUnsafeBytes { T(bigEndian: $0.loadUnaligned(fromByteOffset: o, as: T.self)) } }
            #expect(int(Int32.self, at: 0) == Int32(i), "responses come back in request order")
            let partitionAt = 4 + 4 + 2 + 7 + 4
            #expect(int(Int16.self, at: partitionAt + 4) == 0, "request \(i) appended without error")
            #expect(int(Int64.self, at: partitionAt + 6) == Int64(i), "request \(i) got offset \(i)")
        }
        let log = try f.broker.log(topic: "ordered", partition: 0)
        #expect(log.logEndOffset == Int64(count))
        var offset: Int64 = 0
        while offset < Int64(count) {
            let read = try log.read(from: offset, maxBytes: 1 << 20)
            var progressed = false
            try read.slice?.forEachBatch { batch in
                try batch.forEachRecord { record in
                    let value = record.value.map { String(decoding: $0.prefix(8), as: UTF8.self) } ?? ""
                    #expect(record.offset == offset)
                    #expect(value.hasPrefix("\(offset):"), "offset \(offset) holds request \(offset)'s record")
                    offset += 1
                    progressed = true
                }
            }
            try #require(progressed)
        }
    }
}

