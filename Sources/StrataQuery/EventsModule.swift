import CSQLite
import StrataBroker
import StrataLog

// The "events" virtual-table module: `CREATE VIRTUAL TABLE temp."t" USING events("t")` exposes
// topic t as (partition, offset, timestamp, key, value, headers); the same module is the
// eponymous table-valued function `events('t')` (xCreate == xConnect), whose argument fills the
// hidden `topic` column. Callbacks are C function pointers without captures; Swift state travels
// in the `owner` pointers.

/// Member columns are declared BLOB: BLOB affinity means none, like the result of `->>`. With any
/// other declared type SQLite would convert in comparisons ('1' = 1 becomes true), and the
/// rewritten statement would answer differently from the one written.
private func schema(members: [String]) -> String {
    "CREATE TABLE x(partition INTEGER, offset INTEGER, timestamp INTEGER, key TEXT, value TEXT, headers TEXT, topic TEXT HIDDEN"
        + members.map { ", \"\(JSONColumns.columnName($0))\" BLOB HIDDEN" }.joined() + ", \(JSONColumns.rowsColumn) INTEGER HIDDEN"
        + (0..<FoldAggregate.slotCount).map { ", \(FoldAggregate.columnName($0)) BLOB HIDDEN" }.joined()
        + ", \(JSONColumns.dayColumn) INTEGER HIDDEN)"
}

/// The `strata_day` column's index (after the fold columns; JSONColumns.dayStart).
@inline(__always) private func dayColumn(members: Int) -> Int32 {
    firstMemberColumn + Int32(members) + 1 + Int32(FoldAggregate.slotCount)
}
/// Index of the first member column (after the hidden `topic`).
private let firstMemberColumn = GroupedOrder.firstMemberColumn
private enum Column: Int32 { case partition = 0, offset, timestamp, key, value, headers, topic }

@inline(__always) private func table(_ p: UnsafeMutablePointer<sqlite3_vtab>?) -> TableState {
    let t = UnsafeMutableRawPointer(p!).assumingMemoryBound(to: StrataVTab.self)
    return Unmanaged<TableState>.fromOpaque(t.pointee.owner).takeUnretainedValue()
}

@inline(__always) private func cursor(_ p: UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> CursorState {
    let c = UnsafeMutableRawPointer(p!).assumingMemoryBound(to: StrataVTabCursor.self)
    return Unmanaged<CursorState>.fromOpaque(c.pointee.owner).takeUnretainedValue()
}

/// The cursor without retain/release (SQLite owns it for the whole call): xNext, xEof and
/// xColumn run once per row and column.
@inline(__always) private func withCursor<R>(_ p: UnsafeMutablePointer<sqlite3_vtab_cursor>?, _ body: (CursorState) throws -> R) rethrows -> R {
    let c = UnsafeMutableRawPointer(p!).assumingMemoryBound(to: StrataVTabCursor.self)
    return try Unmanaged<CursorState>.fromOpaque(c.pointee.owner)._withUnsafeGuaranteedRef(body)
}

private func setError(_ vtab: UnsafeMutablePointer<sqlite3_vtab>?, _ message: String) {
    guard let vtab else { return }
    if let old = vtab.pointee.zErrMsg { sqlite3_free(old) }
    vtab.pointee.zErrMsg = strata_sqlite_strdup(message)
}

private let xConnect: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32, UnsafePointer<UnsafePointer<CChar>?>?,
                                      UnsafeMutablePointer<UnsafeMutablePointer<sqlite3_vtab>?>?, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 = {
    db, aux, argc, argv, ppVTab, pzErr in
    let context = Unmanaged<QueryContext>.fromOpaque(aux!).takeUnretainedValue()
    var topic: String?
    if argc >= 4, let raw = argv?[3] {
        var name = String(cString: raw)
        if name.count >= 2, let f = name.first, f == "\"" || f == "'", name.last == f { name = String(name.dropFirst().dropLast()) }
        guard context.broker.partitionCount(name) != nil else {
            pzErr?.pointee = strata_sqlite_strdup("unknown topic '\(name)'")
            return SQLITE_ERROR
        }
        topic = name
    }
    let rc = sqlite3_declare_vtab(db, schema(members: context.memberColumns))
    guard rc == SQLITE_OK else { return rc }
    _ = strata_sqlite_vtab_config_innocuous(db)
    let v = UnsafeMutablePointer<StrataVTab>.allocate(capacity: 1)
    v.initialize(to: StrataVTab())
    v.pointee.owner = Unmanaged.passRetained(TableState(context: context, topic: topic)).toOpaque()
    ppVTab?.pointee = UnsafeMutableRawPointer(v).assumingMemoryBound(to: sqlite3_vtab.self)
    return SQLITE_OK
}

private let xDisconnect: @convention(c) (UnsafeMutablePointer<sqlite3_vtab>?) -> Int32 = { p in
    let v = UnsafeMutableRawPointer(p!).assumingMemoryBound(to: StrataVTab.self)
    Unmanaged<TableState>.fromOpaque(v.pointee.owner).release()
    if let e = p!.pointee.zErrMsg { sqlite3_free(e) }
    v.deinitialize(count: 1)
    v.deallocate()
    return SQLITE_OK
}

/// Pushdown: partition =, offset ranges and timestamp ranges reach xFilter. Partition and offset
/// constraints are applied exactly (omitted from SQLite's re-check); timestamp ones are not,
/// because CreateTime timestamps can go backwards inside the scanned range.
private let xBestIndex: @convention(c) (UnsafeMutablePointer<sqlite3_vtab>?, UnsafeMutablePointer<sqlite3_index_info>?) -> Int32 = { vtab, info in
    guard let info else { return SQLITE_ERROR }
    let fixedTopic = table(vtab).topic != nil
    var tokens: [String] = []
    var topicBound = false
    var argv: Int32 = 0
    var cost = 1_000_000.0
    let rangeOps: [Int32: String] = [SQLITE_INDEX_CONSTRAINT_GT: ">", SQLITE_INDEX_CONSTRAINT_GE: ">=",
                                     SQLITE_INDEX_CONSTRAINT_LT: "<", SQLITE_INDEX_CONSTRAINT_LE: "<="]
    for i in 0..<Int(info.pointee.nConstraint) {
        let c = info.pointee.aConstraint[i]
        if c.iColumn >= firstMemberColumn {
            if c.usable != 0, Int32(c.op) == SQLITE_INDEX_CONSTRAINT_ISNULL || Int32(c.op) == SQLITE_INDEX_CONSTRAINT_ISNOTNULL {
                // `member IS [NOT] NULL` (`N`/`n` + column): applied only by a fold, which takes
                // the WHERE over exactly. Its argument is unused, but SQLite omits its own check
                // only of constraints handed to xFilter as an argument.
                argv += 1
                info.pointee.aConstraintUsage[i].argvIndex = argv
                info.pointee.aConstraintUsage[i].omit = 0
                tokens.append("\(Int32(c.op) == SQLITE_INDEX_CONSTRAINT_ISNULL ? "N" : "n")\(c.iColumn)")
                continue
            }
            if c.usable != 0, let op = rangeOps[Int32(c.op)], isConstantRHS(info, i) {
                // value->>'$.m' > literal: blocks whose numbers all lie outside are skipped (min/max in
                // the block summaries); SQLite re-checks every row, but in a fold, which applies it
                // exactly (MemberTest).
                argv += 1
                info.pointee.aConstraintUsage[i].argvIndex = argv
                info.pointee.aConstraintUsage[i].omit = 0
                tokens.append("r\(c.iColumn)\(op)")
                continue
            }
            // value->>'$.m' = v / IN (…): filtered in the scan (SQLite re-checks: omit stays 0). An
            // IN list comes all at once, or the scan would run once per value.
            guard c.usable != 0, Int32(c.op) == SQLITE_INDEX_CONSTRAINT_EQ else { continue }
            let isIn = sqlite3_vtab_in(info, Int32(i), -1) != 0
            if isIn { _ = sqlite3_vtab_in(info, Int32(i), 1) }
            argv += 1
            info.pointee.aConstraintUsage[i].argvIndex = argv
            info.pointee.aConstraintUsage[i].omit = 0
            // A literal or bound parameter has no affinity, so SQLite compares it type for type
            // ("c": exact); another column's value may carry an affinity that converts.
            tokens.append("\(isIn ? "M" : "m")\(c.iColumn)\(!isIn && isConstantRHS(info, i) ? "c" : "")")
            cost /= 2
            continue
        }
        guard let column = Column(rawValue: c.iColumn) else { continue }
        if column == .key, c.usable != 0, Int32(c.op) == SQLITE_INDEX_CONSTRAINT_EQ {
            // key = v / IN (…): prunes blocks through their key Bloom filters (SQLite re-checks).
            let isIn = sqlite3_vtab_in(info, Int32(i), -1) != 0
            if isIn { _ = sqlite3_vtab_in(info, Int32(i), 1) }
            argv += 1
            info.pointee.aConstraintUsage[i].argvIndex = argv
            info.pointee.aConstraintUsage[i].omit = 0
            tokens.append(isIn ? "K" : isConstantRHS(info, i) ? "kc" : "k")
            cost /= 2
            continue
        }
        if column == .topic, Int32(c.op) == SQLITE_INDEX_CONSTRAINT_EQ {
            // events('t'): the argument must be usable, or this plan cannot run (SQLite tries another).
            guard c.usable != 0 else { continue }
            argv += 1
            info.pointee.aConstraintUsage[i].argvIndex = argv
            info.pointee.aConstraintUsage[i].omit = 1
            tokens.append("6=")
            topicBound = true
            continue
        }
        guard c.usable != 0, column == .partition || column == .offset || column == .timestamp else { continue }
        let op: String
        switch Int32(c.op) {
        case SQLITE_INDEX_CONSTRAINT_EQ: op = "="
        case SQLITE_INDEX_CONSTRAINT_GT: op = ">"
        case SQLITE_INDEX_CONSTRAINT_GE: op = ">="
        case SQLITE_INDEX_CONSTRAINT_LT: op = "<"
        case SQLITE_INDEX_CONSTRAINT_LE: op = "<="
        default: continue
        }
        if column == .partition && op != "=" { continue }
        argv += 1
        info.pointee.aConstraintUsage[i].argvIndex = argv
        info.pointee.aConstraintUsage[i].omit = column == .timestamp ? 0 : 1
        tokens.append("\(column.rawValue)\(op)")
        cost /= column == .partition ? 4 : 20
    }
    let orderBy = (0..<Int(info.pointee.nOrderBy)).map { info.pointee.aOrderBy[$0] }
    // A fold (JSONColumns.fold) reads `strata_rows` and the `strata_foldN` columns: possible only
    // as a grouped scan whose GROUP BY terms are all the other columns it reads, with no
    // constraint for SQLite to re-check on the folded rows; any other plan is refused, and the
    // statement falls back.
    let context = table(vtab).context
    let rowsColumn = firstMemberColumn + Int32(context.memberColumns.count)
    let foldColumns = UInt64((1 << FoldAggregate.slotCount) - 1) << UInt64(rowsColumn + 1)
    let colUsed = info.pointee.colUsed
    let day = dayColumn(members: context.memberColumns.count)
    if colUsed & (foldColumns | 1 << UInt64(rowsColumn)) != 0 {
        var allowed: UInt64 = foldColumns | 1 << UInt64(rowsColumn)
        for term in orderBy where term.iColumn >= firstMemberColumn && term.iColumn < rowsColumn || term.iColumn == day {
            allowed |= 1 << UInt64(term.iColumn)
        }
        // Constraints: the topic, partition/offset/timestamp ranges and member terms (= / IN /
        // ranges with literals, IS [NOT] NULL), which the scan applies exactly (JSONColumns.fold
        // lets a WHERE through only when it is made of these alone): timestamps are checked row
        // by row (`T`) and members compared (`E`) in the scan, not by SQLite.
        var exactTime = false
        var exactMembers = false
        let keys = Set(orderBy.map(\.iColumn))
        let appliedExactly = (0..<Int(info.pointee.nConstraint)).allSatisfy { i in
            let c = info.pointee.aConstraint[i]
            if c.iColumn == Column.topic.rawValue && Int32(c.op) == SQLITE_INDEX_CONSTRAINT_EQ { return true }
            // `member = literal` (its token ends in "c": a constant operand), IN literals, a range
            // with a literal, IS [NOT] NULL: the scan decides exactly. A member also read
            // elsewhere must be a GROUP BY term (JSONColumns.fold).
            if c.iColumn >= firstMemberColumn && c.iColumn < rowsColumn {
                let usage = info.pointee.aConstraintUsage[i]
                let op = Int32(c.op)
                let argToken = usage.argvIndex > 0 && Int(usage.argvIndex) <= tokens.count ? tokens[Int(usage.argvIndex) - 1] : ""
                // (`M`: an IN list handed over whole; JSONColumns.fold let only lists of literals through.)
                // IS [NOT] NULL only on a GROUP BY term: SQLite 3.40 evaluates those terms again
                // whatever `omit` says, reading the column from the folded row (a key there).
                let taken = op == SQLITE_INDEX_CONSTRAINT_EQ ? ["m\(c.iColumn)c", "M\(c.iColumn)"].contains(argToken)
                    : op == SQLITE_INDEX_CONSTRAINT_ISNULL ? argToken == "N\(c.iColumn)" && keys.contains(c.iColumn)
                    : op == SQLITE_INDEX_CONSTRAINT_ISNOTNULL ? argToken == "n\(c.iColumn)" && keys.contains(c.iColumn)
                    : rangeOps[op].map { argToken == "r\(c.iColumn)\($0)" } ?? false
                guard taken else { return false }
                let name = context.memberColumns[Int(c.iColumn - firstMemberColumn)]
                guard !context.pendingFoldFilteredElsewhere.contains(name) || keys.contains(c.iColumn) else { return false }
                allowed |= 1 << UInt64(c.iColumn)
                exactMembers = true
                return true
            }
            guard c.iColumn >= Column.partition.rawValue && c.iColumn <= Column.timestamp.rawValue,
                  info.pointee.aConstraintUsage[i].argvIndex > 0 else { return false }
            allowed |= 1 << UInt64(c.iColumn)
            if c.iColumn == Column.timestamp.rawValue { exactTime = true }
            return true
        }
        // Each folded column used must be one the statement's rewrite defined, of a declared member.
        var folds: [String] = []
        for slot in 0..<FoldAggregate.slotCount where colUsed & (1 << UInt64(rowsColumn + 1 + Int32(slot))) != 0 {
            guard let a = context.pendingFolds.first(where: { $0.slot == slot }),
                  let id = context.memberColumns.firstIndex(of: a.member) else { return SQLITE_CONSTRAINT }
            folds.append("a\(rowsColumn + 1 + Int32(slot))\(a.function.letter)\(firstMemberColumn + Int32(id))")
            if a.governsKey { folds.append("h\(rowsColumn + 1 + Int32(slot))") }
        }
        // GROUP BY member columns and the day of the timestamp (their order handed to the
        // table), or no GROUP BY at all: one group, one row.
        let grouping = !orderBy.isEmpty && orderBy.allSatisfy({ $0.iColumn >= firstMemberColumn && $0.iColumn < rowsColumn || $0.iColumn == day })
            && sqlite3_vtab_distinct(info) == 1
        // (A GROUP BY of expressions also reaches here without terms: only a statement the fold
        // rewrite saw without GROUP BY is one group.)
        let whole = orderBy.isEmpty && sqlite3_vtab_distinct(info) == 0 && !context.pendingFoldGrouped
        // No row limit: a fold holds its groups, not its rows (each chunk's cells only until merged).
        // SQLite 3.40 honours `omit` only for the first 16 constraints (whereLoopAddVirtualOne):
        // past them it would check terms again on the folded rows, which do not hold their columns.
        guard day < 63, grouping || whole, colUsed & ~allowed == 0, appliedExactly,
              info.pointee.nConstraint <= 16,
              table(vtab).estimatedRows != nil else { return SQLITE_CONSTRAINT }
        for term in orderBy { tokens.append("g\(term.iColumn)\(term.desc != 0 ? "d" : "a")") }
        tokens.append("u\(colUsed & ~(foldColumns | 1 << UInt64(rowsColumn)))")
        tokens += folds
        tokens.append("f")
        if exactTime {
            tokens.append("T")
            for i in 0..<Int(info.pointee.nConstraint) where info.pointee.aConstraint[i].iColumn == Column.timestamp.rawValue {
                info.pointee.aConstraintUsage[i].omit = 1
            }
        }
        if exactMembers {
            tokens.append("E")
            for i in 0..<Int(info.pointee.nConstraint) where info.pointee.aConstraint[i].iColumn >= firstMemberColumn {
                info.pointee.aConstraintUsage[i].omit = 1
            }
        }
        info.pointee.orderByConsumed = 1
    } else if orderBy.count == 1, orderBy[0].iColumn == Column.offset.rawValue, orderBy[0].desc == 0 {
        // Rows come in offset order within a partition; with one partition that is the order asked for.
        if tokens.contains("0=") { info.pointee.orderByConsumed = 1 }
    } else if !orderBy.isEmpty, orderBy.allSatisfy({ $0.iColumn >= firstMemberColumn }),
              info.pointee.colUsed & (1 << Column.headers.rawValue | 1 << 63) == 0,
              let rows = table(vtab).estimatedRows, rows <= GroupedRows.rowLimit {
        // GROUP BY / DISTINCT / ORDER BY on member columns: GroupedRows hashes rows into groups
        // and emits the groups sorted, without SQLite's row-by-row sorter.
        for term in orderBy { tokens.append("g\(term.iColumn)\(term.desc != 0 ? "d" : "a")") }
        tokens.append("u\(info.pointee.colUsed)")
        // DISTINCT (mode 2): one row per group is enough, which shrinks SQLite's own dedup b-tree.
        if sqlite3_vtab_distinct(info) == 2 { tokens.append("x") }
        info.pointee.orderByConsumed = 1
    }
    // A statement reading nothing of a row but its partition, offset, timestamp and member
    // columns (`C`): cold blocks can be read from their member columns, which give no key,
    // value or headers (the member columns must all have scan ids, WantedFields.limit).
    if !tokens.contains("f") && !tokens.contains(where: { $0.hasPrefix("g") }),
       info.pointee.colUsed & (1 << Column.key.rawValue | 1 << Column.value.rawValue | 1 << Column.headers.rawValue | 1 << 63) == 0,
       context.memberColumns.count <= WantedFields.limit {
        tokens.append("C")
    }
    // Without a usable topic argument the plan is allowed (so the error can say what is missing,
    // rather than SQLite's "no query solution") but priced so that any plan with one wins.
    if !fixedTopic && !topicBound { cost = 1e300 }
    info.pointee.idxStr = strata_sqlite_strdup(tokens.joined(separator: ","))
    info.pointee.needToFreeIdxStr = 1
    info.pointee.estimatedCost = cost
    return SQLITE_OK
}

/// The right-hand side of an `=` constraint, or each value of an IN list handed over whole
/// (sqlite3_vtab_in).
private func forEachOperand(_ argument: OpaquePointer?, isList: Bool, _ body: (OpaquePointer?) -> Void) {
    guard isList else { return body(argument) }
    var value: OpaquePointer?
    var rc = sqlite3_vtab_in_first(argument, &value)
    while rc == SQLITE_OK, let v = value {
        body(v)
        rc = sqlite3_vtab_in_next(argument, &value)
    }
}

/// Whether constraint i's right-hand side is a literal or a bound parameter (values without
/// affinity; SQLite's docs: sqlite3_vtab_rhs_value).
private func isConstantRHS(_ info: UnsafeMutablePointer<sqlite3_index_info>, _ i: Int) -> Bool {
    var value: OpaquePointer?
    return sqlite3_vtab_rhs_value(info, Int32(i), &value) == SQLITE_OK
}

private let xOpen: @convention(c) (UnsafeMutablePointer<sqlite3_vtab>?, UnsafeMutablePointer<UnsafeMutablePointer<sqlite3_vtab_cursor>?>?) -> Int32 = { p, pp in
    let c = UnsafeMutablePointer<StrataVTabCursor>.allocate(capacity: 1)
    c.initialize(to: StrataVTabCursor())
    let state = CursorState(table: table(p))
    c.pointee.owner = Unmanaged.passRetained(state).toOpaque()
    state.table.context.activeCursors.append(Unmanaged.passUnretained(state))
    pp?.pointee = UnsafeMutableRawPointer(c).assumingMemoryBound(to: sqlite3_vtab_cursor.self)
    return SQLITE_OK
}

private let xClose: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> Int32 = { p in
    let c = UnsafeMutableRawPointer(p!).assumingMemoryBound(to: StrataVTabCursor.self)
    let state = Unmanaged<CursorState>.fromOpaque(c.pointee.owner)
    state.takeUnretainedValue().stop()
    state.takeUnretainedValue().table.context.activeCursors.removeAll { $0.toOpaque() == state.toOpaque() }
    state.release()
    c.deinitialize(count: 1)
    c.deallocate()
    return SQLITE_OK
}

private let xFilter: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?, Int32, UnsafePointer<CChar>?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Int32 = {
    p, _, idxStr, argc, argv in
    let cur = cursor(p)
    let ctx = cur.table.context
    var topic = cur.table.topic
    var mismatch = false
    var partitionEq: Int64?
    var offLo: Int64 = 0
    var offHi = Int64.max
    var tsLo = ctx.sinceMs ?? Int64.min
    var tsHi = ctx.untilMs.map { $0 - 1 } ?? Int64.max
    // The statement's own timestamp bounds, for a fold that applies them row by row (`T`).
    var rowTsLo = Int64.min
    var rowTsHi = Int64.max
    let tokens = idxStr.map { String(cString: $0) }?.split(separator: ",").map(String.init) ?? []
    var order: GroupedOrder?
    var filters: [MemberFilter] = []
    var keyFilter: KeyFilter?
    var memberRanges: [MemberRange] = []
    var memberTests: [MemberTest] = []
    let groupTokens = tokens.filter { $0.hasPrefix("g") }
    if !groupTokens.isEmpty || tokens.contains("f"), let used = tokens.first(where: { $0.hasPrefix("u") }).flatMap({ UInt64($0.dropFirst()) }) {
        let keys = groupTokens.compactMap { Int32($0.dropFirst().dropLast()) }
        var stored = (0..<Int32(63)).filter { c in used & (1 << UInt64(c)) != 0 && c != Column.topic.rawValue && c != Column.headers.rawValue }
        for k in keys where !stored.contains(k) { stored.append(k) }
        // Folded aggregates: `a<column><function letter><member column>`; their members are stored.
        var folds: [(column: Int32, function: FoldFunction, member: Int32, governsKey: Bool)] = []
        for token in tokens where token.hasPrefix("a") {
            let body = token.dropFirst()
            guard let column = Int32(body.prefix { $0.isNumber }), let letter = body.drop(while: { $0.isNumber }).first,
                  let function = FoldFunction(letter: letter),
                  let member = Int32(body.drop(while: { $0.isNumber }).dropFirst()) else { continue }
            folds.append((column, function, member, tokens.contains("h\(column)")))
            if !stored.contains(member) { stored.append(member) }
        }
        order = GroupedOrder(keyColumns: keys, descending: groupTokens.map { $0.hasSuffix("d") }, storedColumns: stored,
                             firstRowOnly: tokens.contains("x"), fold: tokens.contains("f"), folds: folds)
    }
    for (i, token) in tokens.enumerated() where i < Int(argc) {
        if token.hasPrefix("g") || token.hasPrefix("u") || token.hasPrefix("a") || token.hasPrefix("h") || ["x", "f", "T", "E", "C"].contains(token) { continue }
        if let kind = token.first, kind == "m" || kind == "M",
           let column = Int32(token.dropFirst().prefix { $0.isNumber }) {
            var filter = MemberFilter(memberId: Int(column - firstMemberColumn), exact: token.hasSuffix("c"))
            forEachOperand(argv![i], isList: kind == "M") { filter.add($0) }
            filters.append(filter)
            continue
        }
        if let kind = token.first, kind == "n" || kind == "N", let column = Int32(token.dropFirst()) {
            memberTests.append(MemberTest(memberId: Int(column - firstMemberColumn), isNull: kind == "N"))
            continue
        }
        if token.first == "r", let column = Int32(token.dropFirst().prefix { $0.isNumber }) {
            let op = String(token.dropFirst().drop { $0.isNumber })
            if let range = MemberRange(memberId: Int(column - firstMemberColumn), op: op, argv![i]) { memberRanges.append(range) }
            if let test = MemberTest(memberId: Int(column - firstMemberColumn), op: op, argv![i]) { memberTests.append(test) }
            continue
        }
        if token == "k" || token == "kc" || token == "K" {
            var filter = KeyFilter(exact: token == "kc")
            forEachOperand(argv![i], isList: token == "K") { filter.add($0) }
            // Two key constraints: either one alone rules a block out; keep the first (conservative).
            if keyFilter == nil { keyFilter = filter }
            continue
        }
        if token == "6=" {
            let name = sqlite3_value_text(argv![i]).map { String(cString: $0) }
            if let fixed = topic { if name != fixed { mismatch = true } } else { topic = name }
            continue
        }
        let v = sqlite3_value_int64(argv![i])
        let column = token.first!
        let op = String(token.dropFirst())
        switch (column, op) {
        case ("0", "="): partitionEq = v
        case ("1", "="): offLo = max(offLo, v); offHi = min(offHi, v)
        case ("1", ">"): offLo = max(offLo, v &+ 1)
        case ("1", ">="): offLo = max(offLo, v)
        case ("1", "<"): offHi = min(offHi, v &- 1)
        case ("1", "<="): offHi = min(offHi, v)
        case ("2", "="): tsLo = max(tsLo, v); tsHi = min(tsHi, v); rowTsLo = max(rowTsLo, v); rowTsHi = min(rowTsHi, v)
        case ("2", ">"):
            // (> Int64.max matches nothing: an empty range, not a wrapped one.)
            tsLo = max(tsLo, v &+ 1); rowTsLo = max(rowTsLo, v == .max ? .max : v + 1); if v == .max { rowTsHi = .min }
        case ("2", ">="): tsLo = max(tsLo, v); rowTsLo = max(rowTsLo, v)
        case ("2", "<"): tsHi = min(tsHi, v &- 1); rowTsHi = min(rowTsHi, v == .min ? .min : v - 1); if v == .min { rowTsLo = .max }
        case ("2", "<="): tsHi = min(tsHi, v); rowTsHi = min(rowTsHi, v)
        default: break
        }
    }
    cur.stop()
    var ranges: [(partition: Int32, start: Int64, end: Int64)] = []
    guard let topic, let count = ctx.broker.partitionCount(topic) else {
        setError(p!.pointee.pVtab, topic.map { "unknown topic '\($0)'" } ?? "events() needs a topic: events('name')")
        return SQLITE_ERROR
    }
    cur.topic = topic
    if mismatch { return SQLITE_OK }
    do {
        for partition in 0..<count {
            if let eq = partitionEq, Int64(partition) != eq { continue }
            let log = try ctx.broker.log(topic: topic, partition: partition)
            let snapshotEnd = ctx.endOffsets["\(topic)-\(partition)"] ?? log.logEndOffset
            var start = max(log.logStartOffset, offLo)
            var end = offHi == Int64.max ? snapshotEnd : min(snapshotEnd, offHi &+ 1)
            // Time bounds through the time index: the first offset at or after each bound.
            if tsLo != Int64.min { start = max(start, try ctx.broker.offset(topic: topic, partition: partition, forTimestamp: tsLo)) }
            if tsHi != Int64.max, tsHi < Int64.max - 1 { end = min(end, try ctx.broker.offset(topic: topic, partition: partition, forTimestamp: tsHi + 1)) }
            ctx.stats.withLock { s in
                s.bytesTotal += log.sizeInBytes
                s.segmentsTotal += log.segmentCount
            }
            guard start < end else { continue }
            ranges.append((partition, start, end))
            ctx.stats.withLock { $0.partitionsScanned += 1 }
        }
        if tokens.contains("T") { order?.rowTimestamps = (rowTsLo, rowTsHi) }
        if tokens.contains("E") {
            order?.exactFilters = true
            order?.tests = memberTests
        }
        try cur.start(ranges: ranges, order: order, filters: filters, keyFilter: keyFilter, memberRanges: memberRanges,
                      membersOnly: tokens.contains("C"), db: ctx.db)
    } catch {
        setError(p!.pointee.pVtab, "\(error)")
        return SQLITE_ERROR
    }
    return SQLITE_OK
}

private let xNext: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> Int32 = { p in
    do {
        try withCursor(p) { try $0.advance() }
        return SQLITE_OK
    } catch {
        setError(p!.pointee.pVtab, "\(error)")
        return SQLITE_ERROR
    }
}

private let xEof: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> Int32 = { p in
    return withCursor(p) { $0.eof } ? 1 : 0
}

private let xColumn: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?, OpaquePointer?, Int32) -> Int32 = { p, ctx, i in
    withCursor(p) { column(cur: $0, ctx, i) }
}

@inline(__always) private func column(cur: CursorState, _ ctx: OpaquePointer?, _ i: Int32) -> Int32 {
    if let grouped = cur.grouped {
        if i == Column.topic.rawValue {
            var t = cur.topic
            t.withUTF8 { b in resultText(ctx, UnsafeRawPointer(b.baseAddress), Int32(b.count)) }
        } else if !grouped.result(ctx, column: i, position: cur.groupedPosition) {
            sqlite3_result_error(ctx, "column \(i) was not planned for this grouped scan", -1)
        }
        return SQLITE_OK
    }
    let row = cur.current
    switch Column(rawValue: i) {
    case .partition: sqlite3_result_int64(ctx, Int64(row.partition))
    case .offset: sqlite3_result_int64(ctx, row.offset)
    case .timestamp: sqlite3_result_int64(ctx, row.timestamp)
    case .key: resultText(ctx, row.key, row.keyCount)
    case .value: resultText(ctx, row.value, row.valueCount)
    case .headers:
        if row.headersIndex >= 0 {
            var h = cur.chunk.headers[Int(row.headersIndex)]
            h.withUTF8 { b in resultText(ctx, UnsafeRawPointer(b.baseAddress), Int32(b.count)) }
        } else {
            sqlite3_result_null(ctx)
        }
    case .topic:
        var t = cur.topic
        t.withUTF8 { b in resultText(ctx, UnsafeRawPointer(b.baseAddress), Int32(b.count)) }
    case nil:
        let id = Int(i - firstMemberColumn)
        let context = cur.table.context
        if i == dayColumn(members: context.memberColumns.count) {
            if let day = JSONColumns.dayStart(timestampMs: row.timestamp) { sqlite3_result_int64(ctx, day) } else { sqlite3_result_null(ctx) }
            return SQLITE_OK
        }
        // A member of the value, or of the key (`key->>…`): ->> of a NULL document is NULL.
        // The scan's member first: rows read from cold columns (a `C` plan) carry no value, and
        // a NULL document's members are .null there too.
        if id >= 0, id < context.memberColumns.count, id < cur.chunk.fields.count, resultField(ctx, cur.chunk.fields[id][cur.rowIndex]) {
            return SQLITE_OK
        }
        let isKey = id >= 0 && id < context.memberColumns.count && JSONColumns.isKeyMember(context.memberColumns[id])
        guard id >= 0, id < context.memberColumns.count, let document = isKey ? row.key : row.value else {
            sqlite3_result_null(ctx)
            return SQLITE_OK
        }
        let bytes = UnsafeRawBufferPointer(start: document, count: Int(isKey ? row.keyCount : row.valueCount))
        let member = context.memberColumns[id]
        let scanner = JSONMemberScanner(keys: [JSONColumns.scanKey(JSONColumns.path(member))], stopEarly: false)
        // Decoded text lives in the scanner's scratch buffer until resultField has copied it.
        let found = withExtendedLifetime(scanner) { resultField(ctx, scanner.member(in: bytes)) }
        if found { return SQLITE_OK }
        context.jsonFunctions?.extractWithSQLite(ctx, path: "$." + JSONColumns.path(member), preview: { String(decoding: bytes, as: UTF8.self) }) { stmt in
            _ = sqlite3_bind_text(stmt, 1, document.assumingMemoryBound(to: CChar.self), Int32(bytes.count), strata_sqlite_transient())
        }
    }
    return SQLITE_OK
}

/// Text copied by SQLite (TRANSIENT): the views die with their chunk, and SQLite may keep a
/// static value beyond the row (a MEM_Static copy stays a pointer).
@inline(__always) private func resultText(_ ctx: OpaquePointer?, _ bytes: UnsafeRawPointer?, _ count: Int32) {
    guard count >= 0 else { sqlite3_result_null(ctx); return }
    sqlite3_result_text(ctx, (bytes ?? UnsafeRawPointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self), count, strata_sqlite_transient())
}

private let xRowid: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?, UnsafeMutablePointer<sqlite3_int64>?) -> Int32 = { p, rowid in
    let cur = cursor(p)
    if cur.grouped != nil {
        rowid?.pointee = Int64(cur.groupedPosition)
        return SQLITE_OK
    }
    let row = cur.current
    rowid?.pointee = (Int64(row.partition) << 48) | row.offset
    return SQLITE_OK
}

nonisolated(unsafe) let eventsModule: UnsafeMutablePointer<sqlite3_module> = {
    let m = UnsafeMutablePointer<sqlite3_module>.allocate(capacity: 1)
    var mod = sqlite3_module()
    mod.iVersion = 1
    mod.xCreate = xConnect
    mod.xConnect = xConnect
    mod.xBestIndex = xBestIndex
    mod.xDisconnect = xDisconnect
    mod.xDestroy = xDisconnect
    mod.xOpen = xOpen
    mod.xClose = xClose
    mod.xFilter = xFilter
    mod.xNext = xNext
    mod.xEof = xEof
    mod.xColumn = xColumn
    mod.xRowid = xRowid
    m.initialize(to: mod)
    return m
}()
