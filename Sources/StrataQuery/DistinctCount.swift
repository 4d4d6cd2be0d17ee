import CSQLite
import CStrataScan
import Glibc

/// `count(DISTINCT value->>'$.m')` with a hash set. SQLite deduplicates the argument of
/// count(DISTINCT) in a b-tree probed once per row (~300 ns for 10M rows of user ids) and never
/// offers that ordering to a virtual table. The rewrite (JSONColumns) turns exactly that
/// expression — one member column, nothing else inside — into this aggregate, which counts the
/// distinct non-NULL values with SQLite's equality for DISTINCT: integers and reals numerically,
/// text by bytes (the member columns' BINARY collation), blobs by bytes, text never equal to a
/// blob. Per group when there is a GROUP BY, and FILTER (WHERE …) works as for any aggregate.
enum DistinctCount {
    static let functionName = "strata_count_distinct"

    /// The distinct values of one aggregate (one group): an open-addressing table whose entries
    /// hold the hash and up to 16 bytes of the value inline, so a probe usually touches one
    /// cache line (with 100k distinct user ids the table outgrows the caches, and a separate
    /// key array cost a second miss per row). Runs of values (`add(cells:)`) request the slots
    /// of the next values before inserting the current one, so that their misses overlap.
    final class Counter {
        struct Entry {
            var hash: UInt64 = 0
            var kind: Int32 = 0  // 0 = empty
            var count: Int32 = 0
            /// Integer/real bits, or the first 16 bytes of text/blob (longer values: bits0 is a
            /// pointer to a copy in the arena).
            var bits0: UInt64 = 0
            var bits1: UInt64 = 0
        }
        /// One value to insert: its hash and what `matches` compares.
        struct Probe {
            var hash: UInt64
            var kind: Int32
            var bits: UInt64
            var bytes: UnsafeRawPointer?
            var count: Int
        }
        /// A power of two, at least twice `count`.
        private var capacity: Int
        private var entries: UnsafeMutablePointer<Entry>
        private(set) var count = 0
        private let arena: Arena

        /// A fold keeps one counter per group alive at once: it starts them small and shares one
        /// arena (SQLite finalizes one group's counter before the next starts).
        init(initialSlots: Int = 1024, arena: Arena = Arena()) {
            var slots = 8
            while slots < initialSlots { slots *= 2 }
            // Up to 16 inline bytes are compared from bits0 on (`matches`).
            assert(MemoryLayout<Entry>.offset(of: \.bits1) == MemoryLayout<Entry>.offset(of: \.bits0)! + 8)
            capacity = slots
            entries = .allocate(capacity: slots)
            entries.initialize(repeating: Entry(), count: slots)
            self.arena = arena
        }

        deinit { entries.deallocate() }

        func add(_ v: OpaquePointer?) {
            let kind = sqlite3_value_type(v)
            switch kind {
            case SQLITE_NULL: return
            case SQLITE_INTEGER: add(.integer(sqlite3_value_int64(v)))
            case SQLITE_FLOAT: add(.real(sqlite3_value_double(v)))
            default:
                // Text and blob: bytes (value_blob does not convert); the kind keeps them apart.
                let bytes = sqlite3_value_blob(v) ?? UnsafeRawPointer(bitPattern: 1)!
                let n = Int(sqlite3_value_bytes(v))
                insert(Probe(hash: GroupedRows.KeyPart.text(bytes, n).hash ^ UInt64(kind), kind: kind, bits: 0, bytes: bytes, count: n))
            }
        }

        /// A member column's cell (also a grouped scan's fold): NULLs and unreadable members skipped.
        func add(_ cell: GroupedRows.Cell) {
            if let p = Self.probe(cell) { insert(p) }
        }

        /// `n` cells, `stride` cells apart, as `add(_:)` each in order. The slots of up to
        /// `lookahead` values are requested before the first of them is inserted.
        func add(cells: UnsafePointer<GroupedRows.Cell>, stride: Int, count n: Int) {
            let lookahead = 16
            withUnsafeTemporaryAllocation(of: Probe.self, capacity: lookahead) { pending in
                var next = 0
                while next < n {
                    var held = 0
                    let stop = min(n, next + lookahead)
                    while next < stop {
                        if let p = Self.probe(cells[next * stride]) {
                            strata_prefetch(entries + (Int(truncatingIfNeeded: p.hash) & (capacity - 1)))
                            pending.initializeElement(at: held, to: p)
                            held += 1
                        }
                        next += 1
                    }
                    for k in 0..<held { insert(pending[k]) }
                }
            }
        }

        @inline(__always) static func probe(_ cell: GroupedRows.Cell) -> Probe? {
            switch cell.kind {
            case .null, .error: return nil
            case .integer:
                let i = Int64(bitPattern: cell.bits)
                return Probe(hash: GroupedRows.KeyPart.integer(i).hash, kind: SQLITE_INTEGER, bits: cell.bits, bytes: nil, count: 0)
            case .real:
                let d = Double(bitPattern: cell.bits)
                if d.rounded() == d && abs(d) < 9.2e18 {
                    // DISTINCT treats 1 and 1.0 as one value.
                    let i = Int64(d)
                    return Probe(hash: GroupedRows.KeyPart.integer(i).hash, kind: SQLITE_INTEGER, bits: UInt64(bitPattern: i), bytes: nil, count: 0)
                }
                return Probe(hash: GroupedRows.KeyPart.real(d).hash, kind: SQLITE_FLOAT, bits: d.bitPattern, bytes: nil, count: 0)
            case .text:
                let bytes = cell.pointer ?? UnsafeRawPointer(bitPattern: 1)!
                let n = Int(cell.count)
                return Probe(hash: GroupedRows.KeyPart.text(bytes, n).hash ^ UInt64(SQLITE_TEXT), kind: SQLITE_TEXT, bits: 0, bytes: bytes, count: n)
            }
        }

        @inline(__always) private static func matches(_ e: UnsafePointer<Entry>, _ p: Probe) -> Bool {
            guard e.pointee.kind == p.kind, Int(e.pointee.count) == p.count else { return false }
            guard let bytes = p.bytes else { return e.pointee.bits0 == p.bits }
            if p.count <= 16 {
                return memcmp(UnsafeRawPointer(e) + MemoryLayout<Entry>.offset(of: \.bits0)!, bytes, p.count) == 0
            }
            return memcmp(UnsafeRawPointer(bitPattern: UInt(e.pointee.bits0))!, bytes, p.count) == 0
        }

        private func insert(_ p: Probe) {
            let mask = capacity - 1
            var slot = Int(truncatingIfNeeded: p.hash) & mask
            while entries[slot].kind != 0 {
                if entries[slot].hash == p.hash && Self.matches(entries + slot, p) { return }
                slot = (slot + 1) & mask
            }
            var e = Entry(hash: p.hash, kind: p.kind, count: Int32(p.count), bits0: p.bits, bits1: 0)
            if let bytes = p.bytes {
                if p.count <= 16 {
                    withUnsafeMutableBytes(of: &e) { ($0.baseAddress! + MemoryLayout<Entry>.offset(of: \.bits0)!).copyMemory(from: bytes, byteCount: p.count) }
                } else {
                    e.bits0 = UInt64(UInt(bitPattern: arena.copy(UnsafeRawBufferPointer(start: bytes, count: p.count))))
                }
            }
            entries[slot] = e
            count += 1
            if count * 2 > capacity { grow() }
        }

        private func grow() {
            let old = entries
            let oldCapacity = capacity
            capacity *= 2
            entries = .allocate(capacity: capacity)
            entries.initialize(repeating: Entry(), count: capacity)
            let mask = capacity - 1
            for i in 0..<oldCapacity where old[i].kind != 0 {
                var s = Int(truncatingIfNeeded: old[i].hash) & mask
                while entries[s].kind != 0 { s = (s + 1) & mask }
                entries[s] = old[i]
            }
            old.deallocate()
        }
    }

    /// The aggregate context holds one pointer to the group's Counter.
    @inline(__always) static func counter(_ ctx: OpaquePointer?, create: Bool) -> Counter? {
        guard let raw = sqlite3_aggregate_context(ctx, create ? Int32(MemoryLayout<UnsafeRawPointer?>.size) : 0) else { return nil }
        let slot = raw.assumingMemoryBound(to: UnsafeRawPointer?.self)
        if let existing = slot.pointee { return Unmanaged<Counter>.fromOpaque(existing).takeUnretainedValue() }
        guard create else { return nil }
        let c = Counter()
        slot.pointee = UnsafeRawPointer(Unmanaged.passRetained(c).toOpaque())
        return c
    }

    static func register(_ db: OpaquePointer) throws {
        let rc = sqlite3_create_function_v2(db, functionName, 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, nil, nil,
                                            distinctCountStep, distinctCountFinal, nil)
        guard rc == SQLITE_OK else { throw QueryError("cannot register \(functionName)") }
    }
}

private let distinctCountStep: @convention(c) (OpaquePointer?, Int32, UnsafeMutablePointer<OpaquePointer?>?) -> Void = { ctx, _, argv in
    DistinctCount.counter(ctx, create: true)?.add(argv![0])
}

private let distinctCountFinal: @convention(c) (OpaquePointer?) -> Void = { ctx in
    var count = 0
    if let raw = sqlite3_aggregate_context(ctx, 0) {
        let slot = raw.assumingMemoryBound(to: UnsafeRawPointer?.self)
        if let existing = slot.pointee {
            let c = Unmanaged<DistinctCount.Counter>.fromOpaque(existing)
            count = c.takeUnretainedValue().count
            c.release()
            slot.pointee = nil
        }
    }
    sqlite3_result_int64(ctx, Int64(count))
}
