import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import StrataBroker
import StrataCore
import Synchronization

/// `strata serve --http-listen`: Prometheus metrics, health and a small read-only admin API.
///
///   GET /metrics              the Prometheus text format: the swift-metrics registry (request
///                             rates and latencies, fsync latency, group-commit sizes) and the
///                             broker's state read at scrape time (`BrokerCollector`)
///   GET /healthz              200 while the process serves HTTP
///   GET /readyz               200 when the data directory is open, the Kafka listener is bound
///                             and no partition is offline; 503 with the reasons otherwise
///   GET /v1/groups            consumer groups: name, state, members
///   GET /v1/groups/NAME       one group: members, assignments, committed offsets, lag in
///                             records and seconds per partition
///
/// It runs on its own event loop thread: a scrape that walks 10,000 partitions or reads the
/// batches at 1,000 committed offsets never delays a Kafka request.
public final class OpsServer: Sendable {
    public struct Readiness: Sendable {
        public var kafkaListenerBound: @Sendable () -> Bool
        public var brokerOpen: @Sendable () -> Bool
        public init(kafkaListenerBound: @escaping @Sendable () -> Bool, brokerOpen: @escaping @Sendable () -> Bool) {
            self.kafkaListenerBound = kafkaListenerBound
            self.brokerOpen = brokerOpen
        }
    }

    let broker: Broker
    let registry: PrometheusCollectorRegistry
    let collector: BrokerCollector
    let readiness: Readiness
    let logger: Logger
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let channel = Mutex<(any Channel)?>(nil)

    public init(broker: Broker, registry: PrometheusCollectorRegistry, collector: BrokerCollector, readiness: Readiness, logger: Logger) {
        self.broker = broker
        self.registry = registry
        self.collector = collector
        self.readiness = readiness
        self.logger = logger
    }

    /// Binds and serves; returns the bound port (0 picks a free one).
    public func start(host: String, port: Int) throws -> Int {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(OpsHTTPHandler(server: self))
                }
            }
        let channel = try bootstrap.bind(host: host, port: port).wait()
        self.channel.withLock { $0 = channel }
        return channel.localAddress?.port ?? port
    }

    public func shutdown() {
        let channel = self.channel.withLock { c -> (any Channel)? in defer { c = nil }; return c }
        try? channel?.close().wait()
        try? group.syncShutdownGracefully()
    }

    struct Response {
        var status: HTTPResponseStatus
        var contentType: String
        var body: String
    }

    func respond(method: HTTPMethod, uri: String) -> Response {
        let path = String(uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
        guard method == .GET || method == .HEAD else {
            return Response(status: .methodNotAllowed, contentType: "text/plain", body: "only GET\n")
        }
        switch path {
        case "/metrics":
            let started = monotonicNanos()
            var text = registry.emitToString()
            text += collector.render(broker)
            text += "# HELP strata_scrape_duration_seconds Time to render this scrape.\n# TYPE strata_scrape_duration_seconds gauge\n"
            text += "strata_scrape_duration_seconds \(Double(monotonicNanos() - started) / 1e9)\n"
            return Response(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: text)
        case "/healthz":
            return Response(status: .ok, contentType: "text/plain", body: "ok\n")
        case "/readyz":
            var problems: [String] = []
            if !readiness.brokerOpen() { problems.append("data directory not open") }
            if !readiness.kafkaListenerBound() { problems.append("Kafka listener not bound") }
            let offline = broker.offlinePartitions.keys.sorted()
            if !offline.isEmpty {
                problems.append("\(offline.count) partition(s) offline: " + offline.prefix(20).joined(separator: ", ") + (offline.count > 20 ? ", ..." : ""))
            }
            let body = "{\"ready\":\(problems.isEmpty),\"problems\":[\(problems.map(jsonQuote).joined(separator: ","))]}\n"
            return Response(status: problems.isEmpty ? .ok : .serviceUnavailable, contentType: "application/json", body: body)
        case "/v1/groups":
            do {
                let list = try broker.groupNames().map { name -> (name: String, state: String, members: Int) in
                    let live = broker.groups.describe(name)
                    return (name, live?.state ?? "Empty", live?.members.count ?? 0)
                }
                return Response(status: .ok, contentType: "application/json", body: AdminJSON.groupList(list) + "\n")
            } catch {
                return Response(status: .internalServerError, contentType: "application/json", body: "{\"error\":\(jsonQuote("\(error)"))}\n")
            }
        default:
            if path.hasPrefix("/v1/groups/") {
                let name = Self.percentDecoded(String(path.dropFirst("/v1/groups/".count)))
                do {
                    guard let report = try broker.groupReport(name) else {
                        return Response(status: .notFound, contentType: "application/json", body: "{\"error\":\(jsonQuote("no group '\(name)'"))}\n")
                    }
                    return Response(status: .ok, contentType: "application/json", body: AdminJSON.report(report) + "\n")
                } catch {
                    return Response(status: .internalServerError, contentType: "application/json", body: "{\"error\":\(jsonQuote("\(error)"))}\n")
                }
            }
            return Response(status: .notFound, contentType: "text/plain", body: "not found: /metrics, /healthz, /readyz, /v1/groups, /v1/groups/NAME\n")
        }
    }

    static func percentDecoded(_ text: String) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(text.utf8)[...]
        while let b = utf8.popFirst() {
            if b == UInt8(ascii: "%"), utf8.count >= 2, let v = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(v)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// One HTTP connection of the ops listener: answers each request when its head and end have
/// arrived (request bodies are ignored; every route is a GET).
final class OpsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let server: OpsServer
    private var head: HTTPRequestHead?

    init(server: OpsServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let response = server.respond(method: head.method, uri: head.uri)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: response.contentType)
            var body = context.channel.allocator.buffer(capacity: response.body.utf8.count)
            body.writeString(response.body)
            headers.add(name: "Content-Length", value: String(body.readableBytes))
            let keepAlive = head.isKeepAlive
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))), promise: nil)
            if head.method != .HEAD { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let channel = context.channel
                done.whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}

@available(*, unavailable)
extension OpsHTTPHandler: Sendable {}
