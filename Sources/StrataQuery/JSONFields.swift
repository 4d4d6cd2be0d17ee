import Glibc

/// The fast path behind `value ->> '$.field'`: finds one top-level member of a JSON object by
/// scanning bytes, without building a parse tree or allocating. Everything it is not sure about
/// (a key or path with escapes, a nested result, a number SQLite might read differently, anything
/// malformed) is reported as `.fallback`, and the caller hands the value to SQLite's own JSON
/// functions, so results and error messages match SQLite's exactly where the fast path steps aside.
///
/// The whole object is walked structurally even after the member is found: brackets, strings
/// and separators must be well formed to the closing brace, so a truncated or garbled value is
/// not silently read as if it were valid. Number and literal grammar is checked only for the
/// member returned.
enum JSONField {
    /// The member named `key` (raw UTF-8, no escapes) of the top-level object in `json`.
    static func topLevel(_ json: UnsafeRawBufferPointer, key: [UInt8]) -> FieldValue {
        var out: [FieldValue] = [.fallback]
        members(json, keys: [key], stopEarly: false, into: &out)
        return out[0]
    }

    /// Fills `out[i]` with the member named `keys[i]` of the top-level object in `json` (`.null`
    /// when absent, as SQLite's ->> answers), in one pass. When the object is malformed or
    /// unusual, every entry is `.fallback`. With `stopEarly` the scan ends once every key is
    /// found (for values validated on write); otherwise it walks to the closing brace.
    static func members(_ json: UnsafeRawBufferPointer, keys: [[UInt8]], stopEarly: Bool, into out: inout [FieldValue]) {
        for i in out.indices { out[i] = .null }
        guard let raw = json.baseAddress else { return giveUp(&out) }
        let base = raw.assumingMemoryBound(to: UInt8.self)
        let n = json.count
        var remaining = keys.count
        var found: UInt64 = 0
        var i = skipSpace(base, 0, n)
        guard i < n, base[i] == UInt8(ascii: "{") else { return giveUp(&out) }
        i = skipSpace(base, i + 1, n)
        if i < n, base[i] == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                guard i < n, base[i] == UInt8(ascii: "\"") else { return giveUp(&out) }
                let keyStart = i + 1
                guard let (keyEnd, keyEscaped) = skipString(base, i, n), !keyEscaped else { return giveUp(&out) }
                let keyCount = keyEnd - 1 - keyStart
                i = skipSpace(base, keyEnd, n)
                guard i < n, base[i] == UInt8(ascii: ":") else { return giveUp(&out) }
                i = skipSpace(base, i + 1, n)
                guard i < n else { return giveUp(&out) }
                let valueStart = i
                guard let valueEnd = skipValue(base, i, n) else { return giveUp(&out) }
                for (k, key) in keys.enumerated() where found & (1 << k) == 0 && key.count == keyCount {
                    // SQLite returns the first member of that name; later duplicates are ignored.
                    if key.withUnsafeBufferPointer({ memcmp(base + keyStart, $0.baseAddress!, keyCount) }) == 0 {
                        let v = scalar(base, valueStart, valueEnd)
                        if case .fallback = v { return giveUp(&out) }
                        out[k] = v
                        found |= 1 << k
                        remaining -= 1
                    }
                }
                if stopEarly && remaining == 0 { return }
                i = skipSpace(base, valueEnd, n)
                guard i < n else { return giveUp(&out) }
                if base[i] == UInt8(ascii: ",") {
                    i = skipSpace(base, i + 1, n)
                    continue
                }
                guard base[i] == UInt8(ascii: "}") else { return giveUp(&out) }
                i += 1
                break
            }
        }
        guard skipSpace(base, i, n) == n else { return giveUp(&out) }
    }

    private static func giveUp(_ out: inout [FieldValue]) {
        for i in out.indices { out[i] = .fallback }
    }

    @inline(__always) static func skipSpace(_ p: UnsafePointer<UInt8>, _ start: Int, _ n: Int) -> Int {
        var i = start
        while i < n {
            let c = p[i]
            guard c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 else { break }
            i += 1
        }
        return i
    }

    /// `p[start]` is an opening quote; returns the index after the closing quote and whether the
    /// string has escapes. Eight bytes at a time while no quote, backslash or control byte shows.
    @inline(__always) static func skipString(_ p: UnsafePointer<UInt8>, _ start: Int, _ n: Int) -> (Int, Bool)? {
        var i = start + 1
        var escaped = false
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        while true {
            while i + 8 <= n {
                let w = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
                let q = w ^ (ones &* 0x22)
                let b = w ^ (ones &* 0x5C)
                // A byte < 0x20 is a control character: invalid inside a JSON string.
                let hit = (((q &- ones) & ~q) | ((b &- ones) & ~b) | ((w &- ones &* 0x20) & ~w)) & highs
                if hit != 0 {
                    // The lowest flagged byte is a real hit (borrows only run upward).
                    i += hit.trailingZeroBitCount >> 3
                    break
                }
                i += 8
            }
            guard i < n else { return nil }
            let c = p[i]
            if c == UInt8(ascii: "\"") { return (i + 1, escaped) }
            if c == UInt8(ascii: "\\") {
                escaped = true
                guard i + 1 < n else { return nil }
                i += 2
                continue
            }
            if c < 0x20 { return nil }
            i += 1
        }
    }

    /// The index after the value starting at `p[start]`; nil when the structure is broken.
    static func skipValue(_ p: UnsafePointer<UInt8>, _ start: Int, _ n: Int) -> Int? {
        let c = p[start]
        if c == UInt8(ascii: "\"") { return skipString(p, start, n)?.0 }
        if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") {
            // Nesting kinds as a bit stack (1 = object): no allocation; deeper than 64 goes to SQLite.
            var kinds: UInt64 = 0
            var depth = 0
            var i = start
            while i < n {
                let d = p[i]
                switch d {
                case UInt8(ascii: "\""):
                    guard let (end, _) = skipString(p, i, n) else { return nil }
                    i = end
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    guard depth < 64 else { return nil }
                    kinds = (kinds << 1) | (d == UInt8(ascii: "{") ? 1 : 0)
                    depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    guard depth > 0, (kinds & 1 == 1) == (d == UInt8(ascii: "}")) else { return nil }
                    kinds >>= 1
                    depth -= 1
                    if depth == 0 { return i + 1 }
                default: break
                }
                i += 1
            }
            return nil
        }
        var i = start
        while i < n {
            let d = p[i]
            if d == UInt8(ascii: ",") || d == UInt8(ascii: "}") || d == UInt8(ascii: "]") || d == 0x20 || d == 0x0A || d == 0x0D || d == 0x09 { break }
            i += 1
        }
        return i > start ? i : nil
    }

    /// Converts one scalar the way SQLite's `->>` does; `.fallback` for anything else.
    static func scalar(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> FieldValue {
        let c = p[start]
        switch c {
        case UInt8(ascii: "\""):
            // Strings with escapes are unescaped by SQLite (exact semantics there).
            for j in (start + 1)..<(end - 1) where p[j] == UInt8(ascii: "\\") { return .fallback }
            return .text(start: Int32(start + 1), count: Int32(end - start - 2))
        case UInt8(ascii: "t"): return equals(p, start, end, "true") ? .integer(1) : .fallback
        case UInt8(ascii: "f"): return equals(p, start, end, "false") ? .integer(0) : .fallback
        case UInt8(ascii: "n"): return equals(p, start, end, "null") ? .null : .fallback
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return number(p, start, end)
        default: return .fallback
        }
    }

    @inline(__always) static func equals(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, _ word: StaticString) -> Bool {
        end - start == word.utf8CodeUnitCount && memcmp(p + start, word.utf8Start, word.utf8CodeUnitCount) == 0
    }

    /// RFC 8259 numbers: integers that fit in 64 bits stay integers, the rest become reals
    /// (correctly rounded by strtod). Anything outside the grammar goes to SQLite.
    static func number(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> FieldValue {
        var i = start
        let negative = p[i] == UInt8(ascii: "-")
        if negative { i += 1 }
        guard i < end else { return .fallback }
        let intStart = i
        if p[i] == UInt8(ascii: "0") {
            i += 1
        } else {
            while i < end, p[i] >= 0x30, p[i] <= 0x39 { i += 1 }
        }
        guard i > intStart else { return .fallback }
        var isReal = false
        if i < end, p[i] == UInt8(ascii: ".") {
            isReal = true
            i += 1
            let fracStart = i
            while i < end, p[i] >= 0x30, p[i] <= 0x39 { i += 1 }
            guard i > fracStart else { return .fallback }
        }
        if i < end, p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E") {
            isReal = true
            i += 1
            if i < end, p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { i += 1 }
            let expStart = i
            while i < end, p[i] >= 0x30, p[i] <= 0x39 { i += 1 }
            guard i > expStart else { return .fallback }
        }
        guard i == end else { return .fallback }
        if !isReal {
            // 18 digits always fit; longer integers go to SQLite, which turns overflow into a real.
            guard end - intStart <= 18 else { return .fallback }
            var v: Int64 = 0
            for j in intStart..<end { v = v &* 10 &+ Int64(p[j] &- 0x30) }
            return .integer(negative ? -v : v)
        }
        guard end - start < 64 else { return .fallback }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
            for j in 0..<(end - start) { buffer[j] = CChar(bitPattern: p[start + j]) }
            buffer[end - start] = 0
            return .real(strtod(buffer.baseAddress!, nil))
        }
    }
}
