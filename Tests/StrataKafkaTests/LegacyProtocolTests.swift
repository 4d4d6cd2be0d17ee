import Foundation
import Testing
@testable import StrataBroker
@testable import StrataKafka
@testable import StrataLog

/// Produce v0-v2, Fetch v0-v3 and ListOffsets v0 over raw sockets. Every request and every
/// message (offset, message_size, CRC-32, magic, attributes, timestamp, key, value) is encoded
/// here by hand from the Kafka protocol guide's "Messages" / "Message sets" sections, with its
/// own bitwise CRC-32, and responses are decoded the same way: nothing goes through Strata's
/// encoders. (Compressed payloads use zlib/lz4/snappy via StrataLog's codec wrapper.)
@Suite(.serialized) struct LegacyProtocolTests {
    typealias Fixture = KafkaServerTests.Fixture
    static let topic = "legacy"

    // MARK: Encoding, from the protocol guide

    /// CRC-32 (IEEE), bit by bit: the reference the broker's table-driven one is checked against.
    static func crc32(_ bytes: some Collection<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
        }
        return ~c
    }

    static func be<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
    static func str(_ s: String) -> [UInt8] { be(Int16(s.utf8.count)) + Array(s.utf8) }
    static func bytes(_ b: [UInt8]?) -> [UInt8] { b.map { be(Int32($0.count)) + $0 } ?? be(Int32(-1)) }

    /// One message set entry: offset, message_size, crc, magic, attributes, [timestamp], key, value.
    static func entry(offset: Int64, magic: Int8, attributes: Int8 = 0, timestamp: Int64 = 0, key: String?, value: [UInt8]?) -> [UInt8] {
        var body: [UInt8] = [UInt8(bitPattern: magic), UInt8(bitPattern: attributes)]
        if magic == 1 { body += be(timestamp) }
        body += bytes(key.map { Array($0.utf8) }) + bytes(value)
        let message = be(crc32(body)) + body
        return be(offset) + be(Int32(message.count)) + message
    }

    static func entry(offset: Int64, magic: Int8, timestamp: Int64 = 0, key: String?, value: String?) -> [UInt8] {
        entry(offset: offset, magic: magic, timestamp: timestamp, key: key, value: value.map { Array($0.utf8) })
    }

    /// Produce v0-v2 body: acks, timeout, [topic, [partition, message_set]].
    static func produceBody(_ sets: [(partition: Int32, messageSet: [UInt8])], topic: String = topic, acks: Int16 = 1) -> [UInt8] {
        var b = be(acks) + be(Int32(5000)) + be(Int32(1)) + str(topic) + be(Int32(sets.count))
        for s in sets { b += be(s.partition) + bytes(s.messageSet) }
        return b
    }

    /// Fetch v0-v3 body: replica_id, max_wait_ms, min_bytes, [max_bytes v3], [topic, [partition, offset, max_bytes]].
    static func fetchBody(version: Int16, offset: Int64, partitionMaxBytes: Int32 = 1 << 20, maxBytes: Int32 = 1 << 20,
                          maxWaitMs: Int32 = 0, topic: String = topic) -> [UInt8] {
        var b = be(Int32(-1)) + be(maxWaitMs) + be(Int32(1))
        if version >= 3 { b += be(maxBytes) }
        return b + be(Int32(1)) + str(topic) + be(Int32(1)) + be(Int32(0)) + be(offset) + be(partitionMaxBytes)
    }

    // MARK: Decoding

    struct Reader {
        let b: [UInt8]
        var i: Int
        init(_ b: [UInt8], at i: Int = 8) { self.b = b; self.i = i }  // after size + correlation id
        var remaining: Int { b.count - i }
        mutating func int<T: FixedWidthInteger>(_: T.Type) throws -> T {
            let n = MemoryLayout<T>.size
            guard i + n <= b.count else { throw CocoaError(.coderReadCorrupt) }
            defer { i += n }
            return b[i..<(i + n)].reduce(T(0)) { $0 << 8 | T($1) }
        }
        mutating func raw(_ n: Int) throws -> [UInt8] {
            guard n >= 0, i + n <= b.count else { throw CocoaError(.coderReadCorrupt) }
            defer { i += n }
            return Array(b[i..<(i + n)])
        }
        mutating func string() throws -> String { String(decoding: try raw(Int(try int(Int16.self))), as: UTF8.self) }
        mutating func nullableBytes() throws -> [UInt8]? {
            let n = try int(Int32.self)
            return n < 0 ? nil : try raw(Int(n))
        }
    }

    struct Message: Equatable, CustomStringConvertible {
        var offset: Int64
        var magic: Int8
        var attributes: Int8
        var timestamp: Int64?
        var key: String?
        var value: String?
        var description: String { "@\(offset) m\(magic) a\(attributes) ts=\(timestamp.map(String.init) ?? "-") \(key ?? "null")=\(value ?? "null")" }
    }

    /// Parses a whole message set, checking every message's CRC-32 and size.
    static func parseMessageSet(_ set: [UInt8]) throws -> [Message] {
        var r = Reader(set, at: 0)
        var out: [Message] = []
        while r.remaining > 0 {
            let offset = try r.int(Int64.self)
            let size = Int(try r.int(Int32.self))
            let start = r.i
            let crc = try r.int(UInt32.self)
            #expect(crc == crc32(set[(start + 4)..<(start + size)]), "CRC-32 of message at offset \(offset)")
            let magic = Int8(bitPattern: try r.int(UInt8.self))
            let attributes = Int8(bitPattern: try r.int(UInt8.self))
            let ts: Int64? = magic == 1 ? try r.int(Int64.self) : nil
            let key = try r.nullableBytes().map { String(decoding: $0, as: UTF8.self) }
            let value = try r.nullableBytes().map { String(decoding: $0, as: UTF8.self) }
            #expect(r.i == start + size, "message_size matches the fields")
            out.append(Message(offset: offset, magic: magic, attributes: attributes, timestamp: ts, key: key, value: value))
        }
        return out
    }

    /// Produce response: [topic, [partition, error, base_offset, [log_append_time v2]]], [throttle v1+].
    static func parseProduce(_ reply: [UInt8], version: Int16) throws -> (error: Int16, baseOffset: Int64) {
        var r = Reader(reply)
        #expect(try r.int(Int32.self) == 1)
        #expect(try r.string() == topic)
        #expect(try r.int(Int32.self) == 1)
        #expect(try r.int(Int32.self) == 0)
        let error = try r.int(Int16.self)
        let base = try r.int(Int64.self)
        if version >= 2 { #expect(try r.int(Int64.self) == -1, "log_append_time: CreateTime topic") }
        if version >= 1 { #expect(try r.int(Int32.self) == 0, "throttle_time_ms") }
        #expect(r.remaining == 0, "nothing after the v\(version) layout")
        return (error, base)
    }

    /// Fetch response: [throttle v1+], [topic, [partition, error, high_watermark, message_set]].
    static func parseFetch(_ reply: [UInt8], version: Int16) throws -> (error: Int16, hw: Int64, messages: [Message]) {
        var r = Reader(reply)
        if version >= 1 { #expect(try r.int(Int32.self) == 0, "throttle_time_ms") }
        #expect(try r.int(Int32.self) == 1)
        _ = try r.string()
        #expect(try r.int(Int32.self) == 1)
        #expect(try r.int(Int32.self) == 0)
        let error = try r.int(Int16.self)
        let hw = try r.int(Int64.self)
        let set = try r.nullableBytes() ?? []
        #expect(r.remaining == 0, "nothing after the v\(version) layout")
        return (error, hw, try parseMessageSet(set))
    }

    static func produce(_ f: Fixture, version: Int16, _ set: [UInt8], topic: String = topic) throws -> (error: Int16, baseOffset: Int64) {
        let reply = try f.exchange(KafkaServerTests.frame(apiKey: 0, version: version, body: produceBody([(0, set)], topic: topic)))
        return try parseProduce(reply, version: version)
    }

    static func fetch(_ f: Fixture, version: Int16, offset: Int64, partitionMaxBytes: Int32 = 1 << 20, maxBytes: Int32 = 1 << 20) throws
        -> (error: Int16, hw: Int64, messages: [Message])
    {
        let body = fetchBody(version: version, offset: offset, partitionMaxBytes: partitionMaxBytes, maxBytes: maxBytes)
        return try parseFetch(try f.exchange(KafkaServerTests.frame(apiKey: 1, version: version, body: body)), version: version)
    }

    static func fixture(configs: [String: String] = [:]) throws -> Fixture {
        let f = try Fixture()
        try f.broker.createTopic(topic, partitions: 1, configs: configs)
        return f
    }

    static func endOffset(_ f: Fixture) throws -> Int64 { try f.broker.log(topic: topic, partition: 0).logEndOffset }

    static func gzip(_ b: [UInt8]) -> [UInt8] { Compression.compress(.gzip, b)! }

    // MARK: Tests

    @Test func crc32MatchesTheReference() {
        let check = Array("123456789".utf8)
        #expect(Self.crc32(check) == 0xCBF4_3926)
        #expect(check.withUnsafeBytes { CRC32.checksum($0) } == 0xCBF4_3926)
        var rng = SystemRandomNumberGenerator()
        for n in [0, 1, 7, 8, 9, 63, 1000] {
            let data = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect(data.withUnsafeBytes { CRC32.checksum($0) } == Self.crc32(data))
        }
    }

    /// Sarama before 0.11-era versions: Produce v2 with magic 1 (one plain set, one gzip wrapper
    /// whose inner messages carry relative offsets), read back with Fetch v2 and v3.
    @Test func saramaStyleProduceV2ThenFetchV2AndV3() throws {
        let f = try Self.fixture()
        defer { try? f.close() }
        let t0: Int64 = 1_700_000_000_000
        let plain = Self.entry(offset: 0, magic: 1, timestamp: t0, key: "k0", value: "v0")
            + Self.entry(offset: 1, magic: 1, timestamp: t0 + 5, key: nil, value: "v1")
        var r = try Self.produce(f, version: 2, plain)
        #expect(r.error == 0 && r.baseOffset == 0)

        let inner = Self.entry(offset: 0, magic: 1, timestamp: t0 + 10, key: "k2", value: "v2")
            + Self.entry(offset: 1, magic: 1, timestamp: t0 + 15, key: "k3", value: "v3")
        let wrapper = Self.entry(offset: 1, magic: 1, attributes: 1, timestamp: t0 + 15, key: nil, value: Self.gzip(inner))
        r = try Self.produce(f, version: 2, wrapper)
        #expect(r.error == 0 && r.baseOffset == 2)
        #expect(try Self.endOffset(f) == 4)

        // Stored as two RecordBatch v2; the gzip one stays gzip (compression.type=producer).
        let read = try f.broker.log(topic: Self.topic, partition: 0).read(from: 0, maxBytes: 1 << 20)
        var codecs: [CompressionCodec?] = []
        try withExtendedLifetime(read.slice!) {
            var p = 0
            let all = read.slice!.bytes
            while p < all.count {
                let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: all[p...]))!
                let batch = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: all[p..<(p + size)]))
                try batch.validate(strictRecords: true)
                codecs.append(batch.compression)
                p += size
            }
        }
        #expect(codecs == [CompressionCodec.none, .gzip])

        let expected = [
            Message(offset: 0, magic: 1, attributes: 0, timestamp: t0, key: "k0", value: "v0"),
            Message(offset: 1, magic: 1, attributes: 0, timestamp: t0 + 5, key: nil, value: "v1"),
            Message(offset: 2, magic: 1, attributes: 0, timestamp: t0 + 10, key: "k2", value: "v2"),
            Message(offset: 3, magic: 1, attributes: 0, timestamp: t0 + 15, key: "k3", value: "v3"),
        ]
        let v2 = try Self.fetch(f, version: 2, offset: 0)
        #expect(v2.error == 0 && v2.hw == 4)
        #expect(v2.messages == expected)

        // v3 from the middle of the first batch: starts exactly at the fetch offset.
        let v3 = try Self.fetch(f, version: 3, offset: 1)
        #expect(v3.error == 0 && v3.hw == 4)
        #expect(v3.messages == Array(expected[1...]))

        // A partition limit smaller than one message still returns one whole message; the
        // consumer moves on from its offset + 1.
        var position: Int64 = 0
        var seen: [Message] = []
        while position < 4 {
            let one = try Self.fetch(f, version: 3, offset: position, partitionMaxBytes: 1)
            #expect(one.messages.count == 1)
            guard let m = one.messages.first else { break }
            seen.append(m)
            position = m.offset + 1
        }
        #expect(seen == expected)
        // A limit of two magic-1 messages' size gives two.
        let two = try Self.fetch(f, version: 3, offset: 0, partitionMaxBytes: Int32(2 * (12 + 22 + 4)))
        #expect(two.messages == Array(expected[0..<2]))

        // At the end: nothing, no error; past the end: OFFSET_OUT_OF_RANGE.
        let end = try Self.fetch(f, version: 2, offset: 4)
        #expect(end.error == 0 && end.messages.isEmpty)
        #expect(try Self.fetch(f, version: 2, offset: 5).error == 1)
    }

    /// kafka-go 0.2: Produce v0 and Fetch v0 with magic 0 (no timestamps).
    @Test func kafkaGoStyleProduceV0FetchV0() throws {
        let f = try Self.fixture()
        defer { try? f.close() }
        let set = Self.entry(offset: 0, magic: 0, key: "a", value: "1")
            + Self.entry(offset: 0, magic: 0, key: nil, value: "2")
            + Self.entry(offset: 0, magic: 0, key: "c", value: nil)
        let r = try Self.produce(f, version: 0, set)
        #expect(r.error == 0 && r.baseOffset == 0)
        let r1 = try Self.produce(f, version: 1, Self.entry(offset: 0, magic: 0, key: "d", value: "4"))
        #expect(r1.error == 0 && r1.baseOffset == 3)

        let v0 = try Self.fetch(f, version: 0, offset: 0)
        #expect(v0.error == 0 && v0.hw == 4)
        #expect(v0.messages == [
            Message(offset: 0, magic: 0, attributes: 0, timestamp: nil, key: "a", value: "1"),
            Message(offset: 1, magic: 0, attributes: 0, timestamp: nil, key: nil, value: "2"),
            Message(offset: 2, magic: 0, attributes: 0, timestamp: nil, key: "c", value: nil),
            Message(offset: 3, magic: 0, attributes: 0, timestamp: nil, key: "d", value: "4"),
        ])
        let v1 = try Self.fetch(f, version: 1, offset: 2)
        #expect(v1.messages.map(\.offset) == [2, 3] && v1.messages.allSatisfy { $0.magic == 0 })

        // Kafka 3.x up-converts magic 0 to records with NO_TIMESTAMP (-1) on a CreateTime topic.
        let v2 = try Self.fetch(f, version: 2, offset: 0)
        #expect(v2.messages.map(\.timestamp) == [-1, -1, -1, -1])
        #expect(v2.messages.allSatisfy { $0.magic == 1 })
    }

    /// LogAppendTime topic: magic 0 messages get the broker's time; magic 1 fetches carry it with
    /// attribute bit 3.
    @Test func logAppendTimeTopicStampsAndFlagsMessages() throws {
        let f = try Self.fixture(configs: ["message.timestamp.type": "LogAppendTime"])
        defer { try? f.close() }
        let before = Int64(Date().timeIntervalSince1970 * 1000)
        #expect(try Self.produce(f, version: 0, Self.entry(offset: 0, magic: 0, key: "a", value: "1")).error == 0)
        let after = Int64(Date().timeIntervalSince1970 * 1000)
        let v2 = try Self.fetch(f, version: 2, offset: 0)
        #expect(v2.messages.count == 1)
        if let m = v2.messages.first {
            #expect(m.attributes == 0x08)
            #expect(m.timestamp! >= before && m.timestamp! <= after)
        }
        #expect(try Self.fetch(f, version: 0, offset: 0).messages.first?.attributes == 0, "magic 0 has no timestamp type")
    }

    @Test func listOffsetsV0() throws {
        let f = try Self.fixture()
        defer { try? f.close() }
        let set = Self.entry(offset: 0, magic: 1, timestamp: 1000, key: "a", value: "1")
            + Self.entry(offset: 1, magic: 1, timestamp: 2000, key: "b", value: "2")
            + Self.entry(offset: 2, magic: 1, timestamp: 3000, key: "c", value: "3")
        #expect(try Self.produce(f, version: 2, set).error == 0)

        func list(_ timestamp: Int64, max: Int32 = 1, topic: String = Self.topic) throws -> (Int16, [Int64]) {
            let body = Self.be(Int32(-1)) + Self.be(Int32(1)) + Self.str(topic) + Self.be(Int32(1))
                + Self.be(Int32(0)) + Self.be(timestamp) + Self.be(max)
            var r = Reader(try f.exchange(KafkaServerTests.frame(apiKey: 2, version: 0, body: body)))
            #expect(try r.int(Int32.self) == 1)
            #expect(try r.string() == topic)
            #expect(try r.int(Int32.self) == 1)
            #expect(try r.int(Int32.self) == 0)
            let error = try r.int(Int16.self)
            let n = try r.int(Int32.self)
            let offsets = try (0..<n).map { _ in try r.int(Int64.self) }
            #expect(r.remaining == 0)
            return (error, offsets)
        }
        #expect(try list(-1) == (0, [3]))
        #expect(try list(-2) == (0, [0]))
        #expect(try list(2000) == (0, [1]))
        #expect(try list(2500) == (0, [2]))
        #expect(try list(999) == (0, [0]))
        #expect(try list(9999) == (0, [3]), "no record that recent: the log end")
        #expect(try list(-1, max: 0) == (0, []))
        #expect(try list(-1, topic: "nope") == (3, []))
        _ = try f.broker.deleteRecords(topic: Self.topic, partition: 0, before: 2)
        #expect(try list(-2) == (0, [2]))
    }

    @Test func corruptCRCIsRefusedAndNothingAppended() throws {
        let f = try Self.fixture()
        defer { try? f.close() }
        var bad = Self.entry(offset: 0, magic: 1, timestamp: 1, key: "k", value: "value")
        bad[bad.count - 1] ^= 0x01
        let good = Self.entry(offset: 0, magic: 1, timestamp: 1, key: "k", value: "value")
        #expect(try Self.produce(f, version: 2, good + bad).error == 2, "CORRUPT_MESSAGE")
        #expect(try Self.produce(f, version: 0, bad).error == 2)

        // Inside a gzip wrapper (whose own CRC is right).
        var inner = Self.entry(offset: 0, magic: 1, timestamp: 1, key: "k", value: "inner")
        inner[inner.count - 2] ^= 0x40
        let wrapper = Self.entry(offset: 0, magic: 1, attributes: 1, timestamp: 1, key: nil, value: Self.gzip(inner))
        #expect(try Self.produce(f, version: 2, wrapper).error == 2)
        // A corrupt gzip payload.
        var junk = Self.gzip(Self.entry(offset: 0, magic: 1, timestamp: 1, key: "k", value: "x"))
        junk[junk.count / 2] ^= 0xFF
        #expect(try Self.produce(f, version: 2, Self.entry(offset: 0, magic: 1, attributes: 1, timestamp: 1, key: nil, value: junk)).error == 2)
        #expect(try Self.endOffset(f) == 0, "nothing appended")
        #expect(try Self.fetch(f, version: 2, offset: 0).messages.isEmpty)
    }

    /// Kafka's LogValidator rules for magic 0/1 sets.
    @Test func validatorRules() throws {
        let f = try Self.fixture()
        defer { try? f.close() }
        let m0 = Self.entry(offset: 0, magic: 0, key: "a", value: "1")
        let m1 = Self.entry(offset: 0, magic: 1, timestamp: 5, key: "b", value: "2")
        #expect(try Self.produce(f, version: 2, m0 + m1).error == 87, "mixed magics: INVALID_RECORD")
        let logAppend = Self.entry(offset: 0, magic: 1, attributes: 0x08, timestamp: 5, key: "b", value: Array("2".utf8))
        #expect(try Self.produce(f, version: 2, logAppend).error == 32, "producer LogAppendTime: INVALID_TIMESTAMP")
        let wrapper = Self.entry(offset: 0, magic: 1, attributes: 1, timestamp: 5, key: nil, value: Self.gzip(m1))
        #expect(try Self.produce(f, version: 2, wrapper + m1).error == 87, "a wrapper must be alone")
        let nested = Self.entry(offset: 0, magic: 1, attributes: 1, timestamp: 5, key: nil, value: Self.gzip(wrapper))
        #expect(try Self.produce(f, version: 2, nested).error == 87, "nested compression")
        let zstd = Self.entry(offset: 0, magic: 1, attributes: 4, timestamp: 5, key: nil, value: Compression.compress(.zstd, m1)!)
        #expect(try Self.produce(f, version: 2, zstd).error == 76, "zstd needs magic 2")
        let empty = Self.entry(offset: 0, magic: 1, attributes: 1, timestamp: 5, key: nil, value: Self.gzip([]))
        #expect(try Self.produce(f, version: 2, empty).error == 87, "a wrapper with no messages")
        #expect(try Self.endOffset(f) == 0)

        // A RecordBatch v2 in Produce v2 is accepted as Kafka accepts it.
        let batch = RecordBatchBuilder.build([ProducerRecord(key: Array("k".utf8), value: Array("v".utf8), timestamp: 7)])
        #expect(try Self.produce(f, version: 2, batch).error == 0)
        #expect(try Self.fetch(f, version: 2, offset: 0).messages == [Message(offset: 0, magic: 1, attributes: 0, timestamp: 7, key: "k", value: "v")])
    }

    /// lz4 (Kafka's magic-0 framing with the wrong header checksum, which Kafka ignored for
    /// magic 0 but not for magic 1) and snappy wrappers.
    @Test func lz4AndSnappyWrappers() throws {
        let f = try Self.fixture()
        defer { try? f.close() }
        let inner0 = Self.entry(offset: 0, magic: 0, key: "x", value: "lz4-0") + Self.entry(offset: 1, magic: 0, key: "y", value: "lz4-1")
        var frame = Compression.compress(.lz4, inner0)!
        // The header checksum follows FLG, BD (and the content size when FLG bit 3 is set).
        let hc = 6 + (frame[4] & 0x08 != 0 ? 8 : 0)
        frame[hc] ^= 0xA5
        #expect(try Self.produce(f, version: 0, Self.entry(offset: 1, magic: 0, attributes: 3, key: nil, value: frame)).error == 0)
        let inner1 = Self.entry(offset: 0, magic: 1, timestamp: 9, key: "z", value: "lz4-2")
        var frame1 = Compression.compress(.lz4, inner1)!
        frame1[hc] ^= 0xA5
        #expect(try Self.produce(f, version: 2, Self.entry(offset: 0, magic: 1, attributes: 3, timestamp: 9, key: nil, value: frame1)).error == 2,
                "magic 1 frames must carry the right checksum")
        let snappy = Self.entry(offset: 0, magic: 1, attributes: 2, timestamp: 9, key: nil, value: Compression.compress(.snappy, inner1)!)
        #expect(try Self.produce(f, version: 2, snappy).error == 0)
        let v0 = try Self.fetch(f, version: 0, offset: 0)
        #expect(v0.messages.map(\.value) == ["lz4-0", "lz4-1", "lz4-2"])
        #expect(v0.messages.map(\.offset) == [0, 1, 2])
    }

    /// Kafka's LogValidator exempts NO_TIMESTAMP (an up-converted magic 0 message) from
    /// message.timestamp.before.max.ms; a real but old CreateTime is refused.
    @Test func noTimestampIsExemptFromTimestampBounds() throws {
        let f = try Self.fixture(configs: ["message.timestamp.before.max.ms": "60000"])
        defer { try? f.close() }
        #expect(try Self.produce(f, version: 0, Self.entry(offset: 0, magic: 0, key: "a", value: "1")).error == 0)
        #expect(try Self.produce(f, version: 2, Self.entry(offset: 0, magic: 1, timestamp: 1, key: "a", value: "1")).error == 32)
        #expect(try Self.endOffset(f) == 1)
    }

    @Test func downConversionCanBeDisabled() throws {
        let f = try Self.fixture(configs: ["message.downconversion.enable": "false"])
        defer { try? f.close() }
        #expect(try Self.produce(f, version: 2, Self.entry(offset: 0, magic: 1, timestamp: 1, key: "a", value: "b")).error == 0)
        #expect(try Self.fetch(f, version: 3, offset: 0).error == 35, "UNSUPPORTED_VERSION, as Kafka 3.x")
    }

    /// Truncated, bit-flipped and length-mangled message sets: refused with an error code (or the
    /// connection closed for a frame that no longer parses), never a crash; the log stays valid.
    @Test func mutatedMessageSetsNeverCrash() throws {
        var rng = SystemRandomNumberGenerator()
        let inner = Self.entry(offset: 0, magic: 1, timestamp: 3, key: "ik", value: "iv")
            + Self.entry(offset: 1, magic: 1, timestamp: 4, key: nil, value: "iv2")
        let seeds: [[UInt8]] = [
            Self.entry(offset: 0, magic: 1, timestamp: 1, key: "k", value: "v") + Self.entry(offset: 1, magic: 1, timestamp: 2, key: nil, value: "w"),
            Self.entry(offset: 0, magic: 0, key: "k", value: "v") + Self.entry(offset: 0, magic: 0, key: "k2", value: nil),
            Self.entry(offset: 1, magic: 1, attributes: 1, timestamp: 4, key: nil, value: Self.gzip(inner)),
            Self.entry(offset: 1, magic: 1, attributes: 3, timestamp: 4, key: nil, value: Compression.compress(.lz4, inner)!),
        ]
        func mutate(_ s: [UInt8]) -> [UInt8] {
            var m = s
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: m = Array(m.prefix(Int.random(in: 0..<m.count, using: &rng)))
            case 1:
                for _ in 0..<Int.random(in: 1...4, using: &rng) { m[Int.random(in: 0..<m.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng) }
            case 2:  // a length field (message_size, key or value length) set to something hostile
                let at = [8, 18, 26, 30].randomElement(using: &rng)!
                let v: Int32 = [-2, -1, 0, 1, 13, 14, 0x7FFF_FFFF, Int32.min, Int32(m.count)].randomElement(using: &rng)!
                if at + 4 <= m.count { withUnsafeBytes(of: v.bigEndian) { for i in 0..<4 { m[at + i] = $0[i] } } }
            default: m += (0..<Int.random(in: 1...20, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
            return m
        }
        // In process: thousands of mutations straight into the converter (STRATA_LEGACY_FUZZ=N for more).
        let iterations = ProcessInfo.processInfo.environment["STRATA_LEGACY_FUZZ"].flatMap { Int($0) } ?? 4000
        for _ in 0..<iterations {
            let m = mutate(seeds.randomElement(using: &rng)!)
            _ = m.withUnsafeBytes { p in Result { () throws(LegacyMessageSetError) in try LegacyMessageSet.upConvert(p) } }
        }
        // Over the wire: a few dozen mutated Produce v0-v2 requests (also with a message_set
        // length that no longer matches the frame), then the broker still serves.
        let f = try Self.fixture()
        defer { try? f.close() }
        var accepted = 0
        for i in 0..<48 {
            let set = mutate(seeds[i % seeds.count])
            var frame = KafkaServerTests.frame(apiKey: 0, version: Int16(i % 3), correlation: Int32(i), body: Self.produceBody([(0, set)]))
            if i % 8 == 7 { frame[frame.count - set.count - 2] ^= 0x10 }  // message_set length
            let reply = try f.exchange(frame)
            if reply.count >= 8 + 4 + 2 + Self.topic.utf8.count + 4 + 4 + 2 {
                var r = Reader(reply)
                _ = try r.int(Int32.self); _ = try r.string(); _ = try r.int(Int32.self); _ = try r.int(Int32.self)
                if try r.int(Int16.self) == 0 { accepted += 1 }
            }
        }
        let log = try f.broker.log(topic: Self.topic, partition: 0)
        #expect(log.verify().isEmpty, "every stored batch is valid")
        // Whatever was accepted reads back as messages with consecutive offsets.
        let all = try Self.fetch(f, version: 2, offset: 0)
        #expect(all.error == 0)
        #expect(all.messages.map(\.offset) == Array(0..<log.logEndOffset))
        #expect(try Self.produce(f, version: 2, seeds[0]).error == 0, "still serving")
        _ = accepted
    }
}
