import StrataCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A key or value that is already bytes or text: `String` (UTF-8), `Substring`, `[UInt8]`.
/// For `Codable` types use the `json:` variants (`produce(_:key:json:)`, `record.json(as:)`).
public protocol RecordBytesConvertible: Sendable {
    var recordBytes: [UInt8] { get }
}

extension String: RecordBytesConvertible {
    public var recordBytes: [UInt8] { Array(utf8) }
}

extension Substring: RecordBytesConvertible {
    public var recordBytes: [UInt8] { Array(utf8) }
}

extension Array: RecordBytesConvertible where Element == UInt8 {
    public var recordBytes: [UInt8] { self }
}

/// How Strata encodes and decodes `Codable` keys and values: JSON, `Date`s as epoch milliseconds
/// (what `TimestampExtractor.jsonField` and `strata query`'s time functions read as event time).
public enum StrataJSON {
    // One encoder and decoder for the process: making them per call costs more than small values'
    // coding. Both are Sendable (their options are read under a lock), and never mutated after this.
    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .millisecondsSince1970
        return e
    }()
    private static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .millisecondsSince1970
        return d
    }()

    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        Array(try encoder.encode(value))
    }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try bytes.withUnsafeBytes { raw in
            try decoder.decode(type, from: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!),
                                                 count: raw.count, deallocator: .none))
        }
    }
}

/// Decoding a record's key or value that is absent (`nil` key, tombstone value).
public struct MissingRecordData: Error, CustomStringConvertible {
    public let what: String
    public var description: String { "the record has no \(what)" }
}

extension ProducerRecord {
    /// A record from text or bytes; `timestamp` nil means now.
    public init(key: (any RecordBytesConvertible)?, value: (any RecordBytesConvertible)?, headers: [Header] = [], timestamp: Int64? = nil) {
        self.init(key: key?.recordBytes, value: value?.recordBytes, headers: headers, timestamp: timestamp ?? wallClockMillis())
    }

    /// A record whose value is `json` encoded as JSON (`StrataJSON`).
    public init<T: Encodable>(key: (any RecordBytesConvertible)?, json: T, headers: [Header] = [], timestamp: Int64? = nil) throws {
        self.init(key: key?.recordBytes, value: try StrataJSON.encode(json), headers: headers, timestamp: timestamp ?? wallClockMillis())
    }
}

extension ProducerRecord.Header {
    /// A header with a text value.
    public init(_ key: String, _ value: String) { self.init(key: key, value: Array(value.utf8)) }
}

/// Typed views of a consumed record.
extension ConsumedRecord {
    public var keyString: String? { key.map { String(decoding: $0, as: UTF8.self) } }
    public var valueString: String? { value.map { String(decoding: $0, as: UTF8.self) } }

    /// The value decoded from JSON (`StrataJSON`); throws for a tombstone or a value that does not decode.
    public func json<T: Decodable>(as type: T.Type = T.self) throws -> T {
        guard let value else { throw MissingRecordData(what: "value") }
        return try StrataJSON.decode(type, from: value)
    }

    /// Top-level JSON members of the value, found by a scan without decoding the whole value
    /// (as `StreamRecord.jsonFields`): far cheaper than `json(as:)` when a few members are needed.
    public func jsonFields(_ names: [String]) -> [JSONFieldValue?] {
        guard let value else { return Array(repeating: nil, count: names.count) }
        return JSON.fields(names.map { Array($0.utf8) }, in: value)
    }

    /// A top-level JSON member of the value as text (strings unescaped).
    public func jsonString(_ name: String) -> String? { jsonFields([name])[0]?.text }

    /// The value of the first header named `name`, as text.
    public func header(_ name: String) -> String? {
        headers.first { $0.key == name }?.value.map { String(decoding: $0, as: UTF8.self) }
    }
}

/// JSON for StrataStreams: decode a record's value, emit an encoded one.
extension StreamRecord {
    public func json<T: Decodable>(as type: T.Type = T.self) throws -> T {
        guard let value else { throw MissingRecordData(what: "value") }
        return try StrataJSON.decode(type, from: value)
    }

    /// The value decoded from JSON, or nil when it is absent or does not decode.
    public func jsonIfValid<T: Decodable>(as type: T.Type = T.self) -> T? { try? json(as: type) }
}

extension KStream {
    /// Replaces each record's value with `f`'s result encoded as JSON (nil: a null value).
    /// A value that fails to encode becomes null too.
    public func mapJSON<T: Encodable & SendableMetatype>(_ f: @escaping @Sendable (StreamRecord) -> T?) -> KStream {
        mapValues { (r: StreamRecord) -> [UInt8]? in f(r).flatMap { try? StrataJSON.encode($0) } }
    }
}

/// A `Codable` type usable as an aggregate (`aggregate(_:initializer:)`), stored as JSON: declare
/// `struct Stats: Codable, JSONStateValue { ... }` and no byte conversion is needed.
public protocol JSONStateValue: StateValue, Codable {}

extension JSONStateValue {
    public init?(stateBytes: [UInt8]) {
        guard let v = try? StrataJSON.decode(Self.self, from: stateBytes) else { return nil }
        self = v
    }

    /// A value JSON cannot hold (a NaN or infinite `Double`) is stored as `null`, which does not
    /// decode back: keep such members optional or finite.
    public var stateBytes: [UInt8] { (try? StrataJSON.encode(self)) ?? Array("null".utf8) }
}
