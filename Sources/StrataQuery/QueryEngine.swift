import CSQLite
import StrataBroker
import StrataCore
import StrataLog
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
}

/// Shared by the virtual tables of one engine.
final class QueryContext: @unchecked Sendable {
    let broker: Broker
    let sinceMs: Int64?
    let untilMs: Int64?
    /// Log end offsets fixed when the engine opened: a query sees one consistent snapshot.
    let endOffsets: [String: Int64]
    let stats = Mutex(ScanStats())
    let segmentsSeen = Mutex(Set<String>())

    init(broker: Broker, sinceMs: Int64?, untilMs: Int64?) throws {
        self.broker = broker
        self.sinceMs = sinceMs
        self.untilMs = untilMs
        var ends: [String: Int64] = [:]
        for topic in broker.topicNames() {
            for p in 0..<(broker.partitionCount(topic) ?? 0) {
                let log = try broker.log(topic: topic, partition: p)
                try log.refresh()
                ends["\(topic)-\(p)"] = log.logEndOffset
            }
        }
        endOffsets = ends
    }
}

final class TableState {
    let context: QueryContext
    let topic: String
    init(context: QueryContext, topic: String) {
        self.context = context
        self.topic = topic
    }
}

/// One decoded row (copied out of the log, so it outlives the batch it came from).
struct Row {
    let partition: Int32
    let offset: Int64
    let timestamp: Int64
    let key: [UInt8]?
    let value: [UInt8]?
    let headers: String?
}

final class CursorState {
    let table: TableState
    var ranges: [(partition: Int32, start: Int64, end: Int64)] = []
    var rangeIndex = 0
    var position: Int64 = 0
    var rows: [Row] = []
    var rowIndex = 0
    init(table: TableState) { self.table = table }

    var eof: Bool { rowIndex >= rows.count && rangeIndex >= ranges.count }
    var current: Row { rows[rowIndex] }

    /// Moves to the next row, reading the next chunk of batches when the current one is used up.
    func advance() throws {
        rowIndex += 1
        while rowIndex >= rows.count && rangeIndex < ranges.count {
            try loadChunk()
        }
    }

    func loadChunk() throws {
        rows.removeAll(keepingCapacity: true)
        rowIndex = 0
        let range = ranges[rangeIndex]
        if position < range.start { position = range.start }
        guard position < range.end else {
            rangeIndex += 1
            position = 0
            return
        }
        let ctx = table.context
        let log = try ctx.broker.log(topic: table.topic, partition: range.partition)
        let result = try log.read(from: position, maxBytes: 1 << 20)
        guard let slice = result.slice else {
            rangeIndex += 1
            position = 0
            return
        }
        let key = "\(table.topic)-\(range.partition)@\(slice.segmentBaseOffset)"
        let firstVisit = ctx.segmentsSeen.withLock { $0.insert(key).inserted }
        ctx.stats.withLock { s in
            s.bytesRead += slice.count
            if firstVisit { s.segmentsRead += 1 }
        }
        let from = position
        var scanned = 0
        try slice.forEachBatch { batch in
            try batch.forEachRecord { r in
                guard r.offset >= from, r.offset < range.end else { return }
                scanned += 1
                var headers: String?
                if !r.headers.isEmpty {
                    headers = "{" + r.headers.map { h in
                        "\(jsonQuote(String(decoding: h.key, as: UTF8.self))):\(h.value.map { jsonQuote(String(decoding: $0, as: UTF8.self)) } ?? "null")"
                    }.joined(separator: ",") + "}"
                }
                rows.append(Row(partition: range.partition, offset: r.offset, timestamp: r.timestamp,
                                key: r.key.map(Array.init), value: r.value.map(Array.init), headers: headers))
            }
        }
        ctx.stats.withLock { $0.recordsScanned += scanned }
        position = max(result.nextOffset, position + 1)
        if position >= range.end {
            rangeIndex += 1
            position = 0
        }
    }
}

/// A JSON string literal for `s` (control characters escaped as \u00XX).
public func jsonQuote(_ s: String) -> String {
    var out = "\""
    for c in s.unicodeScalars {
        switch c {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if c.value < 0x20 { out += String(format4(c.value)) } else { out.unicodeScalars.append(c) }
        }
    }
    return out + "\""
}

private func format4(_ v: UInt32) -> String {
    let hex = Array("0123456789abcdef")
    return "\\u00" + String(hex[Int(v >> 4)]) + String(hex[Int(v & 0xF)])
}

/// SQL over the topics of a data directory: every topic is a virtual table named after it.
/// The connection is in memory and cannot attach files; the tables have no write methods, so a
/// query can never modify the log.
public final class QueryEngine {
    let db: OpaquePointer
    let context: QueryContext

    public init(broker: Broker, sinceMs: Int64? = nil, untilMs: Int64? = nil) throws {
        context = try QueryContext(broker: broker, sinceMs: sinceMs, untilMs: untilMs)
        var handle: OpaquePointer?
        guard sqlite3_open_v2(":memory:", &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK, let handle else {
            throw QueryError("cannot open SQLite")
        }
        db = handle
        sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0)
        let aux = Unmanaged.passRetained(context).toOpaque()
        let rc = sqlite3_create_module_v2(db, "events", eventsModule, aux) { p in Unmanaged<QueryContext>.fromOpaque(p!).release() }
        guard rc == SQLITE_OK else { throw QueryError("cannot register the events module") }
        for topic in broker.topicNames() {
            let quoted = "\"" + topic.replacingOccurrences("\"", "\"\"") + "\""
            try exec("CREATE VIRTUAL TABLE temp.\(quoted) USING events(\(quoted))")
        }
    }

    deinit { sqlite3_close_v2(db) }

    public var stats: ScanStats { context.stats.withLock { $0 } }

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
                guard let stmt else { continue }  // whitespace or a comment
                defer { sqlite3_finalize(stmt) }
                guard sqlite3_stmt_readonly(stmt) != 0 else { throw QueryError("queries are read-only: the log cannot be modified") }
                let columns = Int(sqlite3_column_count(stmt))
                header((0..<columns).map { String(cString: sqlite3_column_name(stmt, Int32($0))) })
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
