import Crypto
import _CryptoExtras
import StrataCore
import StrataMetadata
import Synchronization

/// SASL/SCRAM (RFC 5802, RFC 7677) as Kafka speaks it: SCRAM-SHA-256 and SCRAM-SHA-512, without
/// channel binding; the `tokenauth` extension is refused. Credentials are derived once, when a
/// user is added (`ScramCredential`); the exchange never sees a password.
public enum ScramMechanism: String, Sendable, CaseIterable {
    case sha256 = "SCRAM-SHA-256"
    case sha512 = "SCRAM-SHA-512"

    /// Kafka's default and minimum (ScramMechanism.minIterations is 4096).
    public static let defaultIterations: Int32 = 4096
    public static let maxIterations: Int32 = 16_384

    public func hash(_ data: [UInt8]) -> [UInt8] {
        switch self {
        case .sha256: return Array(SHA256.hash(data: data))
        case .sha512: return Array(SHA512.hash(data: data))
        }
    }

    public func hmac(key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        let k = SymmetricKey(data: key)
        switch self {
        case .sha256: return Array(HMAC<SHA256>.authenticationCode(for: data, using: k))
        case .sha512: return Array(HMAC<SHA512>.authenticationCode(for: data, using: k))
        }
    }

    /// Hi(password, salt, i): PBKDF2 with this mechanism's HMAC.
    public func saltedPassword(_ password: String, salt: [UInt8], iterations: Int32) throws -> [UInt8] {
        let function: KDF.Insecure.PBKDF2.HashFunction = self == .sha256 ? .sha256 : .sha512
        let key = try KDF.Insecure.PBKDF2.deriveKey(from: Array(password.utf8), salt: salt, using: function,
                                                     outputByteCount: self == .sha256 ? 32 : 64, unsafeUncheckedRounds: Int(iterations))
        return key.withUnsafeBytes { Array($0) }
    }

    /// A new credential for `password`, with a random 32-byte salt.
    public func credential(password: String, iterations: Int32 = ScramMechanism.defaultIterations) throws -> ScramCredential {
        try credential(password: password, salt: SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }, iterations: iterations)
    }

    /// The digest length: a salted password (and StoredKey, ServerKey) has this many bytes.
    public var digestBytes: Int { self == .sha256 ? 32 : 64 }

    /// The credential from a salted password computed elsewhere (AlterUserScramCredentials).
    public func credential(saltedPassword salted: [UInt8], salt: [UInt8], iterations: Int32) -> ScramCredential {
        let clientKey = hmac(key: salted, Array("Client Key".utf8))
        return ScramCredential(mechanism: rawValue, salt: salt, iterations: iterations, storedKey: hash(clientKey),
                               serverKey: hmac(key: salted, Array("Server Key".utf8)))
    }

    func credential(password: String, salt: [UInt8], iterations: Int32) throws -> ScramCredential {
        let salted = try saltedPassword(password, salt: salt, iterations: iterations)
        let clientKey = hmac(key: salted, Array("Client Key".utf8))
        return ScramCredential(mechanism: rawValue, salt: salt, iterations: iterations, storedKey: hash(clientKey),
                               serverKey: hmac(key: salted, Array("Server Key".utf8)))
    }

    /// Whether `password` is the one `credential` was made from (for SASL/PLAIN).
    public func verify(password: String, against credential: ScramCredential) -> Bool {
        guard let salted = try? saltedPassword(password, salt: credential.salt, iterations: credential.iterations) else { return false }
        return constantTimeEqual(hash(hmac(key: salted, Array("Client Key".utf8))), credential.storedKey)
    }
}

/// Why an authentication failed. The message is for the log and the client: it never contains
/// a password, a proof or a nonce.
public struct AuthenticationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The server side of one SCRAM exchange: client-first → server-first, client-final →
/// server-final. Every client message is hostile: sizes are bounded, attributes parsed strictly,
/// base64 checked, and any deviation fails the exchange with one generic reason.
public struct ScramServerExchange: Sendable {
    public enum State: Sendable { case awaitingClientFirst, awaitingClientFinal, done, failed }

    public let mechanism: ScramMechanism
    public private(set) var state = State.awaitingClientFirst
    public private(set) var user: String?
    private var credential: ScramCredential?
    private var gs2Header = ""
    private var clientFirstBare = ""
    private var serverFirst = ""
    private var nonce = ""

    /// Largest SCRAM message accepted (a client-final with a SHA-512 proof is ~200 bytes).
    public static let maxMessageBytes = 1024

    /// Fixed only by tests (RFC 7677's vector); otherwise 32 random bytes, base64.
    private let fixedServerNonce: String?

    public init(mechanism: ScramMechanism) {
        self.mechanism = mechanism
        self.fixedServerNonce = nil
    }

    init(mechanism: ScramMechanism, serverNonce: String) {
        self.mechanism = mechanism
        self.fixedServerNonce = serverNonce
    }

    /// `lookup` returns the user's credential for this mechanism. An unknown user gets a made-up
    /// salt and fails at the proof, as Kafka does, so the exchange does not reveal who exists.
    public mutating func receiveClientFirst(_ message: [UInt8], lookup: (String) throws -> ScramCredential?) throws(AuthenticationError) -> [UInt8] {
        guard state == .awaitingClientFirst else { state = .failed; throw AuthenticationError("SCRAM messages out of order") }
        state = .failed
        guard message.count <= Self.maxMessageBytes, let text = String(validating: message, as: UTF8.self) else {
            throw AuthenticationError("malformed SCRAM client-first message")
        }
        // gs2-header: "n,," (no channel binding, no authzid) or "n,a=<authzid>,"; "y"/"p" (channel binding) refused.
        let parts = text.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "n", parts[1].isEmpty || parts[1].hasPrefix("a=") else {
            throw AuthenticationError("malformed SCRAM client-first message (channel binding is not supported)")
        }
        gs2Header = "n,\(parts[1]),"
        clientFirstBare = String(parts[2])
        let attributes = clientFirstBare.split(separator: ",", omittingEmptySubsequences: false)
        guard attributes.count >= 2, attributes[0].hasPrefix("n="), attributes[1].hasPrefix("r=") else {
            throw AuthenticationError("malformed SCRAM client-first message")
        }
        // Extensions (tokenauth=true: delegation tokens) are not supported.
        guard attributes.count == 2 else { throw AuthenticationError("SCRAM extensions are not supported") }
        guard let name = Self.saslName(attributes[0].dropFirst(2)), !name.isEmpty, name.utf8.count <= 255 else {
            throw AuthenticationError("malformed SCRAM user name")
        }
        let clientNonce = attributes[1].dropFirst(2)
        guard (8...256).contains(clientNonce.utf8.count), clientNonce.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7e && $0 != UInt8(ascii: ",") }) else {
            throw AuthenticationError("malformed SCRAM nonce")
        }
        if parts[1].hasPrefix("a=") {
            guard Self.saslName(parts[1].dropFirst(2)) == name else { throw AuthenticationError("SCRAM authorization id differs from the user name") }
        }
        user = name
        credential = try? lookup(name)
        let serverNonce = fixedServerNonce ?? SymmetricKey(size: .bits256).withUnsafeBytes { Base64.encode(Array($0)) }
        nonce = String(clientNonce) + serverNonce
        let salt = credential?.salt ?? mechanism.hash(Array("strata-unknown-user:\(name)".utf8))
        let iterations = credential?.iterations ?? ScramMechanism.defaultIterations
        serverFirst = "r=\(nonce),s=\(Base64.encode(salt)),i=\(iterations)"
        state = .awaitingClientFinal
        return Array(serverFirst.utf8)
    }

    /// Checks the proof; returns server-final (`v=` ServerSignature) and the authenticated user.
    public mutating func receiveClientFinal(_ message: [UInt8]) throws(AuthenticationError) -> (user: String, serverFinal: [UInt8]) {
        guard state == .awaitingClientFinal else { state = .failed; throw AuthenticationError("SCRAM messages out of order") }
        state = .failed
        guard message.count <= Self.maxMessageBytes, let text = String(validating: message, as: UTF8.self) else {
            throw AuthenticationError("malformed SCRAM client-final message")
        }
        guard let proofStart = text.range(ofLast: ",p=") else { throw AuthenticationError("malformed SCRAM client-final message") }
        let withoutProof = String(text[..<proofStart.lowerBound])
        let attributes = withoutProof.split(separator: ",", omittingEmptySubsequences: false)
        // The nonce must end with the one sent in server-first, as Kafka checks it (its
        // ScramSaslServer uses endsWith): librdkafka built with Cyrus SASL (Debian's kcat) sends
        // its client nonce once more in front. The proof covers the message as the client sent it.
        guard attributes.count == 2, attributes[0] == "c=" + Base64.encode(Array(gs2Header.utf8)),
              attributes[1].hasPrefix("r="), attributes[1].hasSuffix(nonce) else {
            throw AuthenticationError("SCRAM channel binding or nonce mismatch")
        }
        guard let proof = Base64.decode(text[proofStart.upperBound...]) else { throw AuthenticationError("malformed SCRAM proof") }
        let authMessage = Array("\(clientFirstBare),\(serverFirst),\(withoutProof)".utf8)
        guard let credential, let user, proof.count == credential.storedKey.count else {
            throw AuthenticationError("authentication failed: invalid user name or password")
        }
        let clientSignature = mechanism.hmac(key: credential.storedKey, authMessage)
        let clientKey = zip(proof, clientSignature).map { $0 ^ $1 }
        guard constantTimeEqual(mechanism.hash(clientKey), credential.storedKey) else {
            throw AuthenticationError("authentication failed: invalid user name or password")
        }
        state = .done
        let serverSignature = mechanism.hmac(key: credential.serverKey, authMessage)
        return (user, Array("v=\(Base64.encode(serverSignature))".utf8))
    }

    /// RFC 5802 saslname: "=2C" is ",", "=3D" is "="; any other "=" is malformed.
    static func saslName(_ s: Substring) -> String? {
        var out = ""
        var i = s.startIndex
        while i < s.endIndex {
            if s[i] == "=" {
                let code = s[i...].prefix(3)
                if code == "=2C" { out.append(",") } else if code == "=3D" { out.append("=") } else { return nil }
                i = s.index(i, offsetBy: 3)
            } else {
                out.append(s[i])
                i = s.index(after: i)
            }
        }
        return out
    }
}

/// SASL/PLAIN (RFC 4616): "authzid NUL authcid NUL passwd", checked against the user's SCRAM
/// credential (either mechanism): a PLAIN password is never stored either.
public enum PlainAuthentication {
    public static func parse(_ message: [UInt8]) throws(AuthenticationError) -> (user: String, password: String) {
        guard message.count <= 1024 else { throw AuthenticationError("malformed SASL/PLAIN message") }
        let fields = message.split(separator: 0, omittingEmptySubsequences: false)
        guard fields.count == 3, let authzid = String(validating: fields[0], as: UTF8.self),
              let user = String(validating: fields[1], as: UTF8.self), let password = String(validating: fields[2], as: UTF8.self),
              !user.isEmpty, authzid.isEmpty || authzid == user else {
            throw AuthenticationError("malformed SASL/PLAIN message")
        }
        return (user, password)
    }
}

func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for (x, y) in zip(a, b) { diff |= x ^ y }
    return diff == 0
}

/// Standard base64 with padding (RFC 4648), strict on decode.
public enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = bytes[i], b1 = i + 1 < bytes.count ? bytes[i + 1] : 0, b2 = i + 2 < bytes.count ? bytes[i + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 3) << 4 | b1 >> 4)])
            out.append(i + 1 < bytes.count ? alphabet[Int((b1 & 0xf) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(b2 & 0x3f)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ text: Substring) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 4 * 3)
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): return c - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): return c - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0") + 52
            case UInt8(ascii: "+"): return 62
            case UInt8(ascii: "/"): return 63
            default: return nil
            }
        }
        var i = 0
        while i < chars.count {
            let last = i + 4 == chars.count
            let pad = last ? (chars[i + 3] == UInt8(ascii: "=") ? (chars[i + 2] == UInt8(ascii: "=") ? 2 : 1) : 0) : 0
            guard let a = value(chars[i]), let b = value(chars[i + 1]) else { return nil }
            out.append(a << 2 | b >> 4)
            if pad < 2 {
                guard let c = value(chars[i + 2]) else { return nil }
                out.append((b & 0xf) << 4 | c >> 2)
                if pad < 1 {
                    guard let d = value(chars[i + 3]) else { return nil }
                    out.append((c & 3) << 6 | d)
                }
            }
            i += 4
        }
        return out
    }
}

extension String {
    /// The range of the last occurrence of `needle`.
    func range(ofLast needle: String) -> Range<String.Index>? {
        let n = Array(needle.utf8)
        let h = Array(utf8)
        guard n.count <= h.count else { return nil }
        var i = h.count - n.count
        while i >= 0 {
            if Array(h[i..<i + n.count]) == n {
                let lower = utf8.index(utf8.startIndex, offsetBy: i)
                return lower..<utf8.index(lower, offsetBy: n.count)
            }
            i -= 1
        }
        return nil
    }
}
