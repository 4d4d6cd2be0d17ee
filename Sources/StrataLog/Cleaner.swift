#if canImport(Glibc)
import Glibc
#endif
import StrataCore

/// What one compaction pass did (`strata compact --report`).
public struct CompactionReport: Sendable, Equatable {
    public var segmentsIn = 0
    public var segmentsOut = 0
    public var bytesBefore = 0
    public var bytesAfter = 0
    public var recordsBefore = 0
    public var recordsAfter = 0
    public var distinctKeys = 0
    public var tombstonesDropped = 0
    public var bytesScanned = 0
    public var seconds = 0.0
    public var dryRun = false

    public init() {}

    /// Bytes written per byte of input (1.0 when nothing is dropped).
    public var writeAmplification: Double { bytesBefore > 0 ? Double(bytesAfter) / Double(bytesBefore) : 0 }
}

/// How a compaction pass decides what survives and which segments it merges.
public enum CompactionStrategy: Sendable, Equatable {
    /// Kafka's semantics: the latest record of each key.
    case keyLatest
    /// The latest record of each key per time window (e.g. hourly snapshots): a record survives if
    /// no later record of its key falls in the same `windowMs` bucket of record time.
    case keyLatestWindowed(windowMs: Int64)
    /// Key-latest records, but segments are merged only with neighbours of similar size (within a
    /// factor of 2), so a pass rewrites small cleaned segments together and leaves large ones alone.
    case sizeTiered

    public var name: String {
        switch self {
        case .keyLatest: return "key-latest"
        case .keyLatestWindowed(let w): return "key-latest-windowed(\(w) ms)"
        case .sizeTiered: return "size-tiered"
        }
    }

    /// The map key of a record: a 128-bit digest of its key (plus its time bucket for the windowed
    /// strategy). Like Kafka's SkimpyOffsetMap (MD5), it trades a vanishing collision risk for a
    /// small fixed-size entry and no allocation per record.
    func mapKey(_ key: UnsafeRawBufferPointer, timestamp: Int64) -> KeyDigest {
        var bucket: Int64 = 0
        if case .keyLatestWindowed(let w) = self, w > 0 {
            // Floor division without `timestamp - w + 1`, which overflows near Int64.min.
            let q = timestamp / w
            bucket = (timestamp % w != 0 && timestamp < 0) ? q - 1 : q
        }
        return KeyDigest(key, salt: UInt64(bitPattern: bucket))
    }
}

/// Two independent 64-bit hashes of a key (FNV-1a and a murmur3-style mix), with a salt.
struct KeyDigest: Hashable {
    let a: UInt64
    let b: UInt64

    init(_ key: UnsafeRawBufferPointer, salt: UInt64) {
        var f: UInt64 = 0xcbf2_9ce4_8422_2325 ^ salt
        for byte in key { f = (f ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15 &+ salt
        var i = 0
        while i + 8 <= key.count {
            var k = key.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            k = k &* 0x87C3_7B91_1142_53D5
            k = (k << 31) | (k >> 33)
            k = k &* 0x4CF5_AD43_2745_937F
            h ^= k
            h = ((h << 27) | (h >> 37)) &* 5 &+ 0x52DC_E729
            i += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while i < key.count {
            tail |= UInt64(key[i]) << shift
            shift += 8
            i += 1
        }
        h ^= tail &* 0x87C3_7B91_1142_53D5
        h ^= UInt64(key.count)
        h ^= h >> 33
        h = h &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        h = h &* 0xC4CE_B9FE_1A85_EC53
        h ^= h >> 33
        a = f
        b = h
    }
}

/// Test hook: stop a compaction after a given step, as a crash would.
enum CompactionCrashPoint: Sendable { case none, afterCleaned, afterSwap, afterFirstDelete }

extension PartitionLog {
    /// Kafka's key-latest compaction of the closed, fully flushed segments: every keyed record is
    /// kept only if it is the latest of its key among them; tombstones (null values) older than
    /// `deleteRetentionMs` are dropped; records without a key are kept. Offsets never change and
    /// order is preserved: a rewritten batch keeps its base offset and lastOffsetDelta. Groups of
    /// consecutive segments (up to segment.bytes together) are rewritten into one, through the
    /// `.cleaned` → `.swap` → live protocol that the loader completes after a crash. A batch left
    /// with no records stays as an empty batch, so offsets continue exactly across batches.
    ///
    /// The key map holds at most `maxKeys` keys; segments beyond that wait for the next pass.
    ///
    /// `maxBytesPerSecond` (log.cleaner.io.max.bytes.per.second) throttles the bytes read, so a
    /// pass does not starve producers and consumers of disk bandwidth (0: unlimited).
    public func compact(strategy: CompactionStrategy = .keyLatest, deleteRetentionMs: Int64 = 86_400_000, nowMs: Int64 = wallClockMillis(),
                        maxKeys: Int = 5_000_000, maxBytesPerSecond: Int = 0, dryRun: Bool = false,
                        minCompactionLagMs: Int64 = 0) throws -> CompactionReport {
        try compact(strategy: strategy, deleteRetentionMs: deleteRetentionMs, nowMs: nowMs, maxKeys: maxKeys,
                    maxBytesPerSecond: maxBytesPerSecond, dryRun: dryRun, crashPoint: .none, minCompactionLagMs: minCompactionLagMs)
    }

    func compact(deleteRetentionMs: Int64, nowMs: Int64, maxKeys: Int, dryRun: Bool, crashPoint: CompactionCrashPoint) throws -> CompactionReport {
        try compact(strategy: .keyLatest, deleteRetentionMs: deleteRetentionMs, nowMs: nowMs, maxKeys: maxKeys,
                    maxBytesPerSecond: 0, dryRun: dryRun, crashPoint: crashPoint)
    }

    func compact(strategy: CompactionStrategy, deleteRetentionMs: Int64, nowMs: Int64, maxKeys: Int, maxBytesPerSecond: Int,
                 dryRun: Bool, crashPoint: CompactionCrashPoint, minCompactionLagMs: Int64 = 0) throws -> CompactionReport {
        guard !readOnlyOpen else { throw LogError.readOnly(reason: "\(directory) is opened read-only") }
        let started = DispatchFreeClock.now()
        var report = CompactionReport()
        report.dryRun = dryRun
        let throttle = Throttle(bytesPerSecond: maxBytesPerSecond)
        let all = segmentList.withLock { $0 }
        // Closed segments entirely below the recovery point: on disk for sure, never re-validated.
        var candidates: [LogSegment] = []
        // min.compaction.lag.ms: the cleanable prefix ends at the first segment holding a record
        // younger than the lag (Kafka's first uncleanable offset).
        // Nor past the first open transaction: whether its records stay is not decided yet.
        let cleanableEnd = min(recoveryPoint, lastStableOffset)
        // Records of aborted transactions are dropped and never shadow a committed value of
        // their key; transaction markers are kept (read_committed readers need them).
        let transactions = producerStateSnapshot
        for (i, segment) in all.enumerated().dropLast() where all[i + 1].baseOffset <= cleanableEnd {
            if minCompactionLagMs > 0, nowMs.saturatingSubtract(try segment.largestTimestamp()) < minCompactionLagMs { break }
            candidates.append(segment)
        }

        // Pass 1: key → latest offset.
        var latest: [KeyDigest: Int64] = [:]
        var mapped: [LogSegment] = []
        for segment in candidates {
            let slice = try segment.allBatches()
            let bytes = slice.bytes
            var keys: [(KeyDigest, Int64)] = []
            try Self.forEachBatch(bytes) { batch in
                if batch.isControl || (batch.isTransactional && transactions.isAborted(producerId: batch.producerId, offset: batch.baseOffset)) { return }
                try batch.forEachRecord { r in if let k = r.key { keys.append((strategy.mapKey(k, timestamp: r.timestamp), r.offset)) } }
            }
            throttle.account(bytes.count)
            withExtendedLifetime(slice) {}
            if latest.count + keys.count > maxKeys && !mapped.isEmpty { break }
            for (k, o) in keys { latest[k] = o }
            mapped.append(segment)
            report.bytesScanned += bytes.count
        }
        report.distinctKeys = latest.count

        // Pass 2: rewrite groups.
        let horizon = nowMs - deleteRetentionMs
        var group: [LogSegment] = []
        var groupBytes = 0
        func flushGroup() throws {
            guard !group.isEmpty else { return }
            try rewrite(group, strategy: strategy, latest: latest, transactions: transactions, tombstoneHorizonMs: horizon, throttle: throttle, report: &report,
                        dryRun: dryRun, crashPoint: crashPoint)
            group = []
            groupBytes = 0
        }
        // Groups are sized by log bytes: a cold segment is rewritten as the hot one it was.
        var previousBytes = 0
        for segment in mapped {
            let bytes = try segment.logBytes()
            if !group.isEmpty && groupBytes + bytes > config.segmentBytes { try flushGroup() }
            if case .sizeTiered = strategy, !group.isEmpty,
               bytes > 2 * max(previousBytes, 1) || previousBytes > 2 * max(bytes, 1) {
                try flushGroup()  // a different tier: not merged together
            }
            group.append(segment)
            groupBytes += bytes
            previousBytes = bytes
        }
        try flushGroup()
        report.seconds = Double(DispatchFreeClock.now() - started) / 1e9
        return report
    }

    static func forEachBatch(_ bytes: UnsafeRawBufferPointer, _ body: (RecordBatch) throws -> Void) throws {
        var at = 0
        while at < bytes.count {
            guard let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: bytes[at...])), at + size <= bytes.count else {
                throw LogError.corrupt(path: "segment", reason: "invalid batch at \(at)")
            }
            try body(RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: bytes[at..<at + size])))
            at += size
        }
    }

    private func rewrite(_ group: [LogSegment], strategy: CompactionStrategy, latest: [KeyDigest: Int64], transactions: ProducerStates, tombstoneHorizonMs: Int64,
                         throttle: Throttle, report: inout CompactionReport, dryRun: Bool, crashPoint: CompactionCrashPoint) throws {
        var out: [UInt8] = []
        for segment in group {
            let slice = try segment.allBatches()
            defer { withExtendedLifetime(slice) {} }
            let bytes = slice.bytes
            report.bytesBefore += bytes.count
            throttle.account(bytes.count)
            try Self.forEachBatch(bytes) { batch in
                if batch.isControl {
                    out.append(contentsOf: batch.bytes)
                    return
                }
                let aborted = batch.isTransactional && transactions.isAborted(producerId: batch.producerId, offset: batch.baseOffset)
                // First decide, without copying anything; copy only batches that change.
                var keep: [Bool] = []
                try batch.forEachRecord { r in
                    var kept = true
                    if aborted {
                        kept = false
                    } else if let k = r.key {
                        if latest[strategy.mapKey(k, timestamp: r.timestamp)] != r.offset {
                            kept = false
                        } else if r.value == nil && r.timestamp < tombstoneHorizonMs {
                            report.tombstonesDropped += 1
                            kept = false
                        }
                    }
                    keep.append(kept)
                }
                let total = keep.count
                var kept: [RetainedRecord] = []
                if keep.contains(false) || batch.compression != CompressionCodec.none {
                    // Copies: a compressed batch's record views live only during forEachRecord.
                    var i = 0
                    try batch.forEachRecord { r in
                        if keep[i] { kept.append(RetainedRecord(r)) }
                        i += 1
                    }
                }
                let keptCount = keep.filter { $0 }.count
                report.recordsBefore += total
                report.recordsAfter += keptCount
                // A batch whose records all went is kept as an empty header (61 bytes, as Kafka
                // keeps empty batches): offsets then continue exactly from batch to batch, which
                // recovery checks to catch a garbled baseOffset.
                if keptCount == total && batch.compression == CompressionCodec.none {
                    out.append(contentsOf: batch.bytes)  // untouched: copied verbatim
                } else {
                    out.append(contentsOf: RecordBatchBuilder.rebuild(batch, keeping: kept))
                }
            }
        }
        report.segmentsIn += group.count
        report.segmentsOut += 1
        report.bytesAfter += out.count
        guard !dryRun else { return }

        let base = group[0].baseOffset
        let cleaned = SegmentName.logPath(directory, base) + SegmentName.cleanedSuffix
        let swap = SegmentName.logPath(directory, base) + SegmentName.swapSuffix
        let fd = try FileIO.open(cleaned, flags: O_WRONLY | O_CREAT | O_TRUNC)
        do {
            try FileIO.writeAll(fd: fd, array: out, at: 0, path: cleaned)
            try FileIO.datasync(fd: fd, path: cleaned)
        } catch {
            Glibc.close(fd)
            try? FileIO.unlink(cleaned)
            throw error
        }
        Glibc.close(fd)
        if crashPoint == .afterCleaned { return }
        try FileIO.rename(cleaned, swap)
        try FileIO.syncDirectory(directory)
        if crashPoint == .afterSwap { return }
        try writer.withLock { (state: inout WriterState) throws(LogError) in
            guard !state.closed else { throw LogError.closed(directory) }
            let current = segmentList.withLock { $0 }
            guard let first = current.firstIndex(where: { $0 === group[0] }), first + group.count <= current.count,
                  zip(current[first..<first + group.count], group).allSatisfy({ $0 === $1 }) else {
                try? FileIO.unlink(swap)  // retention or another pass changed these segments meanwhile
                return
            }
            for (i, segment) in group.enumerated() {
                try segment.markDeleted()
                if i == 0 && crashPoint == .afterFirstDelete { throw LogError.corrupt(path: swap, reason: "simulated crash") }
            }
            try FileIO.rename(swap, SegmentName.logPath(directory, base))
            try FileIO.syncDirectory(directory)
            // The group never includes the active segment, so a segment follows it.
            let next = current[first + group.count].baseOffset
            let replacement = LogSegment.lazy(directory: directory, baseOffset: base, config: config, nextOffset: next)
            segmentList.withLock { list in list.replaceSubrange(first..<first + group.count, with: [replacement]) }
        }
    }
}

/// Sleeps as needed to keep a byte rate (log.cleaner.io.max.bytes.per.second).
final class Throttle {
    let bytesPerSecond: Int
    private let started = DispatchFreeClock.now()
    private var bytes = 0

    init(bytesPerSecond: Int) { self.bytesPerSecond = bytesPerSecond }

    func account(_ count: Int) {
        guard bytesPerSecond > 0 else { return }
        bytes += count
        let due = Double(bytes) / Double(bytesPerSecond)
        let elapsed = Double(DispatchFreeClock.now() - started) / 1e9
        if due > elapsed { usleep(UInt32(min(5.0, due - elapsed) * 1_000_000)) }
    }
}

/// A record copied out of its batch.
struct RetainedRecord {
    let offset: Int64
    let timestamp: Int64
    let key: [UInt8]?
    let value: [UInt8]?
    let headers: [(key: [UInt8], value: [UInt8]?)]

    init(_ r: RecordBatch.Record) {
        offset = r.offset
        timestamp = r.timestamp
        key = r.key.map(Array.init)
        value = r.value.map(Array.init)
        headers = r.headers.map { (Array($0.key), $0.value.map(Array.init)) }
    }
}

extension RecordBatchBuilder {
    /// The records of `batch` that survived compaction, as an uncompressed batch with the same
    /// base offset, lastOffsetDelta, base timestamp and producer fields: offsets do not move.
    static func rebuild(_ batch: RecordBatch, keeping records: [RetainedRecord]) -> [UInt8] {
        let base = batch.baseOffset
        let baseTs = batch.baseTimestamp
        var body: [UInt8] = []
        var scratch: [UInt8] = []
        var maxTs = Int64.min
        for r in records {
            maxTs = max(maxTs, r.timestamp)
            scratch.removeAll(keepingCapacity: true)
            scratch.append(0)
            Varint.append(r.timestamp &- baseTs, to: &scratch)
            Varint.append(r.offset - base, to: &scratch)
            if let k = r.key { Varint.append(Int64(k.count), to: &scratch); scratch.append(contentsOf: k) } else { Varint.append(-1, to: &scratch) }
            if let v = r.value { Varint.append(Int64(v.count), to: &scratch); scratch.append(contentsOf: v) } else { Varint.append(-1, to: &scratch) }
            Varint.append(Int64(r.headers.count), to: &scratch)
            for h in r.headers {
                Varint.append(Int64(h.key.count), to: &scratch)
                scratch.append(contentsOf: h.key)
                if let hv = h.value { Varint.append(Int64(hv.count), to: &scratch); scratch.append(contentsOf: hv) } else { Varint.append(-1, to: &scratch) }
            }
            Varint.append(Int64(scratch.count), to: &body)
            body.append(contentsOf: scratch)
        }
        // An empty `records` gives an empty batch: the header alone, recordCount 0.
        var out = Array(batch.bytes[0..<RecordBatch.headerSize]) + body
        out.withUnsafeMutableBytes { p in
            p.storeBytes(of: Int32(p.count - RecordBatch.logOverhead).bigEndian, toByteOffset: 8, as: Int32.self)
            let attributes = batch.attributes & ~Int16(0x7)  // rewritten uncompressed
            p.storeBytes(of: attributes.bigEndian, toByteOffset: 21, as: Int16.self)
            p.storeBytes(of: max(maxTs, batch.baseTimestamp).bigEndian, toByteOffset: 35, as: Int64.self)
            p.storeBytes(of: Int32(records.count).bigEndian, toByteOffset: 57, as: Int32.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: p[RecordBatch.attributesOffset...]))
            p.storeBytes(of: crc.bigEndian, toByteOffset: RecordBatch.crcOffset, as: UInt32.self)
        }
        return out
    }
}
