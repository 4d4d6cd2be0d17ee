import StrataCore

/// The values of one path (`user.id`, `tags[]`) across a block's records, stored by the narrowest
/// encoding that gives every token back byte for byte: canonical integers, decimals and
/// `YYYY-MM-DDTHH:MM:SS.sssZ` timestamps become numbers (zigzag varint deltas); other text is a
/// dictionary (when at most half the tokens are distinct) or length-prefixed bytes. Each typed
/// form is a bijection on the tokens it accepts, so decoding formats exactly what was read.
enum TokenColumn {
    enum Encoding: UInt8 { case integer = 1, decimal = 2, timestampMillisZ = 3, dictionary = 4, raw = 5 }

    /// Encodes `tokens` (ranges of `arena`) into `w`: one encoding byte, then its data.
    static func encode(_ tokens: [Range<Int>], in arena: UnsafeRawBufferPointer, into w: inout ColdWriter) {
        func token(_ i: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: arena[tokens[i]]) }
        /// Every token through `parse`, or nil as soon as one does not parse.
        func parsedAll<T>(_ parse: (UnsafeRawBufferPointer) -> T?) -> [T]? {
            var out: [T] = []
            out.reserveCapacity(tokens.count)
            for i in tokens.indices {
                guard let v = parse(token(i)) else { return nil }
                out.append(v)
            }
            return out
        }
        if let numbers = parsedAll(canonicalInteger) {
            w.bytes.append(Encoding.integer.rawValue)
            deltas(numbers, into: &w)
            return
        }
        // Decimals: an unscaled integer and a scale each.
        if let decimals = parsedAll(decimal) {
            w.bytes.append(Encoding.decimal.rawValue)
            for d in decimals { w.varint(UInt64(d.1)) }
            deltas(decimals.map(\.0), into: &w)
            return
        }
        if let times = parsedAll(timestampMillisZ) {
            w.bytes.append(Encoding.timestampMillisZ.rawValue)
            deltas(times, into: &w)
            return
        }
        // Text: a dictionary when values repeat.
        var table = ByteStringTable()
        var indexes: [UInt32] = []
        indexes.reserveCapacity(tokens.count)
        let limit = max(1, tokens.count / 2)
        for i in tokens.indices {
            guard let index = table.index(of: token(i), insert: { count in count < limit }) else { break }
            indexes.append(index)
        }
        if indexes.count == tokens.count && !tokens.isEmpty {
            w.bytes.append(Encoding.dictionary.rawValue)
            w.varint(UInt64(table.count))
            for e in 0..<table.count { table.withString(e) { w.blob($0) } }
            for index in indexes { w.varint(UInt64(index)) }
            return
        }
        w.bytes.append(Encoding.raw.rawValue)
        for i in tokens.indices { w.blob(token(i)) }
    }

    /// Numbers as a mode byte, then zigzag varints of either the deltas (mode 0: increasing
    /// times, counters) or the values themselves (mode 1: values of mixed shapes interleaved,
    /// where deltas swing), whichever is shorter.
    private static func deltas(_ values: [Int64], into w: inout ColdWriter) {
        var asDeltas = ColdWriter()
        var asValues = ColdWriter()
        var previous: Int64 = 0
        for v in values {
            asDeltas.signed(v &- previous)
            asValues.signed(v)
            previous = v
        }
        let useValues = asValues.bytes.count < asDeltas.bytes.count
        w.bytes.append(useValues ? 1 : 0)
        w.bytes.append(contentsOf: useValues ? asValues.bytes : asDeltas.bytes)
    }

    /// The next number of a column written by `deltas`.
    @inline(__always)
    static func number(_ r: inout ColdReader, previous: inout Int64, mode: UInt8) throws(ColdFormatError) -> Int64 {
        let v = try r.signed()
        previous = mode == 0 ? previous &+ v : v
        return previous
    }

    /// `count` numbers written by `deltas`.
    private static func numbers(_ r: inout ColdReader, count: Int) throws(ColdFormatError) -> [Int64] {
        let mode = try numberMode(&r)
        // Every number takes a byte at least: a count past the bytes left is refused before
        // anything is reserved for it.
        guard count <= r.remaining else { throw ColdFormatError("\(count) numbers in \(r.remaining) bytes") }
        var previous: Int64 = 0
        var values = [Int64](repeating: 0, count: count)
        // The varints read here, in one loop (a column holds a number per record of the block).
        let bytes = r.bytes
        var p = r.position
        let end = bytes.count
        try values.withUnsafeMutableBufferPointer { (out: inout UnsafeMutableBufferPointer<Int64>) throws(ColdFormatError) in
            for i in 0..<count {
                var u: UInt64 = 0
                var shift: UInt64 = 0
                while true {
                    guard p < end else { throw ColdFormatError("truncated varint") }
                    let b = bytes[p]
                    p += 1
                    guard shift < 64 else { throw ColdFormatError("varint too long") }
                    u |= UInt64(b & 0x7F) << shift
                    if b < 0x80 { break }
                    shift += 7
                }
                let v = Int64(bitPattern: (u >> 1) ^ (0 &- (u & 1)))
                previous = mode == 0 ? previous &+ v : v
                out[i] = previous
            }
        }
        r.position = p
        return values
    }

    /// The fraction digits of `count` decimal tokens (1…18 each: one varint byte each).
    static func decimalScales(_ r: inout ColdReader, count: Int) throws(ColdFormatError) -> [UInt8] {
        let stored = try r.take(count)
        guard let bad = stored.first(where: { $0 < 1 || $0 > 18 }) else { return Array(stored) }
        throw ColdFormatError("decimal scale byte \(bad)")
    }

    static func numberMode(_ r: inout ColdReader) throws(ColdFormatError) -> UInt8 {
        let mode = try r.fixed(UInt8.self)
        guard mode <= 1 else { throw ColdFormatError("number mode \(mode)") }
        return mode
    }

    /// Decodes `count` tokens, appending their bytes to `out` and their ends to `ends`.
    /// `maxBytes`: most bytes the tokens may take decoded (a dictionary entry repeated by every
    /// token must not expand past what the block's budget allows).
    static func decode(_ r: inout ColdReader, count: Int, into out: inout [UInt8], ends: inout [Int], maxBytes: Int = .max) throws(ColdFormatError) {
        var source = try TokenSource(r, count: count)
        defer { r = source.reader }
        switch source.encoding {
        case .dictionary, .raw:
            // Stored bytes: their total first, then one growth of `out` and the tokens copied in place.
            var tokens: [UnsafeRawBufferPointer] = []
            tokens.reserveCapacity(count)
            var total = 0
            for _ in 0..<count {
                let token = try source.nextStored()
                total += token.count
                guard total <= maxBytes - out.count else { throw ColdFormatError("a column expanding past \(maxBytes) bytes") }
                tokens.append(token)
            }
            appendInPlace(tokens, totalBytes: total, into: &out, ends: &ends)
        case .integer, .decimal, .timestampMillisZ:
            // (Not counted against `maxBytes`: a number takes at least a byte of the stream and
            // formats to at most 40, so the stream's own size bounds the output.)
            var day = (days: 0, year: 0, month: 0, day: 0)
            for _ in 0..<count {
                let (value, scale) = try source.nextNumber()
                switch source.encoding {
                case .integer: formatInteger(value, into: &out)
                case .decimal: formatDecimal(value, scale: scale, into: &out)
                default: try formatTimestampMillisZ(value, into: &out, day: &day)
                }
                ends.append(out.count)
            }
        }
    }

    /// `tokens` (`totalBytes` together) appended to `out`, each one's end to `ends`: one growth of
    /// `out` and the tokens copied in place (an append per token costs more than its few bytes).
    private static func appendInPlace(_ tokens: [UnsafeRawBufferPointer], totalBytes: Int, into out: inout [UInt8], ends: inout [Int]) {
        guard totalBytes > 0 else {
            for _ in tokens { ends.append(out.count) }
            return
        }
        var at = out.count
        out.append(contentsOf: repeatElement(0, count: totalBytes))
        out.withUnsafeMutableBytes { o in
            let base = o.baseAddress!
            for token in tokens {
                if token.count > 0, let source = token.baseAddress { copyFewBytes(to: base + at, from: source, count: token.count) }
                at += token.count
                ends.append(at)
            }
        }
    }

    /// A column as stored, for readers that convert tokens themselves (StrataQuery's column
    /// scan): numbers stay numbers and a dictionary stays entries plus an index per token, so no
    /// token is formatted as text only to be parsed again. Same checks as `decode`; text (raw
    /// tokens, and timestamps, formatted) counts against `maxBytes`, as do dictionary entries.
    enum Typed {
        case integers([Int64])
        case decimals(unscaled: [Int64], scales: [UInt8])
        case dictionary(entries: [UInt8], entryEnds: [Int], indexes: [UInt32])
        case text(bytes: [UInt8], ends: [Int])
    }

    static func decodeTyped(_ r: inout ColdReader, count: Int, maxBytes: Int = .max) throws(ColdFormatError) -> Typed {
        guard let encoding = Encoding(rawValue: try r.fixed(UInt8.self)) else { throw ColdFormatError("unknown token encoding") }
        switch encoding {
        case .integer:
            return .integers(try numbers(&r, count: count))
        case .decimal:
            let scales = try decimalScales(&r, count: count)
            return .decimals(unscaled: try numbers(&r, count: count), scales: scales)
        case .dictionary:
            let entries = try r.count(max: r.remaining)
            var bytes: [UInt8] = []
            var ends: [Int] = []
            ends.reserveCapacity(entries)
            for _ in 0..<entries {
                let entry = try r.blob()
                guard entry.count <= maxBytes - bytes.count else { throw ColdFormatError("a column expanding past \(maxBytes) bytes") }
                bytes.append(contentsOf: entry)
                ends.append(bytes.count)
            }
            // An index per token, a byte at least each.
            guard count <= r.remaining else { throw ColdFormatError("\(count) dictionary indexes in \(r.remaining) bytes") }
            var indexes: [UInt32]
            if entries <= 0x80 {
                indexes = try r.smallVarints(count, below: entries, as: UInt32.self)
            } else {
                indexes = [UInt32](repeating: 0, count: count)
                for i in 0..<count { indexes[i] = UInt32(try r.count(max: entries - 1)) }
            }
            return .dictionary(entries: bytes, entryEnds: ends, indexes: indexes)
        case .timestampMillisZ, .raw:
            // Through `decode`, which formats timestamps; `r` is rewound to the encoding byte.
            r.position -= 1
            var bytes: [UInt8] = []
            var ends: [Int] = []
            ends.reserveCapacity(count)
            try decode(&r, count: count, into: &bytes, ends: &ends, maxBytes: maxBytes)
            return .text(bytes: bytes, ends: ends)
        }
    }

    // MARK: - Typed forms

    /// `-?(0|[1-9][0-9]*)` within Int64, not `-0`: the only spelling formatInteger writes.
    static func canonicalInteger(_ t: UnsafeRawBufferPointer) -> Int64? {
        var i = 0
        let negative = t.count > 0 && t[0] == UInt8(ascii: "-")
        if negative { i = 1 }
        let digits = t.count - i
        guard digits >= 1, digits <= 19 else { return nil }
        if t[i] == UInt8(ascii: "0") && (digits > 1 || negative) { return nil }
        var v: Int64 = 0
        for j in i..<t.count {
            let d = t[j] &- UInt8(ascii: "0")
            guard d <= 9 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = negative ? m.subtractingReportingOverflow(Int64(d)) : m.addingReportingOverflow(Int64(d))
            guard !o1, !o2 else { return nil }
            v = s
        }
        return v
    }

    /// `m`'s decimal digits written to end just before `end` in `d`; the first one's index.
    @inline(__always)
    private static func digits(_ m: UInt64, endingAt end: Int, in d: UnsafeMutableRawBufferPointer) -> Int {
        var m = m, i = end
        repeat {
            i -= 1
            d[i] = UInt8(m % 10) + UInt8(ascii: "0")
            m /= 10
        } while m > 0
        return i
    }

    /// Room for any token the formatters write: a sign, 19 integer digits, the point and 18
    /// fraction digits (decimals); 24 bytes (timestamps).
    typealias Scratch = (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    // The formatters write a token at the end of a scratch buffer (where it starts is returned):
    // a reader formats one per numeric value it decodes, and an append per character costs more
    // than the digits.
    @inline(__always)
    static func writeInteger(_ v: Int64, endingIn d: UnsafeMutableRawBufferPointer) -> Int {
        var i = digits(v.magnitude, endingAt: d.count, in: d)
        if v < 0 {
            i -= 1
            d[i] = UInt8(ascii: "-")
        }
        return i
    }

    static func formatInteger(_ v: Int64, into out: inout [UInt8]) {
        var scratch: Scratch = (0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &scratch) { d in out.append(contentsOf: UnsafeRawBufferPointer(rebasing: d[writeInteger(v, endingIn: d)...])) }
    }

    /// `-?(0|[1-9][0-9]*)\.[0-9]+` with at most 18 digits and not negative zero: the unscaled
    /// value and the number of fraction digits.
    static func decimal(_ t: UnsafeRawBufferPointer) -> (Int64, UInt8)? {
        var i = 0
        let negative = t.count > 0 && t[0] == UInt8(ascii: "-")
        if negative { i = 1 }
        var v: Int64 = 0
        var digits = 0
        var point = -1
        let intStart = i
        while i < t.count {
            let c = t[i]
            if c == UInt8(ascii: ".") {
                guard point < 0, i > intStart else { return nil }
                point = i
            } else {
                let d = c &- UInt8(ascii: "0")
                guard d <= 9 else { return nil }
                digits += 1
                guard digits <= 18 else { return nil }
                v = v * 10 + Int64(d)
            }
            i += 1
        }
        guard point > intStart, point < t.count - 1 else { return nil }
        // No leading zeros in the integer part.
        if t[intStart] == UInt8(ascii: "0") && point != intStart + 1 { return nil }
        if negative && v == 0 { return nil }
        return (negative ? -v : v, UInt8(t.count - 1 - point))
    }

    /// `scale` 1...18 (what `decimalScales` accepts); `d` at least 40 bytes.
    @inline(__always)
    static func writeDecimal(_ v: Int64, scale: Int, endingIn d: UnsafeMutableRawBufferPointer) -> Int {
        precondition(scale >= 1 && scale <= 18, "decimal scale \(scale)")
        var power: UInt64 = 1
        for _ in 0..<scale { power &*= 10 }
        let m = v.magnitude
        var fraction = m % power
        var i = d.count
        for _ in 0..<scale {
            i -= 1
            d[i] = UInt8(fraction % 10) + UInt8(ascii: "0")
            fraction /= 10
        }
        i -= 1
        d[i] = UInt8(ascii: ".")
        i = digits(m / power, endingAt: i, in: d)
        if v < 0 {
            i -= 1
            d[i] = UInt8(ascii: "-")
        }
        return i
    }

    static func formatDecimal(_ v: Int64, scale: Int, into out: inout [UInt8]) {
        var scratch: Scratch = (0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &scratch) { d in
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: d[writeDecimal(v, scale: scale, endingIn: d)...]))
        }
    }

    static func timestampMillisZ(_ t: UnsafeRawBufferPointer) -> Int64? { CivilDate.parseMillisZ(t) }

    /// `YYYY-MM-DDTHH:MM:SS.sssZ` in the last 24 bytes of `d`; where it starts.
    /// `day`: the last day converted and its civil date (a column's timestamps mostly share
    /// days; the conversion is most of the formatting).
    static func writeTimestampMillisZ(_ v: Int64, endingIn d: UnsafeMutableRawBufferPointer,
                                      day: inout (days: Int, year: Int, month: Int, day: Int)) throws(ColdFormatError) -> Int {
        // Years 0000-9999 only (what the parser accepts).
        guard v >= -62_167_219_200_000, v <= 253_402_300_799_999 else { throw ColdFormatError("timestamp \(v) out of range") }
        let ms = Int((v % 1000 + 1000) % 1000)
        let seconds = (v - Int64(ms)) / 1000
        let secondOfDay = Int((seconds % 86_400 + 86_400) % 86_400)
        let days = Int((seconds - Int64(secondOfDay)) / 86_400)
        if day.days != days || day.month == 0 {
            let (y, m, dd) = CivilDate.civilFromDays(days)
            day = (days, y, m, dd)
        }
        let (year, month, dayOfMonth) = (day.year, day.month, day.day)
        let start = d.count - 24
        func put(_ value: Int, _ width: Int, at position: Int) {
            var x = value
            for k in stride(from: position + width - 1, through: position, by: -1) {
                d[start + k] = UInt8(x % 10) + UInt8(ascii: "0")
                x /= 10
            }
        }
        put(year, 4, at: 0)
        d[start + 4] = UInt8(ascii: "-")
        put(month, 2, at: 5)
        d[start + 7] = UInt8(ascii: "-")
        put(dayOfMonth, 2, at: 8)
        d[start + 10] = UInt8(ascii: "T")
        put(secondOfDay / 3600, 2, at: 11)
        d[start + 13] = UInt8(ascii: ":")
        put(secondOfDay / 60 % 60, 2, at: 14)
        d[start + 16] = UInt8(ascii: ":")
        put(secondOfDay % 60, 2, at: 17)
        d[start + 19] = UInt8(ascii: ".")
        put(ms, 3, at: 20)
        d[start + 23] = UInt8(ascii: "Z")
        return start
    }

    static func formatTimestampMillisZ(_ v: Int64, into out: inout [UInt8]) throws(ColdFormatError) {
        var day = (days: 0, year: 0, month: 0, day: 0)
        try formatTimestampMillisZ(v, into: &out, day: &day)
    }

    static func formatTimestampMillisZ(_ v: Int64, into out: inout [UInt8], day: inout (days: Int, year: Int, month: Int, day: Int)) throws(ColdFormatError) {
        var scratch: Scratch = (0, 0, 0, 0, 0, 0)
        try withUnsafeMutableBytes(of: &scratch) { (d) throws(ColdFormatError) in
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: d[try writeTimestampMillisZ(v, endingIn: d, day: &day)...]))
        }
    }

}

/// One column's tokens in order, decoded as a reader takes them: a block's assembly takes one
/// token of each of a shape's columns per record, so no column is decoded whole into memory and
/// read back record by record (a dozen strided streams through ~9 MB a block).
struct TokenSource {
    let encoding: TokenColumn.Encoding
    /// The column's stream from the next token on (numbers, dictionary indexes or stored bytes).
    private(set) var reader: ColdReader
    /// Tokens the column holds, and taken so far: taking more is an error.
    let count: Int
    private(set) var taken = 0
    private let mode: UInt8
    private var previous: Int64 = 0
    private let scales: [UInt8]
    private let entries: [UnsafeRawBufferPointer]
    /// The civil date of the last timestamp's day (month 0: none yet).
    private var day = (days: 0, year: 0, month: 0, day: 0)

    /// The column's header (encoding, number mode, decimal scales, dictionary entries) read and
    /// checked; `r` starts at the encoding byte.
    init(_ r: ColdReader, count: Int) throws(ColdFormatError) {
        var r = r
        guard let encoding = TokenColumn.Encoding(rawValue: try r.fixed(UInt8.self)) else { throw ColdFormatError("unknown token encoding") }
        self.encoding = encoding
        self.count = count
        var mode: UInt8 = 0
        var scales: [UInt8] = []
        var entries: [UnsafeRawBufferPointer] = []
        switch encoding {
        case .integer, .timestampMillisZ:
            mode = try TokenColumn.numberMode(&r)
        case .decimal:
            scales = try TokenColumn.decimalScales(&r, count: count)
            mode = try TokenColumn.numberMode(&r)
        case .dictionary:
            let n = try r.count(max: r.remaining)
            entries.reserveCapacity(n)
            for _ in 0..<n { entries.append(try r.blob()) }
        case .raw:
            break
        }
        self.mode = mode
        self.scales = scales
        self.entries = entries
        reader = r
    }

    @inline(__always)
    private mutating func take() throws(ColdFormatError) {
        guard taken < count else { throw ColdFormatError("a value takes token \(taken) of a column of \(count)") }
        taken += 1
    }

    /// The next token of a dictionary or raw column: bytes of the stream, not copied.
    @inline(__always)
    mutating func nextStored() throws(ColdFormatError) -> UnsafeRawBufferPointer {
        try take()
        if encoding == .dictionary { return entries[try reader.count(max: entries.count - 1)] }
        precondition(encoding == .raw, "nextStored on a \(encoding) column")
        return try reader.blob()
    }

    /// The next token of a number column: its value and (decimals) its scale.
    @inline(__always)
    mutating func nextNumber() throws(ColdFormatError) -> (value: Int64, scale: Int) {
        try take()
        let value = try TokenColumn.number(&reader, previous: &previous, mode: mode)
        return (value, encoding == .decimal ? Int(scales[taken - 1]) : 0)
    }

    /// The next token appended to `data`, which may hold at most `limit` bytes.
    @inline(__always)
    mutating func next(into data: ColdFlatBlock.Buffer, limit: Int) throws(ColdFormatError) {
        switch encoding {
        case .dictionary, .raw:
            let token = try nextStored()
            guard data.count + token.count <= limit else { throw ColdFormatError("a block decoding to more than \(limit) bytes") }
            data.append(token)
        case .integer, .timestampMillisZ, .decimal:
            let (value, scale) = try nextNumber()
            let encoding = encoding
            var scratch: TokenColumn.Scratch = (0, 0, 0, 0, 0, 0)
            var day = day
            defer { self.day = day }
            try withUnsafeMutableBytes(of: &scratch) { (d) throws(ColdFormatError) in
                let start: Int
                switch encoding {
                case .integer: start = TokenColumn.writeInteger(value, endingIn: d)
                case .decimal: start = TokenColumn.writeDecimal(value, scale: scale, endingIn: d)
                default: start = try TokenColumn.writeTimestampMillisZ(value, endingIn: d, day: &day)
                }
                guard data.count + (d.count - start) <= limit else { throw ColdFormatError("a block decoding to more than \(limit) bytes") }
                data.append(UnsafeRawBufferPointer(rebasing: d[start...]))
            }
        }
    }
}
