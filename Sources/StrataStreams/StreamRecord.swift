import StrataBroker
import StrataLog

/// A window of event time, `[start, end)` for tumbling and hopping windows, `[start, end]` (the
/// first and last record) for session windows.
public struct Window: Sendable, Hashable, CustomStringConvertible {
    public let start: Int64
    public let end: Int64
    public init(start: Int64, end: Int64) {
        self.start = start
        self.end = end
    }
    public var description: String { "[\(start),\(end))" }
}

/// One record flowing through a topology. Keys and values are bytes (`nil` is a null key, or a
/// tombstone value); the helpers below read them as UTF-8 text or pick top-level JSON fields
/// without Foundation. `topic`, `partition` and `offset` name the input record it came from.
public struct StreamRecord: Sendable {
    public var key: [UInt8]?
    public var value: [UInt8]?
    /// Event time in epoch milliseconds: the record timestamp, or the JSON field the source names.
    public var timestamp: Int64
    public var headers: [ProducerRecord.Header]
    /// Set on the records of a windowed table's `toStream()`; their key is then `<key>@<start>-<end>`.
    public var window: Window?
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public init(key: [UInt8]?, value: [UInt8]?, timestamp: Int64, headers: [ProducerRecord.Header] = [],
                topic: String = "", partition: Int32 = -1, offset: Int64 = -1) {
        self.key = key
        self.value = value
        self.timestamp = timestamp
        self.headers = headers
        self.window = nil
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }

    public init(key: String?, value: String?, timestamp: Int64) {
        self.init(key: key.map { Array($0.utf8) }, value: value.map { Array($0.utf8) }, timestamp: timestamp)
    }

    public var keyString: String? { key.map { String(decoding: $0, as: UTF8.self) } }
    public var valueString: String? { value.map { String(decoding: $0, as: UTF8.self) } }

    /// A copy with another value (key, time and origin kept).
    @inlinable public func withValue(_ value: [UInt8]?) -> StreamRecord {
        var r = self
        r.value = value
        return r
    }

    public func withValue(_ value: String?) -> StreamRecord { withValue(value.map { Array($0.utf8) }) }

    /// A copy with another key.
    @inlinable public func withKey(_ key: [UInt8]?) -> StreamRecord {
        var r = self
        r.key = key
        return r
    }

    public func withKey(_ key: String?) -> StreamRecord { withKey(key.map { Array($0.utf8) }) }

    // MARK: JSON

    /// The raw text of top-level JSON members of the value, in one pass: strings are unescaped,
    /// other values are their JSON text. Nil entries: absent member, or the value is not a JSON
    /// object. Members are located without validating the whole document (fast path; use a
    /// `value.format=json` topic when values must be valid JSON).
    public func jsonFields(_ names: [String]) -> [JSONFieldValue?] {
        guard let value else { return Array(repeating: nil, count: names.count) }
        return JSON.fields(names.map { Array($0.utf8) }, in: value)
    }

    /// A top-level JSON string member of the value (or the JSON text of a non-string member).
    public func jsonString(_ name: String) -> String? {
        guard let value else { return nil }
        var name = name
        return name.withUTF8 { n in
            value.withUnsafeBytes { b in JSONFieldFinder.find(UnsafeRawBufferPointer(n), in: b).map { JSONFieldFinder.text(b, $0) } }
        }
    }

    /// A top-level JSON number member of the value, as an integer.
    public func jsonInt(_ name: String) -> Int64? { jsonFields([name])[0]?.int64 }

    /// A top-level JSON number member of the value.
    public func jsonDouble(_ name: String) -> Double? { jsonFields([name])[0]?.double }
}

/// A JSON member's value as captured from a document.
public struct JSONFieldValue: Sendable, Equatable {
    /// Unescaped content of a string, or the JSON text of another value (`12.5`, `true`, `null`, `{...}`).
    public let text: String
    public let isString: Bool

    public init(text: String, isString: Bool) {
        self.text = text
        self.isString = isString
    }

    public var int64: Int64? { isString ? nil : Int64(text) ?? Double(text).flatMap { $0.rounded() == $0 ? Int64(exactly: $0) : nil } }
    public var double: Double? { isString ? nil : Double(text) }
    /// A decimal number as hundredths (`19.99` → 1999), exact for up to two decimals, without a
    /// detour through binary floating point.
    public var cents: Int64? { isString ? nil : JSON.parseCents(text) }
    /// An event time: epoch milliseconds or an RFC 3339 string.
    public var epochMillis: Int64? { isString ? Timestamps.parseRFC3339(text) : int64 }
}

/// Foundation-free JSON helpers: field capture over `JSONScanner` and a small writer.
public enum JSON {
    public static func fields(_ names: [[UInt8]], in bytes: [UInt8]) -> [JSONFieldValue?] {
        var out = [JSONFieldValue?](repeating: nil, count: names.count)
        bytes.withUnsafeBytes { b in
            JSONFieldFinder.scan(b, remaining: names.count, { r in
                for (k, name) in names.enumerated() where out[k] == nil {
                    if name.withUnsafeBytes({ JSONFieldFinder.equal(b, r, $0) }) { return k }
                }
                return -1
            }, { k, f in
                out[k] = JSONFieldValue(text: JSONFieldFinder.text(b, f), isString: f.isString)
            })
        }
        return out
    }

    /// Epoch milliseconds of a top-level field (a number of ms, or an RFC 3339 string), without
    /// building strings.
    public static func timestampField(_ name: [UInt8], in bytes: [UInt8]) -> Int64? {
        bytes.withUnsafeBytes { p -> Int64? in
            guard let f = name.withUnsafeBytes({ JSONFieldFinder.find($0, in: p) }), !f.hasEscapes else { return nil }
            return Timestamps.parseField(UnsafeRawBufferPointer(rebasing: p[f.range]), isString: f.isString)
        }
    }

    static func parseCents(_ text: String) -> Int64? {
        var negative = false
        var whole: Int64 = 0
        var frac: Int64 = 0
        var fracDigits = 0
        var seenDot = false
        var any = false
        for (i, c) in text.utf8.enumerated() {
            switch c {
            case UInt8(ascii: "-") where i == 0: negative = true
            case UInt8(ascii: "."): guard !seenDot else { return nil }; seenDot = true
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                any = true
                if seenDot {
                    if fracDigits < 2 { frac = frac * 10 + Int64(c - 48); fracDigits += 1 }
                } else {
                    let (m, o1) = whole.multipliedReportingOverflow(by: 10)
                    let (s, o2) = m.addingReportingOverflow(Int64(c - 48))
                    if o1 || o2 { return nil }
                    whole = s
                }
            default: return nil  // exponents and the like: not a plain decimal amount
            }
        }
        guard any else { return nil }
        if fracDigits == 1 { frac *= 10 }
        // Amounts beyond Int64 hundredths are not amounts (nil), never a trap.
        let (m, o1) = whole.multipliedReportingOverflow(by: 100)
        let (v, o2) = m.addingReportingOverflow(frac)
        if o1 || o2 { return nil }
        return negative ? -v : v
    }

    /// Formats hundredths as a decimal (`1999` → `19.99`).
    public static func formatCents(_ cents: Int64) -> String {
        let sign = cents < 0 ? "-" : ""
        let m = cents.magnitude
        let frac = m % 100
        return "\(sign)\(m / 100).\(frac < 10 ? "0" : "")\(frac)"
    }

    /// Appends `s` as a JSON string literal (quoted and escaped).
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""): out.append(contentsOf: [92, 34])
            case UInt8(ascii: "\\"): out.append(contentsOf: [92, 92])
            case 0x0A: out.append(contentsOf: [92, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [92, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [92, UInt8(ascii: "t")])
            case 0..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [92, UInt8(ascii: "u"), 48, 48, hex[Int(c >> 4)], hex[Int(c & 15)]])
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// Builds one flat JSON object: `JSONObjectWriter().string("a", "x").int("n", 3).bytes`.
public struct JSONObjectWriter: Sendable {
    public private(set) var bytes: [UInt8] = [UInt8(ascii: "{")]
    private var count = 0

    public init() {}

    private mutating func name(_ name: String) {
        if count > 0 { bytes.append(UInt8(ascii: ",")) }
        count += 1
        JSON.appendString(name, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
    }

    public func string(_ name: String, _ value: String?) -> JSONObjectWriter {
        var w = self
        w.name(name)
        if let value { JSON.appendString(value, to: &w.bytes) } else { w.bytes.append(contentsOf: Array("null".utf8)) }
        return w
    }

    public func int(_ name: String, _ value: Int64) -> JSONObjectWriter { raw(name, String(value)) }

    public func double(_ name: String, _ value: Double) -> JSONObjectWriter { raw(name, value.isFinite ? "\(value)" : "null") }

    public func bool(_ name: String, _ value: Bool) -> JSONObjectWriter { raw(name, value ? "true" : "false") }

    /// `value` must already be valid JSON text (a number, an object...).
    public func raw(_ name: String, _ value: String) -> JSONObjectWriter {
        var w = self
        w.name(name)
        w.bytes.append(contentsOf: value.utf8)
        return w
    }

    /// The finished object.
    public var json: [UInt8] { bytes + [UInt8(ascii: "}")] }
    public var text: String { String(decoding: json, as: UTF8.self) }
}

/// Values kept in state stores: encoded to bytes when flushed to LMDB and the changelog, decoded
/// once when a task restores. Aggregates work on decoded values in memory.
public protocol StateValue: Sendable {
    init?(stateBytes: [UInt8])
    var stateBytes: [UInt8] { get }
}

/// Counts and integer aggregates are stored (and emitted) as decimal text, so output topics stay readable.
extension Int64: StateValue {
    public init?(stateBytes: [UInt8]) { self.init(String(decoding: stateBytes, as: UTF8.self)) }
    public var stateBytes: [UInt8] { Array(String(self).utf8) }
}

extension Double: StateValue {
    public init?(stateBytes: [UInt8]) { self.init(String(decoding: stateBytes, as: UTF8.self)) }
    public var stateBytes: [UInt8] { Array("\(self)".utf8) }
}

extension String: StateValue {
    public init?(stateBytes: [UInt8]) { self = String(decoding: stateBytes, as: UTF8.self) }
    public var stateBytes: [UInt8] { Array(utf8) }
}

extension Array: StateValue where Element == UInt8 {
    public init?(stateBytes: [UInt8]) { self = stateBytes }
    public var stateBytes: [UInt8] { self }
}

/// Where a source takes event time from.
public enum TimestampExtractor: Sendable {
    /// The record's own timestamp (producer CreateTime).
    case recordTimestamp
    /// A top-level JSON member of the value: epoch milliseconds or an RFC 3339 string. Records
    /// without a usable member keep their record timestamp (counted in `invalidTimestamps`).
    case jsonField(String)
}

/// Windowed keys on output topics: `<key>@<startMs>-<endMs>`, unique per key and window so a
/// compacted output topic keeps the latest value of each window.
public enum WindowedKey {
    public static func encode(_ key: [UInt8]?, _ window: Window) -> [UInt8] {
        var out = key ?? []
        out.append(UInt8(ascii: "@"))
        out.append(contentsOf: String(window.start).utf8)
        out.append(UInt8(ascii: "-"))
        out.append(contentsOf: String(window.end).utf8)
        return out
    }

    /// Splits an encoded windowed key back into the key and the window; nil when `bytes` is not
    /// one. Total over any input, negative bounds included (`k@-5-3`, `k@-9--2`).
    public static func decode(_ bytes: [UInt8]) -> (key: [UInt8], window: Window)? {
        guard let at = bytes.lastIndex(of: UInt8(ascii: "@")) else { return nil }
        let rest = bytes[(at + 1)...]
        // The separator is the first "-" after the start's digits (a leading "-" is its sign).
        let digitsFrom = rest.first == UInt8(ascii: "-") ? rest.startIndex + 1 : rest.startIndex
        guard digitsFrom <= rest.endIndex, let dash = rest[digitsFrom...].firstIndex(of: UInt8(ascii: "-")),
              let s = Int64(String(decoding: rest[..<dash], as: UTF8.self)),
              let e = Int64(String(decoding: rest[(dash + 1)...], as: UTF8.self)) else { return nil }
        return (Array(bytes[..<at]), Window(start: s, end: e))
    }
}
