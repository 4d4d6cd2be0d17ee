import Foundation
import Testing
@testable import StrataLog

/// What a partition costs in descriptors, mappings and disk, asserted as bounds.
@Suite(.serialized) struct ResourceTests {
    /// Descriptors this process holds open on files under `directory`.
    static func descriptors(under directory: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { fd in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd))?.hasPrefix(directory) == true
        }.count
    }

    /// Blocks allocated to the files under `directory`, in bytes (what `du` counts).
    static func allocatedBytes(under directory: String) -> Int {
        var total = 0
        let e = FileManager.default.enumerator(atPath: directory)
        while let name = e?.nextObject() as? String {
            var st = stat()
            if lstat(directory + "/" + name, &st) == 0 { total += Int(st.st_blocks) * 512 }
        }
        return total
    }

    /// A partition keeps one descriptor (its active log) however many segments it rolled: the
    /// indexes hold none, and a rolled segment's is closed after its final sync.
    @Test func aPartitionHoldsOneDescriptorWhateverItsSegmentCount() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small(segmentBytes: 4096, flushMode: .sync))
        #expect(Self.descriptors(under: dir.path) <= 1, "an empty partition: its log only")
        for i in 0..<100 { try log.append(makeBatch(first: i * 5, count: 5)) }
        #expect(log.segmentCount > 20)
        let held = Self.descriptors(under: dir.path)
        #expect(held <= 1, "after \(log.segmentCount) segments: \(held) descriptors")
        #expect(try readAll(log).count == 500)
        try log.close()
        #expect(Self.descriptors(under: dir.path) == 0)
    }

    /// Closed segments are mapped on use and unmapped past `log.max.open.segments`, least
    /// recently used first; reading them again maps them again and reads the same records.
    @Test func closedSegmentsStayMappedOnlyWithinTheBudget() throws {
        let dir = TempDirectory()
        let previous = MappedSegments.shared.budget
        MappedSegments.shared.budget = 16
        defer { MappedSegments.shared.budget = previous }
        let config = LogConfig.small(segmentBytes: 4096, flushMode: .os)
        do {
            let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
            for i in 0..<300 { try log.append(makeBatch(first: i * 5, count: 5)) }
            try log.close()
        }
        // Reopened: every closed segment is unmapped until used.
        let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        let segments = log.segmentList.withLock { $0 }
        #expect(segments.count > 80)
        #expect(segments.dropLast().allSatisfy { !$0.isMapped })
        let evictionsBefore = MappedSegments.shared.evictionCount
        let first = try readAll(log)
        #expect(first.count == 1500)
        let mapped = segments.dropLast().filter(\.isMapped).count
        #expect(mapped <= 16, "\(mapped) closed segments mapped with a budget of 16")
        #expect(MappedSegments.shared.evictionCount > evictionsBefore)
        let again = try readAll(log)
        #expect(again.map(\.0) == first.map(\.0) && again.map(\.1) == first.map(\.1), "unmapped segments read the same after remapping")
        #expect(log.verify().isEmpty)
        try log.close()
    }

    /// An idle partition's files take a page per index and nothing for the log, and a partition
    /// with a little data grows by pages, not by segments.
    @Test func anIdlePartitionTakesKilobytesOfDisk() throws {
        let dir = TempDirectory()
        var logs: [PartitionLog] = []
        for p in 0..<50 {
            let (log, _) = try PartitionLog.open(directory: dir.path + "/t-\(p)", config: LogConfig())
            logs.append(log)
        }
        let idle = Self.allocatedBytes(under: dir.path)
        #expect(idle / 50 <= 16 * 1024, "\(idle / 50) bytes per idle partition")
        for (p, log) in logs.enumerated() { try log.append(makeBatch(first: 0, count: 1 + p % 3)) }
        let used = Self.allocatedBytes(under: dir.path)
        #expect(used / 50 <= 32 * 1024, "\(used / 50) bytes per partition holding one small batch")
        for log in logs { try log.close() }
    }

    /// Reopening and closing a partition nothing was written to changes none of its files (no
    /// reservation, trim, checkpoint or sync): a broker of thousands of idle partitions starts
    /// and stops without touching them.
    @Test func anIdlePartitionsReopenAndCloseChangeNoFile() throws {
        let dir = TempDirectory()
        do {
            let (log, _) = try PartitionLog.open(directory: dir.path, config: LogConfig())
            for i in 0..<20 { try log.append(makeBatch(first: i * 3, count: 3)) }
            try log.close()
        }
        func snapshot() -> [String: String] {
            var files: [String: String] = [:]
            for name in listing(dir.path) {
                var st = stat()
                if lstat(dir.path + "/" + name, &st) == 0 {
                    files[name] = "\(st.st_size) \(st.st_blocks) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_ino)"
                }
            }
            return files
        }
        let before = snapshot()
        for _ in 0..<2 {
            let (log, report) = try PartitionLog.open(directory: dir.path, config: LogConfig(), cleanShutdown: true)
            #expect(report.warnings.isEmpty)
            #expect(log.logEndOffset == 60)
            try log.close()
        }
        #expect(snapshot() == before, "files changed by an idle reopen and close")
    }
}


@Suite struct SegmentNameTests {
    @Test func namesParseExactlyAsKafkaWritesThem() {
        #expect(SegmentName.parse(SegmentName.base(42) + ".log", suffix: ".log") == 42)
        #expect(SegmentName.parse(SegmentName.base(Int64.max) + ".timeindex", suffix: ".timeindex") == Int64.max)
        #expect(SegmentName.parse(SegmentName.base(7) + ".index", suffix: ".log") == nil, "another suffix")
        #expect(SegmentName.parse("0000000000000000042.log", suffix: ".log") == nil, "19 digits")
        #expect(SegmentName.parse("0000000000000000004x.log", suffix: ".log") == nil, "not a digit")
        #expect(SegmentName.parse("99999999999999999999.log", suffix: ".log") == nil, "past Int64")
        #expect(SegmentName.parse("00000000000000000042.log.swap", suffix: ".log") == nil)
        #expect(SegmentName.parse("００000000000000000042.log", suffix: ".log") == nil, "non-ASCII digits")
    }
}
