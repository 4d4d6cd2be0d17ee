import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StrataBroker
#if canImport(Glibc)
import Glibc
#endif

/// `socket.request.max.bytes`: the largest request frame accepted (Kafka's default, 100 MiB).
public let defaultMaxRequestBytes = 100 * 1024 * 1024

/// Splits the stream into 4-byte big-endian size-prefixed frames. A size below the smallest
/// possible header or above the limit is a protocol error: the connection is closed before any
/// of the frame is buffered, so a client cannot make the broker allocate 2 GiB.
final class FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maxFrameBytes: Int

    init(maxFrameBytes: Int) { self.maxFrameBytes = maxFrameBytes }

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let size = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) else { return .needMoreData }
        guard size >= 8, Int(size) <= maxFrameBytes else {
            throw ProtocolError("frame size \(size) outside 8...\(maxFrameBytes)")
        }
        guard buffer.readableBytes >= 4 + Int(size) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(size))!))
        return .continue
    }
}

/// One connection: parses headers, dispatches, and writes responses in request order (Kafka
/// clients match responses by order as well as correlation id). At most `maxInFlight` requests
/// are processed at once; reading pauses beyond that.
final class KafkaConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let maxInFlight = 64
    let handler: KafkaRequestHandler
    let log: @Sendable (String) -> Void
    private var nextSequence = 0
    private var nextToWrite = 0
    private var ready: [Int: [ByteBuffer]?] = [:]
    private var inFlight = 0
    private var clientHost = "unknown"
    private var closed = false

    init(handler: KafkaRequestHandler, log: @escaping @Sendable (String) -> Void) {
        self.handler = handler
        self.log = log
    }

    func channelActive(context: ChannelHandlerContext) {
        clientHost = context.remoteAddress?.ipAddress ?? "unknown"
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = unwrapInboundIn(data)
        let sequence = nextSequence
        nextSequence += 1
        let header: RequestHeader
        var reader: KafkaReader
        do {
            guard let apiKey = frame.readInteger(as: Int16.self), let version = frame.readInteger(as: Int16.self),
                  let correlation = frame.readInteger(as: Int32.self) else { throw ProtocolError("truncated request header") }
            var r = KafkaReader(frame)
            // ApiVersions v3+ uses header v2 (client id, then tagged fields); it is answered with
            // the v0 error body without reading further.
            let clientId = try r.nullableString()
            header = RequestHeader(apiKey: apiKey, apiVersion: version, correlationId: correlation, clientId: clientId)
            reader = r
        } catch {
            fail(context, "\(error)")
            return
        }
        let future: EventLoopFuture<ByteBuffer?>
        do {
            future = try handler.handle(header, &reader, eventLoop: context.eventLoop, clientHost: clientHost)
        } catch {
            fail(context, "request \(header.apiKey) v\(header.apiVersion) from \(header.clientId ?? "?"): \(error)")
            return
        }
        inFlight += 1
        if inFlight >= Self.maxInFlight { context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in } }
        let correlation = header.correlationId
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        future.hop(to: context.eventLoop).whenComplete { [self] result in
            let context = loopBound.value
            switch result {
            case .success(let body):
                var framed: [ByteBuffer]?
                if var body {
                    // The frame header goes out as its own small buffer: writing it into the body
                    // would copy the whole (shared, copy-on-write) response, e.g. 1 MiB of batches.
                    precondition(body.readableBytes >= KafkaWriter.frameHeaderBytes)
                    body.moveReaderIndex(forwardBy: KafkaWriter.frameHeaderBytes)
                    var head = context.channel.allocator.buffer(capacity: 8)
                    head.writeInteger(Int32(4 + body.readableBytes))
                    head.writeInteger(correlation)
                    framed = [head, body]
                }
                ready[sequence] = .some(framed)
            case .failure(let error):
                fail(context, "request \(header.apiKey) v\(header.apiVersion): \(error)")
                return
            }
            flushReady(context)
        }
    }

    private func flushReady(_ context: ChannelHandlerContext) {
        var wrote = false
        while let entry = ready.removeValue(forKey: nextToWrite) {
            nextToWrite += 1
            inFlight -= 1
            if let buffers = entry, !closed {
                for buffer in buffers { context.write(wrapOutboundOut(buffer), promise: nil) }
                wrote = true
            }
        }
        if wrote { context.flush() }
        if inFlight < Self.maxInFlight / 2 { context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in } }
    }

    private func fail(_ context: ChannelHandlerContext, _ why: String) {
        guard !closed else { return }
        closed = true
        log("closing connection from \(clientHost): \(why)")
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(context, "\(error)")
    }
}

/// `strata serve`'s Kafka listener.
public final class KafkaServer: @unchecked Sendable {
    public let broker: Broker
    public let group: MultiThreadedEventLoopGroup
    let threadPool: NIOThreadPool
    let coordinator = GroupCoordinator()
    private var channel: Channel?
    public private(set) var port: Int = 0
    public private(set) var host: String = ""

    public init(broker: Broker, eventLoopThreads: Int = System.coreCount) {
        self.broker = broker
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, eventLoopThreads))
        threadPool = NIOThreadPool(numberOfThreads: 8)
    }

    /// Binds and starts serving. `port` 0 picks a free port (see `port`). The advertised address
    /// (what Metadata and FindCoordinator tell clients to connect to) defaults to the bound one.
    public func start(host: String, port: Int, advertisedHost: String? = nil, advertisedPort: Int? = nil,
                      maxRequestBytes: Int = defaultMaxRequestBytes, log: @escaping @Sendable (String) -> Void = { _ in }) throws {
        threadPool.start()
        coordinator.start(on: group.next())
        let requests = KafkaRequestHandler(broker: broker, coordinator: coordinator, threadPool: threadPool,
                                           advertisedHost: advertisedHost ?? host, advertisedPort: advertisedPort ?? port)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)  // IPPROTO_TCP level: at SOL_SOCKET, option 1 is SO_DEBUG (root only)
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: maxRequestBytes)))
                    try sync.addHandler(KafkaConnectionHandler(handler: requests, log: log))
                }
            }
        let channel = try bootstrap.bind(host: host, port: port).wait()
        self.channel = channel
        self.port = channel.localAddress?.port ?? port
        self.host = host
        let boundPort = Int32(self.port)
        if advertisedPort == nil { requests.advertised.withLockedValue { $0.port = boundPort } }
    }

    /// Stops accepting, closes connections, and stops the worker threads. The broker is not closed.
    public func shutdown() throws {
        coordinator.stop()
        try channel?.close().wait()
        // Parked fetches answer now (empty) instead of when their max_wait ends, and produce work
        // drains, while the event loops are still there to take their responses.
        broker.wakeParkedFetches()
        try threadPool.syncShutdownGracefully()
        usleep(50_000)
        try group.syncShutdownGracefully()
    }
}

