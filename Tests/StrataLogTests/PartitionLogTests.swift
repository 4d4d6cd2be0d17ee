import Foundation
import Testing
@testable import StrataLog
import StrataCore

@Suite struct PartitionLogTests {
    @Test func appendAssignsOffsetsAndReadsBackByteIdentical() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small())
        var appended: [[UInt8]] = []
        for i in 0..<20 {
            let batch = makeBatch(first: i * 10, count: 10)
            let info = try log.append(batch)
            #expect(info.baseOffset == Int64(i * 10))
            #expect(info.lastOffset == Int64(i * 10 + 9))
            appended.append(batch)
        }
        #expect(log.logEndOffset == 200)
        // Reading whole batches back gives exactly the appended bytes, except the rewritten baseOffset.
        var offset: Int64 = 0
        var i = 0
        while offset < log.logEndOffset {
            let result = try log.read(from: offset, maxBytes: 1)  // at least one batch even when it exceeds maxBytes
            let slice = try #require(result.slice)
            var expected = appended[i]
            expected.withUnsafeMutableBytes { RecordBatch.setBaseOffset(offset, in: $0) }
            #expect(Array(slice.bytes) == expected)
            offset = result.nextOffset
            i += 1
        }
        #expect(i == 20)
        #expect(try log.read(from: 200).isEmpty)
        #expect(throws: LogError.self) { try log.read(from: 201) }
        #expect(throws: LogError.self) { try log.read(from: -1) }
        try log.close()
    }

    /// Small batches are copied into the mapping, large ones written with pwritev: both must read
    /// back byte for byte, interleaved in one segment, before and after a reopen.
    @Test func smallAndLargeBatchesInterleaveByteIdentical() throws {
        let dir = TempDirectory()
        let config = LogConfig.small(segmentBytes: 1 << 20)
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        var expected: [[UInt8]] = []
        var next = 0
        for count in [1, 90, 3, 200, 1, 1, 150, 7] {
            var batch = makeBatch(first: next, count: count)
            try log.append(batch)
            batch.withUnsafeMutableBytes { RecordBatch.setBaseOffset(Int64(next), in: $0) }
            expected.append(batch)
            next += count
        }
        #expect(expected.contains { $0.count >= LogSegment.writeSyscallThreshold })
        #expect(expected.contains { $0.count < LogSegment.writeSyscallThreshold })
        func check(_ log: PartitionLog) throws {
            var offset: Int64 = 0
            var got: [[UInt8]] = []
            while offset < log.logEndOffset {
                let r = try log.read(from: offset, maxBytes: 1)
                got.append(Array(r.slice!.bytes))
                offset = r.nextOffset
            }
            #expect(got == expected)
        }
        try check(log)
        try log.flush()
        try check(PartitionLog.open(directory: dir.path, config: config).0)  // unclean: validates every byte
    }

    @Test func readFromTheMiddleOfABatchReturnsThatBatch() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small())
        try log.append(makeBatch(first: 0, count: 10))
        try log.append(makeBatch(first: 10, count: 10))
        let result = try log.read(from: 15, maxBytes: 1)
        var bases: [Int64] = []
        result.slice!.forEachBatch { bases.append($0.baseOffset) }
        #expect(bases == [10])
        #expect(result.nextOffset == 20)
        try log.close()
    }

    @Test func invalidBatchesAreRefusedAndAppendNothing() throws {
        let dir = TempDirectory()
        var config = LogConfig.small()
        config.maxMessageBytes = 4096
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        try log.append(makeBatch(first: 0, count: 2))
        let sizeBefore = log.sizeInBytes

        var badCRC = makeBatch(first: 2, count: 2)
        badCRC[70] ^= 0xFF
        var badMagic = makeBatch(first: 2, count: 2)
        badMagic[16] = 1
        var badLength = makeBatch(first: 2, count: 2)
        badLength.withUnsafeMutableBytes { $0.storeBytes(of: Int32(10).bigEndian, toByteOffset: 8, as: Int32.self) }
        let tooLarge = makeBatch(first: 2, count: 40)
        #expect(tooLarge.count > 4096)

        for (bytes, check) in [
            (badCRC, { (e: RecordBatchError) in if case .crcMismatch = e { true } else { false } }),
            (badMagic, { $0 == .badMagic(1) }),
            (badLength, { if case .lengthMismatch = $0 { true } else { false } }),
            (tooLarge, { if case .tooLarge = $0 { true } else { false } }),
        ] as [([UInt8], (RecordBatchError) -> Bool)] {
            do {
                try log.append(bytes)
                Issue.record("a bad batch was accepted")
            } catch {
                if case .invalidBatch(let e) = error {
                    #expect(check(e), "unexpected error \(e)")
                } else {
                    Issue.record("unexpected error \(error)")
                }
            }
        }
        #expect(log.logEndOffset == 2)
        #expect(log.sizeInBytes == sizeBefore)
        #expect(try readAll(log).count == 2)
        try log.close()
    }

    @Test func rollsOnSegmentBytes() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small(segmentBytes: 16 * 1024))
        for i in 0..<40 { try log.append(makeBatch(first: i * 5, count: 5)) }  // ~1.2 KiB each
        #expect(log.segmentCount > 2)
        let bases = log.segmentBaseOffsets
        #expect(bases.first == 0)
        #expect(bases == bases.sorted())
        for info in try log.segmentInfos() { #expect(info.sizeInBytes <= 16 * 1024) }
        // Closed segments are trimmed to their batches on disk.
        for base in bases.dropLast() {
            let size = FileIO.fileSize(path: SegmentName.logPath(dir.path, base))!
            #expect(size <= 16 * 1024 && size > 0)
        }
        #expect(try readAll(log).map(\.0) == (0..<200).map(Int64.init))
        try log.close()
    }

    @Test func rollsOnSegmentMs() throws {
        let dir = TempDirectory()
        var config = LogConfig.small()
        config.segmentMs = 60_000
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        try log.append(makeBatch(first: 0, count: 3, timestamp: 1_000_000))
        try log.append(makeBatch(first: 3, count: 3, timestamp: 1_000_000 + 30_000))
        #expect(log.segmentCount == 1)
        try log.append(makeBatch(first: 6, count: 3, timestamp: 1_000_000 + 61_000))
        #expect(log.segmentBaseOffsets == [0, 6])
        try log.close()
    }

    @Test func rollsWhenAnIndexIsFull() throws {
        let dir = TempDirectory()
        var config = LogConfig.small(indexIntervalBytes: 0)  // an index entry for every batch after the first
        config.segmentIndexBytes = 12 * 4                    // 4 time index entries, 6 offset entries
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        for i in 0..<20 { try log.append(makeBatch(first: i, count: 1, timestamp: 1000 + Int64(i))) }
        #expect(log.segmentCount >= 4)
        #expect(try readAll(log).count == 20)
        try log.close()
    }

    @Test func rollsBeforeRelativeOffsetsOverflow() throws {
        let dir = TempDirectory()
        let segment = try LogSegment.create(directory: dir.path, baseOffset: 0, config: .small())
        try makeBatch(first: 0, count: 1).withUnsafeBytes { p in
            try segment.reserveRoom(for: p.count)
            try segment.append(batch: p, baseOffset: 0, lastOffset: 0, maxTimestamp: 0)
        }
        #expect(segment.shouldRoll(batchSize: 100, lastOffset: Int64(Int32.max), maxTimestamp: 0, nowMs: monotonicMillis()) == nil)
        #expect(segment.shouldRoll(batchSize: 100, lastOffset: Int64(Int32.max) + 1, maxTimestamp: 0, nowMs: monotonicMillis()) == "relative offset overflow")
    }

    @Test func offsetForTimestampFindsFirstRecordAtOrAfter() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small(segmentBytes: 8 * 1024, indexIntervalBytes: 512))
        // 100 batches of 4 records, record i has timestamp 10_000 + 10*i.
        for b in 0..<100 {
            let records = (0..<4).map { j in ProducerRecord(value: event(b * 4 + j, size: 100), timestamp: 10_000 + Int64((b * 4 + j) * 10)) }
            try log.append(RecordBatchBuilder.build(records))
        }
        #expect(log.segmentCount > 3)
        for i in stride(from: 0, to: 400, by: 7) {
            let ts = 10_000 + Int64(i * 10)
            #expect(try log.offset(forTimestamp: ts) == Int64(i))
            #expect(try log.offset(forTimestamp: ts - 5) == Int64(i), "between records")
        }
        #expect(try log.offset(forTimestamp: 0) == 0)
        #expect(try log.offset(forTimestamp: 10_000 + 3990) == 399)
        #expect(try log.offset(forTimestamp: 10_000 + 3991) == nil)
        try log.close()
        // Same answers after a clean reopen, from the sealed indexes.
        let (reopened, _) = try PartitionLog.open(directory: dir.path, config: .small(segmentBytes: 8 * 1024, indexIntervalBytes: 512), cleanShutdown: true)
        for i in stride(from: 3, to: 400, by: 11) {
            #expect(try reopened.offset(forTimestamp: 10_000 + Int64(i * 10)) == Int64(i))
        }
        try reopened.close()
    }

    @Test func timestampsGoingBackwardsStillFindTheFirstQualifyingRecord() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small(indexIntervalBytes: 0))
        let stamps: [Int64] = [500, 100, 900, 300, 1000, 200]
        for (i, ts) in stamps.enumerated() { try log.append(RecordBatchBuilder.build([ProducerRecord(value: event(i), timestamp: ts)])) }
        #expect(try log.offset(forTimestamp: 400) == 0)
        #expect(try log.offset(forTimestamp: 600) == 2)
        #expect(try log.offset(forTimestamp: 950) == 4)
        #expect(try log.offset(forTimestamp: 1001) == nil)
        try log.close()
    }

    @Test func cleanReopenTrustsFilesAndContinuesOffsets() throws {
        let dir = TempDirectory()
        let config = LogConfig.small(segmentBytes: 8 * 1024)
        do {
            let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
            for i in 0..<30 { try log.append(makeBatch(first: i * 3, count: 3)) }
            try log.close()
        }
        let (log, report) = try PartitionLog.open(directory: dir.path, config: config, cleanShutdown: true)
        #expect(report.segmentsRecovered == 0, "nothing rescanned after a clean shutdown")
        #expect(log.logEndOffset == 90)
        #expect(log.recoveryPoint == 90)
        try log.append(makeBatch(first: 90, count: 3))
        #expect(try readAll(log).map(\.0) == (0..<93).map(Int64.init))
        try log.close()
    }

    @Test func readersKeepADeletedSegmentMapped() throws {
        let dir = TempDirectory()
        let segment = try LogSegment.create(directory: dir.path, baseOffset: 0, config: .small())
        let batch = makeBatch(first: 0, count: 5)
        try segment.reserveRoom(for: batch.count)
        try batch.withUnsafeBytes { try segment.append(batch: $0, baseOffset: 0, lastOffset: 4, maxTimestamp: 0) }
        let slice = try #require(try segment.read(from: 0, maxBytes: 1 << 20))
        try segment.markDeleted()
        #expect(!FileManager.default.fileExists(atPath: segment.logPath))
        #expect(FileManager.default.fileExists(atPath: segment.logPath + ".deleted"), "unlinked only when the last reader is done")
        #expect(Array(slice.bytes) == batch, "the reader still sees the bytes")
        _ = consume slice
        _ = consume segment
        #expect(listing(dir.path).filter { $0.hasSuffix(".deleted") }.isEmpty)
    }

    @Test func concurrentReadersSeeOnlyWholeBatchesWhileAWriterAppends() async throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small(segmentBytes: 32 * 1024))
        let batches = 400
        let writer = Task.detached {
            for i in 0..<batches { try log.append(makeBatch(first: i * 2, count: 2)) }
        }
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    var offset: Int64 = 0
                    var seen = 0
                    while offset < Int64(batches * 2) {
                        let result = try log.read(from: offset, maxBytes: 4096)
                        guard let slice = result.slice else { await Task.yield(); continue }
                        try slice.forEachBatch { batch in
                            try batch.validate(strictRecords: false)  // whole, CRC-valid batches only
                            try batch.forEachRecord { r in
                                if r.offset >= offset {
                                    precondition(Array(r.value!) == event(Int(r.offset)), "record \(r.offset) has wrong bytes")
                                    seen += 1
                                }
                            }
                        }
                        offset = result.nextOffset
                    }
                    return seen
                }
            }
            for try await seen in group { #expect(seen == batches * 2) }
        }
        try await writer.value
        try log.close()
    }
}
