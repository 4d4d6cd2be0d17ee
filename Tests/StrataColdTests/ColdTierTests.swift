import Foundation
import StrataCore
import Testing
import Synchronization
@testable import StrataLog

/// Cold segments inside a live partition: conversion, reads at every offset, time lookups,
/// reopening, crashes at each step of the swap, readers during it, retention, DeleteRecords,
/// compaction and damaged files.
@Suite struct ColdTierTests {
    /// One record as a reader sees it.
    struct Seen: Equatable, Sendable, CustomStringConvertible {
        let offset: Int64
        let timestamp: Int64
        let key: [UInt8]?
        let value: [UInt8]?
        let headers: [ColdHeader]
        var description: String { "offset \(offset)" }
    }

    static func tempDirectory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("strata-coldtier-\(UInt64.random(in: 0...UInt64.max))").path
    }

    static var config: LogConfig {
        var c = LogConfig()
        c.segmentBytes = 8 * 1024
        c.flushMode = .os
        c.maxMessageBytes = 8 * 1024
        return c
    }

    static let values: [String] = [
        #"{"event_type":"page_view","user_id":"u-1","ts":"2025-10-01T00:00:00.000Z","amount":0.0,"n":87}"#,
        #"{"a":{"b":[1,2.50,-0,1e400,"x\u0000y"]},"é":"ü\n\"q\"","big":18446744073709551616}"#,
        #"{"dup":1,"dup":2,"t":true,"f":false,"z":null}"#,
        #"  [1, {"k": "v"}, [], {}]  "#,
        "not json at all",
        "\u{1F600} emoji",
        #"{"s":"\ud800 lone"}"#,
        "",
    ]

    /// A log of ~`batches` batches across many small segments: JSON of every form, binary and
    /// null values, keys, headers, idempotent and zstd-recompressed batches, clocks that wander.
    static func fill(_ log: PartitionLog, batches: Int, seed: UInt64 = 7) throws {
        var rng = SplitMix64(seed: seed)
        var sequence: Int32 = 0
        for b in 0..<batches {
            var records: [ProducerRecord] = []
            for i in 0..<(1 + Int(rng.next() % 12)) {
                let ts = 1_700_000_000_000 + Int64(b) * 1000 + Int64(rng.next() % 3000) - 1500
                var value: [UInt8]? = Array(values[Int(rng.next() % UInt64(values.count))].utf8)
                switch rng.next() % 10 {
                case 0: value = nil
                case 1: value = (0..<Int(rng.next() % 40)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                case 2, 3: value = Array(#"{"i":\#(i),"b":\#(b),"user":"u-\#(rng.next() % 50)","x":\#(Double(rng.next() % 1000) / 8)}"#.utf8)
                default: break
                }
                let key: [UInt8]? = i % 4 == 0 ? nil : Array("k\(rng.next() % 30)".utf8)
                let headers = rng.next() % 3 == 0 ? [ProducerRecord.Header(key: "h", value: rng.next() % 2 == 0 ? nil : [1, 2, 3])] : []
                records.append(ProducerRecord(key: key, value: value, headers: headers, timestamp: ts))
            }
            let idempotent = b % 5 == 0
            var policy = AppendPolicy()
            if b % 3 == 0 { policy.recompression = .zstd }
            _ = try log.append(RecordBatchBuilder.build(records, producerId: idempotent ? 77 : -1, producerEpoch: idempotent ? 0 : -1,
                                                        baseSequence: idempotent ? sequence : -1), policy: policy)
            if idempotent { sequence += Int32(records.count) }
        }
        try log.flush()
    }

    /// Every record from `from`, reading with `maxBytes` per read.
    static func records(_ log: PartitionLog, from: Int64? = nil, until: Int64 = .max, maxBytes: Int = 1 << 20) throws -> [Seen] {
        var out: [Seen] = []
        var at = from ?? log.logStartOffset
        while at < min(until, log.logEndOffset) {
            let r = try log.read(from: at, maxBytes: maxBytes)
            guard let slice = r.slice else { break }
            try slice.forEachBatch { batch in
                try batch.forEachRecord { rec in
                    guard rec.offset >= at, rec.offset < until else { return }
                    out.append(Seen(offset: rec.offset, timestamp: rec.timestamp, key: rec.key.map(Array.init), value: rec.value.map(Array.init),
                                    headers: rec.headers.map { ColdHeader(key: Array($0.key), value: $0.value.map(Array.init)) }))
                }
            }
            at = r.nextOffset
        }
        return out
    }

    /// The first record at or after each offset, and the answer to time lookups across the log.
    static func probes(_ log: PartitionLog) throws -> (firsts: [Seen?], times: [Int64?]) {
        var firsts: [Seen?] = []
        for offset in log.logStartOffset..<log.logEndOffset {
            firsts.append(try records(log, from: offset, until: offset + 1, maxBytes: 1).first)
        }
        var times: [Int64?] = []
        for t in stride(from: Int64(1_700_000_000_000 - 2000), through: 1_700_000_000_000 + 1000 * 1000, by: 773) {
            times.append(try log.offset(forTimestamp: t))
        }
        return (firsts, times)
    }

    static func files(_ dir: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() }

    @Test func convertedSegmentsServeEveryOffsetIdentically() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        try Self.fill(log, batches: 500)
        let before = try Self.records(log)
        let probesBefore = try Self.probes(log)
        let largestBefore = try log.maxTimestampRecord()
        let segments = log.segmentCount
        #expect(segments > 5)
        let report = try log.convertToCold(olderThanMs: nil)
        #expect(report.segmentsConverted == segments - 1)
        #expect(report.coldBytes < report.hotBytes / 2)
        let names = Self.files(dir)
        #expect(names.filter { $0.hasSuffix(".cold") }.count == segments - 1)
        #expect(names.filter { $0.hasSuffix(".log") }.count == 1, "only the active segment stays hot: \(names)")
        #expect(!names.contains { $0.hasSuffix(".deleted") || $0.hasSuffix(".tmp") || $0.hasSuffix(".index") && names.contains(String($0.dropLast(6)) + ".cold") })
        #expect(try Self.records(log) == before)
        #expect(try Self.records(log, maxBytes: 1) == before)
        let probesAfter = try Self.probes(log)
        #expect(probesAfter.firsts == probesBefore.firsts)
        #expect(probesAfter.times == probesBefore.times)
        let largestAfter = try log.maxTimestampRecord()
        #expect(largestAfter?.offset == largestBefore?.offset && largestAfter?.timestamp == largestBefore?.timestamp)
        #expect(log.verify().isEmpty)
        let infos = try log.segmentInfos()
        #expect(infos.filter(\.isCold).count == segments - 1)
        #expect(infos.filter(\.isCold).allSatisfy { $0.logBytes > $0.sizeInBytes })
        // A second pass finds nothing to do; appends continue after the cold segments.
        #expect(try log.convertToCold(olderThanMs: nil).segmentsConverted == 0)
        _ = try log.append(RecordBatchBuilder.build([ProducerRecord(key: nil, value: Array("after".utf8), timestamp: 1)]))
        let withAppend = try Self.records(log)
        try log.close()

        // Reopened after a clean close, and as after a crash (every segment from the start checked).
        for clean in [true, false] {
            if !clean { try? FileManager.default.removeItem(atPath: dir + "/" + Checkpoint.fileName) }
            let (again, report) = try PartitionLog.open(directory: dir, config: Self.config, cleanShutdown: clean)
            #expect(report.warnings.isEmpty, "\(report.warnings)")
            #expect(try Self.records(again) == withAppend)
            #expect(again.producerStateSnapshot.producers[77] != nil)
            try again.close()
        }
        // And by a read-only opener next to the writer.
        let view = try PartitionLog.openReadOnly(directory: dir, config: Self.config)
        #expect(try Self.records(view) == withAppend)
    }

    /// Read-ahead stopped at each segment's end, so a consumer of cold data waited at every
    /// segment boundary for a block decoded on its own thread. A reader in a segment's last
    /// blocks now queues the next cold segment's first blocks.
    @Test func aReaderNearASegmentsEndReadsTheNextSegmentAhead() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        try Self.fill(log, batches: 200)
        _ = try log.convertToCold(olderThanMs: nil)
        let cold = try log.segmentInfos().filter(\.isCold)
        try #require(cold.count >= 3)
        let second = try #require(try log.coldBlock(from: cold[1].baseOffset)).segment
        let third = try #require(try log.coldBlock(from: cold[2].baseOffset)).segment
        let compression = log.coldFetchCompression.rawValue
        let secondStart = ColdBlockCache.Key(segment: second.cacheID, block: 0, compression: compression)
        let thirdStart = ColdBlockCache.Key(segment: third.cacheID, block: 0, compression: compression)
        #expect(!ColdBlockCache.shared.holds(secondStart))
        // The last record of the first cold segment: its block is the segment's last.
        _ = try log.read(from: cold[0].nextOffset - 1, maxBytes: 1)
        let deadline = ContinuousClock.now + .seconds(30)
        while !ColdBlockCache.shared.holds(secondStart) && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(ColdBlockCache.shared.holds(secondStart), "the next segment's first block was not read ahead")
        // Not beyond: a segment two ahead waits until a reader comes near it.
        #expect(!ColdBlockCache.shared.holds(thirdStart))
        #expect(try Self.records(log) == Self.records(log, maxBytes: 1))
    }

    @Test func zstdFetchCompressionGivesTheSameRecords() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        defer { try? log.close() }
        try Self.fill(log, batches: 200, seed: 11)
        let before = try Self.records(log)
        try log.convertToCold(olderThanMs: nil)
        log.coldFetchCompression = .zstd
        var compressed = 0
        var at = log.logStartOffset
        while let slice = try log.read(from: at).slice {
            try slice.forEachBatch { batch in
                try batch.validate(strictRecords: true)
                if batch.compression == .zstd { compressed += 1 }
            }
            at = slice.nextOffset
        }
        #expect(compressed > 10)
        #expect(try Self.records(log) == before)
    }

    /// A crash after each step of the swap leaves the hot or the cold segment, never a mix, and
    /// no stray file after the next load.
    @Test(arguments: [ColdConversionCrashPoint.afterTempWritten, .afterColdRenamed, .afterLogRenamed])
    func crashAtEachStep(_ point: ColdConversionCrashPoint) throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        try Self.fill(log, batches: 150, seed: 5)
        let before = try Self.records(log)
        let first = log.segmentBaseOffsets[0]
        let base = SegmentName.base(first)
        _ = try log.convertToCold(olderThanMs: nil, nowMs: wallClockMillis(), maxSegments: 1, crashPoint: point)
        let onDisk = Self.files(dir)
        switch point {
        case .afterTempWritten: #expect(onDisk.contains(base + ".cold.tmp") && onDisk.contains(base + ".log"))
        case .afterColdRenamed: #expect(onDisk.contains(base + ".cold") && onDisk.contains(base + ".log"))
        case .afterLogRenamed: #expect(onDisk.contains(base + ".cold") && onDisk.contains(base + ".log.deleted") && onDisk.contains(base + ".index"))
        case .none: break
        }
        // The process dies here: the next one loads what is on disk, as after a crash.
        try? FileManager.default.removeItem(atPath: dir + "/" + Checkpoint.fileName)
        let (again, report) = try PartitionLog.open(directory: dir, config: Self.config, cleanShutdown: false)
        defer { try? again.close() }
        let after = Self.files(dir)
        #expect(!after.contains { $0.hasSuffix(".tmp") || $0.hasSuffix(".deleted") }, "\(after)")
        if point == .afterTempWritten {
            #expect(after.contains(base + ".log") && !after.contains(base + ".cold"))
        } else {
            #expect(after.contains(base + ".cold") && !after.contains(base + ".log") && !after.contains(base + ".index")
                    && !after.contains(base + ".timeindex"), "\(after)")
            #expect(report.swapsCompleted == (point == .afterColdRenamed ? 1 : 0))
        }
        #expect(try Self.records(again) == before)
        #expect(again.verify().isEmpty)
        // The interrupted conversion is simply done again (or was already done).
        try again.convertToCold(olderThanMs: nil)
        #expect(try Self.records(again) == before)
    }

    /// A `.cold` beside its `.log` that does not check out is dropped; the hot segment stays.
    @Test func damagedColdBesideItsLogIsDropped() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        try Self.fill(log, batches: 100, seed: 9)
        let before = try Self.records(log)
        let base = SegmentName.base(log.segmentBaseOffsets[0])
        _ = try log.convertToCold(olderThanMs: nil, nowMs: wallClockMillis(), maxSegments: 1, crashPoint: .afterColdRenamed)
        let coldPath = dir + "/" + base + ".cold"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: coldPath)))
        bytes[20] ^= 0xFF  // inside the CRC-checked header
        try Data(bytes).write(to: URL(fileURLWithPath: coldPath))
        let (again, report) = try PartitionLog.open(directory: dir, config: Self.config, cleanShutdown: false)
        defer { try? again.close() }
        #expect(report.warnings.contains { $0.contains("unusable") })
        #expect(!Self.files(dir).contains(base + ".cold") && Self.files(dir).contains(base + ".log"))
        #expect(try Self.records(again) == before)
    }

    /// A damaged block is an error for reads of its offsets only: the partition opens, the other
    /// segments and the rest of this one are served, verification names the file.
    @Test func damagedBlockIsAnErrorForItsOffsetsOnly() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        try Self.fill(log, batches: 200, seed: 13)
        let before = try Self.records(log)
        try log.convertToCold(olderThanMs: nil)
        let bases = log.segmentBaseOffsets
        try log.close()
        let coldPath = dir + "/" + SegmentName.base(bases[1]) + ".cold"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: coldPath)))
        bytes[bytes.count - 5] ^= 0x55  // inside the last block
        try Data(bytes).write(to: URL(fileURLWithPath: coldPath))
        let (again, _) = try PartitionLog.open(directory: dir, config: Self.config, cleanShutdown: true)
        defer { try? again.close() }
        #expect(throws: LogError.self) { _ = try Self.records(again, from: bases[2] - 1) }
        #expect(try Self.records(again, from: bases[2]) == before.filter { $0.offset >= bases[2] })
        #expect(try Self.records(again, from: bases[0], until: bases[1]) == before.filter { $0.offset < bases[1] })
        #expect(again.verify().contains { $0.contains(coldPath) })
    }

    /// Readers holding slices of a hot segment keep reading it through the swap; its files go
    /// when the last one is done.
    @Test func readersDuringTheSwap() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        defer { try? log.close() }
        try Self.fill(log, batches: 100, seed: 17)
        let base = SegmentName.base(log.segmentBaseOffsets[0])
        var held: SegmentSlice? = try #require(try log.read(from: 0).slice)
        let heldBytes = Array(held!.bytes)
        try log.convertToCold(olderThanMs: nil)
        #expect(Self.files(dir).contains(base + ".log.deleted"))
        #expect(Array(held!.bytes) == heldBytes)
        held = nil
        #expect(!Self.files(dir).contains(base + ".log.deleted"))
        // Concurrent readers while another partition's worth of conversions happen.
        let (other, _) = try PartitionLog.open(directory: dir + "-2", config: Self.config)
        defer { try? other.close(); try? FileManager.default.removeItem(atPath: dir + "-2") }
        try Self.fill(other, batches: 300, seed: 19)
        let expected = try Self.records(other)
        final class Reading: Sendable {
            let done = Atomic<Bool>(false)
            let passes = Atomic<Int>(0)
            let failures = Atomic<Int>(0)
        }
        let reading = Reading()
        let reader = Thread {
            while !reading.done.load(ordering: .acquiring) {
                if (try? Self.records(other, maxBytes: 4096)) != expected { reading.failures.add(1, ordering: .relaxed) }
                reading.passes.add(1, ordering: .relaxed)
            }
        }
        reader.start()
        try other.convertToCold(olderThanMs: nil)
        while reading.passes.load(ordering: .relaxed) < 2 { usleep(1000) }
        reading.done.store(true, ordering: .releasing)
        while !reader.isFinished { usleep(1000) }
        #expect(reading.failures.load(ordering: .relaxed) == 0)
    }

    @Test func retentionAndDeleteRecordsOverColdSegments() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        defer { try? log.close() }
        try Self.fill(log, batches: 300, seed: 23)
        let before = try Self.records(log)
        // Ages survive the change of tier: the cold files carry the hot files' modification times.
        func mtimes(_ suffix: String) -> [Date] {
            Self.files(dir).filter { $0.hasSuffix(suffix) }.compactMap {
                try? FileManager.default.attributesOfItem(atPath: dir + "/" + $0)[.modificationDate] as? Date
            }
        }
        let hotTimes = mtimes(".log").dropLast()
        usleep(20_000)
        try log.convertToCold(olderThanMs: nil)
        #expect(mtimes(".cold") == Array(hotTimes))
        let bases = log.segmentBaseOffsets
        // DeleteRecords into the middle of a cold segment.
        let cut = bases[1] + (bases[2] - bases[1]) / 2
        #expect(try log.deleteRecords(before: cut) == cut)
        #expect(!Self.files(dir).contains(SegmentName.base(bases[0]) + ".cold"))
        #expect(try Self.records(log) == before.filter { $0.offset >= cut })
        // retention.bytes counts what the cold files take on disk.
        let sizes = log.segmentList.withLock { $0 }.map(\.size)
        let keep = sizes.suffix(3).reduce(0, +)
        let r = try log.applyRetention(retentionMs: -1, retentionBytes: Int64(keep))
        #expect(r.segmentsDeleted == sizes.count - 3)
        #expect(Self.files(dir).filter { $0.hasSuffix(".cold") }.count == 2)
        #expect(try Self.records(log) == before.filter { $0.offset >= log.logStartOffset })
        // retention.ms: every closed segment is older than a day in this clock.
        let aged = try log.applyRetention(retentionMs: 1000, retentionBytes: -1, nowMs: wallClockMillis() + 86_400_000 * 400)
        #expect(aged.segmentsDeleted == 2)
        #expect(!Self.files(dir).contains { $0.hasSuffix(".cold") || $0.hasSuffix(".deleted") })
    }

    /// Compacting cold segments gives what compacting the same hot segments gives.
    @Test func compactionOverColdSegments() throws {
        let hotDir = Self.tempDirectory(), coldDir = Self.tempDirectory()
        defer { for d in [hotDir, coldDir] { try? FileManager.default.removeItem(atPath: d) } }
        let (hot, _) = try PartitionLog.open(directory: hotDir, config: Self.config)
        let (cold, _) = try PartitionLog.open(directory: coldDir, config: Self.config)
        defer { try? hot.close(); try? cold.close() }
        for log in [hot, cold] { try Self.fill(log, batches: 300, seed: 29) }
        try cold.convertToCold(olderThanMs: nil)
        let a = try hot.compact(deleteRetentionMs: 0)
        let b = try cold.compact(deleteRetentionMs: 0)
        #expect(a.recordsAfter == b.recordsAfter && a.recordsAfter < a.recordsBefore)
        #expect(try Self.records(hot) == Self.records(cold))
        #expect(!Self.files(coldDir).contains { $0.hasSuffix(".cold") }, "compaction rewrites cold segments as hot ones")
        #expect(cold.verify().isEmpty)
        // And they convert again.
        try cold.convertToCold(olderThanMs: nil)
        #expect(try Self.records(hot) == Self.records(cold))
    }

    /// Retention chose its segments before the cold worker replaced them: the prefix is chosen
    /// again under the writer lock (this trapped before).
    @Test func retentionWithAStaleSnapshotOfConvertedSegments() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        defer { try? log.close() }
        try Self.fill(log, batches: 200, seed: 31)
        let before = try Self.records(log)
        let stale = log.segmentList.withLock { $0 }
        try log.convertToCold(olderThanMs: nil)
        try log.dropSegments(Array(stale.prefix(2)), keepFrom: stale[2].baseOffset, newLogStartOffset: stale[2].baseOffset)
        #expect(log.logStartOffset == stale[2].baseOffset && log.segmentBaseOffsets.first == stale[2].baseOffset)
        #expect(!Self.files(dir).contains(SegmentName.base(stale[0].baseOffset) + ".cold"))
        #expect(try Self.records(log) == before.filter { $0.offset >= stale[2].baseOffset })
    }

    /// A `.cold` renamed in, then (before the swap) the segment compacted: at load the cold file
    /// no longer matches its `.log` and is dropped; the compacted records stay.
    @Test func aColdFileOlderThanItsLogIsDropped() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        try Self.fill(log, batches: 150, seed: 37)
        _ = try log.convertToCold(olderThanMs: nil, nowMs: wallClockMillis(), maxSegments: 1, crashPoint: .afterColdRenamed)
        let base = SegmentName.base(log.segmentBaseOffsets[0])
        #expect(Self.files(dir).contains(base + ".cold"))
        let report = try log.compact(deleteRetentionMs: 0)
        #expect(report.recordsAfter < report.recordsBefore)
        let compacted = try Self.records(log)
        try? FileManager.default.removeItem(atPath: dir + "/" + Checkpoint.fileName)
        let (again, loaded) = try PartitionLog.open(directory: dir, config: Self.config, cleanShutdown: false)
        defer { try? again.close() }
        #expect(loaded.warnings.contains { $0.contains("unusable") }, "\(loaded.warnings)")
        #expect(!Self.files(dir).contains(base + ".cold"))
        #expect(try Self.records(again) == compacted)
    }

    /// A hot batch whose CRC fails is not re-encoded with a fresh one: the segment stays hot.
    @Test func aDamagedHotBatchKeepsItsSegmentHot() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        defer { try? log.close() }
        try Self.fill(log, batches: 100, seed: 41)
        let path = dir + "/" + SegmentName.base(log.segmentBaseOffsets[0]) + ".log"
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        try handle.seek(toOffset: 200)
        let byte = try #require(try handle.read(upToCount: 1))
        try handle.seek(toOffset: 200)
        try handle.write(contentsOf: Data([byte[0] ^ 0x40]))
        try handle.close()
        #expect(throws: LogError.self) { try log.convertToCold(olderThanMs: nil) }
        #expect(Self.files(dir).contains(SegmentName.base(log.segmentBaseOffsets[0]) + ".log"))
        #expect(!Self.files(dir).contains { $0.hasSuffix(".cold") || $0.hasSuffix(".tmp") })
    }

    /// A cold file whose header does not check: retention still ages and deletes it (by its
    /// modification time), and time lookups answer from the rest of the partition.
    @Test func aDamagedColdHeaderDoesNotStopRetentionOrTimeLookups() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        try Self.fill(log, batches: 200, seed: 43)
        try log.convertToCold(olderThanMs: nil)
        let bases = log.segmentBaseOffsets
        try log.close()
        let coldPath = dir + "/" + SegmentName.base(bases[0]) + ".cold"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: coldPath)))
        bytes[20] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: coldPath))
        let (again, _) = try PartitionLog.open(directory: dir, config: Self.config, cleanShutdown: true)
        defer { try? again.close() }
        #expect(try again.offset(forTimestamp: 0) == bases[1])
        let r = try again.applyRetention(retentionMs: 1000, retentionBytes: -1, nowMs: wallClockMillis() + 86_400_000)
        #expect(r.segmentsDeleted == bases.count - 1)
        #expect(!Self.files(dir).contains { $0.hasSuffix(".cold") })
    }

    /// A read-only view (strata consume, query next to a server) listed the directory before the
    /// writer converted a segment it had not opened yet: it finds the cold file.
    @Test func aReadOnlyViewFollowsAConversion() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (log, _) = try PartitionLog.open(directory: dir, config: Self.config)
        defer { try? log.close() }
        try Self.fill(log, batches: 150, seed: 47)
        let before = try Self.records(log)
        let view = try PartitionLog.openReadOnly(directory: dir, config: Self.config)
        try log.convertToCold(olderThanMs: nil)
        #expect(try Self.records(view) == before)
    }

    /// The in-place writer of a cold read gives the bytes of the reference encoder, batch by batch.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func inPlaceBatchesEqualTheReferenceEncoding(seed: UInt64) throws {
        let batches = ColdFormatTests.batches(seed: seed, count: 60)
        let block = try ColdBlock.encode(batches)
        let flat = try block.withUnsafeBytes { try ColdBlock.decodeFlat($0) }
        for i in flat.batches.indices {
            let reference = try flat.recordBatch(i, compression: .none)
            var written = [UInt8](repeating: 0xEE, count: flat.uncompressedBatchSize(i))
            written.withUnsafeMutableBytes { flat.writeUncompressedBatch(i, into: $0) }
            #expect(written == reference, "batch \(i)")
        }
    }
}
