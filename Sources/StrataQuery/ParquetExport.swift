import CStrataScan
import Dispatch
import Glibc
import StrataBroker
import StrataCore
import StrataLog
import StrataParquet
import Synchronization

/// `strata export`: a topic's records as Parquet files, one or more per partition, so any Parquet
/// reader (DuckDB, Spark, Trino, pyarrow) takes over when analytics outgrows one machine.
///
/// Columns: `partition` (INT32), `offset` (INT64), `timestamp` (INT64, TIMESTAMP millis UTC),
/// `key`, `value` (the raw bytes: STRING when every one in the file is UTF-8, else binary),
/// `headers` (the JSON text strata query shows), then one column per top-level member of the JSON
/// values, typed per file from what the file holds: only integers → INT64, integers and reals
/// → DOUBLE, booleans → BOOLEAN, strings → STRING (escapes decoded), objects/arrays → JSON text,
/// anything mixed → STRING (strings decoded, other values as their JSON text). A missing member,
/// a JSON null, a value that is not a JSON object and a tombstone are nulls.
/// Records are those strata query reads: committed (aborted transactions and markers left out)
/// up to the last stable offset, from the first offset at or after `since` to the first at or
/// after `until` as the time index answers.
public struct ParquetExport {
    public struct Options: Sendable {
        public var topic: String
        public var outputDirectory: String
        public var partitions: [Int32]?
        public var sinceMs: Int64?
        public var untilMs: Int64?
        /// A file ends at this many rows or this many bytes of keys and values, whichever first.
        public var maxRowsPerFile = 1_000_000
        public var maxBytesPerFile = 256 << 20
        /// Member columns per file at most; further members stay in `value` only.
        public var maxMemberColumns = 1000
        public var readCommitted = true
        /// The raw `value` column (off: members only, about a third of the size for JSON events;
        /// values that are not JSON objects are then not exported).
        public var includeValue = true
        /// Continue after the files already in the output directory: each partition starts after
        /// the last offset its existing files' names cover (daily exports of new records).
        public var resume = false

        public init(topic: String, outputDirectory: String) {
            self.topic = topic
            self.outputDirectory = outputDirectory
        }
    }

    public struct ExportedFile: Sendable {
        public let name: String
        public let partition: Int32
        public let firstOffset: Int64
        public let lastOffset: Int64
        public let rows: Int
        public let bytes: Int
        /// Bytes of keys and values exported into it.
        public let recordBytes: Int
        public let memberColumns: Int
        /// Distinct member names past `maxMemberColumns`, left in `value` only.
        public let membersLeftOut: Int
    }

    /// The fixed columns, in order; a member with one of these names (any case: DuckDB and Spark
    /// resolve names case-insensitively) gets the prefix `value_`.
    public static let fixedColumns = ["partition", "offset", "timestamp", "key", "value", "headers"]

    let broker: Broker
    let options: Options

    public init(broker: Broker, options: Options) {
        self.broker = broker
        self.options = options
    }

    /// Writes the files (each atomically: a crash leaves whole files or none), calling `wrote`
    /// after each; returns them all.
    public func run(wrote: (ExportedFile) -> Void = { _ in }) throws -> [ExportedFile] {
        let topic = options.topic
        guard let count = broker.partitionCount(topic) else { throw QueryError("unknown topic '\(topic)'") }
        let partitions = options.partitions ?? Array(0..<count)
        for p in partitions where p < 0 || p >= count {
            throw QueryError("topic '\(topic)' has no partition \(p) (it has \(count))")
        }
        guard options.maxRowsPerFile > 0, options.maxBytesPerFile > 0 else { throw QueryError("file limits must be positive") }
        do {
            try FileIO.mkdirs(options.outputDirectory, mode: 0o755)
        } catch {
            throw QueryError("cannot create \(options.outputDirectory): \(error)")
        }
        let context = try QueryContext(broker: broker, sinceMs: options.sinceMs, untilMs: options.untilMs, memberColumns: [],
                                       readCommitted: options.readCommitted, topics: [topic])
        // One file is encoded and written (zstd, the slow part) on another thread while the next
        // one's columns are extracted here: at most two files' columns in memory.
        let writer = BackgroundWriter()
        var files: [ExportedFile] = []
        func submit(_ rows: FileRows, partition: Int32) throws {
            let file = columns(rows, partition: partition)
            if let done = try writer.submit({ try Self.encodeAndWrite(file) }) {
                files.append(done)
                wrote(done)
            }
        }
        defer { _ = try? writer.finish() }
        for partition in partitions {
            let log = try broker.log(topic: topic, partition: partition)
            var start = log.logStartOffset
            var end = context.endOffsets["\(topic)-\(partition)"] ?? log.logEndOffset
            if let since = options.sinceMs { start = max(start, try broker.offset(topic: topic, partition: partition, forTimestamp: since)) }
            if let until = options.untilMs { end = min(end, try broker.offset(topic: topic, partition: partition, forTimestamp: until)) }
            if options.resume, let last = try Self.lastExportedOffset(in: options.outputDirectory, topic: topic, partition: partition) {
                // (A name claiming the largest offset leaves nothing after it.)
                start = last == .max ? end : max(start, last + 1)
            }
            guard start < end else { continue }
            var reader = ChunkReader(context: context, topic: topic, ranges: [(partition, start, end)])
            var pending = FileRows()
            while let chunk = try reader.next() {
                var row = 0
                while row < chunk.rows.count {
                    let take = min(chunk.rows.count - row, options.maxRowsPerFile - pending.count)
                    pending.add(chunk, rows: row..<(row + take))
                    row += take
                    if pending.count >= options.maxRowsPerFile || pending.recordBytes >= options.maxBytesPerFile {
                        try submit(pending, partition: partition)
                        pending = FileRows()
                    }
                }
            }
            if pending.count > 0 { try submit(pending, partition: partition) }
        }
        if let done = try writer.finish() {
            files.append(done)
            wrote(done)
        }
        return files
    }

    /// The rows of one file: ranges of chunks, which keep their mappings and arenas alive.
    struct FileRows {
        var parts: [(chunk: Chunk, rows: Range<Int>)] = []
        var count = 0
        var recordBytes = 0
        var keyBytes = 0

        mutating func add(_ chunk: Chunk, rows: Range<Int>) {
            guard !rows.isEmpty else { return }
            parts.append((chunk, rows))
            count += rows.count
            for r in rows {
                let keyCount = Int(max(0, chunk.rows[r].keyCount))
                keyBytes += keyCount
                recordBytes += keyCount + Int(max(0, chunk.rows[r].valueCount))
            }
        }

        func forEach(_ body: (RowRef, Chunk) throws -> Void) rethrows {
            for part in parts {
                for r in part.rows { try body(part.chunk.rows[r], part.chunk) }
            }
        }
    }

    /// A file's columns, ready to encode.
    struct PendingFile: Sendable {
        let directory: String
        let name: String
        let partition: Int32
        let first: Int64
        let last: Int64
        let rows: Int
        let recordBytes: Int
        let columns: [ParquetColumnBuilder]
        let memberColumns: Int
        let membersLeftOut: Int
        let metadata: [(key: String, value: String)]
    }

    private func columns(_ rows: FileRows, partition: Int32) -> PendingFile {
        var first: Int64 = .max, last: Int64 = .min
        var partitionColumn = ParquetColumnBuilder(name: "partition", type: .int32, optional: false)
        var offsetColumn = ParquetColumnBuilder(name: "offset", type: .int64, optional: false)
        var timestampColumn = ParquetColumnBuilder(name: "timestamp", type: .int64, logicalType: .timestampMillisUTC, optional: false)
        var keyColumn = ParquetColumnBuilder(name: "key", type: .byteArray, logicalType: .string, optional: true)
        var valueColumn = ParquetColumnBuilder(name: "value", type: .byteArray, logicalType: .string, optional: true)
        var headersColumn = ParquetColumnBuilder(name: "headers", type: .byteArray, logicalType: .string, optional: true)
        partitionColumn.reserve(rows: rows.count)
        offsetColumn.reserve(rows: rows.count)
        timestampColumn.reserve(rows: rows.count)
        keyColumn.reserve(rows: rows.count, bytes: rows.keyBytes)
        if options.includeValue { valueColumn.reserve(rows: rows.count, bytes: rows.recordBytes - rows.keyBytes) }
        headersColumn.reserve(rows: rows.count)
        var members = MemberColumns(limit: options.maxMemberColumns)
        // First pass: the members and the kinds of their values, to type each member column.
        rows.forEach { row, _ in
            guard let value = row.value, row.valueCount >= 0 else { return }
            members.survey(UnsafeRawBufferPointer(start: value, count: Int(row.valueCount)))
        }
        var memberColumns = members.makeColumns(reservingRows: rows.count)
        var keysAreText = true, valuesAreText = true
        var rowIndex = 0
        rows.forEach { row, chunk in
            first = min(first, row.offset)
            last = max(last, row.offset)
            partitionColumn.append(row.partition)
            offsetColumn.append(row.offset)
            timestampColumn.append(row.timestamp)
            append(row.key, row.keyCount, to: &keyColumn, text: &keysAreText)
            let valueIsText: Bool
            if options.includeValue {
                valueIsText = append(row.value, row.valueCount, to: &valueColumn, text: &valuesAreText)
            } else {
                valueIsText = row.value.map { strata_utf8_valid($0.assumingMemoryBound(to: UInt8.self), Int(row.valueCount)) != 0 } ?? false
            }
            if row.headersIndex >= 0 {
                var h = chunk.headers[Int(row.headersIndex)]
                h.withUTF8 { headersColumn.append(bytes: UnsafeRawBufferPointer($0)) }
            } else {
                headersColumn.appendNull()
            }
            // Members only of UTF-8 values: a Parquet string must be UTF-8.
            if let value = row.value, row.valueCount >= 0, valueIsText {
                members.extract(UnsafeRawBufferPointer(start: value, count: Int(row.valueCount)), row: rowIndex, into: &memberColumns)
            }
            rowIndex += 1
        }
        for i in memberColumns.indices { memberColumns[i].padNulls(to: rows.count) }
        if !keysAreText { keyColumn.logicalType = .none }
        if !valuesAreText { valueColumn.logicalType = .none }
        let columns = [partitionColumn, offsetColumn, timestampColumn, keyColumn] + (options.includeValue ? [valueColumn] : []) + [headersColumn]
            + memberColumns
        let metadata: [(key: String, value: String)] = [
            ("strata.topic", options.topic), ("strata.partition", "\(partition)"),
            ("strata.first_offset", "\(first)"), ("strata.last_offset", "\(last)"),
        ]
        return PendingFile(directory: options.outputDirectory, name: Self.fileName(topic: options.topic, partition: partition, first: first, last: last),
                           partition: partition, first: first, last: last, rows: rows.count, recordBytes: rows.recordBytes, columns: columns,
                           memberColumns: memberColumns.count, membersLeftOut: members.leftOut, metadata: metadata)
    }

    static func encodeAndWrite(_ f: PendingFile) throws -> ExportedFile {
        let bytes = try ParquetFile.encode(rowCount: f.rows, columns: f.columns, metadata: f.metadata, createdBy: "strata export")
        do {
            try FileIO.replaceAtomically(directory: f.directory, name: f.name, with: bytes, mode: 0o644)
        } catch {
            throw QueryError("cannot write \(f.directory)/\(f.name): \(error)")
        }
        return ExportedFile(name: f.name, partition: f.partition, firstOffset: f.first, lastOffset: f.last, rows: f.rows, bytes: bytes.count,
                            recordBytes: f.recordBytes, memberColumns: f.memberColumns, membersLeftOut: f.membersLeftOut)
    }

    /// Appends a key or value (nil → null); returns whether it is UTF-8, clearing `text` if not.
    @discardableResult
    private func append(_ bytes: UnsafeRawPointer?, _ count: Int32, to column: inout ParquetColumnBuilder, text: inout Bool) -> Bool {
        guard let bytes, count >= 0 else {
            column.appendNull()
            return false
        }
        let isText = strata_utf8_valid(bytes.assumingMemoryBound(to: UInt8.self), Int(count)) != 0
        if !isText { text = false }
        column.append(bytes: UnsafeRawBufferPointer(start: bytes, count: Int(count)))
        return isText
    }
}

/// Runs one job at a time on a background thread: `submit` waits for the previous job and hands
/// back its result, so results come in submission order.
final class BackgroundWriter: Sendable {
    private let queue = DispatchQueue(label: "strata.export.writer")
    private let result = Mutex<Result<ParquetExport.ExportedFile, Error>?>(nil)
    private let group = DispatchGroup()

    /// The previous job's result (nil for the first), after starting `job`.
    func submit(_ job: @escaping @Sendable () throws -> ParquetExport.ExportedFile) throws -> ParquetExport.ExportedFile? {
        let previous = try finish()
        group.enter()
        queue.async {
            let r = Result { try job() }
            self.result.withLock { $0 = r }
            self.group.leave()
        }
        return previous
    }

    /// Waits for the job in flight; its result, or nil when there was none.
    func finish() throws -> ParquetExport.ExportedFile? {
        group.wait()
        return try result.withLock { r in
            defer { r = nil }
            return try r?.get()
        }
    }
}

extension ParquetExport {
    /// The largest last offset named by `<topic>-<partition>-<first>-<last>.parquet` files in
    /// `directory` (nil when there are none). Other files, and names that only look alike (another
    /// topic whose name ends in `-<partition>`), do not count.
    static func lastExportedOffset(in directory: String, topic: String, partition: Int32) throws -> Int64? {
        guard FileIO.exists(directory) else { return nil }
        let prefix = "\(topic)-\(partition)-"
        var last: Int64?
        for name in try FileIO.listDirectory(directory) where name.hasPrefix(prefix) && name.hasSuffix(".parquet") {
            let middle = name.dropFirst(prefix.count).dropLast(".parquet".count)
            let parts = middle.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, parts.allSatisfy({ $0.count == 20 && $0.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }),
                  let first = Int64(parts[0]), let l = Int64(parts[1]), first <= l else { continue }
            last = max(last ?? l, l)
        }
        return last
    }

    /// `<topic>-<partition>-<first offset>-<last offset>.parquet`, offsets zero-padded to 20
    /// digits so names sort in log order.
    static func fileName(topic: String, partition: Int32, first: Int64, last: Int64) -> String {
        func pad(_ v: Int64) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, 20 - s.count)) + s
        }
        return "\(topic)-\(partition)-\(pad(first))-\(pad(last)).parquet"
    }
}

/// The member columns of one file: found and typed in a first pass over its values (`survey`),
/// filled in a second (`extract`).
struct MemberColumns {
    /// What values of a member were seen (bits by STRATA_MEMBER_* kind).
    struct Member {
        let name: String
        let rawKey: [UInt8]
        var kinds: UInt32 = 0
        /// Bytes of its values' JSON text (room for its column).
        var bytes = 0
        /// Every string so far is a `YYYY-MM-DDTHH:MM:SS.sssZ` time (then the column is a TIMESTAMP).
        var allTimestamps = true
    }

    let limit: Int
    private(set) var members: [Member] = []
    private var byRawKey: [[UInt8]: Int] = [:]
    /// Distinct names past the limit.
    private(set) var leftOut = 0
    private var leftOutKeys: Set<[UInt8]> = []
    /// Column of the member at each position of the previous object: objects of one topic
    /// mostly share a shape, so a name is compared once instead of hashed.
    private var lastAtPosition: [Int] = []
    private var found = UnsafeMutableBufferPointer<strata_json_member>.allocate(capacity: 64)
    /// Per column, the last row that set it (a duplicate member: the first one counts, as in SQLite).
    private var lastRow: [Int] = []
    private var physical: [ParquetPhysicalType] = []
    private var isTimestamp: [Bool] = []

    init(limit: Int) { self.limit = limit }

    /// Top-level members of `json`, or nil when it is not a strict JSON object.
    private mutating func walk(_ json: UnsafeRawBufferPointer) -> Int? {
        guard let base = json.baseAddress else { return nil }
        var n = Int(strata_json_top_members(base.assumingMemoryBound(to: UInt8.self), json.count, found.baseAddress, Int32(found.count)))
        if n > found.count {
            found.deallocate()
            found = .allocate(capacity: n)
            n = Int(strata_json_top_members(base.assumingMemoryBound(to: UInt8.self), json.count, found.baseAddress, Int32(found.count)))
        }
        return n < 0 ? nil : n
    }

    /// The column of member `i` of the last walked object, registering it when `register`.
    private mutating func column(_ i: Int, in json: UnsafeRawBufferPointer, register: Bool) -> Int? {
        let m = found[i]
        let key = UnsafeRawBufferPointer(rebasing: json[Int(m.key_start)..<Int(m.key_start + m.key_length)])
        if i < lastAtPosition.count {
            let c = lastAtPosition[i]
            if c >= 0, members[c].rawKey.count == key.count,
               key.isEmpty || members[c].rawKey.withUnsafeBytes({ memcmp($0.baseAddress!, key.baseAddress!, key.count) == 0 }) {
                return c
            }
        }
        let raw = Array(key)
        var c = byRawKey[raw]
        if c == nil, register, !leftOutKeys.contains(raw) {
            if members.count >= limit {
                leftOutKeys.insert(raw)
                leftOut += 1
            } else if let name = Self.decodeName(raw, escaped: m.key_escaped != 0) {
                c = members.count
                members.append(Member(name: name, rawKey: raw))
                byRawKey[raw] = c
            }
        }
        while lastAtPosition.count <= i { lastAtPosition.append(-1) }
        lastAtPosition[i] = c ?? -1
        return c
    }

    static func decodeName(_ raw: [UInt8], escaped: Bool) -> String? {
        guard escaped else { return String(decoding: raw, as: UTF8.self) }
        var out = [UInt8](repeating: 0, count: raw.count)
        let n = raw.withUnsafeBufferPointer { r in out.withUnsafeMutableBufferPointer { strata_json_unescape_lossy(r.baseAddress, r.count, $0.baseAddress) } }
        return n < 0 ? nil : String(decoding: out[0..<Int(n)], as: UTF8.self)
    }

    /// Objects surveyed so far, and per member the last one that had it: a duplicate member
    /// does not count (its first occurrence is the value, as SQLite reads it).
    private var surveyed = 0
    private var lastSurveyed: [Int] = []

    mutating func survey(_ json: UnsafeRawBufferPointer) {
        guard strata_utf8_valid(json.baseAddress?.assumingMemoryBound(to: UInt8.self), json.count) != 0, let n = walk(json) else { return }
        surveyed += 1
        for i in 0..<n {
            guard let c = column(i, in: json, register: true) else { continue }
            while lastSurveyed.count <= c { lastSurveyed.append(0) }
            guard lastSurveyed[c] != surveyed else { continue }
            lastSurveyed[c] = surveyed
            let kind = found[i].kind
            members[c].kinds |= 1 << UInt32(kind)
            members[c].bytes += Int(found[i].value_length)
            if members[c].allTimestamps && kind == Int32(STRATA_MEMBER_TEXT) {
                let content = UnsafeRawBufferPointer(rebasing: json[Int(found[i].value_start + 1)..<Int(found[i].value_start + found[i].value_length - 1)])
                if CivilDate.parseMillisZ(content) == nil { members[c].allTimestamps = false }
            }
        }
    }

    /// Column builders for the members surveyed, named and typed; fixes how `extract` fills them.
    mutating func makeColumns(reservingRows rows: Int) -> [ParquetColumnBuilder] {
        var used = Set(ParquetExport.fixedColumns)
        var columns: [ParquetColumnBuilder] = []
        lastRow = Array(repeating: -1, count: members.count)
        for m in members {
            var name = m.name
            while used.contains(name.lowercased()) { name = "value_" + name }
            used.insert(name.lowercased())
            let kinds = m.kinds & ~(1 << UInt32(STRATA_MEMBER_NULL))
            let integer: UInt32 = 1 << UInt32(STRATA_MEMBER_INTEGER)
            let number = integer | 1 << UInt32(STRATA_MEMBER_REAL)
            let boolean: UInt32 = 1 << UInt32(STRATA_MEMBER_TRUE) | 1 << UInt32(STRATA_MEMBER_FALSE)
            let nested: UInt32 = 1 << UInt32(STRATA_MEMBER_OBJECT) | 1 << UInt32(STRATA_MEMBER_ARRAY)
            var c: ParquetColumnBuilder
            var timestamps = false
            if kinds == 1 << UInt32(STRATA_MEMBER_TEXT) && m.allTimestamps {
                // Times as JavaScript's toISOString writes them (UTC, milliseconds): a TIMESTAMP
                // column; this spelling is the only one that maps back to each value exactly.
                c = ParquetColumnBuilder(name: name, type: .int64, logicalType: .timestampMillisUTC, optional: true)
                timestamps = true
            } else if kinds != 0 && kinds & ~integer == 0 {
                c = ParquetColumnBuilder(name: name, type: .int64, optional: true)
            } else if kinds != 0 && kinds & ~number == 0 {
                c = ParquetColumnBuilder(name: name, type: .double, optional: true)
            } else if kinds != 0 && kinds & ~boolean == 0 {
                c = ParquetColumnBuilder(name: name, type: .boolean, optional: true)
            } else if kinds != 0 && kinds & ~nested == 0 {
                c = ParquetColumnBuilder(name: name, type: .byteArray, logicalType: .json, optional: true)
            } else {
                // Strings, mixed kinds, and members that were only ever null.
                c = ParquetColumnBuilder(name: name, type: .byteArray, logicalType: .string, optional: true)
            }
            c.reserve(rows: rows, bytes: m.bytes)
            physical.append(c.type)
            isTimestamp.append(timestamps)
            columns.append(c)
        }
        return columns
    }

    /// Appends row `row`'s members from `json` (nulls are padded lazily, by row number).
    mutating func extract(_ json: UnsafeRawBufferPointer, row: Int, into columns: inout [ParquetColumnBuilder]) {
        guard let n = walk(json), let base = json.baseAddress else { return }
        for i in 0..<n {
            guard let c = column(i, in: json, register: false), lastRow[c] != row else { continue }
            lastRow[c] = row
            let m = found[i]
            let kind = Int(m.kind)
            columns[c].padNulls(to: row)
            if kind == Int(STRATA_MEMBER_NULL) { continue }
            let rawValue = UnsafeRawBufferPointer(start: base + Int(m.value_start), count: Int(m.value_length))
            switch physical[c] {
            case .int64 where isTimestamp[c]:
                let content = UnsafeRawBufferPointer(rebasing: rawValue[1..<(rawValue.count - 1)])
                if let ms = CivilDate.parseMillisZ(content) { columns[c].append(ms) }
            case .int64:
                columns[c].append(m.integer)
            case .double:
                columns[c].append(kind == Int(STRATA_MEMBER_INTEGER) ? Double(m.integer) : m.real)
            case .boolean:
                columns[c].append(kind == Int(STRATA_MEMBER_TRUE))
            case .byteArray:
                if kind == Int(STRATA_MEMBER_TEXT) {
                    columns[c].append(bytes: UnsafeRawBufferPointer(rebasing: rawValue[1..<(rawValue.count - 1)]))
                } else if kind == Int(STRATA_MEMBER_ESCAPED) {
                    let content = UnsafeRawBufferPointer(rebasing: rawValue[1..<(rawValue.count - 1)])
                    columns[c].appendBytes(capacity: content.count) { out in
                        let decoded = strata_json_unescape_lossy(content.baseAddress?.assumingMemoryBound(to: UInt8.self), content.count,
                                                                 out.baseAddress?.assumingMemoryBound(to: UInt8.self))
                        return decoded < 0 ? nil : Int(decoded)
                    }
                } else {
                    columns[c].append(bytes: rawValue)
                }
            case .int32:
                break
            }
        }
    }
}
