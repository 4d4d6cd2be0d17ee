import Foundation
import Testing
@testable import StrataLog

/// A batch of `count` records from an idempotent (and optionally transactional) producer.
func producerBatch(producerId: Int64, epoch: Int16 = 0, sequence: Int32, count: Int = 3, transactional: Bool = false,
                   key: String? = nil, value: String = "v", timestamp: Int64 = 1_700_000_000_000) -> [UInt8] {
    let records = (0..<count).map { i in
        ProducerRecord(key: key.map { Array($0.utf8) } ?? Array("k\(i)".utf8), value: Array("\(value)-\(i)".utf8), timestamp: timestamp + Int64(i))
    }
    var batch = RecordBatchBuilder.build(records, producerId: producerId, producerEpoch: epoch, baseSequence: sequence)
    if transactional {
        batch.withUnsafeMutableBytes { p in
            p.storeBytes(of: Int16(0x10).bigEndian, toByteOffset: RecordBatch.attributesOffset, as: Int16.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[RecordBatch.attributesOffset...]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: RecordBatch.crcOffset, as: UInt32.self)
        }
    }
    return batch
}

/// Values a read_committed reader gets from `log` (markers and aborted transactions left out).
func committedValues(_ log: PartitionLog) throws -> [String] {
    var out: [String] = []
    var offset = log.logStartOffset
    while offset < log.lastStableOffset {
        guard let slice = try log.read(from: offset, maxBytes: 1 << 20, committedOnly: true).slice else { break }
        var filter = ReadCommittedFilter(aborted: log.abortedTransactions(from: offset, upTo: slice.nextOffset))
        try slice.forEachBatch { batch in
            guard filter.accepts(batch) else { return }
            try batch.forEachRecord { r in if r.offset >= offset { out.append(String(decoding: r.value!, as: UTF8.self)) } }
        }
        offset = slice.nextOffset
    }
    return out
}

@Suite struct ProducerStateTests {
    @Test func sequenceRulesFollowKafka() {
        var s = ProducerStates()
        #expect(s.check(producerId: 1, epoch: 0, firstSequence: 5, lastSequence: 7) == .accept)  // unknown producer: any start
        s.apply(producerId: 1, epoch: 0, firstSequence: 5, lastSequence: 7, firstOffset: 0, lastOffset: 2, transactional: false, control: nil, timestampMs: 1)
        for i in 1...6 {
            let first = Int32(5 + 3 * i)
            s.apply(producerId: 1, epoch: 0, firstSequence: first, lastSequence: first + 2, firstOffset: Int64(3 * i), lastOffset: Int64(3 * i + 2),
                    transactional: false, control: nil, timestampMs: 1)
        }
        // The last five batches are recognised as retries, with their original offsets.
        #expect(s.check(producerId: 1, epoch: 0, firstSequence: 23, lastSequence: 25) == .duplicate(SequenceRange(firstSequence: 23, lastSequence: 25, firstOffset: 18, lastOffset: 20)))
        #expect(s.check(producerId: 1, epoch: 0, firstSequence: 11, lastSequence: 13) == .duplicate(SequenceRange(firstSequence: 11, lastSequence: 13, firstOffset: 6, lastOffset: 8)))
        #expect(s.check(producerId: 1, epoch: 0, firstSequence: 8, lastSequence: 10) == .outOfOrder(expected: 26))  // older than five batches
        #expect(s.check(producerId: 1, epoch: 0, firstSequence: 26, lastSequence: 30) == .accept)
        #expect(s.check(producerId: 1, epoch: 0, firstSequence: 27, lastSequence: 30) == .outOfOrder(expected: 26))
        #expect(s.check(producerId: 1, epoch: 1, firstSequence: 0, lastSequence: 0) == .accept)        // a new epoch starts at 0
        #expect(s.check(producerId: 1, epoch: 1, firstSequence: 26, lastSequence: 26) == .outOfOrder(expected: 0))
        s.apply(producerId: 1, epoch: 2, firstSequence: 0, lastSequence: 0, firstOffset: 30, lastOffset: 30, transactional: false, control: nil, timestampMs: 1)
        #expect(s.check(producerId: 1, epoch: 1, firstSequence: 1, lastSequence: 1) == .staleEpoch(current: 2))
        // Sequences wrap from Int32.max to 0.
        s.apply(producerId: 2, epoch: 0, firstSequence: Int32.max - 1, lastSequence: Int32.max, firstOffset: 31, lastOffset: 32,
                transactional: false, control: nil, timestampMs: 1)
        #expect(s.check(producerId: 2, epoch: 0, firstSequence: 0, lastSequence: 4) == .accept)
    }

    /// Sequences wrap from Int32.max to 0 (Kafka's incrementSequence), never to a negative number.
    @Test func sequencesWrapAtInt32Max() throws {
        #expect(ProducerStates.sequence(Int32.max - 1, plus: 3) == 1)
        #expect(ProducerStates.sequence(Int32.max, plus: 0) == Int32.max)
        #expect(ProducerStates.sequence(5, plus: 2) == 7)
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small())
        try log.append(producerBatch(producerId: 3, sequence: Int32.max - 1, count: 3))  // sequences max-1, max, 0
        #expect(try log.append(producerBatch(producerId: 3, sequence: Int32.max - 1, count: 3)).duplicate)
        #expect(throws: LogError.self) { try log.append(producerBatch(producerId: 3, sequence: 5, count: 1)) }
        #expect(try !log.append(producerBatch(producerId: 3, sequence: 1, count: 2)).duplicate)
        try log.close()
    }

    /// A snapshot past the log end (its roll's data lost in an OS crash) is rejected and replaced
    /// at load, so that it cannot be trusted once appends pass its offset.
    @Test func aSnapshotPastTheLogEndIsReplacedAtLoad() throws {
        let dir = TempDirectory()
        var (log, _) = try PartitionLog.open(directory: dir.path, config: .small())
        try log.append(producerBatch(producerId: 9, sequence: 0, transactional: true))
        try log.close()
        var future = ProducerStates()
        future.validUpTo = 1000
        future.apply(producerId: 9, epoch: 0, firstSequence: 0, lastSequence: 2, firstOffset: 500, lastOffset: 502, transactional: true, control: nil, timestampMs: 1)
        try ProducerStateSnapshot(states: future).write(directory: dir.path)
        let report: RecoveryReport
        (log, report) = try PartitionLog.open(directory: dir.path, config: .small())
        #expect(report.warnings.contains { $0.contains("past the log end") })
        #expect(ProducerStateSnapshot.read(directory: dir.path)?.states.validUpTo == 3)
        #expect(log.openTransactions.map(\.firstOffset) == [0])  // from the log, not the bad snapshot
        try log.close()
    }

    @Test func transactionsOpenCloseAndAbortedRanges() {
        var s = ProducerStates()
        s.apply(producerId: 9, epoch: 0, firstSequence: 0, lastSequence: 1, firstOffset: 10, lastOffset: 11, transactional: true, control: nil, timestampMs: 1)
        s.apply(producerId: 8, epoch: 0, firstSequence: 0, lastSequence: 0, firstOffset: 12, lastOffset: 12, transactional: true, control: nil, timestampMs: 1)
        #expect(s.firstUnstableOffset == 10)
        s.apply(producerId: 9, epoch: 0, firstSequence: 2, lastSequence: 2, firstOffset: 13, lastOffset: 13, transactional: true, control: nil, timestampMs: 1)
        s.apply(producerId: 9, epoch: 0, firstSequence: -1, lastSequence: -1, firstOffset: 14, lastOffset: 14, transactional: true, control: .abort, timestampMs: 1)
        #expect(s.firstUnstableOffset == 12)
        #expect(s.aborted == [AbortedTransaction(producerId: 9, firstOffset: 10, lastOffset: 14)])
        s.apply(producerId: 8, epoch: 0, firstSequence: -1, lastSequence: -1, firstOffset: 15, lastOffset: 15, transactional: true, control: .commit, timestampMs: 1)
        #expect(s.firstUnstableOffset == nil)
        #expect(s.aborted.count == 1)
        #expect(s.isAborted(producerId: 9, offset: 13))
        #expect(!s.isAborted(producerId: 8, offset: 12))
        #expect(!s.isAborted(producerId: 9, offset: 16))
        #expect(s.abortedTransactions(from: 15, upTo: 20).isEmpty)
        #expect(s.abortedTransactions(from: 0, upTo: 11).count == 1)
        #expect(s.abortedTransactions(from: 0, upTo: 10).isEmpty)
        // Retention past the marker forgets the range; idle producers expire.
        s.expire(nowMs: 10_000, expirationMs: 5_000, logStartOffset: 15)
        #expect(s.aborted.isEmpty)
        #expect(s.producers.isEmpty)
    }

    @Test func snapshotRoundTripsAndRefusesDamage() throws {
        var s = ProducerStates()
        for p in 0..<50 {
            s.apply(producerId: Int64(p), epoch: Int16(p % 3), firstSequence: 0, lastSequence: 4, firstOffset: Int64(p * 10), lastOffset: Int64(p * 10 + 4),
                    transactional: p % 2 == 0, control: nil, timestampMs: Int64(p))
            if p % 4 == 0 {
                s.apply(producerId: Int64(p), epoch: Int16(p % 3), firstSequence: -1, lastSequence: -1, firstOffset: Int64(p * 10 + 5),
                        lastOffset: Int64(p * 10 + 5), transactional: true, control: .abort, timestampMs: Int64(p))
            }
        }
        let bytes = ProducerStateSnapshot(states: s).encode()
        #expect(ProducerStateSnapshot.decode(bytes)?.states == s)
        // Every truncation and every single-byte change is refused, never trusted or trapped on.
        for n in stride(from: 0, to: bytes.count, by: 7) { #expect(ProducerStateSnapshot.decode(Array(bytes[..<n])) == nil) }
        var rng = SeededRandom(seed: 42)
        for _ in 0..<500 {
            var damaged = bytes
            damaged[Int.random(in: 0..<damaged.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
            #expect(ProducerStateSnapshot.decode(damaged) == nil)
        }
        // Lying counts with a valid CRC: refused before anything is allocated.
        var lying = bytes
        lying.withUnsafeMutableBytes { p in
            p.storeBytes(of: UInt32(0xFFFF_FFFF).bigEndian, toByteOffset: 16, as: UInt32.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[0..<(p.count - 4)]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: p.count - 4, as: UInt32.self)
        }
        #expect(ProducerStateSnapshot.decode(lying) == nil)
    }

    /// A retried batch is answered with its original offsets after a clean restart, after a
    /// crash (log replayed after the snapshot of the last roll), and with no snapshot at all.
    @Test(arguments: ["clean", "crash", "no-snapshot"]) func retriesAreRecognisedAcrossRestarts(how: String) throws {
        let dir = TempDirectory()
        let config = LogConfig.small(segmentBytes: 4 * 1024)
        var (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        var sent: [(batch: [UInt8], info: AppendInfo)] = []
        for i in 0..<40 {
            let batch = producerBatch(producerId: 77, sequence: Int32(i * 3), value: String(repeating: "x", count: 200))
            sent.append((batch, try log.append(batch)))
        }
        #expect(log.segmentCount > 3)  // rolls wrote snapshots
        let end = log.logEndOffset
        switch how {
        case "clean":
            try log.close()
            (log, _) = try PartitionLog.open(directory: dir.path, config: config, cleanShutdown: true)
        case "crash":
            (log, _) = try PartitionLog.open(directory: dir.path, config: config)  // the first is never closed
        default:
            try log.close()
            try FileManager.default.removeItem(atPath: dir.file(ProducerStateSnapshot.fileName))
            (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        }
        for retry in sent.suffix(ProducerStates.batchesRemembered) {
            let again = try log.append(retry.batch)
            #expect(again.duplicate)
            #expect(again.baseOffset == retry.info.baseOffset && again.lastOffset == retry.info.lastOffset)
        }
        #expect(log.logEndOffset == end)
        #expect(throws: LogError.self) { try log.append(producerBatch(producerId: 77, sequence: 500)) }  // a gap
        #expect(try log.append(producerBatch(producerId: 77, sequence: 120)).baseOffset == end)
        try log.close()
    }

    @Test func markersSetTheLastStableOffsetAndSurviveACrash() throws {
        let dir = TempDirectory()
        let config = LogConfig.small(segmentBytes: 4 * 1024)
        var (log, _) = try PartitionLog.open(directory: dir.path, config: config)
        try log.append(makeBatch(first: 0, count: 2))                                                          // 0-1 plain
        try log.append(producerBatch(producerId: 5, sequence: 0, transactional: true, value: "aborted"))       // 2-4
        try log.append(producerBatch(producerId: 6, sequence: 0, transactional: true, value: "committed"))     // 5-7
        #expect(log.lastStableOffset == 2)
        #expect(try log.read(from: 2, committedOnly: true).isEmpty)
        #expect(try log.appendTransactionMarker(producerId: 5, epoch: 0, type: .abort) == 8)
        #expect(log.lastStableOffset == 5)
        #expect(try log.appendTransactionMarker(producerId: 5, epoch: 0, type: .abort) == nil)  // already ended: no second marker
        try log.append(producerBatch(producerId: 7, sequence: 0, transactional: true, value: "open"))          // 9-11
        #expect(try log.appendTransactionMarker(producerId: 6, epoch: 0, type: .commit) == 12)
        #expect(log.lastStableOffset == 9)
        let expected = ["committed-0", "committed-1", "committed-2"]
        #expect(try committedValues(log).filter { !$0.hasPrefix("{") } == expected)
        (log, _) = try PartitionLog.open(directory: dir.path, config: config)  // crash: nothing closed
        #expect(log.lastStableOffset == 9)
        #expect(log.abortedTransactions(from: 0, upTo: 100) == [AbortedTransaction(producerId: 5, firstOffset: 2, lastOffset: 8)])
        #expect(log.openTransactions.map(\.producerId) == [7])
        #expect(try committedValues(log).filter { !$0.hasPrefix("{") } == expected)
        try log.close()
    }

    /// Compaction never lets an aborted record shadow a committed value of its key, drops the
    /// aborted records, and keeps the markers read_committed readers need.
    @Test func compactionDropsAbortedRecordsAndKeepsMarkers() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small(segmentBytes: 2 * 1024))
        try log.append(producerBatch(producerId: 1, sequence: 0, count: 1, key: "K", value: "committed"))
        try log.append(producerBatch(producerId: 2, sequence: 0, count: 1, transactional: true, key: "K", value: "aborted"))
        _ = try log.appendTransactionMarker(producerId: 2, epoch: 0, type: .abort)
        for i in 0..<30 { try log.append(makeBatch(first: i * 4, count: 4)) }  // other keys, to roll segments
        try log.flush()
        let report = try log.compact(deleteRetentionMs: 0, nowMs: 1_800_000_000_000)
        #expect(report.recordsAfter < report.recordsBefore)
        var values: [String] = []
        var markers = 0
        var offset = log.logStartOffset
        while offset < log.logEndOffset, let slice = try log.read(from: offset, maxBytes: 1 << 20).slice {
            try slice.forEachBatch { batch in
                if batch.isControl { markers += 1; return }
                try batch.forEachRecord { r in if r.key.map({ Array($0) }) == Array("K".utf8) { values.append(String(decoding: r.value!, as: UTF8.self)) } }
            }
            offset = slice.nextOffset
        }
        #expect(values == ["committed-0"])
        #expect(markers == 1)
        try log.close()
    }
}
