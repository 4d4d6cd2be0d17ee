import CCompression
import CStrataScan
import Glibc
import StrataCore

/// One block of a cold segment: a run of whole batches (about 8 MiB of log) stored as streams,
/// each zstd-compressed when that is smaller. JSON values are split into a *shape* (the text
/// around their scalars: braces, member names, quotes, separators, whitespace) and the scalars,
/// which go to one token column per path (`user.id`, `tags[]`), shared by every shape with that
/// path; values that are not strict JSON (or past the shape limit) are kept whole. Layout byte
/// by byte: docs/format.md, "Cold segments".
public enum ColdBlock {
    /// Shapes per block at most; later new shapes are stored whole.
    static let shapeLimit = 1024
    /// Scalars per value at most for a shape (a bigger document is stored whole).
    static let slotLimit = 512
    /// Records per block at most (the decoder's bound on what a block may claim).
    public static let recordLimit = 1 << 22
    static let streamLimit = 6 + shapeLimit * slotLimit

    enum Stream: Int { case batches = 0, records, keys, valueKinds, rawValues, shapes }

    /// The block's bytes.
    /// What one stream of a block holds and costs (`strata tier --dry-run --streams`).
    public struct StreamStats: Sendable {
        /// `batches`, `records`, `keys`, `value kinds`, `whole values`, `shapes`, or a column's path.
        public let name: String
        /// For a column: integer, decimal, timestamp, dictionary or raw.
        public let encoding: String
        public let rawBytes: Int
        public let storedBytes: Int
    }

    public static func encode(_ batches: [ColdBatch], stats: ((StreamStats) -> Void)? = nil) throws -> [UInt8] {
        let recordCount = batches.reduce(0) { $0 + $1.records.count }
        guard recordCount <= recordLimit else { throw ColdFormatError("\(recordCount) records in one block") }
        var batchStream = ColdWriter()
        var recordStream = ColdWriter()
        var keyStream = ColdWriter()
        var kindStream = ColdWriter()
        var rawStream = ColdWriter()
        // Every value's bytes end to end: tokens are ranges of it.
        var arena: [UInt8] = []
        arena.reserveCapacity(batches.reduce(0) { $0 + $1.records.reduce(0) { $0 + ($1.value?.count ?? 0) } })
        var shapeTable = ByteStringTable()
        var shapeKey: [UInt8] = []
        var shapes: [[[UInt8]]] = []  // literals per shape
        // Token columns by path (`user.id`, `tags[]`): slots of different shapes at the same
        // place in the document share a column, so its dictionary and deltas span the block.
        var columns: [[Range<Int>]] = []
        var columnByPath: [String: Int] = [:]
        var slotColumns: [[Int]] = []  // per shape, per slot
        var slotKinds: [Int32] = []
        let slots = UnsafeMutableBufferPointer<strata_json_slot>.allocate(capacity: slotLimit)
        defer { slots.deallocate() }
        /// Shapes `value` into the streams; the slot of its shape whose string equals `key`, if any.
        func encodeValue(_ value: [UInt8]?, key: [UInt8]?) -> Int? {
            guard let value else {
                kindStream.varint(0)
                return nil
            }
            let base = arena.count
            arena.append(contentsOf: value)
            let n = Int(value.withUnsafeBufferPointer { strata_json_shape($0.baseAddress, $0.count, slots.baseAddress, Int32(slotLimit)) })
            var shape = -1
            if n >= 0 {
                // The shape's identity: its literals, each with its length, end to end.
                shapeKey.removeAll(keepingCapacity: true)
                var at = 0
                for k in 0...n {
                    let end = k < n ? Int(slots[k].start) : value.count
                    ColdWriter.varint(UInt64(end - at), into: &shapeKey)
                    shapeKey.append(contentsOf: value[at..<end])
                    if k < n { at = end + Int(slots[k].length) }
                }
                let id = shapeKey.withUnsafeBytes { key in shapeTable.index(of: key) { count in count < shapeLimit } }
                if let id {
                    shape = Int(id)
                    if shape == shapes.count {
                        var literals: [[UInt8]] = []
                        var at = 0
                        for k in 0...n {
                            let end = k < n ? Int(slots[k].start) : value.count
                            literals.append(Array(value[at..<end]))
                            if k < n { at = end + Int(slots[k].length) }
                        }
                        shapes.append(literals)
                        slotKinds.removeAll(keepingCapacity: true)
                        for k in 0..<n { slotKinds.append(slots[k].kind) }
                        var mapping: [Int] = []
                        for path in Self.slotPaths(literals: literals, kinds: slotKinds) {
                            if let c = columnByPath[path] {
                                mapping.append(c)
                            } else {
                                columnByPath[path] = columns.count
                                mapping.append(columns.count)
                                columns.append([])
                            }
                        }
                        slotColumns.append(mapping)
                    }
                }
            }
            guard shape >= 0 else {
                kindStream.varint(1)
                rawStream.blob(value)
                return nil
            }
            kindStream.varint(UInt64(shape) + 2)
            var keySlot: Int?
            for k in 0..<n {
                let start = base + Int(slots[k].start)
                let length = Int(slots[k].length)
                columns[slotColumns[shape][k]].append(start..<(start + length))
                if keySlot == nil, let key, key.count == length, slots[k].kind == Int32(STRATA_SLOT_STRING),
                   key.withUnsafeBytes({ kb in value.withUnsafeBytes { vb in
                       length == 0 || memcmp(kb.baseAddress!, vb.baseAddress! + Int(slots[k].start), length) == 0 } }) {
                    keySlot = k
                }
            }
            return keySlot
        }
        var previousBase: Int64 = 0
        var previousTimestamp: Int64 = 0
        for b in batches {
            batchStream.signed(b.baseOffset &- previousBase)
            previousBase = b.baseOffset
            batchStream.varint(UInt64(UInt32(bitPattern: b.lastOffsetDelta)))
            batchStream.signed(Int64(b.partitionLeaderEpoch))
            batchStream.varint(UInt64(UInt16(bitPattern: b.attributes)))
            batchStream.signed(b.producerId)
            batchStream.signed(Int64(b.producerEpoch))
            batchStream.signed(Int64(b.baseSequence))
            batchStream.signed(b.baseTimestamp &- previousTimestamp)
            previousTimestamp = b.baseTimestamp
            batchStream.signed(b.maxTimestamp &- b.baseTimestamp)
            batchStream.varint(UInt64(b.records.count))
            for (i, r) in b.records.enumerated() {
                recordStream.signed(r.offset &- b.baseOffset &- Int64(i))
                recordStream.signed(r.timestamp &- b.baseTimestamp)
                recordStream.varint(UInt64(r.headers.count))
                for h in r.headers {
                    recordStream.blob(h.key)
                    recordStream.nullableBlob(h.value)
                }
                let keySlot = encodeValue(r.value, key: r.key)
                // The key: null, the same bytes as a string of the value (a key taken from a
                // member, as `--key-field` and most producers do), or its own bytes.
                if let key = r.key {
                    if let keySlot {
                        recordStream.varint(1)
                        recordStream.varint(UInt64(keySlot))
                    } else {
                        recordStream.varint(UInt64(key.count) + 2)
                        keyStream.bytes.append(contentsOf: key)
                    }
                } else {
                    recordStream.varint(0)
                }
            }
        }
        var shapeStream = ColdWriter()
        shapeStream.varint(UInt64(shapes.count))
        shapeStream.varint(UInt64(columns.count))
        for (literals, mapping) in zip(shapes, slotColumns) {
            shapeStream.varint(UInt64(literals.count - 1))
            for l in literals { shapeStream.blob(l) }
            for c in mapping { shapeStream.varint(UInt64(c)) }
        }
        var streams = [batchStream.bytes, recordStream.bytes, keyStream.bytes, kindStream.bytes, rawStream.bytes, shapeStream.bytes]
        arena.withUnsafeBytes { a in
            for tokens in columns {
                var w = ColdWriter()
                TokenColumn.encode(tokens, in: a, into: &w)
                streams.append(w.bytes)
            }
        }
        var out = ColdWriter()
        out.varint(UInt64(batches.count))
        out.varint(UInt64(recordCount))
        out.varint(UInt64(streams.count))
        var names = ["batches", "records", "keys", "value kinds", "whole values", "shapes"]
        if stats != nil {
            var paths = [String](repeating: "", count: columns.count)
            for (path, c) in columnByPath { paths[c] = path.isEmpty ? "(top level)" : path }
            names += paths
        }
        for (i, s) in streams.enumerated() {
            let packed = try zstd(s)
            if let stats {
                let encoding = i < 6 ? "" : (TokenColumn.Encoding(rawValue: s.first ?? 0).map { "\($0)" } ?? "?")
                stats(StreamStats(name: names[i], encoding: encoding, rawBytes: s.count, storedBytes: min(s.count, packed.count)))
            }
            if packed.count < s.count {
                out.bytes.append(1)
                out.varint(UInt64(s.count))
                out.blob(packed)
            } else {
                out.bytes.append(0)
                out.varint(UInt64(s.count))
                out.blob(s)
            }
        }
        return out.bytes
    }

    /// The place of each slot in its document, from the shape's literals: member names joined by
    /// dots, `[]` for any array element (`geo.city`, `tags[]`, `items[].sku`).
    static func slotPaths(literals: [[UInt8]], kinds: [Int32]) -> [String] {
        var stack: [(object: Bool, key: [UInt8])] = []
        var paths: [String] = []
        let n = kinds.count
        for k in 0...n {
            var literal = literals[k][...]
            // A string slot's quotes are in the literals around it.
            if k > 0 && kinds[k - 1] == Int32(STRATA_SLOT_STRING) { literal = literal.dropFirst() }
            if k < n && kinds[k] == Int32(STRATA_SLOT_STRING) { literal = literal.dropLast() }
            var i = literal.startIndex
            while i < literal.endIndex {
                switch literal[i] {
                case UInt8(ascii: "{"): stack.append((true, []))
                case UInt8(ascii: "["): stack.append((false, []))
                case UInt8(ascii: "}"), UInt8(ascii: "]"): if !stack.isEmpty { stack.removeLast() }
                case UInt8(ascii: "\""):
                    // A member name (string values are slots, never in literals).
                    var j = i + 1
                    while j < literal.endIndex && literal[j] != UInt8(ascii: "\"") {
                        j += literal[j] == UInt8(ascii: "\\") ? 2 : 1
                    }
                    if !stack.isEmpty { stack[stack.count - 1].key = Array(literal[(i + 1)..<min(j, literal.endIndex)]) }
                    i = j
                default: break
                }
                i += 1
            }
            if k < n {
                paths.append(stack.map { $0.object ? String(decoding: $0.key, as: UTF8.self) : "[]" }.joined(separator: "."))
            }
        }
        return paths
    }

    static func zstd(_ bytes: [UInt8]) throws -> [UInt8] {
        guard !bytes.isEmpty else { return [] }
        var out: UnsafeMutablePointer<UInt8>?
        var outCount = 0
        let rc = bytes.withUnsafeBufferPointer { strata_compress(Int32(STRATA_CODEC_ZSTD), $0.baseAddress, $0.count, &out, &outCount) }
        defer { free(out) }
        guard rc == 0, let out else { throw ColdFormatError("zstd compression failed (\(rc))") }
        return Array(UnsafeBufferPointer(start: out, count: outCount))
    }

    /// The batches of a block; every count and length is checked against the bytes before use.
    /// `maxBytes` bounds both the block's decompressed streams together and the records decoded
    /// from them (a block holds ~8 MiB of log: hostile streams that inflate past the budget, or
    /// a literal repeated by millions of records, are refused rather than allocated).
    public static func decode(_ bytes: UnsafeRawBufferPointer, maxBytes: Int = 256 << 20) throws -> [ColdBatch] {
        try decodeFlat(bytes, maxBytes: maxBytes).coldBatches()
    }

    /// `decode` into one buffer: every key, value and header of the block end to end, records
    /// as ranges of it (no allocation per record; what readers of many records use).
    public static func decodeFlat(_ bytes: UnsafeRawBufferPointer, maxBytes: Int = 256 << 20) throws -> ColdFlatBlock {
        let (batchCount, recordCount, stored) = try readStreams(bytes, maxBytes: maxBytes)
        let streams = try stored.map { try $0.decompressed() }
        return try streams[Stream.batches.rawValue].withUnsafeBytes { b in
            try streams[Stream.records.rawValue].withUnsafeBytes { rec in
                try streams[Stream.keys.rawValue].withUnsafeBytes { k in
                    try streams[Stream.valueKinds.rawValue].withUnsafeBytes { kinds in
                        try streams[Stream.rawValues.rawValue].withUnsafeBytes { raw in
                            try streams[Stream.shapes.rawValue].withUnsafeBytes { sh in
                                try assemble(batches: ColdReader(b), records: ColdReader(rec), keys: ColdReader(k), kinds: ColdReader(kinds),
                                             raw: ColdReader(raw), shapes: ColdReader(sh), columns: Array(streams[6...]),
                                             batchCount: batchCount, recordCount: recordCount, maxOutputBytes: maxBytes)
                            }
                        }
                    }
                }
            }
        }
    }

    /// One stream of a block as stored: its codec, declared length and bytes — a view into the
    /// block, valid while the block's bytes are (ColdColumnarBlock keeps their owner) —
    /// decompressed on demand: a column scan opens only the streams it reads.
    struct StoredStream {
        let codec: UInt8
        let rawLength: Int
        let stored: UnsafeRawBufferPointer

        func decompressed() throws -> [UInt8] {
            switch codec {
            case 0:
                guard stored.count == rawLength else { throw ColdFormatError("stream length \(stored.count), expected \(rawLength)") }
                return Array(stored)
            case 1:
                // Straight into the array, with one byte of room past the declared length (the
                // length was checked against the block's budget): output that fills it, or would
                // not fit, is longer than declared.
                var rc: Int32 = 0
                var outCount = 0
                // A first frame that declares another size is refused before its room is
                // reserved (a few bytes claiming the whole budget allocate nothing).
                let declared = strata_zstd_content_size(stored.baseAddress?.assumingMemoryBound(to: UInt8.self), stored.count)
                guard declared != -2, declared < 0 || declared <= rawLength else {
                    throw ColdFormatError("a stream's frame declares \(declared) bytes, the stream \(rawLength)")
                }
                let out = try [UInt8](unsafeUninitializedCapacity: rawLength + 1) { buffer, initialized in
                    rc = strata_zstd_decompress_into(stored.baseAddress?.assumingMemoryBound(to: UInt8.self), stored.count, buffer.baseAddress, buffer.count, &outCount)
                    guard rc == 0, outCount == rawLength else { throw ColdFormatError("a stream does not decompress (\(rc), \(outCount) of \(rawLength) bytes)") }
                    initialized = outCount
                }
                return out
            default:
                throw ColdFormatError("stream codec \(codec)")
            }
        }
    }

    /// The block's header counts and its streams (views into `bytes`), their declared lengths
    /// within `maxBytes` together (a budget checked before anything is decompressed).
    static func readStreams(_ bytes: UnsafeRawBufferPointer, maxBytes: Int) throws -> (batchCount: Int, recordCount: Int, streams: [StoredStream]) {
        var r = ColdReader(bytes)
        let batchCount = try r.count(max: recordLimit)
        let recordCount = try r.count(max: recordLimit)
        let streamCount = try r.count(max: streamLimit)
        guard streamCount >= 6 else { throw ColdFormatError("\(streamCount) streams") }
        var streams: [StoredStream] = []
        streams.reserveCapacity(min(streamCount, 4096))
        var budget = maxBytes
        for _ in 0..<streamCount {
            let codec = try r.fixed(UInt8.self)
            let rawLength = try r.count(max: budget)
            budget -= rawLength
            let stored = try r.blob()
            guard codec <= 1 else { throw ColdFormatError("stream codec \(codec)") }
            streams.append(StoredStream(codec: codec, rawLength: rawLength, stored: stored))
        }
        return (batchCount, recordCount, streams)
    }

    /// The batch stream: each batch's fields in `encode`'s order, its base offset and timestamp as
    /// deltas from the previous batch's. `next` gives the batch whose `count` records follow from
    /// record `firstRecord` on (the caller decodes exactly those).
    struct BatchStreamReader {
        var reader: ColdReader
        private var previousBase: Int64 = 0
        private var previousTimestamp: Int64 = 0

        init(reader: ColdReader) { self.reader = reader }

        mutating func next(firstRecord: Int, recordsLeft: Int) throws -> ColdFlatBlock.Batch {
            let base = previousBase &+ (try reader.signed())
            previousBase = base
            let lastOffsetDelta = Int32(truncatingIfNeeded: try reader.varint())
            let epoch = Int32(truncatingIfNeeded: try reader.signed())
            let attributes = Int16(bitPattern: UInt16(truncatingIfNeeded: try reader.varint()))
            let producerId = try reader.signed()
            let producerEpoch = Int16(truncatingIfNeeded: try reader.signed())
            let baseSequence = Int32(truncatingIfNeeded: try reader.signed())
            let baseTimestamp = previousTimestamp &+ (try reader.signed())
            previousTimestamp = baseTimestamp
            let maxTimestamp = baseTimestamp &+ (try reader.signed())
            let count = try reader.count(max: recordsLeft)
            return ColdFlatBlock.Batch(baseOffset: base, lastOffsetDelta: lastOffsetDelta, partitionLeaderEpoch: epoch, attributes: attributes,
                                       producerId: producerId, producerEpoch: producerEpoch, baseSequence: baseSequence,
                                       baseTimestamp: baseTimestamp, maxTimestamp: maxTimestamp, records: firstRecord..<(firstRecord + count))
        }
    }

    /// The shapes (literals, each a view into the shapes stream) and the column of each slot.
    static func readShapes(_ sh0: ColdReader, columnStreams: Int) throws -> (shapes: [[UnsafeRawBufferPointer]], slotColumns: [[Int]]) {
        var sh = sh0
        let shapeCount = try sh.count(max: shapeLimit)
        let columnCount = try sh.count(max: columnStreams)
        guard columnCount == columnStreams else { throw ColdFormatError("\(columnStreams) column streams for \(columnCount) columns") }
        var shapes: [[UnsafeRawBufferPointer]] = []
        var slotColumns: [[Int]] = []
        for _ in 0..<shapeCount {
            let slots = try sh.count(max: slotLimit)
            var literals: [UnsafeRawBufferPointer] = []
            for _ in 0...slots { literals.append(try sh.blob()) }
            var mapping: [Int] = []
            for _ in 0..<slots { mapping.append(try sh.count(max: max(0, columnCount - 1))) }
            guard slots == 0 || columnCount > 0 else { throw ColdFormatError("a shape's slots have no columns") }
            shapes.append(literals)
            slotColumns.append(mapping)
        }
        return (shapes, slotColumns)
    }

    /// Each record's value kind (0 null, 1 whole, 2 + shape) and each column's token count (the
    /// slots of the values that use it).
    static func readValueKinds(_ kinds0: ColdReader, recordCount: Int, batchCount: Int, batchBytes: Int, slotColumns: [[Int]],
                               columnBytes: [Int]) throws -> (kinds: [Int], perColumn: [Int]) {
        var kinds = kinds0
        // Every record takes at least a byte of the kinds stream, every batch several of the
        // batch stream: counts beyond that are lies, refused before anything is reserved for them.
        guard recordCount <= kinds.remaining, batchCount <= batchBytes else {
            throw ColdFormatError("\(batchCount) batches and \(recordCount) records in streams of \(batchBytes) and \(kinds.remaining) bytes")
        }
        var valueKinds: [Int] = []
        valueKinds.reserveCapacity(recordCount)
        // Records per kind first, tokens per column from them: a shape's slots are walked once,
        // not once per record.
        var recordsOfKind = [Int](repeating: 0, count: slotColumns.count + 2)
        if slotColumns.count + 2 <= 0x80 {
            valueKinds = try kinds.smallVarints(recordCount, below: slotColumns.count + 2, as: Int.self)
            for kind in valueKinds { recordsOfKind[kind] += 1 }
        } else {
            for _ in 0..<recordCount {
                let kind = try kinds.count(max: slotColumns.count + 1)
                recordsOfKind[kind] += 1
                valueKinds.append(kind)
            }
        }
        var perColumn = [Int](repeating: 0, count: columnBytes.count)
        for (shape, columns) in slotColumns.enumerated() where recordsOfKind[shape + 2] > 0 {
            for c in columns {
                // Every encoding spends at least a byte per token: more tokens than bytes is a lie.
                // (Counts are at most the stream's bytes each: the sum cannot overflow.)
                perColumn[c] += recordsOfKind[shape + 2]
                guard perColumn[c] <= columnBytes[c] else { throw ColdFormatError("column \(c) cannot hold \(perColumn[c]) tokens") }
            }
        }
        return (valueKinds, perColumn)
    }

    private static func assemble(batches b0: ColdReader, records rec0: ColdReader, keys k0: ColdReader, kinds kinds0: ColdReader,
                                 raw raw0: ColdReader, shapes sh0: ColdReader, columns: [[UInt8]],
                                 batchCount: Int, recordCount: Int, maxOutputBytes: Int) throws -> ColdFlatBlock {
        var (b, rec, k, raw) = (b0, rec0, k0, raw0)
        let (shapes, slotColumns) = try readShapes(sh0, columnStreams: columns.count)
        let columnCount = columns.count
        let (valueKinds, perColumn) = try readValueKinds(kinds0, recordCount: recordCount, batchCount: batchCount, batchBytes: b.remaining,
                                                         slotColumns: slotColumns, columnBytes: columns.map(\.count))
        // Every column's stream copied into one allocation that lives until the records are
        // assembled, each read through a token source as the records take its tokens.
        let allColumns = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, columns.reduce(0) { $0 + $1.count }), alignment: 8)
        defer { allColumns.deallocate() }
        var sources: [TokenSource] = []
        sources.reserveCapacity(columnCount)
        var columnAt = 0
        for c in 0..<columnCount {
            columns[c].withUnsafeBytes { allColumns.baseAddress!.advanced(by: columnAt).copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(allColumns.baseAddress!), byteCount: $0.count) }
            let stream = UnsafeRawBufferPointer(rebasing: allColumns[columnAt..<columnAt + columns[c].count])
            columnAt += columns[c].count
            sources.append(try TokenSource(ColdReader(stream), count: perColumn[c]))
        }
        var literalsFlat: [UnsafeRawBufferPointer] = []
        var shapeFirstLiteral: [Int] = []
        var shapeLiteralBytes: [Int] = []
        var slotColumnsFlat: [Int] = []
        var shapeFirstSlot: [Int] = []
        for (s, literals) in shapes.enumerated() {
            shapeFirstLiteral.append(literalsFlat.count)
            literalsFlat += literals
            shapeLiteralBytes.append(literals.reduce(0) { $0 + $1.count })
            shapeFirstSlot.append(slotColumnsFlat.count)
            slotColumnsFlat += slotColumns[s]
        }
        // Every key, value and header end to end; spending is checked before each append.
        let data = ColdFlatBlock.Buffer(capacity: min(maxOutputBytes, 16 << 20))
        func spend(_ n: Int) throws {
            guard data.count + n <= maxOutputBytes else { throw ColdFormatError("a block decoding to more than \(maxOutputBytes) bytes") }
        }
        func append(_ bytes: UnsafeRawBufferPointer) throws -> Int {
            try spend(bytes.count)
            let at = data.count
            data.append(bytes)
            return at
        }
        var batches: [ColdFlatBlock.Batch] = []
        batches.reserveCapacity(batchCount)
        var records: [ColdFlatBlock.Record] = []
        records.reserveCapacity(recordCount)
        var headers: [ColdFlatBlock.Header] = []
        // The current value's slots (where each token landed in `data`), for a key that is one
        // of them: sized once for the widest shape, reset by its count.
        let widestShape = slotColumns.map(\.count).max() ?? 0
        var slotAt = [Int](repeating: 0, count: widestShape)
        var slotEnd = [Int](repeating: 0, count: widestShape)
        var slotsInValue = 0
        var batchStream = BatchStreamReader(reader: b)
        for _ in 0..<batchCount {
            let batch = try batchStream.next(firstRecord: records.count, recordsLeft: recordCount - records.count)
            let (base, baseTimestamp) = (batch.baseOffset, batch.baseTimestamp)
            for i in 0..<batch.records.count {
                let offset = base &+ Int64(i) &+ (try rec.signed())
                let timestamp = baseTimestamp &+ (try rec.signed())
                let headerCount = try rec.count(max: rec.remaining / 2)
                let firstHeader = headers.count
                for _ in 0..<headerCount {
                    let key = try rec.blob()
                    let keyAt = try append(key)
                    var valueAt = -1
                    var valueCount = -1
                    if let v = try rec.nullableBlobView() {
                        valueAt = try append(v)
                        valueCount = v.count
                    }
                    headers.append(ColdFlatBlock.Header(key: keyAt, keyCount: key.count, value: valueAt, valueCount: valueCount))
                }
                let kind = valueKinds[records.count]
                var valueAt = -1
                var valueCount = -1
                slotsInValue = 0
                if kind == 1 {
                    let v = try raw.blob()
                    valueAt = try append(v)
                    valueCount = v.count
                } else if kind >= 2 {
                    let s = kind - 2
                    valueAt = data.count
                    try spend(shapeLiteralBytes[s])
                    let firstLiteral = shapeFirstLiteral[s], firstSlot = shapeFirstSlot[s]
                    let slots = (s + 1 < shapeFirstSlot.count ? shapeFirstSlot[s + 1] : slotColumnsFlat.count) - firstSlot
                    for slot in 0...slots {
                        data.append(literalsFlat[firstLiteral + slot])
                        guard slot < slots else { break }
                        let at = data.count
                        try sources[slotColumnsFlat[firstSlot + slot]].next(into: data, limit: maxOutputBytes)
                        slotAt[slot] = at
                        slotEnd[slot] = data.count
                    }
                    valueCount = data.count - valueAt
                    slotsInValue = slots
                }
                let keyCode = try rec.count(max: k.remaining + 2)
                var keyAt = -1
                var keyCount = -1
                if keyCode == 1 {
                    let slot = try rec.count(max: max(0, slotsInValue - 1))
                    guard valueAt >= 0, slot < slotsInValue else { throw ColdFormatError("a key refers to a value slot that is not there") }
                    // The key is the slot's bytes inside the value: nothing to copy.
                    keyAt = slotAt[slot]
                    keyCount = slotEnd[slot] - slotAt[slot]
                } else if keyCode >= 2 {
                    let key = try k.take(keyCode - 2)
                    keyAt = try append(key)
                    keyCount = key.count
                }
                records.append(ColdFlatBlock.Record(offset: offset, timestamp: timestamp, key: keyAt, keyCount: keyCount, value: valueAt,
                                                    valueCount: valueCount, headers: firstHeader..<headers.count))
            }
            batches.append(batch)
        }
        guard records.count == recordCount else { throw ColdFormatError("\(records.count) records decoded, \(recordCount) declared") }
        return ColdFlatBlock(data: data, batches: batches, records: records, headers: headers)
    }
}
