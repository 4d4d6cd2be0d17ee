import StrataLog

/// A folded GROUP BY (FoldedAggregates) straight from a cold block's columns: no row, no cell per
/// row, no key hashed per row.
///
/// The GROUP BY member's column is dictionary-coded, so a record's group is its token's entry
/// (and slot kind, string or not): each entry used is converted once, as the column scan
/// converts it (ColumnReader), and hashed once into the chunk's groups; the record then only
/// looks its entry's group up. The folded members are stepped straight into the groups'
/// partial aggregates (FoldPartial), in log order, and the SQLite thread merges the partials.
///
/// Whatever this does not cover gives nil, and the block takes the column scan (ColdColumnScan)
/// and ChunkGroups.build: filters, more than one GROUP BY term, a GROUP BY member that is not
/// dictionary-coded in every column it is in, values stored whole, tokens the scanner would
/// leave to SQLite, text in a summed member.
enum ColdColumnFold {
    /// Most summed values one block's fold holds (8 bytes each).
    static let summedValuesLimit = 1 << 23

    /// Whether a grouped scan with `spec` may fold from cold columns.
    static func applies(to spec: GroupingSpec) -> Bool {
        spec.fold && spec.filters.isEmpty && spec.tests.isEmpty && spec.keySlots.count <= 1
            && spec.columns.allSatisfy { $0 >= spec.firstMember && $0 != spec.dayColumn } && spec.folds.allSatisfy(FoldPartial.applies)
    }

    /// Folds `chunk`'s pending cold block (`block`, opened) into `chunk.groups`; the records of the
    /// range considered, or nil when this does not cover the block (the chunk is as it was).
    static func fold(_ chunk: Chunk, block: ColdColumnarBlock, spec: GroupingSpec, keys: [[UInt8]]) throws -> Int? {
        guard let pending = chunk.pendingCold, !keys.contains(where: { $0.first == 0xFF }) else { return nil }
        let memberOf = spec.columns.map { Int($0 - spec.firstMember) }
        guard memberOf.allSatisfy({ $0 >= 0 && $0 < keys.count }) else { return nil }
        guard let walk = MemberWalk(block: block, keys: keys, scanner: JSONMemberScanner(keys: keys, stopEarly: false)) else { return nil }
        let (selected, scanned) = try walk.selectedRecords(pending, rowTimestamps: spec.rowTimestamps)
        let arena = chunk.arena
        var readers: [Int: ColumnReader] = [:]
        var located: [Int: MemberWalk.Located] = [:]
        func locate(_ j: Int) throws -> MemberWalk.Located {
            if let known = located[j] { return known }
            let found = try walk.locate(j, selected)
            for c in found.own where readers[c] == nil { readers[c] = ColumnReader(try block.values(c)) }
            located[j] = found
            return found
        }

        // Each selected record's group, each group's key cell, first record and size.
        let n = selected.count
        var rowGroup = ContiguousArray<Int32>(repeating: 0, count: n)
        var keyCells = ContiguousArray<GroupedRows.Cell>()
        var sizes = ContiguousArray<Int>()
        var index = GroupIndex(initialSlots: 64)
        if let keySlot = spec.keySlots.first {
            let member = try locate(memberOf[keySlot])
            let own = member.own
            // Codes: 0 is NULL; entry e of local column l is 1 + 2 * (entryBase[l] + e), + 1 in a string slot.
            var entryBase: [Int] = []
            var entries = 0
            var indexes: [[UInt32]] = []
            for c in own {
                guard case .dictionary(let tokens, let i) = readers[c]!.column.values else { return nil }
                entryBase.append(entries)
                entries += tokens.ends.count
                indexes.append(i)
            }
            var codeGroup = ContiguousArray<Int32>(repeating: -1, count: 1 + 2 * entries)
            // Dense (the member in every value, one column): the record's entry is its token's.
            let denseIndexes = member.dense ? indexes[0] : []
            let denseCode = member.denseIsString ? 2 : 1
            var k = 0
            while k < n {
                if member.dense {
                    // The records whose entry has its group already, in one unchecked loop: a
                    // selected record is below the block's record count, which is the column's
                    // token count (dense), and an entry below the entry count (checked when the
                    // column was decoded), so every index is in its buffer.
                    k = denseIndexes.withUnsafeBufferPointer { idx in
                        selected.withUnsafeBufferPointer { sel in
                            codeGroup.withUnsafeBufferPointer { cg in
                                rowGroup.withUnsafeMutableBufferPointer { rg in
                                    var k = k
                                    while k < n {
                                        let g = cg[2 * Int(idx[Int(sel[k])]) + denseCode]
                                        if g < 0 { break }
                                        rg[k] = g
                                        k += 1
                                    }
                                    return k
                                }
                            }
                        }
                    }
                    if k == n { break }
                }
                let ref = member.ref(k, record: selected[k])
                var code = 0
                if ref.local >= 0 {
                    let entry = Int(indexes[Int(ref.local)][Int(ref.token)])
                    code = 1 + 2 * (entryBase[Int(ref.local)] + entry) + (ref.isString ? 1 : 0)
                } else if ref.local == MemberWalk.TokenRef.whole {
                    return nil
                }
                var g = Int(codeGroup[code])
                if g < 0 {
                    // The entry's key, converted once; entries equal as keys (1 and 1.0) share a group.
                    var key = GroupedRows.Cell.null
                    if ref.local >= 0 {
                        guard let field = readers[own[Int(ref.local)]]!.field(Int(ref.token), isString: ref.isString, arena: arena),
                              let cell = GroupedRows.Cell(field) else { return nil }
                        key = cell
                    }
                    let (found, isNew) = index.findOrAdd(hash: key.key.hash) { keyCells[$0].key == key.key }
                    if isNew {
                        keyCells.append(key)
                        sizes.append(0)
                    }
                    g = found
                    codeGroup[code] = Int32(g)
                }
                rowGroup[k] = Int32(g)
                k += 1
            }
            sizes.withUnsafeMutableBufferPointer { sizes in
                for g in rowGroup { sizes[Int(g)] += 1 }
            }
        } else if n > 0 {
            _ = index.findOrAdd(hash: 0) { _ in true }
            keyCells.append(.null)
            sizes.append(n)
        }

        // The folded aggregates' partials, stepped in log order.
        let folds = spec.folds
        guard FoldPartial.hold(for: folds, keys: keyCells) else { return nil }
        let groupCount = sizes.count
        var partials = ContiguousArray<FoldPartial>(repeating: FoldPartial(), count: groupCount * folds.count)
        var roomStart = ContiguousArray<Int>(repeating: 0, count: groupCount + 1)
        for g in 0..<groupCount { roomStart[g + 1] = roomStart[g] + sizes[g] }
        let summed = folds.filter { $0.function.adds }.count
        // Room for every summed value of the block (a real block holds ~40k records): one
        // declaring far more (up to its byte budget) takes the column scan instead.
        guard n * summed <= Self.summedValuesLimit else { return nil }
        var reals = ContiguousArray<Double>(repeating: 0, count: n * summed)
        var sumNumber = 0
        for (a, f) in folds.enumerated() {
            let adds = f.function.adds
            if adds {
                for g in 0..<groupCount { partials[g * folds.count + a].realStart = sumNumber * n + roomStart[g] }
                sumNumber += 1
            }
            let member = try locate(memberOf[f.cellSlot])
            let own = member.own
            var local = own.map { readers[$0]! }
            // Numbers read straight from a dense integer or decimal column (not through `field`,
            // which steps a dictionary's conversions in place).
            let numbers = member.dense && !member.denseIsString ? local.first : nil
            let function = f.function
            let usable = reals.withUnsafeMutableBufferPointer { r in
                partials.withUnsafeMutableBufferPointer { p in
                    if let numbers, member.dense {
                        // Numbers by record number (dense: each selected record is below the
                        // column's token count), straight from the column where they are exact.
                        let room = r.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!
                        return selected.withUnsafeBufferPointer { sel in
                            rowGroup.withUnsafeBufferPointer { rg in
                                for k in 0..<n {
                                    let t = Int(sel[k])
                                    var cell = GroupedRows.Cell.null
                                    if let number = numbers.number(t) {
                                        cell = number
                                    } else {
                                        guard let field = local[0].field(t, isString: false, arena: arena), let c = GroupedRows.Cell(field) else { return false }
                                        if adds && !FoldPartial.steps(c) { return false }
                                        cell = c
                                    }
                                    p[Int(rg[k]) * folds.count + a].add(cell, function, reals: room)
                                }
                                return true
                            }
                        }
                    }
                    for k in 0..<n {
                        let ref = member.ref(k, record: selected[k])
                        var cell = GroupedRows.Cell.null
                        if ref.local >= 0 {
                            guard let field = local[Int(ref.local)].field(Int(ref.token), isString: ref.isString, arena: arena),
                                  let c = GroupedRows.Cell(field) else { return false }
                            cell = c
                        } else if ref.local == MemberWalk.TokenRef.whole {
                            return false
                        }
                        if adds && !FoldPartial.steps(cell) { return false }
                        p[Int(rowGroup[k]) * folds.count + a].add(cell, function, reals: r.baseAddress ?? UnsafeMutablePointer(bitPattern: 8)!)
                    }
                    return true
                }
            }
            // (Dictionary conversions learned here are kept for the next aggregate of the column.)
            for (l, c) in own.enumerated() { readers[c] = local[l] }
            local = []
            guard usable else { return nil }
        }
        chunk.pendingCold = nil
        guard groupCount > 0 else { return scanned }
        chunk.coldMemory = [block] + readers.values.map { $0.column }
        let width = spec.width
        let out = ChunkGroups(rows: groupCount, width: width, chunk: chunk, keepsColdBlock: true)
        for g in 0..<groupCount {
            // One row per group: its key (the other stored columns are not read in a fold).
            for s in 0..<width { out.cells[g * width + s] = s == spec.keySlots.first ? keyCells[g] : .null }
            out.groups.append((index.hashes[g], g, sizes[g]))
        }
        out.partials = partials
        out.reals = reals
        chunk.groups = out
        return scanned
    }
}
