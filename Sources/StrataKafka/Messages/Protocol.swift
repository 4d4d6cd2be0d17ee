import NIOCore

/// A request body of one API, decoded for one version. Each API writes its field layout once,
/// here in `Messages/`, covering every version served; `KafkaReader` supplies the classic or
/// flexible encoding of each primitive, and `taggedFields()` is a no-op in classic versions.
protocol KafkaRequestBody {
    static func read(_ r: inout KafkaReader, version v: Int16) throws -> Self
}

/// A response body of one API, encoded for one version.
protocol KafkaResponseBody {
    func write(_ w: inout KafkaWriter, version v: Int16)
    /// Calls `body` with every error code the response carries (top level, per topic, per
    /// partition), for the errors-by-code metric. Responses without errors keep the default.
    func forEachErrorCode(_ body: (ErrorCode) -> Void)
}

extension KafkaResponseBody {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) {}
}

extension KafkaResponseBody {
    /// The encoded body (after the frame header the connection fills in).
    func encoded(version: Int16, flexible: Bool, capacity: Int = 256) -> ByteBuffer {
        var w = KafkaWriter(capacity: capacity, flexible: flexible)
        write(&w, version: version)
        return w.buffer
    }
}
