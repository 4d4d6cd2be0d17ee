/// Kafka's default partitioner for keyed records: murmur2 of the key bytes, made positive, modulo
/// the partition count. Identical to the Java client's `Utils.murmur2` / `toPositive`, so keyed
/// data lands in the same partition as it would on a Kafka cluster with the same partition count.
public enum Partitioner {
    /// Kafka's murmur2 (seed 0x9747b28c), as a signed 32-bit value like Java's.
    public static func murmur2(_ data: UnsafeRawBufferPointer) -> Int32 {
        let length = data.count
        let seed: UInt32 = 0x9747_b28c
        let m: UInt32 = 0x5bd1_e995
        let r: UInt32 = 24
        var h: UInt32 = seed ^ UInt32(truncatingIfNeeded: length)
        let length4 = length / 4
        for i in 0..<length4 {
            var k = UInt32(littleEndian: data.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
            k = k &* m
            k ^= k >> r
            k = k &* m
            h = h &* m
            h ^= k
        }
        let tail = length4 * 4
        switch length % 4 {
        case 3:
            h ^= UInt32(data[tail + 2]) << 16
            h ^= UInt32(data[tail + 1]) << 8
            h ^= UInt32(data[tail])
            h = h &* m
        case 2:
            h ^= UInt32(data[tail + 1]) << 8
            h ^= UInt32(data[tail])
            h = h &* m
        case 1:
            h ^= UInt32(data[tail])
            h = h &* m
        default:
            break
        }
        h ^= h >> 13
        h = h &* m
        h ^= h >> 15
        return Int32(bitPattern: h)
    }

    public static func murmur2(_ bytes: [UInt8]) -> Int32 { bytes.withUnsafeBytes { murmur2($0) } }

    /// The partition of a keyed record.
    @inlinable
    public static func partition(forKey key: UnsafeRawBufferPointer, partitions: Int32) -> Int32 {
        precondition(partitions > 0)
        return (murmur2(key) & 0x7fff_ffff) % partitions
    }

    public static func partition(forKey key: [UInt8], partitions: Int32) -> Int32 {
        key.withUnsafeBytes { partition(forKey: $0, partitions: partitions) }
    }
}
