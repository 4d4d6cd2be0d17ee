import Glibc
import StrataLog

/// What a segment holds, block by block (a block is one ~256 KiB read of the segment, as
/// BlockSummaries.blockBytes says): per block a Bloom filter over the record keys and one over the
/// values of each member the topic declares (`query.index.members`), so that `key = ?` and
/// `value->>'$.m' = ? / IN (…)` skip blocks that cannot hold a match. A rare key appears in every
/// segment of a busy topic; per block, it rules out almost all of them.
///
/// One file per segment, `summaries/<topic>-<partition>/<base offset>.summary` under the data
/// directory (outside the log engine's partition directories: the log knows nothing of JSON).
/// The file names the segment it describes (base offset, next offset, size, largest timestamp);
/// a summary that no longer matches its segment (compacted, truncated, deleted) is ignored and
/// rebuilt. Layout in docs/format.md; everything read back is bounds-checked and CRC-checked.
struct SegmentSummary: Equatable {
    static let magic: [UInt8] = Array("STRSUMM1".utf8)
    static let version: UInt32 = 3
    /// Limits on what a file may declare (a damaged or hostile file is refused, not allocated).
    static let maxFileBytes = 256 << 20
    static let maxMembers = 8
    static let maxNameBytes = 256
    static let maxBloomWords = 1 << 20

    /// The segment this describes: a summary is used only while all four still match.
    struct Identity: Equatable {
        var baseOffset: Int64
        var nextOffset: Int64
        /// Bytes of log the segment holds — or, cold, was made from: a summary of a closed
        /// segment stays valid once the tier converts it (same offsets, batches and timestamps).
        var sizeInBytes: Int64
        var largestTimestamp: Int64
    }

    /// The last batch the summary covers — its base offset and CRC — checked against the log
    /// before the summary is used: a partition deleted and recreated (a topic of the same name,
    /// `inspect --repair`) has other batches at those offsets, and its summaries must not count.
    struct LastBatch: Equatable {
        var baseOffset: Int64 = -1
        var crc: UInt32 = 0
    }

    struct MemberBlock: Equatable {
        static let hasText: UInt8 = 1
        static let hasNumber: UInt8 = 2
        /// A value only SQLite can read (left to json_extract by the scanner): never pruned.
        static let unreadable: UInt8 = 4
        var flags: UInt8 = 0
        /// The smallest and largest number among the member's values (+inf/-inf without numbers;
        /// -inf/+inf when an integer beyond 2^53 makes doubles inexact).
        var minNumber = Double.infinity
        var maxNumber = -Double.infinity
        var bloom = BloomFilter(words: [])
    }

    struct Block: Equatable {
        var startOffset: Int64
        /// Exclusive: the offset the next block starts at.
        var endOffset: Int64
        var bytes: UInt32
        var records: UInt32
        var keys: BloomFilter
        var members: [MemberBlock]
    }

    var identity: Identity
    /// The topic's id (Kafka's topic UUID, new for each creation of a name): a summary of a
    /// deleted topic never describes the topic created again under its name.
    var topicId = [UInt8](repeating: 0, count: 16)
    var lastBatch = LastBatch()
    /// A summary of the flushed beginning of the active segment, up to `identity.nextOffset`
    /// (its size and largest timestamp are not recorded). Appends never change what it covers,
    /// so it stays valid while the segment is active; once the segment closes it is replaced.
    var isPrefix = false
    /// The members summarised, as declared (`user_id`, `geo.city`, `items[0].sku`).
    var members: [String]
    var blocks: [Block]

    static func directory(dataDirectory: String, topic: String, partition: Int32) -> String {
        "\(dataDirectory)/summaries/\(topic)-\(partition)"
    }

    static func fileName(baseOffset: Int64) -> String {
        let digits = String(baseOffset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".summary"
    }

    // MARK: Encoding

    func encoded() -> [UInt8] {
        var out = Self.magic
        func u8(_ v: UInt8) { out.append(v) }
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func i64(_ v: Int64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func bloom(_ b: BloomFilter) {
            u32(UInt32(b.words.count))
            for w in b.allWords { withUnsafeBytes(of: w.littleEndian) { out += $0 } }
        }
        u32(Self.version)
        u32(isPrefix ? 1 : 0)  // flags
        i64(identity.baseOffset)
        i64(identity.nextOffset)
        i64(identity.sizeInBytes)
        i64(identity.largestTimestamp)
        out += topicId.count == 16 ? topicId : [UInt8](repeating: 0, count: 16)
        i64(lastBatch.baseOffset)
        u32(lastBatch.crc)
        u32(UInt32(members.count))
        for m in members {
            let bytes = Array(m.utf8)
            u32(UInt32(bytes.count))
            out += bytes
        }
        u32(UInt32(blocks.count))
        for b in blocks {
            i64(b.startOffset)
            i64(b.endOffset)
            u32(b.bytes)
            u32(b.records)
            bloom(b.keys)
            for m in b.members {
                u8(m.flags)
                withUnsafeBytes(of: m.minNumber.bitPattern.littleEndian) { out += $0 }
                withUnsafeBytes(of: m.maxNumber.bitPattern.littleEndian) { out += $0 }
                bloom(m.bloom)
            }
        }
        let crc = out.withUnsafeBytes { CRC32C.checksum($0) }
        u32(crc)
        return out
    }

    struct Damaged: Error, CustomStringConvertible {
        let description: String
    }

    /// Decodes a file; every count and length is checked against what is left before anything is
    /// allocated, and the CRC over the whole file must match.
    static func decode(_ bytes: [UInt8]) throws(Damaged) -> SegmentSummary {
        let result: Result<SegmentSummary, Damaged> = bytes.withUnsafeBytes { raw in
            do throws(Damaged) { return .success(try decode(raw, copyingFilters: true)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Without `copyingFilters` the Bloom filters point into `bytes`, which must outlive the
    /// summary (a mapped file, read once by a query: nothing is copied).
    static func decode(_ bytes: UnsafeRawBufferPointer, copyingFilters: Bool) throws(Damaged) -> SegmentSummary {
        guard bytes.count <= maxFileBytes else { throw Damaged(description: "\(bytes.count) bytes: larger than any summary") }
        guard bytes.count >= magic.count + 4 + 4 + 32 + 16 + 12 + 4 + 4 + 4, bytes.prefix(magic.count).elementsEqual(magic) else {
            throw Damaged(description: "not a segment summary")
        }
        let body = bytes.count - 4
        let stored = bytes.loadUnaligned(fromByteOffset: body, as: UInt32.self).littleEndian
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<body]))
        guard stored == crc else { throw Damaged(description: "checksum mismatch") }
        var at = magic.count
        func need(_ n: Int) throws(Damaged) {
            guard n >= 0, n <= body - at else { throw Damaged(description: "truncated at byte \(at)") }
        }
        func u8() throws(Damaged) -> UInt8 { try need(1); defer { at += 1 }; return bytes[at] }
        func u32() throws(Damaged) -> UInt32 {
            try need(4)
            defer { at += 4 }
            return bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian
        }
        func i64() throws(Damaged) -> Int64 {
            try need(8)
            defer { at += 8 }
            return bytes.loadUnaligned(fromByteOffset: at, as: Int64.self).littleEndian
        }
        func bloom() throws(Damaged) -> BloomFilter {
            let count = Int(try u32())
            guard count <= maxBloomWords else { throw Damaged(description: "a Bloom filter of \(count) words") }
            try need(count * 8)
            defer { at += count * 8 }
            let words = UnsafeRawBufferPointer(rebasing: bytes[at..<(at + count * 8)])
            if !copyingFilters { return BloomFilter(mapped: words) }
            return BloomFilter(words: (0..<count).map { words.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self).littleEndian })
        }
        guard try u32() == version else { throw Damaged(description: "unknown version") }
        let flags = try u32()
        guard flags & ~1 == 0 else { throw Damaged(description: "unknown flags \(flags)") }
        let identity = Identity(baseOffset: try i64(), nextOffset: try i64(), sizeInBytes: try i64(), largestTimestamp: try i64())
        try need(16)
        let topicId = Array(UnsafeRawBufferPointer(rebasing: bytes[at..<at + 16]))
        at += 16
        let lastBatch = LastBatch(baseOffset: try i64(), crc: try u32())
        let memberCount = Int(try u32())
        guard memberCount <= maxMembers else { throw Damaged(description: "\(memberCount) members") }
        var members: [String] = []
        for _ in 0..<memberCount {
            let n = Int(try u32())
            guard n <= maxNameBytes else { throw Damaged(description: "a member name of \(n) bytes") }
            try need(n)
            guard let name = String(validating: UnsafeRawBufferPointer(rebasing: bytes[at..<at + n]), as: UTF8.self) else {
                throw Damaged(description: "a member name that is not UTF-8")
            }
            members.append(name)
            at += n
        }
        let blockCount = Int(try u32())
        // Each block takes at least 24 + 4 + (1 + 16 + 4) per member bytes.
        guard blockCount <= (body - at) / (28 + 21 * memberCount) else { throw Damaged(description: "\(blockCount) blocks in \(body - at) bytes") }
        var blocks: [Block] = []
        blocks.reserveCapacity(blockCount)
        var previousEnd = identity.baseOffset
        for _ in 0..<blockCount {
            let start = try i64(), end = try i64()
            guard start >= previousEnd, end > start, end <= identity.nextOffset else {
                throw Damaged(description: "block \(start)..<\(end) out of order or outside the segment")
            }
            previousEnd = end
            let size = try u32(), records = try u32()
            let keys = try bloom()
            var memberBlocks: [MemberBlock] = []
            for _ in 0..<memberCount {
                let flags = try u8()
                let lo = Double(bitPattern: UInt64(bitPattern: try i64())), hi = Double(bitPattern: UInt64(bitPattern: try i64()))
                guard !lo.isNaN, !hi.isNaN else { throw Damaged(description: "a NaN bound") }
                memberBlocks.append(MemberBlock(flags: flags, minNumber: lo, maxNumber: hi, bloom: try bloom()))
            }
            blocks.append(Block(startOffset: start, endOffset: end, bytes: size, records: records, keys: keys, members: memberBlocks))
        }
        guard at == body else { throw Damaged(description: "\(body - at) bytes after the last block") }
        return SegmentSummary(identity: identity, topicId: topicId, lastBatch: lastBatch, isPrefix: flags & 1 != 0, members: members, blocks: blocks)
    }

    /// The summary of the segment `identity` in `directory`, nil when there is none or it no
    /// longer describes that segment, or it is damaged (a summary is only ever an optimisation).
    static func load(directory: String, identity: Identity, members: [String]) -> SegmentSummary? {
        let path = directory + "/" + fileName(baseOffset: identity.baseOffset)
        guard FileIO.exists(path), let bytes = try? FileIO.readAll(path: path),
              let summary = try? decode(bytes), !summary.isPrefix, summary.identity == identity, summary.members == members else { return nil }
        return summary
    }

    /// `body` over the summary file `directory/<base>.summary` mapped, not copied (its Bloom
    /// filters point into the mapping, valid only inside `body`); nil when the file is missing
    /// or damaged, or `accept` refuses it.
    static func withMapped<T>(directory: String, baseOffset: Int64, accept: (SegmentSummary) -> Bool,
                              _ body: (SegmentSummary) -> T) -> T? {
        let path = directory + "/" + fileName(baseOffset: baseOffset)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size > 0, st.st_size <= maxFileBytes else { return nil }
        let size = Int(st.st_size)
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else { return nil }
        defer { munmap(base, size) }
        guard let summary = try? decode(UnsafeRawBufferPointer(start: base, count: size), copyingFilters: false), accept(summary) else { return nil }
        return body(summary)
    }

    /// The prefix summary of the active segment at `baseOffset`, if it covers no more than
    /// `upTo` (the segment's flushed end).
    static func loadPrefix(directory: String, baseOffset: Int64, upTo: Int64, members: [String]) -> SegmentSummary? {
        let path = directory + "/" + fileName(baseOffset: baseOffset)
        guard FileIO.exists(path), let bytes = try? FileIO.readAll(path: path), let summary = try? decode(bytes), summary.isPrefix,
              summary.identity.baseOffset == baseOffset, summary.identity.nextOffset <= upTo, summary.members == members else { return nil }
        return summary
    }

    /// Whether this still describes `log` of the topic with id `topicId`: the same creation of
    /// the topic, and the batch at `lastBatch.baseOffset` still the one summarised.
    func matches(_ log: PartitionLog, topicId: [UInt8]?) -> Bool {
        guard topicId == self.topicId, lastBatch.baseOffset >= identity.baseOffset,
              let slice = try? log.read(from: lastBatch.baseOffset, maxBytes: 1).slice else { return false }
        var same = false
        slice.forEachBatch { b in
            if !same { same = b.bytes.count >= RecordBatch.headerSize && b.baseOffset == lastBatch.baseOffset && b.crc == lastBatch.crc }
        }
        return same
    }

    /// Writes the file atomically (a crash leaves the old file or the new one).
    func write(directory: String) throws(LogError) {
        try FileIO.mkdirs(directory)
        try FileIO.replaceAtomically(directory: directory, name: Self.fileName(baseOffset: identity.baseOffset), with: encoded())
    }
}

/// A Bloom filter over 64-bit hashes (SummaryHash), 11 probes by double hashing; sized at 16 bits
/// per distinct value (~0.05% false positives: with ~1 block in 2,000 read for nothing, a needle
/// query over a year of blocks reads little more than the blocks that hold it), at least one word.
struct BloomFilter: Equatable {
    static let probes = 11
    static let bitsPerValue = 16
    /// Owned words (built, or decoded with copying)...
    private(set) var words: [UInt64]
    /// ...or little-endian words in a mapped file (a query's read-only view).
    private var mapped: UnsafeRawBufferPointer?

    init(words: [UInt64]) { self.words = words }

    init(mapped: UnsafeRawBufferPointer) {
        words = []
        self.mapped = mapped
    }

    private var wordCount: Int { mapped.map { $0.count / 8 } ?? words.count }
    var allWords: [UInt64] { (0..<wordCount).map(word) }

    @inline(__always) private func word(_ i: Int) -> UInt64 {
        if let mapped { return mapped.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self).littleEndian }
        return words[i]
    }

    static func == (a: BloomFilter, b: BloomFilter) -> Bool {
        a.wordCount == b.wordCount && (0..<a.wordCount).allSatisfy { a.word($0) == b.word($0) }
    }

    init(hashes: Set<UInt64>) {
        words = [UInt64](repeating: 0, count: max(1, min(SegmentSummary.maxBloomWords, (hashes.count * Self.bitsPerValue + 63) / 64)))
        for h in hashes { insert(h) }
    }

    private mutating func insert(_ h: UInt64) {
        let bits = UInt64(words.count) * 64
        let step = (h >> 32 | h << 32) | 1
        var probe = h
        for _ in 0..<Self.probes {
            let bit = probe % bits
            words[Int(bit / 64)] |= 1 << (bit % 64)
            probe = probe &+ step
        }
    }

    func mayContain(_ h: UInt64) -> Bool {
        let count = wordCount
        guard count > 0 else { return true }
        let bits = UInt64(count) * 64
        let step = (h >> 32 | h << 32) | 1
        var probe = h
        for _ in 0..<Self.probes {
            let bit = probe % bits
            if word(Int(bit / 64)) & (1 << (bit % 64)) == 0 { return false }
            probe = probe &+ step
        }
        return true
    }
}

/// Hashes stored in summary files: the same in every process (unlike Swift's seeded Hasher).
/// Values are tagged by SQLite storage class so that `=` semantics carry over: text by bytes,
/// numbers by value (an integral real hashes as the integer, as 1.0 = 1 in SQLite).
enum SummaryHash {
    @inline(__always) static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 33)) &* 0xff51afd7ed558ccd
        z = (z ^ (z >> 33)) &* 0xc4ceb9fe1a85ec53
        return z ^ (z >> 33)
    }

    static func text(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0xcbf29ce484222325 ^ 0x54  // 'T'
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        return mix(h ^ UInt64(bytes.count))
    }

    static func text(_ bytes: [UInt8]) -> UInt64 { bytes.withUnsafeBytes { text($0) } }

    static func integer(_ v: Int64) -> UInt64 { mix(UInt64(bitPattern: v) ^ 0x49_0000_0000_0049) }

    static func real(_ d: Double) -> UInt64 {
        if d.rounded() == d, abs(d) < 9.2e18 { return integer(Int64(d)) }
        return mix(d.bitPattern ^ 0x52_0000_0000_0052)
    }
}

extension SegmentSummary.Identity {
    /// The identity of a closed segment as the log lists it now.
    init(_ info: PartitionLog.SegmentInfo) {
        self.init(baseOffset: info.baseOffset, nextOffset: info.nextOffset, sizeInBytes: Int64(info.logBytes), largestTimestamp: info.largestTimestamp)
    }
}
