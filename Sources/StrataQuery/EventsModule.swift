import CSQLite
import StrataBroker
import StrataLog

// The "events" virtual-table module: `CREATE VIRTUAL TABLE temp."t" USING events("t")` exposes
// topic t as (partition, offset, timestamp, key, value, headers). Callbacks are C function
// pointers without captures; Swift state travels in the `owner` pointers.

private let schema = "CREATE TABLE x(partition INTEGER, offset INTEGER, timestamp INTEGER, key TEXT, value TEXT, headers TEXT)"
private enum Column: Int32 { case partition = 0, offset, timestamp, key, value, headers }

@inline(__always) private func table(_ p: UnsafeMutablePointer<sqlite3_vtab>?) -> TableState {
    let t = UnsafeMutableRawPointer(p!).assumingMemoryBound(to: StrataVTab.self)
    return Unmanaged<TableState>.fromOpaque(t.pointee.owner).takeUnretainedValue()
}

@inline(__always) private func cursor(_ p: UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> CursorState {
    let c = UnsafeMutableRawPointer(p!).assumingMemoryBound(to: StrataVTabCursor.self)
    return Unmanaged<CursorState>.fromOpaque(c.pointee.owner).takeUnretainedValue()
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
    guard argc >= 4, let raw = argv?[3] else {
        pzErr?.pointee = strata_sqlite_strdup("usage: CREATE VIRTUAL TABLE t USING events(\"topic\")")
        return SQLITE_ERROR
    }
    var topic = String(cString: raw)
    if topic.count >= 2, let f = topic.first, f == "\"" || f == "'", topic.last == f { topic = String(topic.dropFirst().dropLast()) }
    guard context.broker.partitionCount(topic) != nil else {
        pzErr?.pointee = strata_sqlite_strdup("unknown topic '\(topic)'")
        return SQLITE_ERROR
    }
    let rc = sqlite3_declare_vtab(db, schema)
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
private let xBestIndex: @convention(c) (UnsafeMutablePointer<sqlite3_vtab>?, UnsafeMutablePointer<sqlite3_index_info>?) -> Int32 = { _, info in
    guard let info else { return SQLITE_ERROR }
    var tokens: [String] = []
    var argv: Int32 = 0
    var cost = 1_000_000.0
    for i in 0..<Int(info.pointee.nConstraint) {
        let c = info.pointee.aConstraint[i]
        guard c.usable != 0, let column = Column(rawValue: c.iColumn),
              column == .partition || column == .offset || column == .timestamp else { continue }
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
    if info.pointee.nOrderBy == 1, info.pointee.aOrderBy[0].iColumn == Column.offset.rawValue, info.pointee.aOrderBy[0].desc == 0 {
        // Rows come in offset order within a partition; with one partition that is the order asked for.
        if tokens.contains("0=") { info.pointee.orderByConsumed = 1 }
    }
    info.pointee.idxStr = strata_sqlite_strdup(tokens.joined(separator: ","))
    info.pointee.needToFreeIdxStr = 1
    info.pointee.estimatedCost = cost
    return SQLITE_OK
}

private let xOpen: @convention(c) (UnsafeMutablePointer<sqlite3_vtab>?, UnsafeMutablePointer<UnsafeMutablePointer<sqlite3_vtab_cursor>?>?) -> Int32 = { p, pp in
    let c = UnsafeMutablePointer<StrataVTabCursor>.allocate(capacity: 1)
    c.initialize(to: StrataVTabCursor())
    c.pointee.owner = Unmanaged.passRetained(CursorState(table: table(p))).toOpaque()
    pp?.pointee = UnsafeMutableRawPointer(c).assumingMemoryBound(to: sqlite3_vtab_cursor.self)
    return SQLITE_OK
}

private let xClose: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> Int32 = { p in
    let c = UnsafeMutableRawPointer(p!).assumingMemoryBound(to: StrataVTabCursor.self)
    Unmanaged<CursorState>.fromOpaque(c.pointee.owner).release()
    c.deinitialize(count: 1)
    c.deallocate()
    return SQLITE_OK
}

private let xFilter: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?, Int32, UnsafePointer<CChar>?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Int32 = {
    p, _, idxStr, argc, argv in
    let cur = cursor(p)
    let ctx = cur.table.context
    let topic = cur.table.topic
    var partitionEq: Int64?
    var offLo: Int64 = 0
    var offHi = Int64.max
    var tsLo = ctx.sinceMs ?? Int64.min
    var tsHi = ctx.untilMs.map { $0 - 1 } ?? Int64.max
    let tokens = idxStr.map { String(cString: $0) }?.split(separator: ",").map(String.init) ?? []
    for (i, token) in tokens.enumerated() where i < Int(argc) {
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
        case ("2", "="): tsLo = max(tsLo, v); tsHi = min(tsHi, v)
        case ("2", ">"): tsLo = max(tsLo, v &+ 1)
        case ("2", ">="): tsLo = max(tsLo, v)
        case ("2", "<"): tsHi = min(tsHi, v &- 1)
        case ("2", "<="): tsHi = min(tsHi, v)
        default: break
        }
    }
    cur.ranges = []
    cur.rows = []
    cur.rowIndex = 0
    cur.rangeIndex = 0
    cur.position = 0
    do {
        let count = ctx.broker.partitionCount(topic) ?? 0
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
            cur.ranges.append((partition, start, end))
            ctx.stats.withLock { $0.partitionsScanned += 1 }
        }
        while cur.rows.isEmpty && cur.rangeIndex < cur.ranges.count { try cur.loadChunk() }
    } catch {
        setError(p!.pointee.pVtab, "\(error)")
        return SQLITE_ERROR
    }
    return SQLITE_OK
}

private let xNext: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> Int32 = { p in
    do {
        try cursor(p).advance()
        return SQLITE_OK
    } catch {
        setError(p!.pointee.pVtab, "\(error)")
        return SQLITE_ERROR
    }
}

private let xEof: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?) -> Int32 = { p in
    let c = cursor(p)
    return c.rowIndex >= c.rows.count ? 1 : 0
}

private let xColumn: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?, OpaquePointer?, Int32) -> Int32 = { p, ctx, i in
    let row = cursor(p).current
    switch Column(rawValue: i) {
    case .partition: sqlite3_result_int64(ctx, Int64(row.partition))
    case .offset: sqlite3_result_int64(ctx, row.offset)
    case .timestamp: sqlite3_result_int64(ctx, row.timestamp)
    case .key: resultText(ctx, row.key)
    case .value: resultText(ctx, row.value)
    case .headers:
        if let h = row.headers { resultText(ctx, Array(h.utf8)) } else { sqlite3_result_null(ctx) }
    case nil: sqlite3_result_null(ctx)
    }
    return SQLITE_OK
}

private func resultText(_ ctx: OpaquePointer?, _ bytes: [UInt8]?) {
    guard let bytes else { sqlite3_result_null(ctx); return }
    bytes.withUnsafeBufferPointer { b in
        b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: max(1, b.count)) { sqlite3_result_text(ctx, $0, Int32(b.count), strata_sqlite_transient()) }
    }
}

private let xRowid: @convention(c) (UnsafeMutablePointer<sqlite3_vtab_cursor>?, UnsafeMutablePointer<sqlite3_int64>?) -> Int32 = { p, rowid in
    let row = cursor(p).current
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
