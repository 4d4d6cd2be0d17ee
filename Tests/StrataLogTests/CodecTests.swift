import Testing
@testable import StrataLog

@Suite struct CRC32CTests {
    @Test func standardVectors() {
        let digits = Array("123456789".utf8)
        digits.withUnsafeBytes { p in
            #expect(CRC32C.software(p) == 0xE306_9283)
            if CRC32C.hardwareAvailable { #expect(CRC32C.hardware(p) == 0xE306_9283) }
            #expect(CRC32C.checksum(p) == 0xE306_9283)
        }
        let zeros = [UInt8](repeating: 0, count: 32)
        zeros.withUnsafeBytes { #expect(CRC32C.software($0) == 0x8A91_36AA) }
        let ones = [UInt8](repeating: 0xFF, count: 32)
        ones.withUnsafeBytes { #expect(CRC32C.software($0) == 0x62A8_AB43) }
        [UInt8]().withUnsafeBytes { #expect(CRC32C.software($0) == 0) }
    }

    @Test func hardwareMatchesSoftwareAtEveryAlignmentAndLength() throws {
        try #require(CRC32C.hardwareAvailable, "no SSE4.2 on this CPU")
        var rng = SeededRandom(seed: 7)
        let buffer = (0..<4099).map { _ in UInt8.random(in: 0...255, using: &rng) }
        buffer.withUnsafeBytes { all in
            for start in 0..<9 {
                for length in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4090 - start] {
                    let p = UnsafeRawBufferPointer(rebasing: all[start..<start + length])
                    #expect(CRC32C.hardware(p) == CRC32C.software(p), "start \(start) length \(length)")
                }
            }
        }
    }

    /// Buffers of several stripes (three lanes of 4 KiB, crc'd side by side and combined) and
    /// tails of every size, from several starting CRCs.
    @Test func interleavedLanesMatchSoftware() throws {
        try #require(CRC32C.hardwareAvailable, "no SSE4.2 on this CPU")
        var rng = SeededRandom(seed: 11)
        let buffer = (0..<(6 * 12_288)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        buffer.withUnsafeBytes { all in
            for start in [0, 1, 3, 8] {
                for length in [12_287, 12_288, 12_289, 12_288 + 4_096, 24_575, 24_576, 2 * 12_288 + 13, 5 * 12_288, 5 * 12_288 + 4_095] {
                    let p = UnsafeRawBufferPointer(rebasing: all[start..<start + length])
                    for crc: UInt32 in [0, 0xFFFF_FFFF, 0x1234_5678] {
                        #expect(CRC32C.hardware(p, continuing: crc) == CRC32C.software(p, continuing: crc), "start \(start) length \(length) crc \(crc)")
                    }
                }
            }
        }
        let zeros = [UInt8](repeating: 0, count: 3 * 12_288)
        zeros.withUnsafeBytes { #expect(CRC32C.hardware($0) == CRC32C.software($0)) }
    }

    @Test func chainedCallsEqualOneCall() {
        let bytes = Array("the quick brown fox jumps over the lazy dog".utf8)
        bytes.withUnsafeBytes { p in
            let whole = CRC32C.checksum(p)
            for cut in 0...p.count {
                let first = CRC32C.software(UnsafeRawBufferPointer(rebasing: p[..<cut]))
                #expect(CRC32C.software(UnsafeRawBufferPointer(rebasing: p[cut...]), continuing: first) == whole)
                #expect(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[cut...]), continuing: first) == whole)
            }
        }
    }
}

@Suite struct VarintTests {
    @Test(arguments: [Int64(0), 1, -1, 63, -64, 64, 300, -300, Int64(Int32.max), Int64(Int32.min), Int64.max, Int64.min])
    func roundTrip(_ v: Int64) throws {
        var out: [UInt8] = []
        Varint.append(v, to: &out)
        #expect(out.count == Varint.encodedLength(v))
        let decoded = try out.withUnsafeBytes { p throws -> (Int64, Int) in
            var r = ByteReader(p)
            return (try r.readVarlong(), r.remaining)
        }
        #expect(decoded.0 == v)
        #expect(decoded.1 == 0)
    }

    @Test func knownEncodings() {
        var out: [UInt8] = []
        Varint.append(-1, to: &out)   // zig-zag 1
        Varint.append(1, to: &out)    // zig-zag 2
        Varint.append(150, to: &out)  // zig-zag 300 = 0xAC 0x02
        #expect(out == [0x01, 0x02, 0xAC, 0x02])
    }

    @Test func truncatedAndOverlongVarintsThrow() {
        [UInt8]([0x80, 0x80]).withUnsafeBytes { p in
            var r = ByteReader(p)
            #expect(throws: RecordBatchError.self) { try r.readVarlong() }
        }
        [UInt8](repeating: 0xFF, count: 11).withUnsafeBytes { p in
            var r = ByteReader(p)
            #expect(throws: RecordBatchError.self) { try r.readVarlong() }
        }
    }
}

@Suite struct RecordBatchTests {
    let records = [
        ProducerRecord(key: Array("user-1".utf8), value: Array(#"{"event_type":"user_login"}"#.utf8),
                       headers: [.init(key: "trace", value: [9, 8]), .init(key: "empty", value: nil)], timestamp: 1_700_000_000_123),
        ProducerRecord(key: nil, value: nil, timestamp: 1_700_000_000_100),
        ProducerRecord(key: [], value: [], timestamp: 1_700_000_000_999),
    ]

    @Test func buildThenParseRoundTrips() throws {
        let bytes = RecordBatchBuilder.build(records, baseOffset: 42)
        try bytes.withUnsafeBytes { p in
            let batch = RecordBatch(unchecked: p)
            try batch.validate(strictRecords: true)
            #expect(batch.baseOffset == 42)
            #expect(batch.magic == 2)
            #expect(batch.recordCount == 3)
            #expect(batch.lastOffsetDelta == 2)
            #expect(batch.lastOffset == 44)
            #expect(batch.baseTimestamp == 1_700_000_000_123)
            #expect(batch.maxTimestamp == 1_700_000_000_999)
            #expect(batch.producerId == -1)
            #expect(batch.sizeInBytes == bytes.count)
            var decoded: [ProducerRecord] = []
            var offsets: [Int64] = []
            try batch.forEachRecord { r in
                offsets.append(r.offset)
                decoded.append(ProducerRecord(
                    key: r.key.map(Array.init), value: r.value.map(Array.init),
                    headers: r.headers.map { .init(key: String(decoding: $0.key, as: UTF8.self), value: $0.value.map(Array.init)) },
                    timestamp: r.timestamp))
            }
            #expect(offsets == [42, 43, 44])
            #expect(decoded == records)
        }
    }

    /// One record, key "k", value "v", CreateTime 0x18B_CFE5_6800, with the bytes written out by
    /// hand from the protocol guide's RecordBatch v2 layout, so the builder is checked against the
    /// format rather than against its own parser.
    @Test func builderMatchesHandEncodedBatch() throws {
        var expected: [UInt8] = []
        func be<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.bigEndian) { expected.append(contentsOf: $0) } }
        let record: [UInt8] = [0x00, 0x00, 0x00, 0x02, 0x6B, 0x02, 0x76, 0x00]  // attrs, tsΔ, offΔ, keylen 1, 'k', vallen 1, 'v', 0 headers
        be(Int64(0)); be(Int32(49 + 1 + record.count)); be(Int32(-1)); expected.append(2); be(UInt32(0))
        be(Int16(0)); be(Int32(0)); be(Int64(0x18B_CFE5_6800)); be(Int64(0x18B_CFE5_6800)); be(Int64(-1)); be(Int16(-1)); be(Int32(-1)); be(Int32(1))
        expected.append(UInt8(record.count * 2))  // zig-zag length
        expected.append(contentsOf: record)
        let crc = expected.withUnsafeBytes { CRC32C.software(UnsafeRawBufferPointer(rebasing: $0[21...])) }
        expected.withUnsafeMutableBytes { $0.storeBytes(of: crc.bigEndian, toByteOffset: 17, as: UInt32.self) }
        let built = RecordBatchBuilder.build([ProducerRecord(key: Array("k".utf8), value: Array("v".utf8), timestamp: 0x18B_CFE5_6800)])
        #expect(built == expected)
    }

    @Test func setBaseOffsetKeepsCRCValid() throws {
        var bytes = RecordBatchBuilder.build(records)
        bytes.withUnsafeMutableBytes { RecordBatch.setBaseOffset(1_000_000, in: $0) }
        try bytes.withUnsafeBytes { p in
            try RecordBatch(unchecked: p).validate(strictRecords: true)
            #expect(RecordBatch(unchecked: p).baseOffset == 1_000_000)
        }
    }

    func validationError(_ bytes: [UInt8], max: Int = 1 << 20) -> RecordBatchError? {
        bytes.withUnsafeBytes { p in
            do throws(RecordBatchError) {
                try RecordBatch(unchecked: p).validate(maxBatchBytes: max, strictRecords: true)
                return nil
            } catch { return error }
        }
    }

    @Test func rejectsEachKindOfDamage() {
        let good = RecordBatchBuilder.build(records)
        #expect(validationError(good) == nil)

        var badCRC = good
        badCRC[badCRC.count - 1] ^= 0x01
        guard case .crcMismatch = validationError(badCRC) else { Issue.record("expected a CRC mismatch"); return }

        var badMagic = good
        badMagic[16] = 1
        #expect(validationError(badMagic) == .badMagic(1))

        var badLength = good
        badLength.withUnsafeMutableBytes { $0.storeBytes(of: Int32(good.count).bigEndian, toByteOffset: 8, as: Int32.self) }
        #expect(validationError(badLength) == .lengthMismatch(declared: good.count + 12, available: good.count))

        #expect(validationError(Array(good.prefix(30))) == .tooShort(available: 30))
        #expect(validationError(Array(good.dropLast())) == .lengthMismatch(declared: good.count, available: good.count - 1))
        #expect(validationError(good, max: good.count - 1) == .tooLarge(size: good.count, max: good.count - 1))
    }

    @Test func strictValidationCatchesRecordsThatDoNotMatchTheirHeader() {
        // A record count that disagrees with lastOffsetDelta, with a correct CRC.
        var wrongCount = RecordBatchBuilder.build(records)
        wrongCount.withUnsafeMutableBytes { p in
            p.storeBytes(of: Int32(5).bigEndian, toByteOffset: 57, as: Int32.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[21...]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: 17, as: UInt32.self)
        }
        #expect(validationError(wrongCount) != nil)

        // Garbage record bytes behind a recomputed, valid CRC.
        var garbage = RecordBatchBuilder.build(records)
        garbage.withUnsafeMutableBytes { p in
            p[61] = 0x7F  // first record's length varint now claims 63 bytes... followed by nonsense
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[21...]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: 17, as: UInt32.self)
        }
        guard case .malformedRecord = validationError(garbage) else { Issue.record("expected malformedRecord"); return }
    }

    @Test func declaredSizeRefusesImpossibleLengths() {
        let zeros = [UInt8](repeating: 0, count: 100)
        zeros.withUnsafeBytes { #expect(RecordBatch.declaredSize(at: $0) == nil) }
        [UInt8](repeating: 0, count: 5).withUnsafeBytes { #expect(RecordBatch.declaredSize(at: $0) == nil) }
    }
}

@Suite struct CompressionTests {
    /// The same records, as a batch compressed with `codec` (the record section after byte 61).
    static func compressedBatch(_ records: [ProducerRecord], _ codec: CompressionCodec) -> [UInt8] {
        let plain = RecordBatchBuilder.build(records)
        let packed = Compression.compress(codec, Array(plain[RecordBatch.headerSize...]))!
        var out = Array(plain[..<RecordBatch.headerSize]) + packed
        out.withUnsafeMutableBytes { p in
            p.storeBytes(of: Int32(p.count - RecordBatch.logOverhead).bigEndian, toByteOffset: 8, as: Int32.self)
            p.storeBytes(of: codec.rawValue.bigEndian, toByteOffset: 21, as: Int16.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[21...]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: 17, as: UInt32.self)
        }
        return out
    }

    static let records: [ProducerRecord] = (0..<200).map { (i: Int) -> ProducerRecord in
        let key: [UInt8] = Array("k\(i % 7)".utf8)
        let value: [UInt8] = Array("{\"event_type\":\"click\",\"seq\":\(i)}".utf8)
        let headers: [ProducerRecord.Header] = i % 3 == 0 ? [ProducerRecord.Header(key: "h", value: [UInt8(i & 0xFF)])] : []
        return ProducerRecord(key: key, value: value, headers: headers, timestamp: 1_700_000_000_000 + Int64(i))
    }

    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func compressedBatchesReadBackRecordForRecord(_ codec: CompressionCodec) throws {
        let bytes = Self.compressedBatch(Self.records, codec)
        try bytes.withUnsafeBytes { p in
            let batch = RecordBatch(unchecked: p)
            try batch.validate(strictRecords: true)
            #expect(batch.compression == codec)
            var decoded: [ProducerRecord] = []
            try batch.forEachRecord { r in
                decoded.append(ProducerRecord(key: r.key.map(Array.init), value: r.value.map(Array.init),
                                              headers: r.headers.map { .init(key: String(decoding: $0.key, as: UTF8.self), value: $0.value.map(Array.init)) },
                                              timestamp: r.timestamp))
            }
            #expect(decoded == Self.records)
        }
    }

    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func damagedCompressedDataIsAnErrorNotACrash(_ codec: CompressionCodec) {
        var bytes = Self.compressedBatch(Self.records, codec)
        for i in stride(from: 70, to: bytes.count, by: 3) { bytes[i] ^= 0x5A }
        bytes.withUnsafeBytes { p in
            #expect(throws: (any Error).self) {
                var n = 0
                try RecordBatch(unchecked: p).forEachRecord { _ in n += 1 }
                if n != Self.records.count { throw RecordBatchError.malformedRecord("short") }
            }
        }
        let truncated = Array(Self.compressedBatch(Self.records, codec).prefix(80))
        #expect(throws: RecordBatchError.self) {
            try truncated.withUnsafeBytes { try Compression.decompress(codec, UnsafeRawBufferPointer(rebasing: $0[61...])) }
        }
    }

    @Test func compressedBatchesAppendAndReadThroughTheLog() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small(flushMode: .os))
        for codec in [CompressionCodec.gzip, .snappy, .lz4, .zstd] { try log.append(Self.compressedBatch(Self.records, codec)) }
        let all = try readAll(log)
        #expect(all.count == 800)
        #expect(all.map(\.0) == (0..<800).map(Int64.init))
        try log.close()
    }
}
