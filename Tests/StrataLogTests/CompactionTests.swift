import Foundation
import Testing
@testable import StrataLog
import StrataCore

@Suite struct CompactionTests {
    struct Event: Equatable { let offset: Int64; let key: String; let value: String? }

    /// A random keyed workload with tombstones over many closed segments, some batches compressed.
    static func workload(_ dir: TempDirectory, seed: UInt64) throws -> (PartitionLog, [Event]) {
        var rng = SeededRandom(seed: seed)
        var config = LogConfig.small(segmentBytes: 8 * 1024, flushMode: .os)
        config.segmentMs = Int64.max / 2
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        var events: [Event] = []
        let old = wallClockMillis() - 7 * 86_400_000
        for b in 0..<120 {
            let n = Int.random(in: 1...6, using: &rng)
            var records: [ProducerRecord] = []
            for _ in 0..<n {
                let key = "k\(Int.random(in: 0..<25, using: &rng))"
                let tombstone = Int.random(in: 0..<10, using: &rng) == 0
                let value = tombstone ? nil : "{\"v\":\(events.count + records.count),\"pad\":\"\(String(repeating: "p", count: Int.random(in: 0...60, using: &rng)))\"}"
                records.append(ProducerRecord(key: Array(key.utf8), value: value.map { Array($0.utf8) }, timestamp: old + Int64(b)))
            }
            var batch = RecordBatchBuilder.build(records)
            if b % 7 == 3 { batch = CompressionTests.compressedBatch(records, [.gzip, .lz4, .zstd, .snappy][b % 4]) }
            let info = try log.append(batch)
            for (i, r) in records.enumerated() {
                events.append(Event(offset: info.baseOffset + Int64(i), key: String(decoding: r.key!, as: UTF8.self), value: r.value.map { String(decoding: $0, as: UTF8.self) }))
            }
        }
        try log.roll()
        try log.flush()
        return (log, events)
    }

    static func readEvents(_ log: PartitionLog) throws -> [Event] {
        var out: [Event] = []
        var offset = log.logStartOffset
        while offset < log.logEndOffset {
            let r = try log.read(from: offset, maxBytes: 64 * 1024)
            guard let slice = r.slice else { break }
            try slice.forEachBatch { batch in
                try batch.validate(strictRecords: false)
                try batch.forEachRecord { rec in
                    if rec.offset >= offset {
                        out.append(Event(offset: rec.offset, key: String(decoding: rec.key!, as: UTF8.self), value: rec.value.map { String(decoding: $0, as: UTF8.self) }))
                    }
                }
            }
            offset = r.nextOffset
        }
        return out
    }

    /// What key-latest compaction must leave: the last event of each key (tombstones removed),
    /// in offset order, with their original offsets.
    static func expected(_ events: [Event], dropTombstones: Bool) -> [Event] {
        var last: [String: Int64] = [:]
        for e in events { last[e.key] = e.offset }
        return events.filter { last[$0.key] == $0.offset && !(dropTombstones && $0.value == nil) }
    }

    @Test(arguments: [UInt64(1), 2, 3])
    func compactionKeepsTheLatestValuePerKeyAndEveryOffset(seed: UInt64) throws {
        let dir = TempDirectory()
        let (log, events) = try Self.workload(dir, seed: seed)
        let before = log.segmentCount
        let report = try log.compact(deleteRetentionMs: 86_400_000)
        #expect(report.recordsBefore == events.count)
        #expect(report.distinctKeys <= 25)
        #expect(report.segmentsOut <= report.segmentsIn)
        #expect(log.segmentCount <= before)
        #expect(report.bytesAfter < report.bytesBefore)
        let after = try Self.readEvents(log)
        #expect(after == Self.expected(events, dropTombstones: true))
        #expect(zip(after, after.dropFirst()).allSatisfy { $0.offset < $1.offset }, "offsets strictly increase")
        #expect(log.verify().isEmpty)
        // Appends continue at the same log end; a reopen (clean or not) sees the same records.
        let end = log.logEndOffset
        #expect(try log.append(makeBatch(first: 0, count: 1)).baseOffset == end)
        try log.close()
        let (reopened, _) = try PartitionLog.open(directory: dir.path, config: log.config)
        #expect(Array(try Self.readEvents(reopened).dropLast()) == after)
        try reopened.close()
    }

    @Test func windowedStrategyKeepsTheLatestPerKeyPerWindow() throws {
        let dir = TempDirectory()
        var config = LogConfig.small(segmentBytes: 8 * 1024, flushMode: .os)
        config.segmentMs = Int64.max / 2
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        var events: [(Event, Int64)] = []
        var rng = SeededRandom(seed: 11)
        var t: Int64 = 1_000_000
        for _ in 0..<300 {
            t += Int64.random(in: 0...400, using: &rng)
            let key = "k\(Int.random(in: 0..<5, using: &rng))"
            let value = "{\"t\":\(t)}"
            let info = try log.append(RecordBatchBuilder.build([ProducerRecord(key: Array(key.utf8), value: Array(value.utf8), timestamp: t)]))
            events.append((Event(offset: info.baseOffset, key: key, value: value), t))
        }
        try log.roll()
        try log.flush()
        _ = try log.compact(strategy: .keyLatestWindowed(windowMs: 10_000))
        var last: [String: Int64] = [:]
        for (e, ts) in events { last["\(e.key)/\(ts / 10_000)"] = e.offset }
        let expected = events.filter { last["\($0.0.key)/\($0.1 / 10_000)"] == $0.0.offset }.map(\.0)
        #expect(try Self.readEvents(log) == expected)
        #expect(expected.count > 5 && expected.count < events.count, "one per key per window: more than key-latest, fewer than all")
        try log.close()
    }

    @Test func sizeTieredMergesOnlySimilarSizes() throws {
        let dir = TempDirectory()
        let (log, events) = try Self.workload(dir, seed: 12)
        _ = try log.compact()  // first pass: every segment becomes small
        // New, large segments after the small cleaned ones.
        var more = events
        var offset = log.logEndOffset
        for i in 0..<60 {
            let records = (0..<5).map { j in ProducerRecord(key: Array("new\(i * 5 + j)".utf8), value: Array(String(repeating: "z", count: 250).utf8), timestamp: 0) }
            try log.append(RecordBatchBuilder.build(records))
            for (j, r) in records.enumerated() { more.append(Event(offset: offset + Int64(j), key: "new\(i * 5 + j)", value: String(decoding: r.value!, as: UTF8.self))) }
            offset += 5
        }
        try log.roll()
        try log.flush()
        let sizesBefore = try log.segmentInfos().dropLast().map(\.sizeInBytes)
        let report = try log.compact(strategy: .sizeTiered)
        let sizesAfter = try log.segmentInfos().dropLast().map(\.sizeInBytes)
        #expect(report.segmentsOut < report.segmentsIn, "the small tier merged")
        #expect(sizesAfter.count > 1, "the large tier was not merged into the small one")
        #expect(sizesBefore.count > sizesAfter.count)
        #expect(try Self.readEvents(log) == Self.expected(more, dropTombstones: true))
        try log.close()
    }

    @Test func tombstonesYoungerThanDeleteRetentionStay() throws {
        let dir = TempDirectory()
        let (log, events) = try Self.workload(dir, seed: 9)
        _ = try log.compact(deleteRetentionMs: 30 * 86_400_000)
        #expect(try Self.readEvents(log) == Self.expected(events, dropTombstones: false))
        try log.close()
    }

    @Test func dryRunChangesNothing() throws {
        let dir = TempDirectory()
        let (log, events) = try Self.workload(dir, seed: 4)
        let files = listing(dir.path)
        let report = try log.compact(dryRun: true)
        #expect(report.dryRun && report.recordsAfter < report.recordsBefore)
        #expect(listing(dir.path) == files)
        #expect(try Self.readEvents(log) == events)
        try log.close()
    }

    /// A crash after writing `.cleaned`, after renaming it to `.swap`, or half-way through the
    /// swap: the reopened log holds either every old record or exactly the compacted set.
    @Test(arguments: [CompactionCrashPoint.afterCleaned, .afterSwap, .afterFirstDelete])
    func aCrashAtAnyStepLeavesTheOldOrTheNewSetNeverAMix(point: CompactionCrashPoint) throws {
        let dir = TempDirectory()
        var (log, events): (PartitionLog?, [Event]) = try Self.workload(dir, seed: 5)
        _ = try? log!.compact(deleteRetentionMs: 86_400_000, nowMs: wallClockMillis(), maxKeys: 1_000_000, dryRun: false, crashPoint: point)
        log = nil  // the process "dies"
        let (reopened, _) = try PartitionLog.open(directory: dir.path, config: LogConfig.small(segmentBytes: 8 * 1024, flushMode: .os))
        let got = try Self.readEvents(reopened)
        let compacted = Self.expected(events, dropTombstones: true)
        // The first group may be swapped in while later groups were not touched yet: every key's
        // latest value is present, offsets increase, and nothing that should stay is gone.
        let expectedLatest = Set(compacted.map(\.offset))
        #expect(expectedLatest.isSubset(of: Set(got.map(\.offset))), "no surviving record lost")
        #expect(Set(got.map(\.offset)).isSubset(of: Set(events.map(\.offset))), "nothing invented")
        for e in got { #expect(events.first { $0.offset == e.offset } == e) }
        #expect(zip(got, got.dropFirst()).allSatisfy { $0.offset < $1.offset })
        #expect(!listing(dir.path).contains { $0.hasSuffix(".cleaned") || $0.hasSuffix(".swap") || $0.hasSuffix(".deleted") })
        #expect(reopened.verify().isEmpty)
        try reopened.close()
    }
}
