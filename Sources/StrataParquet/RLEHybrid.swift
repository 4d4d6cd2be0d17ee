/// Parquet's RLE / bit-packing hybrid (Encodings.md), which carries definition levels and
/// dictionary indexes: runs of one repeated value (header `count << 1`, then the value in
/// ceil(bitWidth / 8) little-endian bytes) and groups of 8 values bit-packed LSB first (header
/// `groups << 1 | 1`). Only the last bit-packed run may be padded past the real values.
enum RLEHybrid {
    /// Repeats at least this long become an RLE run (shorter ones are cheaper packed).
    static let minimumRun = 8

    static func encode(_ values: UnsafeBufferPointer<UInt32>, bitWidth: Int, into out: inout [UInt8]) {
        precondition(bitWidth >= 0 && bitWidth <= 32)
        let n = values.count
        var i = 0
        func runLength(at start: Int) -> Int {
            var j = start + 1
            while j < n && values[j] == values[start] { j += 1 }
            return j - start
        }
        while i < n {
            let run = runLength(at: i)
            if run >= minimumRun {
                varint(UInt64(run) << 1, into: &out)
                var v = values[i]
                for _ in 0..<((bitWidth + 7) / 8) {
                    out.append(UInt8(truncatingIfNeeded: v))
                    v >>= 8
                }
                i += run
                continue
            }
            // Groups of 8 until a long run starts at a group boundary (or the values end).
            let start = i
            var groups = 0
            repeat {
                i = min(i + 8, n)
                groups += 1
            } while i < n && runLength(at: i) < minimumRun
            varint(UInt64(groups) << 1 | 1, into: &out)
            var accumulator: UInt64 = 0
            var bits = 0
            for k in start..<(start + groups * 8) {
                let v = k < n ? UInt64(values[k]) : 0
                accumulator |= v << UInt64(bits)
                bits += bitWidth
                while bits >= 8 {
                    out.append(UInt8(truncatingIfNeeded: accumulator))
                    accumulator >>= 8
                    bits -= 8
                }
            }
        }
    }

    static func varint(_ value: UInt64, into out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    /// Bits needed for values 0...maxValue.
    static func bitWidth(_ maxValue: UInt32) -> Int { maxValue == 0 ? 0 : 32 - maxValue.leadingZeroBitCount }
}
