import CStrataScan
import Glibc
import StrataLog

/// A grouped scan over a cold block reads the members it wants from the block's token columns:
/// no value is reassembled, no JSON text is scanned, and only the wanted columns are even
/// decompressed.
///
/// Which slot of a shape a member is comes from the same scanner the hot path runs
/// (JSONMemberScanner), run once per shape over the shape's *skeleton*: its literals with each
/// slot replaced by the slot's number (inside the literal quotes for a string). The scanner's
/// answer on the skeleton is its answer on every value of the shape — the structure (member
/// names, nesting, duplicates, array positions) is the same — except for the scalars
/// themselves, which are converted from each record's token as the scanner converts them
/// (`strata_json_scalar`, escapes decoded by `strata_json_unescape`). Whenever the hot path
/// would have left a member to SQLite (a container, an escaped member name, an odd number…),
/// the block is decoded whole instead, so the answers are the hot path's, row for row.
///
/// Used only when the statement reads nothing of a row but its partition, offset, timestamp and
/// value members (GroupingSpec without key, value or headers): rows of shaped values carry no
/// value bytes.
enum ColdColumnScan {
    /// Whether a grouped scan with `spec` can take its rows from cold columns.
    static func applies(to spec: GroupingSpec?) -> Bool {
        guard let spec else { return false }
        return spec.columns.allSatisfy { $0 <= 2 || $0 >= spec.firstMember }
    }

    /// Where a wanted member is in the values of one shape.
    private enum Place {
        case absent
        /// The `ordinal`th token of `column` among those the shape's slots take.
        case slot(column: Int, ordinal: Int, isString: Bool)
    }

    /// Fills `chunk` (rows and the `keys` members) from its pending cold block's columns and
    /// returns true; false, leaving the chunk as it was, when a member needs more than columns
    /// (then the caller decodes the block whole). Keys are value members (JSONColumns.wantedKey).
    static func fill(_ chunk: Chunk, keys: [[UInt8]]) throws -> Bool {
        guard let pending = chunk.pendingCold, !keys.contains(where: { $0.first == 0xFF }) else { return false }
        let block = try pending.block.columnar()
        let scanner = JSONMemberScanner(keys: keys, stopEarly: false)
        // Each shape's places of the wanted members.
        var places: [[Place]] = []
        var skeleton: [UInt8] = []
        for (s, literals) in block.shapes.enumerated() {
            skeleton.removeAll(keepingCapacity: true)
            let slots = literals.count - 1
            for k in 0...slots {
                skeleton += literals[k]
                if k < slots { skeleton += Array(String(k).utf8) }
            }
            guard !skeleton.isEmpty else { return false }  // (a crafted block: no shape of JSON is empty)
            var shapePlaces: [Place] = []
            // Not an object (an array, a string, a number): every `$.name…` path is NULL in SQLite
            // (the hot scanner leaves such values to SQLite, which says so).
            if let first = skeleton.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D }), first != UInt8(ascii: "{") {
                places.append(Array(repeating: .absent, count: keys.count))
                continue
            }
            let usable = skeleton.withUnsafeBytes { sk -> Bool in
                scanner.scan(sk)
                for j in keys.indices {
                    var slot: Int
                    let isString: Bool
                    switch scanner.field(j, in: sk.baseAddress!, arena: nil) {
                    case .null:
                        shapePlaces.append(.absent)
                        continue
                    case .integer(let v):
                        guard v >= 0, v < slots else { return false }
                        slot = Int(v)
                        isString = false
                    case .text(let p, let n):
                        guard let v = Int(String(decoding: UnsafeRawBufferPointer(start: p, count: Int(n)), as: UTF8.self)), v >= 0, v < slots else { return false }
                        slot = v
                        isString = true
                    case .real, .fallback:
                        return false
                    }
                    // A string slot's quotes are the literals around it, and only a string's.
                    guard (literals[slot].last == UInt8(ascii: "\"")) == isString else { return false }
                    let column = block.slotColumns[s][slot]
                    let ordinal = block.slotColumns[s][..<slot].filter { $0 == column }.count
                    shapePlaces.append(.slot(column: column, ordinal: ordinal, isString: isString))
                }
                return true
            }
            guard usable else { return giveUp("shape \(s) of \(block.shapes.count): \(String(decoding: skeleton.prefix(200), as: UTF8.self))") }
            places.append(shapePlaces)
        }
        // Every value takes tokens of a wanted column for each of its slots in that column —
        // also values whose shape has the wanted member elsewhere or not at all (a column is a
        // path: `items[].sku` holds the sku of every element).
        var wantedColumns = Set<Int>()
        for shapePlaces in places { for case .slot(let column, _, _) in shapePlaces { wantedColumns.insert(column) } }
        // Per shape, the tokens of each wanted column one of its values takes.
        var takes: [[(column: Int, count: Int)]] = []
        for columns in block.slotColumns {
            var counts: [Int: Int] = [:]
            for c in columns where wantedColumns.contains(c) { counts[c, default: 0] += 1 }
            takes.append(counts.map { ($0.key, $0.value) })
        }
        // The wanted columns, decoded.
        let columnCount = block.tokenCounts.count
        var tokens = [ColdColumnarBlock.Tokens?](repeating: nil, count: columnCount)
        for shapeTakes in takes { for t in shapeTakes where tokens[t.column] == nil { tokens[t.column] = try block.tokens(t.column) } }

        // The rows: records in the range, not markers, not aborted (their values still take tokens).
        var included = ContiguousArray<Int32>()
        included.reserveCapacity(block.records.count)
        var rows = ContiguousArray<RowRef>()
        rows.reserveCapacity(block.records.count)
        for batch in block.batches {
            // Transaction markers are not records; records of aborted transactions are not read.
            if batch.isControl { continue }
            if let t = pending.transactions, batch.isTransactional, t.isAborted(producerId: batch.producerId, offset: batch.baseOffset) { continue }
            for i in batch.records {
                let r = block.records[i]
                guard r.offset >= pending.from && r.offset < pending.end else { continue }
                included.append(Int32(i))
                // Shaped values are not reassembled: the row has no value bytes (the statement reads none).
                let whole = r.valueKind == 1 ? block.wholeValue(i) : nil
                rows.append(RowRef(partition: pending.partition, offset: r.offset, timestamp: r.timestamp, key: nil, keyCount: -1,
                                   value: whole.map { $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)! }, valueCount: whole.map { Int32($0.count) } ?? -1,
                                   headersIndex: -1))
            }
        }
        var fields: [ContiguousArray<FieldValue>] = []
        // One member at a time over every record (each value advances the member's columns by
        // the tokens its shape takes of them), keeping the included ones.
        var cursor = [Int](repeating: 0, count: columnCount)
        for j in keys.indices {
            var column = ContiguousArray<FieldValue>()
            column.reserveCapacity(rows.count)
            var next = 0  // index into `included`
            for c in cursor.indices { cursor[c] = 0 }
            for i in block.records.indices {
                let kind = Int(block.records[i].valueKind)
                let wanted = next < included.count && Int(included[next]) == i
                if wanted { next += 1 }
                if kind >= 2 {
                    let s = kind - 2
                    guard s < places.count else { throw QueryError("value kind \(kind) of \(places.count) shapes") }
                    if wanted {
                        switch places[s][j] {
                        case .absent:
                            column.append(.null)
                        case .slot(let c, let ordinal, let isString):
                            let t = cursor[c] + ordinal
                            guard let tokenColumn = tokens[c], t < tokenColumn.ends.count else { throw QueryError("a value takes a token its column does not hold") }
                            guard let field = convert(tokenColumn.token(t), isString: isString, arena: chunk.arena) else {
                                return giveUp("token \(String(decoding: tokenColumn.token(t).prefix(80), as: UTF8.self))")
                            }
                            column.append(field)
                        }
                    }
                    for take in takes[s] { cursor[take.column] += take.count }
                } else if wanted {
                    if kind == 1 {
                        // Stored whole (not strict JSON, or past the shape limits): scanned as on the hot path.
                        let whole = block.wholeValue(i)
                        scanner.scan(whole)
                        let field = scanner.field(j, in: whole.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, arena: chunk.arena)
                        if case .fallback = field { return giveUp("a value stored whole") }
                        column.append(field)
                    } else {
                        column.append(.null)
                    }
                }
            }
            fields.append(column)
        }
        chunk.pendingCold = nil
        chunk.coldMemory = [block] + tokens.compactMap { $0 }
        chunk.rows += rows
        chunk.fields = fields
        return true
    }

    /// Why a block is decoded whole, on stderr with STRATA_TRACE_QUERY=1.
    private static func giveUp(_ reason: String) -> Bool {
        if getenv("STRATA_TRACE_QUERY") != nil {
            let line = "query: cold block decoded whole: \(reason)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
        }
        return false
    }

    /// A token as the hot scanner reports the member it is: text (escapes decoded into `arena`)
    /// or SQLite's conversion of a number or literal; nil where the scanner would defer to SQLite.
    @inline(__always) private static func convert(_ token: UnsafeRawBufferPointer, isString: Bool, arena: Arena) -> FieldValue? {
        let base = token.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!
        if isString {
            guard token.count > 0, memchr(base, 0x5C, token.count) != nil else { return .text(base, Int32(token.count)) }
            let destination = arena.allocate(token.count)
            let decoded = strata_json_unescape(base.assumingMemoryBound(to: UInt8.self), token.count, destination.assumingMemoryBound(to: UInt8.self))
            arena.shrink(by: decoded < 0 ? token.count : token.count - Int(decoded))
            return decoded < 0 ? nil : .text(UnsafeRawPointer(destination), decoded)
        }
        var f = strata_json_field()
        guard strata_json_scalar(base.assumingMemoryBound(to: UInt8.self), token.count, &f) == 1 else { return nil }
        switch Int(f.kind) {
        case Int(STRATA_JSON_NULL): return .null
        case Int(STRATA_JSON_INTEGER): return .integer(f.integer)
        case Int(STRATA_JSON_REAL): return .real(f.real)
        default: return nil
        }
    }
}
