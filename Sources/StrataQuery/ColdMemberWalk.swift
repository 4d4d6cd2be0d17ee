import StrataLog

/// Where the wanted members of a cold block's records are: per shape, the slot (column and
/// ordinal among the shape's tokens of that column) each member is; per selected record, the
/// token of the column that holds its member. Shared by the column scan (ColdColumnScan.fill)
/// and the fold straight from columns (ColdColumnFold).
struct MemberWalk {
    typealias Place = ColdColumnScan.Place

    /// Where one record's member is: a token of the walk's local column `local`, or NULL
    /// (`absent`: no such member in the record's shape, or a null value), or the record's value
    /// stored whole (`whole`: only a scanner reads it).
    struct TokenRef {
        static let absent: Int32 = -1
        static let whole: Int32 = -2
        var local: Int32
        var isString: Bool
        var token: Int32
    }

    /// Where a member is for the selected records: its columns (`own`; a ref's `local` indexes
    /// it), and each record's token — listed (`refs`), or, dense, token i of the one column for
    /// record i (a member every value has exactly once, in every shape: no list is made).
    struct Located {
        let own: [Int]
        let dense: Bool
        let denseIsString: Bool
        let refs: ContiguousArray<TokenRef>

        /// The token of `selected[k]`, which is record `record`.
        @inline(__always) func ref(_ k: Int, record: Int32) -> TokenRef {
            dense ? TokenRef(local: 0, isString: denseIsString, token: record) : refs[k]
        }
    }

    let block: ColdColumnarBlock
    /// Per shape, the place of each wanted member.
    let places: [[Place]]
    /// Every record's value is of a shape (none null, none stored whole).
    private let allShaped: Bool
    /// Per shape, the tokens one value takes of each column some member is in (a column is a
    /// path: `items[].sku` holds the sku of every element, and a value of a shape that has the
    /// member elsewhere or not at all still takes that column's tokens).
    private let takes: [[(column: Int, count: Int)]]

    /// The walk over `block`'s shapes for `keys` (value members); nil when a member needs more
    /// than columns (the block is then decoded whole).
    ///
    /// Which slot of a shape a member is comes from the scanner the hot path runs, over the
    /// shape's skeleton: its literals with each slot replaced by the slot's number (inside the
    /// literal quotes for a string). See ColdColumnScan.
    init?(block: ColdColumnarBlock, keys: [[UInt8]], scanner: JSONMemberScanner) {
        // Record numbers are kept as Int32 (a block's budget keeps them far below).
        guard block.valueKinds.count <= Int(Int32.max) else { return nil }
        self.block = block
        var places: [[Place]] = []
        var skeleton: [UInt8] = []
        for (s, literals) in block.shapes.enumerated() {
            skeleton.removeAll(keepingCapacity: true)
            let slots = literals.count - 1
            for k in 0...slots {
                skeleton += literals[k]
                if k < slots { skeleton += Array(String(k).utf8) }
            }
            guard !skeleton.isEmpty else { return nil }  // (a crafted block: no shape of JSON is empty)
            var shapePlaces: [Place] = []
            // Not an object (an array, a string, a number): every `$.name…` path is NULL in SQLite
            // (the hot scanner leaves such values to SQLite, which says so).
            if let first = skeleton.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D }), first != UInt8(ascii: "{") {
                places.append(Array(repeating: .absent, count: keys.count))
                continue
            }
            let usable = skeleton.withUnsafeBytes { sk -> Bool in
                scanner.scan(sk)
                for j in keys.indices {
                    var slot: Int
                    let isString: Bool
                    switch scanner.field(j, in: sk.baseAddress!, arena: nil) {
                    case .null:
                        shapePlaces.append(.absent)
                        continue
                    case .integer(let v):
                        guard v >= 0, v < slots else { return false }
                        slot = Int(v)
                        isString = false
                    case .text(let p, let n):
                        guard let v = Int(String(decoding: UnsafeRawBufferPointer(start: p, count: Int(n)), as: UTF8.self)), v >= 0, v < slots else { return false }
                        slot = v
                        isString = true
                    case .real, .fallback:
                        return false
                    }
                    // A string slot's quotes are the literals around it, and only a string's.
                    guard (literals[slot].last == UInt8(ascii: "\"")) == isString else { return false }
                    let column = block.slotColumns[s][slot]
                    let ordinal = block.slotColumns[s][..<slot].filter { $0 == column }.count
                    shapePlaces.append(.slot(column: column, ordinal: ordinal, isString: isString))
                }
                return true
            }
            guard usable else {
                ColdColumnScan.giveUp("shape \(s) of \(block.shapes.count): \(String(decoding: skeleton.prefix(200), as: UTF8.self))")
                return nil
            }
            places.append(shapePlaces)
        }
        self.places = places
        var wantedColumns = Set<Int>()
        for shapePlaces in places { for case .slot(let column, _, _) in shapePlaces { wantedColumns.insert(column) } }
        var takes: [[(column: Int, count: Int)]] = []
        for columns in block.slotColumns {
            var counts: [Int: Int] = [:]
            for c in columns where wantedColumns.contains(c) { counts[c, default: 0] += 1 }
            takes.append(counts.map { ($0.key, $0.value) })
        }
        self.takes = takes
        let shapeCount = block.shapes.count
        allShaped = block.valueKinds.allSatisfy { $0 >= 2 && Int($0) - 2 < shapeCount }
    }

    /// The records that become rows: in the pending range, not markers, not aborted (their
    /// values still take tokens), inside the fold's time bounds; and how many of the range's
    /// records were considered. A batch inside the range (its offsets were checked inside the
    /// block's, in order, when the block opened) is taken whole without decoding its records'
    /// offsets; time bounds need each record's timestamp.
    func selectedRecords(_ pending: Chunk.PendingCold, rowTimestamps: (lo: Int64, hi: Int64)?) throws -> (selected: ContiguousArray<Int32>, scanned: Int) {
        var selected = ContiguousArray<Int32>()
        var scanned = 0
        selected.reserveCapacity(block.valueKinds.count)
        var records: [ColdColumnarBlock.Record]?
        for batch in block.batches {
            // Transaction markers are not records; records of aborted transactions are not read.
            if batch.isControl { continue }
            if let t = pending.transactions, batch.isTransactional, t.isAborted(producerId: batch.producerId, offset: batch.baseOffset) { continue }
            if rowTimestamps == nil && batch.baseOffset >= pending.from && batch.baseOffset &+ Int64(batch.lastOffsetDelta) < pending.end {
                scanned += batch.records.count
                for i in batch.records { selected.append(Int32(truncatingIfNeeded: i)) }
                continue
            }
            if records == nil { records = try block.records() }
            for i in batch.records {
                let r = records![i]
                guard r.offset >= pending.from && r.offset < pending.end else { continue }
                scanned += 1
                if let bounds = rowTimestamps, r.timestamp < bounds.lo || r.timestamp > bounds.hi { continue }
                selected.append(Int32(truncatingIfNeeded: i))
            }
        }
        return (selected, scanned)
    }

    /// Member `j` of each `selected` record (ascending record numbers).
    func locate(_ j: Int, _ selected: ContiguousArray<Int32>) throws -> Located {
        var refs = ContiguousArray<TokenRef>()
        let columnCount = block.tokenCounts.count
        var localOf = [Int](repeating: -1, count: columnCount)
        var own: [Int] = []
        /// Per shape: local column (-1: absent), ordinal, string slot — flat, read once per record.
        var at = ContiguousArray<(local: Int32, ordinal: Int32, isString: Bool)>()
        for shapePlaces in places {
            guard case .slot(let c, let ordinal, let isString) = shapePlaces[j] else {
                at.append((-1, 0, false))
                continue
            }
            if localOf[c] < 0 {
                localOf[c] = own.count
                own.append(c)
            }
            at.append((Int32(localOf[c]), Int32(ordinal), isString))
        }
        guard !selected.isEmpty else { return Located(own: own, dense: false, denseIsString: false, refs: refs) }
        // Per shape, the tokens a value takes of each of the member's columns (shape-major).
        let width = own.count
        var advance = ContiguousArray<Int>(repeating: 0, count: max(1, at.count * width))
        for (s, shapeTakes) in takes.enumerated() where s < at.count {
            for take in shapeTakes where localOf[take.column] >= 0 { advance[s * width + localOf[take.column]] += take.count }
        }
        let counts = own.map { block.tokenCounts[$0] }
        guard counts.allSatisfy({ $0 <= Int(Int32.max) }) else { throw QueryError("a cold column of \(counts.max() ?? 0) tokens") }
        // Dense: every record is shaped, and every shape has the member as the one token it takes
        // of a single column (a member every event has): record i's token is token i.
        if allShaped, width == 1, let first = at.first, at.allSatisfy({ $0.local == 0 && $0.ordinal == 0 && $0.isString == first.isString }),
           advance.allSatisfy({ $0 == 1 }), counts[0] == block.valueKinds.count {
            return Located(own: own, dense: true, denseIsString: first.isString, refs: [])
        }
        var cursor = [Int](repeating: 0, count: max(1, width))
        let shapeCount = at.count
        // Every record selected (the common case): no record number compared.
        let all = selected.count == block.valueKinds.count
        refs = ContiguousArray(repeating: TokenRef(local: TokenRef.absent, isString: false, token: 0), count: selected.count)
        // One pass over every record (each value advances the member's columns by the tokens its
        // shape takes of them), keeping the selected ones. Unsafe buffers: this runs per record
        // of every block, and every index below is checked against its buffer's count first.
        try block.valueKinds.withUnsafeBufferPointer { kinds in
            try selected.withUnsafeBufferPointer { selected in
                try refs.withUnsafeMutableBufferPointer { refs in
                    try at.withUnsafeBufferPointer { at in
                        try advance.withUnsafeBufferPointer { advance in
                            try cursor.withUnsafeMutableBufferPointer { cursor in
                                var next = 0  // index into `selected` and `refs`
                                for i in 0..<kinds.count {
                                    let kind = Int(kinds[i])
                                    let wanted = next < selected.count && (all || Int(selected[next]) == i)
                                    if kind >= 2 {
                                        let s = kind - 2
                                        guard s < shapeCount else { throw QueryError("value kind \(kind) of \(shapeCount) shapes") }
                                        if wanted {
                                            let place = at[s]
                                            if place.local >= 0 {
                                                let l = Int(place.local)
                                                let t = cursor[l] + Int(place.ordinal)
                                                guard t < counts[l] else { throw QueryError("a value takes a token its column does not hold") }
                                                refs[next] = TokenRef(local: place.local, isString: place.isString, token: Int32(t))
                                            }
                                        }
                                        if width == 1 {
                                            cursor[0] += advance[s]
                                        } else {
                                            for l in 0..<width { cursor[l] += advance[s * width + l] }
                                        }
                                    } else if wanted && kind == 1 {
                                        refs[next].local = TokenRef.whole
                                    }
                                    if wanted { next += 1 }
                                }
                            }
                        }
                    }
                }
            }
        }
        return Located(own: own, dense: false, denseIsString: false, refs: refs)
    }
}
