import Glibc
import StrataBroker
import StrataCore
import CStrataScan
import StrataLog
import Synchronization

/// One row of a chunk: views into the chunk's segment mapping (uncompressed batches) or its
/// arena (records of compressed batches), valid while the chunk is alive.
struct RowRef {
    let partition: Int32
    let offset: Int64
    let timestamp: Int64
    let key: UnsafeRawPointer?
    let keyCount: Int32
    let value: UnsafeRawPointer?
    let valueCount: Int32
    let headersIndex: Int32
}

/// A JSON member extracted ahead of SQLite, by the scan thread.
enum FieldValue {
    /// Text: bytes of the row's value, or of its chunk's arena when escapes were decoded.
    case text(UnsafeRawPointer, Int32)
    case integer(Int64)
    case real(Double)
    case null
    /// Not decided here: SQLite's json_extract answers (and reports malformed JSON).
    case fallback
}

/// Copies of records that do not live in a mapping (decompressed batches), in large blocks.
final class Arena {
    private var blocks: [UnsafeMutableRawBufferPointer] = []
    private var used = 0
    deinit { for b in blocks { b.deallocate() } }

    var isEmpty: Bool { blocks.isEmpty }

    func copy(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawPointer {
        let destination = allocate(bytes.count)
        if let source = bytes.baseAddress { destination.copyMemory(from: source, byteCount: bytes.count) }
        return UnsafeRawPointer(destination)
    }

    /// `count` bytes that live as long as the arena; `shrink` gives back the unused end of the
    /// most recent allocation.
    func allocate(_ count: Int) -> UnsafeMutableRawPointer {
        if blocks.isEmpty || used + count > blocks[blocks.count - 1].count {
            blocks.append(.allocate(byteCount: max(1 << 16, count), alignment: 8))
            used = 0
        }
        let destination = blocks[blocks.count - 1].baseAddress! + used
        used += count
        return destination
    }

    func shrink(by count: Int) { used -= count }
}

/// The rows of up to 1 MiB of batches, holding what their views point into, plus the JSON
/// members the statement asked for so far (`fields[keyId][row]`).
final class Chunk: @unchecked Sendable {
    let slice: SegmentSlice?
    let arena = Arena()
    // (Unchecked: one thread at a time owns a chunk — the reader, then an extractor, then the
    // SQLite thread, handed over under the pipeline's lock — and the reader appends a row per
    // record, where a dynamic exclusivity check cost ~4% of a scan.)
    @exclusivity(unchecked) var rows: ContiguousArray<RowRef> = []
    @exclusivity(unchecked) var headers: [String] = []
    @exclusivity(unchecked) var fields: [ContiguousArray<FieldValue>] = []
    /// The rows grouped for a grouped scan, when an extractor thread could do it.
    var groups: ChunkGroups?
    /// A cold block whose records are still to be decoded (by an extractor thread).
    var pendingCold: PendingCold?
    /// The decoded cold block (ColdFlatBlock) or the opened block and token columns
    /// (ColdColumnScan) the rows point into.
    var coldMemory: [AnyObject] = []

    init(slice: SegmentSlice?) { self.slice = slice }

    struct PendingCold {
        let block: ColdBlockHandle
        let partition: Int32
        let from: Int64
        let end: Int64
        let transactions: ProducerStates?
    }

    /// Decodes a pending cold block into rows pointing into the decoded block (held by the
    /// chunk): the same rows the block's batches would give, without re-encoding them as
    /// RecordBatches first. Returns the rows added.
    @discardableResult
    func decodePendingCold() throws -> Int {
        guard let p = pendingCold else { return 0 }
        pendingCold = nil
        let block = try p.block.flat()
        coldMemory = [block]
        let before = rows.count
        rows.reserveCapacity(block.records.count)
        for batch in block.batches {
            // Transaction markers are not records; records of aborted transactions are not read.
            if batch.isControl { continue }
            if let t = p.transactions, batch.isTransactional,
               t.isAborted(producerId: batch.producerId, offset: batch.baseOffset) { continue }
            for r in block.records[batch.records] where r.offset >= p.from && r.offset < p.end {
                var headersIndex: Int32 = -1
                if !r.headers.isEmpty {
                    headersIndex = Int32(headers.count)
                    headers.append(ChunkReader.headersJSON(block.headers[r.headers].map { (block.headerKey($0), block.headerValue($0)) }))
                }
                let key = block.key(r), value = block.value(r)
                rows.append(RowRef(partition: p.partition, offset: r.offset, timestamp: r.timestamp,
                                   key: key.map { $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)! }, keyCount: key.map { Int32($0.count) } ?? -1,
                                   value: value.map { $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)! }, valueCount: value.map { Int32($0.count) } ?? -1,
                                   headersIndex: headersIndex))
            }
        }
        return rows.count - before
    }
}

/// The JSON members statements have asked for through `->>`; the scan thread extracts them for
/// the chunks it reads next. Append-only, so an id stays valid for the engine's lifetime.
final class WantedFields: @unchecked Sendable {
    private let keys = Mutex<[[UInt8]]>([])
    static let limit = 32

    /// The id of `key`, registering it; nil past the limit (those are scanned per row).
    func id(of key: [UInt8]) -> Int? {
        keys.withLock { k in
            if let i = k.firstIndex(of: key) { return i }
            guard k.count < Self.limit else { return nil }
            k.append(key)
            return k.count - 1
        }
    }

    var snapshot: [[UInt8]] { keys.withLock { $0 } }
}

/// Reads the chunks of one scan in order: partition ranges → 1 MiB reads → decoded rows.
struct ChunkReader {
    let context: QueryContext
    let topic: String
    let ranges: [(partition: Int32, start: Int64, end: Int64)]
    var rangeIndex = 0
    var position: Int64 = 0
    /// Blocks known not to hold a match (BlockSkips), jumped over without reading; a read stops
    /// where the next one starts.
    var skips: BlockSkips?
    /// Bytes per read (a summary block is one read of the builder).
    var readBytes = 1 << 20
    /// Bytes of the last slice read.
    private(set) var lastSliceBytes = 0
    /// Cold blocks are decoded by `readChunk` (the default), or left in the chunk for the scan
    /// pipeline's extractor threads (`Chunk.decodePendingCold`).
    var deferColdDecode = false

    init(context: QueryContext, topic: String, ranges: [(partition: Int32, start: Int64, end: Int64)]) {
        self.context = context
        self.topic = topic
        self.ranges = ranges
    }

    /// The next chunk with at least one row, or nil at the end.
    mutating func next() throws -> Chunk? {
        while rangeIndex < ranges.count {
            if let chunk = try readChunk(), !chunk.rows.isEmpty || chunk.pendingCold != nil { return chunk }
        }
        return nil
    }

    /// One read of up to `readBytes` of the current range (a chunk, maybe without rows); nil when the
    /// range is done (rangeIndex moves on).
    mutating func readChunk() throws -> Chunk? {
        let range = ranges[rangeIndex]
        if position < range.start { position = range.start }
        if let skips {
            while let skip = skips.skip(partition: range.partition, at: position) {
                position = skip.end
                context.stats.withLock { s in
                    s.blocksPruned += 1
                    s.bytesPruned += skip.bytes
                }
            }
        }
        guard position < range.end else {
            rangeIndex += 1
            position = 0
            return nil
        }
        let log = try context.broker.log(topic: topic, partition: range.partition)
        let upTo = skips?.nextStart(partition: range.partition, after: position) ?? .max
        if let block = try log.coldBlock(from: position) {
            return try readColdBlock(block, range: range, upTo: upTo)
        }
        let result = try log.read(from: position, maxBytes: readBytes, upTo: upTo)
        guard let slice = result.slice else {
            rangeIndex += 1
            position = 0
            return nil
        }
        countRead(partition: range.partition, segmentBaseOffset: slice.segmentBaseOffset, bytes: slice.count)
        let chunk = Chunk(slice: slice)
        chunk.rows.reserveCapacity(8192)
        let from = position
        let end = range.end
        let partition = range.partition
        let transactions = context.transactionStates.isEmpty ? nil : context.transactionStates["\(topic)-\(partition)"]
        try slice.forEachBatch { batch in
            // Transaction markers are not records; records of aborted transactions are not read.
            if batch.isControl { return }
            if let transactions, batch.isTransactional, transactions.isAborted(producerId: batch.producerId, offset: batch.baseOffset) { return }
            if batch.compression == CompressionCodec.none {
                try decodePlain(batch, into: chunk, partition: partition, from: from, end: end)
                return
            }
            // Compressed: records come out of a temporary buffer, so their bytes are copied.
            let arena = chunk.arena
            try batch.forEachRecord { r in
                guard r.offset >= from, r.offset < end else { return }
                var headersIndex: Int32 = -1
                if !r.headers.isEmpty {
                    headersIndex = Int32(chunk.headers.count)
                    chunk.headers.append(Self.headersJSON(r.headers))
                }
                var k: UnsafeRawPointer?, kc: Int32 = -1, v: UnsafeRawPointer?, vc: Int32 = -1
                if let key = r.key { (k, kc) = (arena.copy(key), Int32(key.count)) }
                if let value = r.value { (v, vc) = (arena.copy(value), Int32(value.count)) }
                chunk.rows.append(RowRef(partition: partition, offset: r.offset, timestamp: r.timestamp, key: k, keyCount: kc,
                                         value: v, valueCount: vc, headersIndex: headersIndex))
            }
        }
        let scanned = chunk.rows.count
        context.stats.withLock { $0.recordsScanned += scanned }
        position = max(result.nextOffset, position + 1)
        if position >= range.end {
            rangeIndex += 1
            position = 0
        }
        return chunk
    }

    /// One read's bytes and, the first time, its segment, in the scan's statistics.
    private mutating func countRead(partition: Int32, segmentBaseOffset: Int64, bytes: Int) {
        let segmentKey = "\(topic)-\(partition)@\(segmentBaseOffset)"
        let firstVisit = context.segmentsSeen.withLock { $0.insert(segmentKey).inserted }
        lastSliceBytes = bytes
        context.stats.withLock { s in
            s.bytesRead += bytes
            if firstVisit { s.segmentsRead += 1 }
        }
    }

    /// A chunk of one cold block: its records in [position, min(range end, upTo)).
    private mutating func readColdBlock(_ block: ColdBlockHandle, range: (partition: Int32, start: Int64, end: Int64), upTo: Int64) throws -> Chunk {
        countRead(partition: range.partition, segmentBaseOffset: block.segmentBaseOffset, bytes: block.storedBytes)
        let stop = min(range.end, upTo)
        let chunk = Chunk(slice: nil)
        let transactions = context.transactionStates.isEmpty ? nil : context.transactionStates["\(topic)-\(range.partition)"]
        chunk.pendingCold = Chunk.PendingCold(block: block, partition: range.partition, from: position, end: stop, transactions: transactions)
        position = max(min(block.nextOffset, stop), position + 1)
        if position >= range.end {
            rangeIndex += 1
            position = 0
        }
        if !deferColdDecode {
            let rows = try chunk.decodePendingCold()
            context.stats.withLock { $0.recordsScanned += rows }
        }
        return chunk
    }

    /// Scratch space for the record views of one batch (reused: the reader is one thread).
    private final class Views {
        var buffer = UnsafeMutableBufferPointer<strata_record_view>.allocate(capacity: 1024)
        deinit { buffer.deallocate() }
        func reserve(_ count: Int) -> UnsafeMutablePointer<strata_record_view> {
            if buffer.count < count {
                buffer.deallocate()
                buffer = .allocate(capacity: count)
            }
            return buffer.baseAddress!
        }
    }
    private let views = Views()

    /// An uncompressed batch: records decoded by CStrataScan, rows pointing into the mapping.
    private func decodePlain(_ batch: RecordBatch, into chunk: Chunk, partition: Int32, from: Int64, end: Int64) throws {
        let count = Int(batch.recordCount)
        let section = UnsafeRawBufferPointer(rebasing: batch.bytes[RecordBatch.headerSize...])
        // Every record takes at least 7 bytes: a count beyond that is a damaged header.
        guard count >= 0, count <= section.count / 7 + 1 else { throw RecordBatchError.malformedRecord("record count \(count) in \(section.count) bytes") }
        let views = self.views.reserve(count)
        guard let base = section.baseAddress,
              strata_decode_records(base.assumingMemoryBound(to: UInt8.self), section.count, Int32(count), views) == 0 else {
            if count == 0 { return }
            throw RecordBatchError.malformedRecord("records of the batch at offset \(batch.baseOffset) do not decode")
        }
        let (baseOffset, baseTimestamp) = (batch.baseOffset, batch.baseTimestamp)
        for j in 0..<count {
            let v = views[j]
            let offset = baseOffset + Int64(v.offset_delta)
            guard offset >= from, offset < end else { continue }
            var headersIndex: Int32 = -1
            if v.header_count > 0 {
                headersIndex = Int32(chunk.headers.count)
                chunk.headers.append(try Self.headersJSON(section, at: Int(v.headers_offset), count: Int(v.header_count)))
            }
            chunk.rows.append(RowRef(partition: partition, offset: offset, timestamp: baseTimestamp &+ v.timestamp_delta,
                                     key: v.key_length < 0 ? nil : base + Int(v.key_offset), keyCount: v.key_length,
                                     value: v.value_length < 0 ? nil : base + Int(v.value_offset), valueCount: v.value_length,
                                     headersIndex: headersIndex))
        }
    }

    /// Headers as a JSON object of strings (null for a null value).
    static func headersJSON(_ headers: [(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?)]) -> String {
        "{" + headers.map { h in
            "\(jsonQuote(String(decoding: h.key, as: UTF8.self))):\(h.value.map { jsonQuote(String(decoding: $0, as: UTF8.self)) } ?? "null")"
        }.joined(separator: ",") + "}"
    }

    static func headersJSON(_ headers: [ColdHeader]) -> String {
        "{" + headers.map { h in
            "\(jsonQuote(String(decoding: h.key, as: UTF8.self))):\(h.value.map { jsonQuote(String(decoding: $0, as: UTF8.self)) } ?? "null")"
        }.joined(separator: ",") + "}"
    }

    static func headersJSON(_ section: UnsafeRawBufferPointer, at offset: Int, count: Int) throws -> String {
        var reader = ByteReader(section, position: offset)
        var headers: [(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?)] = []
        for _ in 0..<count {
            guard let key = try reader.readNullableBytes(length: try reader.readVarint()) else {
                throw RecordBatchError.malformedRecord("null header key")
            }
            headers.append((key, try reader.readNullableBytes(length: try reader.readVarint())))
        }
        return headersJSON(headers)
    }
}

/// Runs a ChunkReader on its own thread, up to `depth` chunks ahead of SQLite, and extracts the
/// wanted JSON members of those chunks on `extractors` more threads (member scanning costs
/// several times the decoding), delivering chunks in log order: decoding and JSON scanning use
/// the second core, and the first whenever SQLite waits.
final class ScanPipeline: @unchecked Sendable {
    static let depth = 8
    static let extractors = 2
    private let lock = ConditionLock()
    /// Decoded chunks waiting for member extraction, with their sequence numbers.
    private var decoded: [(sequence: Int, chunk: Chunk)] = []
    /// Chunks ready for delivery, by sequence number.
    private var ready: [Int: Chunk] = [:]
    private var inFlight = 0
    private var nextSequence = 0
    private var nextToDeliver = 0
    private var readerDone = false
    private var failure: Error?
    private var cancelled = false
    private var threads: [pthread_t] = []
    private var reader: ChunkReader
    private let wanted: WantedFields
    /// Values already validated as JSON on write (value.format=json): the member scan may stop
    /// once it has every wanted member instead of walking the rest of the object.
    private let trustedJSON: Bool

    /// Grouped scans: each chunk's rows are also grouped on the extractor threads.
    private let grouping: GroupingSpec?

    /// For the cold blocks the extractors decode (their scan statistics).
    private let context: QueryContext

    /// Cold blocks are read from their columns (ColdColumnScan) rather than decoded whole.
    /// STRATA_QUERY_COLD_VALUES=1 turns that off (the reassembling path, for comparison).
    private let coldColumns: Bool

    /// The statement's member filters (conservative: SQLite re-checks), for the column scan of a
    /// statement that is not grouped.
    private let filters: [MemberFilter]

    /// `membersOnly`: the statement reads no key, value or headers of a row (its cold blocks
    /// can be read from their columns even when it is not a grouped scan).
    init(reader: ChunkReader, wanted: WantedFields, trustedJSON: Bool, grouping: GroupingSpec? = nil,
         membersOnly: Bool = false, filters: [MemberFilter] = []) {
        var reader = reader
        reader.deferColdDecode = true
        self.context = reader.context
        self.reader = reader
        self.wanted = wanted
        self.trustedJSON = trustedJSON
        self.grouping = grouping
        self.filters = filters
        coldColumns = (ColdColumnScan.applies(to: grouping) || (grouping == nil && membersOnly))
            && reader.context.memberColumns.count <= WantedFields.limit && getenv("STRATA_QUERY_COLD_VALUES") == nil
        spawn { $0.readLoop() }
        for _ in 0..<Self.extractors { spawn { $0.extractLoop() } }
    }

    private func spawn(_ body: @escaping (ScanPipeline) -> Void) {
        final class Start {
            let pipeline: ScanPipeline
            let body: (ScanPipeline) -> Void
            init(_ p: ScanPipeline, _ b: @escaping (ScanPipeline) -> Void) { pipeline = p; body = b }
        }
        let start = Unmanaged.passRetained(Start(self, body))
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let s = Unmanaged<Start>.fromOpaque(arg!).takeRetainedValue()
            s.body(s.pipeline)
            return nil
        }, start.toOpaque())
        if rc == 0 {
            threads.append(t)
        } else {
            start.release()
            lock.withLock {
                failure = failure ?? QueryError("cannot start a scan thread (error \(rc))")
                lock.broadcast()
            }
        }
    }

    private func readLoop() {
        while true {
            let chunk: Chunk?
            do {
                chunk = try reader.next()
            } catch {
                lock.withLock {
                    failure = failure ?? error
                    lock.broadcast()
                }
                return
            }
            let stop = lock.withLock { () -> Bool in
                while decoded.count + inFlight + ready.count >= Self.depth && !cancelled && failure == nil { lock.wait() }
                if cancelled || failure != nil { return true }
                defer { lock.broadcast() }
                guard let chunk else {
                    readerDone = true
                    return true
                }
                decoded.append((nextSequence, chunk))
                nextSequence += 1
                return false
            }
            if stop { return }
        }
    }

    private func extractLoop() {
        while true {
            let item = lock.withLock { () -> (sequence: Int, chunk: Chunk)? in
                while decoded.isEmpty && !readerDone && !cancelled && failure == nil { lock.wait() }
                if cancelled || failure != nil || decoded.isEmpty { return nil }
                inFlight += 1
                return decoded.removeFirst()
            }
            guard let item else { return }
            var fieldsReady = false
            do {
                var rows = 0
                var filteredOut = false
                var folded = false
                // Opened once for the fold and, when the fold does not cover it, the column scan
                // (neither reads members of record keys: those blocks are decoded whole).
                let keys = wanted.snapshot
                let columnar = coldColumns && !keys.contains(where: { $0.first == 0xFF })
                let block = columnar ? try item.chunk.pendingCold?.block.columnar() : nil
                if let block, let grouping, ColdColumnFold.applies(to: grouping),
                   let scanned = try ColdColumnFold.fold(item.chunk, block: block, spec: grouping, keys: keys) {
                    (fieldsReady, rows, folded) = (true, scanned, true)
                } else if let block {
                    switch try ColdColumnScan.fill(item.chunk, block: block, keys: keys, filters: grouping?.filters ?? filters,
                                                   exactFilters: grouping?.exactFilters ?? false, tests: grouping?.tests ?? [],
                                                   rowTimestamps: grouping?.rowTimestamps) {
                    case .decodeWhole: break
                    case .filled(let scanned): (fieldsReady, rows) = (true, scanned)
                    case .filteredOut(let scanned): (fieldsReady, rows, filteredOut) = (true, scanned, true)
                    }
                }
                let cold = item.chunk.pendingCold != nil
                if !fieldsReady { rows = try item.chunk.decodePendingCold() }
                context.stats.withLock { s in
                    s.recordsScanned += rows
                    if fieldsReady { s.coldBlocksFromColumns += 1 } else if cold { s.coldBlocksDecoded += 1 }
                    if filteredOut { s.coldBlocksFilteredOut += 1 }
                    if folded { s.coldBlocksFolded += 1 }
                }
            } catch {
                lock.withLock {
                    inFlight -= 1
                    failure = failure ?? error
                    lock.broadcast()
                }
                return
            }
            extract(item.chunk, fieldsReady: fieldsReady)
            lock.withLock {
                inFlight -= 1
                ready[item.sequence] = item.chunk
                lock.broadcast()
            }
        }
    }

    private func extract(_ chunk: Chunk, fieldsReady: Bool = false) {
        let keys = wanted.snapshot
        if !keys.isEmpty && !fieldsReady {
            // Members of the value (one scan of each value for all of them), then members of the
            // record key (wanted keys starting with 0xFF, see JSONColumns.wantedKey); a key is
            // never validated on write, so its scan always walks it whole.
            let valueIds = keys.indices.filter { keys[$0].first != 0xFF }
            let keyIds = keys.indices.filter { keys[$0].first == 0xFF }
            var columns = [ContiguousArray<FieldValue>](repeating: [], count: keys.count)
            for i in columns.indices { columns[i].reserveCapacity(chunk.rows.count) }
            for (ids, ofKey) in [(valueIds, false), (keyIds, true)] where !ids.isEmpty {
                let scanner = JSONMemberScanner(keys: ids.map { ofKey ? Array(keys[$0].dropFirst()) : keys[$0] }, stopEarly: trustedJSON && !ofKey)
                for r in chunk.rows {
                    let (document, count) = ofKey ? (r.key, r.keyCount) : (r.value, r.valueCount)
                    if let document, count >= 0 {
                        scanner.scan(UnsafeRawBufferPointer(start: document, count: Int(count)))
                        for (j, id) in ids.enumerated() { columns[id].append(scanner.field(j, in: document, arena: chunk.arena)) }
                    } else {
                        for id in ids { columns[id].append(.null) }
                    }
                }
            }
            chunk.fields = columns
        }
        // Without a resolver nothing throws: a chunk needing SQLite is grouped on its thread.
        if let grouping, chunk.groups == nil { chunk.groups = try? ChunkGroups.build(chunk, spec: grouping, resolve: nil) }
    }

    /// The next chunk in order; nil at the end. Rethrows a scan thread's error.
    func next() throws -> Chunk? {
        try lock.withLock {
            while true {
                if let failure { throw failure }
                if let chunk = ready.removeValue(forKey: nextToDeliver) {
                    nextToDeliver += 1
                    lock.broadcast()
                    // A cold block's range may hold no rows (all aborted, all before the start).
                    if chunk.rows.isEmpty && chunk.groups == nil { continue }
                    return chunk
                }
                if readerDone && decoded.isEmpty && inFlight == 0 && nextToDeliver == nextSequence { return nil }
                lock.wait()
            }
        }
    }

    /// Stops the threads and waits for them (the chunks they hold point into mappings).
    func cancel() {
        lock.withLock {
            cancelled = true
            lock.broadcast()
        }
        for t in threads { pthread_join(t, nil) }
        threads = []
    }
}
