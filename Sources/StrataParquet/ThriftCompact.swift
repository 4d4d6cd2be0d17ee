/// Thrift's compact protocol, write side only: what a Parquet footer and page headers are made
/// of (parquet.thrift). Fields are written in increasing id order by the callers, so each field
/// header is one byte holding the id delta and the type.
struct ThriftCompactWriter {
    /// Compact-protocol type codes (field headers and list element types).
    enum FieldType: UInt8 {
        case boolTrue = 1, boolFalse = 2, byte = 3, i16 = 4, i32 = 5, i64 = 6, double = 7, binary = 8, list = 9, set = 10, map = 11
        case structure = 12
    }

    private(set) var bytes: [UInt8] = []
    /// The last field id written in each open struct (the innermost last).
    private var lastFieldIds: [Int16] = [0]

    init() { bytes.reserveCapacity(256) }

    mutating func varint(_ value: UInt64) { RLEHybrid.varint(value, into: &bytes) }

    static func zigzag(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }

    private mutating func fieldHeader(_ id: Int16, _ type: FieldType) {
        let last = lastFieldIds[lastFieldIds.count - 1]
        let delta = Int(id) - Int(last)
        if delta > 0 && delta <= 15 {
            bytes.append(UInt8(delta << 4) | type.rawValue)
        } else {
            bytes.append(type.rawValue)
            varint(Self.zigzag(Int64(id)))
        }
        lastFieldIds[lastFieldIds.count - 1] = id
    }

    mutating func i16(_ id: Int16, _ v: Int16) {
        fieldHeader(id, .i16)
        varint(Self.zigzag(Int64(v)))
    }

    mutating func i32(_ id: Int16, _ v: Int32) {
        fieldHeader(id, .i32)
        varint(Self.zigzag(Int64(v)))
    }

    mutating func i64(_ id: Int16, _ v: Int64) {
        fieldHeader(id, .i64)
        varint(Self.zigzag(v))
    }

    /// A bool field is its header alone: the type code carries the value.
    mutating func bool(_ id: Int16, _ v: Bool) { fieldHeader(id, v ? .boolTrue : .boolFalse) }

    mutating func binary(_ id: Int16, _ v: [UInt8]) {
        fieldHeader(id, .binary)
        elementBinary(v)
    }

    mutating func string(_ id: Int16, _ v: String) { binary(id, Array(v.utf8)) }

    mutating func beginStruct(_ id: Int16) {
        fieldHeader(id, .structure)
        lastFieldIds.append(0)
    }

    /// Ends a struct (a field's or a list element's): the stop byte.
    mutating func endStruct() {
        bytes.append(0)
        lastFieldIds.removeLast()
    }

    /// An empty struct field (a union arm without data, such as LogicalType.STRING).
    mutating func emptyStruct(_ id: Int16) {
        beginStruct(id)
        endStruct()
    }

    mutating func listHeader(_ id: Int16, of element: FieldType, count: Int) {
        fieldHeader(id, .list)
        if count < 15 {
            bytes.append(UInt8(count << 4) | element.rawValue)
        } else {
            bytes.append(0xF0 | element.rawValue)
            varint(UInt64(count))
        }
    }

    /// A struct element of a list: no field header, its own field ids.
    mutating func beginElementStruct() { lastFieldIds.append(0) }

    mutating func elementI32(_ v: Int32) { varint(Self.zigzag(Int64(v))) }

    mutating func elementBinary(_ v: [UInt8]) {
        varint(UInt64(v.count))
        bytes.append(contentsOf: v)
    }

    mutating func elementString(_ v: String) { elementBinary(Array(v.utf8)) }

    /// Ends the outermost struct.
    mutating func finish() -> [UInt8] {
        precondition(lastFieldIds.count == 1, "a struct is still open")
        bytes.append(0)
        return bytes
    }
}
