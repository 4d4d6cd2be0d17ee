import CSQLite
import StrataBroker
import StrataCore
import StrataLog
import Glibc
import Synchronization

public struct QueryError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ d: String) { description = d }
}

/// What a query read, for `--explain`: pushdown at work.
public struct ScanStats: Sendable {
    public var partitionsScanned = 0
    public var segmentsRead = 0
    public var segmentsTotal = 0
    public var bytesRead = 0
    public var bytesTotal = 0
    public var recordsScanned = 0
    /// Blocks of closed segments with a summary that the scans' ranges covered, and those skipped.
    public var blocksSummarized = 0
    public var blocksPruned = 0
    public var bytesPruned = 0
    /// Closed segments the scans covered that had no up-to-date summary (read in full).
    public var segmentsWithoutSummary = 0
    /// Cold blocks read from their token columns (ColdColumnScan), and decoded whole.
    public var coldBlocksFromColumns = 0
    public var coldBlocksDecoded = 0
    /// Cold blocks read from their columns where no record passed the filters (read first).
    public var coldBlocksFilteredOut = 0
    /// Of the blocks read from their columns, those folded straight into partial aggregates
    /// (ColdColumnFold: no row made).
    public var coldBlocksFolded = 0
}

/// Shared by the virtual tables of one engine.
final class QueryContext: @unchecked Sendable {
    let broker: Broker
    let sinceMs: Int64?
    let untilMs: Int64?
    /// Log end offsets fixed when the engine opened: a query sees one consistent snapshot.
    let endOffsets: [String: Int64]
    /// Read committed (the default): per partition with aborted transactions, its producer
    /// state, whose aborted ranges the scan skips. Empty when reading uncommitted.
    let transactionStates: [String: ProducerStates]
    let stats = Mutex(ScanStats())
    let segmentsSeen = Mutex(Set<String>())
    let wanted = WantedFields()
    /// Members declared as hidden columns of every topic table (ids 0..<count in `wanted`).
    let memberColumns: [String]
    /// For member columns whose value the fast path leaves to SQLite. Set once by the engine.
    unowned(unsafe) var jsonFunctions: JSONFunctionState?
    /// The engine's connection (for SQLite's json_extract on values the fast path leaves).
    var db: OpaquePointer?
    /// The aggregates the statement being prepared folds (JSONColumns.fold), for xBestIndex to
    /// write into its plan. SQLite thread only.
    var pendingFolds: [FoldAggregate] = []
    /// Whether that statement has a GROUP BY (without one it is folded as a single group).
    var pendingFoldGrouped = true
    /// Members its WHERE compares that it also reads elsewhere (they must be GROUP BY terms).
    var pendingFoldFilteredElsewhere = Set<String>()
    /// Open scans, for `->>` to find members the scan threads extracted. SQLite thread only.
    var activeCursors: [Unmanaged<CursorState>] = []

    /// A member the scan thread already extracted from exactly these value bytes.
    @inline(__always) func precomputed(_ value: UnsafeRawPointer, _ count: Int, _ id: Int) -> FieldValue? {
        for c in activeCursors {
            if let v = c.takeUnretainedValue().precomputed(value, count, id) { return v }
        }
        return nil
    }

    init(broker: Broker, sinceMs: Int64?, untilMs: Int64?, memberColumns: [String], readCommitted: Bool = true,
         topics: [String]? = nil) throws {
        self.broker = broker
        self.memberColumns = memberColumns
        for m in memberColumns { _ = wanted.id(of: JSONColumns.wantedKey(m)) }
        self.sinceMs = sinceMs
        self.untilMs = untilMs
        var ends: [String: Int64] = [:]
        var states: [String: ProducerStates] = [:]
        for topic in topics ?? broker.topicNames() {
            for p in 0..<(broker.partitionCount(topic) ?? 0) {
                let log = try broker.log(topic: topic, partition: p)
                try log.refresh()
                if readCommitted {
                    // The snapshot ends at the last stable offset: an open transaction's records
                    // (and everything after them) are not visible yet.
                    try log.catchUpProducerState()
                    ends["\(topic)-\(p)"] = log.lastStableOffset
                    let state = log.producerStateSnapshot
                    if !state.aborted.isEmpty { states["\(topic)-\(p)"] = state }
                } else {
                    ends["\(topic)-\(p)"] = log.logEndOffset
                }
            }
        }
        endOffsets = ends
        transactionStates = states
    }

    /// For reading `topics` in full, aborted records included (summaries are built this way).
    convenience init(broker: Broker, topics: [String]) throws {
        try self.init(broker: broker, sinceMs: nil, untilMs: nil, memberColumns: [], readCommitted: false, topics: topics)
    }
}

final class TableState {
    let context: QueryContext
    /// nil for the eponymous `events` table, whose topic comes from `events('topic')`.
    let topic: String?
    init(context: QueryContext, topic: String?) {
        self.context = context
        self.topic = topic
    }

    /// Records in the snapshot (nil for `events('t')`, whose topic is known only at xFilter).
    var estimatedRows: Int64? {
        guard let topic, let count = context.broker.partitionCount(topic) else { return nil }
        var total: Int64 = 0
        for p in 0..<count {
            guard let log = try? context.broker.log(topic: topic, partition: p) else { return nil }
            total += (context.endOffsets["\(topic)-\(p)"] ?? log.logEndOffset) - log.logStartOffset
        }
        return total
    }
}

/// What xBestIndex promised for a grouped scan: the order (member columns) and the columns the
/// statement reads (colUsed), which are all GroupedRows keeps.
struct GroupedOrder {
    static let firstMemberColumn: Int32 = 7
    var keyColumns: [Int32]
    var descending: [Bool]
    var storedColumns: [Int32]
    /// DISTINCT: one row per group.
    var firstRowOnly = false
    /// A fold (JSONColumns.fold): one row per group with its row count and folded aggregates.
    var fold = false
    /// Folded aggregates: the vtab column reporting each, its function, the member column.
    var folds: [(column: Int32, function: FoldFunction, member: Int32, governsKey: Bool)] = []
    /// A fold's timestamp bounds, applied to every row by the scan (SQLite does not re-check).
    var rowTimestamps: (lo: Int64, hi: Int64)?
    /// A fold's member filters are exact (SQLite does not re-check them).
    var exactFilters = false
    /// A fold's member ranges and IS [NOT] NULL terms, exact too.
    var tests: [MemberTest] = []
}

final class CursorState {
    let table: TableState
    /// The topic this scan reads (the table's, or the argument of `events('topic')`).
    var topic = ""
    var pipeline: ScanPipeline?
    @exclusivity(unchecked) var chunk = Chunk(slice: nil)
    @exclusivity(unchecked) var rowIndex = 0
    /// Set when rows are delivered group by group (GroupedRows) instead of in log order.
    @exclusivity(unchecked) var grouped: GroupedRows?
    @exclusivity(unchecked) var groupedPosition = 0
    /// Member equality filters pushed down by xBestIndex (conservative; SQLite re-checks).
    var filters: [MemberFilter] = []
    init(table: TableState) { self.table = table }

    var eof: Bool {
        if let grouped { return groupedPosition >= grouped.rowCount }
        return rowIndex >= chunk.rows.count
    }
    var current: RowRef { chunk.rows[rowIndex] }

    /// Starts a scan of `ranges`. With `order` (GroupedRows), rows come sorted by those member
    /// columns, and only `storedColumns` can be read.
    func start(ranges: [(partition: Int32, start: Int64, end: Int64)], order: GroupedOrder?, filters: [MemberFilter],
               keyFilter: KeyFilter? = nil, memberRanges: [MemberRange] = [], membersOnly: Bool = false, db: OpaquePointer?) throws {
        stop()
        self.filters = filters
        let ctx = table.context
        let trusted = ctx.broker.topicConfig(topic)?.requiresJSON == true
        var spec: GroupingSpec?
        if let order {
            spec = GroupingSpec(columns: order.storedColumns, firstMember: GroupedOrder.firstMemberColumn,
                                keySlots: order.keyColumns.map { c in order.storedColumns.firstIndex(of: c)! },
                                descending: order.descending, firstRowOnly: order.firstRowOnly, filters: filters, fold: order.fold,
                                folds: order.folds.map { FoldColumn(function: $0.function, cellSlot: order.storedColumns.firstIndex(of: $0.member)!,
                                                                    column: $0.column, governsKey: $0.governsKey) },
                                rowTimestamps: order.rowTimestamps, exactFilters: order.exactFilters, tests: order.tests,
                                dayColumn: GroupedOrder.firstMemberColumn + Int32(ctx.memberColumns.count) + 1 + Int32(FoldAggregate.slotCount))
        }
        var reader = ChunkReader(context: ctx, topic: topic, ranges: ranges)
        // Blocks whose summaries rule out the key or member equalities are not read at all.
        let skips = try BlockSkips.build(context: ctx, topic: topic, ranges: ranges, keyFilter: keyFilter, memberFilters: filters,
                                         memberRanges: memberRanges)
        ctx.stats.withLock { s in
            s.blocksSummarized += skips.blocksConsidered
            s.segmentsWithoutSummary += skips.segmentsWithoutSummary
        }
        if !skips.byPartition.isEmpty { reader.skips = skips }
        // Grouped chunks (a cold fold's have no rows at all) only for the grouped path below,
        // which needs the connection and its JSON functions; the row path reads rows.
        let grouping = db != nil && ctx.jsonFunctions != nil ? spec : nil
        let pipeline = ScanPipeline(reader: reader, wanted: ctx.wanted, trustedJSON: trusted, grouping: grouping,
                                    membersOnly: membersOnly, filters: filters)
        self.pipeline = pipeline
        let startedMs = monotonicMillis()
        if let spec = grouping, let db, let functions = ctx.jsonFunctions {
            let errors = GroupedRows.ResolveErrors()
            grouped = try GroupedRows(pipeline: pipeline, spec: spec, errors: errors) { chunk, row, id in
                let r = chunk.rows[row]
                let member = ctx.memberColumns[id]
                let key = JSONColumns.isKeyMember(member)
                guard (key ? r.key : r.value) != nil else { return .null }  // ->> of NULL is NULL
                let document = key ? UnsafeRawBufferPointer(start: r.key, count: Int(r.keyCount)) : UnsafeRawBufferPointer(start: r.value, count: Int(r.valueCount))
                do {
                    return try functions.extractCell(db, value: document, path: "$." + JSONColumns.path(member), arena: chunk.arena)
                } catch {
                    // Raised only if SQLite reads this cell (its WHERE may drop the row first).
                    return errors.cell(for: "\(error)")
                }
            }
            grouped?.rowsColumn = GroupedOrder.firstMemberColumn + Int32(ctx.memberColumns.count)
            groupedPosition = 0
            if getenv("STRATA_TRACE_QUERY") != nil {
                let line = "query: grouped \(grouped?.rowCount ?? 0) rows in \(monotonicMillis() - startedMs) ms\n"
                _ = line.withCString { write(2, $0, strlen($0)) }
            }
            pipeline.cancel()
            self.pipeline = nil
            return
        }
        chunk = try pipeline.next() ?? Chunk(slice: nil)
        rowIndex = 0
        if !filters.isEmpty && !eof && !filters.mayMatch(chunk, rowIndex) { try advance() }
    }

    /// Moves to the next row, taking the next chunk when the current one is used up.
    @inline(__always) func advance() throws {
        if grouped != nil {
            groupedPosition += 1
            return
        }
        repeat {
            rowIndex += 1
            if rowIndex >= chunk.rows.count, let pipeline {
                chunk = try pipeline.next() ?? Chunk(slice: nil)
                rowIndex = 0
            }
        } while !filters.isEmpty && rowIndex < chunk.rows.count && !filters.mayMatch(chunk, rowIndex)
    }

    func stop() {
        pipeline?.cancel()
        pipeline = nil
        grouped = nil
        chunk = Chunk(slice: nil)
        rowIndex = 0
    }

    /// The wanted member `id` of the current row if the scan thread extracted it and `value`
    /// is byte for byte the current row's value (so the answer is the same whoever asks).
    @inline(__always) func precomputed(_ value: UnsafeRawPointer, _ count: Int, _ id: Int) -> FieldValue? {
        guard grouped == nil, rowIndex < chunk.rows.count, id < chunk.fields.count else { return nil }
        let row = chunk.rows[rowIndex]
        guard Int(row.valueCount) == count, let v = row.value, v == value || memcmp(v, value, count) == 0 else { return nil }
        return chunk.fields[id][rowIndex]
    }
}

/// SQL over the topics of a data directory: every topic is a virtual table named after it.
/// The connection is in memory and cannot attach files; the tables have no write methods, so a
/// query can never modify the log.
public final class QueryEngine {
    let db: OpaquePointer
    let context: QueryContext
    let jsonFunctions: JSONFunctionState

    /// `jsonMembers` become hidden columns of every topic table (see JSONColumns); pass
    /// `QueryEngine.jsonMembers(in: sql)` for the statements you will run. `readCommitted` (the
    /// default) sees what a read_committed consumer sees: no records of aborted or open transactions.
    public init(broker: Broker, sinceMs: Int64? = nil, untilMs: Int64? = nil, jsonMembers: [String] = [], readCommitted: Bool = true) throws {
        context = try QueryContext(broker: broker, sinceMs: sinceMs, untilMs: untilMs,
                                   memberColumns: Array(jsonMembers.prefix(WantedFields.limit)), readCommitted: readCommitted)
        var handle: OpaquePointer?
        guard sqlite3_open_v2(":memory:", &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK, let handle else {
            throw QueryError("cannot open SQLite")
        }
        db = handle
        sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0)
        // Sorts and GROUP BY stay in memory: nothing of a query is written to disk.
        _ = sqlite3_exec(db, "PRAGMA temp_store=MEMORY", nil, nil, nil)
        let aux = Unmanaged.passRetained(context).toOpaque()
        let rc = sqlite3_create_module_v2(db, "events", eventsModule, aux) { p in Unmanaged<QueryContext>.fromOpaque(p!).release() }
        guard rc == SQLITE_OK else {
            sqlite3_close_v2(db)
            throw QueryError("cannot register the events module")
        }
        do {
            jsonFunctions = try registerJSONFunctions(db, context: context)
            context.jsonFunctions = jsonFunctions
            context.db = db
            try DistinctCount.register(db)
        } catch {
            sqlite3_close_v2(db)
            throw error
        }
        for topic in broker.topicNames() {
            let quoted = "\"" + topic.replacingOccurrences("\"", "\"\"") + "\""
            try exec("CREATE VIRTUAL TABLE temp.\(quoted) USING events(\(quoted))")
        }
    }

    deinit {
        jsonFunctions.close()
        sqlite3_close_v2(db)
    }

    public var stats: ScanStats { context.stats.withLock { $0 } }

    /// Reads the running totals from any thread (for a progress line while a statement runs).
    public var statsReader: @Sendable () -> ScanStats {
        let context = self.context
        return { context.stats.withLock { $0 } }
    }

    /// The top-level JSON members `sql` reads with `value ->> '…'`.
    public static func jsonMembers(in sql: String) -> [String] { JSONColumns.members(in: sql) }

    func exec(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        if sqlite3_exec(db, sql, nil, nil, &err) != SQLITE_OK {
            let message = err.map { String(cString: $0) } ?? "error"
            sqlite3_free(err)
            throw QueryError(message)
        }
    }

    /// Runs every statement of `sql`; calls `header` with each statement's column names and `row`
    /// with each row (NULL as nil).
    public func run(_ sql: String, header: ([String]) -> Void, row: ([String?]) -> Void) throws {
        var utf8 = Array(sql.utf8CString)
        try utf8.withUnsafeMutableBufferPointer { buffer in
            var tail: UnsafePointer<CChar>? = UnsafePointer(buffer.baseAddress!)
            while let start = tail, start.pointee != 0 {
                var stmt: OpaquePointer?
                var next: UnsafePointer<CChar>?
                guard sqlite3_prepare_v2(db, start, -1, &stmt, &next) == SQLITE_OK else {
                    throw QueryError(String(cString: sqlite3_errmsg(db)))
                }
                tail = next
                guard var stmt else { continue }  // whitespace or a comment
                // Column names as written (a rewritten `value->>'$.x'` keeps its name).
                let names = (0..<Int(sqlite3_column_count(stmt))).map { String(cString: sqlite3_column_name(stmt, Int32($0))) }
                // The same statement reading member columns, when it means the same thing.
                if let end = next {
                    let text = String(decoding: UnsafeRawBufferPointer(start: start, count: end - start), as: UTF8.self)
                    let rewritten = context.memberColumns.isEmpty ? nil : JSONColumns.rewrite(text, declared: Set(context.memberColumns))
                    // Folded aggregates first (their plan exists only when the fold is exact; also
                    // a bare `count(*)`), then member columns alone.
                    var candidates: [(sql: String, folds: [FoldAggregate], grouped: Bool, elsewhere: Set<String>)] = []
                    if let folded = JSONColumns.fold(rewritten ?? text, members: context.memberColumns) {
                        candidates.append((folded.sql, folded.aggregates, folded.grouped, folded.filteredElsewhere))
                    }
                    if let rewritten { candidates.append((rewritten, [], true, [])) }
                    for (candidate, folds, grouped, elsewhere) in candidates {
                        var faster: OpaquePointer?
                        context.pendingFolds = folds
                        context.pendingFoldGrouped = grouped
                        context.pendingFoldFilteredElsewhere = elsewhere
                        defer {
                            context.pendingFolds = []
                            context.pendingFoldGrouped = true
                            context.pendingFoldFilteredElsewhere = []
                        }
                        if sqlite3_prepare_v2(db, candidate, -1, &faster, nil) == SQLITE_OK, let faster {
                            sqlite3_finalize(stmt)
                            stmt = faster
                            break
                        }
                        sqlite3_finalize(faster)
                    }
                }
                defer { sqlite3_finalize(stmt) }
                guard sqlite3_stmt_readonly(stmt) != 0 else { throw QueryError("queries are read-only: the log cannot be modified") }
                let columns = Int(sqlite3_column_count(stmt))
                header(columns == names.count ? names : (0..<columns).map { String(cString: sqlite3_column_name(stmt, Int32($0))) })
                while true {
                    let rc = sqlite3_step(stmt)
                    if rc == SQLITE_DONE { break }
                    guard rc == SQLITE_ROW else { throw QueryError(String(cString: sqlite3_errmsg(db))) }
                    row((0..<columns).map { i in
                        sqlite3_column_type(stmt, Int32(i)) == SQLITE_NULL ? nil : sqlite3_column_text(stmt, Int32(i)).map { String(cString: $0) }
                    })
                }
            }
        }
    }

    /// SQLite's plan for `sql` (EXPLAIN QUERY PLAN), one line per step.
    public func plan(_ sql: String) throws -> [String] {
        var lines: [String] = []
        try run("EXPLAIN QUERY PLAN " + sql, header: { _ in }, row: { lines.append($0.last.flatMap { $0 } ?? "") })
        return lines
    }
}

extension String {
    func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
