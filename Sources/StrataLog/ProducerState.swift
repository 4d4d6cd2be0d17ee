#if canImport(Glibc)
import Glibc
#endif
import StrataCore

/// The sequence numbers and offsets of one batch an idempotent producer wrote.
public struct SequenceRange: Sendable, Equatable {
    public var firstSequence: Int32
    public var lastSequence: Int32
    public var firstOffset: Int64
    public var lastOffset: Int64
}

/// What one partition knows of one producer id (Kafka's ProducerStateEntry).
public struct ProducerEntry: Sendable, Equatable {
    public var epoch: Int16
    /// The last batches written, oldest first (at most `ProducerStates.batchesRemembered`): a
    /// retry of any of them is answered with its offsets instead of being appended again.
    public var batches: [SequenceRange] = []
    /// First offset of this producer's open transaction on this partition (-1: none).
    public var ongoingTransactionFirstOffset: Int64 = -1
    /// When the producer last wrote here (wall clock at append; the batch's max timestamp when
    /// rebuilt from the log): entries idle past `producer.id.expiration.ms` are forgotten.
    public var lastTimestampMs: Int64
}

/// A transaction that ended with an abort marker: its records (this producer's batches from
/// `firstOffset` to the marker at `lastOffset`) are invisible to `read_committed` readers.
public struct AbortedTransaction: Sendable, Equatable {
    public var producerId: Int64
    public var firstOffset: Int64
    public var lastOffset: Int64

    public init(producerId: Int64, firstOffset: Int64, lastOffset: Int64) {
        self.producerId = producerId
        self.firstOffset = firstOffset
        self.lastOffset = lastOffset
    }
}

/// Kafka's transaction marker record (the one record of a control batch): key = version i16 (0)
/// + type i16 (0 abort, 1 commit); value = version i16 (0) + coordinator epoch i32.
public enum ControlRecordType: Int16, Sendable {
    case abort = 0
    case commit = 1
}

/// The verdict on an idempotent batch before it is appended.
public enum SequenceCheck: Sendable, Equatable {
    case accept
    case duplicate(SequenceRange)
    case outOfOrder(expected: Int32)
    case staleEpoch(current: Int16)
}

/// Producer state of one partition (Kafka's ProducerStateManager): per producer id the epoch, the
/// last five batches' sequence numbers and the open transaction; the partition's aborted
/// transactions. Mutated only under the log's writer lock, in offset order, by appends and by
/// replaying the log at load, so it always describes the log exactly up to `validUpTo`.
public struct ProducerStates: Sendable, Equatable {
    public static let batchesRemembered = 5
    /// A bound on what one partition remembers, so a client minting producer ids cannot grow it
    /// without limit: past it, the longest-idle producers without open transactions are dropped.
    public static let maxProducers = 50_000
    /// A bound on remembered aborted transactions beyond which the oldest are dropped (their
    /// records then read as committed). Retention drops them as it deletes their segments.
    public static let maxAbortedTransactions = 1_000_000

    public var producers: [Int64: ProducerEntry] = [:]
    /// Sorted by `lastOffset` (markers are appended in offset order).
    public var aborted: [AbortedTransaction] = []
    /// The state covers the log below this offset.
    public var validUpTo: Int64 = 0

    public init() {}

    /// First offset of the oldest open transaction: `read_committed` readers stop before it.
    public var firstUnstableOffset: Int64? {
        producers.values.lazy.map(\.ongoingTransactionFirstOffset).filter { $0 >= 0 }.min()
    }

    /// `base + delta` in sequence space: sequences wrap from Int32.max to 0 (Kafka's
    /// DefaultRecordBatch.incrementSequence), never to a negative number.
    public static func sequence(_ base: Int32, plus delta: Int32) -> Int32 {
        guard base >= 0, delta >= 0 else { return base }
        return Int32((Int64(base) + Int64(delta)) % (Int64(Int32.max) + 1))
    }

    /// Kafka's sequence rules for an idempotent batch (producerId >= 0, not a control batch).
    public func check(producerId: Int64, epoch: Int16, firstSequence: Int32, lastSequence: Int32) -> SequenceCheck {
        guard let entry = producers[producerId] else { return .accept }  // new, or expired: any start
        if epoch < entry.epoch { return .staleEpoch(current: entry.epoch) }
        if epoch > entry.epoch {
            // A new epoch starts its sequences again at 0 (after InitProducerId or an abort by
            // timeout); a producer that kept counting lost batches in between.
            return firstSequence == 0 ? .accept : .outOfOrder(expected: 0)
        }
        if let dup = entry.batches.first(where: { $0.firstSequence == firstSequence && $0.lastSequence == lastSequence }) { return .duplicate(dup) }
        guard let last = entry.batches.last else { return .accept }
        let expected = last.lastSequence == Int32.max ? 0 : last.lastSequence + 1
        return firstSequence == expected ? .accept : .outOfOrder(expected: expected)
    }

    /// Applies one appended batch (header fields; `control` is the marker type of a control batch).
    public mutating func apply(producerId: Int64, epoch: Int16, firstSequence: Int32, lastSequence: Int32,
                               firstOffset: Int64, lastOffset: Int64, transactional: Bool, control: ControlRecordType?,
                               timestampMs: Int64) {
        defer { validUpTo = max(validUpTo, lastOffset + 1) }
        guard producerId >= 0 else { return }
        var entry = producers[producerId] ?? ProducerEntry(epoch: epoch, lastTimestampMs: timestampMs)
        if epoch > entry.epoch {
            entry.epoch = epoch
            entry.batches.removeAll()
        }
        entry.lastTimestampMs = max(entry.lastTimestampMs, timestampMs)
        if let control {
            if entry.ongoingTransactionFirstOffset >= 0 {
                if control == .abort, aborted.count < Self.maxAbortedTransactions || dropOldestAborted() {
                    aborted.append(AbortedTransaction(producerId: producerId, firstOffset: entry.ongoingTransactionFirstOffset, lastOffset: lastOffset))
                }
                entry.ongoingTransactionFirstOffset = -1
            }
        } else {
            if firstSequence >= 0 {
                entry.batches.append(SequenceRange(firstSequence: firstSequence, lastSequence: lastSequence, firstOffset: firstOffset, lastOffset: lastOffset))
                if entry.batches.count > Self.batchesRemembered { entry.batches.removeFirst(entry.batches.count - Self.batchesRemembered) }
            }
            if transactional && entry.ongoingTransactionFirstOffset < 0 { entry.ongoingTransactionFirstOffset = firstOffset }
        }
        if producers[producerId] == nil && producers.count >= Self.maxProducers { evictIdlest() }
        producers[producerId] = entry
    }

    private mutating func dropOldestAborted() -> Bool {
        aborted.removeFirst(max(1, aborted.count / 100))
        return true
    }

    private mutating func evictIdlest() {
        let idle = producers.filter { $0.value.ongoingTransactionFirstOffset < 0 }
            .sorted { $0.value.lastTimestampMs < $1.value.lastTimestampMs }.prefix(max(1, producers.count / 100))
        for (id, _) in idle { producers[id] = nil }
    }

    /// Applies one batch read from the log (replay at load).
    public mutating func apply(_ batch: RecordBatch) {
        let control: ControlRecordType? = batch.isControl ? (Self.controlType(of: batch) ?? .commit) : nil
        let last = batch.baseSequence < 0 ? Int32(-1) : Self.sequence(batch.baseSequence, plus: batch.lastOffsetDelta)
        apply(producerId: batch.producerId, epoch: batch.producerEpoch, firstSequence: batch.baseSequence, lastSequence: last,
              firstOffset: batch.baseOffset, lastOffset: batch.lastOffset, transactional: batch.isTransactional,
              control: control, timestampMs: batch.maxTimestamp)
    }

    /// The marker type of a control batch (its first record's key), nil when unreadable.
    public static func controlType(of batch: RecordBatch) -> ControlRecordType? {
        var type: ControlRecordType?
        try? batch.forEachRecord { r in
            guard type == nil, let key = r.key, key.count >= 4 else { return }
            type = ControlRecordType(rawValue: Int16(bigEndian: key.loadUnaligned(fromByteOffset: 2, as: Int16.self)))
        }
        return type
    }

    /// Forgets producers idle longer than `expirationMs` without an open transaction, and aborted
    /// transactions wholly below `logStartOffset` (retention deleted their records).
    public mutating func expire(nowMs: Int64, expirationMs: Int64, logStartOffset: Int64) {
        producers = producers.filter { $0.value.ongoingTransactionFirstOffset >= 0 || nowMs.saturatingSubtract($0.value.lastTimestampMs) <= expirationMs }
        if let keep = aborted.firstIndex(where: { $0.lastOffset >= logStartOffset }) { aborted.removeFirst(keep) } else { aborted.removeAll() }
    }

    /// Aborted transactions overlapping offsets [from, upTo): what a read_committed Fetch returns.
    public func abortedTransactions(from: Int64, upTo: Int64) -> [AbortedTransaction] {
        // Binary search for the first whose marker is at or after `from`.
        var lo = 0, hi = aborted.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if aborted[mid].lastOffset < from { lo = mid + 1 } else { hi = mid }
        }
        return aborted[lo...].filter { $0.firstOffset < upTo }
    }

    /// Whether the record at `offset`, in a transactional batch of `producerId`, was aborted.
    public func isAborted(producerId: Int64, offset: Int64) -> Bool {
        var lo = 0, hi = aborted.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if aborted[mid].lastOffset < offset { lo = mid + 1 } else { hi = mid }
        }
        return aborted[lo...].contains { $0.producerId == producerId && $0.firstOffset <= offset }
    }
}

/// The producer-state snapshot of a partition, `producer-state.snapshot` in its directory: the
/// state as of an offset, written at each segment roll and at a clean close (temp file, fdatasync,
/// rename, directory sync), so loading replays only the log after it (Kafka's `.snapshot` files).
///
/// Layout (big-endian): magic "STPS" | version u16 (1) | reserved u16 | validUpTo i64 |
/// producer count u32 | aborted count u32 | producers: (producerId i64, epoch i16,
/// lastTimestampMs i64, ongoingFirstOffset i64, batch count u8, batches: (firstSequence i32,
/// lastSequence i32, firstOffset i64, lastOffset i64)) | aborted: (producerId i64, firstOffset i64,
/// lastOffset i64) | CRC-32C u32 of everything before it.
public struct ProducerStateSnapshot: Equatable {
    public static let fileName = "producer-state.snapshot"
    static let magic: UInt32 = 0x5354_5053  // "STPS"
    static let headerSize = 24
    /// Larger snapshots are refused at read (the bounds above make them impossible to write).
    static let maxBytes = 256 << 20

    public var states: ProducerStates

    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.headerSize + states.producers.count * 40 + states.aborted.count * 24 + 4)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) } }
        put(Self.magic); put(UInt16(1)); put(UInt16(0)); put(states.validUpTo)
        put(UInt32(states.producers.count)); put(UInt32(states.aborted.count))
        for (id, e) in states.producers.sorted(by: { $0.key < $1.key }) {
            put(id); put(e.epoch); put(e.lastTimestampMs); put(e.ongoingTransactionFirstOffset); put(UInt8(e.batches.count))
            for b in e.batches { put(b.firstSequence); put(b.lastSequence); put(b.firstOffset); put(b.lastOffset) }
        }
        for a in states.aborted { put(a.producerId); put(a.firstOffset); put(a.lastOffset) }
        put(out.withUnsafeBytes { CRC32C.checksum($0) })
        return out
    }

    /// nil when the bytes are not a valid snapshot: every count is checked against the bytes
    /// present before anything is allocated, and every offset must be sane.
    public static func decode(_ bytes: [UInt8]) -> ProducerStateSnapshot? {
        guard bytes.count >= headerSize + 4, bytes.count <= maxBytes else { return nil }
        return bytes.withUnsafeBytes { p -> ProducerStateSnapshot? in
            let body = UnsafeRawBufferPointer(rebasing: p[0..<p.count - 4])
            guard UInt32(bigEndian: p.loadUnaligned(fromByteOffset: p.count - 4, as: UInt32.self)) == CRC32C.checksum(body) else { return nil }
            var at = 0
            func take<T: FixedWidthInteger>(_: T.Type) -> T? {
                guard at + MemoryLayout<T>.size <= body.count else { return nil }
                defer { at += MemoryLayout<T>.size }
                return T(bigEndian: body.loadUnaligned(fromByteOffset: at, as: T.self))
            }
            guard take(UInt32.self) == magic, take(UInt16.self) == 1, take(UInt16.self) != nil,
                  let validUpTo = take(Int64.self), validUpTo >= 0,
                  let producerCount = take(UInt32.self), let abortedCount = take(UInt32.self),
                  Int(producerCount) <= (body.count - at) / 27, Int(abortedCount) <= (body.count - at) / 24
            else { return nil }
            var states = ProducerStates()
            states.validUpTo = validUpTo
            for _ in 0..<producerCount {
                guard let id = take(Int64.self), id >= 0, let epoch = take(Int16.self), let ts = take(Int64.self),
                      let ongoing = take(Int64.self), ongoing >= -1, ongoing < validUpTo, let n = take(UInt8.self),
                      Int(n) <= ProducerStates.batchesRemembered else { return nil }
                var entry = ProducerEntry(epoch: epoch, ongoingTransactionFirstOffset: ongoing, lastTimestampMs: ts)
                for _ in 0..<n {
                    guard let fs = take(Int32.self), let ls = take(Int32.self), let fo = take(Int64.self), let lo = take(Int64.self),
                          fo >= 0, lo >= fo, lo < validUpTo else { return nil }
                    entry.batches.append(SequenceRange(firstSequence: fs, lastSequence: ls, firstOffset: fo, lastOffset: lo))
                }
                states.producers[id] = entry
            }
            var previous: Int64 = -1
            for _ in 0..<abortedCount {
                guard let id = take(Int64.self), let first = take(Int64.self), let last = take(Int64.self),
                      first >= 0, last >= first, last < validUpTo, last >= previous else { return nil }
                previous = last
                states.aborted.append(AbortedTransaction(producerId: id, firstOffset: first, lastOffset: last))
            }
            guard at == body.count else { return nil }
            return ProducerStateSnapshot(states: states)
        }
    }

    /// The snapshot in `directory`, nil when there is none or it is damaged (then the log is
    /// replayed from its start).
    public static func read(directory: String) -> ProducerStateSnapshot? {
        let path = directory + "/" + fileName
        guard let size = FileIO.fileSize(path: path), size <= maxBytes, let bytes = try? FileIO.readAll(path: path) else { return nil }
        return decode(bytes)
    }

    public func write(directory: String) throws(LogError) {
        try FileIO.replaceAtomically(directory: directory, name: Self.fileName, with: encode())
    }
}

/// Kafka's read_committed consumer: given the aborted transactions a fetch returned (producer id
/// and first offset) and the batches in offset order, drops control batches and the batches of
/// aborted transactions; a producer's abort marker ends the skipping of its batches.
public struct ReadCommittedFilter {
    private var pending: [AbortedTransaction]
    private var next = 0
    private var aborting = Set<Int64>()

    public init(aborted: [AbortedTransaction]) {
        pending = aborted.sorted { $0.firstOffset < $1.firstOffset }
    }

    /// Whether the records of `batch` are delivered.
    public mutating func accepts(_ batch: RecordBatch) -> Bool {
        while next < pending.count, pending[next].firstOffset <= batch.lastOffset {
            aborting.insert(pending[next].producerId)
            next += 1
        }
        if batch.isControl {
            if ProducerStates.controlType(of: batch) == .abort { aborting.remove(batch.producerId) }
            return false
        }
        return !(batch.isTransactional && aborting.contains(batch.producerId))
    }
}
