/// A strict, allocation-free JSON validator (RFC 8259) that can also pick out the raw text of
/// top-level object members, for `value.format=json` topics and for `--key-field` /
/// `--timestamp-field` in `strata produce`. Nesting is limited to `maxDepth` so hostile input
/// cannot exhaust the stack.
public struct JSONScanner {
    public static let maxDepth = 128

    public struct Failure: Error, Equatable, CustomStringConvertible, Sendable {
        public let position: Int
        public let reason: String
        public var description: String { "invalid JSON at byte \(position + 1): \(reason)" }
    }

    /// A top-level member's value: its raw bytes (strings without the quotes and still escaped),
    /// and whether it was a string.
    public struct Field {
        public var range: Range<Int>
        public var isString: Bool
        public var hasEscapes: Bool
    }

    let bytes: UnsafeRawBufferPointer
    var i = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// Validates the whole text. `wanted` names top-level members to capture; their values are
    /// stored in `found` at the same index (nil when absent or when the text is not an object).
    public static func validate(_ bytes: UnsafeRawBufferPointer, capturing wanted: [[UInt8]] = [], into found: inout [Field?]) throws(Failure) {
        var s = JSONScanner(bytes)
        found = Array(repeating: nil, count: wanted.count)
        s.skipWhitespace()
        try s.value(depth: 0, wanted: wanted, found: &found)
        s.skipWhitespace()
        if s.i != bytes.count { throw Failure(position: s.i, reason: "unexpected data after the JSON value") }
    }

    /// Why `bytes` is not valid JSON, or nil when it is.
    public static func failure(in bytes: [UInt8]) -> Failure? {
        bytes.withUnsafeBytes { p in
            var none: [Field?] = []
            do throws(Failure) {
                try validate(p, into: &none)
                return nil
            } catch { return error }
        }
    }

    /// Decodes the escapes of a string's content (as captured in a `Field`) to UTF-8. Total: it is
    /// also used on strings located without validation (StrataStreams' field finder), so a `\u`
    /// not followed by 4 hex digits becomes U+FFFD (and its text is kept) instead of trapping.
    public static func unescape(_ content: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        out.removeAll(keepingCapacity: true)
        var i = 0
        func hex4(_ at: Int) -> UInt32? {
            guard at >= 0, at + 4 <= content.count else { return nil }
            var v: UInt32 = 0
            for k in 0..<4 {
                let c = content[at + k]
                let d: UInt8
                switch c {
                case 0x30...0x39: d = c - 0x30
                case 0x41...0x46: d = c - 0x41 + 10
                case 0x61...0x66: d = c - 0x61 + 10
                default: return nil
                }
                v = v << 4 | UInt32(d)
            }
            return v
        }
        while i < content.count {
            let c = content[i]
            guard c == UInt8(ascii: "\\"), i + 1 < content.count else { out.append(c); i += 1; continue }
            let e = content[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard var scalar = hex4(i) else {
                    out.append(contentsOf: [0xEF, 0xBF, 0xBD])  // U+FFFD; the bytes after `\u` are kept as text
                    continue
                }
                i += 4
                if (0xD800..<0xDC00).contains(scalar), i + 6 <= content.count, content[i] == UInt8(ascii: "\\"), content[i + 1] == UInt8(ascii: "u") {
                    if let low = hex4(i + 2), (0xDC00..<0xE000).contains(low) {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                    }
                }
                let s = Unicode.Scalar(scalar) ?? "\u{FFFD}"
                out.append(contentsOf: Array(String(Character(s)).utf8))
            default: out.append(e)
            }
        }
    }

    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var none: [Field?] = []
        do { try validate(bytes, into: &none); return true } catch { return false }
    }

    @inline(__always) mutating func skipWhitespace() {
        while i < bytes.count {
            let c = bytes[i]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 } else { return }
        }
    }

    @inline(__always) func fail(_ reason: String) -> Failure { Failure(position: i, reason: reason) }

    mutating func value(depth: Int, wanted: [[UInt8]], found: inout [Field?]) throws(Failure) {
        guard i < bytes.count else { throw fail("unexpected end of input") }
        switch bytes[i] {
        case UInt8(ascii: "{"): try object(depth: depth + 1, wanted: wanted, found: &found)
        case UInt8(ascii: "["): try array(depth: depth + 1)
        case UInt8(ascii: "\""): _ = try string()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
        default: throw fail("unexpected character '\(Character(Unicode.Scalar(bytes[i])))'")
        }
    }

    mutating func literal(_ word: StaticString) throws(Failure) {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw fail("truncated literal") }
        for k in 0..<n where bytes[i + k] != word.utf8Start[k] { throw fail("invalid literal") }
        i += n
    }

    mutating func number() throws(Failure) {
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard i < bytes.count else { throw fail("truncated number") }
        if bytes[i] == UInt8(ascii: "0") {
            i += 1
        } else if bytes[i] >= UInt8(ascii: "1") && bytes[i] <= UInt8(ascii: "9") {
            while i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 { i += 1 }
        } else {
            throw fail("invalid number")
        }
        if i < bytes.count && bytes[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            while i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 { i += 1 }
            if i == start { throw fail("digits expected after '.'") }
        }
        if i < bytes.count && (bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E")) {
            i += 1
            if i < bytes.count && (bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-")) { i += 1 }
            let start = i
            while i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 { i += 1 }
            if i == start { throw fail("digits expected in exponent") }
        }
    }

    /// Returns the content range (inside the quotes) and whether it had escapes. Validates escapes
    /// and UTF-8 (no control characters, no overlongs, no surrogates).
    mutating func string() throws(Failure) -> (Range<Int>, Bool) {
        i += 1
        let start = i
        var escapes = false
        while i < bytes.count {
            // Fast path: skip 8 plain ASCII bytes at a time (no quote, backslash, control or
            // non-ASCII byte among them), found with SWAR bit tricks on one 64-bit load.
            while i + 8 <= bytes.count {
                let w = bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                let ones: UInt64 = 0x0101_0101_0101_0101
                let high: UInt64 = 0x8080_8080_8080_8080
                let quote = w ^ (ones &* 0x22)
                let backslash = w ^ (ones &* 0x5C)
                let special = ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | (w &- ones &* 0x20) | w
                if special & high != 0 { break }
                i += 8
            }
            guard i < bytes.count else { break }
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                defer { i += 1 }
                return (start..<i, escapes)
            }
            if c == UInt8(ascii: "\\") {
                escapes = true
                i += 1
                guard i < bytes.count else { break }
                switch bytes[i] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 1
                case UInt8(ascii: "u"):
                    guard i + 4 < bytes.count else { throw fail("truncated \\u escape") }
                    for k in 1...4 where !isHex(bytes[i + k]) { throw fail("invalid \\u escape") }
                    i += 5
                default:
                    throw fail("invalid escape")
                }
                continue
            }
            if c < 0x20 { throw fail("control character in string") }
            if c < 0x80 { i += 1; continue }
            try utf8Sequence()
        }
        throw fail("unterminated string")
    }

    @inline(__always) func isHex(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
    }

    mutating func utf8Sequence() throws(Failure) {
        let c = bytes[i]
        let need: Int
        var lo: UInt8 = 0x80
        var hi: UInt8 = 0xBF
        switch c {
        case 0xC2...0xDF: need = 1
        case 0xE0: need = 2; lo = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: need = 2
        case 0xED: need = 2; hi = 0x9F
        case 0xF0: need = 3; lo = 0x90
        case 0xF1...0xF3: need = 3
        case 0xF4: need = 3; hi = 0x8F
        default: throw fail("invalid UTF-8")
        }
        guard i + need < bytes.count else { throw fail("truncated UTF-8") }
        let b1 = bytes[i + 1]
        guard b1 >= lo && b1 <= hi else { throw fail("invalid UTF-8") }
        for k in 2..<(need + 1) where bytes[i + k] & 0xC0 != 0x80 { throw fail("invalid UTF-8") }
        i += need + 1
    }

    mutating func object(depth: Int, wanted: [[UInt8]], found: inout [Field?]) throws(Failure) {
        guard depth <= Self.maxDepth else { throw fail("nesting deeper than \(Self.maxDepth)") }
        i += 1
        skipWhitespace()
        if i < bytes.count && bytes[i] == UInt8(ascii: "}") { i += 1; return }
        var noCapture: [Field?] = []
        while true {
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("member name expected") }
            let (name, _) = try string()
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("':' expected") }
            i += 1
            skipWhitespace()
            var slot = -1
            if depth == 1 && !wanted.isEmpty {
                let nameBytes = UnsafeRawBufferPointer(rebasing: bytes[name])
                for (k, w) in wanted.enumerated() where found[k] == nil && w.elementsEqual(nameBytes) { slot = k; break }
            }
            let valueStart = i
            if slot >= 0, i < bytes.count, bytes[i] == UInt8(ascii: "\"") {
                let (content, escapes) = try string()
                found[slot] = Field(range: content, isString: true, hasEscapes: escapes)
            } else {
                try value(depth: depth, wanted: [], found: &noCapture)
                if slot >= 0 { found[slot] = Field(range: valueStart..<i, isString: false, hasEscapes: false) }
            }
            skipWhitespace()
            guard i < bytes.count else { throw fail("unterminated object") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; skipWhitespace(); continue }
            if bytes[i] == UInt8(ascii: "}") { i += 1; return }
            throw fail("',' or '}' expected")
        }
    }

    mutating func array(depth: Int) throws(Failure) {
        guard depth <= Self.maxDepth else { throw fail("nesting deeper than \(Self.maxDepth)") }
        i += 1
        skipWhitespace()
        if i < bytes.count && bytes[i] == UInt8(ascii: "]") { i += 1; return }
        var none: [Field?] = []
        while true {
            try value(depth: depth, wanted: [], found: &none)
            skipWhitespace()
            guard i < bytes.count else { throw fail("unterminated array") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; skipWhitespace(); continue }
            if bytes[i] == UInt8(ascii: "]") { i += 1; return }
            throw fail("',' or ']' expected")
        }
    }
}
