import CStrataScan
import Foundation
import Testing
@testable import StrataBroker
@testable import StrataLog
@testable import StrataQuery
@testable import StrataParquet

/// strata export's own behaviour (files, names, limits, member columns); the files' content is
/// read back by pyarrow and DuckDB in tools/compat/test_export.py.
@Suite struct ParquetExportTests {
    static func broker(_ dir: QDir, records: Int = 2_500, partitions: Int32 = 2) throws -> Broker {
        let broker = try Broker.open(dataDirectory: dir.path)
        try broker.createTopic("t", partitions: partitions)
        for p in 0..<partitions {
            var batch: [ProducerRecord] = []
            for i in 0..<records {
                let value = #"{"i":\#(i),"type":"t\#(i % 5)","offset":"member","Key":true,"amount":\#(i % 3 == 0 ? "1.5" : "2")}"#
                batch.append(ProducerRecord(key: Array("k\(i)".utf8), value: Array(value.utf8), timestamp: 1_000_000 + Int64(i) * 1000))
            }
            try broker.produce(topic: "t", records: batch, partition: p, acks: .leader)
        }
        return broker
    }

    func export(_ broker: Broker, _ dir: QDir, _ configure: (inout ParquetExport.Options) -> Void = { _ in }) throws -> [ParquetExport.ExportedFile] {
        var o = ParquetExport.Options(topic: "t", outputDirectory: dir.path + "/out")
        configure(&o)
        return try ParquetExport(broker: broker, options: o).run()
    }

    @Test func filesPerPartitionSplitByRowsAndNamedByOffsets() throws {
        let dir = QDir()
        let broker = try Self.broker(dir)
        defer { try? broker.close() }
        let files = try export(broker, dir) { $0.maxRowsPerFile = 1000 }
        #expect(files.map(\.rows) == [1000, 1000, 500, 1000, 1000, 500])
        #expect(files[1].name == "t-0-00000000000000001000-00000000000000001999.parquet")
        #expect(files[5].name == "t-1-00000000000000002000-00000000000000002499.parquet")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/out").sorted()
        #expect(names == files.map(\.name).sorted())  // no temporary files left
        for f in files {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir.path + "/out/" + f.name)))
            #expect(bytes.count == f.bytes)
            #expect(Array(bytes.prefix(4)) == Array("PAR1".utf8) && Array(bytes.suffix(4)) == Array("PAR1".utf8))
            #expect(f.memberColumns == 5)
        }
        // A rerun writes the same bytes under the same names (replacing them whole).
        let before = try Data(contentsOf: URL(fileURLWithPath: dir.path + "/out/" + files[0].name))
        let again = try export(broker, dir) { $0.maxRowsPerFile = 1000 }
        #expect(again.map(\.name) == files.map(\.name))
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/out/" + files[0].name)) == before)
    }

    @Test func timeBoundsFollowTheTimeIndexAsStrataQueryDoes() throws {
        let dir = QDir()
        let broker = try Self.broker(dir)
        defer { try? broker.close() }
        let files = try export(broker, dir) {
            $0.partitions = [1]
            $0.sinceMs = 1_000_000 + 100_500   // the first record at or after: offset 101
            $0.untilMs = 1_000_000 + 200_000   // up to offset 200, exclusive
        }
        #expect(files.count == 1)
        #expect(files.first?.partition == 1 && files.first?.firstOffset == 101 && files.first?.lastOffset == 199)
        #expect(try export(broker, dir) { $0.sinceMs = 9_000_000_000 }.isEmpty)
    }

    @Test func resumeContinuesAfterTheFilesAlreadyWritten() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, records: 1_000)
        defer { try? broker.close() }
        let first = try export(broker, dir) { $0.untilMs = 1_000_000 + 600_000 }  // offsets 0-599 of each partition
        #expect(first.map(\.lastOffset) == [599, 599])
        // Files of another topic whose name ends like this one's partition, and stray names, do not count.
        for stray in ["t-0-x.parquet", "t-0-00000000000000000000-00000000000000999999.parquet.tmp", "notes.txt"] {
            FileManager.default.createFile(atPath: dir.path + "/out/" + stray, contents: Data())
        }
        #expect(try ParquetExport.lastExportedOffset(in: dir.path + "/out", topic: "t", partition: 0) == 599)
        #expect(try ParquetExport.lastExportedOffset(in: dir.path + "/out", topic: "t-0", partition: 0) == nil)
        let next = try export(broker, dir) { $0.resume = true }
        #expect(next.map(\.firstOffset) == [600, 600] && next.map(\.lastOffset) == [999, 999])
        #expect(try export(broker, dir) { $0.resume = true }.isEmpty)  // nothing new
        try broker.produce(topic: "t", records: [ProducerRecord(key: nil, value: Array("{}".utf8), timestamp: 5)], partition: 1, acks: .leader)
        let last = try export(broker, dir) { $0.resume = true }
        #expect(last.count == 1 && last.first?.partition == 1 && last.first?.firstOffset == 1000)
    }

    @Test func badRequestsAreRefusedBeforeWriting() throws {
        let dir = QDir()
        let broker = try Self.broker(dir, records: 10)
        defer { try? broker.close() }
        #expect(throws: QueryError.self) { try export(broker, dir) { $0.topic = "missing" } }
        #expect(throws: QueryError.self) { try export(broker, dir) { $0.partitions = [2] } }
        #expect(throws: QueryError.self) { try export(broker, dir) { $0.partitions = [-1] } }
        #expect(throws: QueryError.self) { try export(broker, dir) { $0.maxRowsPerFile = 0 } }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/out"))
    }

    @Test func memberNamesNeverShadowTheRecordColumns() {
        var members = MemberColumns(limit: 10)
        let doc = #"{"offset":1,"Key":"k","value_offset":true,"x":null,"é":"\u00e9"}"#
        Array(doc.utf8).withUnsafeBytes { members.survey($0) }
        let columns = members.makeColumns(reservingRows: 1)
        // "offset" and "Key" (any case) take the prefix; "value_offset" then needs a second one.
        #expect(columns.map(\.name) == ["value_offset", "value_Key", "value_value_offset", "x", "é"])
        #expect(columns.map(\.type) == [.int64, .byteArray, .boolean, .byteArray, .byteArray])
    }

    @Test func millisecondUTCStringsBecomeTimestamps() {
        var members = MemberColumns(limit: 10)
        for doc in [#"{"ts":"2025-10-01T00:00:00.000Z","d":"2024-02-29T23:59:59.999Z","x":"2025-10-01T00:00:00Z"}"#,
                    #"{"ts":"2025-10-01T12:30:00.250Z","d":"2025-02-29T00:00:00.000Z","x":null}"#] {
            Array(doc.utf8).withUnsafeBytes { members.survey($0) }
        }
        let columns = members.makeColumns(reservingRows: 2)
        // ts: every value a valid UTC millisecond time; d: 2025-02-29 is not a date; x: no milliseconds.
        #expect(columns.map(\.logicalType) == [.timestampMillisUTC, .string, .string])
        var filled = columns
        Array(#"{"ts":"1970-01-01T00:00:01.500Z"}"#.utf8).withUnsafeBytes { members.extract($0, row: 0, into: &filled) }
        #expect(filled[0].int64s == [1500])
    }

    @Test func membersPastTheLimitStayInTheValue() {
        var members = MemberColumns(limit: 3)
        for i in 0..<10 {
            Array(#"{"a":1,"b":2,"c":3,"d\#(i)":4}"#.utf8).withUnsafeBytes { members.survey($0) }
        }
        #expect(members.makeColumns(reservingRows: 10).map(\.name) == ["a", "b", "c"])
        #expect(members.leftOut == 10)
    }

    /// The member walker against Foundation's parser on the same documents: names, order,
    /// duplicates, and refusals of everything that is not one strict JSON object.
    @Test func topMembersAgreeWithFoundation() throws {
        let docs = [
            #"{"a":1,"b":"x","c":[1,{"d":2}],"e":{"f":null},"g":true,"h":false,"i":-0.5e3}"#,
            #" { "a" : 1 , "a" : 2 } "#, #"{}"#, #"{"\u0061b":1}"#, #"{"big":123456789012345678901234567890}"#,
            #"{"min":-9223372036854775808,"max":9223372036854775807,"over":9223372036854775808}"#,
        ]
        for doc in docs {
            let bytes = Array(doc.utf8)
            var out = [strata_json_member](repeating: strata_json_member(), count: 16)
            let n = Int(bytes.withUnsafeBufferPointer { strata_json_top_members($0.baseAddress, $0.count, &out, 16) })
            let object = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]) as? [String: Any]
            #expect(object != nil)
            #expect(n >= object!.count, "\(doc)")
            let names = Set((0..<n).map { i in MemberColumns.decodeName(Array(bytes[Int(out[i].key_start)..<Int(out[i].key_start + out[i].key_length)]),
                                                                        escaped: out[i].key_escaped != 0) ?? "?" })
            #expect(names == Set(object!.keys), "\(doc)")
        }
        var out = [strata_json_member](repeating: strata_json_member(), count: 4)
        func count(_ s: String) -> Int32 { Array(s.utf8).withUnsafeBufferPointer { strata_json_top_members($0.baseAddress, $0.count, &out, 4) } }
        #expect(count(#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6}"#) == 6)  // counted past the capacity
        for bad in ["", "[1]", "\"s\"", "{", #"{"a":}"#, #"{"a":1,}"#, #"{"a":01}"#, #"{"a":NaN}"#, #"{"a":'x'}"#, #"{"a":1} x"#,
                    #"{"a":"\x"}"#, "{\"a\":\"\u{1}\"}", #"{a:1}"#, "{\"d\":" + String(repeating: "[", count: 70) + String(repeating: "]", count: 70) + "}"] {
            #expect(count(bad) == -1, "\(bad)")
        }
        out = [strata_json_member](repeating: strata_json_member(), count: 4)
        _ = count(#"{"min":-9223372036854775808,"over":9223372036854775808,"r":1e400}"#)
        #expect(out[0].kind == Int32(STRATA_MEMBER_INTEGER) && out[0].integer == .min)
        #expect(out[1].kind == Int32(STRATA_MEMBER_REAL) && out[1].real == 9223372036854775808.0)
        #expect(out[2].kind == Int32(STRATA_MEMBER_REAL) && out[2].real == .infinity)
    }

    @Test func utf8ValidationAgreesWithSwift() {
        var generator = SystemRandomNumberGenerator()
        let samples: [[UInt8]] = [[], Array("héllo 😀 中".utf8), [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82], [0xFF]]
        var all = samples
        for _ in 0..<2000 { all.append((0..<Int.random(in: 0..<24, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }) }
        for _ in 0..<500 { all.append((0..<Int.random(in: 0..<24, using: &generator)).map { _ in [0x41, 0xC3, 0xA9, 0xE4, 0xB8, 0xAD, 0x80][Int.random(in: 0..<7, using: &generator)] }) }
        for b in all {
            let ours = b.withUnsafeBufferPointer { strata_utf8_valid($0.baseAddress, $0.count) } != 0
            #expect(ours == (String(validating: b, as: UTF8.self) != nil), "\(b)")
        }
    }

    @Test func lossyUnescapeKeepsEveryRFCString() {
        func decode(_ s: String) -> [UInt8]? {
            let raw = Array(s.utf8)
            var out = [UInt8](repeating: 0, count: raw.count)
            let n = raw.withUnsafeBufferPointer { r in out.withUnsafeMutableBufferPointer { strata_json_unescape_lossy(r.baseAddress, r.count, $0.baseAddress) } }
            return n < 0 ? nil : Array(out[0..<Int(n)])
        }
        #expect(decode(#"a\u0000b"#) == [0x61, 0, 0x62])
        #expect(decode(#"\ud800x"#) == Array("\u{FFFD}x".utf8))
        #expect(decode(#"\udc00"#) == Array("\u{FFFD}".utf8))
        #expect(decode(#"\ud800\u0041"#) == Array("\u{FFFD}A".utf8))
        #expect(decode(#"\ud83d\ude00"#) == Array("😀".utf8))
        #expect(decode(#"\x"#) == nil)
    }
}
