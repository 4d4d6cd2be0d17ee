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
/// value members — a grouped scan whose GroupingSpec stores no key, value or headers, or any
/// other scan planned `C` by xBestIndex (colUsed without them) — because rows of shaped values
/// carry no value bytes.
enum ColdColumnScan {
    /// Whether a grouped scan with `spec` can take its rows from cold columns.
    static func applies(to spec: GroupingSpec?) -> Bool {
        guard let spec else { return false }
        return spec.columns.allSatisfy { $0 <= 2 || $0 >= spec.firstMember }
    }

    /// Where a wanted member is in the values of one shape.
    enum Place {
        case absent
        /// The `ordinal`th token of `column` among those the shape's slots take.
        case slot(column: Int, ordinal: Int, isString: Bool)
    }

    /// What `fill` did with a chunk's cold block.
    enum Outcome {
        /// A member needs more than columns: the caller decodes the block whole (the chunk is as it was).
        case decodeWhole
        /// Rows and members filled from the columns; `scanned` records of the range were considered.
        case filled(scanned: Int)
        /// No record passes the statement's filters (read from their columns first): no row, and
        /// no other column decoded.
        case filteredOut(scanned: Int)
    }

    /// Fills `chunk` (rows and the `keys` members) from its pending cold block's columns. Keys are
    /// value members (JSONColumns.wantedKey). Records outside `rowTimestamps` are dropped, the
    /// members `filters` test are read first and only the records that pass become rows, their
    /// other members read for them alone: the filters the scan would apply row by row (exactly,
    /// SQLite's `=`, when `exactFilters`; else only where certainly false), applied before
    /// anything else of the block is decoded. `opened`: the pending block, when the caller opened it.
    static func fill(_ chunk: Chunk, block opened: ColdColumnarBlock? = nil, keys: [[UInt8]], filters: [MemberFilter] = [],
                     exactFilters: Bool = false, tests: [MemberTest] = [], rowTimestamps: (lo: Int64, hi: Int64)? = nil) throws -> Outcome {
        guard let pending = chunk.pendingCold, !keys.contains(where: { $0.first == 0xFF }) else { return .decodeWhole }
        let block = try opened ?? pending.block.columnar()
        let scanner = JSONMemberScanner(keys: keys, stopEarly: false)
        guard let walk = MemberWalk(block: block, keys: keys, scanner: scanner) else { return .decodeWhole }
        let records = try walk.selectedRecords(pending, rowTimestamps: rowTimestamps)
        var selected = records.selected
        let scanned = records.scanned
        let columnCount = block.tokenCounts.count
        // The wanted columns, decoded when a member first needs them.
        var readers = [ColumnReader?](repeating: nil, count: columnCount)

        /// Member `j` of the selected records (nil: the block must be decoded whole).
        func member(_ j: Int) throws -> ContiguousArray<FieldValue>? {
            var column = ContiguousArray<FieldValue>()
            column.reserveCapacity(selected.count)
            guard !selected.isEmpty else { return column }
            let selected = selected  // (read per record: not through the enclosing function's variable)
            let located = try walk.locate(j, selected)
            let own = located.own
            // The readers, moved out of `readers` while this runs (in an optional array slot a
            // reader would be checked for uniqueness and retained on every token) and put back
            // after, for another member of the same column.
            var local: [ColumnReader] = []
            for c in own {
                if readers[c] == nil { readers[c] = ColumnReader(try block.values(c)) }
                local.append(readers[c]!)
                readers[c] = nil
            }
            defer { for (l, c) in own.enumerated() { readers[c] = local[l] } }
            let arena = chunk.arena
            for k in selected.indices {
                let ref = located.ref(k, record: selected[k])
                switch ref.local {
                case MemberWalk.TokenRef.absent:
                    column.append(.null)
                case MemberWalk.TokenRef.whole:
                    // Stored whole (not strict JSON, or past the shape limits): scanned as on the hot path.
                    let whole = try block.wholeValue(Int(selected[k]))
                    scanner.scan(whole)
                    let field = scanner.field(j, in: whole.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, arena: arena)
                    if case .fallback = field {
                        giveUp("a value stored whole")
                        return nil
                    }
                    column.append(field)
                default:
                    let l = Int(ref.local)
                    guard let field = local[l].field(Int(ref.token), isString: ref.isString, arena: arena) else {
                        giveUp("token \(String(decoding: local[l].column.text(Int(ref.token)).prefix(80), as: UTF8.self))")
                        return nil
                    }
                    column.append(field)
                }
            }
            return column
        }

        // Filtered members first: records that fail a filter are dropped before any other
        // member is read (SQLite's `=` when the grouped scan decides exactly, else the
        // conservative test the scan would apply row by row).
        var fields = [ContiguousArray<FieldValue>?](repeating: nil, count: keys.count)
        /// Keeps the selected records whose member `j` passes `passes`.
        func keep(member j: Int, where passes: (FieldValue) -> Bool) throws -> Bool {
            if fields[j] == nil {
                guard let column = try member(j) else { return false }
                fields[j] = column
            }
            // Compacted in place (reading k before writing kept ≤ k), without a copy of the column.
            var kept = 0
            for k in selected.indices where passes(fields[j]![k]) {
                selected[kept] = selected[k]
                for m in fields.indices where fields[m] != nil { fields[m]![kept] = fields[m]![k] }
                kept += 1
            }
            selected.removeLast(selected.count - kept)
            for m in fields.indices where fields[m] != nil { fields[m]!.removeLast(fields[m]!.count - kept) }
            return true
        }
        for filter in filters where filter.memberId < keys.count && !selected.isEmpty {
            let exact = exactFilters
            guard try keep(member: filter.memberId, where: { exact ? filter.matches(cell($0)) : filter.mayMatch($0) }) else { return .decodeWhole }
        }
        // A fold's ranges and IS [NOT] NULL terms (exact; no error cells come from columns).
        for test in exactFilters ? tests : [] where test.memberId < keys.count && !selected.isEmpty {
            guard try keep(member: test.memberId, where: { test.matches(cell($0)) }) else { return .decodeWhole }
        }
        var filled = ContiguousArray<ContiguousArray<FieldValue>>()
        for j in keys.indices {
            if let column = fields[j] {
                filled.append(column)
            } else {
                guard let column = try member(j) else { return .decodeWhole }
                filled.append(column)
            }
        }
        var rows = ContiguousArray<RowRef>()
        rows.reserveCapacity(selected.count)
        let blockRecords = try block.records()
        for i in selected {
            let r = blockRecords[Int(i)]
            // Shaped values are not reassembled: the row has no value bytes (the statement reads none).
            let whole = r.valueKind == 1 ? try block.wholeValue(Int(i)) : nil
            rows.append(RowRef(partition: pending.partition, offset: r.offset, timestamp: r.timestamp, key: nil, keyCount: -1,
                               value: whole.map { $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)! }, valueCount: whole.map { Int32($0.count) } ?? -1,
                               headersIndex: -1))
        }
        chunk.pendingCold = nil
        chunk.coldMemory = [block] + readers.compactMap { $0?.column }
        chunk.rows += rows
        chunk.fields = Array(filled)
        return rows.isEmpty && scanned > 0 ? .filteredOut(scanned: scanned) : .filled(scanned: scanned)
    }

    /// A member read from columns as a grouped scan's cell (fill never keeps `.fallback`: it
    /// decodes the block whole instead).
    @inline(__always) private static func cell(_ field: FieldValue) -> GroupedRows.Cell { GroupedRows.Cell(field) ?? .null }

    /// Why a block is decoded whole, on stderr with STRATA_TRACE_QUERY=1.
    static func giveUp(_ reason: String) {
        if getenv("STRATA_TRACE_QUERY") != nil {
            let line = "query: cold block decoded whole: \(reason)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
        }
    }

    /// A token as the hot scanner reports the member it is: text (escapes decoded into `arena`)
    /// or SQLite's conversion of a number or literal; nil where the scanner would defer to SQLite.
    @inline(__always) static func convert(_ token: UnsafeRawBufferPointer, isString: Bool, arena: Arena) -> FieldValue? {
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

/// One column's tokens converted as `ColdColumnScan.convert` converts their text, without the
/// text where the column stores numbers: an integer token is its value; a decimal token
/// `unscaled / 10^scale` is, when both are exact doubles (|unscaled| ≤ 2^53, scale ≤ 22), their
/// quotient — IEEE division rounds it correctly, as strtod rounds the decimal text — and
/// otherwise formatted and converted. A dictionary entry is converted once per column and slot
/// kind, not once per token.
struct ColumnReader {
    let column: ColdColumnarBlock.TypedColumn
    let count: Int
    /// The column's form and arrays, unpacked once: switching on `column.values` per token
    /// would retain and release its arrays each time.
    private enum Form { case integers, decimals, dictionary, text }
    private let form: Form
    private let numbers: [Int64]
    private let scales: [UInt8]
    private let indexes: [UInt32]
    /// Dictionary entries, or the text tokens.
    private let tokens: ColdColumnarBlock.Tokens?
    /// Per dictionary entry, its conversion in a non-string and in a string slot (nil: not yet;
    /// `.fallback`: the scanner defers it to SQLite).
    private var numberEntries: [FieldValue?] = []
    private var stringEntries: [FieldValue?] = []

    /// 10^0 … 10^22, each exact as a double.
    private let powersOfTen: [Double] = (0...22).map { e in (0..<e).reduce(1.0) { a, _ in a * 10 } }
    /// 10^18: integers of 19 digits are left to SQLite by the hot scanner (strata_json_scalar).
    private static let integerDigitsLimit: UInt64 = 1_000_000_000_000_000_000

    init(_ column: ColdColumnarBlock.TypedColumn) {
        self.column = column
        count = column.count
        switch column.values {
        case .integers(let v): (form, numbers, scales, indexes, tokens) = (.integers, v, [], [], nil)
        case .decimals(let v, let s): (form, numbers, scales, indexes, tokens) = (.decimals, v, s, [], nil)
        case .dictionary(let entries, let i):
            (form, numbers, scales, indexes, tokens) = (.dictionary, [], [], i, entries)
            numberEntries = Array(repeating: nil, count: entries.ends.count)
            stringEntries = numberEntries
        case .text(let t): (form, numbers, scales, indexes, tokens) = (.text, [], [], [], t)
        }
    }

    /// Token `t` as the member the hot scanner would report; nil where it would defer to SQLite.
    @inline(__always) mutating func field(_ t: Int, isString: Bool, arena: Arena) -> FieldValue? {
        switch form {
        case .integers, .decimals:
            if isString { return formatted(t, arena: arena) }
            if let cell = number(t) { return cell.kind == .integer ? .integer(Int64(bitPattern: cell.bits)) : .real(Double(bitPattern: cell.bits)) }
            // An integer of 19 digits is SQLite's to read; a decimal past 2^53 is converted through its text.
            return form == .integers ? nil : column.text(t).withUnsafeBytes { ColdColumnScan.convert($0, isString: false, arena: arena) }
        case .dictionary:
            let e = Int(indexes[t])
            if let known = isString ? stringEntries[e] : numberEntries[e] {
                if case .fallback = known { return nil }
                return known
            }
            let converted = ColdColumnScan.convert(tokens!.token(e), isString: isString, arena: arena) ?? .fallback
            if isString { stringEntries[e] = converted } else { numberEntries[e] = converted }
            if case .fallback = converted { return nil }
            return converted
        case .text:
            return ColdColumnScan.convert(tokens!.token(t), isString: isString, arena: arena)
        }
    }

    /// Token `t` of an integer or decimal column in a non-string slot, as `field` converts it;
    /// nil for other columns and for the tokens `field` converts through their text.
    @inline(__always) func number(_ t: Int) -> GroupedRows.Cell? {
        switch form {
        case .integers:
            let v = numbers[t]
            return v.magnitude < Self.integerDigitsLimit ? .integer(v) : nil
        case .decimals:
            let v = numbers[t]
            return v.magnitude <= 1 << 53 ? .real(Double(v) / powersOfTen[Int(scales[t])]) : nil
        case .dictionary, .text:
            return nil
        }
    }

    /// A number token in a string slot (`"id": "123"`): its text, in `arena`.
    private func formatted(_ t: Int, arena: Arena) -> FieldValue? {
        let text = column.text(t)
        let copy = text.withUnsafeBytes { arena.copy($0) }
        return .text(copy, Int32(text.count))
    }
}
