import Testing
@testable import StrataLog

@Suite struct IndexTests {
    @Test func offsetIndexLookupAtEveryBoundary() throws {
        let dir = TempDirectory()
        let base: Int64 = 1000
        let file = try IndexFile.openWritable(path: dir.file("x.index"), entrySize: OffsetIndex.entrySize, maxBytes: 8 * 100, validEntries: 0)
        try file.reserveRoom(forEntries: 100)
        let index = OffsetIndex(baseOffset: base, file: file)
        // Empty index: every lookup answers (base, 0), the start of the segment.
        #expect(index.lookup(base + 5).offset == base)
        #expect(index.lookup(base + 5).position == 0)
        let entries: [(Int64, Int)] = (1...50).map { (base + Int64($0) * 10, $0 * 4096) }
        for e in entries { index.append(offset: e.0, position: e.1) }
        #expect(index.entryCount == 50)
        for (i, e) in entries.enumerated() {
            #expect(index.lookup(e.0).position == e.1, "exact entry \(i)")
            #expect(index.lookup(e.0 + 9).position == e.1, "just below next entry \(i)")
            let below = index.lookup(e.0 - 1)
            #expect(below.position == (i == 0 ? 0 : entries[i - 1].1), "just below entry \(i)")
        }
        #expect(index.lookup(base).position == 0)
        #expect(index.lookup(Int64.max).position == entries.last!.1)
        #expect(index.sanityCheck(logSize: 51 * 4096) == nil)
        #expect(index.sanityCheck(logSize: 4096) != nil, "positions beyond the log are caught")
    }

    @Test func timeIndexStaysMonotonicAndLooksUpFloor() throws {
        let dir = TempDirectory()
        let file = try IndexFile.openWritable(path: dir.file("x.timeindex"), entrySize: TimeIndex.entrySize, maxBytes: 12 * 10, validEntries: 0)
        try file.reserveRoom(forEntries: 10)
        let index = TimeIndex(baseOffset: 0, file: file)
        index.maybeAppend(timestamp: 100, offset: 0)
        index.maybeAppend(timestamp: 100, offset: 5)  // not above last: skipped
        index.maybeAppend(timestamp: 90, offset: 6)   // going back in time: skipped
        index.maybeAppend(timestamp: 200, offset: 10)
        index.maybeAppend(timestamp: 300, offset: 20)
        #expect(index.entryCount == 3)
        #expect(index.lookup(99).timestamp == -1)
        #expect(index.lookup(99).offset == 0)
        #expect(index.lookup(100).offset == 0)
        #expect(index.lookup(199).offset == 0)
        #expect(index.lookup(200).offset == 10)
        #expect(index.lookup(250).offset == 10)
        #expect(index.lookup(Int64.max).offset == 20)
        #expect(index.lastEntry?.timestamp == 300)
        #expect(index.sanityCheck(nextOffset: 21) == nil)
        #expect(index.sanityCheck(nextOffset: 15) != nil)
    }

    @Test func sealTrimsAndReopenReadsTheSameEntries() throws {
        let dir = TempDirectory()
        let path = dir.file("y.index")
        let file = try IndexFile.openWritable(path: path, entrySize: 8, maxBytes: 8 * 1000, validEntries: 0)
        let index = OffsetIndex(baseOffset: 0, file: file)
        #expect(FileIO.fileSize(path: path) == 0, "nothing reserved before the first entry")
        try file.reserveRoom(forEntries: 7)
        #expect(FileIO.fileSize(path: path) == 4096, "one page reserved, not the maximum")
        for i in 1...7 { index.append(offset: Int64(i * 3), position: i * 100) }
        try file.seal()
        #expect(FileIO.fileSize(path: path) == 56, "trimmed to its entries")
        let reopened = OffsetIndex(baseOffset: 0, file: try IndexFile.openReadOnly(path: path, entrySize: 8))
        #expect(reopened.entryCount == 7)
        #expect(reopened.lookup(10).position == 300)
    }

    @Test func indexWithPartialEntryIsRefused() throws {
        let dir = TempDirectory()
        let path = dir.file("z.index")
        try IndexFile.writeFile(path: path, entries: [UInt8](repeating: 1, count: 13))
        #expect(throws: LogError.self) { try IndexFile.openReadOnly(path: path, entrySize: 8) }
    }
}
