import Testing
@testable import StrataLog

/// I/O failures injected at the syscall wrappers (scoped to each test's directory).
@Suite struct FaultTests {
    @Test func aFailedFsyncMakesThePartitionReadOnlyWithoutRetrying() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small(flushMode: .sync))
        try log.append(makeBatch(first: 0, count: 2))
        FileIO.inject(.datasyncEIO, under: dir.path)
        #expect(throws: LogError.self) { try log.append(makeBatch(first: 2, count: 2)) }
        #expect(log.isReadOnly)
        // No silent retry: later appends and flushes keep failing, even though fsync would work now.
        do {
            try log.append(makeBatch(first: 4, count: 2))
            Issue.record("append accepted after a failed fsync")
        } catch {
            guard case .readOnly = error else { Issue.record("expected readOnly, got \(error)"); return }
        }
        #expect(throws: LogError.self) { try log.flush() }
        #expect(log.recoveryPoint == 2, "the recovery point never covers the unsynced batch")
    }

    @Test func aFullDiskAtRollIsAnErrorAndAppendsNothing() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small(segmentBytes: 4096, flushMode: .os))
        // The first append reserves the whole (small) segment; the next reservation is the roll's.
        try log.append(makeBatch(first: 0, count: 2, valueSize: 100))
        FileIO.inject(.fallocateENOSPC, under: dir.path)  // taken by the first roll
        var failure: LogError?
        for _ in 0..<100 {
            let endBefore = log.logEndOffset
            let sizeBefore = log.sizeInBytes
            do {
                try log.append(makeBatch(first: Int(endBefore), count: 2, valueSize: 100))
            } catch {
                failure = error
                #expect(log.logEndOffset == endBefore, "nothing appended")
                #expect(log.sizeInBytes == sizeBefore)
                break
            }
        }
        guard case .io(let op, _, let e)? = failure else { Issue.record("no ENOSPC seen: \(String(describing: failure))"); return }
        #expect(e == 28 && op.hasPrefix("fallocate"))
        #expect(log.segmentCount == 1)
        #expect(listing(dir.path).filter { $0.hasSuffix(".log") } == [SegmentName.base(0) + ".log"], "the failed segment left no file")
        // Once space is back the same append succeeds, and nothing before it was harmed.
        let end = log.logEndOffset
        try log.append(makeBatch(first: Int(end), count: 2, valueSize: 100))
        #expect(log.segmentCount == 2)
        #expect(try readAll(log).count == Int(end) + 2)
        #expect(log.verify().isEmpty)
        try log.close()
    }

    /// The active segment's file grows in steps as data arrives; a full disk at a step is an
    /// error for that append only (nothing written, the partition stays writable), and the same
    /// append succeeds once space is back.
    @Test func aFullDiskAtAReservationStepIsAnErrorForThatAppendOnly() throws {
        let dir = TempDirectory()
        var config = LogConfig.small(segmentBytes: 4 << 20, flushMode: .os)
        config.reserveStepBytes = 256 * 1024
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        let logFile = dir.path + "/" + SegmentName.base(0) + ".log"
        func fileSize() -> Int { FileIO.fileSize(path: logFile) ?? -1 }
        #expect(fileSize() == 0, "an empty partition reserves no log space")
        try log.append(makeBatch(first: 0, count: 2, valueSize: 100))
        let firstStep = fileSize()
        #expect(firstStep == 4096, "the first step is a page, not the segment")
        FileIO.inject(.fallocateENOSPC, under: dir.path)
        var failure: LogError?
        for _ in 0..<2000 {
            let endBefore = log.logEndOffset
            do {
                try log.append(makeBatch(first: Int(endBefore), count: 2, valueSize: 100))
            } catch {
                failure = error
                #expect(log.logEndOffset == endBefore, "nothing appended")
                break
            }
        }
        guard case .io(let op, _, let e)? = failure else { Issue.record("no ENOSPC seen: \(String(describing: failure))"); return }
        #expect(e == 28 && op.hasPrefix("fallocate"))
        #expect(!log.isReadOnly, "a failed reservation does not fence the partition")
        #expect(log.segmentCount == 1)
        #expect(fileSize() == firstStep, "the failed step left the file as it was")
        let end = log.logEndOffset
        for i in 0..<200 { try log.append(makeBatch(first: Int(end) + 2 * i, count: 2, valueSize: 100)) }
        let grown = fileSize()
        #expect(grown > firstStep, "grown in steps")
        #expect(grown >= log.sizeInBytes)
        #expect(grown <= 2 * log.sizeInBytes + 4096, "doubling steps: never more than the data again")
        // Past the configured step the file stays at most one step (256 KiB here) ahead.
        var next = Int(end) + 400
        while log.sizeInBytes < 1 << 20 {
            try log.append(makeBatch(first: next, count: 2, valueSize: 1000))
            next += 2
        }
        #expect(fileSize() - log.sizeInBytes <= 256 * 1024 + 4096, "at most one configured step ahead")
        #expect(try readAll(log).count == next)
        #expect(log.verify().isEmpty)
        let dataBytes = log.sizeInBytes
        try log.close()
        #expect(fileSize() == dataBytes, "a clean close trims the reservation")
    }
}
