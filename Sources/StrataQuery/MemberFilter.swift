import CSQLite
import Glibc

/// `value->>'$.m' = v` and `value->>'$.m' IN (…)` pushed into the scan: rows whose member cannot
/// match are dropped before SQLite (or a grouped scan) sees them. SQLite still re-checks the
/// constraint (omit = 0), so the filter only has to be conservative: it drops a row only when
/// the comparison is certainly false — NULL, or the same storage class with a different value.
/// Anything else (mixed types, values the fast path left to SQLite) is kept for SQLite to decide.
struct MemberFilter: Sendable {
    let memberId: Int
    private var texts: [[UInt8]] = []
    private var numbers: [Double] = []
    private var integers: [Int64] = []
    /// A value whose comparison semantics are not modelled here (blob): keep every row.
    private var keepAll = false
    /// The operands are literals or bound parameters (no affinity): SQLite compares storage
    /// classes as they are, so a text never equals a number. Otherwise (another table's column)
    /// an affinity may convert one into the other, and mixed kinds are kept.
    let exact: Bool

    init(memberId: Int, exact: Bool = false) {
        self.memberId = memberId
        self.exact = exact
    }

    mutating func add(_ v: OpaquePointer?) {
        switch sqlite3_value_type(v) {
        case SQLITE_INTEGER: integers.append(sqlite3_value_int64(v))
        case SQLITE_FLOAT: numbers.append(sqlite3_value_double(v))
        case SQLITE_TEXT:
            let n = Int(sqlite3_value_bytes(v))
            texts.append(n == 0 ? [] : Array(UnsafeRawBufferPointer(start: sqlite3_value_text(v), count: n)))
        case SQLITE_NULL: break  // `= NULL` matches nothing
        default: keepAll = true
        }
    }

    /// False only when SQLite's `=` is certainly false for this member of the row.
    @inline(__always) func mayMatch(_ field: FieldValue) -> Bool {
        if keepAll { return true }
        switch field {
        case .fallback: return true
        case .null: return false
        case .text(let p, let count):
            if !exact && (!numbers.isEmpty || !integers.isEmpty) { return true }
            for t in texts where t.count == Int(count) {
                if t.isEmpty || t.withUnsafeBytes({ memcmp($0.baseAddress!, p, t.count) }) == 0 { return true }
            }
            return false
        case .integer(let i):
            if !exact && !texts.isEmpty { return true }
            return integers.contains(i) || numbers.contains(Double(i))
        case .real(let d):
            if !exact && !texts.isEmpty { return true }
            return numbers.contains(d) || integers.contains { Double($0) == d }
        }
    }
}

extension MemberFilter {
    /// SQLite's `=` between the member's value and a literal or parameter operand (`exact`):
    /// NULL never equal, text by bytes, numbers by value (an integer and a real compared without
    /// rounding), a text never equal to a number.
    func matches(_ cell: GroupedRows.Cell) -> Bool {
        switch cell.kind {
        case .null, .error: return false
        case .text:
            let n = Int(cell.count)
            return texts.contains { t in t.count == n && (n == 0 || t.withUnsafeBytes { memcmp($0.baseAddress!, cell.pointer!, n) } == 0) }
        case .integer:
            let i = Int64(bitPattern: cell.bits)
            return integers.contains(i) || numbers.contains { GroupedRows.integerVersusReal(i, $0) == 0 }
        case .real:
            let d = Double(bitPattern: cell.bits)
            return numbers.contains(d) || integers.contains { GroupedRows.integerVersusReal($0, d) == 0 }
        }
    }
}

extension [MemberFilter] {
    /// Whether row `row` of `chunk` may pass every filter (members the scan thread extracted).
    @inline(__always) func mayMatch(_ chunk: Chunk, _ row: Int) -> Bool {
        for f in self {
            // A NULL document's member is .null (->> of NULL is NULL): never equal.
            guard f.memberId < chunk.fields.count else { continue }
            if !f.mayMatch(chunk.fields[f.memberId][row]) { return false }
        }
        return true
    }
}

extension MemberFilter {
    /// False only when a block's summary of this member rules out every value of the filter,
    /// with the same semantics as `mayMatch(_ field:)`: unless the operands are `exact`, a text
    /// value may equal a number and a number a text (an affinity may convert), so a block holding
    /// any value of the other kind stays; values only SQLite reads keep the block.
    func mayMatch(_ block: SegmentSummary.MemberBlock) -> Bool {
        if keepAll || block.flags & SegmentSummary.MemberBlock.unreadable != 0 { return true }
        let hasText = block.flags & SegmentSummary.MemberBlock.hasText != 0
        let hasNumber = block.flags & SegmentSummary.MemberBlock.hasNumber != 0
        if !texts.isEmpty {
            if hasNumber && !exact { return true }
            if hasText && texts.contains(where: { block.bloom.mayContain(SummaryHash.text($0)) }) { return true }
        }
        if !integers.isEmpty || !numbers.isEmpty {
            if hasText && !exact { return true }
            if hasNumber {
                // Integers beyond a real's exact range: the hashes of 2^63-ish reals and integers differ.
                if integers.contains(where: { abs(Double($0)) >= 9.2e18 }) || numbers.contains(where: { abs($0) >= 9.2e18 }) { return true }
                if integers.contains(where: { block.bloom.mayContain(SummaryHash.integer($0)) }) { return true }
                if numbers.contains(where: { block.bloom.mayContain(SummaryHash.real($0)) }) { return true }
            }
        }
        return false
    }
}

/// `key = v` / `key IN (…)` pushed down for block pruning (SQLite re-checks every row). The key
/// column has TEXT affinity, so SQLite compares an integer literal as its decimal text; other
/// operands (reals, blobs, integers from other columns) are not modelled and prune nothing.
struct KeyFilter: Sendable {
    private var texts: [[UInt8]] = []
    private var keepAll = false
    /// A literal or bound parameter: an integer compares as its decimal text. From another
    /// column with numeric affinity, the key would be converted instead ('012' = 12): not modelled.
    let exact: Bool

    init(exact: Bool = false) { self.exact = exact }

    mutating func add(_ v: OpaquePointer?) {
        switch sqlite3_value_type(v) {
        case SQLITE_TEXT:
            let n = Int(sqlite3_value_bytes(v))
            texts.append(n == 0 ? [] : Array(UnsafeRawBufferPointer(start: sqlite3_value_text(v), count: n)))
        case SQLITE_INTEGER:
            if exact { texts.append(Array(String(sqlite3_value_int64(v)).utf8)) } else { keepAll = true }
        case SQLITE_NULL: break  // `= NULL` matches nothing
        default: keepAll = true
        }
    }

    func mayMatch(_ keys: BloomFilter) -> Bool {
        keepAll || texts.contains { keys.mayContain(SummaryHash.text($0)) }
    }
}

/// `value->>'$.m' > / >= / < / <= literal`, for block pruning only (SQLite re-checks every row).
/// SQLite orders NULL < numbers < text, compares numbers by value and never converts a literal
/// against a member column, so: a block with text values may satisfy `> number` (text is
/// greater), never `< number`; numbers are decided by the block's min/max; a text bound prunes
/// only blocks without text for `>`/`>=` (numbers are below any text).
struct MemberRange: Sendable {
    enum Bound: Sendable {
        case number(Double)
        case text
    }
    let memberId: Int
    let op: String
    let bound: Bound

    /// nil for operands not modelled (blobs, NULL, integers a double cannot hold exactly).
    init?(memberId: Int, op: String, _ v: OpaquePointer?) {
        guard [">", ">=", "<", "<="].contains(op) else { return nil }
        switch sqlite3_value_type(v) {
        case SQLITE_INTEGER:
            let i = sqlite3_value_int64(v)
            guard i.magnitude <= 1 << 53 else { return nil }
            bound = .number(Double(i))
        case SQLITE_FLOAT:
            let d = sqlite3_value_double(v)
            guard !d.isNaN else { return nil }
            bound = .number(d)
        case SQLITE_TEXT: bound = .text
        default: return nil
        }
        self.memberId = memberId
        self.op = op
    }

    func mayMatch(_ block: SegmentSummary.MemberBlock) -> Bool {
        if block.flags & SegmentSummary.MemberBlock.unreadable != 0 { return true }
        let hasText = block.flags & SegmentSummary.MemberBlock.hasText != 0
        let hasNumber = block.flags & SegmentSummary.MemberBlock.hasNumber != 0
        switch bound {
        case .text:
            return op.hasPrefix(">") ? hasText : hasText || hasNumber
        case .number(let x):
            switch op {
            case ">": return hasText || (hasNumber && block.maxNumber > x)
            case ">=": return hasText || (hasNumber && block.maxNumber >= x)
            case "<": return hasNumber && block.minNumber < x
            default: return hasNumber && block.minNumber <= x
            }
        }
    }
}

/// `member < literal` (also <=, >, >=), `member IS NULL` and `member IS NOT NULL` in a folded
/// statement, which the scan applies exactly (SQLite does not re-check, like `MemberFilter`'s
/// equalities there): a NULL member never compares, a number orders before any text, numbers by
/// value (integer against real without rounding), text by bytes (BINARY) — SQLite's comparison of
/// a value without affinity with a literal.
struct MemberTest: Sendable {
    enum Kind: Sendable { case isNull, isNotNull, less, lessOrEqual, greater, greaterOrEqual }
    let memberId: Int
    let kind: Kind
    private var integer: Int64 = 0
    private var real: Double = 0
    private var text: [UInt8] = []
    private var operandKind = GroupedRows.Cell.Kind.null

    init(memberId: Int, isNull: Bool) {
        self.memberId = memberId
        kind = isNull ? .isNull : .isNotNull
    }

    /// A comparison with `v` (`op`: < <= > >=); nil for another `op`. A NULL operand matches
    /// nothing; a blob orders after every member value (JSON members are never blobs).
    init?(memberId: Int, op: String, _ v: OpaquePointer?) {
        self.memberId = memberId
        switch op {
        case "<": kind = .less
        case "<=": kind = .lessOrEqual
        case ">": kind = .greater
        case ">=": kind = .greaterOrEqual
        default: return nil
        }
        switch sqlite3_value_type(v) {
        case SQLITE_INTEGER:
            integer = sqlite3_value_int64(v)
            operandKind = .integer
        case SQLITE_FLOAT:
            real = sqlite3_value_double(v)
            // (SQLite holds no NaN value — it becomes NULL — so this compares with nothing.)
            operandKind = real.isNaN ? .null : .real
        case SQLITE_TEXT:
            let n = Int(sqlite3_value_bytes(v))
            text = n == 0 ? [] : Array(UnsafeRawBufferPointer(start: sqlite3_value_text(v), count: n))
            operandKind = .text
        case SQLITE_NULL: operandKind = .null
        default: operandKind = .error  // (a blob)
        }
    }

    /// Whether the row with this member passes (`.error` cells are the caller's to report).
    func matches(_ cell: GroupedRows.Cell) -> Bool {
        switch kind {
        case .isNull: return cell.kind == .null
        case .isNotNull: return cell.kind != .null
        default: break
        }
        guard cell.kind != .null, cell.kind != .error, operandKind != .null else { return false }
        let order: Int
        switch operandKind {
        case .integer: order = GroupedRows.compare(cell.key, .integer(integer))
        case .real: order = GroupedRows.compare(cell.key, .real(real))
        case .error: order = -1
        default: order = text.withUnsafeBytes { t in GroupedRows.compare(cell.key, .text(t.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, t.count)) }
        }
        switch kind {
        case .less: return order < 0
        case .lessOrEqual: return order <= 0
        case .greater: return order > 0
        default: return order >= 0
        }
    }
}
