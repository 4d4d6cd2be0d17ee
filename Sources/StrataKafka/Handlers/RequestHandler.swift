import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import StrataBroker
import StrataCore
import StrataLog

/// A parsed request header (v1, or v2 whose tagged fields the connection skipped).
struct RequestHeader {
    let apiKey: Int16
    let apiVersion: Int16
    let correlationId: Int32
    let clientId: String?
}

/// Who sent a request: the principal and whether its listener authenticated it (SASL, or a
/// required client certificate). Unauthenticated listeners (PLAINTEXT, SSL without client
/// certificates) are trusted as a whole, as Kafka without an authorizer trusts them.
struct Session {
    var principal = "User:ANONYMOUS"
    var authenticated = false
}

/// Answers Kafka requests from the broker: decodes the typed request of each API (`Messages/`),
/// runs it against the broker, and encodes the typed response. Cheap requests complete on the
/// connection's event loop; produce appends there too, in request order, and only waits for
/// durability on a thread pool; fetch long-polls as a Swift task. One handler file per API group
/// in `Handlers/`; no byte layouts live here.
final class KafkaRequestHandler: Sendable {
    let broker: Broker
    /// Blocking waits (durability for acks=all, coordinator waits).
    let threadPool: NIOThreadPool
    /// CPU work taken off the event loops (validating large produce requests): as many threads
    /// as cores, never blocked by a wait.
    let validationPool: NIOThreadPool
    let nodeId: Int32 = 1
    /// (host, port) clients are told to connect to; set once the listener is bound.
    let advertised: NIOLockedValueBox<(host: String, port: Int32)>
    var advertisedHost: String { advertised.withLockedValue { $0.host } }
    var advertisedPort: Int32 { advertised.withLockedValue { $0.port } }
    let clusterId: String
    /// Where storage problems met while serving are reported (the server's log).
    let logger: Logger
    let metrics: KafkaMetrics
    /// Principals allowed everything on authenticated listeners (`super.users`).
    let superUsers: Set<String>
    /// The ACLs of authenticated listeners (nil: nothing is enforced, as in embedded tests).
    let authorizer: Authorizer?
    private let reported = NIOLockedValueBox(Set<String>())

    init(broker: Broker, threadPool: NIOThreadPool, validationPool: NIOThreadPool, advertisedHost: String, advertisedPort: Int,
         logger: Logger = Logger(label: "strata.kafka"), metrics: KafkaMetrics = KafkaMetrics(), superUsers: Set<String> = [],
         authorizer: Authorizer? = nil) {
        self.logger = logger
        self.superUsers = superUsers
        self.authorizer = authorizer
        self.metrics = metrics
        self.broker = broker
        self.threadPool = threadPool
        self.validationPool = validationPool
        self.advertised = NIOLockedValueBox((advertisedHost, Int32(clamping: advertisedPort)))
        self.clusterId = (try? broker.metadata.clusterId()) ?? "strata"
    }

    /// Logs a storage problem of a partition once per distinct message (clients retry; the log
    /// must name the file once, not flood).
    func reportStorageProblem(_ topic: String, _ partition: Int32, _ error: Error) {
        let line = "\(topic)-\(partition): \(error)"
        let fresh = reported.withLockedValue { seen in
            guard seen.count < 10_000 else { return false }
            return seen.insert(line).inserted
        }
        if fresh {
            logger.error("partition storage error", metadata: ["topic": "\(topic)", "partition": "\(partition)", "error": "\(error)"])
        }
    }

    /// The response body (after the frame header), nil when no response must be sent (acks=0).
    /// `body` is positioned after the request header and set to the version's encoding.
    /// `appends` is the connection's (see AppendOrder).
    func handle(_ header: RequestHeader, _ body: inout KafkaReader, eventLoop: EventLoop, clientHost: String,
                appends: AppendOrder, session: Session = Session()) throws -> EventLoopFuture<ByteBuffer?> {
        guard let api = ApiKey(rawValue: header.apiKey) else { throw ProtocolError("unknown API key \(header.apiKey)") }
        let v = header.apiVersion
        if api == .apiVersions && !api.advertised.contains(v) {
            // KIP-511: a version the broker does not know is answered in v0's format with
            // UNSUPPORTED_VERSION, so that the client can retry with one it lists.
            return eventLoop.makeSucceededFuture(apiVersions(error: .unsupportedVersion).encoded(version: 0, flexible: false))
        }
        guard api.advertised.contains(v) else { throw ProtocolError("\(api) version \(v) is not supported") }
        guard api.accepted.contains(v) else { throw ProtocolError("\(api) version \(v) is not served") }
        let flexible = api.isFlexible(v)
        func reply(_ response: some KafkaResponseBody) -> EventLoopFuture<ByteBuffer?> {
            metrics.countErrors(api, response)
            return eventLoop.makeSucceededFuture(response.encoded(version: v, flexible: flexible))
        }
        // For APIs that write LMDB and the logs (transaction markers, fsyncs): off the event loop.
        func replyBlocking<R: KafkaResponseBody & Sendable>(_ body: @escaping @Sendable () -> R) -> EventLoopFuture<ByteBuffer?> {
            threadPool.runIfActive(eventLoop: eventLoop, body).map { response in
                self.metrics.countErrors(api, response)
                return response.encoded(version: v, flexible: flexible)
            }
        }
        let access = Access(session: session, host: clientHost, authorizer: authorizer)
        switch api {
        case .apiVersions:
            _ = try ApiVersionsRequest.read(&body, version: v)
            return reply(apiVersions(error: .none))
        case .metadata: return reply(authorizedMetadata(try .read(&body, version: v), v, access))
        case .produce:
            let request = try ProduceRequest.read(&body, version: v)
            return produce(request, v, eventLoop: eventLoop, order: appends, denied: deniedTopics(request.topics.lazy.map(\.name), .write, access))
        case .fetch:  // v0-v3: magic 0/1 message sets (LegacyMessageSets.swift)
            let request = try FetchRequest.read(&body, version: v)
            let denied = deniedTopics(request.topics.lazy.map(\.name), .read, access)
            return v < 4 ? legacyFetch(request, v, eventLoop: eventLoop, denied: denied) : fetch(request, v, eventLoop: eventLoop, denied: denied)
        case .listOffsets: return reply(authorizedListOffsets(try .read(&body, version: v), v, access))
        case .initProducerId:
            let request = try InitProducerIdRequest.read(&body, version: v)
            return replyBlocking { self.authorizedInitProducerId(request, access) }
        case .addPartitionsToTxn:
            let request = try AddPartitionsToTxnRequest.read(&body, version: v)
            return replyBlocking { self.addPartitionsToTxn(request, access) }
        case .addOffsetsToTxn:
            let request = try AddOffsetsToTxnRequest.read(&body, version: v)
            return replyBlocking { self.addOffsetsToTxn(request, access) }
        case .endTxn:
            let request = try EndTxnRequest.read(&body, version: v)
            return replyBlocking { self.endTxn(request, access) }
        case .txnOffsetCommit:
            let request = try TxnOffsetCommitRequest.read(&body, version: v)
            return replyBlocking { self.txnOffsetCommit(request, access) }
        case .findCoordinator: return reply(authorizedFindCoordinator(try .read(&body, version: v), access))
        case .joinGroup:
            let request = try JoinGroupRequest.read(&body, version: v)
            guard access.group(.read, request.groupId) else {
                return reply(JoinGroupResponse(errorCode: .groupAuthorizationFailed, protocolType: nil, protocolName: nil, memberId: request.memberId))
            }
            return joinGroup(request, v, clientId: header.clientId ?? "", clientHost: clientHost, eventLoop: eventLoop)
        case .syncGroup:
            let request = try SyncGroupRequest.read(&body, version: v)
            guard access.group(.read, request.groupId) else {
                return reply(SyncGroupResponse(errorCode: .groupAuthorizationFailed, protocolType: nil, protocolName: nil, assignment: []))
            }
            return syncGroup(request, v, eventLoop: eventLoop)
        case .heartbeat:
            let request = try HeartbeatRequest.read(&body, version: v)
            return reply(access.group(.read, request.groupId) ? heartbeat(request) : ErrorOnlyResponse(errorCode: .groupAuthorizationFailed))
        case .leaveGroup:
            let request = try LeaveGroupRequest.read(&body, version: v)
            return reply(access.group(.read, request.groupId) ? leaveGroup(request) : LeaveGroupResponse(errorCode: .groupAuthorizationFailed, members: []))
        case .offsetCommit: return reply(authorizedOffsetCommit(try .read(&body, version: v), access))
        case .offsetFetch: return reply(authorizedOffsetFetch(try .read(&body, version: v), access))
        case .describeGroups: return reply(authorizedDescribeGroups(try .read(&body, version: v), access))
        case .listGroups: return reply(authorizedListGroups(try .read(&body, version: v), access))
        case .deleteGroups: return reply(authorizedDeleteGroups(try .read(&body, version: v), access))
        case .offsetDelete: return reply(authorizedOffsetDelete(try .read(&body, version: v), access))
        case .createTopics: return reply(authorizedCreateTopics(try .read(&body, version: v), v, access))
        case .deleteTopics: return reply(authorizedDeleteTopics(try .read(&body, version: v), access))
        case .deleteRecords: return reply(authorizedDeleteRecords(try .read(&body, version: v), access))
        case .createPartitions: return reply(authorizedCreatePartitions(try .read(&body, version: v), access))
        case .describeConfigs: return reply(authorizedDescribeConfigs(try .read(&body, version: v), v, access))
        case .alterConfigs: return reply(authorizedAlterConfigs(try AlterConfigsRequest.read(&body, version: v, incremental: false), access))
        case .incrementalAlterConfigs: return reply(authorizedAlterConfigs(try AlterConfigsRequest.read(&body, version: v, incremental: true), access))
        case .describeLogDirs:
            let request = try DescribeLogDirsRequest.read(&body, version: v)
            return reply(access.cluster(.describe) ? describeLogDirs(request) : DescribeLogDirsResponse(logDir: "", errorCode: .clusterAuthorizationFailed, topics: []))
        case .describeCluster:
            let request = try DescribeClusterRequest.read(&body, version: v)
            return reply(access.cluster(.describe) ? describeCluster(request)
                : DescribeClusterResponse(errorCode: .clusterAuthorizationFailed, errorMessage: "not authorized", clusterId: "", controllerId: -1, brokers: []))
        case .electLeaders:
            let request = try ElectLeadersRequest.read(&body, version: v)
            return reply(access.cluster(.alter) ? electLeaders(request)
                : ElectLeadersResponse(results: (request.topics ?? []).map { t in (t.name, t.partitions.map { ($0, .clusterAuthorizationFailed, "not authorized") }) }))
        case .alterPartitionReassignments:
            let request = try AlterPartitionReassignmentsRequest.read(&body, version: v)
            return reply(access.cluster(.alter) ? alterPartitionReassignments(request)
                : AlterPartitionReassignmentsResponse(results: request.topics.map { t in (t.name, t.partitions.map { ($0.index, .clusterAuthorizationFailed, "not authorized") }) }))
        case .describeUserScramCredentials: return reply(describeUserScramCredentials(try .read(&body, version: v), access: access))
        case .alterUserScramCredentials: return reply(alterUserScramCredentials(try .read(&body, version: v), access: access))
        case .describeAcls: return reply(describeAcls(try .read(&body, version: v), access))
        case .createAcls: return reply(createAcls(try .read(&body, version: v), access))
        case .deleteAcls: return reply(deleteAcls(try .read(&body, version: v), access))
        case .saslHandshake, .saslAuthenticate:
            // The connection runs the SASL exchange itself (its state is per connection).
            throw ProtocolError("\(api) reached the request handler")
        case .consumerGroupHeartbeat:
            let request = try ConsumerGroupHeartbeatRequest.read(&body, version: v)
            return reply(consumerGroupHeartbeat(request, clientId: header.clientId ?? "", clientHost: clientHost, access))
        case .consumerGroupDescribe: return reply(consumerGroupDescribe(try .read(&body, version: v), access))
        case .listPartitionReassignments:
            _ = try ListPartitionReassignmentsRequest.read(&body, version: v)
            return reply(ListPartitionReassignmentsResponse())
        }
    }

    func apiVersions(error: ErrorCode) -> ApiVersionsResponse {
        ApiVersionsResponse(errorCode: error, apis: ApiKey.allCases.map { .init(key: $0.rawValue, min: $0.advertised.lowerBound, max: $0.advertised.upperBound) })
    }

    /// Whether `topic` exists here and has `partition`.
    func partitionExists(_ topic: String, _ partition: Int32) -> Bool {
        broker.partitionCount(topic).map { partition >= 0 && partition < $0 } ?? false
    }
}
