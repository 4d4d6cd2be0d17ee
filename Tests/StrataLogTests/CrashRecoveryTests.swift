import Foundation
import Testing
@testable import StrataLog

/// A log left behind by a "crash": appended in one process, never closed. The active segment is
/// still fallocated to full size with a zero tail, indexes are preallocated, the checkpoint is stale.
struct CrashedLog {
    let dir: TempDirectory
    let config: LogConfig
    /// (end position in the active segment, next offset) of each batch in the active segment.
    let activeBatchEnds: [(position: Int, nextOffset: Int64)]
    let activeBase: Int64
    let activeBytes: [UInt8]
    let timestampOfOffset: (Int64) -> Int64

    static func make(batches: Int = 120, recordsPerBatch: Int = 3, segmentBytes: Int = 16 * 1024) throws -> CrashedLog {
        let dir = TempDirectory("strata-crash")
        var config = LogConfig.small(segmentBytes: segmentBytes, flushMode: .os, indexIntervalBytes: 256)
        config.checkpointIntervalMs = 0
        do {
            let (log, _) = try PartitionLog.open(directory: dir.path, config: config)
            for b in 0..<batches {
                let first = b * recordsPerBatch
                let records = (0..<recordsPerBatch).map { j in
                    ProducerRecord(key: Array("k\(first + j)".utf8), value: event(first + j, size: 60 + (first + j) % 50),
                                   timestamp: 1_000_000 + Int64(first + j) * 10)
                }
                try log.append(RecordBatchBuilder.build(records))
                if b == batches / 2 { try log.flush() }  // a checkpoint somewhere in the middle
            }
            #expect(log.segmentCount >= 3)
            // No close: the process "dies" here.
        }
        let bases = listing(dir.path).compactMap { SegmentName.parse($0, suffix: ".log") }.sorted()
        let activeBase = bases.last!
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: SegmentName.logPath(dir.path, activeBase))))
        var ends: [(Int, Int64)] = []
        var position = 0
        bytes.withUnsafeBytes { p in
            while let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: p[position...])), position + size <= p.count {
                let batch = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: p[position..<position + size]))
                position += size
                ends.append((position, batch.nextOffset))
            }
        }
        return CrashedLog(dir: dir, config: config, activeBatchEnds: ends, activeBase: activeBase, activeBytes: bytes,
                          timestampOfOffset: { 1_000_000 + $0 * 10 })
    }

    var validEnd: Int { activeBatchEnds.last!.position }

    /// The next offset the log must have when the active segment holds only `bytes` bytes intact.
    func expectedNextOffset(validBytes: Int) -> Int64 {
        activeBatchEnds.last(where: { $0.position <= validBytes })?.nextOffset ?? activeBase
    }

    /// Copies the crashed directory with the active segment replaced by `activeContent`.
    func variant(activeContent: [UInt8]) throws -> TempDirectory {
        let copy = TempDirectory("strata-variant")
        for name in listing(dir.path) {
            try FileManager.default.copyItem(atPath: dir.file(name), toPath: copy.file(name + ".copying"))
            try FileManager.default.moveItem(atPath: copy.file(name + ".copying"), toPath: copy.file(name))
        }
        try Data(activeContent).write(to: URL(fileURLWithPath: SegmentName.logPath(copy.path, activeBase)))
        return copy
    }
}

/// After recovery: offsets 0..<next readable with the right bytes, time lookups agree, appends continue.
func checkRecovered(_ log: PartitionLog, expectedNext: Int64, timestampOf: (Int64) -> Int64, context: String) throws {
    #expect(log.logEndOffset == expectedNext, "\(context): log end")
    let records = try readAll(log, maxBytes: 2048)
    #expect(records.count == Int(expectedNext), "\(context): record count")
    for (offset, value) in records where value != event(Int(offset), size: 60 + Int(offset) % 50) {
        Issue.record("\(context): offset \(offset) has the wrong bytes")
        break
    }
    // Indexes agree with the log: time lookups land on the exact record.
    for offset in stride(from: Int64(0), to: expectedNext, by: 37) {
        #expect(try log.offset(forTimestamp: timestampOf(offset)) == offset, "\(context): time lookup \(offset)")
    }
    let info = try log.append(makeBatch(first: 0, count: 2))
    #expect(info.baseOffset == expectedNext, "\(context): appends continue at the log end")
    #expect(log.verify().isEmpty, "\(context): verify after recovery")
}

@Suite(.serialized) struct CrashRecoveryTests {
    @Test func uncleanReopenKeepsEverythingAProcessCrashLeaves() throws {
        let crashed = try CrashedLog.make()
        let (log, report) = try PartitionLog.open(directory: crashed.dir.path, config: crashed.config)
        #expect(report.segmentsRecovered >= 1)
        #expect(report.segmentsRecovered < log.segmentCount, "segments below the recovery point are not rescanned")
        #expect(report.bytesTruncated == 0, "the zero tail of the active segment is not damage")
        #expect(report.warnings.isEmpty)
        try checkRecovered(log, expectedNext: 360, timestampOf: crashed.timestampOfOffset, context: "crash")
        try log.close()
    }

    @Test func truncationAtEveryByteOfTheLast4KiBYieldsTheValidPrefix() throws {
        let crashed = try CrashedLog.make()
        let end = crashed.validEnd
        let from = max(0, end - 4096)
        var checked = 0
        for cut in from...end {
            let variant = try crashed.variant(activeContent: Array(crashed.activeBytes[0..<cut]))
            let expected = crashed.expectedNextOffset(validBytes: cut)
            let (log, report) = try PartitionLog.open(directory: variant.path, config: crashed.config)
            #expect(log.logEndOffset == expected, "cut at \(cut)")
            // A partial batch is reported as truncated damage, unless what is left of it is all
            // zeros: that cannot be told from the preallocated tail, and nothing is lost either way.
            let lastWhole = crashed.activeBatchEnds.last(where: { $0.position <= cut })?.position ?? 0
            let remnantIsData = crashed.activeBytes[lastWhole..<cut].contains { $0 != 0 }
            #expect((report.bytesTruncated > 0) == remnantIsData, "cut at \(cut): truncation reported iff a partial batch was dropped")
            // Full checks (reads, time index, appends) on a sample; the log end on every cut.
            if cut % 97 == 0 || cut == end || cut == from {
                try checkRecovered(log, expectedNext: expected, timestampOf: crashed.timestampOfOffset, context: "cut at \(cut)")
            }
            try log.close()
            checked += 1
        }
        #expect(checked == end - from + 1)
    }

    @Test func garbledTailBytesCutTheLogAtTheDamagedBatch() throws {
        let crashed = try CrashedLog.make()
        let end = crashed.validEnd
        var rng = SeededRandom(seed: 2026)
        for position in stride(from: max(0, end - 4096), to: end, by: 13) {
            var bytes = Array(crashed.activeBytes[0..<end])
            bytes[position] ^= UInt8.random(in: 1...255, using: &rng)
            let batchStart = ([0] + crashed.activeBatchEnds.map(\.position)).last(where: { $0 <= position })!
            let inEpoch = (12..<16).contains(position - batchStart)  // partitionLeaderEpoch: outside the CRC, unused
            let expected = inEpoch ? crashed.activeBatchEnds.last!.nextOffset : crashed.expectedNextOffset(validBytes: batchStart)
            let variant = try crashed.variant(activeContent: bytes)
            let (log, report) = try PartitionLog.open(directory: variant.path, config: crashed.config)
            #expect(log.logEndOffset == expected, "garbled byte at \(position) (batch at \(batchStart))")
            #expect(inEpoch || report.bytesTruncated == end - batchStart, "garbled byte at \(position)")
            if position % 5 == 0 {
                try checkRecovered(log, expectedNext: expected, timestampOf: crashed.timestampOfOffset, context: "garbled \(position)")
            }
            try log.close()
        }
    }

    @Test func garbageAppendedAfterTheLastBatchIsCut() throws {
        let crashed = try CrashedLog.make()
        var bytes = Array(crashed.activeBytes[0..<crashed.validEnd])
        var rng = SeededRandom(seed: 3)
        bytes += (0..<3000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let variant = try crashed.variant(activeContent: bytes)
        let (log, report) = try PartitionLog.open(directory: variant.path, config: crashed.config)
        #expect(report.bytesTruncated == 3000)
        #expect(report.warnings.count == 1)
        try checkRecovered(log, expectedNext: 360, timestampOf: crashed.timestampOfOffset, context: "garbage tail")
        try log.close()
    }

    @Test(arguments: ["delete", "empty", "partial", "garbage", "beyond"])
    func damagedIndexFilesAreRebuilt(_ damage: String) throws {
        let crashed = try CrashedLog.make()
        for clean in [false, true] {
            let variant = try crashed.variant(activeContent: crashed.activeBytes)
            if clean {
                // Make it a clean shutdown first, then damage the sealed files.
                let (log, _) = try PartitionLog.open(directory: variant.path, config: crashed.config)
                try log.close()
            }
            for name in listing(variant.path) where name.hasSuffix(".index") || name.hasSuffix(".timeindex") {
                let path = variant.file(name)
                switch damage {
                case "delete": try FileManager.default.removeItem(atPath: path)
                case "empty": try Data().write(to: URL(fileURLWithPath: path))
                case "partial": try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path))
                case "garbage": try Data((0..<96).map { UInt8(($0 * 37) & 0xFF) }).write(to: URL(fileURLWithPath: path))
                default:  // well-formed entries that point past the end of the log
                    let entries = name.hasSuffix(".index")
                        ? OffsetIndex.encode([(offset: 1, position: 10_000_000)], baseOffset: 0)
                        : TimeIndex.encode([(timestamp: 5, offset: 999_999)], baseOffset: 0)
                    try Data(entries).write(to: URL(fileURLWithPath: path))
                }
            }
            let (log, _) = try PartitionLog.open(directory: variant.path, config: crashed.config, cleanShutdown: clean)
            try checkRecovered(log, expectedNext: 360, timestampOf: crashed.timestampOfOffset, context: "\(damage) clean=\(clean)")
            try log.close()
        }
    }

    @Test func strayTempFilesAreInterpretedAtLoad() throws {
        let crashed = try CrashedLog.make()
        let variant = try crashed.variant(activeContent: crashed.activeBytes)
        let first = SegmentName.base(0)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: variant.file(first + ".log.cleaned")))
        try Data([4, 5]).write(to: URL(fileURLWithPath: variant.file(first + ".log.swap")))  // invalid swap
        try Data([6]).write(to: URL(fileURLWithPath: variant.file("00000000000099999999.log.deleted")))
        try Data([7]).write(to: URL(fileURLWithPath: variant.file("00000000000099999999.index")))  // orphan
        try Data([8]).write(to: URL(fileURLWithPath: variant.file("partition.checkpoint.tmp")))
        let (log, report) = try PartitionLog.open(directory: variant.path, config: crashed.config)
        #expect(report.tempFilesRemoved == 4)
        #expect(report.warnings.contains { $0.contains("swap") })
        let left = listing(variant.path)
        #expect(!left.contains { $0.hasSuffix(".cleaned") || $0.hasSuffix(".swap") || $0.hasSuffix(".deleted") || $0.hasSuffix(".tmp") })
        #expect(!left.contains("00000000000099999999.index"))
        try checkRecovered(log, expectedNext: 360, timestampOf: crashed.timestampOfOffset, context: "temp files")
        try log.close()
    }

    @Test func aValidSwapReplacesTheSegmentsItCovers() throws {
        let crashed = try CrashedLog.make()
        let variant = try crashed.variant(activeContent: crashed.activeBytes)
        let bases = listing(variant.path).compactMap { SegmentName.parse($0, suffix: ".log") }.sorted()
        // A "cleaned" copy of the first segment: the same batches, as a compaction that removed nothing.
        let firstBytes = try Data(contentsOf: URL(fileURLWithPath: SegmentName.logPath(variant.path, bases[0])))
        try firstBytes.write(to: URL(fileURLWithPath: SegmentName.logPath(variant.path, bases[0]) + ".swap"))
        let (log, report) = try PartitionLog.open(directory: variant.path, config: crashed.config)
        #expect(report.swapsCompleted == 1)
        #expect(!listing(variant.path).contains { $0.hasSuffix(".swap") })
        try checkRecovered(log, expectedNext: 360, timestampOf: crashed.timestampOfOffset, context: "swap")
        try log.close()
    }

    @Test func aCorruptCheckpointMeansFullRevalidationNotFailure() throws {
        let crashed = try CrashedLog.make()
        let variant = try crashed.variant(activeContent: crashed.activeBytes)
        try Data([UInt8](repeating: 0xAB, count: 28)).write(to: URL(fileURLWithPath: variant.file(Checkpoint.fileName)))
        let (log, report) = try PartitionLog.open(directory: variant.path, config: crashed.config)
        #expect(report.segmentsRecovered == log.segmentCount)
        #expect(report.warnings.contains { $0.contains("checkpoint") })
        try checkRecovered(log, expectedNext: 360, timestampOf: crashed.timestampOfOffset, context: "bad checkpoint")
        try log.close()
    }

    @Test func checkpointRoundTripAndDamage() throws {
        let cp = Checkpoint(recoveryPoint: 123_456, logStartOffset: 42)
        #expect(Checkpoint.decode(cp.encode()) == cp)
        var bytes = cp.encode()
        for i in 0..<bytes.count {
            bytes[i] ^= 0x10
            #expect(Checkpoint.decode(bytes) == nil, "flip at \(i)")
            bytes[i] ^= 0x10
        }
        #expect(Checkpoint.decode(Array(bytes.dropLast())) == nil)
    }
}
