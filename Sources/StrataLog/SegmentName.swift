/// File names of a segment's artifacts: the base offset zero-padded to 20 digits, as Kafka.
enum SegmentName {
    static let logSuffix = ".log"
    static let offsetIndexSuffix = ".index"
    static let timeIndexSuffix = ".timeindex"
    static let cleanedSuffix = ".cleaned"
    static let swapSuffix = ".swap"
    static let deletedSuffix = ".deleted"

    static func base(_ offset: Int64) -> String {
        precondition(offset >= 0)
        let digits = String(offset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    static func logPath(_ dir: String, _ offset: Int64) -> String { dir + "/" + base(offset) + logSuffix }
    static func offsetIndexPath(_ dir: String, _ offset: Int64) -> String { dir + "/" + base(offset) + offsetIndexSuffix }
    static func timeIndexPath(_ dir: String, _ offset: Int64) -> String { dir + "/" + base(offset) + timeIndexSuffix }

    /// Parses "<20 digits><suffix>" and returns the base offset, or nil.
    static func parse(_ name: String, suffix: String) -> Int64? {
        guard name.hasSuffix(suffix) else { return nil }
        let stem = name.dropLast(suffix.count)
        guard stem.count == 20, stem.allSatisfy({ $0 >= "0" && $0 <= "9" }) else { return nil }
        return Int64(stem)
    }
}
