/// JSON members as columns. SQLite evaluates `value ->> '$.amount'` wherever the expression sits:
/// in a GROUP BY it stores the whole `value` in its sorter and extracts the member after sorting,
/// one row at a time on one core. Instead, every topic table declares a hidden column per
/// top-level member the query names (`"value->>'$.amount'"`), the scan thread extracts those
/// members while it decodes, and the statement is rewritten to read the columns.
///
/// The rewrite is token-level and only for `value ->> '<member>'` (optionally qualified); it is
/// tried only when the original statement prepares, and abandoned when the rewritten one does
/// not (e.g. when `value` is a CTE's column rather than a topic's), so it never changes what a
/// statement means: the column yields exactly what `->>` yields on that row's value.
enum JSONColumns {
    /// The hidden column that holds member `name`.
    static func columnName(_ name: String) -> String { "value->>'$.\(name)'" }

    /// Member names of `value ->> '…'` expressions in `sql`, in first-seen order, at most `limit`.
    static func members(in sql: String, limit: Int = WantedFields.limit) -> [String] {
        var names: [String] = []
        for m in matches(in: Array(sql.utf8)) where !names.contains(m.name) && names.count < limit { names.append(m.name) }
        return names
    }

    /// `sql` with each `value ->> '<member>'` whose member is in `declared` replaced by the hidden
    /// column; nil when nothing was replaced.
    static func rewrite(_ sql: String, declared: Set<String>) -> String? {
        let bytes = Array(sql.utf8)
        var out: [UInt8] = []
        var copied = 0
        for m in matches(in: bytes) where declared.contains(m.name) {
            out += bytes[copied..<m.range.lowerBound]
            // [..] is always an identifier; a "..." naming no column would be read as a string.
            let column = "[" + columnName(m.name) + "]"
            out += Array((m.countDistinct ? "\(DistinctCount.functionName)(\(column))" : column).utf8)
            copied = m.range.upperBound
        }
        guard copied > 0 else { return nil }
        out += bytes[copied...]
        return String(decoding: out, as: UTF8.self)
    }

    private enum Kind: Equatable { case identifier, quotedIdentifier, string, op, other }
    private struct Token {
        let kind: Kind
        let range: Range<Int>
    }

    /// `value ->> '<member>'` occurrences: the byte range from `value` to the closing quote, or
    /// of the whole `count(DISTINCT value ->> '<member>')` around one (see DistinctCount).
    private static func matches(in s: [UInt8]) -> [(range: Range<Int>, name: String, countDistinct: Bool)] {
        let tokens = tokenize(s)
        var found: [(Range<Int>, String, Bool)] = []
        func word(_ t: Token, _ w: String) -> Bool {
            t.kind == .identifier && String(decoding: s[t.range], as: UTF8.self).lowercased() == w
        }
        func char(_ t: Token, _ c: Character) -> Bool { t.kind == .other && s[t.range.lowerBound] == c.asciiValue! }
        var i = 0
        while i + 2 < tokens.count {
            let t = tokens[i]
            defer { i += 1 }
            guard isValueIdentifier(t, s),
                  tokens[i + 1].kind == .op, Array(s[tokens[i + 1].range]) == Array("->>".utf8),
                  tokens[i + 2].kind == .string else { continue }
            // `x.value` where x is a table: keep the qualifier, replace from `value` on.
            guard let name = memberName(String(decoding: s[(tokens[i + 2].range.lowerBound + 1)..<(tokens[i + 2].range.upperBound - 1)], as: UTF8.self)) else { continue }
            if i >= 3, i + 3 < tokens.count, word(tokens[i - 3], "count"), char(tokens[i - 2], "("), word(tokens[i - 1], "distinct"),
               char(tokens[i + 3], ")"), i < 4 || !char(tokens[i - 4], ".") {
                found.append((tokens[i - 3].range.lowerBound..<tokens[i + 3].range.upperBound, name, true))
            } else {
                found.append((t.range.lowerBound..<tokens[i + 2].range.upperBound, name, false))
            }
        }
        return found
    }

    private static func isValueIdentifier(_ t: Token, _ s: [UInt8]) -> Bool {
        switch t.kind {
        case .identifier: return String(decoding: s[t.range], as: UTF8.self).lowercased() == "value"
        case .quotedIdentifier:
            let inner = String(decoding: s[(t.range.lowerBound + 1)..<(t.range.upperBound - 1)], as: UTF8.self)
            return s[t.range.lowerBound] == UInt8(ascii: "\"") && inner.lowercased() == "value"
        default: return false
        }
    }

    /// The member a `->>` right operand names, when it is one top-level member (`$.name` or `name`).
    static func memberName(_ literal: String) -> String? {
        let name = literal.hasPrefix("$.") ? String(literal.dropFirst(2)) : (literal.hasPrefix("$") ? nil : literal)
        guard let name, !name.isEmpty,
              name.utf8.allSatisfy({ c in c >= 0x20 && c != UInt8(ascii: ".") && c != UInt8(ascii: "[") && c != UInt8(ascii: "\"")
                  && c != UInt8(ascii: "'") && c != UInt8(ascii: "\\") && c != UInt8(ascii: "]") }) else { return nil }
        return name
    }

    /// SQLite's lexical structure, as far as finding the pattern needs: strings, quoted
    /// identifiers, comments and identifiers are whole tokens; whitespace and comments dropped.
    private static func tokenize(_ s: [UInt8]) -> [Token] {
        var tokens: [Token] = []
        var i = 0
        let n = s.count
        func isIdentifierByte(_ c: UInt8) -> Bool {
            (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "_") || c == UInt8(ascii: "$") || c >= 0x80
        }
        while i < n {
            let c = s[i]
            let start = i
            switch c {
            case 0x20, 0x09, 0x0A, 0x0D, 0x0C:
                i += 1
            case UInt8(ascii: "-") where i + 1 < n && s[i + 1] == UInt8(ascii: "-"):
                while i < n && s[i] != 0x0A { i += 1 }
            case UInt8(ascii: "/") where i + 1 < n && s[i + 1] == UInt8(ascii: "*"):
                i += 2
                while i < n && !(s[i] == UInt8(ascii: "*") && i + 1 < n && s[i + 1] == UInt8(ascii: "/")) { i += 1 }
                i = min(n, i + 2)
            case UInt8(ascii: "'"), UInt8(ascii: "\""), UInt8(ascii: "`"), UInt8(ascii: "["):
                let close = c == UInt8(ascii: "[") ? UInt8(ascii: "]") : c
                i += 1
                while i < n {
                    if s[i] == close {
                        // A doubled quote is an escaped one (not for [..]).
                        if close != UInt8(ascii: "]"), i + 1 < n, s[i + 1] == close { i += 2; continue }
                        break
                    }
                    i += 1
                }
                i = min(n, i + 1)
                tokens.append(Token(kind: c == UInt8(ascii: "'") ? .string : .quotedIdentifier, range: start..<i))
            case UInt8(ascii: "-") where i + 2 < n && s[i + 1] == UInt8(ascii: ">") && s[i + 2] == UInt8(ascii: ">"):
                i += 3
                tokens.append(Token(kind: .op, range: start..<i))
            default:
                if isIdentifierByte(c) && !(c >= 0x30 && c <= 0x39) {
                    while i < n && isIdentifierByte(s[i]) { i += 1 }
                    tokens.append(Token(kind: .identifier, range: start..<i))
                } else {
                    i += 1
                    tokens.append(Token(kind: .other, range: start..<i))
                }
            }
        }
        return tokens
    }
}
