import StrataBroker
import StrataCore
import StrataLog
import Synchronization

/// Builds and finds the per-block summaries of closed segments (SegmentSummary): the server runs
/// `build` in the background (`strata serve`, every `indexIntervalMs`), `strata index TOPIC`
/// runs it now, and `strata query` reads what is there — a segment without a summary is simply
/// read in full.
public enum BlockSummaries {
    public struct Report: Sendable, Equatable {
        public var segmentsClosed = 0
        public var segmentsBuilt = 0
        public var blocks = 0
        public var bytesScanned = 0
        public var summaryBytes = 0
        public var filesRemoved = 0
        public init() {}
    }

    /// Bytes of a summary block (one read of the builder; the last of a segment may be smaller).
    /// Smaller blocks make a needle read less around each match; larger ones make summaries
    /// smaller: at 256 KiB they are ~1% of the log with two members.
    static let blockBytes = 256 << 10

    /// The members of `query.index.members` that the fast path can read (others are skipped).
    static func members(_ config: TopicConfig?) -> [String] {
        Array((config?.queryIndexMembers ?? []).filter { JSONColumns.memberName("$." + $0) == $0 }.prefix(SegmentSummary.maxMembers))
    }

    /// What a long-running builder (the server's pass) remembers between passes: summaries it
    /// wrote or checked, so that a later pass does not read every file again to find them current.
    public final class Memory: Sendable {
        let current = Mutex(Set<String>())
        /// Entries of segments long deleted accumulate: past this many, the memory starts over
        /// (the next pass checks each file once more).
        static let limit = 200_000
        public init() {}

        func remember(_ entry: String) {
            current.withLock { set in
                if set.count >= Self.limit { set.removeAll(keepingCapacity: true) }
                set.insert(entry)
            }
        }
    }

    /// Summarises every closed segment of `topic` that has no up-to-date summary, and removes
    /// summaries of segments that are gone. Stops between segments after `maxBytes` of log or
    /// when `shouldStop` says so.
    public static func build(broker: Broker, topic: String, maxBytes: Int = .max, memory: Memory? = nil,
                             shouldStop: () -> Bool = { false }) throws -> Report {
        var report = Report()
        guard let partitions = broker.partitionCount(topic) else { throw QueryError("unknown topic '\(topic)'") }
        let members = Self.members(broker.topicConfig(topic))
        let topicId = broker.topicId(topic)
        let context = try QueryContext(broker: broker, topics: [topic])
        for partition in 0..<partitions {
            let log = try broker.log(topic: topic, partition: partition)
            let directory = SegmentSummary.directory(dataDirectory: broker.dataDirectory, topic: topic, partition: partition)
            let infos = try log.segmentInfos()
            let closed = infos.filter { !$0.isActive && $0.sizeInBytes > 0 && $0.nextOffset > $0.baseOffset }
            report.segmentsClosed += closed.count
            // The directory listing is the truth: files for segments that are gone go too.
            let wanted = Set(infos.map { SegmentSummary.fileName(baseOffset: $0.baseOffset) })
            for name in (try? FileIO.listDirectory(directory)) ?? [] where !wanted.contains(name) {
                try FileIO.unlink(directory + "/" + name)
                report.filesRemoved += 1
            }
            for info in closed {
                if shouldStop() || report.bytesScanned >= maxBytes { return report }
                let identity = SegmentSummary.Identity(info)
                let remembered = "\(directory)/\(info.baseOffset) \(identity) \(topicId ?? []) \(members)"
                if memory?.current.withLock({ $0.contains(remembered) }) == true { continue }
                if let existing = SegmentSummary.load(directory: directory, identity: identity, members: members), existing.matches(log, topicId: topicId) {
                    memory?.remember(remembered)
                    continue
                }
                var summary = try summarise(context: context, topic: topic, partition: partition, identity: identity, members: members)
                summary.lastBatch = Self.lastBatch(log, before: identity.nextOffset)
                summary.topicId = topicId ?? summary.topicId
                try summary.write(directory: directory)
                memory?.remember(remembered)
                report.segmentsBuilt += 1
                report.blocks += summary.blocks.count
                report.bytesScanned += summary.blocks.reduce(0) { $0 + Int($1.bytes) }
                report.summaryBytes += FileIO.fileSize(path: directory + "/" + SegmentSummary.fileName(baseOffset: identity.baseOffset)) ?? 0
            }
            // The active segment: its flushed beginning, extended from where the last pass ended.
            if let active = infos.last, active.isActive, !shouldStop() {
                let flushedEnd = min(log.recoveryPoint, active.nextOffset)
                var summary = SegmentSummary.loadPrefix(directory: directory, baseOffset: active.baseOffset, upTo: flushedEnd, members: members)
                    .flatMap { $0.matches(log, topicId: topicId) ? $0 : nil }
                    ?? SegmentSummary(identity: .init(baseOffset: active.baseOffset, nextOffset: active.baseOffset, sizeInBytes: 0, largestTimestamp: -1),
                                      topicId: topicId ?? [UInt8](repeating: 0, count: 16), isPrefix: true, members: members, blocks: [])
                if flushedEnd > summary.identity.nextOffset {
                    let more = try summarise(context: context, topic: topic, partition: partition, identity: .init(
                        baseOffset: summary.identity.nextOffset, nextOffset: flushedEnd, sizeInBytes: 0, largestTimestamp: -1), members: members)
                    if !more.blocks.isEmpty {
                        summary.blocks += more.blocks
                        summary.identity.nextOffset = flushedEnd
                        summary.identity.sizeInBytes += Int64(more.blocks.reduce(0) { $0 + Int($1.bytes) })
                        summary.lastBatch = Self.lastBatch(log, before: flushedEnd)
                        try summary.write(directory: directory)
                        report.blocks += more.blocks.count
                        report.bytesScanned += more.blocks.reduce(0) { $0 + Int($1.bytes) }
                    }
                }
            }
        }
        return report
    }

    /// The batch holding offset `end - 1`: the summary's check against a recreated partition.
    static func lastBatch(_ log: PartitionLog, before end: Int64) -> SegmentSummary.LastBatch {
        var found = SegmentSummary.LastBatch()
        guard let slice = try? log.read(from: end - 1, maxBytes: 1).slice else { return found }
        slice.forEachBatch { b in
            if found.baseOffset < 0 { found = .init(baseOffset: b.baseOffset, crc: b.crc) }
        }
        return found
    }

    /// Every topic that declares `query.index.members` (the server's background pass: topics
    /// that did not ask for summaries cost nothing); errors are reported per topic, not thrown.
    /// A pass reads at most `maxBytesPerPass` of log (a little more: whole segments), so that a
    /// server opening years of unsummarised history catches up over many passes instead of
    /// taking a core and the disk away from its clients.
    public static func buildAll(broker: Broker, maxBytesPerPass: Int = .max, memory: Memory? = nil,
                                shouldStop: () -> Bool = { false }) -> [(topic: String, result: Result<Report, Error>)] {
        removeDeletedPartitions(broker: broker)
        var read = 0
        var results: [(topic: String, result: Result<Report, Error>)] = []
        for topic in broker.topicNames() where !topic.hasPrefix("__") && !(broker.topicConfig(topic)?.queryIndexMembers.isEmpty ?? true) {
            if read >= maxBytesPerPass || shouldStop() { break }
            let result = Result { try build(broker: broker, topic: topic, maxBytes: maxBytesPerPass - read, memory: memory, shouldStop: shouldStop) }
            if case .success(let report) = result { read += report.bytesScanned }
            results.append((topic, result))
        }
        return results
    }

    /// Summaries of partitions that no longer exist (deleted topics) are removed.
    static func removeDeletedPartitions(broker: Broker) {
        let root = broker.dataDirectory + "/summaries"
        for name in (try? FileIO.listDirectory(root)) ?? [] {
            guard let dash = name.lastIndex(of: "-"), let partition = Int32(name[name.index(after: dash)...]) else { continue }
            let topic = String(name[..<dash])
            if let count = broker.partitionCount(topic), partition < count { continue }
            try? FileIO.removeTree(root + "/" + name)
        }
    }

    /// One segment, `blockBytes` at a time; each read is a block.
    static func summarise(context: QueryContext, topic: String, partition: Int32, identity: SegmentSummary.Identity,
                          members: [String]) throws -> SegmentSummary {
        var reader = ChunkReader(context: context, topic: topic, ranges: [(partition, identity.baseOffset, identity.nextOffset)])
        reader.readBytes = blockBytes
        let scanner = JSONMemberScanner(keys: members.map(JSONColumns.scanKey), stopEarly: false)
        var blocks: [SegmentSummary.Block] = []
        var start = identity.baseOffset
        while reader.rangeIndex == 0 {
            guard let chunk = try reader.readChunk() else { break }
            let bytes = reader.lastSliceBytes
            let end = reader.rangeIndex == 0 ? reader.position : identity.nextOffset
            var keys = Set<UInt64>()
            var values = [Set<UInt64>](repeating: [], count: members.count)
            var flags = [UInt8](repeating: 0, count: members.count)
            var lows = [Double](repeating: .infinity, count: members.count)
            var highs = [Double](repeating: -.infinity, count: members.count)
            for row in chunk.rows {
                if let key = row.key { keys.insert(SummaryHash.text(UnsafeRawBufferPointer(start: key, count: Int(row.keyCount)))) }
                guard !members.isEmpty, let value = row.value, row.valueCount >= 0 else { continue }
                scanner.scan(UnsafeRawBufferPointer(start: value, count: Int(row.valueCount)))
                for m in members.indices {
                    switch scanner.field(m, in: value, arena: chunk.arena) {
                    case .null: break
                    case .text(let p, let n):
                        values[m].insert(SummaryHash.text(UnsafeRawBufferPointer(start: p, count: Int(n))))
                        flags[m] |= SegmentSummary.MemberBlock.hasText
                    case .integer(let i):
                        values[m].insert(SummaryHash.integer(i))
                        flags[m] |= SegmentSummary.MemberBlock.hasNumber
                        if i.magnitude > 1 << 53 {
                            (lows[m], highs[m]) = (-.infinity, .infinity)  // doubles no longer exact
                        } else {
                            lows[m] = min(lows[m], Double(i))
                            highs[m] = max(highs[m], Double(i))
                        }
                    case .real(let d):
                        values[m].insert(SummaryHash.real(d))
                        flags[m] |= SegmentSummary.MemberBlock.hasNumber
                        lows[m] = min(lows[m], d)
                        highs[m] = max(highs[m], d)
                    case .fallback:
                        flags[m] |= SegmentSummary.MemberBlock.unreadable
                    }
                }
            }
            if end > start {
                blocks.append(SegmentSummary.Block(
                    startOffset: start, endOffset: end, bytes: UInt32(clamping: bytes), records: UInt32(clamping: chunk.rows.count),
                    keys: BloomFilter(hashes: keys),
                    members: members.indices.map {
                        SegmentSummary.MemberBlock(flags: flags[$0], minNumber: lows[$0], maxNumber: highs[$0], bloom: BloomFilter(hashes: values[$0]))
                    }))
            }
            start = end
        }
        return SegmentSummary(identity: identity, members: members, blocks: blocks)
    }
}

/// The blocks a scan may skip: for each partition, offset ranges whose summaries rule out every
/// pushed-down equality (key or member). Built when a scan starts, from the summary files of the
/// segments the scan's ranges cover; segments without an up-to-date summary are read in full.
struct BlockSkips {
    struct Skip {
        let start: Int64
        let end: Int64
        let bytes: Int
    }
    private(set) var byPartition: [Int32: [Skip]] = [:]
    var blocksConsidered = 0
    var segmentsWithoutSummary = 0

    static func build(context: QueryContext, topic: String, ranges: [(partition: Int32, start: Int64, end: Int64)],
                      keyFilter: KeyFilter?, memberFilters: [MemberFilter], memberRanges: [MemberRange] = []) throws -> BlockSkips {
        var skips = BlockSkips()
        guard keyFilter != nil || !memberFilters.isEmpty || !memberRanges.isEmpty else { return skips }
        let members = BlockSummaries.members(context.broker.topicConfig(topic))
        let topicId = context.broker.topicId(topic)
        func index(_ memberId: Int) -> Int? {
            memberId < context.memberColumns.count ? members.firstIndex(of: context.memberColumns[memberId]) : nil
        }
        // Filters on members without a summary cannot prune; without any usable filter, stop.
        let usable = memberFilters.compactMap { f in index(f.memberId).map { ($0, f) } }
        let usableRanges = memberRanges.compactMap { r in index(r.memberId).map { ($0, r) } }
        guard keyFilter != nil || !usable.isEmpty || !usableRanges.isEmpty else { return skips }
        for range in ranges {
            let log = try context.broker.log(topic: topic, partition: range.partition)
            let directory = SegmentSummary.directory(dataDirectory: context.broker.dataDirectory, topic: topic, partition: range.partition)
            var list: [Skip] = []
            for info in try log.segmentInfos() where info.nextOffset > range.start && info.baseOffset < range.end {
                // The summary that still describes this segment (for the active one, a prefix
                // summary of its flushed part; the rest is read), mapped for the time it is used.
                let identity = SegmentSummary.Identity(info)
                let accept: (SegmentSummary) -> Bool = { s in
                    guard s.members == members else { return false }
                    return info.isActive ? s.isPrefix && s.identity.baseOffset == info.baseOffset && s.identity.nextOffset <= info.nextOffset
                                         : !s.isPrefix && s.identity == identity
                }
                let found: Void? = SegmentSummary.withMapped(directory: directory, baseOffset: info.baseOffset,
                                                             accept: { accept($0) && $0.matches(log, topicId: topicId) }) { summary in
                    for block in summary.blocks where block.endOffset > range.start && block.startOffset < range.end {
                        skips.blocksConsidered += 1
                        let excluded = (keyFilter.map { !$0.mayMatch(block.keys) } ?? false)
                            || usable.contains { (index, filter) in !filter.mayMatch(block.members[index]) }
                            || usableRanges.contains { (index, range) in !range.mayMatch(block.members[index]) }
                        if excluded { list.append(Skip(start: block.startOffset, end: block.endOffset, bytes: Int(block.bytes))) }
                    }
                }
                if found == nil && !info.isActive { skips.segmentsWithoutSummary += 1 }
            }
            if !list.isEmpty { skips.byPartition[range.partition] = list }
        }
        return skips
    }

    /// Where the first skip after `offset` starts (reads stop there), if any.
    func nextStart(partition: Int32, after offset: Int64) -> Int64? {
        guard let list = byPartition[partition] else { return nil }
        let i = Self.firstIndex(list) { $0.start > offset }
        return i < list.count ? list[i].start : nil
    }

    /// The skip holding `offset` in `partition`, if any.
    func skip(partition: Int32, at offset: Int64) -> Skip? {
        guard let list = byPartition[partition] else { return nil }
        let i = Self.firstIndex(list) { $0.end > offset }
        return i < list.count && list[i].start <= offset ? list[i] : nil
    }

    /// Binary search over skips in offset order (they do not overlap, so starts and ends both
    /// grow): the first index where `after` holds, `list.count` when none.
    private static func firstIndex(_ list: [Skip], where after: (Skip) -> Bool) -> Int {
        var (lo, hi) = (0, list.count)
        while lo < hi {
            let mid = (lo + hi) / 2
            if after(list[mid]) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }
}
