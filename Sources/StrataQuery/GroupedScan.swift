import CSQLite
import CStrataScan
import Glibc
import StrataLog

/// What a grouped scan keeps of each row and how it groups them (from xBestIndex).
struct GroupingSpec: Sendable {
    /// vtab columns stored per row, in slot order (member columns from `firstMember` on).
    let columns: [Int32]
    let firstMember: Int32
    /// Slots (into `columns`) of the GROUP BY / ORDER BY terms, and their directions.
    let keySlots: [Int]
    let descending: [Bool]
    /// DISTINCT: one row per group is enough.
    let firstRowOnly: Bool
    let filters: [MemberFilter]
    /// Aggregates folded into the scan (JSONColumns.fold): one row per group, carrying the group's
    /// row count in the `strata_rows` column and each of `folds` in its column.
    var fold = false
    var folds: [FoldColumn] = []
    /// Rows outside these timestamps (inclusive) are not grouped: a fold's exact time bounds.
    var rowTimestamps: (lo: Int64, hi: Int64)?
    /// `filters` decide exactly (a fold's `member = literal`; SQLite does not re-check).
    var exactFilters = false
    /// A fold's other member terms (ranges, IS [NOT] NULL), applied exactly with `filters`.
    var tests: [MemberTest] = []
    /// The `strata_day` column (computed from the row's timestamp: JSONColumns.dayStart).
    var dayColumn: Int32 = -1
    var width: Int { columns.count }
}

/// Group ids by key hash: open addressing over group numbers, kept at most half full. The
/// caller keeps the keys (to compare) and the per-group data; this finds or assigns the id.
/// A slot holds the hash with the group, so that a probe touches one cache line before the
/// caller's keys; `prefetch`/`candidate` let a merge request the lines of later probes first.
struct GroupIndex {
    struct Slot {
        var hash: UInt64 = 0
        var group: Int32 = -1
    }
    private var slots: ContiguousArray<Slot>
    private(set) var hashes = ContiguousArray<UInt64>()

    init(initialSlots: Int) { slots = ContiguousArray(repeating: Slot(), count: initialSlots) }

    var count: Int { hashes.count }

    /// The group whose hash is `hash` and for which `equal(group)` holds, or a new group (the
    /// next number) when there is none.
    @inline(__always)
    mutating func findOrAdd(hash: UInt64, equal: (Int) -> Bool) -> (group: Int, isNew: Bool) {
        let mask = slots.count - 1
        var slot = Int(truncatingIfNeeded: hash) & mask
        while slots[slot].group >= 0 {
            if slots[slot].hash == hash && equal(Int(slots[slot].group)) { return (Int(slots[slot].group), false) }
            slot = (slot + 1) & mask
        }
        let g = hashes.count
        hashes.append(hash)
        slots[slot] = Slot(hash: hash, group: Int32(g))
        if hashes.count * 2 > slots.count {
            slots = ContiguousArray(repeating: Slot(), count: slots.count * 2)
            let mask = slots.count - 1
            for (i, h) in hashes.enumerated() {
                var t = Int(truncatingIfNeeded: h) & mask
                while slots[t].group >= 0 { t = (t + 1) & mask }
                slots[t] = Slot(hash: h, group: Int32(i))
            }
        }
        return (g, true)
    }

    /// Requests the line of `hash`'s first slot (a probe of it comes a few groups later).
    @inline(__always) func prefetch(hash: UInt64) {
        slots.withUnsafeBufferPointer { strata_prefetch($0.baseAddress! + (Int(truncatingIfNeeded: hash) & ($0.count - 1))) }
    }

    /// The group in `hash`'s first slot when its hash is `hash`: likely the one a probe finds.
    @inline(__always) func candidate(hash: UInt64) -> Int? {
        let s = slots[Int(truncatingIfNeeded: hash) & (slots.count - 1)]
        return s.group >= 0 && s.hash == hash ? Int(s.group) : nil
    }
}

/// The cells of one chunk's rows, grouped within the chunk: built on an extractor thread (or on
/// the SQLite thread when a value needs SQLite's json_extract), merged into the global groups in
/// chunk order by GroupedRows.
final class ChunkGroups: @unchecked Sendable {
    /// Cells of the chunk's kept rows, group by group (row-major, `width` cells per row).
    let cells: UnsafeMutableBufferPointer<GroupedRows.Cell>
    /// Per local group: key hash, first row (in `cells`), row count.
    var groups: [(hash: UInt64, start: Int, count: Int)] = []
    /// What the text cells point into.
    let slice: SegmentSlice?
    private(set) var arena: Arena

    /// Cells in use (the allocation has at least one, for empty chunks).
    let cellCount: Int
    /// A fold's partial aggregates per group (`spec.folds.count` each, FoldPartial) when this
    /// thread computed them; the cells are then one row per group, for its key.
    var partials = ContiguousArray<FoldPartial>()
    /// The summed values the partials refer to.
    var reals = ContiguousArray<Double>()

    /// The chunk's rows point into a decoded cold block, which is not kept: text is compacted.
    private let fromColdBlock: Bool
    /// In a fold, the chunk groups live only until they are merged: the decoded cold block is
    /// kept that long rather than its text copied.
    private let coldMemory: [AnyObject]

    init(rows: Int, width: Int, chunk: Chunk, keepsColdBlock: Bool = false) {
        cellCount = rows * width
        cells = .allocate(capacity: max(1, rows * width))
        slice = chunk.slice
        arena = chunk.arena
        fromColdBlock = !chunk.coldMemory.isEmpty
        coldMemory = keepsColdBlock ? chunk.coldMemory : []
    }
    /// Rows copied out of their chunks, text in an arena that outlives this (a DISTINCT scan's
    /// first rows, GroupedRows).
    init(copying rows: ContiguousArray<GroupedRows.Cell>) {
        cellCount = rows.count
        cells = .allocate(capacity: max(1, rows.count))
        _ = cells.initialize(from: rows)
        slice = nil
        arena = Arena()
        fromColdBlock = false
        coldMemory = []
    }
    deinit { cells.deallocate() }

    /// Groups `chunk`'s rows. `resolve` answers cells the fast path left to SQLite; without it
    /// (on an extractor thread, which must not use the connection) such a chunk returns nil.
    static func build(_ chunk: Chunk, spec: GroupingSpec, resolve: ((Chunk, Int, Int) throws -> GroupedRows.Cell)?,
                      errors: GroupedRows.ResolveErrors? = nil) throws -> ChunkGroups? {
        let width = spec.width
        let n = chunk.rows.count
        // Read once: the chunk's properties (a class's) cost an exclusivity check and a retain
        // per access, and these loops run for every row of every chunk.
        let fields = chunk.fields
        let rows = chunk.rows
        let columns = spec.columns
        let keySlots = spec.keySlots
        /// Member `id` of `row` as a cell; nil when only SQLite can read it and no resolver is here.
        func memberCell(_ id: Int, _ row: Int) throws -> GroupedRows.Cell? {
            // (A NULL key or value gives .null members; a member not extracted yet is resolved.)
            if id < fields.count, let cell = GroupedRows.Cell(fields[id][row]) { return cell }
            guard let resolve else { return nil }
            return try resolve(chunk, row, id)
        }
        // Pass 1: the rows kept (time bounds, filters).
        var keptRows = ContiguousArray<Int32>()
        keptRows.reserveCapacity(n)
        for row in 0..<n {
            let r = rows[row]
            if let bounds = spec.rowTimestamps, r.timestamp < bounds.lo || r.timestamp > bounds.hi { continue }
            if spec.exactFilters {
                // SQLite's `=` on each filtered member, a member only SQLite reads resolved first
                // (on the SQLite thread), one it cannot read failing the statement as it would.
                var passes = true
                /// The member a term tests (an unreadable one fails the statement).
                func tested(_ memberId: Int) throws -> GroupedRows.Cell? {
                    guard let cell = try memberCell(memberId, row) else { return nil }
                    if cell.kind == .error {
                        let index = Int(cell.bits)
                        throw QueryError(errors.flatMap { index < $0.messages.count ? $0.messages[index] : nil } ?? "malformed JSON")
                    }
                    return cell
                }
                for f in spec.filters where passes {
                    guard let cell = try tested(f.memberId) else { return nil }
                    passes = f.matches(cell)
                }
                for t in spec.tests where passes {
                    guard let cell = try tested(t.memberId) else { return nil }
                    passes = t.matches(cell)
                }
                if !passes { continue }
            } else if !spec.filters.isEmpty && !spec.filters.mayMatch(chunk, row) {
                continue
            }
            keptRows.append(Int32(row))
        }
        let kept = keptRows.count
        // Pass 2: the stored columns of the kept rows, column by column (`kept` cells each).
        let stored = UnsafeMutableBufferPointer<GroupedRows.Cell>.allocate(capacity: max(1, kept * width))
        defer { stored.deallocate() }
        for (s, c) in columns.enumerated() {
            let to = stored.baseAddress! + s * kept
            if c == spec.dayColumn {
                for k in 0..<kept { to[k] = JSONColumns.dayStart(timestampMs: rows[Int(keptRows[k])].timestamp).map { .integer($0) } ?? .null }
                continue
            }
            switch c {
            case 0: for k in 0..<kept { to[k] = .integer(Int64(rows[Int(keptRows[k])].partition)) }
            case 1: for k in 0..<kept { to[k] = .integer(rows[Int(keptRows[k])].offset) }
            case 2: for k in 0..<kept { to[k] = .integer(rows[Int(keptRows[k])].timestamp) }
            case 3:
                for k in 0..<kept {
                    let r = rows[Int(keptRows[k])]
                    to[k] = r.keyCount < 0 ? .null : .text(r.key, Int(r.keyCount))
                }
            case 4:
                for k in 0..<kept {
                    let r = rows[Int(keptRows[k])]
                    to[k] = r.valueCount < 0 ? .null : .text(r.value, Int(r.valueCount))
                }
            default:
                let id = Int(c - spec.firstMember)
                if id < fields.count {
                    let column = fields[id]
                    for k in 0..<kept {
                        let row = Int(keptRows[k])
                        if let cell = GroupedRows.Cell(column[row]) {
                            to[k] = cell
                        } else {
                            guard let resolve else { return nil }
                            to[k] = try resolve(chunk, row, id)
                        }
                    }
                } else {
                    for k in 0..<kept {
                        guard let cell = try memberCell(id, Int(keptRows[k])) else { return nil }
                        to[k] = cell
                    }
                }
            }
        }
        // Pass 3: a local group per kept row.
        var rowGroup = ContiguousArray<Int32>(repeating: 0, count: kept)
        var firstRow = ContiguousArray<Int>()
        var sizes = ContiguousArray<Int>()
        var index = GroupIndex(initialSlots: 64)
        let base = stored.baseAddress!
        // A one-term key's text at an address already seen is that address's group: a cold
        // block's dictionary entries are converted once, so every row of an entry has the same
        // address, and the key is neither hashed nor compared (the address and length decide).
        var memoAddress = ContiguousArray<UInt64>(repeating: 0, count: 64)
        var memoLength = ContiguousArray<Int32>(repeating: -1, count: 64)
        var memoGroup = ContiguousArray<Int32>(repeating: 0, count: 64)
        let memoKey = keySlots.count == 1 ? base + keySlots[0] * kept : nil
        if keySlots.isEmpty && kept > 0 {
            // No key (aggregates without GROUP BY, `SELECT count(*) FROM t`): every kept row is
            // the one group, which no row needs hashed into (`rowGroup` is all 0 already).
            _ = index.findOrAdd(hash: 0) { _ in true }
            sizes.append(kept)
            firstRow.append(0)
        }
        for k in 0..<(keySlots.isEmpty ? 0 : kept) {
            var memo = -1
            let address = memoKey?[k]
            if let memoKey, let address, address.kind == .text {
                memo = Int(truncatingIfNeeded: (address.bits >> 4) ^ (address.bits >> 11)) & 63
                if memoAddress[memo] == address.bits && memoLength[memo] == address.count {
                    let g = Int(memoGroup[memo])
                    memoKey[k] = memoKey[firstRow[g]]
                    sizes[g] += 1
                    rowGroup[k] = Int32(g)
                    continue
                }
            }
            var h: UInt64 = 0
            for s in keySlots { h = (h &* 31) ^ base[s * kept + k].key.hash }
            let (g, isNew) = index.findOrAdd(hash: h) { g in
                let other = firstRow[g]
                for s in keySlots where !(base[s * kept + k].key == base[s * kept + other].key) { return false }
                return true
            }
            if isNew {
                sizes.append(0)
                firstRow.append(k)
            } else {
                // Equal text keys share the group's first copy: emission reads one place.
                let other = firstRow[g]
                for s in keySlots where base[s * kept + k].kind == .text { base[s * kept + k] = base[s * kept + other] }
            }
            if memo >= 0, let address {
                memoAddress[memo] = address.bits
                memoLength[memo] = address.count
                memoGroup[memo] = Int32(g)
            }
            sizes[g] += 1
            rowGroup[k] = Int32(g)
        }
        // Folded aggregates this thread can compute: one row per group (its key) and the
        // groups' partial aggregates, merged by the SQLite thread instead of stepping rows.
        if spec.fold && !spec.folds.isEmpty && spec.folds.allSatisfy(FoldPartial.applies),
           FoldPartial.hold(for: spec.folds, keys: spec.keySlots.flatMap { s in firstRow.map { base[s * kept + $0] } }),
           let (partials, reals) = partials(spec.folds, groups: sizes.count, rowGroup: rowGroup, cells: base, kept: kept) {
            let out = ChunkGroups(rows: sizes.count, width: width, chunk: chunk, keepsColdBlock: true)
            for g in sizes.indices {
                for s in 0..<width { out.cells[g * width + s] = base[s * kept + firstRow[g]] }
                out.groups.append((index.hashes[g], g, sizes[g]))
            }
            out.partials = partials
            out.reals = reals
            return out
        }
        // Pass 4: rows placed group by group (log order within a group).
        // Folded without aggregates of members, or DISTINCT: one row per group is all that is read.
        let firstRowOnly = spec.firstRowOnly || (spec.fold && spec.folds.isEmpty)
        // (A fold, and a DISTINCT, which copies out each new group's row, hold the chunk's
        // memory only until the merge.)
        let out = ChunkGroups(rows: firstRowOnly ? sizes.count : kept, width: width, chunk: chunk,
                              keepsColdBlock: spec.fold || spec.firstRowOnly)
        if firstRowOnly {
            // One row per group; folded, its count is the group's number of rows in the chunk.
            for g in sizes.indices {
                for s in 0..<width { out.cells[g * width + s] = base[s * kept + firstRow[g]] }
                out.groups.append((index.hashes[g], g, spec.fold ? sizes[g] : 1))
            }
            return out
        }
        var starts = ContiguousArray<Int>(repeating: 0, count: sizes.count)
        var total = 0
        for g in sizes.indices {
            starts[g] = total
            out.groups.append((index.hashes[g], total, sizes[g]))
            total += sizes[g]
        }
        let cells = out.cells.baseAddress!
        for k in 0..<kept {
            let g = Int(rowGroup[k])
            let to = cells + starts[g] * width
            for s in 0..<width { to[s] = base[s * kept + k] }
            starts[g] += 1
        }
        if !spec.fold { out.compactText() }
        return out
    }

    /// Per group and folded aggregate (`folds.count` per group), the partial over the kept rows
    /// (`rowGroup[k]` is row k's group; the cells are column-major, `kept` per column), and the
    /// summed values they refer to; nil when a summed member holds text (SQLite converts it).
    private static func partials(_ folds: [FoldColumn], groups: Int, rowGroup: ContiguousArray<Int32>,
                                 cells: UnsafeMutablePointer<GroupedRows.Cell>, kept: Int)
        -> (ContiguousArray<FoldPartial>, ContiguousArray<Double>)? {
        let width = folds.count
        var partials = ContiguousArray<FoldPartial>(repeating: FoldPartial(), count: groups * width)
        // Room for each group's summed values, group after group, so that a group's doubles are
        // contiguous in log order.
        var total = 0
        for (a, f) in folds.enumerated() where f.function.adds {
            let column = cells + f.cellSlot * kept
            for k in 0..<kept {
                let c = column[k]
                guard FoldPartial.steps(c) else { return nil }
                if c.kind == .integer || c.kind == .real { partials[Int(rowGroup[k]) * width + a].realCount += 1 }
            }
            for g in 0..<groups {
                partials[g * width + a].realStart = total
                total += partials[g * width + a].realCount
                partials[g * width + a].realCount = 0
            }
        }
        var reals = ContiguousArray<Double>(repeating: 0, count: total)
        reals.withUnsafeMutableBufferPointer { r in
            partials.withUnsafeMutableBufferPointer { p in
                for (a, f) in folds.enumerated() {
                    let column = cells + f.cellSlot * kept
                    let function = f.function
                    for k in 0..<kept { p[Int(rowGroup[k]) * width + a].add(column[k], function, reals: r.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!) }
                }
            }
        }
        return (partials, reals)
    }

    /// When the chunk's records were copied out of compressed batches (or SQLite answered some
    /// members), its arena holds every key and value of the chunk, and a cold chunk's rows point
    /// into its decoded block; a grouped scan keeps its chunk groups to the end, so only the text
    /// the cells use is copied to a small arena, once per distinct text, and the chunk's arena or
    /// block is let go.
    private func compactText() {
        guard !arena.isEmpty || fromColdBlock else { return }
        /// Text compared and hashed by its bytes (valid while the chunk is: during the build).
        struct Text: Hashable {
            let pointer: UnsafeRawPointer
            let count: Int32
            var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: Int(count)) }
            static func == (a: Text, b: Text) -> Bool { a.count == b.count && (a.count == 0 || memcmp(a.pointer, b.pointer, Int(a.count)) == 0) }
            func hash(into h: inout Hasher) { h.combine(bytes: bytes) }
        }
        let compact = Arena()
        var copies: [Text: UnsafeRawPointer] = [:]
        for i in 0..<cellCount where cells[i].kind == .text {
            guard let p = cells[i].pointer else { continue }
            let text = Text(pointer: p, count: cells[i].count)
            let copy = copies[text] ?? compact.copy(text.bytes)
            copies[text] = copy
            cells[i] = .text(copy, Int(text.count))
        }
        arena = compact
    }
}

/// GROUP BY without SQLite's sorter. SQLite has no hash aggregation: it sorts every input row
/// by the group key (10M rows: ~10 s here) and then aggregates runs of equal keys. When the
/// GROUP BY (or DISTINCT, or ORDER BY) terms are member columns, the table delivers rows in that
/// order itself (`orderByConsumed`): the extractor threads group each chunk's rows (ChunkGroups:
/// only the columns the statement uses, as 16-byte cells), this merges the chunks' groups in
/// chunk order, sorts the groups (few) by SQLite's collation and emits rows group by group —
/// sorted, so valid for GROUP BY, DISTINCT and ORDER BY alike.
///
/// Memory: 16 bytes per used column per row, plus the mappings/arenas text cells point into,
/// until the statement ends; so this mode is used only up to `rowLimit` rows (larger scans take
/// SQLite's sorter).
final class GroupedRows {
    static let rowLimit: Int64 = 20_000_000

    /// One stored column value: SQLite's storage classes, text as a view into a mapping/arena.
    struct Cell {
        /// `error`: a member SQLite could not read (malformed JSON); the error is raised only if
        /// SQLite reads the cell — a row its WHERE drops never fails the statement, as with
        /// SQLite's own row-by-row evaluation. `bits` indexes `ResolveErrors`.
        enum Kind: UInt8 { case null, integer, real, text, error }
        var bits: UInt64
        var count: Int32
        var kind: Kind

        static let null = Cell(bits: 0, count: 0, kind: .null)
        static func integer(_ v: Int64) -> Cell { Cell(bits: UInt64(bitPattern: v), count: 0, kind: .integer) }
        static func real(_ v: Double) -> Cell { Cell(bits: v.bitPattern, count: 0, kind: .real) }
        static func text(_ p: UnsafeRawPointer?, _ n: Int) -> Cell { Cell(bits: UInt64(UInt(bitPattern: p)), count: Int32(n), kind: .text) }

        var pointer: UnsafeRawPointer? { UnsafeRawPointer(bitPattern: UInt(bits)) }

        /// The group-key view: integral reals compare equal to integers, as in SQLite.
        var key: KeyPart {
            switch kind {
            case .null: return .null
            case .integer: return .integer(Int64(bitPattern: bits))
            case .real:
                let v = Double(bitPattern: bits)
                return v.rounded() == v && abs(v) < 9.2e18 ? .integer(Int64(v)) : .real(v)
            case .text: return .text(pointer ?? UnsafeRawPointer(bitPattern: 1)!, Int(count))
            case .error: return .error(Int(bits))
            }
        }
    }

    /// Messages of the members SQLite could not read during a grouped scan (Cell.Kind.error).
    final class ResolveErrors {
        private(set) var messages: [String] = []
        func cell(for message: String) -> Cell {
            messages.append(message)
            return Cell(bits: UInt64(messages.count - 1), count: 0, kind: .error)
        }
    }
    let errors: ResolveErrors

    let spec: GroupingSpec
    /// Slot of each vtab column in a row's cells (-1: not stored).
    let slotOfColumn: [Int]
    /// A run of rows of one group in one chunk: `count` rows from row `start` of `blocks[block]`.
    struct Run {
        var group: Int32
        var block: Int32
        var start: Int32
        var count: Int32
    }
    /// The chunks' grouped cells, in chunk order.
    // Read on every emitted row by xColumn on SQLite's thread only (one statement, one thread):
    // unchecked: the runtime's exclusivity bookkeeping was ~5% of a 10M-row GROUP BY profile.
    @exclusivity(unchecked) private var blocks: [ChunkGroups] = []
    /// Runs in emission order. Flat and without references: with many groups (100k user ids)
    /// nearly every row is its own run.
    @exclusivity(unchecked) private var runs = ContiguousArray<Run>()
    @exclusivity(unchecked) private(set) var rowCount = 0
    /// The run holding the current position (emission is sequential).
    @exclusivity(unchecked) private var runIndex = 0
    @exclusivity(unchecked) private var runFirstPosition = 0
    @exclusivity(unchecked) private var current: UnsafeMutablePointer<Cell>?
    @exclusivity(unchecked) private var currentCount = 0
    /// Rows per group, for a folded `count(*)`.
    @exclusivity(unchecked) private var groupRows = ContiguousArray<Int64>()
    /// A fold's emitted rows: the groups in order; their keys (`keyWidth` cells each, text in
    /// `keyArena`); the folded aggregates' results (`spec.folds.count` cells per group, text in
    /// `foldArena`).
    @exclusivity(unchecked) private var foldOrder = ContiguousArray<Int32>()
    @exclusivity(unchecked) private var groupKeys = ContiguousArray<Cell>()
    @exclusivity(unchecked) private var foldResults = ContiguousArray<Cell>()
    private let keyArena = Arena()
    private let foldArena = Arena()
    /// The vtab column that reports a group's row count in a folded scan.
    var rowsColumn: Int32 = -1

    /// A group-key component in SQLite's equality for sorting: NULLs equal, integers and
    /// integral reals equal, text by bytes (BINARY collation).
    enum KeyPart: Equatable {
        case null
        case integer(Int64)
        case real(Double)
        case text(UnsafeRawPointer, Int)
        /// Each unreadable member its own group (its rows are dropped by SQLite or fail it).
        case error(Int)

        static func == (a: KeyPart, b: KeyPart) -> Bool {
            switch (a, b) {
            case (.null, .null): return true
            case (.integer(let x), .integer(let y)): return x == y
            case (.real(let x), .real(let y)): return x == y
            case (.text(let p, let n), .text(let q, let m)): return n == m && (p == q || memcmp(p, q, n) == 0)
            case (.error(let x), .error(let y)): return x == y
            default: return false
            }
        }

        var hash: UInt64 {
            switch self {
            case .null: return 0x9E37_79B9_7F4A_7C15
            case .error(let i): return Self.mix(UInt64(i) ^ 0xE770_E770)
            case .integer(let v): return Self.mix(UInt64(bitPattern: v) ^ 0x1234_5678)
            case .real(let v): return Self.mix(v.bitPattern ^ 0x8765_4321)
            case .text(let p, let n):
                var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(n)
                var i = 0
                while i + 8 <= n {
                    h = Self.mix(h ^ p.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                    i += 8
                }
                // The last 1-7 bytes in at most two loads (overlapping when fewer than 8 are
                // left; every byte is in the tail, so equal lengths with different bytes differ).
                let rest = n - i
                var tail: UInt64 = 0
                if rest >= 4 {
                    tail = UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt32.self))
                        | UInt64(p.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self)) << 32
                } else if rest > 0 {
                    tail = UInt64(p.load(fromByteOffset: i, as: UInt8.self))
                        | UInt64(p.load(fromByteOffset: i + rest / 2, as: UInt8.self)) << 8
                        | UInt64(p.load(fromByteOffset: n - 1, as: UInt8.self)) << 16
                }
                return Self.mix(h ^ tail)
            }
        }

        @inline(__always) static func mix(_ x: UInt64) -> UInt64 {
            var z = x &* 0xBF58_476D_1CE4_E5B9
            z ^= z >> 31
            z = z &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 29)
        }
    }

    /// Reads every chunk of `pipeline` (grouped by the extractor threads when they could; else
    /// here, with `resolve` answering what the fast path left to SQLite) and orders the groups.
    init(pipeline: ScanPipeline, spec: GroupingSpec, errors: ResolveErrors = ResolveErrors(), resolve: (Chunk, Int, Int) throws -> Cell) throws {
        self.spec = spec
        self.errors = errors
        var slots = [Int](repeating: -1, count: Int(spec.columns.max() ?? 0) + 1)
        for (s, c) in spec.columns.enumerated() { slots[Int(c)] = s }
        slotOfColumn = slots
        let width = spec.width
        let keyWidth = spec.keySlots.count
        let keyArena = self.keyArena
        let foldArena = self.foldArena
        let folds = spec.folds
        let stepsRows = folds.contains { $0.function != .countDistinct }
        var foldStates = ContiguousArray<FoldState>()
        let numbers = NumericText()
        /// Each global group's key cells (text interned), hash, and runs in chunk order.
        var groupKeys = ContiguousArray<Cell>()
        var groupHasRun = ContiguousArray<Bool>()
        /// DISTINCT: each group's first row (`width` cells), in order of first appearance.
        var firstRows = ContiguousArray<Cell>()
        var scanRuns = ContiguousArray<Run>()
        var index = GroupIndex(initialSlots: 1024)
        var total = 0
        while let chunk = try pipeline.next() {
            let built = try chunk.groups ?? withoutActuallyEscaping(resolve) { try ChunkGroups.build(chunk, spec: spec, resolve: $0, errors: errors) }
            guard let local = built, !local.groups.isEmpty else { continue }
            // A fold keeps nothing of a chunk once merged: emitted rows are keys and results. A
            // DISTINCT keeps only the first row of each group, copied out (`firstRows`): late
            // chunks bring few new groups, and keeping every chunk's cells grew the heap by
            // ~75 KB per chunk (a fresh page to clear for most allocations after that).
            let blockIndex = Int32(blocks.count)
            if !spec.fold && !spec.firstRowOnly { blocks.append(local) }
            let localGroups = local.groups
            for (localGroup, lg) in localGroups.enumerated() {
                // Memory of later groups' probes requested now (past the caches each would
                // otherwise wait on a miss in turn): the slot, then the key cell, then its text.
                if localGroup + 12 < localGroups.count { index.prefetch(hash: localGroups[localGroup + 12].hash) }
                if keyWidth > 0 {
                    if localGroup + 6 < localGroups.count, let g = index.candidate(hash: localGroups[localGroup + 6].hash) {
                        groupKeys.withUnsafeBufferPointer { strata_prefetch($0.baseAddress! + g * keyWidth) }
                    }
                    if localGroup + 3 < localGroups.count {
                        let ahead = localGroups[localGroup + 3]
                        if let g = index.candidate(hash: ahead.hash), groupKeys[g * keyWidth].kind == .text, let text = groupKeys[g * keyWidth].pointer {
                            strata_prefetch(text)
                            // (and the chunk's text it is compared with: last touched by an extractor thread, on another core)
                            let mine = local.cells[ahead.start * width + spec.keySlots[0]]
                            if mine.kind == .text, let p = mine.pointer { strata_prefetch(p) }
                        }
                    }
                }
                let base = lg.start * width
                let (group, isNew) = index.findOrAdd(hash: lg.hash) { g in
                    for (j, s) in spec.keySlots.enumerated() where !(local.cells[base + s].key == groupKeys[g * keyWidth + j].key) {
                        return false
                    }
                    return true
                }
                if isNew {
                    for s in spec.keySlots {
                        var c = local.cells[base + s]
                        if c.kind == .text {
                            c = Cell.text(keyArena.copy(UnsafeRawBufferPointer(start: c.pointer, count: Int(c.count))), Int(c.count))
                        }
                        groupKeys.append(c)
                    }
                    groupHasRun.append(false)
                }
                if spec.fold {
                    // Every chunk's rows count; with aggregates of members, each of the group's
                    // rows (all stored, in log order) steps its states — chunks merge in order, so
                    // a group's values arrive in the order SQLite's sorter would give them.
                    while groupRows.count <= group { groupRows.append(0) }
                    groupRows[group] += Int64(lg.count)
                    groupHasRun[group] = true
                    guard !folds.isEmpty else { continue }
                    while foldStates.count < (group + 1) * folds.count { foldStates.append(FoldState()) }
                    if !local.partials.isEmpty {
                        local.reals.withUnsafeBufferPointer { reals in
                            for (a, f) in folds.enumerated() {
                                foldStates[group * folds.count + a].merge(local.partials[localGroup * folds.count + a], f.function,
                                                                          reals: reals, numbers: numbers, arena: foldArena)
                            }
                        }
                        continue
                    }
                    // count(DISTINCT) takes the group's rows as one run; the others row by row.
                    for (a, f) in folds.enumerated() where f.function == .countDistinct {
                        foldStates[group * folds.count + a].addDistinct(local.cells.baseAddress! + base + f.cellSlot, stride: width,
                                                                        count: lg.count, arena: foldArena)
                    }
                    for row in lg.start..<(lg.start + lg.count) where stepsRows {
                        let cells = local.cells.baseAddress! + row * width
                        for (a, f) in folds.enumerated() where f.function != .countDistinct {
                            let loaded = foldStates[group * folds.count + a].add(cells[f.cellSlot], f.function, numbers: numbers, arena: foldArena)
                            // The row SQLite would show the key of: only numbers can differ
                            // between rows of one group (1 and 1.0), so only they are copied.
                            if loaded && f.governsKey {
                                for (j, s) in spec.keySlots.enumerated() where cells[s].kind == .integer || cells[s].kind == .real {
                                    groupKeys[group * keyWidth + j] = cells[s]
                                }
                            }
                        }
                    }
                    continue
                }
                if spec.firstRowOnly {
                    guard !groupHasRun[group] else { continue }
                    groupHasRun[group] = true
                    // The group's first row, text in the key arena (its key cells are there already).
                    let start = firstRows.count / max(1, width)
                    for s in 0..<width {
                        var c = local.cells[base + s]
                        if let j = spec.keySlots.firstIndex(of: s) {
                            c = groupKeys[group * keyWidth + j]
                        } else if c.kind == .text {
                            c = Cell.text(keyArena.copy(UnsafeRawBufferPointer(start: c.pointer, count: Int(c.count))), Int(c.count))
                        }
                        firstRows.append(c)
                    }
                    scanRuns.append(Run(group: Int32(group), block: -1, start: Int32(start), count: 1))
                    total += 1
                    guard total <= Int(Self.rowLimit) else { throw QueryError("a grouped scan holds at most \(Self.rowLimit) rows") }
                    continue
                }
                groupHasRun[group] = true
                scanRuns.append(Run(group: Int32(group), block: blockIndex, start: Int32(lg.start), count: Int32(lg.count)))
                total += lg.count
                guard total <= Int(Self.rowLimit) else { throw QueryError("a grouped scan holds at most \(Self.rowLimit) rows") }
            }
        }
        // A fold without GROUP BY is one row, also when no row was scanned (count 0, sum NULL…).
        if spec.fold && keyWidth == 0 && groupHasRun.isEmpty {
            groupHasRun.append(true)
            groupRows.append(0)
            for _ in folds { foldStates.append(FoldState()) }
        }
        // Groups in SQLite's order of their keys, then the runs by group (a counting sort that
        // keeps chunk order within a group).
        let order = groupHasRun.indices.sorted { a, b in
            for j in 0..<keyWidth {
                let c = Self.compare(groupKeys[a * keyWidth + j].key, groupKeys[b * keyWidth + j].key)
                if c != 0 { return spec.descending[j] ? c > 0 : c < 0 }
            }
            return a < b
        }
        if spec.fold {
            foldOrder = ContiguousArray(order.map { Int32($0) })
            self.groupKeys = groupKeys
            foldResults.reserveCapacity(foldStates.count)
            for g in 0..<(foldStates.count / max(1, folds.count)) {
                for (a, f) in folds.enumerated() { foldResults.append(foldStates[g * folds.count + a].result(f.function, errors: errors)) }
            }
            rowCount = foldOrder.count
            return
        }
        if spec.firstRowOnly {
            // The first rows are one block after all chunks (runs of block -1 point into it).
            let block = Int32(blocks.count)
            blocks.append(ChunkGroups(copying: firstRows))
            for i in scanRuns.indices { scanRuns[i].block = block }
        }
        var runsOfGroup = ContiguousArray<Int>(repeating: 0, count: groupHasRun.count)
        for r in scanRuns { runsOfGroup[Int(r.group)] += 1 }
        var next = ContiguousArray<Int>(repeating: 0, count: groupHasRun.count)
        var at = 0
        for g in order {
            next[g] = at
            at += runsOfGroup[g]
        }
        runs = ContiguousArray(repeating: Run(group: 0, block: 0, start: 0, count: 0), count: scanRuns.count)
        for r in scanRuns {
            runs[next[Int(r.group)]] = r
            next[Int(r.group)] += 1
        }
        rowCount = total
        if let first = runs.first {
            current = blocks[Int(first.block)].cells.baseAddress! + Int(first.start) * width
            currentCount = Int(first.count)
        }
    }

    /// Sets column `column` of emitted row `position` as the result; false if not stored.
    /// Positions only move forward (SQLite reads a grouped scan once, in order).
    @inline(__always) func result(_ ctx: OpaquePointer?, column: Int32, position: Int) -> Bool {
        if spec.fold { return foldResult(ctx, column: column, position: position) }
        guard Int(column) < slotOfColumn.count else { return false }
        let slot = slotOfColumn[Int(column)]
        guard slot >= 0, position < rowCount else { return false }
        seek(position)
        emit(ctx, current![(position - runFirstPosition) * spec.width + slot])
        return true
    }

    /// A fold's row `position`: the group's key columns, row count and folded aggregates.
    private func foldResult(_ ctx: OpaquePointer?, column: Int32, position: Int) -> Bool {
        guard position < rowCount else { return false }
        let g = Int(foldOrder[position])
        if column == rowsColumn {
            sqlite3_result_int64(ctx, g < groupRows.count ? groupRows[g] : 0)
            return true
        }
        if let a = spec.folds.firstIndex(where: { $0.column == column }) {
            let i = g * spec.folds.count + a
            emit(ctx, i < foldResults.count ? foldResults[i] : FoldState().result(spec.folds[a].function, errors: errors))
            return true
        }
        guard Int(column) < slotOfColumn.count, let j = spec.keySlots.firstIndex(of: slotOfColumn[Int(column)]) else { return false }
        emit(ctx, groupKeys[g * spec.keySlots.count + j])
        return true
    }

    @inline(__always) private func emit(_ ctx: OpaquePointer?, _ cell: Cell) {
        switch cell.kind {
        case .null: sqlite3_result_null(ctx)
        case .integer: sqlite3_result_int64(ctx, Int64(bitPattern: cell.bits))
        case .real: sqlite3_result_double(ctx, Double(bitPattern: cell.bits))
        case .text:
            sqlite3_result_text(ctx, (cell.pointer ?? UnsafeRawPointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self), cell.count,
                                strata_sqlite_transient())
        case .error:
            let index = Int(cell.bits)
            sqlite3_result_error(ctx, index < errors.messages.count ? errors.messages[index] : "unreadable member", -1)
        }
    }

    /// Moves the current run to the one holding emitted row `position` (positions only grow).
    @inline(__always) private func seek(_ position: Int) {
        while position - runFirstPosition >= currentCount {
            runFirstPosition += currentCount
            runIndex += 1
            let run = runs[runIndex]
            current = blocks[Int(run.block)].cells.baseAddress! + Int(run.start) * spec.width
            currentCount = Int(run.count)
        }
    }

    /// SQLite's sort order (sqlite3MemCompare, BINARY collation): NULL < numbers (compared by
    /// value, an integer against a real exactly) < text (bytes, then length).
    static func compare(_ a: KeyPart, _ b: KeyPart) -> Int {
        func rank(_ k: KeyPart) -> Int {
            switch k {
            case .null: return 0
            case .integer, .real: return 1
            case .text: return 2
            case .error: return 3
            }
        }
        let (ra, rb) = (rank(a), rank(b))
        if ra != rb { return ra < rb ? -1 : 1 }
        switch (a, b) {
        case (.integer(let x), .integer(let y)): return x < y ? -1 : (x > y ? 1 : 0)
        case (.real(let x), .real(let y)): return x < y ? -1 : (x > y ? 1 : 0)
        case (.integer(let x), .real(let y)): return integerVersusReal(x, y)
        case (.real(let x), .integer(let y)): return -integerVersusReal(y, x)
        case (.text(let p, let n), .text(let q, let m)):
            let c = memcmp(p, q, min(n, m))
            return c != 0 ? (c < 0 ? -1 : 1) : (n < m ? -1 : (n > m ? 1 : 0))
        case (.error(let x), .error(let y)): return x < y ? -1 : (x > y ? 1 : 0)
        default: return 0
        }
    }

    /// An integer against a real, exactly (a Double cannot hold every Int64): the order of the
    /// real's integer part decides, and only when it equals the integer does the fraction.
    static func integerVersusReal(_ i: Int64, _ r: Double) -> Int {
        if r.isNaN { return 1 }
        if r < -9_223_372_036_854_775_808.0 { return 1 }
        if r >= 9_223_372_036_854_775_808.0 { return -1 }
        let y = Int64(r)  // r is within range: truncation toward zero cannot trap
        if i < y { return -1 }
        if i > y { return 1 }
        let s = Double(i)
        return s < r ? -1 : (s > r ? 1 : 0)
    }
}

extension GroupedRows.Cell {
    /// A member the scan extracted; nil for `.fallback` (only SQLite can read it). (In an
    /// extension: the memberwise initializer stays.)
    @inline(__always) init?(_ field: FieldValue) {
        switch field {
        case .null: self = .null
        case .integer(let v): self = .integer(v)
        case .real(let v): self = .real(v)
        case .text(let p, let count): self = .text(p, Int(count))
        case .fallback: return nil
        }
    }
}
