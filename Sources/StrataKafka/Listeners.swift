import NIOCore
import NIOSSL
import X509

/// Kafka's listener security protocols.
public enum SecurityProtocol: String, Sendable, CaseIterable {
    case plaintext = "PLAINTEXT", ssl = "SSL", saslPlaintext = "SASL_PLAINTEXT", saslSSL = "SASL_SSL"

    public var usesTLS: Bool { self == .ssl || self == .saslSSL }
    public var usesSASL: Bool { self == .saslPlaintext || self == .saslSSL }
}

/// One Kafka listener: `PROTOCOL://HOST:PORT`, and the address Metadata and FindCoordinator give
/// the clients that connect through it.
public struct Listener: Sendable, Equatable {
    public var securityProtocol: SecurityProtocol
    public var host: String
    public var port: Int
    public var advertisedHost: String?
    public var advertisedPort: Int?

    public init(_ securityProtocol: SecurityProtocol, host: String, port: Int, advertisedHost: String? = nil, advertisedPort: Int? = nil) {
        self.securityProtocol = securityProtocol
        self.host = host
        self.port = port
        self.advertisedHost = advertisedHost
        self.advertisedPort = advertisedPort
    }

    /// Parses `PROTOCOL://HOST:PORT` (or `HOST:PORT`, PLAINTEXT); IPv6 hosts in brackets.
    public static func parse(_ text: String) throws -> Listener {
        var rest = Substring(text)
        var proto = SecurityProtocol.plaintext
        let parts = text.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        if parts.count == 2 {
            let name = parts[0].uppercased()
            guard let p = SecurityProtocol(rawValue: name) else {
                throw ListenerError("'\(text)': unknown security protocol '\(name)' (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)")
            }
            proto = p
            rest = parts[1]
        }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (0...65535).contains(port) else {
            throw ListenerError("'\(text)' is not [PROTOCOL://]HOST:PORT")
        }
        var host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return Listener(proto, host: host, port: port)
    }

    public var description: String { "\(securityProtocol.rawValue)://\(host):\(port)" }
}

public struct ListenerError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// TLS for SSL and SASL_SSL listeners: PEM certificate chain and key, and optionally the CA that
/// signs client certificates (mTLS).
public struct TLSSettings: Sendable {
    public enum ClientAuth: String, Sendable { case none, requested, required }
    public var certificatePath: String
    public var keyPath: String
    public var caPath: String?
    public var clientAuth: ClientAuth

    public init(certificatePath: String, keyPath: String, caPath: String? = nil, clientAuth: ClientAuth = .none) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.caPath = caPath
        self.clientAuth = clientAuth
    }

    /// Reads the files now (at start, and again on reload).
    public func makeContext() throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        guard !chain.isEmpty else { throw ListenerError("\(certificatePath): no certificate") }
        var config = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                              privateKey: .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem)))
        config.minimumTLSVersion = .tlsv12
        if clientAuth != .none {
            guard let caPath else { throw ListenerError("ssl.client.auth=\(clientAuth.rawValue) needs a CA file (--tls-ca)") }
            config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caPath))
            config.certificateVerification = clientAuth == .required ? .noHostnameVerification : .optionalVerification
            config.sendCANameList = true
        }
        return try NIOSSLContext(configuration: config)
    }
}

/// The security settings every listener shares.
public struct SecuritySettings: Sendable {
    /// Kafka's sasl.enabled.mechanisms.
    public var saslMechanisms: [String]
    public var tls: TLSSettings?
    /// Kafka's super.users ("User:admin"): on authenticated listeners, the principals allowed
    /// to manage users (and, once ACLs exist, everything).
    public var superUsers: [String] = []

    public static let supportedMechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

    public init(saslMechanisms: [String] = SecuritySettings.supportedMechanisms, tls: TLSSettings? = nil) {
        self.saslMechanisms = saslMechanisms
        self.tls = tls
    }
}

/// Kafka's default principal for a client certificate: "User:" and the subject's distinguished name.
func principal(of certificate: NIOSSLCertificate) -> String {
    guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return "User:ANONYMOUS" }
    return "User:" + String(describing: parsed.subject)
}
