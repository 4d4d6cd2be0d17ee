/// Arithmetic on values that came from the wire or the disk (timestamps, offsets, sizes): a
/// hostile value must never trap. These clamp at the ends of the range instead.
extension Int64 {
    @inlinable
    public func saturatingSubtract(_ other: Int64) -> Int64 {
        let (result, overflow) = subtractingReportingOverflow(other)
        guard overflow else { return result }
        return other < 0 ? .max : .min
    }

    @inlinable
    public func saturatingAdd(_ other: Int64) -> Int64 {
        let (result, overflow) = addingReportingOverflow(other)
        guard overflow else { return result }
        return other < 0 ? .min : .max
    }
}
