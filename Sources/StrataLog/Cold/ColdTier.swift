import StrataCore

/// `strata tier --dry-run`: the cold format measured on a partition's closed segments without
/// writing anything — each encoded and verified as a conversion would (`encodeCold`), then read
/// back as a cold Fetch does (each block decoded and its batches written uncompressed).
public enum ColdTier {
    public struct SegmentReport: Sendable {
        public let partition: Int32
        public let baseOffset: Int64
        public let records: Int
        public let hotBytes: Int
        public let coldBytes: Int
        public let encodeSeconds: Double
        public let verifySeconds: Double
        /// Serving the whole segment from cold as a Fetch does: every block decoded, its batches
        /// written as uncompressed RecordBatches.
        public let serveSeconds: Double
    }

    /// Encodes, verifies and reads back every closed hot segment of `log` (the active one and
    /// segments already cold are left out). `streams`, when given, hears about every stream of
    /// every block (what each part of the records costs).
    public static func measure(log: PartitionLog, partition: Int32, streams: ((ColdBlock.StreamStats) -> Void)? = nil,
                               report: (SegmentReport) -> Void) throws {
        let segments = log.segmentList.withLock { $0 }
        for (i, segment) in segments.enumerated().dropLast() where !segment.isCold {
            let (file, encoded) = try log.encodeCold(segment, end: segments[i + 1].baseOffset, streams: streams)
            let t0 = monotonicNanos()
            let cold = try file.withUnsafeBytes { try ColdSegmentFile(parsing: $0) }
            var scratch: [UInt8] = []
            for entry in cold.blocks {
                let flat = try file.withUnsafeBytes { f in
                    try ColdBlock.decodeFlat(UnsafeRawBufferPointer(rebasing: f[entry.fileOffset..<(entry.fileOffset + entry.length)]))
                }
                for b in flat.batches.indices {
                    let size = flat.uncompressedBatchSize(b)
                    if scratch.count < size { scratch = [UInt8](repeating: 0, count: size) }
                    scratch.withUnsafeMutableBytes { flat.writeUncompressedBatch(b, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<size])) }
                }
            }
            report(SegmentReport(partition: partition, baseOffset: segment.baseOffset, records: encoded.records, hotBytes: encoded.hotBytes,
                                 coldBytes: encoded.coldBytes, encodeSeconds: encoded.encodeSeconds, verifySeconds: encoded.verifySeconds,
                                 serveSeconds: Double(monotonicNanos() - t0) / 1e9))
        }
    }
}
