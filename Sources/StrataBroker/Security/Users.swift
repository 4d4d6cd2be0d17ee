import StrataCore
import StrataMetadata
import Synchronization

/// Users and their SASL credentials (stored in LMDB as SCRAM credentials, never as passwords),
/// shared by every listener and by `strata users`.
extension Broker {
    /// Checks a user name: 1-255 bytes of UTF-8 without control characters.
    public static func validateUserName(_ name: String) throws(BrokerError) {
        guard !name.isEmpty, name.utf8.count <= 255, !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
            throw .invalidConfig(.init(key: "user", reason: "a user name is 1-255 bytes without control characters"))
        }
    }

    /// Creates or replaces the user's credentials for `mechanisms` (both SCRAM mechanisms by
    /// default; SASL/PLAIN checks a password against either).
    public func setUserPassword(_ user: String, password: String, mechanisms: [ScramMechanism] = ScramMechanism.allCases,
                                iterations: Int32 = ScramMechanism.defaultIterations) throws {
        try Self.validateUserName(user)
        guard !password.isEmpty, password.utf8.count <= 1024 else {
            throw BrokerError.invalidConfig(.init(key: "password", reason: "a password is 1-1024 bytes"))
        }
        guard (ScramMechanism.defaultIterations...ScramMechanism.maxIterations).contains(iterations) else {
            throw BrokerError.invalidConfig(.init(key: "iterations", reason: "SCRAM iterations must be in \(ScramMechanism.defaultIterations)...\(ScramMechanism.maxIterations)"))
        }
        for mechanism in mechanisms {
            try metadata.putCredential(user: user, try mechanism.credential(password: password, iterations: iterations))
        }
    }

    /// Stores a credential made elsewhere (AlterUserScramCredentials sends salted ones).
    public func putCredential(user: String, _ credential: ScramCredential) throws {
        try Self.validateUserName(user)
        try metadata.putCredential(user: user, credential)
    }

    @discardableResult
    public func deleteUser(_ user: String, mechanism: ScramMechanism? = nil) throws -> Int {
        try metadata.deleteCredentials(user: user, mechanism: mechanism?.rawValue)
    }

    public func userCredentials() throws -> [(user: String, mechanism: String, iterations: Int32)] {
        try metadata.credentialList()
    }

    public func scramCredential(user: String, mechanism: ScramMechanism) throws -> ScramCredential? {
        try metadata.credential(user: user, mechanism: mechanism.rawValue)
    }

    /// SASL/PLAIN: the password checked against the user's SCRAM-SHA-256 credential, else its
    /// SCRAM-SHA-512 one.
    public func authenticatePlain(user: String, password: String) -> Bool {
        for mechanism in ScramMechanism.allCases {
            if let c = try? scramCredential(user: user, mechanism: mechanism) { return mechanism.verify(password: password, against: c) }
        }
        // Spend the same work on an unknown user, so timing does not tell who exists.
        _ = try? ScramMechanism.sha256.saltedPassword(password, salt: Array(user.utf8), iterations: ScramMechanism.defaultIterations)
        return false
    }
}

/// Failed authentications per client address: after `maxFailures` within `windowMs`, further
/// attempts from that address are refused until the window since the last failure passes, so a
/// password cannot be guessed at the broker's speed. Bounded: at most `maxAddresses` tracked.
public final class AuthFailureLimiter: Sendable {
    struct Entry { var failures: Int; var lastMs: Int64 }
    private let entries = Mutex<[String: Entry]>([:])
    public let maxFailures: Int
    public let windowMs: Int64
    let maxAddresses = 10_000

    public init(maxFailures: Int = 5, windowMs: Int64 = 60_000) {
        self.maxFailures = maxFailures
        self.windowMs = windowMs
    }

    /// Whether `address` may try now.
    public func allows(_ address: String, nowMs: Int64 = monotonicMillis()) -> Bool {
        entries.withLock { e in
            guard let entry = e[address] else { return true }
            if nowMs - entry.lastMs > windowMs { e[address] = nil; return true }
            return entry.failures < maxFailures
        }
    }

    public func failed(_ address: String, nowMs: Int64 = monotonicMillis()) {
        entries.withLock { e in
            if e.count >= maxAddresses { e = e.filter { nowMs - $0.value.lastMs <= windowMs } }
            guard e.count < maxAddresses || e[address] != nil else { return }
            var entry = e[address] ?? Entry(failures: 0, lastMs: nowMs)
            if nowMs - entry.lastMs > windowMs { entry.failures = 0 }
            entry.failures += 1
            entry.lastMs = nowMs
            e[address] = entry
        }
    }

    public func succeeded(_ address: String) {
        _ = entries.withLock { $0.removeValue(forKey: address) }
    }
}
