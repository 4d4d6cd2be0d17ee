import CCompression
#if canImport(Glibc)
import Glibc
#endif

/// Kafka's batch codecs, for the readers that need records (consume, query, compaction, time
/// lookups stay at batch level). Backed by Debian's zlib, snappy, lz4 and zstd.
public enum Compression {
    /// Largest decompressed size accepted, so a small hostile batch cannot expand without bound.
    public static let maxDecompressedBytes = 256 * 1024 * 1024

    public static func decompress(_ codec: CompressionCodec, _ bytes: UnsafeRawBufferPointer) throws(RecordBatchError) -> [UInt8] {
        guard codec != .none else { return Array(bytes) }
        var out: UnsafeMutablePointer<UInt8>?
        var length = 0
        let rc = strata_decompress(Int32(codec.rawValue), bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count,
                                   maxDecompressedBytes, &out, &length)
        defer { free(out) }
        switch rc {
        case 0: return Array(UnsafeBufferPointer(start: out, count: length))
        case -3: throw .malformedRecord("\(codec) batch decompresses to more than \(maxDecompressedBytes) bytes")
        default: throw .malformedRecord("\(codec) batch does not decompress (error \(rc))")
        }
    }

    /// Decompresses into a buffer that `body` reads in place (no copy), at most `maxBytes`.
    public static func withDecompressed<R>(_ codec: CompressionCodec, _ bytes: UnsafeRawBufferPointer, maxBytes: Int,
                                           _ body: (UnsafeRawBufferPointer) throws(RecordBatchError) -> R) throws(RecordBatchError) -> R {
        guard codec != .none else { return try body(bytes) }
        var out: UnsafeMutablePointer<UInt8>?
        var length = 0
        let rc = strata_decompress(Int32(codec.rawValue), bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count,
                                   min(maxBytes, maxDecompressedBytes), &out, &length)
        defer { free(out) }
        switch rc {
        case 0: return try body(UnsafeRawBufferPointer(start: out, count: length))
        case -3: throw .malformedRecord("\(codec) payload decompresses to more than \(min(maxBytes, maxDecompressedBytes)) bytes")
        default: throw .malformedRecord("\(codec) payload does not decompress (error \(rc))")
        }
    }

    public static func compress(_ codec: CompressionCodec, _ bytes: [UInt8]) -> [UInt8]? {
        var out: UnsafeMutablePointer<UInt8>?
        var length = 0
        let rc = bytes.withUnsafeBufferPointer { strata_compress(Int32(codec.rawValue), $0.baseAddress, $0.count, &out, &length) }
        defer { free(out) }
        return rc == 0 ? Array(UnsafeBufferPointer(start: out, count: length)) : nil
    }
}
