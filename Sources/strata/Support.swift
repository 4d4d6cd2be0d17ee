#if canImport(Glibc)
import Glibc
#endif
import StrataLog

enum ProcessEnvironment {
    static func value(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
}

/// Writes to stderr without buffering surprises.
func printError(_ message: String) {
    let line = message + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
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

    /// Calls `body` with each line (without the newline). Lines longer than the buffer are an error.
    mutating func forEachLine(_ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        while true {
            // Emit complete lines in the buffer.
            while let nl = buffer[start..<end].firstIndex(of: 0x0A) {
                try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[start..<nl])) }
                start = nl + 1
            }
            if eof {
                if start < end { try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[start..<end])) } }
                return
            }
            if start > 0 {
                buffer.withUnsafeMutableBytes { p in
                    p.baseAddress!.copyMemory(from: p.baseAddress! + start, byteCount: end - start)
                }
                end -= start
                start = 0
            }
            guard end < buffer.count else { throw LineError.tooLong(buffer.count) }
            let n = buffer.withUnsafeMutableBytes { p in read(fd, p.baseAddress! + end, p.count - end) }
            if n < 0 {
                if errno == EINTR { continue }
                throw LineError.readFailed(errno)
            }
            if n == 0 { eof = true } else { end += n }
        }
    }

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
