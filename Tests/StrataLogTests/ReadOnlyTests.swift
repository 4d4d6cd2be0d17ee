import Foundation
import Testing
@testable import StrataLog

@Suite struct ReadOnlyTests {
    @Test func aReadOnlyOpenerFollowsAWriterAcrossRollsAndChangesNothing() throws {
        let dir = TempDirectory()
        let config = LogConfig.small(segmentBytes: 16 * 1024, flushMode: .os)
        let (writer, _) = try PartitionLog.open(directory: dir.path, config: config)
        for i in 0..<10 { try writer.append(makeBatch(first: i * 3, count: 3)) }
        let before = listing(dir.path).map { ($0, FileIO.fileSize(path: dir.file($0)) ?? -1) }

        let reader = try PartitionLog.openReadOnly(directory: dir.path, config: config)
        #expect(reader.logEndOffset == 30)
        #expect(try readAll(reader).map(\.0) == (0..<30).map(Int64.init))
        #expect(throws: LogError.self) { try reader.append(makeBatch(first: 0, count: 1)) }

        // The writer goes on, across several rolls; the reader catches up on refresh.
        for i in 10..<60 { try writer.append(makeBatch(first: i * 3, count: 3)) }
        #expect(writer.segmentCount >= 3, "the writer rolled while the reader was open")
        #expect(reader.logEndOffset == 30, "nothing new until refresh")
        #expect(try reader.refresh() == 180)
        let records = try readAll(reader)
        #expect(records.map(\.0) == (0..<180).map(Int64.init))
        for (offset, value) in records where value != event(Int(offset)) { Issue.record("offset \(offset) differs"); break }
        #expect(try reader.offset(forTimestamp: 1_700_000_000_000) == 0)
        #expect(reader.segmentCount == writer.segmentCount)

        // Files the reader opened were not touched by it (the writer's own changes aside).
        let afterOpen = Set(listing(dir.path))
        for (name, _) in before { #expect(afterOpen.contains(name)) }
        try writer.close()
    }

    @Test func aReadOnlyOpenerNeverSeesAHalfWrittenBatch() throws {
        let dir = TempDirectory()
        let config = LogConfig.small(flushMode: .os)
        let (writer, _) = try PartitionLog.open(directory: dir.path, config: config)
        try writer.append(makeBatch(first: 0, count: 5))
        // Simulate a batch in the middle of being written: valid header, torn body.
        let torn = makeBatch(first: 5, count: 5)
        let segmentPath = SegmentName.logPath(dir.path, 0)
        let fd = open(segmentPath, O_WRONLY)
        let size = writer.sizeInBytes
        _ = torn.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count / 2, off_t(size)) }
        close(fd)
        let reader = try PartitionLog.openReadOnly(directory: dir.path, config: config)
        #expect(reader.logEndOffset == 5)
        #expect(try readAll(reader).count == 5)
    }

    /// A read-only view walks the active segment without CRCs below the writer's checkpointed
    /// recovery point (synced and validated by the writer) and checks every CRC after it: a
    /// batch damaged past the recovery point ends the view there.
    @Test func aReadOnlyOpenerChecksCRCsPastTheRecoveryPoint() throws {
        let dir = TempDirectory()
        let config = LogConfig.small(flushMode: .os)
        let (writer, _) = try PartitionLog.open(directory: dir.path, config: config)
        for i in 0..<4 { try writer.append(makeBatch(first: i * 5, count: 5)) }
        let size = writer.sizeInBytes
        let batchBytes = size / 4
        try writer.close()  // checkpoint: recovery point 20
        let segmentPath = SegmentName.logPath(dir.path, 0)
        // Two more batches appended by "a writer that has not synced yet".
        let fd = open(segmentPath, O_RDWR)
        for (k, first) in [20, 25].enumerated() {
            var b = makeBatch(first: first, count: 5)
            b.withUnsafeMutableBytes { RecordBatch.setBaseOffset(Int64(first), in: $0) }
            _ = b.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, off_t(size + k * b.count)) }
        }
        // Damage the last byte of the second new batch (past the recovery point).
        var byte: UInt8 = 0
        let last = off_t(size + 2 * batchBytes - 1)
        _ = pread(fd, &byte, 1, last)
        byte ^= 0xFF
        _ = pwrite(fd, &byte, 1, last)
        close(fd)
        let reader = try PartitionLog.openReadOnly(directory: dir.path, config: config)
        #expect(reader.logEndOffset == 25, "the damaged batch past the recovery point ends the view")
        let records = try readAll(reader)
        #expect(records.map(\.0) == (0..<25).map(Int64.init))
        for (offset, value) in records where value != event(Int(offset)) { Issue.record("offset \(offset) differs"); break }
        // The batches walked by their headers alone are indexed as a full walk indexes them.
        #expect(try reader.offset(forTimestamp: 1_700_000_000_000) == 0)
        #expect(try reader.offset(forTimestamp: 1_700_000_000_003) == 3)
        #expect(try reader.read(from: 17).slice?.segmentBaseOffset == 0)
    }

    @Test func readOnlyManagerOpensAlongsideTheWriterLock() throws {
        let dir = TempDirectory()
        let writer = try LogManager.open(dataDirectory: dir.path)
        try writer.getOrCreateLog(topic: "t", partition: 0).append(makeBatch(first: 0, count: 4))
        let reader = try LogManager.openReadOnly(dataDirectory: dir.path)
        #expect(reader.log(topic: "t", partition: 0)?.logEndOffset == 4)
        #expect(throws: LogError.self) { try reader.getOrCreateLog(topic: "new", partition: 0) }
        try reader.close()
        try writer.close()
    }
}
