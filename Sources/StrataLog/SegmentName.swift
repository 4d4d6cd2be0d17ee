/// File names of a segment's artifacts: the base offset zero-padded to 20 digits, as Kafka.
enum SegmentName {
    static let logSuffix = ".log"
    static let offsetIndexSuffix = ".index"
    static let timeIndexSuffix = ".timeindex"
    static let cleanedSuffix = ".cleaned"
    static let swapSuffix = ".swap"
    static let deletedSuffix = ".deleted"
    /// A cold segment (docs/format.md "Cold segments"); `.cold.tmp` while it is being written.
    static let coldSuffix = ".cold"

    static func base(_ offset: Int64) -> String {
        precondition(offset >= 0)
        let digits = String(offset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    static func logPath(_ dir: String, _ offset: Int64) -> String { dir + "/" + base(offset) + logSuffix }
    static func offsetIndexPath(_ dir: String, _ offset: Int64) -> String { dir + "/" + base(offset) + offsetIndexSuffix }
    static func timeIndexPath(_ dir: String, _ offset: Int64) -> String { dir + "/" + base(offset) + timeIndexSuffix }
    static func coldPath(_ dir: String, _ offset: Int64) -> String { dir + "/" + base(offset) + coldSuffix }

    /// Parses "<20 digits><suffix>" and returns the base offset, or nil.
    /// Bytes, not Characters: a load parses every file name of every partition (300,000 names
    /// for 100,000 segments). Twenty digits may exceed Int64: nil then.
    static func parse(_ name: String, suffix: String) -> Int64? {
        let bytes = name.utf8
        let suffixBytes = suffix.utf8
        guard bytes.count == 20 + suffixBytes.count else { return nil }
        var value: Int64 = 0
        var i = bytes.startIndex
        for _ in 0..<20 {
            let b = bytes[i]
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { return nil }
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (next, o2) = times10.addingReportingOverflow(Int64(b - UInt8(ascii: "0")))
            guard !o1, !o2 else { return nil }
            value = next
            i = bytes.index(after: i)
        }
        guard bytes[i...].elementsEqual(suffixBytes) else { return nil }
        return value
    }
}
