import NIOConcurrencyHelpers
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import StrataBroker
import StrataCore
#if canImport(Glibc)
import Glibc
#endif

/// `socket.request.max.bytes`: the largest request frame accepted (Kafka's default, 100 MiB).
public let defaultMaxRequestBytes = 100 * 1024 * 1024

/// Splits the stream into 4-byte big-endian size-prefixed frames. A size below the smallest
/// possible header or above the limit is a protocol error: the connection is closed before any
/// of the frame is buffered, so a client cannot make the broker allocate 2 GiB. A frame that
/// starts and then stalls for `partialFrameTimeout` (Kafka's request.timeout.ms) is dropped with
/// its connection, so half-sent requests cannot pin buffers forever.
final class FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maxFrameBytes: Int
    let partialFrameTimeout: TimeAmount
    private var stallTimer: Scheduled<Void>?

    init(maxFrameBytes: Int, partialFrameTimeout: TimeAmount) {
        self.maxFrameBytes = maxFrameBytes
        self.partialFrameTimeout = partialFrameTimeout
    }

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let size = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) else {
            armStallTimer(context, partial: buffer.readableBytes > 0)
            return .needMoreData
        }
        guard size >= 8, Int(size) <= maxFrameBytes else {
            throw ProtocolError("frame size \(size) outside 8...\(maxFrameBytes)")
        }
        guard buffer.readableBytes >= 4 + Int(size) else {
            armStallTimer(context, partial: true)
            return .needMoreData
        }
        armStallTimer(context, partial: false)
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(size))!))
        return .continue
    }

    private func armStallTimer(_ context: ChannelHandlerContext, partial: Bool) {
        guard partial else {
            stallTimer?.cancel()
            stallTimer = nil
            return
        }
        guard stallTimer == nil else { return }
        let channel = context.channel
        let timeout = partialFrameTimeout
        stallTimer = context.eventLoop.scheduleTask(in: timeout) {
            channel.pipeline.fireErrorCaught(ProtocolError("a request frame stalled for \(timeout.nanoseconds / 1_000_000) ms (request.timeout.ms)"))
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stallTimer?.cancel()
        stallTimer = nil
    }
}

/// Limits of one connection (Kafka's socket settings where it has them).
public struct ConnectionLimits: Sendable {
    /// socket.request.max.bytes.
    public var maxRequestBytes = defaultMaxRequestBytes
    /// Requests being processed at once (pipelining); reading pauses beyond it.
    public var maxInFlight = 64
    /// Response bytes written to the socket but not yet taken by the client; past it, no new
    /// request is started and reading pauses (a client that never reads cannot grow the broker).
    public var maxUnwrittenBytes = 8 << 20
    /// connections.max.idle.ms: a connection with no request for this long is closed.
    public var maxIdleMs: Int64 = 10 * 60 * 1000
    /// request.timeout.ms: a request frame that starts and stalls for this long is dropped.
    public var partialFrameTimeoutMs: Int64 = 30_000
    public init() {}
}

/// Quotes text a client sent for a log line: printable ASCII as is, everything else escaped,
/// capped, so a client id cannot forge or flood log lines.
func quoted(_ text: String?, limit: Int = 128) -> String {
    guard let text else { return "null" }
    var out = "\""
    var count = 0
    for scalar in text.unicodeScalars {
        if count >= limit { out += "...(\(text.unicodeScalars.count) chars)"; break }
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case " "..."~": out.unicodeScalars.append(scalar)
        default: out += scalar.escaped(asASCII: true)
        }
        count += 1
    }
    return out + "\""
}

/// Reads the header of one request frame (what follows its size prefix) and returns it with a
/// reader at the start of the body, set to the version's encoding. The fuzz target
/// Fuzz/KafkaRequest enters here too, as a connection does.
func parseRequestHeader(_ frameIn: ByteBuffer) throws -> (RequestHeader, KafkaReader) {
    var frame = frameIn
    guard let apiKey = frame.readInteger(as: Int16.self), let version = frame.readInteger(as: Int16.self),
          let correlation = frame.readInteger(as: Int32.self) else { throw ProtocolError("truncated request header") }
    var r = KafkaReader(frame)
    // The client id is an int16-length string in every header version; flexible versions
    // (header v2) follow it with tagged fields, and their bodies use compact encodings.
    let clientId = try r.classicNullableString()
    let header = RequestHeader(apiKey: apiKey, apiVersion: version, correlationId: correlation, clientId: clientId)
    if let api = ApiKey(rawValue: apiKey), api.advertised.contains(version), api.isFlexible(version) {
        r.flexible = true
        try r.taggedFields()
    }
    return (header, r)
}

/// One connection: parses headers, dispatches, and writes responses in request order (Kafka
/// clients match responses by order as well as correlation id).
///
/// Back-pressure (after NIO's BackPressureHandler): frames are queued and started in order while
/// fewer than `maxInFlight` are being processed, at most one Fetch is being answered (a Fetch
/// response is the large one: up to its max_bytes), and less than `maxUnwrittenBytes` of responses
/// wait in the socket's outbound buffer. While anything is held back, reading stops, so the kernel's
/// receive window pushes back on the client. A connection therefore holds at most about one Fetch
/// response plus `maxUnwrittenBytes`, whatever the client pipelines.
final class KafkaConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let handler: KafkaRequestHandler
    let limits: ConnectionLimits
    let logger: Logger
    var metrics: KafkaMetrics { handler.metrics }
    let securityProtocol: SecurityProtocol
    let saslMechanisms: [String]
    /// The listener demands a client certificate: its connections are authenticated by it.
    let certificateRequired: Bool
    /// SASL listeners serve nothing but ApiVersions and the SASL exchange until it succeeds.
    private var authenticated: Bool
    /// "User:NAME" once authenticated (SASL), the certificate subject (mTLS), else ANONYMOUS.
    private(set) var principal = "User:ANONYMOUS"
    private var saslMechanism: String?
    private var scram: ScramServerExchange?
    /// A failed authentication's response is the last thing written; then the connection closes.
    private var closeAfterSequence: Int?
    private var nextSequence = 0
    private var nextToWrite = 0
    private var ready: [Int: [ByteBuffer]?] = [:]
    private var held: [ByteBuffer] = []
    private var heldStart = 0
    private var inFlight = 0
    private var fetchInFlight = false
    private var unwrittenBytes = 0
    private var reading = true
    private var clientHost = "unknown"
    private var closed = false
    private var lastRequestMs: Int64 = 0
    private var idleTimer: RepeatedTask?
    private let appends = AppendOrder()

    init(handler: KafkaRequestHandler, limits: ConnectionLimits, logger: Logger,
         securityProtocol: SecurityProtocol = .plaintext, saslMechanisms: [String] = [], certificateRequired: Bool = false) {
        self.handler = handler
        self.limits = limits
        self.logger = logger
        self.securityProtocol = securityProtocol
        self.saslMechanisms = saslMechanisms
        self.certificateRequired = certificateRequired
        self.authenticated = !securityProtocol.usesSASL
    }

    /// Called once the TLS handshake verified a client certificate (mTLS).
    func setCertificatePrincipal(_ name: String) {
        if !securityProtocol.usesSASL { principal = name }
    }

    func channelActive(context: ChannelHandlerContext) {
        clientHost = context.remoteAddress?.ipAddress ?? "unknown"
        lastRequestMs = monotonicMillis()
        metrics.connections.increment()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let period = TimeAmount.milliseconds(max(1000, min(limits.maxIdleMs / 4, 60_000)))
        idleTimer = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
            let (me, context) = loopBound.value
            if monotonicMillis() - me.lastRequestMs > me.limits.maxIdleMs && me.inFlight == 0 {
                me.fail(context, "idle for more than connections.max.idle.ms=\(me.limits.maxIdleMs)")
            }
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        idleTimer?.cancel()
        idleTimer = nil
        held.removeAll()
        metrics.connections.decrement()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closed else { return }
        lastRequestMs = monotonicMillis()
        held.append(unwrapInboundIn(data))
        startHeld(context)
    }

    /// Starts queued requests while the limits allow; pauses or resumes reading accordingly.
    private func startHeld(_ context: ChannelHandlerContext) {
        while heldStart < held.count, !closed {
            let frame = held[heldStart]
            let isFetch = frame.getInteger(at: frame.readerIndex, as: Int16.self) == ApiKey.fetch.rawValue
            guard inFlight < limits.maxInFlight, unwrittenBytes < limits.maxUnwrittenBytes, !(isFetch && fetchInFlight) else { break }
            heldStart += 1
            start(context, frame, isFetch: isFetch)
        }
        if heldStart == held.count {
            held.removeAll(keepingCapacity: true)
            heldStart = 0
        }
        let shouldRead = heldStart == held.count
        if shouldRead != reading && !closed {
            reading = shouldRead
            context.channel.setOption(ChannelOptions.autoRead, value: shouldRead).whenComplete { _ in }
        }
    }

    private func start(_ context: ChannelHandlerContext, _ frame: ByteBuffer, isFetch: Bool) {
        let sequence = nextSequence
        nextSequence += 1
        let header: RequestHeader
        var reader: KafkaReader
        do {
            (header, reader) = try parseRequestHeader(frame)
        } catch {
            fail(context, "\(error)")
            return
        }
        let future: EventLoopFuture<ByteBuffer?>
        do {
            if header.apiKey == ApiKey.saslHandshake.rawValue || header.apiKey == ApiKey.saslAuthenticate.rawValue {
                future = try sasl(header, &reader, sequence: sequence, context: context)
            } else if !authenticated && header.apiKey != ApiKey.apiVersions.rawValue {
                fail(context, "request \(header.apiKey) v\(header.apiVersion) from client \(quoted(header.clientId)) before SASL authentication")
                return
            } else {
                let session = Session(principal: principal, authenticated: securityProtocol.usesSASL || certificateRequired)
                future = try handler.handle(header, &reader, eventLoop: context.eventLoop, clientHost: clientHost, appends: appends, session: session)
            }
        } catch {
            fail(context, "request \(header.apiKey) v\(header.apiVersion) from client \(quoted(header.clientId)): \(error)")
            return
        }
        inFlight += 1
        metrics.inFlight.increment()
        let startedNs = monotonicNanos()
        if isFetch { fetchInFlight = true }
        let correlation = header.correlationId
        let headerTaggedFields = ApiKey(rawValue: header.apiKey).map { $0.advertised.contains(header.apiVersion) && $0.responseHeaderHasTaggedFields(header.apiVersion) } ?? false
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        future.hop(to: context.eventLoop).whenComplete { result in
            let (me, context) = loopBound.value
            if isFetch { me.fetchInFlight = false }
            me.metrics.inFlight.decrement()
            me.metrics.answered(header.apiKey, nanoseconds: monotonicNanos() - startedNs)
            switch result {
            case .success(let body):
                var framed: [ByteBuffer]?
                if var body {
                    // The frame header goes out as its own small buffer: writing it into the body
                    // would copy the whole (shared, copy-on-write) response, e.g. 1 MiB of batches.
                    guard body.readableBytes >= KafkaWriter.frameHeaderBytes else {
                        me.fail(context, "internal: response shorter than its frame header")
                        return
                    }
                    body.moveReaderIndex(forwardBy: KafkaWriter.frameHeaderBytes)
                    var head = context.channel.allocator.buffer(capacity: 9)
                    let headerBytes = headerTaggedFields ? 5 : 4  // response header v1 adds an empty tagged-field section
                    head.writeInteger(Int32(truncatingIfNeeded: headerBytes + body.readableBytes))
                    head.writeInteger(correlation)
                    if headerTaggedFields { head.writeInteger(UInt8(0)) }
                    framed = [head, body]
                }
                me.ready[sequence] = .some(framed)
            case .failure(let error):
                me.fail(context, "request \(header.apiKey) v\(header.apiVersion) from client \(quoted(header.clientId)): \(error)")
                return
            }
            me.flushReady(context)
        }
    }

    private func flushReady(_ context: ChannelHandlerContext) {
        var wrote = false
        while let entry = ready.removeValue(forKey: nextToWrite) {
            let sequence = nextToWrite
            nextToWrite += 1
            inFlight -= 1
            if sequence == closeAfterSequence, !closed {
                // The refusal goes out, then the connection closes: nothing after it is served.
                closed = true
                held.removeAll()
                for buffer in entry ?? [] { context.write(wrapOutboundOut(buffer), promise: nil) }
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(capacity: 0))).whenComplete { _ in
                    channel.close(promise: nil)
                }
                return
            }
            if let buffers = entry, !closed {
                for buffer in buffers {
                    let size = buffer.readableBytes
                    unwrittenBytes += size
                    let promise = context.eventLoop.makePromise(of: Void.self)
                    let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                    promise.futureResult.whenComplete { _ in
                        let (me, context) = loopBound.value
                        me.unwrittenBytes -= size
                        me.startHeld(context)
                    }
                    context.write(wrapOutboundOut(buffer), promise: promise)
                }
                wrote = true
            }
        }
        if wrote { context.flush() }
        startHeld(context)
    }

    // MARK: SASL

    /// SaslHandshake and SaslAuthenticate (KIP-43, KIP-152): PLAIN and SCRAM-SHA-256/512 against
    /// the broker's credentials. A refusal answers with its Kafka error and closes the connection,
    /// as Kafka does; failures are counted per client address and, past the limit, refused
    /// without checking. Nothing secret (passwords, proofs, nonces) is logged.
    private func sasl(_ header: RequestHeader, _ reader: inout KafkaReader, sequence: Int, context: ChannelHandlerContext) throws -> EventLoopFuture<ByteBuffer?> {
        let api = ApiKey(rawValue: header.apiKey)!
        let v = header.apiVersion
        guard api.advertised.contains(v) else { throw ProtocolError("\(api) version \(v) is not supported") }
        let loop = context.eventLoop
        func respond(_ response: some KafkaResponseBody) -> EventLoopFuture<ByteBuffer?> {
            metrics.countErrors(api, response)
            return loop.makeSucceededFuture(response.encoded(version: v, flexible: api.isFlexible(v)))
        }
        if api == .saslHandshake {
            let request = try SaslHandshakeRequest.read(&reader, version: v)
            guard securityProtocol.usesSASL, !authenticated, saslMechanism == nil else {
                closeAfterSequence = sequence
                return respond(SaslHandshakeResponse(errorCode: .illegalSaslState, mechanisms: saslMechanisms))
            }
            guard saslMechanisms.contains(request.mechanism) else {
                closeAfterSequence = sequence
                logger.warning("SASL mechanism not enabled", metadata: ["client_host": "\(clientHost)", "mechanism": "\(quoted(request.mechanism))"])
                return respond(SaslHandshakeResponse(errorCode: .unsupportedSaslMechanism, mechanisms: saslMechanisms))
            }
            saslMechanism = request.mechanism
            if let m = ScramMechanism(rawValue: request.mechanism) { scram = ScramServerExchange(mechanism: m) }
            return respond(SaslHandshakeResponse(errorCode: .none, mechanisms: saslMechanisms))
        }
        let request = try SaslAuthenticateRequest.read(&reader, version: v)
        let host = clientHost
        let broker = handler.broker
        func refuse(_ code: ErrorCode, _ why: String, user: String?) -> EventLoopFuture<ByteBuffer?> {
            closeAfterSequence = sequence
            if code == .saslAuthenticationFailed { broker.authFailures.failed(host) }
            logger.warning("SASL authentication failed", metadata: [
                "client_host": "\(host)", "mechanism": "\(saslMechanism ?? "none")", "user": "\(quoted(user))", "reason": "\(why)",
            ])
            return respond(SaslAuthenticateResponse(errorCode: code, errorMessage: why))
        }
        guard let mechanism = saslMechanism, !authenticated else {
            return refuse(.illegalSaslState, "SaslAuthenticate without a SaslHandshake, or after authentication", user: nil)
        }
        guard broker.authFailures.allows(host) else {
            return refuse(.saslAuthenticationFailed, "too many failed authentications from \(host); try again later", user: nil)
        }
        if mechanism == "PLAIN" {
            let credentials: (user: String, password: String)
            do throws(AuthenticationError) { credentials = try PlainAuthentication.parse(request.authBytes) } catch {
                return refuse(.saslAuthenticationFailed, error.description, user: nil)
            }
            // PBKDF2 takes milliseconds: off the event loop.
            let loopBound = NIOLoopBound((self, context), eventLoop: loop)
            return handler.threadPool.runIfActive(eventLoop: loop) {
                broker.authenticatePlain(user: credentials.user, password: credentials.password)
            }.flatMap { ok in
                let (me, _) = loopBound.value
                guard ok else {
                    let response = me.plainRefused(sequence: sequence, host: host, user: credentials.user)
                    me.metrics.countErrors(api, response)
                    return loop.makeSucceededFuture(response.encoded(version: v, flexible: api.isFlexible(v)))
                }
                me.authenticated(as: credentials.user, host: host, mechanism: mechanism)
                return loop.makeSucceededFuture(SaslAuthenticateResponse(errorCode: .none).encoded(version: v, flexible: api.isFlexible(v)))
            }
        }
        guard var exchange = scram else { return refuse(.illegalSaslState, "no SCRAM exchange in progress", user: nil) }
        do throws(AuthenticationError) {
            switch exchange.state {
            case .awaitingClientFirst:
                let scramMechanism = exchange.mechanism
                let serverFirst = try exchange.receiveClientFirst(request.authBytes) { user in
                    try broker.scramCredential(user: user, mechanism: scramMechanism)
                }
                scram = exchange
                return respond(SaslAuthenticateResponse(errorCode: .none, authBytes: serverFirst))
            case .awaitingClientFinal:
                let (user, serverFinal) = try exchange.receiveClientFinal(request.authBytes)
                scram = nil
                authenticated(as: user, host: host, mechanism: mechanism)
                return respond(SaslAuthenticateResponse(errorCode: .none, authBytes: serverFinal))
            case .done, .failed:
                return refuse(.illegalSaslState, "the SCRAM exchange is over", user: exchange.user)
            }
        } catch {
            scram = nil
            return refuse(.saslAuthenticationFailed, error.description, user: exchange.user)
        }
    }

    private func plainRefused(sequence: Int, host: String, user: String) -> SaslAuthenticateResponse {
        closeAfterSequence = sequence
        handler.broker.authFailures.failed(host)
        logger.warning("SASL authentication failed", metadata: [
            "client_host": "\(host)", "mechanism": "PLAIN", "user": "\(quoted(user))", "reason": "invalid user name or password",
        ])
        return SaslAuthenticateResponse(errorCode: .saslAuthenticationFailed, errorMessage: "authentication failed: invalid user name or password")
    }

    private func authenticated(as user: String, host: String, mechanism: String) {
        authenticated = true
        principal = "User:" + user
        handler.broker.authFailures.succeeded(host)
        logger.debug("SASL authenticated", metadata: ["client_host": "\(host)", "mechanism": "\(mechanism)", "principal": "\(quoted(principal))"])
    }

    private func fail(_ context: ChannelHandlerContext, _ why: String) {
        guard !closed else { return }
        closed = true
        held.removeAll()
        metrics.connectionsClosedOnError.increment()
        logger.warning("closing connection", metadata: ["client_host": "\(clientHost)", "principal": "\(principal)", "listener": "\(securityProtocol.rawValue)", "reason": "\(why)"])
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(context, "\(error)")
    }
}

@available(*, unavailable)
extension KafkaConnectionHandler: Sendable {}

/// `strata serve`'s Kafka listeners: one or more, each PLAINTEXT, SSL, SASL_PLAINTEXT or
/// SASL_SSL, sharing the broker, the event loops and the worker pools.
///
/// `@unchecked Sendable`: `channels`, `bound`, `port` and `host` are written only by `start` and
/// `shutdown`, which the owner calls once each, in that order, from one thread; the TLS context
/// is behind a lock (SIGHUP replaces it); everything else the event loops share is a `let`.
public final class KafkaServer: @unchecked Sendable {
    public let broker: Broker
    public let group: MultiThreadedEventLoopGroup
    let threadPool: NIOThreadPool
    let validationPool: NIOThreadPool
    private var channels: [Channel] = []
    /// The listeners as bound (port 0 replaced by the port picked).
    public private(set) var bound: [Listener] = []
    /// The first listener's port and host.
    public private(set) var port: Int = 0
    public private(set) var host: String = ""
    private let tlsContext = NIOLockedValueBox<NIOSSLContext?>(nil)
    private var security = SecuritySettings()

    public init(broker: Broker, eventLoopThreads: Int = System.coreCount) {
        self.broker = broker
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, eventLoopThreads))
        threadPool = NIOThreadPool(numberOfThreads: 8)
        validationPool = NIOThreadPool(numberOfThreads: max(2, System.coreCount))
    }

    /// One PLAINTEXT listener. `port` 0 picks a free port (see `port`). The advertised address
    /// (what Metadata and FindCoordinator tell clients to connect to) defaults to the bound one.
    public func start(host: String, port: Int, advertisedHost: String? = nil, advertisedPort: Int? = nil,
                      limits: ConnectionLimits = ConnectionLimits(), logger: Logger = Logger(label: "strata.kafka")) throws {
        try start(listeners: [Listener(.plaintext, host: host, port: port, advertisedHost: advertisedHost, advertisedPort: advertisedPort)],
                  limits: limits, logger: logger)
    }

    /// Binds every listener and starts serving. TLS listeners need `security.tls`; its files are
    /// read now (and again by `reloadTLS`).
    public func start(listeners: [Listener], security: SecuritySettings = SecuritySettings(),
                      limits: ConnectionLimits = ConnectionLimits(), logger: Logger = Logger(label: "strata.kafka")) throws {
        guard !listeners.isEmpty else { throw ListenerError("no listener") }
        self.security = security
        if listeners.contains(where: { $0.securityProtocol.usesTLS }) {
            guard let tls = security.tls else { throw ListenerError("an SSL or SASL_SSL listener needs a certificate and key (--tls-cert, --tls-key)") }
            let context = try tls.makeContext()
            tlsContext.withLockedValue { $0 = context }
        }
        threadPool.start()
        validationPool.start()
        let metrics = KafkaMetrics()
        let authorizer = Authorizer(metadata: broker.metadata, superUsers: Set(security.superUsers))
        do {
            for listener in listeners {
                let requests = KafkaRequestHandler(broker: broker, threadPool: threadPool, validationPool: validationPool,
                                                   advertisedHost: listener.advertisedHost ?? listener.host,
                                                   advertisedPort: listener.advertisedPort ?? listener.port,
                                                   logger: logger, metrics: metrics, superUsers: Set(security.superUsers), authorizer: authorizer)
                let channel = try bind(listener, requests: requests, limits: limits, logger: logger)
                channels.append(channel)
                var actual = listener
                actual.port = channel.localAddress?.port ?? listener.port
                if listener.advertisedPort == nil {
                    let boundPort = Int32(actual.port)
                    requests.advertised.withLockedValue { $0.port = boundPort }
                }
                bound.append(actual)
            }
        } catch {
            for channel in channels { try? channel.close().wait() }
            channels = []
            throw error
        }
        port = bound[0].port
        host = bound[0].host
    }

    private func bind(_ listener: Listener, requests: KafkaRequestHandler, limits: ConnectionLimits, logger: Logger) throws -> Channel {
        let tls = listener.securityProtocol.usesTLS ? tlsContext : nil
        let mechanisms = security.saslMechanisms
        let certificateRequired = listener.securityProtocol.usesTLS && security.tls?.clientAuth == .required
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)  // IPPROTO_TCP level: at SOL_SOCKET, option 1 is SO_DEBUG (root only)
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    let connection = KafkaConnectionHandler(handler: requests, limits: limits, logger: logger,
                                                            securityProtocol: listener.securityProtocol, saslMechanisms: mechanisms,
                                                            certificateRequired: certificateRequired)
                    if let tls, let context = tls.withLockedValue({ $0 }) {
                        try sync.addHandler(NIOSSLServerHandler(context: context))
                        try sync.addHandler(TLSPrincipalHandler(connection: connection))
                    }
                    try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: limits.maxRequestBytes,
                                                                          partialFrameTimeout: .milliseconds(limits.partialFrameTimeoutMs))))
                    try sync.addHandler(connection)
                }
            }
        return try bootstrap.bind(host: listener.host, port: listener.port).wait()
    }

    /// Re-reads the certificate, key and CA files (SIGHUP): new connections use them, open ones
    /// keep theirs. A failure leaves the current ones in place.
    public func reloadTLS() throws {
        guard let tls = security.tls else { return }
        let context = try tls.makeContext()
        tlsContext.withLockedValue { $0 = context }
    }

    /// Stops accepting, closes connections, and stops the worker threads. The broker is not closed.
    public func shutdown() throws {
        // Parked joins and syncs answer now (the coordinator belongs to the broker, which the
        // caller closes next).
        broker.groups.stop()
        for channel in channels { try channel.close().wait() }
        // Parked fetches answer now (empty) instead of when their max_wait ends, and produce work
        // drains, while the event loops are still there to take their responses.
        broker.wakeParkedFetches()
        try validationPool.syncShutdownGracefully()
        try threadPool.syncShutdownGracefully()
        usleep(50_000)
        try group.syncShutdownGracefully()
    }
}


/// After the TLS handshake, hands the verified client certificate's subject to the connection
/// (mTLS principal). Sits between NIOSSL and the frame decoder; passes everything through.
final class TLSPrincipalHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let connection: KafkaConnectionHandler

    init(connection: KafkaConnectionHandler) { self.connection = connection }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event,
           let certificate = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate {
            connection.setCertificatePrincipal(principal(of: certificate))
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension TLSPrincipalHandler: Sendable {}
