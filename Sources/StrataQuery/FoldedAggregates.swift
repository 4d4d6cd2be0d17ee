import CSQLite
import Glibc

/// Aggregates over member columns computed by the grouped scan instead of SQLite's row loop.
///
/// SQLite steps an aggregate once per row, on one core; with the rows already grouped by the
/// scan (GroupedRows), `sum`, `total`, `avg`, `min`, `max` and `count` of a member column are
/// computed while the chunks' groups are merged, and SQLite sees one row per group. The
/// statement is rewritten (JSONColumns.fold) so that each such aggregate reads a hidden column
/// `strata_foldN` of the table through `min(strata_foldN)` — over the one row of a group, that
/// is the value itself, NULL included.
///
/// Results are SQLite's, not approximations of them: values reach each group's state in the
/// order SQLite's sorter would hand them over (log order within a group: the scan's order, which
/// SQLite's GROUP BY sorter keeps for equal keys), and the states follow SQLite's own steps:
/// - sum/total/avg (func.c of SQLite before 3.43): a double running sum of every value, in
///   order, and an exact integer sum while every value is an integer; `sum` fails with "integer
///   overflow" when that integer sum overflowed before any real value came, gives the double sum
///   once a non-integer came, else the integer; `total` is the double sum; `avg` the double sum
///   over the number of non-NULL values. Text is converted as SQLite converts it (numeric
///   affinity; what is not a number counts as its numeric prefix, as a real) — by SQLite itself.
///   SQLite 3.43 changed these sums (Kahan-Babuska-Neumaier); with a newer library they are left
///   to SQLite (`realSumsFold` is false) and only count/min/max fold.
/// - min/max: NULLs skipped; storage classes ordered NULL < numbers < text, numbers compared
///   exactly (an integer against a real without rounding), text by bytes (BINARY, the collation
///   of a `->>` result); the first of equal values is kept.
/// - count: the non-NULL values; count(DISTINCT): the distinct ones, 1 and 1.0 as one, text by
///   bytes (DistinctCount's equality).
/// A member SQLite could not read is an error, as it would be when SQLite read it.
enum FoldFunction: UInt8, CaseIterable, Sendable {
    case sum = 0x73, total = 0x74, avg = 0x76, min = 0x6E, max = 0x78, count = 0x63
    /// `count(DISTINCT member)`, which JSONColumns.rewrite has made `strata_count_distinct(member)`.
    case countDistinct = 0x64

    /// The letter of this function in xBestIndex's plan tokens.
    var letter: Character { Character(UnicodeScalar(rawValue)) }

    init?(letter: Character) {
        guard let a = letter.asciiValue, let f = FoldFunction(rawValue: a) else { return nil }
        self = f
    }

    init?(sqlName: String) {
        switch sqlName.lowercased() {
        case "sum": self = .sum
        case "total": self = .total
        case "avg": self = .avg
        case "min": self = .min
        case "max": self = .max
        case "count": self = .count
        case DistinctCount.functionName: self = .countDistinct
        default: return nil
        }
    }

    /// Whether the linked SQLite computes sum/total/avg as emulated here (see above).
    static let realSumsFold = sqlite3_libversion_number() < 3_043_000

    /// sum, total and avg: they add their values (a partial keeps them, in order).
    var adds: Bool { self == .sum || self == .total || self == .avg }

    /// Functions the rewrite may fold with this SQLite.
    var folds: Bool {
        switch self {
        case .sum, .total, .avg: return Self.realSumsFold
        case .min, .max, .count, .countDistinct: return true
        }
    }
}

/// One folded aggregate of a statement: which hidden column reports it, of which member.
struct FoldAggregate: Equatable, Sendable {
    /// Hidden columns `strata_fold0..<slotCount` follow `strata_rows` in every topic table.
    static let slotCount = 12
    static func columnName(_ slot: Int) -> String { "strata_fold\(slot)" }

    var slot: Int
    var function: FoldFunction
    /// The member (JSONColumns naming) whose column is aggregated.
    var member: String
    /// This min/max decides which row the group's key columns show (see `FoldState.add`).
    var governsKey = false
}

/// What GroupedRows folds for one aggregate: the function, the cell slot of its member in the
/// chunk groups' rows, and the vtab column that reports it.
struct FoldColumn: Sendable {
    var function: FoldFunction
    var cellSlot: Int
    var column: Int32
    var governsKey = false
}

/// One group's state of one folded aggregate.
struct FoldState {
    /// Non-NULL values seen.
    var count: Int64 = 0
    var integerSum: Int64 = 0
    var realSum: Double = 0
    /// A non-integer value was summed (the sum is a real).
    var approx = false
    var overflow = false
    /// min/max: the value kept so far (text copied to the fold's arena).
    var best = GroupedRows.Cell.null
    /// The first unreadable member (Cell.Kind.error), reported instead of any result.
    var error: GroupedRows.Cell?
    /// count(DISTINCT): the distinct values (SQLite's DISTINCT equality, as DistinctCount).
    var distinct: DistinctCount.Counter?
    /// min/max of text: where the kept value's bytes are (in the fold's arena), and their room.
    var textBuffer: UnsafeMutableRawPointer?
    var textCapacity = 0

    /// Steps the state with one row's value. For min/max, whether SQLite would load the row's
    /// other columns (the GROUP BY terms it shows) after this step: not when the value is NULL
    /// and a value is kept, nor when the kept value stays (minmaxStep's SkipAccumulatorLoad).
    /// Without min/max SQLite shows the group's first row; with them, the row of the last load
    /// by the last min/max it analysed (select list, then ORDER BY, then HAVING: JSONColumns.fold).
    @discardableResult
    mutating func add(_ cell: GroupedRows.Cell, _ function: FoldFunction, numbers: NumericText, arena: Arena) -> Bool {
        guard error == nil else { return false }
        switch cell.kind {
        case .null: return best.kind == .null
        case .error:
            error = cell
            return false
        case .integer, .real, .text: break
        }
        switch function {
        case .count:
            count += 1
        case .countDistinct:
            if distinct == nil { distinct = DistinctCount.Counter(initialSlots: 8, arena: arena) }
            distinct!.add(cell)
        case .sum, .total, .avg:
            count += 1
            var number = cell
            if cell.kind == .text { number = numbers.contribution(UnsafeRawBufferPointer(start: cell.pointer, count: Int(cell.count))) }
            if number.kind == .integer {
                let v = Int64(bitPattern: number.bits)
                realSum += Double(v)
                if !approx && !overflow {
                    let (s, o) = integerSum.addingReportingOverflow(v)
                    if o { overflow = true } else { integerSum = s }
                }
            } else {
                realSum += Double(bitPattern: number.bits)
                approx = true
            }
        case .min, .max:
            let replace: Bool
            if best.kind == .null {
                replace = true
            } else {
                let c = GroupedRows.compare(best.key, cell.key)
                replace = function == .min ? c > 0 : c < 0
            }
            if replace {
                if cell.kind == .text {
                    // The kept text is this state's own copy: overwritten in place while it fits
                    // (a rising max over millions of rows holds one value, not all of them).
                    let n = Int(cell.count)
                    if textCapacity < n || textBuffer == nil {
                        textCapacity = max(n, 2 * textCapacity, 16)
                        textBuffer = arena.allocate(textCapacity)
                    }
                    if n > 0 { textBuffer!.copyMemory(from: cell.pointer!, byteCount: n) }
                    best = .text(UnsafeRawPointer(textBuffer!), n)
                } else {
                    best = cell
                }
            }
            return replace
        }
        return true
    }

    /// count(DISTINCT): `add` of `n` cells, `stride` cells apart, in one run (the counter
    /// overlaps the table misses of a run). Up to the first unreadable member, which is the error.
    mutating func addDistinct(_ cells: UnsafePointer<GroupedRows.Cell>, stride: Int, count n: Int, arena: Arena) {
        guard error == nil else { return }
        var end = 0
        while end < n && cells[end * stride].kind != .error { end += 1 }
        if distinct == nil { distinct = DistinctCount.Counter(initialSlots: 8, arena: arena) }
        distinct!.add(cells: cells, stride: stride, count: end)
        if end < n { error = cells[end * stride] }
    }

    func result(_ function: FoldFunction, errors: GroupedRows.ResolveErrors) -> GroupedRows.Cell {
        if let error { return error }
        switch function {
        case .count: return .integer(count)
        case .countDistinct: return .integer(Int64(distinct?.count ?? 0))
        case .min, .max: return best
        case .total: return .real(realSum)
        case .avg: return count == 0 ? .null : .real(realSum / Double(count))
        case .sum:
            if count == 0 { return .null }
            if overflow { return errors.cell(for: "integer overflow") }
            return approx ? .real(realSum) : .integer(integerSum)
        }
    }
}

/// One chunk's share of one group's folded aggregate, computed on an extractor thread so that
/// the SQLite thread merges a state per group and chunk instead of stepping every row.
///
/// Exact, because each piece merges as SQLite's own steps would have gone on: counts add; the
/// double running sum is re-added value by value (`reals`, in log order — floating-point
/// addition is not associative, so a partial double sum would round differently); the integer
/// sum is kept exactly (Int128) with the extremes of its prefix sums, so that the merge knows
/// whether SQLite's running Int64 sum would have overflowed at any step, which no partial sum
/// alone says; min/max keep the chunk's first best value, and the merge keeps the first of equal
/// values across chunks. Text in a summed member (converted by SQLite, on its thread only),
/// count(DISTINCT), and a min/max that decides which row's key is shown when a group's keys are
/// numbers (1 and 1.0 are one group; text keys of a group are the same bytes, so any row shows
/// the same) are not partial: those chunks give their rows (ChunkGroups.build).
struct FoldPartial {
    /// Non-NULL values.
    var count: Int64 = 0
    /// sum/total/avg: this group's values as doubles, in log order, in the chunk's `reals`.
    var realStart = 0
    var realCount = 0
    /// The integers summed before the chunk's first real value (after it SQLite adds none).
    var integers = 0
    var integerSum: Int128 = 0
    var integerPrefixLow: Int128 = 0
    var integerPrefixHigh: Int128 = 0
    var sawReal = false
    /// min/max: the chunk's kept value (text points into the chunk's memory).
    var best = GroupedRows.Cell.null
    /// The first unreadable member.
    var error: GroupedRows.Cell?

    /// Whether a fold of `function` can be computed as partials of chunks.
    static func applies(_ fold: FoldColumn) -> Bool { fold.function != .countDistinct }

    /// Whether partials hold for groups with these keys: a min/max that decides which row's key
    /// is shown needs the rows when a key is a number.
    static func hold(for folds: [FoldColumn], keys: some Sequence<GroupedRows.Cell>) -> Bool {
        !folds.contains(where: \.governsKey) || !keys.contains { $0.kind == .integer || $0.kind == .real }
    }

    /// Whether a value of a summed member is one the partial can step (text is converted by
    /// SQLite, on its thread only: such a chunk gives its rows).
    @inline(__always) static func steps(_ cell: GroupedRows.Cell) -> Bool { cell.kind != .text }

    /// Steps with one row's value. A sum's doubles go to `reals` from `realStart` (room for
    /// every numeric value of the group is the caller's: a first pass counts them).
    @inline(__always)
    mutating func add(_ cell: GroupedRows.Cell, _ function: FoldFunction, reals: UnsafeMutablePointer<Double>) {
        guard error == nil else { return }
        switch cell.kind {
        case .null: return
        case .error:
            error = cell
            return
        case .integer, .real, .text: break
        }
        switch function {
        case .count:
            count += 1
        case .sum, .total, .avg:
            count += 1
            if cell.kind == .integer {
                let v = Int64(bitPattern: cell.bits)
                reals[realStart + realCount] = Double(v)
                if !sawReal {
                    integerSum += Int128(v)
                    if integers == 0 {
                        (integerPrefixLow, integerPrefixHigh) = (integerSum, integerSum)
                    } else {
                        integerPrefixLow = Swift.min(integerPrefixLow, integerSum)
                        integerPrefixHigh = Swift.max(integerPrefixHigh, integerSum)
                    }
                    integers += 1
                }
            } else {
                reals[realStart + realCount] = Double(bitPattern: cell.bits)
                sawReal = true
            }
            realCount += 1
        case .min, .max:
            if best.kind == .null {
                best = cell
            } else {
                let c = GroupedRows.compare(best.key, cell.key)
                if function == .min ? c > 0 : c < 0 { best = cell }
            }
        case .countDistinct:
            preconditionFailure("count(DISTINCT) has no partials")
        }
    }
}

extension FoldState {
    /// Continues this state with a chunk's partial, as stepping the chunk's values one by one would.
    mutating func merge(_ partial: FoldPartial, _ function: FoldFunction, reals: UnsafeBufferPointer<Double>,
                        numbers: NumericText, arena: Arena) {
        guard error == nil else { return }
        if let e = partial.error {
            // Values before the error no longer matter: the result is the error.
            error = e
            return
        }
        switch function {
        case .count:
            count += partial.count
        case .sum, .total, .avg:
            count += partial.count
            var r = realSum
            for i in partial.realStart..<(partial.realStart + partial.realCount) { r += reals[i] }
            realSum = r
            if !approx && !overflow && partial.integers > 0 {
                let s = Int128(integerSum)
                if s + partial.integerPrefixLow < Int128(Int64.min) || s + partial.integerPrefixHigh > Int128(Int64.max) {
                    overflow = true
                } else {
                    integerSum = Int64(s + partial.integerSum)
                }
            }
            if partial.sawReal { approx = true }
        case .min, .max:
            if partial.best.kind != .null { add(partial.best, function, numbers: numbers, arena: arena) }
        case .countDistinct:
            preconditionFailure("count(DISTINCT) has no partials")
        }
    }
}

/// What SQLite's sum() adds for a text value: the value under numeric affinity (an integer or a
/// real), or — text that is not a number — the real of its numeric prefix. Asked of SQLite
/// itself, on a private connection (`SELECT sum(?1)` over that one value), so that every corner
/// of its conversion (spaces, exponents, hex, overlong integers) is its own. Text in a summed
/// member is rare; this runs on the SQLite thread, once per such value.
final class NumericText {
    private var db: OpaquePointer?
    private var statement: OpaquePointer?

    deinit {
        sqlite3_finalize(statement)
        sqlite3_close_v2(db)
    }

    func contribution(_ text: UnsafeRawBufferPointer) -> GroupedRows.Cell {
        if statement == nil {
            guard sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK,
                  sqlite3_prepare_v2(db, "SELECT sum(?1)", -1, &statement, nil) == SQLITE_OK else { return .real(0) }
        }
        sqlite3_reset(statement)
        if let base = text.baseAddress, !text.isEmpty {
            sqlite3_bind_text(statement, 1, base.assumingMemoryBound(to: CChar.self), Int32(clamping: text.count), strata_sqlite_transient())
        } else {
            sqlite3_bind_text(statement, 1, "", 0, strata_sqlite_transient())
        }
        defer { sqlite3_clear_bindings(statement) }
        guard sqlite3_step(statement) == SQLITE_ROW else { return .real(0) }
        return sqlite3_column_type(statement, 0) == SQLITE_INTEGER
            ? .integer(sqlite3_column_int64(statement, 0)) : .real(sqlite3_column_double(statement, 0))
    }
}
