/// Parquet physical types (parquet.thrift `Type`) this writer produces.
public enum ParquetPhysicalType: Int32, Sendable {
    case boolean = 0, int32 = 1, int64 = 2, double = 5, byteArray = 6
}

/// The annotation a column carries (LogicalType, with the matching ConvertedType for older readers).
public enum ParquetLogicalType: Sendable, Equatable {
    case none
    /// UTF-8 text.
    case string
    /// UTF-8 JSON text.
    case json
    /// Milliseconds since the Unix epoch, UTC.
    case timestampMillisUTC
}

/// One column of a row group, filled row by row: values are kept (nulls as a definition bitmap
/// for optional columns) until the file is encoded.
public struct ParquetColumnBuilder: Sendable {
    public let name: String
    public let type: ParquetPhysicalType
    public var logicalType: ParquetLogicalType
    public let optional: Bool
    /// Rows appended so far (values and nulls).
    public private(set) var rowCount = 0
    /// Per row, 1 when it has a value (optional columns only).
    private(set) var defined: [UInt8] = []
    private(set) var int32s: [Int32] = []
    private(set) var int64s: [Int64] = []
    private(set) var doubles: [Double] = []
    private(set) var booleans: [Bool] = []
    /// Byte arrays: their bytes end to end, and where each one ends.
    private(set) var bytes: [UInt8] = []
    private(set) var ends: [Int] = []

    public init(name: String, type: ParquetPhysicalType, logicalType: ParquetLogicalType = .none, optional: Bool) {
        self.name = name
        self.type = type
        self.logicalType = logicalType
        self.optional = optional
    }

    /// Values (not nulls) appended so far.
    public var valueCount: Int {
        switch type {
        case .boolean: booleans.count
        case .int32: int32s.count
        case .int64: int64s.count
        case .double: doubles.count
        case .byteArray: ends.count
        }
    }

    public var byteCount: Int { bytes.count }

    /// Room for `rows` rows (and `bytes` bytes of byte arrays), so filling never regrows.
    public mutating func reserve(rows: Int, bytes byteCount: Int = 0) {
        if optional { defined.reserveCapacity(rows) }
        if type == .byteArray && byteCount > 0 { bytes.reserveCapacity(byteCount) }
        switch type {
        case .boolean: booleans.reserveCapacity(rows)
        case .int32: int32s.reserveCapacity(rows)
        case .int64: int64s.reserveCapacity(rows)
        case .double: doubles.reserveCapacity(rows)
        case .byteArray: ends.reserveCapacity(rows)
        }
    }

    @inline(__always) private mutating func row(defined isDefined: Bool) {
        precondition(optional || isDefined, "null in the required column \(name)")
        if optional { defined.append(isDefined ? 1 : 0) }
        rowCount += 1
    }

    public mutating func appendNull() { row(defined: false) }

    /// Nulls until the column holds `rows` rows.
    public mutating func padNulls(to rows: Int) {
        while rowCount < rows { appendNull() }
    }

    public mutating func append(_ v: Int32) {
        precondition(type == .int32)
        int32s.append(v)
        row(defined: true)
    }

    public mutating func append(_ v: Int64) {
        precondition(type == .int64)
        int64s.append(v)
        row(defined: true)
    }

    public mutating func append(_ v: Double) {
        precondition(type == .double)
        doubles.append(v)
        row(defined: true)
    }

    public mutating func append(_ v: Bool) {
        precondition(type == .boolean)
        booleans.append(v)
        row(defined: true)
    }

    public mutating func append(bytes v: UnsafeRawBufferPointer) {
        precondition(type == .byteArray)
        bytes.append(contentsOf: v)
        ends.append(bytes.count)
        row(defined: true)
    }

    /// A byte array written in place by `fill` into room for `capacity` bytes; `fill` returns
    /// how many it used, or nil to append a null instead.
    public mutating func appendBytes(capacity: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Int?) {
        precondition(type == .byteArray)
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: capacity))
        let used = bytes.withUnsafeMutableBytes { fill(UnsafeMutableRawBufferPointer(rebasing: $0[start...])) }
        guard let used, used >= 0, used <= capacity else {
            bytes.removeLast(capacity)
            appendNull()
            return
        }
        bytes.removeLast(capacity - used)
        ends.append(bytes.count)
        row(defined: true)
    }

    /// The i-th value's bytes (byte arrays).
    func withValue<R>(_ i: Int, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        let start = i == 0 ? 0 : ends[i - 1]
        return bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[start..<ends[i]])) }
    }
}
