import CCRC32C

/// CRC-32C (Castagnoli), the checksum of Kafka's RecordBatch v2.
///
/// `checksum` uses the SSE4.2 instruction when the CPU has it; `software` (slicing-by-8)
/// is the portable fallback and the oracle the tests compare the hardware path against.
public enum CRC32C {
    public static let hardwareAvailable: Bool = strata_crc32c_hw_available() == 1

    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        hardwareAvailable ? hardware(bytes, continuing: crc) : software(bytes, continuing: crc)
    }

    public static func hardware(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        precondition(hardwareAvailable, "CRC32C.hardware called on a CPU without SSE4.2")
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return strata_crc32c_hw(crc, base, bytes.count)
    }

    public static func software(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        slicing.checksum(bytes, continuing: crc)
    }

    /// Reflected polynomial 0x82F63B78.
    static let slicing = SlicingBy8CRC(reflectedPolynomial: 0x82F6_3B78)
}

/// A table-driven CRC-32 of any reflected polynomial, slicing by 8 (8 tables of 256 entries):
/// CRC-32C's software path and CRC-32 (IEEE) of the old message formats.
struct SlicingBy8CRC: Sendable {
    let table: [UInt32]

    init(reflectedPolynomial polynomial: UInt32) {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ polynomial : c >> 1 }
            t[i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 { t[k * 256 + i] = (t[(k - 1) * 256 + i] >> 8) ^ t[Int(t[(k - 1) * 256 + i] & 0xFF)] }
        }
        table = t
    }

    func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        var c = ~crc
        var i = 0
        let n = bytes.count
        table.withUnsafeBufferPointer { t in
            while n - i >= 8 {
                let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                let lo = UInt32(truncatingIfNeeded: word) ^ c
                let hi = UInt32(truncatingIfNeeded: word >> 32)
                c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[0 * 256 + Int(hi >> 24)]
                i += 8
            }
            while i < n {
                c = t[Int((c ^ UInt32(bytes[i])) & 0xFF)] ^ (c >> 8)
                i += 1
            }
        }
        return ~c
    }
}
