import NIOCore

/// Kafka's SCRAM mechanism codes in the credential APIs.
enum ScramMechanismCode: Int8 {
    case unknown = 0, sha256 = 1, sha512 = 2
    var name: String? { self == .sha256 ? "SCRAM-SHA-256" : self == .sha512 ? "SCRAM-SHA-512" : nil }
    init(name: String) { self = name == "SCRAM-SHA-256" ? .sha256 : name == "SCRAM-SHA-512" ? .sha512 : .unknown }
}

/// DescribeUserScramCredentials v0 (flexible only): the users to describe, or null for all.
struct DescribeUserScramCredentialsRequest: KafkaRequestBody {
    var users: [String]?

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> DescribeUserScramCredentialsRequest {
        let users = try r.nullableArray(minElementBytes: 2) { r -> String in
            let name = try r.string()
            try r.taggedFields()
            return name
        }
        try r.taggedFields()
        return DescribeUserScramCredentialsRequest(users: users)
    }
}

struct DescribeUserScramCredentialsResponse: KafkaResponseBody {
    struct Result { var user: String; var errorCode: ErrorCode; var errorMessage: String?; var credentials: [(mechanism: Int8, iterations: Int32)] }
    var errorCode: ErrorCode = .none
    var errorMessage: String?
    var results: [Result]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.int16(errorCode.rawValue)
        w.nullableString(errorMessage)
        w.array(results) { w, r in
            w.string(r.user)
            w.int16(r.errorCode.rawValue)
            w.nullableString(r.errorMessage)
            w.array(r.credentials) { w, c in
                w.int8(c.mechanism)
                w.int32(c.iterations)
                w.taggedFields()
            }
            w.taggedFields()
        }
        w.taggedFields()
    }

    func forEachErrorCode(_ body: (ErrorCode) -> Void) {
        body(errorCode)
        for r in results { body(r.errorCode) }
    }
}

/// AlterUserScramCredentials v0 (flexible only): deletions, and upsertions carrying the salt and
/// the salted password (Hi(password, salt, i)), from which the broker derives the credential.
struct AlterUserScramCredentialsRequest: KafkaRequestBody {
    struct Deletion { var name: String; var mechanism: Int8 }
    struct Upsertion { var name: String; var mechanism: Int8; var iterations: Int32; var salt: [UInt8]; var saltedPassword: [UInt8] }
    var deletions: [Deletion]
    var upsertions: [Upsertion]

    static func read(_ r: inout KafkaReader, version v: Int16) throws -> AlterUserScramCredentialsRequest {
        let deletions = try r.array(minElementBytes: 3) { r -> Deletion in
            let d = Deletion(name: try r.string(), mechanism: try r.int8())
            try r.taggedFields()
            return d
        }
        let upsertions = try r.array(minElementBytes: 9) { r -> Upsertion in
            let u = Upsertion(name: try r.string(), mechanism: try r.int8(), iterations: try r.int32(), salt: try r.byteArray(), saltedPassword: try r.byteArray())
            try r.taggedFields()
            return u
        }
        try r.taggedFields()
        return AlterUserScramCredentialsRequest(deletions: deletions, upsertions: upsertions)
    }
}

struct AlterUserScramCredentialsResponse: KafkaResponseBody {
    var results: [(user: String, errorCode: ErrorCode, errorMessage: String?)]

    func write(_ w: inout KafkaWriter, version v: Int16) {
        w.int32(0)
        w.array(results) { w, r in
            w.string(r.user)
            w.int16(r.errorCode.rawValue)
            w.nullableString(r.errorMessage)
            w.taggedFields()
        }
        w.taggedFields()
    }

    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for r in results { body(r.errorCode) } }
}
