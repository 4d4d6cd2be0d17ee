import StrataCore
import CSQLite

// `->>` is parsed by SQLite into a call of the two-argument function named "->>", so an
// application function of that name replaces the built-in one for this connection. Ours answers
// top-level members of objects from JSONField's byte scan and hands everything else (nested
// paths, escapes, arrays, malformed values) to SQLite's json_extract, which has the same result
// rules as ->> for every path, so results never depend on which path served them.

/// The parsed right-hand side of `->>`, cached per statement through sqlite3_set_auxdata.
final class JSONPathArgument {
    /// The scanner key for a path the fast path follows (`$.name`, `name`, `$.a.b[0]`), nil for anything else.
    let topLevelKey: [UInt8]?
    /// The path in json_extract's syntax.
    let path: String
    /// The key's id among the members the scan threads extract, once registered.
    var keyId: Int?
    /// Scans values for `topLevelKey` (one per path, reused for every row of the statement).
    let scanner: JSONMemberScanner?
    init(topLevelKey: [UInt8]?, path: String) {
        self.topLevelKey = topLevelKey
        self.path = path
        scanner = topLevelKey.map { JSONMemberScanner(keys: [$0], stopEarly: false) }
    }

    static func parse(_ value: OpaquePointer?) -> JSONPathArgument? {
        switch sqlite3_value_type(value) {
        case SQLITE_INTEGER:
            return JSONPathArgument(topLevelKey: nil, path: "$[\(sqlite3_value_int64(value))]")
        case SQLITE_TEXT:
            let text = String(cString: sqlite3_value_text(value))
            // SQLite: a right operand not starting with '$' is a member label.
            let path = text.hasPrefix("$") ? text : "$." + text
            return JSONPathArgument(topLevelKey: JSONColumns.memberName(text).map(JSONColumns.scanKey), path: path)
        default:
            return nil
        }
    }
}

/// Per-connection state of the JSON functions: the statement the fallback runs.
final class JSONFunctionState {
    let context: QueryContext
    var fallback: OpaquePointer?
    init(context: QueryContext) { self.context = context }
    /// Called by the engine before it closes the connection.
    func close() {
        sqlite3_finalize(fallback)
        fallback = nil
    }
}

private let destroyPath: @convention(c) (UnsafeMutableRawPointer?) -> Void = { p in
    Unmanaged<JSONPathArgument>.fromOpaque(p!).release()
}

private let arrowText: @convention(c) (OpaquePointer?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Void = { ctx, _, argv in
    let json = argv![0]
    let pathValue = argv![1]
    guard sqlite3_value_type(json) != SQLITE_NULL, sqlite3_value_type(pathValue) != SQLITE_NULL else {
        sqlite3_result_null(ctx)
        return
    }
    let state = Unmanaged<JSONFunctionState>.fromOpaque(sqlite3_user_data(ctx)).takeUnretainedValue()
    let path: JSONPathArgument
    if let cached = sqlite3_get_auxdata(ctx, 1) {
        path = Unmanaged<JSONPathArgument>.fromOpaque(cached).takeUnretainedValue()
    } else {
        guard let parsed = JSONPathArgument.parse(pathValue) else {
            sqlite3_result_error(ctx, "the right side of ->> must be a JSON path, a member name or an array index", -1)
            return
        }
        path = parsed
        if let key = parsed.topLevelKey { parsed.keyId = state.context.wanted.id(of: key) }
        sqlite3_set_auxdata(ctx, 1, Unmanaged.passRetained(parsed).toOpaque(), destroyPath)
    }
    if let scanner = path.scanner, sqlite3_value_type(json) == SQLITE_TEXT, let text = sqlite3_value_text(json) {
        let count = Int(sqlite3_value_bytes(json))
        if let id = path.keyId, let v = state.context.precomputed(text, count, id), resultField(ctx, v) { return }
        if resultField(ctx, scanner.member(in: UnsafeRawBufferPointer(start: text, count: count))) { return }
    }
    state.extractWithSQLite(ctx, path: path.path, preview: { sqlite3_value_text(json).map { String(cString: $0) } ?? "" }) {
        sqlite3_bind_value($0, 1, json)
    }
}

/// Sets a member found by the fast path as the result; false for `.fallback` (nothing set).
@inline(__always) func resultField(_ ctx: OpaquePointer?, _ v: FieldValue) -> Bool {
    switch v {
    case .text(let p, let n):
        sqlite3_result_text(ctx, p.assumingMemoryBound(to: CChar.self), n, strata_sqlite_transient())
    case .integer(let i): sqlite3_result_int64(ctx, i)
    case .real(let d): sqlite3_result_double(ctx, d)
    case .null: sqlite3_result_null(ctx)
    case .fallback: return false
    }
    return true
}

extension JSONFunctionState {
    /// json_extract(value, path) as a stored cell; text is copied into `arena`.
    func extractCell(_ db: OpaquePointer, value: UnsafeRawBufferPointer, path: String, arena: Arena) throws -> GroupedRows.Cell {
        if fallback == nil {
            guard sqlite3_prepare_v2(db, "SELECT json_extract(?1, ?2)", -1, &fallback, nil) == SQLITE_OK else {
                throw QueryError(String(cString: sqlite3_errmsg(db)))
            }
        }
        let stmt = fallback
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        sqlite3_bind_text(stmt, 1, value.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(value.count), strata_sqlite_transient())
        sqlite3_bind_text(stmt, 2, path, -1, strata_sqlite_transient())
        guard sqlite3_step(stmt) == SQLITE_ROW else {
            var preview = String(decoding: value, as: UTF8.self)
            if preview.count > 60 { preview = String(preview.prefix(60)) + "…" }
            throw QueryError("->> '\(path)': \(String(cString: sqlite3_errmsg(db))) in value \(jsonQuote(preview))")
        }
        switch sqlite3_column_type(stmt, 0) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(stmt, 0))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(stmt, 0))
        case SQLITE_NULL: return .null
        default:
            let n = Int(sqlite3_column_bytes(stmt, 0))
            let p = sqlite3_column_blob(stmt, 0)
            return .text(arena.copy(UnsafeRawBufferPointer(start: p, count: n)), n)
        }
    }

    /// json_extract(value, path) into `ctx`: the exact answer for whatever the fast path leaves,
    /// including SQLite's error for malformed JSON (with a preview of the value).
    func extractWithSQLite(_ ctx: OpaquePointer?, path: String, preview: () -> String, bindValue: (OpaquePointer?) -> Void) {
        let db = sqlite3_context_db_handle(ctx)
        if fallback == nil {
            guard sqlite3_prepare_v2(db, "SELECT json_extract(?1, ?2)", -1, &fallback, nil) == SQLITE_OK else {
                sqlite3_result_error(ctx, sqlite3_errmsg(db), -1)
                return
            }
        }
        let stmt = fallback
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        bindValue(stmt)
        sqlite3_bind_text(stmt, 2, path, -1, strata_sqlite_transient())
        switch sqlite3_step(stmt) {
        case SQLITE_ROW:
            sqlite3_result_value(ctx, sqlite3_column_value(stmt, 0))
        default:
            let message = String(cString: sqlite3_errmsg(db))
            var preview = preview()
            if preview.count > 60 { preview = String(preview.prefix(60)) + "…" }
            sqlite3_result_error(ctx, "->> '\(path)': \(message) in value \(jsonQuote(preview))", -1)
        }
    }

}

func registerJSONFunctions(_ db: OpaquePointer, context: QueryContext) throws -> JSONFunctionState {
    let state = JSONFunctionState(context: context)
    let rc = sqlite3_create_function_v2(db, "->>", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS,
                                        Unmanaged.passRetained(state).toOpaque(), arrowText, nil, nil) { p in
        Unmanaged<JSONFunctionState>.fromOpaque(p!).release()
    }
    guard rc == SQLITE_OK else { throw QueryError("cannot register ->>: \(String(cString: sqlite3_errmsg(db)))") }
    return state
}
