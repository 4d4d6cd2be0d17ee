#if canImport(Glibc)
import Glibc
#endif
import Logging
import StrataCore
import Synchronization

/// `strata serve`'s log lines on stderr: one event per line, `text` (time, level, message, then
/// key=value fields) or `json` (one object with `ts`, `level`, `logger`, `msg` and the fields).
/// Field values are quoted in text form when they hold spaces, quotes or control characters, so a
/// client id cannot forge a second line or field.
public struct StrataLogHandler: LogHandler {
    public enum Format: String, Sendable, CaseIterable { case text, json }

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public let label: String
    public let format: Format

    public init(label: String, level: Logger.Level, format: Format) {
        self.label = label
        self.logLevel = level
        self.format = format
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Lines from several threads never interleave: each is written with one write(2) under a lock.
    private static let output = Mutex(())

    public func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { _, new in new } }
        let line = Self.render(timeMs: wallClockMillis(), level: event.level, label: label, message: "\(event.message)",
                               fields: fields, format: format)
        Self.output.withLock { _ in
            line.utf8CString.withUnsafeBufferPointer { p in
                var at = 0
                let count = p.count - 1  // without the terminating NUL
                while at < count {
                    let n = write(2, p.baseAddress! + at, count - at)
                    if n <= 0 { if n < 0 && errno == EINTR { continue }; break }
                    at += n
                }
            }
        }
    }

    /// One line, newline included.
    public static func render(timeMs: Int64, level: Logger.Level, label: String, message: String,
                              fields: Logger.Metadata, format: Format) -> String {
        let time = iso8601(timeMs)
        let keys = fields.keys.sorted()
        switch format {
        case .text:
            var line = "\(time) \(level.rawValue.uppercased()) \(label): \(sanitized(message))"
            for key in keys { line += " \(key)=\(quotedIfNeeded("\(fields[key]!)"))" }
            return line + "\n"
        case .json:
            var line = "{\"ts\":\(jsonQuote(time)),\"level\":\(jsonQuote(level.rawValue)),\"logger\":\(jsonQuote(label)),\"msg\":\(jsonQuote(message))"
            for key in keys where !["ts", "level", "logger", "msg"].contains(key) {
                line += ",\(jsonQuote(key)):\(jsonQuote("\(fields[key]!)"))"
            }
            return line + "}\n"
        }
    }

    static func iso8601(_ ms: Int64) -> String {
        var seconds = time_t(ms / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(ms % 1000), 3))Z"
    }

    /// Control characters (a newline above all) never reach the output raw.
    static func sanitized(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else { return text }
        var out = ""
        for u in text.unicodeScalars {
            switch u {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7f { out += "\\u{\(String(u.value, radix: 16))}" } else { out.unicodeScalars.append(u) }
            }
        }
        return out
    }

    static func quotedIfNeeded(_ value: String) -> String {
        let plain = !value.isEmpty && !value.unicodeScalars.contains { $0.value <= 0x20 || $0 == "\"" || $0 == "=" || $0.value == 0x7f }
        if plain { return value }
        var out = "\""
        for u in value.unicodeScalars {
            if u == "\"" || u == "\\" { out += "\\" + String(u) } else { out += sanitized(String(u)) }
        }
        return out + "\""
    }

}
