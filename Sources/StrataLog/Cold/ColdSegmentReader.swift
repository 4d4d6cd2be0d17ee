

/// Reads a cold segment the way the log reads a hot one: batches from an offset (re-encoded
/// RecordBatch v2 bytes, whole batches, up to a byte budget, at least one) and the first record
/// at or after a time. Only the blocks a read touches are decoded; the last decoded block is
/// kept for the next read (consumers read forward).
public final class ColdSegmentReader {
    public let file: [UInt8]
    public let segment: ColdSegmentFile
    public let compression: CompressionCodec
    private var cachedBlock = -1
    private var cachedBatches: [ColdBatch] = []

    /// `file`: a whole cold segment file (checked: header CRC; each block's CRC when decoded).
    public init(file: [UInt8], compression: CompressionCodec = .none) throws {
        self.file = file
        self.segment = try file.withUnsafeBytes { try ColdSegmentFile(parsing: $0) }
        self.compression = compression
    }

    private func batches(ofBlock i: Int) throws -> [ColdBatch] {
        if i != cachedBlock {
            cachedBatches = try file.withUnsafeBytes { try segment.batches(ofBlock: i, in: $0) }
            cachedBlock = i
        }
        return cachedBatches
    }

    /// The block holding `offset`: the last whose first offset is at or below it.
    private func block(containing offset: Int64) -> Int? {
        var lo = 0, hi = segment.blocks.count - 1
        var found: Int?
        while lo <= hi {
            let mid = (lo + hi) / 2
            if segment.blocks[mid].firstOffset <= offset {
                found = mid
                lo = mid + 1
            } else {
                hi = mid - 1
            }
        }
        return found ?? (segment.blocks.isEmpty ? nil : 0)
    }

    /// Batches from the one holding `offset` (or the first after it), whole, until `maxBytes`
    /// (at least one batch) or the segment's end: their bytes and the offset after the last.
    public func read(from offset: Int64, maxBytes: Int) throws -> (bytes: [UInt8], nextOffset: Int64)? {
        guard var b = block(containing: offset) else { return nil }
        var out: [UInt8] = []
        var next = offset
        while b < segment.blocks.count {
            for batch in try batches(ofBlock: b) {
                let batchNext = batch.baseOffset &+ Int64(batch.lastOffsetDelta) &+ 1
                guard batchNext > offset else { continue }
                let bytes = try batch.recordBatch(compression: compression)
                if !out.isEmpty && out.count + bytes.count > maxBytes { return (out, next) }
                out.append(contentsOf: bytes)
                next = batchNext
            }
            b += 1
        }
        return out.isEmpty ? nil : (out, next)
    }

    /// The first record whose timestamp is at or after `timestamp` (blocks skipped by their
    /// largest timestamp), as the log's time lookup answers.
    public func record(forTimestamp timestamp: Int64) throws -> (offset: Int64, timestamp: Int64)? {
        for (i, entry) in segment.blocks.enumerated() where entry.maxTimestamp >= timestamp {
            for batch in try batches(ofBlock: i) where batch.maxTimestamp >= timestamp {
                // Under LogAppendTime every record carries the batch's time.
                if batch.attributes & 0x8 != 0 { return (batch.baseOffset, batch.maxTimestamp) }
                if let r = batch.records.first(where: { $0.timestamp >= timestamp }) { return (r.offset, r.timestamp) }
            }
        }
        return nil
    }
}
