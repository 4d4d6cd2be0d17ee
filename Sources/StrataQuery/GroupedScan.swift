import CSQLite
import Glibc

/// GROUP BY without SQLite's sorter. SQLite has no hash aggregation: it sorts every input row
/// by the group key (10M rows: ~10 s here) and then aggregates runs of equal keys. When the
/// GROUP BY terms are member columns, `sqlite3_vtab_distinct` lets the table deliver rows so that
/// equal keys are merely adjacent; the cursor then reads the whole scan, assigns group ids with a
/// hash table and emits the rows group by group (a counting sort: two linear passes).
///
/// The cost is memory: every row of the scan stays referenced until the statement ends (about
/// 100 bytes per row), so this mode is used only up to `rowLimit` rows; larger scans take
/// SQLite's sorter.
final class GroupedRows {
    static let rowLimit: Int64 = 20_000_000

    private(set) var chunks: [Chunk] = []
    /// Rows in emission order: chunk index << 32 | row index.
    private(set) var order: ContiguousArray<UInt64> = []

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
            case .integer(let v): return mix(UInt64(bitPattern: v) ^ 0x1234_5678)
            case .real(let v): return mix(v.bitPattern ^ 0x8765_4321)
            case .text(let p, let n):
                var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(n)
                var i = 0
                while i + 8 <= n {
                    h = mix(h ^ p.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                    i += 8
                }
                var tail: UInt64 = 0
                var shift: UInt64 = 0
                while i < n {
                    tail |= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << shift
                    shift += 8
                    i += 1
                }
                return mix(h ^ tail)
            }
        }

        @inline(__always) func mix(_ x: UInt64) -> UInt64 {
            var z = x &* 0xBF58_476D_1CE4_E5B9
            z ^= z >> 31
            z = z &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 29)
        }
    }

    /// Reads every chunk of `pipeline` and orders the rows by group. `resolve` turns a value
    /// the fast path left to SQLite into a key part (or throws SQLite's error).
    init(pipeline: ScanPipeline, memberIds: [Int], descending: [Bool], resolve: (Chunk, Int, Int) throws -> KeyPart) throws {
        var groupOfRow: ContiguousArray<UInt32> = []
        var groupSizes: ContiguousArray<Int> = []
        var firstRowOfGroup: ContiguousArray<UInt64> = []
        var groupHashes: ContiguousArray<UInt64> = []
        var slots = ContiguousArray<Int32>(repeating: -1, count: 1024)
        var parts = [KeyPart](repeating: .null, count: memberIds.count)
        var other = parts

        func keyParts(_ chunkIndex: Int, _ row: Int, into out: inout [KeyPart]) throws {
            let chunk = chunks[chunkIndex]
            let r = chunk.rows[row]
            for (j, id) in memberIds.enumerated() {
                guard let value = r.value, id < chunk.fields.count else {
                    out[j] = r.value == nil ? .null : try resolve(chunk, row, id)
                    continue
                }
                switch chunk.fields[id][row] {
                case .null: out[j] = .null
                case .integer(let v): out[j] = .integer(v)
                case .real(let v):
                    // SQLite compares 1 and 1.0 as equal.
                    if v.rounded() == v, abs(v) < 9.2e18 { out[j] = .integer(Int64(v)) } else { out[j] = .real(v) }
                case .text(let start, let n): out[j] = .text(value + Int(start), Int(n))
                case .fallback: out[j] = try resolve(chunk, row, id)
                }
            }
        }

        while let chunk = try pipeline.next() {
            let chunkIndex = chunks.count
            chunks.append(chunk)
            for row in 0..<chunk.rows.count {
                try keyParts(chunkIndex, row, into: &parts)
                var h: UInt64 = 0
                for p in parts { h = (h &* 31) ^ p.hash }
                var slot = Int(truncatingIfNeeded: h) & (slots.count - 1)
                var group: Int32 = -1
                while slots[slot] >= 0 {
                    let g = Int(slots[slot])
                    if groupHashes[g] == h {
                        let first = firstRowOfGroup[g]
                        try keyParts(Int(first >> 32), Int(first & 0xFFFF_FFFF), into: &other)
                        if other == parts {
                            group = Int32(g)
                            break
                        }
                    }
                    slot = (slot + 1) & (slots.count - 1)
                }
                if group < 0 {
                    group = Int32(groupSizes.count)
                    groupSizes.append(0)
                    groupHashes.append(h)
                    firstRowOfGroup.append(UInt64(chunkIndex) << 32 | UInt64(row))
                    slots[slot] = group
                    if groupSizes.count * 2 > slots.count {
                        // Grow and reinsert: the table stays at most half full.
                        slots = ContiguousArray(repeating: -1, count: slots.count * 2)
                        for (g, gh) in groupHashes.enumerated() {
                            var s = Int(truncatingIfNeeded: gh) & (slots.count - 1)
                            while slots[s] >= 0 { s = (s + 1) & (slots.count - 1) }
                            slots[s] = Int32(g)
                        }
                    }
                }
                groupSizes[Int(group)] += 1
                groupOfRow.append(UInt32(group))
            }
        }
        // Groups in SQLite's order of their keys (few compared to rows), so the output is sorted,
        // not merely grouped: valid for GROUP BY, DISTINCT and ORDER BY alike.
        var groupKeys: [[KeyPart]] = []
        groupKeys.reserveCapacity(groupSizes.count)
        for first in firstRowOfGroup {
            try keyParts(Int(first >> 32), Int(first & 0xFFFF_FFFF), into: &parts)
            groupKeys.append(parts)
        }
        let sortedGroups = groupKeys.indices.sorted { a, b in
            for j in memberIds.indices {
                let c = Self.compare(groupKeys[a][j], groupKeys[b][j])
                if c != 0 { return descending[j] ? c > 0 : c < 0 }
            }
            return a < b
        }
        // Counting sort by group: starts by prefix sum, then one placement pass.
        var starts = ContiguousArray<Int>(repeating: 0, count: groupSizes.count)
        var total = 0
        for g in sortedGroups {
            starts[g] = total
            total += groupSizes[g]
        }
        order = ContiguousArray(repeating: 0, count: total)
        var i = 0
        for (c, chunk) in chunks.enumerated() {
            for row in 0..<chunk.rows.count {
                let g = Int(groupOfRow[i])
                order[starts[g]] = UInt64(c) << 32 | UInt64(row)
                starts[g] += 1
                i += 1
            }
        }
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
