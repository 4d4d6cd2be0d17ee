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
}
