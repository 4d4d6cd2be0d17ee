#if canImport(Glibc)
import Glibc
#endif

/// Errors of the log engine. I/O errors carry the operation, the path and errno so an operator
/// can act on them ("No space left on device" while creating segment X).
public enum LogError: Error, CustomStringConvertible, Sendable, Equatable {
    case io(operation: String, path: String, errno: Int32)
    case invalidBatch(RecordBatchError)
    case offsetOutOfRange(requested: Int64, logStartOffset: Int64, logEndOffset: Int64)
    /// A flush failed earlier; the kernel may have dropped the dirty pages, so the partition
    /// refuses writes rather than retry and pretend success.
    case readOnly(reason: String)
    case invalidConfig(String)
    case closed(String)
    case corrupt(path: String, reason: String)
    case locked(path: String, reason: String)
    /// An idempotent producer skipped sequence numbers (OUT_OF_ORDER_SEQUENCE_NUMBER).
    case outOfOrderSequence(String)
    /// A producer wrote with an epoch older than one already seen: a zombie instance
    /// (INVALID_PRODUCER_EPOCH).
    case staleProducerEpoch(String)
    /// The caller's admission check (`appendPrepared(admit:)`) refused the append; the caller
    /// knows why.
    case refused

    public var description: String {
        switch self {
        case .io(let op, let path, let e): return "\(op) \(path): \(String(cString: strerror(e))) (errno \(e))"
        case .invalidBatch(let e): return e.description
        case .offsetOutOfRange(let r, let s, let e): return "offset \(r) is out of range [\(s), \(e)]"
        case .readOnly(let why): return "partition is read-only after a failed flush: \(why)"
        case .invalidConfig(let why): return "invalid log config: \(why)"
        case .closed(let path): return "log \(path) is closed"
        case .corrupt(let path, let why): return "corrupt \(path): \(why)"
        case .locked(let path, let why): return "\(path) is locked: \(why)"
        case .outOfOrderSequence(let why), .staleProducerEpoch(let why): return why
        case .refused: return "append refused by the caller's check"
        }
    }

    static func fromErrno(_ operation: String, _ path: String) -> LogError {
        .io(operation: operation, path: path, errno: errno)
    }
}
