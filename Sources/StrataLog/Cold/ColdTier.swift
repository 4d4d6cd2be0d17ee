import StrataCore


/// Converting a partition's closed segments to the cold format. For now a measurement: each
/// segment is encoded block by block in memory, every block decoded again and compared record
/// for record with the log, and the sizes and times reported (`strata tier --dry-run`); swapping
/// cold files into the log and serving reads from them are the next steps.
public enum ColdTier {
    public struct SegmentReport: Sendable {
        public let partition: Int32
        public let baseOffset: Int64
        public let records: Int
        public let hotBytes: Int
        public let coldBytes: Int
        public let encodeSeconds: Double
        public let verifySeconds: Double
        /// Reading the whole segment back from cold as a consumer would (1 MiB fetches of
        /// re-encoded, uncompressed batches).
        public let serveSeconds: Double
    }

    /// Encodes and verifies every closed segment of `log` (the active one is left out).
    /// `streams`, when given, hears about every stream of every block (what each part of the
    /// records costs).
    public static func measure(log: PartitionLog, partition: Int32, streams: ((ColdBlock.StreamStats) -> Void)? = nil,
                               report: (SegmentReport) -> Void) throws {
        let bases = log.segmentBaseOffsets
        guard bases.count > 1 else { return }
        for (i, base) in bases.dropLast().enumerated() {
            let end = bases[i + 1]
            var builder = ColdSegmentFile.Builder(baseOffset: base)
            var block: [ColdBatch] = []
            var blockHot = 0
            var hot = 0
            var records = 0
            var largest: Int64 = -1
            var encodeNs: Int64 = 0
            var verifyNs: Int64 = 0
            func flush() throws {
                guard !block.isEmpty else { return }
                let t0 = monotonicNanos()
                let bytes = try builder.addBlock(block, stats: streams)
                let t1 = monotonicNanos()
                let back = try bytes.withUnsafeBytes { try ColdBlock.decode($0) }
                guard back == block else {
                    throw ColdFormatError("block at offset \(block[0].baseOffset) of partition \(partition) does not decode to the records it was made of")
                }
                verifyNs += monotonicNanos() - t1
                encodeNs += t1 - t0
                block.removeAll(keepingCapacity: true)
                blockHot = 0
            }
            var position = max(base, log.logStartOffset)
            while position < end {
                let result = try log.read(from: position, maxBytes: 4 << 20, upTo: end)
                guard let slice = result.slice else { break }
                let t0 = monotonicNanos()
                try slice.forEachBatch { batch in
                    block.append(try ColdBatch(batch))
                    blockHot += batch.sizeInBytes
                    hot += batch.sizeInBytes
                    records += Int(batch.recordCount)
                    largest = max(largest, batch.maxTimestamp)
                }
                encodeNs += monotonicNanos() - t0
                if blockHot >= ColdSegmentFile.blockHotBytes { try flush() }
                position = max(result.nextOffset, position + 1)
            }
            try flush()
            let t0 = monotonicNanos()
            let file = builder.finish(nextOffset: end, hotBytes: hot, largestTimestamp: largest)
            encodeNs += monotonicNanos() - t0
            let t2 = monotonicNanos()
            let reader = try ColdSegmentReader(file: file)
            var at = base
            while at < end, let r = try reader.read(from: at, maxBytes: 1 << 20) { at = r.nextOffset }
            let serveNs = monotonicNanos() - t2
            report(SegmentReport(partition: partition, baseOffset: base, records: records, hotBytes: hot, coldBytes: file.count,
                                 encodeSeconds: Double(encodeNs) / 1e9, verifySeconds: Double(verifyNs) / 1e9, serveSeconds: Double(serveNs) / 1e9))
        }
    }
}
