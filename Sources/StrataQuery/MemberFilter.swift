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

    init(memberId: Int) { self.memberId = memberId }

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
            if !numbers.isEmpty || !integers.isEmpty { return true }
            for t in texts where t.count == Int(count) {
                if t.isEmpty || t.withUnsafeBytes({ memcmp($0.baseAddress!, p, t.count) }) == 0 { return true }
            }
            return false
        case .integer(let i):
            if !texts.isEmpty { return true }
            return integers.contains(i) || numbers.contains(Double(i))
        case .real(let d):
            if !texts.isEmpty { return true }
            return numbers.contains(d) || integers.contains { Double($0) == d }
        }
    }
}

extension [MemberFilter] {
    /// Whether row `row` of `chunk` may pass every filter (members the scan thread extracted).
    @inline(__always) func mayMatch(_ chunk: Chunk, _ row: Int) -> Bool {
        let r = chunk.rows[row]
        for f in self {
            guard r.value != nil else { return false }  // ->> of NULL is NULL: never equal
            guard f.memberId < chunk.fields.count else { continue }
            if !f.mayMatch(chunk.fields[f.memberId][row]) { return false }
        }
        return true
    }
}
