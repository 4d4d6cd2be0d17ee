/// Locates top-level members of a JSON object without validating the rest of the document (the
/// hot path of `jsonString`/`jsonFields`/`.jsonField` event time): it walks the object's members,
/// skipping values structurally (strings, nesting), and stops as soon as every wanted member was
/// found. No allocation. Malformed input yields nil for what cannot be located; topics that must
/// hold valid JSON should say so with `value.format=json` (validated at produce time).
enum JSONFieldFinder {
    struct Found {
        var range: Range<Int>
        var isString: Bool
        var hasEscapes: Bool
    }

    @inline(__always) static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 }

    /// Index after the closing quote of the string whose opening quote is at `i - 1`; sets `escapes`.
    @inline(__always) static func skipString(_ b: UnsafeRawBufferPointer, _ start: Int, escapes: inout Bool) -> Int? {
        var i = start
        let n = b.count
        while i < n {
            let c = b[i]
            if c == UInt8(ascii: "\"") { return i + 1 }
            if c == UInt8(ascii: "\\") {
                escapes = true
                i += 2
            } else {
                i += 1
            }
        }
        return nil
    }

    /// Index after the value starting at `i` (a string, object, array or scalar).
    static func skipValue(_ b: UnsafeRawBufferPointer, _ start: Int) -> Int? {
        var i = start
        let n = b.count
        guard i < n else { return nil }
        let c = b[i]
        if c == UInt8(ascii: "\"") {
            var e = false
            return skipString(b, i + 1, escapes: &e)
        }
        if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") {
            var depth = 0
            while i < n {
                let d = b[i]
                if d == UInt8(ascii: "\"") {
                    var e = false
                    guard let j = skipString(b, i + 1, escapes: &e) else { return nil }
                    i = j
                    continue
                }
                if d == UInt8(ascii: "{") || d == UInt8(ascii: "[") { depth += 1 }
                if d == UInt8(ascii: "}") || d == UInt8(ascii: "]") {
                    depth -= 1
                    if depth == 0 { return i + 1 }
                }
                i += 1
            }
            return nil
        }
        while i < n {
            let d = b[i]
            if d == UInt8(ascii: ",") || d == UInt8(ascii: "}") || d == UInt8(ascii: "]") || isSpace(d) { break }
            i += 1
        }
        return i == start ? nil : i
    }

    /// Calls `match(nameRange)` for each top-level member name (raw, still escaped); when it returns
    /// a slot index ≥ 0 the member's value is stored there. Stops when `remaining` reaches 0.
    @inline(__always)
    static func scan(_ b: UnsafeRawBufferPointer, remaining: Int, _ match: (Range<Int>) -> Int, _ store: (Int, Found) -> Void) {
        var left = remaining
        var i = 0
        let n = b.count
        while i < n && isSpace(b[i]) { i += 1 }
        guard i < n, b[i] == UInt8(ascii: "{") else { return }
        i += 1
        while true {
            while i < n && (isSpace(b[i]) || b[i] == UInt8(ascii: ",")) { i += 1 }
            guard i < n, b[i] == UInt8(ascii: "\"") else { return }
            var e = false
            guard let nameEnd = skipString(b, i + 1, escapes: &e) else { return }
            let slot = match((i + 1)..<(nameEnd - 1))
            i = nameEnd
            while i < n && isSpace(b[i]) { i += 1 }
            guard i < n, b[i] == UInt8(ascii: ":") else { return }
            i += 1
            while i < n && isSpace(b[i]) { i += 1 }
            guard i < n else { return }
            if slot >= 0 {
                if b[i] == UInt8(ascii: "\"") {
                    var escapes = false
                    guard let end = skipString(b, i + 1, escapes: &escapes) else { return }
                    store(slot, Found(range: (i + 1)..<(end - 1), isString: true, hasEscapes: escapes))
                    i = end
                } else {
                    guard let end = skipValue(b, i) else { return }
                    store(slot, Found(range: i..<end, isString: false, hasEscapes: false))
                    i = end
                }
                left -= 1
                if left == 0 { return }
            } else {
                guard let end = skipValue(b, i) else { return }
                i = end
            }
        }
    }

    @inline(__always) static func equal(_ b: UnsafeRawBufferPointer, _ r: Range<Int>, _ name: UnsafeRawBufferPointer) -> Bool {
        guard r.count == name.count else { return false }
        var k = 0
        var i = r.lowerBound
        while k < name.count {
            if b[i] != name[k] { return false }
            i += 1
            k += 1
        }
        return true
    }

    /// The value of member `name` (UTF-8 bytes) of the object in `b`.
    static func find(_ name: UnsafeRawBufferPointer, in b: UnsafeRawBufferPointer) -> Found? {
        var result: Found?
        scan(b, remaining: 1, { equal(b, $0, name) ? 0 : -1 }, { _, f in result = f })
        return result
    }

    /// Member text: unescaped string content, or the raw JSON text of another value.
    static func text(_ b: UnsafeRawBufferPointer, _ f: Found) -> String {
        let raw = UnsafeRawBufferPointer(rebasing: b[f.range])
        guard f.hasEscapes else { return String(decoding: raw, as: UTF8.self) }
        var out: [UInt8] = []
        JSONScannerBridge.unescape(raw, into: &out)
        return String(decoding: out, as: UTF8.self)
    }
}

import StrataBroker

enum JSONScannerBridge {
    static func unescape(_ raw: UnsafeRawBufferPointer, into out: inout [UInt8]) { JSONScanner.unescape(raw, into: &out) }
}
