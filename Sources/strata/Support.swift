#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import StrataBroker
import StrataKafka
import StrataLog

enum ProcessEnvironment {
    static func value(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
    static func fileExists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    /// A small text file's contents (config files: at most 1 MiB), nil if it cannot be read.
    static func readFile(_ path: String, maxBytes: Int = 1 << 20) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while bytes.count <= maxBytes {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { return String(decoding: bytes, as: UTF8.self) }
            bytes += chunk[..<n]
        }
        return nil
    }
}

/// Writes to stderr without buffering surprises.
func printError(_ message: String) {
    let line = message + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

/// A JSON string literal for `s` (quotes included).
func jsonString(_ bytes: UnsafeRawBufferPointer, into out: inout OutputBuffer) {
    out.write("\"")
    var run = 0
    var i = 0
    let hex = Array("0123456789abcdef".utf8)
    func flushRun() {
        if run < i { out.write(UnsafeRawBufferPointer(rebasing: bytes[run..<i])) }
    }
    while i < bytes.count {
        let c = bytes[i]
        if c == 0x22 || c == 0x5C || c < 0x20 {
            flushRun()
            switch c {
            case 0x22: out.write("\\\"")
            case 0x5C: out.write("\\\\")
            case 0x0A: out.write("\\n")
            case 0x0D: out.write("\\r")
            case 0x09: out.write("\\t")
            default:
                let esc: [UInt8] = [0x5C, 0x75, 0x30, 0x30, hex[Int(c >> 4)], hex[Int(c & 0xF)]]
                esc.withUnsafeBytes { out.write($0) }
            }
            run = i + 1
        }
        i += 1
    }
    flushRun()
    out.write("\"")
}

func printErrorNoNewline(_ message: String) {
    _ = message.withCString { write(2, $0, strlen($0)) }
}

/// Buffered stdout writer for bulk output (print() per line is far too slow for millions of events).
struct OutputBuffer {
    private var buffer: [UInt8] = []
    private let limit = 1 << 16

    init() { buffer.reserveCapacity(limit + 4096) }

    mutating func write(_ bytes: UnsafeRawBufferPointer) {
        buffer.append(contentsOf: bytes)
        if buffer.count >= limit { flush() }
    }

    mutating func write(_ string: String) {
        buffer.append(contentsOf: string.utf8)
        if buffer.count >= limit { flush() }
    }

    mutating func flush() {
        guard !buffer.isEmpty else { return }
        buffer.withUnsafeBytes { p in
            var done = 0
            while done < p.count {
                let n = Glibc.write(1, p.baseAddress! + done, p.count - done)
                if n <= 0 {
                    if errno == EINTR { continue }
                    exit(errno == EPIPE ? 0 : 1)
                }
                done += n
            }
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Reads stdin (or a file) line by line in large chunks.
struct LineReader {
    private let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)
    private var start = 0
    private var end = 0
    private var eof = false

    init(fd: Int32) { self.fd = fd }

    /// Calls `body` with each line (without the newline, and without a trailing CR). Lines longer
    /// than the buffer (16 MiB) are an error.
    mutating func forEachLine(_ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        while true {
            let consumed: Int = try buffer.withUnsafeBytes { p in
                var position = start
                while position < end, let nl = memchr(p.baseAddress! + position, 0x0A, end - position) {
                    let lineEnd = p.baseAddress!.distance(to: UnsafeRawPointer(nl))
                    var stop = lineEnd
                    if stop > position && p[stop - 1] == 0x0D { stop -= 1 }
                    try body(UnsafeRawBufferPointer(rebasing: p[position..<stop]))
                    position = lineEnd + 1
                }
                return position
            }
            start = consumed
            if eof {
                if start < end { try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[start..<end])) } }
                return
            }
            if start > 0 {
                let remaining = end - start
                buffer.withUnsafeMutableBytes { p in
                    if remaining > 0 { memmove(p.baseAddress!, p.baseAddress! + start, remaining) }
                }
                end = remaining
                start = 0
            }
            if end == buffer.count {
                guard buffer.count < LineReader.maxLineBytes else { throw LineError.tooLong(buffer.count) }
                buffer.append(contentsOf: [UInt8](repeating: 0, count: buffer.count))
            }
            let n = buffer.withUnsafeMutableBytes { p in read(fd, p.baseAddress! + end, p.count - end) }
            if n < 0 {
                if errno == EINTR { continue }
                throw LineError.readFailed(errno)
            }
            if n == 0 { eof = true } else { end += n }
        }
    }

    static let maxLineBytes = 16 << 20

    enum LineError: Error, CustomStringConvertible {
        case tooLong(Int)
        case readFailed(Int32)
        var description: String {
            switch self {
            case .tooLong(let n): return "a line is longer than \(n) bytes"
            case .readFailed(let e): return "read failed: \(String(cString: strerror(e)))"
            }
        }
    }
}

func formatRate(_ count: Double, seconds: Double) -> String {
    let rate = seconds > 0 ? count / seconds : 0
    if rate >= 1_000_000 { return "\((rate / 10_000).rounded() / 100)M" }
    if rate >= 1000 { return "\((rate / 10).rounded() / 100)k" }
    return "\(Int(rate))"
}

func nowSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// "topic-3" → ("topic", 3); "topic" → ("topic", nil).
func parsePartitionArgument(_ s: String) -> (String, Int32?) {
    if let (t, p) = LogManager.splitPartitionDirectory(s) { return (t, p) }
    return (s, nil)
}

/// How a command reaches a running server over the Kafka protocol, secured listeners included.
struct ClientOptions: ParsableArguments {
    @Option(help: "Broker HOST:PORT.") var bootstrap: String = "127.0.0.1:9092"
    @Option(help: "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.") var securityProtocol: String = "PLAINTEXT"
    @Option(help: "CA certificates (PEM) that sign the broker's certificate (SSL, SASL_SSL).") var caFile: String?
    @Option(help: "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.") var saslMechanism: String = "SCRAM-SHA-256"
    @Option(help: "SASL user.") var user: String?
    @Option(help: "SASL password (or env STRATA_PASSWORD).") var password: String?

    func connect(_ id: String) throws -> KafkaClient {
        let (host, port) = try Serve.split(bootstrap)
        guard let proto = SecurityProtocol(rawValue: securityProtocol.uppercased()) else {
            throw ValidationError("--security-protocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
        }
        if proto == .plaintext { return try KafkaClient(host: host, port: port, clientId: id) }
        var security = ClientSecurity()
        if proto.usesTLS {
            guard let caFile else { throw ValidationError("--ca-file is needed for \(proto.rawValue)") }
            security.tlsCAPath = caFile
        }
        if proto.usesSASL {
            guard let user, let password = password ?? ProcessEnvironment.value("STRATA_PASSWORD") ?? ProcessEnvironment.value("STRATA_BENCH_PASSWORD") else {
                throw ValidationError("--user and --password (or STRATA_PASSWORD) are needed for \(proto.rawValue)")
            }
            security.saslMechanism = saslMechanism.uppercased()
            security.user = user
            security.password = password
        }
        return try KafkaClient(host: host, port: port, clientId: id, security: security)
    }
}

/// A `--since`/`--until` style option as epoch milliseconds (RFC 3339, a date, epoch ms or a
/// duration back from `nowMs`); nil when the option was not given.
func parseTimeOption(_ text: String?, flag: String, nowMs: Int64) throws -> Int64? {
    try text.map { t in
        guard let v = Timestamps.parseUserTime(t, nowMs: nowMs) else { throw ValidationError("\(flag) '\(t)' is not a time") }
        return v
    }
}
