import StrataCore
import Synchronization

/// A cold block opened for a column scan: its batches, each record's value kind, the shapes, and —
/// decoded only when asked for — each record's offset and timestamp and the token columns; values
/// are never reassembled. What a query that reads a few members of every record needs
/// (StrataQuery's ColdColumnScan); the same checks as `ColdBlock.decodeFlat` apply to everything
/// it reads. A fold over whole batches inside its range reads no record stream at all: the
/// batches (checked in order inside the block's offsets when it opened) say which records are in.
public final class ColdColumnarBlock: @unchecked Sendable {
    // Immutable after init, except the decoded columns and records, which are guarded by `lock`:
    // unchecked Sendable is sound because the mutable state is only touched under the lock.
    public typealias Batch = ColdFlatBlock.Batch

    public struct Record: Sendable {
        public let offset: Int64
        public let timestamp: Int64
        /// 0: null value; 1: stored whole (`wholeValue`); 2 + s: shape s.
        public let valueKind: Int32
        /// Kind 1: the value's range in the whole-values stream.
        let whole: Range<Int>
    }

    /// One decoded token column: token t is `bytes[ends[t - 1] ..< ends[t]]` (from 0 for t = 0),
    /// in memory of its own that stays put while the object lives (readers keep pointers).
    public final class Tokens: @unchecked Sendable {
        // Immutable after init: Sendable in fact.
        public let bytes: UnsafeRawBufferPointer
        public let ends: [Int]
        init(bytes: [UInt8], ends: [Int]) {
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes.count), alignment: 8)
            bytes.withUnsafeBytes { memory.copyMemory(from: $0) }
            self.bytes = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(memory)[0..<bytes.count])
            self.ends = ends
        }
        deinit { UnsafeMutableRawPointer(mutating: bytes.baseAddress)?.deallocate() }

        @inline(__always) public func token(_ t: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: bytes[(t == 0 ? 0 : ends[t - 1])..<ends[t]])
        }
    }

    /// One column as stored (TokenColumn.decodeTyped): numbers as numbers, a dictionary as its
    /// entries and an index per token, other text as tokens. What a column scan converts from
    /// without formatting numbers as text first.
    public final class TypedColumn: Sendable {
        public enum Values: Sendable {
            /// Canonical integer tokens.
            case integers([Int64])
            /// Decimal tokens: `unscaled / 10^scale`, written with exactly `scale` fraction digits.
            case decimals(unscaled: [Int64], scales: [UInt8])
            /// Token t is entry `indexes[t]` of `entries` (entry e is `entries.token(e)`).
            case dictionary(entries: Tokens, indexes: [UInt32])
            /// Raw tokens, and timestamps (formatted).
            case text(Tokens)
        }
        public let values: Values
        public let count: Int

        init(_ typed: TokenColumn.Typed) {
            switch typed {
            case .integers(let v):
                values = .integers(v)
                count = v.count
            case .decimals(let v, let s):
                values = .decimals(unscaled: v, scales: s)
                count = v.count
            case .dictionary(let entries, let ends, let indexes):
                values = .dictionary(entries: Tokens(bytes: entries, ends: ends), indexes: indexes)
                count = indexes.count
            case .text(let bytes, let ends):
                values = .text(Tokens(bytes: bytes, ends: ends))
                count = ends.count
            }
        }

        /// Token `t`'s bytes, as `tokens(c)` gives them.
        public func text(_ t: Int) -> [UInt8] {
            var out: [UInt8] = []
            switch values {
            case .integers(let v): TokenColumn.formatInteger(v[t], into: &out)
            case .decimals(let v, let s): TokenColumn.formatDecimal(v[t], scale: Int(s[t]), into: &out)
            case .dictionary(let entries, let indexes): out = Array(entries.token(Int(indexes[t])))
            case .text(let tokens): out = Array(tokens.token(t))
            }
            return out
        }

        /// Bytes held, for the block's budget.
        var bytes: Int {
            switch values {
            case .integers(let v): v.count * 8
            case .decimals(let v, _): v.count * 9
            case .dictionary(let entries, let indexes): entries.bytes.count + indexes.count * 4
            case .text(let tokens): tokens.bytes.count + tokens.ends.count * 8
            }
        }
    }

    public let batches: [Batch]
    /// Each record's value kind, in record order: 0 null, 1 stored whole, 2 + s shape s.
    public let valueKinds: [Int32]
    /// Per shape, its literals (the text before, between and after its slots).
    public let shapes: [[[UInt8]]]
    /// Per shape, the column of each slot.
    public let slotColumns: [[Int]]
    /// Tokens per column in the whole block.
    public let tokenCounts: [Int]
    private let columnStreams: [ColdBlock.StoredStream]
    private let maxBytes: Int
    private let lock = Mutex<(decoded: [Int: Tokens], typed: [Int: TypedColumn], bytes: Int)>(([:], [:], 0))
    /// The record and whole-value streams, decoded on first use (`records()`).
    private let recordStored: ColdBlock.StoredStream
    private let wholeStored: ColdBlock.StoredStream
    private let keyBytes: Int
    /// The offsets the block holds (its directory entry's): every record's offset is checked
    /// inside them, ascending, when the records are decoded.
    private let offsetRange: Range<Int64>?
    private let decodedRecords = Mutex<(records: [Record], whole: Tokens)?>(nil)
    /// Which block of which file this is, for the errors of what is decoded later.
    private let origin: String
    /// What keeps the block's bytes (the streams are views into them): the file's mapping, or
    /// a copy of the bytes.
    private let owner: AnyObject

    /// Bytes copied out of a buffer that does not outlive the block.
    private final class OwnedBytes {
        let bytes: UnsafeRawBufferPointer
        init(_ source: UnsafeRawBufferPointer) {
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, source.count), alignment: 8)
            if let base = source.baseAddress, source.count > 0 { memory.baseAddress!.copyMemory(from: base, byteCount: source.count) }
            bytes = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(memory)[0..<source.count])
        }
        deinit { UnsafeMutableRawPointer(mutating: bytes.baseAddress)?.deallocate() }
    }

    /// `owner`: an object that keeps `bytes` valid for the block's life (a file mapping); without
    /// one, the bytes are copied.
    init(_ bytes: UnsafeRawBufferPointer, maxBytes: Int = 256 << 20, offsets: Range<Int64>? = nil, origin: String = "cold block",
         owner: AnyObject? = nil) throws {
        var bytes = bytes
        if let owner {
            self.owner = owner
        } else {
            let copy = OwnedBytes(bytes)
            self.owner = copy
            bytes = copy.bytes
        }
        let (batchCount, recordCount, streams) = try ColdBlock.readStreams(bytes, maxBytes: maxBytes)
        self.maxBytes = maxBytes
        offsetRange = offsets
        self.origin = origin
        columnStreams = Array(streams[6...])
        recordStored = streams[ColdBlock.Stream.records.rawValue]
        wholeStored = streams[ColdBlock.Stream.rawValues.rawValue]
        keyBytes = streams[ColdBlock.Stream.keys.rawValue].rawLength
        let batchStream = try streams[ColdBlock.Stream.batches.rawValue].decompressed()
        let kindStream = try streams[ColdBlock.Stream.valueKinds.rawValue].decompressed()
        let shapeStream = try streams[ColdBlock.Stream.shapes.rawValue].decompressed()
        // The literals are views into the stream: copied while it is held.
        let (literals, mapping) = try shapeStream.withUnsafeBytes { bytes in
            let (views, mapping) = try ColdBlock.readShapes(ColdReader(bytes), columnStreams: streams.count - 6)
            return (views.map { $0.map { Array($0) } }, mapping)
        }
        shapes = literals
        slotColumns = mapping
        let (kinds, perColumn) = try kindStream.withUnsafeBytes { k in
            try ColdBlock.readValueKinds(ColdReader(k), recordCount: recordCount, batchCount: batchCount, batchBytes: batchStream.count,
                                         slotColumns: mapping, columnBytes: streams[6...].map(\.rawLength))
        }
        tokenCounts = perColumn
        valueKinds = kinds.map { Int32(truncatingIfNeeded: $0) }
        var batches: [Batch] = []
        batches.reserveCapacity(batchCount)
        var records = 0
        try batchStream.withUnsafeBytes { bb in
            var batchReader = ColdBlock.BatchStreamReader(reader: ColdReader(bb))
            for _ in 0..<batchCount {
                let batch = try batchReader.next(firstRecord: records, recordsLeft: recordCount - records)
                records += batch.records.count
                batches.append(batch)
            }
        }
        guard records == recordCount else { throw ColdFormatError("\(records) records in the batches, \(recordCount) declared") }
        self.batches = batches
    }

    /// Each record's offset, timestamp, value kind and whole value, decoded once.
    public func records() throws -> [Record] { try decoded().records }

    /// Record `i`'s value when it is stored whole (kind 1); valid while the block lives.
    public func wholeValue(_ i: Int) throws -> UnsafeRawBufferPointer {
        let (records, whole) = try decoded()
        return UnsafeRawBufferPointer(rebasing: whole.bytes[records[i].whole])
    }

    private func decoded() throws -> (records: [Record], whole: Tokens) {
        if let known = decodedRecords.withLock({ $0 }) { return known }
        do {
            return try decodeRecords()
        } catch {
            throw ColdFormatError("\(origin): \(error)")
        }
    }

    private func decodeRecords() throws -> (records: [Record], whole: Tokens) {
        let recordStream = try recordStored.decompressed()
        let wholeStream = try wholeStored.decompressed()
        var records: [Record] = []
        records.reserveCapacity(valueKinds.count)
        try recordStream.withUnsafeBytes { rr in
            try wholeStream.withUnsafeBytes { ww in
                var rec = ColdReader(rr), whole = ColdReader(ww)
                var keysLeft = keyBytes
                for batch in batches {
                    let (base, baseTimestamp) = (batch.baseOffset, batch.baseTimestamp)
                    for i in 0..<batch.records.count {
                        let offset = base &+ Int64(i) &+ (try rec.signed())
                        let timestamp = baseTimestamp &+ (try rec.signed())
                        let headerCount = try rec.count(max: rec.remaining / 2)
                        for _ in 0..<headerCount {
                            _ = try rec.blob()
                            _ = try rec.nullableBlobView()
                        }
                        let kind = valueKinds[records.count]
                        var wholeRange = 0..<0
                        if kind == 1 {
                            let v = try whole.blob()
                            wholeRange = (whole.position - v.count)..<whole.position
                        }
                        let keyCode = try rec.count(max: keysLeft + 2)
                        if keyCode == 1 {
                            _ = try rec.count(max: ColdBlock.slotLimit)
                            guard kind >= 2 else { throw ColdFormatError("a key refers to a value slot that is not there") }
                        } else if keyCode >= 2 {
                            keysLeft -= keyCode - 2
                        }
                        if let range = offsetRange {
                            guard range.contains(offset), records.last.map({ $0.offset < offset }) ?? true else {
                                throw ColdFormatError("record offset \(offset) out of order or outside [\(range.lowerBound), \(range.upperBound))")
                            }
                        }
                        records.append(Record(offset: offset, timestamp: timestamp, valueKind: kind, whole: wholeRange))
                    }
                }
            }
        }
        let result = (records, Tokens(bytes: wholeStream, ends: []))
        return decodedRecords.withLock { state in
            if let known = state { return known }
            state = result
            return result
        }
    }

    /// Column `c` as stored, decoded once (the decoded columns share the block's byte budget).
    public func values(_ c: Int) throws -> TypedColumn {
        if let t = lock.withLock({ $0.typed[c] }) { return t }
        do {
            return try decodeValues(c)
        } catch {
            throw ColdFormatError("\(origin): \(error)")
        }
    }

    private func decodeValues(_ c: Int) throws -> TypedColumn {
        guard c >= 0, c < columnStreams.count else { throw ColdFormatError("column \(c) of \(columnStreams.count)") }
        let stream = try columnStreams[c].decompressed()
        let budget = maxBytes - lock.withLock { $0.bytes }
        let typed = try stream.withUnsafeBytes { s in
            var reader = ColdReader(s)
            return TypedColumn(try TokenColumn.decodeTyped(&reader, count: tokenCounts[c], maxBytes: budget))
        }
        guard typed.count == tokenCounts[c] else { throw ColdFormatError("column \(c): \(typed.count) tokens, \(tokenCounts[c]) declared") }
        if case .text(let tokens) = typed.values {
            var previous = 0
            for e in tokens.ends {
                guard e >= previous, e <= tokens.bytes.count else { throw ColdFormatError("column \(c) token ends out of order") }
                previous = e
            }
        }
        return lock.withLock { state in
            if let t = state.typed[c] { return t }
            state.typed[c] = typed
            state.bytes += typed.bytes
            return typed
        }
    }

    /// Column `c`'s tokens, decoded once (the decoded columns share the block's byte budget).
    public func tokens(_ c: Int) throws -> Tokens {
        if let t = lock.withLock({ $0.decoded[c] }) { return t }
        guard c >= 0, c < columnStreams.count else { throw ColdFormatError("column \(c) of \(columnStreams.count)") }
        let stream = try columnStreams[c].decompressed()
        var bytes: [UInt8] = []
        var ends: [Int] = []
        ends.reserveCapacity(tokenCounts[c])
        let budget = maxBytes - lock.withLock { $0.bytes }
        try stream.withUnsafeBytes { s in
            var reader = ColdReader(s)
            try TokenColumn.decode(&reader, count: tokenCounts[c], into: &bytes, ends: &ends, maxBytes: budget)
        }
        guard ends.count == tokenCounts[c], ends.allSatisfy({ $0 >= 0 && $0 <= bytes.count }) else {
            throw ColdFormatError("column \(c) token ends out of range")
        }
        var previous = 0
        for e in ends {
            guard e >= previous else { throw ColdFormatError("column \(c) token ends out of order") }
            previous = e
        }
        let tokens = Tokens(bytes: bytes, ends: ends)
        return lock.withLock { state in
            if let t = state.decoded[c] { return t }
            state.decoded[c] = tokens
            state.bytes += bytes.count
            return tokens
        }
    }
}
