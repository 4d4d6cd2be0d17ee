import Foundation
import Testing
@testable import StrataLog
import StrataCore

@Suite struct RetentionTests {
    /// 10 closed segments of 4 batches each, record time t0 + segment index hours.
    func makeLog(_ dir: TempDirectory, now: Int64) throws -> PartitionLog {
        var config = LogConfig.small(segmentBytes: 16 * 1024)
        config.segmentMs = Int64.max / 2
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        for s in 0..<10 {
            for b in 0..<4 { try log.append(makeBatch(first: (s * 4 + b) * 3, count: 3, timestamp: now - Int64(10 - s) * 3_600_000)) }
            try log.roll()
        }
        return log
    }

    @Test func timeRetentionDeletesExactlyTheExpiredClosedSegments() throws {
        let dir = TempDirectory()
        let now = wallClockMillis()
        let log = try makeLog(dir, now: now)
        let segmentsBefore = log.segmentCount
        // Segments hold times now-10h ... now-1h; keep 4.5 hours.
        let result = try log.applyRetention(retentionMs: 4 * 3_600_000 + 1_800_000, retentionBytes: -1, nowMs: now)
        #expect(result.segmentsDeleted == 6)
        #expect(log.segmentCount == segmentsBefore - 6)
        #expect(log.logStartOffset == 6 * 12)
        #expect(result.logStartOffset == 72)
        #expect(throws: LogError.self) { try log.read(from: 0) }
        #expect(try readAll(log).first?.0 == 72)
        #expect(!listing(dir.path).contains { $0.hasPrefix(SegmentName.base(0)) && $0.hasSuffix(".log") })
        // Nothing more expires a second time.
        #expect(try log.applyRetention(retentionMs: 4 * 3_600_000 + 1_800_000, retentionBytes: -1, nowMs: now).segmentsDeleted == 0)
        try log.close()
        // The log start survives a restart (checkpoint), clean or not.
        let (reopened, _) = try PartitionLog.open(directory: dir.path, config: log.config, cleanShutdown: true)
        #expect(reopened.logStartOffset == 72)
        try reopened.close()
    }

    @Test func theActiveSegmentIsNeverDeleted() throws {
        let dir = TempDirectory()
        let now = wallClockMillis()
        let log = try makeLog(dir, now: now)
        try log.append(makeBatch(first: 120, count: 3, timestamp: now - 100 * 3_600_000))
        let result = try log.applyRetention(retentionMs: 1, retentionBytes: 0, nowMs: now)
        #expect(log.segmentCount == 1, "only the active segment is left")
        #expect(result.segmentsDeleted == 10)
        #expect(log.logEndOffset == 123)
        #expect(try readAll(log).map(\.0) == [120, 121, 122])
        try log.close()
    }

    @Test func sizeRetentionKeepsThePartitionUnderTheLimit() throws {
        let dir = TempDirectory()
        let log = try makeLog(dir, now: wallClockMillis())
        let perSegment = try log.segmentInfos()[0].sizeInBytes
        let result = try log.applyRetention(retentionMs: -1, retentionBytes: Int64(perSegment * 3 + 10))
        // Kafka's rule: delete the oldest segment while what remains is still at least
        // retention.bytes, so a partition holds between retention.bytes and one segment more.
        #expect(result.segmentsDeleted == 6)
        #expect(log.sizeInBytes >= perSegment * 3 + 10)
        let oldest = try log.segmentInfos()[0].sizeInBytes
        #expect(log.sizeInBytes - oldest < perSegment * 3 + 10, "one segment fewer would be below the limit")
        try log.close()
    }

    @Test func futureTimestampsDoNotPinASegmentForever() throws {
        let dir = TempDirectory()
        let now = wallClockMillis()
        var config = LogConfig.small(segmentBytes: 16 * 1024)
        config.segmentMs = Int64.max / 2
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        try log.append(makeBatch(first: 0, count: 3, timestamp: now + 365 * 86_400_000))  // a producer clock a year ahead
        try log.roll()
        try log.append(makeBatch(first: 3, count: 3, timestamp: now))
        // The segment was last written two days ago (as far as the file system says).
        let path = SegmentName.logPath(dir.path, 0)
        var times = [timespec(tv_sec: Int(now / 1000) - 2 * 86_400, tv_nsec: 0), timespec(tv_sec: Int(now / 1000) - 2 * 86_400, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
        let result = try log.applyRetention(retentionMs: 86_400_000, retentionBytes: -1, nowMs: now)
        #expect(result.segmentsDeleted == 1, "expired by its write time, despite record times a year ahead")
        try log.close()
    }

    @Test func deleteRecordsMovesTheLogStart() throws {
        let dir = TempDirectory()
        let log = try makeLog(dir, now: wallClockMillis())
        #expect(try log.deleteRecords(before: 30) == 30)
        #expect(log.logStartOffset == 30)
        #expect(log.segmentBaseOffsets.first == 24, "segments entirely below 30 are gone")
        #expect(try readAll(log).first?.0 == 30)
        #expect(throws: LogError.self) { try log.deleteRecords(before: log.logEndOffset + 1) }
        try log.close()
        let (reopened, _) = try PartitionLog.open(directory: dir.path, config: log.config)
        #expect(reopened.logStartOffset == 30, "persisted")
        try reopened.close()
    }

    @Test func readersAndRetentionRunConcurrently() async throws {
        let dir = TempDirectory()
        var config = LogConfig.small(segmentBytes: 8 * 1024)
        config.segmentMs = Int64.max / 2
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        for i in 0..<200 { try log.append(makeBatch(first: i * 2, count: 2)) }
        let reader = Task.detached { () -> Int in
            var reads = 0
            for _ in 0..<200 {
                let start = log.logStartOffset
                guard let r = try? log.read(from: start, maxBytes: 4096), let slice = r.slice else { continue }
                // Every byte of a slice stays readable even if its segment is deleted meanwhile.
                try slice.forEachBatch { try $0.validate(strictRecords: false) }
                reads += 1
            }
            return reads
        }
        for bytes in stride(from: 60_000, through: 0, by: -10_000) {
            try log.applyRetention(retentionMs: -1, retentionBytes: Int64(bytes))
        }
        let reads = try await reader.value
        #expect(reads > 0)
        #expect(log.segmentCount == 1)
        try log.close()
    }
}
