import StrataCore

/// Timestamps as users write them: RFC 3339 (`2025-10-01T00:00:25.920Z`, `…+02:00`), epoch
/// milliseconds, or (for CLI windows) a duration back from now (`30s`, `15m`, `2h`, `7d`).
public enum Timestamps {
    /// Epoch milliseconds of an RFC 3339 date-time, or nil.
    public static func parseRFC3339(_ b: UnsafeRawBufferPointer) -> Int64? {
        func digits(_ at: Int, _ n: Int) -> Int? {
            guard at + n <= b.count else { return nil }
            var v = 0
            for k in 0..<n {
                let c = b[at + k]
                guard c >= 0x30 && c <= 0x39 else { return nil }
                v = v * 10 + Int(c - 0x30)
            }
            return v
        }
        guard b.count >= 20, let y = digits(0, 4), b[4] == UInt8(ascii: "-"), let mo = digits(5, 2), b[7] == UInt8(ascii: "-"),
              let d = digits(8, 2), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == UInt8(ascii: " "),
              let h = digits(11, 2), b[13] == UInt8(ascii: ":"), let mi = digits(14, 2), b[16] == UInt8(ascii: ":"),
              let s = digits(17, 2), (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, s < 61
        else { return nil }
        var i = 19
        var ms = 0
        if i < b.count && b[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 100
            let start = i
            while i < b.count && b[i] >= 0x30 && b[i] <= 0x39 {
                ms += Int(b[i] - 0x30) * scale
                scale /= 10
                i += 1
            }
            if i == start { return nil }
        }
        guard i < b.count else { return nil }
        var offsetMinutes = 0
        if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
            i += 1
        } else if b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
            guard let oh = digits(i + 1, 2), i + 3 < b.count, b[i + 3] == UInt8(ascii: ":"), let om = digits(i + 4, 2) else { return nil }
            offsetMinutes = (oh * 60 + om) * (b[i] == UInt8(ascii: "-") ? -1 : 1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        let days = CivilDate.daysFromCivil(y, mo, d)
        let seconds = Int64(days) * 86400 + Int64(h * 3600 + mi * 60 + s) - Int64(offsetMinutes * 60)
        return seconds * 1000 + Int64(ms)
    }

    public static func parseRFC3339(_ s: String) -> Int64? {
        var s = s
        return s.withUTF8 { parseRFC3339(UnsafeRawBufferPointer($0)) }
    }

    /// A JSON field value as a timestamp: an RFC 3339 string or an integer of epoch milliseconds.
    public static func parseField(_ b: UnsafeRawBufferPointer, isString: Bool) -> Int64? {
        if isString { return parseRFC3339(b) }
        guard !b.isEmpty, b.count <= 19 else { return nil }
        var v: Int64 = 0
        var negative = false
        for (k, c) in b.enumerated() {
            if k == 0 && c == UInt8(ascii: "-") { negative = true; continue }
            guard c >= 0x30 && c <= 0x39 else { return nil }
            // 19 digits can exceed Int64: such input is not a timestamp (nil), never a trap.
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int64(c - 0x30))
            if o1 || o2 { return nil }
            v = a
        }
        if negative && b.count == 1 { return nil }  // a lone "-"
        return negative ? -v : v
    }

    /// A CLI time: RFC 3339, a UTC date (`2025-10-07`, its midnight), epoch milliseconds, or a
    /// duration ago (`90s`, `15m`, `2h`, `7d`).
    public static func parseUserTime(_ text: String, nowMs: Int64) -> Int64? {
        if let t = parseRFC3339(text) { return t }
        if text.utf8.count == 10, let t = parseRFC3339(text + "T00:00:00Z") { return t }
        if let ms = Int64(text) { return ms }
        guard let unit = text.last, let n = Int64(text.dropLast()), n >= 0 else { return nil }
        let factor: Int64
        switch unit {
        case "s": factor = 1000
        case "m": factor = 60_000
        case "h": factor = 3_600_000
        case "d": factor = 86_400_000
        case "w": factor = 7 * 86_400_000
        default: return nil
        }
        let (back, o1) = n.multipliedReportingOverflow(by: factor)
        let (t, o2) = nowMs.subtractingReportingOverflow(back)
        return o1 || o2 ? nil : t
    }
}
