import CSQLite
import Glibc
import StrataLog

/// A fixed-capacity array in its own anonymous mapping (unmapped at once when the statement
/// ends). Transparent huge pages were tried here: fewer faults, but direct compaction on fault
/// made the scan slower, so plain pages.
final class PageBuffer<Element: BitwiseCopyable> {
    let base: UnsafeMutablePointer<Element>
    let capacity: Int
    private(set) var count = 0
    private let bytes: Int

    init(capacity: Int) throws {
        self.capacity = max(1, capacity)
        bytes = self.capacity * MemoryLayout<Element>.stride
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              p != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw QueryError("cannot allocate \(bytes >> 20) MiB for a grouped scan (errno \(errno))")
        }
        base = p.bindMemory(to: Element.self, capacity: self.capacity)
    }

    deinit { munmap(base, bytes) }

    @inline(__always) func append(_ e: Element) {
        precondition(count < capacity, "PageBuffer overflow")
        base[count] = e
        count += 1
    }

    @inline(__always) subscript(i: Int) -> Element {
        get { base[i] }
        set { base[i] = newValue }
    }
}

/// GROUP BY without SQLite's sorter. SQLite has no hash aggregation: it sorts every input row
/// by the group key (10M rows: ~10 s here) and then aggregates runs of equal keys. When the
/// GROUP BY (or DISTINCT, or ORDER BY) terms are member columns, the table may deliver rows in
/// that order itself (`orderByConsumed`): the cursor reads the whole scan, keeps only the columns
/// the statement uses as compact cells, assigns group ids with a hash table, sorts the groups
/// (few) and emits rows group by group (a counting sort: two linear passes).
///
/// Memory: 16 bytes per used column per row plus 8 per row, and the mappings/arenas the text
/// cells point into, until the statement ends. So this mode is used only up to `rowLimit` rows;
/// larger scans take SQLite's sorter.
final class GroupedRows {
    static let rowLimit: Int64 = 20_000_000

    /// One stored column value: SQLite's storage classes, text as a view into a mapping/arena.
    struct Cell {
        enum Kind: UInt8 { case null, integer, real, text }
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
            }
        }
    }

    /// The vtab columns stored, in slot order, and each column's slot (-1: not stored).
    let columns: [Int32]
    let slotOfColumn: [Int]
    /// Row-major cells in emission order: row r's slot s is `cells[r * columns.count + s]`.
    private let cells: PageBuffer<Cell>
    /// What text cells point into.
    private var slices: [SegmentSlice] = []
    private var arenas: [Arena] = []
    private let keyArena = Arena()

    /// A group-key component in SQLite's equality for sorting: NULLs equal, integers and
    /// integral reals equal, text by bytes (BINARY collation).
    enum KeyPart: Equatable {
        case null
        case integer(Int64)
        case real(Double)
        case text(UnsafeRawPointer, Int)

        static func == (a: KeyPart, b: KeyPart) -> Bool {
            switch (a, b) {
            case (.null, .null): return true
            case (.integer(let x), .integer(let y)): return x == y
            case (.real(let x), .real(let y)): return x == y
            case (.text(let p, let n), .text(let q, let m)): return n == m && (p == q || memcmp(p, q, n) == 0)
            default: return false
            }
        }

        var hash: UInt64 {
            switch self {
            case .null: return 0x9E37_79B9_7F4A_7C15
            case .integer(let v): return Self.mix(UInt64(bitPattern: v) ^ 0x1234_5678)
            case .real(let v): return Self.mix(v.bitPattern ^ 0x8765_4321)
            case .text(let p, let n):
                var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(n)
                var i = 0
                while i + 8 <= n {
                    h = Self.mix(h ^ p.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                    i += 8
                }
                var tail: UInt64 = 0
                var shift: UInt64 = 0
                while i < n {
                    tail |= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << shift
                    shift += 8
                    i += 1
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

    /// Reads every chunk of `pipeline`, storing `columns` (vtab column numbers; member columns
    /// from `firstMember` on) and ordering rows by the stored columns `keySlots` (`descending`
    /// per key). `resolve(chunk, row, memberId)` answers what the fast path left to SQLite
    /// (throwing SQLite's error for malformed JSON).
    init(pipeline: ScanPipeline, expectedRows: Int, columns: [Int32], firstMember: Int32, keySlots: [Int], descending: [Bool],
         firstRowOnly: Bool = false, filters: [MemberFilter] = [], resolve: (Chunk, Int, Int) throws -> Cell) throws {
        self.columns = columns
        var slots = [Int](repeating: -1, count: Int(columns.max() ?? 0) + 1)
        for (s, c) in columns.enumerated() { slots[Int(c)] = s }
        slotOfColumn = slots
        let width = columns.count
        var groupOfRow: ContiguousArray<UInt32> = []
        var groupSizes: ContiguousArray<Int> = []
        var firstRowOfGroup: ContiguousArray<Int> = []
        var groupHashes: ContiguousArray<UInt64> = []
        var table = ContiguousArray<Int32>(repeating: -1, count: 1024)
        var scanned = 0

        // Offsets are unique, so a range of offsets bounds the rows it can hold.
        let capacity = min(expectedRows, Int(Self.rowLimit)) * width
        let store = try PageBuffer<Cell>(capacity: capacity)
        /// Each group's key cells (text interned in keyArena), compact for probing.
        var groupKeys = ContiguousArray<Cell>()
        let keyWidth = keySlots.count
        // One allocation when the row count is known (reserving per chunk would reallocate
        // exactly each time: quadratic).
        groupOfRow.reserveCapacity(min(expectedRows, Int(Self.rowLimit)))
        while let chunk = try pipeline.next() {
            if let slice = chunk.slice { slices.append(slice) }
            arenas.append(chunk.arena)
            for row in 0..<chunk.rows.count {
                if !filters.isEmpty && !filters.mayMatch(chunk, row) { continue }
                let r = chunk.rows[row]
                for c in columns {
                    let cell: Cell
                    switch c {
                    case 0: cell = .integer(Int64(r.partition))
                    case 1: cell = .integer(r.offset)
                    case 2: cell = .integer(r.timestamp)
                    case 3: cell = r.keyCount < 0 ? .null : .text(r.key, Int(r.keyCount))
                    case 4: cell = r.valueCount < 0 ? .null : .text(r.value, Int(r.valueCount))
                    default:
                        let id = Int(c - firstMember)
                        guard let value = r.value else { cell = .null; break }
                        let field: FieldValue = id < chunk.fields.count ? chunk.fields[id][row] : .fallback
                        switch field {
                        case .null: cell = .null
                        case .integer(let v): cell = .integer(v)
                        case .real(let v): cell = .real(v)
                        case .text(let start, let n): cell = .text(value + Int(start), Int(n))
                        case .fallback: cell = try resolve(chunk, row, id)
                        }
                    }
                    guard store.count < store.capacity else { throw QueryError("scan returned more rows than its offset range holds") }
                    store.append(cell)
                }
                let base = scanned * width
                var h: UInt64 = 0
                for s in keySlots { h = (h &* 31) ^ store[base + s].key.hash }
                var slot = Int(truncatingIfNeeded: h) & (table.count - 1)
                var group: Int32 = -1
                while table[slot] >= 0 {
                    let g = Int(table[slot])
                    if groupHashes[g] == h {
                        let other = g * keyWidth
                        var equal = true
                        for (j, s) in keySlots.enumerated() where !(store[base + s].key == groupKeys[other + j].key) {
                            equal = false
                            break
                        }
                        if equal {
                            group = Int32(g)
                            // Equal text keys share the group's copy: emitting then reads one hot
                            // location instead of every row's place in the mapping.
                            for (j, s) in keySlots.enumerated() where store[base + s].kind == .text { store[base + s] = groupKeys[other + j] }
                            break
                        }
                    }
                    slot = (slot + 1) & (table.count - 1)
                }
                if group < 0 {
                    // The group's key text gets its own compact copy: probes then compare against
                    // a small hot region rather than a random place in the mapping.
                    for s in keySlots where store[base + s].kind == .text {
                        let c = store[base + s]
                        store[base + s] = .text(keyArena.copy(UnsafeRawBufferPointer(start: c.pointer, count: Int(c.count))), Int(c.count))
                    }
                    for s in keySlots { groupKeys.append(store[base + s]) }
                    group = Int32(groupSizes.count)
                    groupSizes.append(0)
                    groupHashes.append(h)
                    firstRowOfGroup.append(scanned)
                    table[slot] = group
                    if groupSizes.count * 2 > table.count {
                        // Grow and reinsert: the table stays at most half full.
                        table = ContiguousArray(repeating: -1, count: table.count * 2)
                        for (g, gh) in groupHashes.enumerated() {
                            var s = Int(truncatingIfNeeded: gh) & (table.count - 1)
                            while table[s] >= 0 { s = (s + 1) & (table.count - 1) }
                            table[s] = Int32(g)
                        }
                    }
                }
                groupSizes[Int(group)] += 1
                groupOfRow.append(UInt32(group))
                scanned += 1
            }
        }
        // Groups in SQLite's order of their keys (few compared to rows), so the output is sorted,
        // not merely grouped: valid for GROUP BY, DISTINCT and ORDER BY alike.
        let sortedGroups = firstRowOfGroup.indices.sorted { a, b in
            let (ra, rb) = (firstRowOfGroup[a] * width, firstRowOfGroup[b] * width)
            for (j, s) in keySlots.enumerated() {
                let c = Self.compare(store[ra + s].key, store[rb + s].key)
                if c != 0 { return descending[j] ? c > 0 : c < 0 }
            }
            return a < b
        }
        if firstRowOnly {
            let firsts = try PageBuffer<Cell>(capacity: sortedGroups.count * width)
            for g in sortedGroups {
                for s in 0..<width { firsts.append(store[firstRowOfGroup[g] * width + s]) }
            }
            cells = firsts
            rowCount = sortedGroups.count
            return
        }
        // Counting sort: each group's rows move, in log order, to the group's place. Emission then
        // reads the cells sequentially (reading them through a permutation missed the cache on
        // nearly every row of the smaller groups).
        var starts = ContiguousArray<Int>(repeating: 0, count: groupSizes.count)
        var total = 0
        for g in sortedGroups {
            starts[g] = total
            total += groupSizes[g]
        }
        let sorted = try PageBuffer<Cell>(capacity: total * width)
        let (input, output) = (store.base, sorted.base)
        for row in 0..<total {
            let g = Int(groupOfRow[row])
            let to = starts[g] * width
            for s in 0..<width { output[to + s] = input[row * width + s] }
            starts[g] += 1
        }
        cells = sorted
        self.rowCount = total
    }

    private(set) var rowCount = 0

    /// Sets column `column` of emitted row `position` as the result; false if not stored.
    @inline(__always) func result(_ ctx: OpaquePointer?, column: Int32, position: Int) -> Bool {
        guard Int(column) < slotOfColumn.count else { return false }
        let slot = slotOfColumn[Int(column)]
        guard slot >= 0 else { return false }
        let cell = cells[position * columns.count + slot]
        switch cell.kind {
        case .null: sqlite3_result_null(ctx)
        case .integer: sqlite3_result_int64(ctx, Int64(bitPattern: cell.bits))
        case .real: sqlite3_result_double(ctx, Double(bitPattern: cell.bits))
        case .text:
            sqlite3_result_text(ctx, (cell.pointer ?? UnsafeRawPointer(bitPattern: 1)!).assumingMemoryBound(to: CChar.self), cell.count,
                                strata_sqlite_transient())
        }
        return true
    }

    /// SQLite's sort order: NULL < numbers (compared numerically) < text (bytes, then length).
    static func compare(_ a: KeyPart, _ b: KeyPart) -> Int {
        func rank(_ k: KeyPart) -> Int {
            switch k {
            case .null: return 0
            case .integer, .real: return 1
            case .text: return 2
            }
        }
        let (ra, rb) = (rank(a), rank(b))
        if ra != rb { return ra < rb ? -1 : 1 }
        switch (a, b) {
        case (.integer(let x), .integer(let y)): return x < y ? -1 : (x > y ? 1 : 0)
        case (.text(let p, let n), .text(let q, let m)):
            let c = memcmp(p, q, min(n, m))
            return c != 0 ? (c < 0 ? -1 : 1) : (n < m ? -1 : (n > m ? 1 : 0))
        case (.null, .null): return 0
        default:
            let x = number(a), y = number(b)
            return x < y ? -1 : (x > y ? 1 : 0)
        }
    }

    private static func number(_ k: KeyPart) -> Double {
        switch k {
        case .integer(let v): return Double(v)
        case .real(let v): return v
        default: return 0
        }
    }
}
