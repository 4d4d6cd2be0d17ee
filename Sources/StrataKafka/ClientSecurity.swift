import NIOCore
import NIOPosix
import NIOSSL
import StrataBroker
import StrataCore

/// How `KafkaClient` (and so `strata bench`) reaches a secured listener: TLS with a CA file, and
/// SASL PLAIN or SCRAM-SHA-256/512.
public struct ClientSecurity: Sendable {
    public var tlsCAPath: String?
    public var saslMechanism: String?
    public var user: String
    public var password: String

    public init(tlsCAPath: String? = nil, saslMechanism: String? = nil, user: String = "", password: String = "") {
        self.tlsCAPath = tlsCAPath
        self.saslMechanism = saslMechanism
        self.user = user
        self.password = password
    }
}

/// A TLS connection for the blocking client: SwiftNIO with NIOSSL underneath, bytes handed over
/// through a locked queue. Writes keep their order (one channel); reads block until bytes arrive.
///
/// `@unchecked Sendable`: `inbound`, `failure` and `closed` are read and written only while
/// `condition` is locked; `channel` and `group` are set once in `init`.
final class TLSStream: @unchecked Sendable {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var channel: Channel!
    private let condition = ConditionLock()
    private var inbound: [ByteBuffer] = []
    private var failure: String?
    private var closed = false

    init(host: String, port: Int, caPath: String) throws {
        var config = TLSConfiguration.makeClientConfiguration()
        config.trustRoots = .file(caPath)
        let context = try NIOSSLContext(configuration: config)
        let isAddress = host.allSatisfy { $0.isNumber || $0 == "." || $0 == ":" }
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : host))
                    try channel.pipeline.syncOperations.addHandler(Collector(stream: self))
                }
            }
        do {
            channel = try bootstrap.connect(host: host, port: port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    func write(_ buffer: ByteBuffer) throws {
        condition.lock()
        let problem = failure ?? (closed ? "connection closed by the broker" : nil)
        condition.unlock()
        if let problem { throw KafkaClient.ClientError(problem) }
        channel.writeAndFlush(buffer, promise: nil)
    }

    /// Copies up to `max` available bytes into `into` (waiting for at least one).
    func read(into p: UnsafeMutableRawBufferPointer) throws -> Int {
        condition.lock()
        defer { condition.unlock() }
        while inbound.isEmpty {
            if let failure { throw KafkaClient.ClientError(failure) }
            if closed { return 0 }
            condition.wait()
        }
        var first = inbound[0]
        let n = min(p.count, first.readableBytes)
        first.withUnsafeReadableBytes { src in p.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: n) }
        first.moveReaderIndex(forwardBy: n)
        if first.readableBytes == 0 { inbound.removeFirst() } else { inbound[0] = first }
        return n
    }

    func close() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }

    fileprivate func received(_ buffer: ByteBuffer) {
        condition.lock()
        inbound.append(buffer)
        condition.broadcast()
        condition.unlock()
    }

    fileprivate func ended(_ error: String?) {
        condition.lock()
        if let error, failure == nil { failure = error }
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let stream: TLSStream
        init(stream: TLSStream) { self.stream = stream }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { stream.received(unwrapInboundIn(data)) }
        func channelInactive(context: ChannelHandlerContext) { stream.ended(nil) }
        func errorCaught(context: ChannelHandlerContext, error: Error) {
            stream.ended("\(error)")
            context.close(promise: nil)
        }
    }
}

extension KafkaClient {
    /// SaslHandshake v1 and SaslAuthenticate v1: PLAIN in one step, SCRAM in two, checking the
    /// server's signature.
    func authenticate(_ security: ClientSecurity) throws {
        guard let mechanism = security.saslMechanism else { return }
        var w = KafkaWriter(capacity: 64)
        w.string(mechanism)
        var r = KafkaReader(try request(apiKey: 17, version: 1, body: Self.strip(w)))
        let handshakeError = try r.int16()
        guard handshakeError == 0 else { throw ClientError("SaslHandshake \(mechanism): Kafka error \(handshakeError)") }
        func step(_ token: [UInt8]) throws -> [UInt8] {
            var w = KafkaWriter(capacity: token.count + 16)
            w.bytes(token)
            var r = KafkaReader(try request(apiKey: 36, version: 1, body: Self.strip(w)))
            let error = try r.int16()
            let message = try r.nullableString()
            let bytes = try r.byteArray()
            guard error == 0 else { throw ClientError("SASL authentication failed (Kafka error \(error)): \(message ?? "")") }
            return bytes
        }
        if mechanism == "PLAIN" {
            _ = try step(Array("\u{0}\(security.user)\u{0}\(security.password)".utf8))
            return
        }
        guard let m = ScramMechanism(rawValue: mechanism) else { throw ClientError("unsupported SASL mechanism \(mechanism)") }
        let clientNonce = (0..<24).map { _ in String(UnicodeScalar(UInt8.random(in: 0x41...0x5a))) }.joined()
        let name = security.user.replacingEquals()
        let firstBare = "n=\(name),r=\(clientNonce)"
        let serverFirst = String(decoding: try step(Array("n,,\(firstBare)".utf8)), as: UTF8.self)
        var attributes: [Character: Substring] = [:]
        for part in serverFirst.split(separator: ",") where part.count >= 2 { attributes[part.first!] = part.dropFirst(2) }
        guard let nonce = attributes["r"], nonce.hasPrefix(clientNonce), let saltText = attributes["s"], let salt = Base64.decode(saltText),
              let iterations = attributes["i"].flatMap({ Int32($0) }), iterations >= 4096, iterations <= 1_000_000 else {
            throw ClientError("malformed SCRAM server-first message")
        }
        let salted = try m.saltedPassword(security.password, salt: salt, iterations: iterations)
        let clientKey = m.hmac(key: salted, Array("Client Key".utf8))
        let withoutProof = "c=biws,r=\(nonce)"
        let authMessage = Array("\(firstBare),\(serverFirst),\(withoutProof)".utf8)
        let signature = m.hmac(key: m.hash(clientKey), authMessage)
        let proof = zip(clientKey, signature).map { $0 ^ $1 }
        let serverFinal = String(decoding: try step(Array("\(withoutProof),p=\(Base64.encode(proof))".utf8)), as: UTF8.self)
        let expected = "v=" + Base64.encode(m.hmac(key: m.hmac(key: salted, Array("Server Key".utf8)), authMessage))
        guard serverFinal == expected else { throw ClientError("the broker's SCRAM signature does not verify") }
    }
}

extension String {
    /// RFC 5802 saslname: "," as "=2C", "=" as "=3D".
    fileprivate func replacingEquals() -> String {
        var out = ""
        for c in self {
            switch c {
            case "=": out += "=3D"
            case ",": out += "=2C"
            default: out.append(c)
            }
        }
        return out
    }
}
