/// A user's SCRAM credential (RFC 5802) as Kafka keeps it: never the password, only what proves
/// knowledge of it — the salt, the iteration count, StoredKey = H(ClientKey) and ServerKey.
public struct ScramCredential: Sendable, Equatable {
    /// "SCRAM-SHA-256" or "SCRAM-SHA-512".
    public var mechanism: String
    public var salt: [UInt8]
    public var iterations: Int32
    public var storedKey: [UInt8]
    public var serverKey: [UInt8]

    public init(mechanism: String, salt: [UInt8], iterations: Int32, storedKey: [UInt8], serverKey: [UInt8]) {
        self.mechanism = mechanism
        self.salt = salt
        self.iterations = iterations
        self.storedKey = storedKey
        self.serverKey = serverKey
    }

    /// [iterations u32][salt, storedKey, serverKey: u16 length + bytes each].
    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        let i = UInt32(bitPattern: iterations)
        out += [UInt8(i >> 24), UInt8(i >> 16 & 0xff), UInt8(i >> 8 & 0xff), UInt8(i & 0xff)]
        for field in [salt, storedKey, serverKey] {
            out += [UInt8(field.count >> 8), UInt8(field.count & 0xff)]
            out += field
        }
        return out
    }

    static func decode(mechanism: String, _ bytes: [UInt8]) -> ScramCredential? {
        guard bytes.count >= 4 else { return nil }
        let iterations = Int32(bitPattern: bytes[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        var at = 4
        var fields: [[UInt8]] = []
        for _ in 0..<3 {
            guard at + 2 <= bytes.count else { return nil }
            let n = Int(bytes[at]) << 8 | Int(bytes[at + 1])
            at += 2
            guard at + n <= bytes.count else { return nil }
            fields.append(Array(bytes[at..<at + n]))
            at += n
        }
        guard at == bytes.count else { return nil }
        return ScramCredential(mechanism: mechanism, salt: fields[0], iterations: iterations, storedKey: fields[1], serverKey: fields[2])
    }
}

extension MetadataStore {
    static func credentialKey(_ user: String, _ mechanism: String) -> [UInt8] { Array(user.utf8) + [0] + Array(mechanism.utf8) }

    public func putCredential(user: String, _ credential: ScramCredential) throws {
        try environment.write { txn in try txn.put("scram_credentials", Self.credentialKey(user, credential.mechanism), credential.encoded()) }
    }

    public func credential(user: String, mechanism: String) throws -> ScramCredential? {
        try environment.read { txn in
            try txn.get("scram_credentials", Self.credentialKey(user, mechanism)).flatMap { ScramCredential.decode(mechanism: mechanism, $0) }
        }
    }

    /// Deletes the user's credentials (of one mechanism, or all); returns how many were deleted.
    @discardableResult
    public func deleteCredentials(user: String, mechanism: String? = nil) throws -> Int {
        try environment.write { txn in
            let keys = try txn.scan("scram_credentials", prefix: Array(user.utf8) + [0]).map(\.key)
                .filter { mechanism == nil || $0 == Self.credentialKey(user, mechanism!) }
            for key in keys { _ = try txn.delete("scram_credentials", key) }
            return keys.count
        }
    }

    /// Every (user, mechanism, iterations), sorted.
    public func credentialList() throws -> [(user: String, mechanism: String, iterations: Int32)] {
        try environment.read { txn in
            return try txn.scan("scram_credentials").compactMap { key, value in
                guard let zero = key.firstIndex(of: 0) else { return nil }
                let user = String(decoding: key[..<zero], as: UTF8.self)
                let mechanism = String(decoding: key[(zero + 1)...], as: UTF8.self)
                guard let c = ScramCredential.decode(mechanism: mechanism, value) else { return nil }
                return (user, mechanism, c.iterations)
            }
        }
    }
}
