import NIOCore

/// SaslHandshake v0-1: the mechanism the client wants. (v0's raw, unframed SASL tokens are not
/// served: every client since Kafka 1.0 sends SaslAuthenticate after a v1 handshake.)
struct SaslHandshakeRequest: KafkaRequestBody {
    var mechanism: String

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> SaslHandshakeRequest {
        SaslHandshakeRequest(mechanism: try r.string())
    }
}

struct SaslHandshakeResponse: KafkaResponseBody {
    var errorCode: ErrorCode
    var mechanisms: [String]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int16(errorCode.rawValue)
        w.array(mechanisms) { $0.string($1) }
    }

    func forEachErrorCode(_ body: (ErrorCode) -> Void) { body(errorCode) }
}

/// SaslAuthenticate v0-2 (v2 flexible): one SASL token each way.
struct SaslAuthenticateRequest: KafkaRequestBody {
    var authBytes: [UInt8]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> SaslAuthenticateRequest {
        let bytes = try r.byteArray()
        try r.taggedFields()
        return SaslAuthenticateRequest(authBytes: bytes)
    }
}

struct SaslAuthenticateResponse: KafkaResponseBody {
    var errorCode: ErrorCode
    var errorMessage: String?
    var authBytes: [UInt8] = []
    /// KIP-368 re-authentication: 0, sessions do not expire.
    var sessionLifetimeMs: Int64 = 0

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int16(errorCode.rawValue)
        w.nullableString(errorMessage)
        w.bytes(authBytes)
        if v >= 1 { w.int64(sessionLifetimeMs) }
        w.taggedFields()
    }

    func forEachErrorCode(_ body: (ErrorCode) -> Void) { body(errorCode) }
}
