import Foundation
import Testing
@testable import StrataLog
import StrataCore

/// Batches a client could send that are CRC-valid but lie (issue #11): each is either refused
/// with nothing appended, or stored with a header that says what its records say; the partition
/// stays writable and readable, also after a reopen.
@Suite struct HostileBatchTests {
    /// `bytes` with its header field at `offset` replaced and the CRC made valid again.
    static func patched(_ bytes: [UInt8], _ edit: (UnsafeMutableRawBufferPointer) -> Void) -> [UInt8] {
        var copy = bytes
        copy.withUnsafeMutableBytes { p in
            edit(p)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(p)[RecordBatch.attributesOffset...]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: RecordBatch.crcOffset, as: UInt32.self)
        }
        return copy
    }

    static func setMaxTimestamp(_ bytes: [UInt8], _ ts: Int64) -> [UInt8] {
        patched(bytes) { $0.storeBytes(of: ts.bigEndian, toByteOffset: 35, as: Int64.self) }
    }

    static func batch(timestamps: [Int64], keyed: Bool = true) -> [UInt8] {
        RecordBatchBuilder.build(timestamps.enumerated().map { i, ts in
            ProducerRecord(key: keyed ? Array("k\(i)".utf8) : nil, value: Array("{\"i\":\(i)}".utf8), timestamp: ts)
        })
    }

    @Test func extremeTimestampsNeitherTrapNorBrickThePartition() throws {
        let dir = TempDirectory()
        var config = LogConfig.small(segmentBytes: 4096)
        config.segmentMs = 60_000
        let now = wallClockMillis()
        // The three sequences from the issue, each header also lying about its max, then more.
        let sequences: [[Int64]] = [[Int64.min], [now], [now], [Int64.min], [-1], [Int64.max], [now, now + 1]]
        do {
            let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
            for (i, timestamps) in sequences.enumerated() {
                var bytes = Self.batch(timestamps: timestamps)
                if i % 2 == 0 { bytes = Self.setMaxTimestamp(bytes, Int64.min) }
                try log.append(bytes)
            }
            #expect(log.logEndOffset == 8)
            _ = try log.offset(forTimestamp: now)
            _ = try log.applyRetention(retentionMs: 3_600_000, retentionBytes: -1, nowMs: now)
            try log.close()
        }
        // Reopened (cleanly and after a crash), the partition takes ordinary appends again.
        for clean in [true, false] {
            let (log, _) = try PartitionLog.open(directory: dir.path, config: config, cleanShutdown: clean)
            try log.append(Self.batch(timestamps: [now]))
            try log.append(Self.batch(timestamps: [Int64.min + 1]))
            #expect(try readAll(log).count == Int(log.logEndOffset - log.logStartOffset))
            try log.close()
        }
    }

    @Test func aTimestampDeltaThatOverflowsIsRefused() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small())
        // Records at Int64.max and Int64.min in one batch: base + delta cannot be represented.
        let bytes = Self.batch(timestamps: [Int64.max, Int64.min])
        #expect(throws: LogError.self) { try log.append(bytes) }
        #expect(log.logEndOffset == 0)
    }

    @Test func aHeaderMaxTimestampOfMinusOneIsRecomputedFromTheRecords() throws {
        // Sarama before 1.45.1 sends -1: time lookups and retention must see the real times.
        let dir = TempDirectory()
        var config = LogConfig.small(segmentBytes: 4096)
        config.indexIntervalBytes = 0
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        let now = wallClockMillis()
        for i in 0..<160 {
            let ts = now - 160_000 + Int64(i) * 1000
            let info = try log.append(Self.setMaxTimestamp(Self.batch(timestamps: [ts]), -1))
            #expect(info.maxTimestamp == ts)
        }
        #expect(log.segmentCount > 3)
        // Stored headers carry the records' time, with a valid CRC.
        let first = try log.read(from: 0, maxBytes: 1 << 20)
        try first.slice!.forEachBatch { batch in
            #expect(batch.maxTimestamp >= now - 160_000)
            try batch.validate(strictRecords: true)
        }
        #expect(try log.offset(forTimestamp: now - 100_000) == 60)
        let deleted = try log.applyRetention(retentionMs: 86_400_000, retentionBytes: -1, nowMs: now)
        #expect(deleted.segmentsDeleted == 0, "a day of retention deletes nothing written a moment ago")
        #expect(log.logStartOffset == 0)
    }

    @Test func aCompressedFlagOnAPayloadThatIsNotCompressedIsRefused() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small())
        for codec: Int16 in [1, 2, 3, 4] {
            let bytes = Self.patched(Self.batch(timestamps: [1, 2, 3])) { p in
                let attributes = (UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 21, as: UInt16.self)) & ~7) | UInt16(codec)
                p.storeBytes(of: attributes.bigEndian, toByteOffset: 21, as: UInt16.self)
            }
            #expect(throws: LogError.self) { try log.append(bytes) }
        }
        #expect(log.logEndOffset == 0)
        #expect(log.segmentCount == 1)
    }

    @Test func anInflatedRecordCountIsRefusedAndRollsNothing() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small())
        try log.append(Self.batch(timestamps: [1]))
        // A gzip batch of three records claiming 2^31-1 (count and lastOffsetDelta agree).
        let records = (0..<3).map { ProducerRecord(key: [1], value: [2], timestamp: Int64($0)) }
        let gz = try RecordBatchBuilder.build(records).withUnsafeBytes { try RecordBatch.reencoded($0, codec: .gzip) }
        for _ in 0..<300 {
            let inflated = Self.patched(gz) { p in
                p.storeBytes(of: Int32.max.bigEndian, toByteOffset: 57, as: Int32.self)
                p.storeBytes(of: (Int32.max - 1).bigEndian, toByteOffset: 23, as: Int32.self)
            }
            #expect(throws: LogError.self) { try log.append(inflated) }
        }
        #expect(log.logEndOffset == 1)
        #expect(log.segmentCount == 1)
        // The genuine gzip batch goes in.
        try log.append(gz)
        #expect(log.logEndOffset == 4)
    }

    @Test func compactedTopicsRefuseKeylessRecordsAndTimestampBoundsApply() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small())
        var policy = AppendPolicy()
        policy.requireKeys = true
        #expect(throws: LogError.invalidBatch(.missingKeys(indexes: [0]))) { try log.append(Self.batch(timestamps: [1], keyed: false), policy: policy) }
        policy = AppendPolicy()
        policy.timestampAfterMaxMs = 1000
        let now = wallClockMillis()
        #expect(throws: LogError.self) { try log.append(Self.batch(timestamps: [now + 60_000]), policy: policy) }
        try log.append(Self.batch(timestamps: [now]), policy: policy)
        policy.timestampType = .logAppendTime
        let info = try log.append(Self.batch(timestamps: [5]), policy: policy)
        #expect(info.maxTimestamp >= now)
        #expect(log.logEndOffset == 2)
    }

    @Test func theWindowedCleanerSurvivesExtremeTimestamps() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small(segmentBytes: 4096))
        for ts in [Int64.min, -1, 0, Int64.max, Int64.min + 1] {
            for _ in 0..<20 { try log.append(Self.batch(timestamps: [ts])) }
        }
        try log.roll()
        _ = try log.compact(strategy: .keyLatestWindowed(windowMs: 3_600_000), deleteRetentionMs: 0, nowMs: wallClockMillis())
        _ = try log.compact(strategy: .keyLatestWindowed(windowMs: 1), deleteRetentionMs: 0, nowMs: wallClockMillis())
        #expect(try readAll(log).count >= 5)
    }
}
