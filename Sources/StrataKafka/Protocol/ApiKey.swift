/// API keys this broker speaks, with the versions it serves and where KIP-482's flexible
/// encoding starts. Every API advertises minimum version 0: librdkafka before 2.11.1 enables
/// features only when single old versions lie inside the advertised range (see
/// notes/kafka-protocol.md); versions inside the range that are not served (`served`) are
/// answered as Kafka answers a version it cannot parse.
enum ApiKey: Int16, CaseIterable {
    case produce = 0, fetch = 1, listOffsets = 2, metadata = 3, offsetCommit = 8, offsetFetch = 9,
         findCoordinator = 10, joinGroup = 11, heartbeat = 12, leaveGroup = 13, syncGroup = 14,
         describeGroups = 15, listGroups = 16, saslHandshake = 17, apiVersions = 18, createTopics = 19, deleteTopics = 20,
         deleteRecords = 21, initProducerId = 22, addPartitionsToTxn = 24, addOffsetsToTxn = 25, endTxn = 26,
         txnOffsetCommit = 28, describeAcls = 29, createAcls = 30, deleteAcls = 31, describeConfigs = 32, alterConfigs = 33,
         describeLogDirs = 35, saslAuthenticate = 36, createPartitions = 37, deleteGroups = 42, electLeaders = 43,
         incrementalAlterConfigs = 44, alterPartitionReassignments = 45, listPartitionReassignments = 46,
         offsetDelete = 47, describeUserScramCredentials = 50, alterUserScramCredentials = 51, describeCluster = 60,
         consumerGroupHeartbeat = 68, consumerGroupDescribe = 69

    /// The versions advertised in ApiVersions.
    var advertised: ClosedRange<Int16> {
        switch self {
        case .produce: return 0...9
        case .fetch: return 0...12  // 13+ address topics by id: not until Metadata returns real ids
        case .listOffsets: return 0...7
        case .metadata: return 0...12
        case .offsetCommit: return 0...8
        case .offsetFetch: return 0...7  // 8+ batch groups
        case .findCoordinator: return 0...4
        case .joinGroup: return 0...9
        case .heartbeat: return 0...4
        case .leaveGroup: return 0...5
        case .syncGroup: return 0...5
        case .describeGroups: return 0...5
        case .listGroups: return 0...5
        case .saslHandshake: return 0...1
        case .saslAuthenticate: return 0...2
        case .apiVersions: return 0...3
        case .createTopics: return 0...6
        case .deleteTopics: return 0...5
        case .deleteRecords: return 0...2
        case .initProducerId: return 0...4
        case .addPartitionsToTxn, .addOffsetsToTxn, .endTxn, .txnOffsetCommit: return 0...3  // v4+: KIP-890's broker-side batching
        case .describeAcls, .createAcls, .deleteAcls: return 0...3
        case .describeConfigs: return 0...4
        case .alterConfigs: return 0...2
        case .describeLogDirs: return 0...4
        case .createPartitions: return 0...3
        case .deleteGroups: return 0...2
        case .electLeaders: return 0...2
        case .incrementalAlterConfigs: return 0...1
        case .alterPartitionReassignments: return 0...0
        case .listPartitionReassignments: return 0...0
        case .offsetDelete: return 0...0
        case .describeUserScramCredentials: return 0...0
        case .alterUserScramCredentials: return 0...0
        case .describeCluster: return 0...1
        case .consumerGroupHeartbeat: return 0...1
        case .consumerGroupDescribe: return 0...0
        }
    }

    /// Versions whose requests are handled: every advertised one. Produce 0-2 and Fetch 0-3
    /// carry message format 0/1, converted in LegacyMessageSets.swift; ListOffsets 0 answers
    /// old-style offset arrays.
    var accepted: ClosedRange<Int16> { advertised }

    /// The first version using KIP-482's flexible encoding (compact fields, tagged fields, request
    /// header v2, response header v1), nil when none of the served ones does.
    var firstFlexible: Int16? {
        switch self {
        case .produce: return 9
        case .fetch: return 12
        case .listOffsets: return 6
        case .metadata: return 9
        case .offsetCommit: return 8
        case .offsetFetch: return 6
        case .findCoordinator: return 3
        case .joinGroup: return 6
        case .heartbeat: return 4
        case .leaveGroup: return 4
        case .syncGroup: return 4
        case .describeGroups: return 5
        case .listGroups: return 3
        case .saslHandshake: return nil
        case .saslAuthenticate: return 2
        case .apiVersions: return 3
        case .createTopics: return 5
        case .deleteTopics: return 4
        case .deleteRecords: return 2
        case .initProducerId: return 2
        case .addPartitionsToTxn, .addOffsetsToTxn, .endTxn, .txnOffsetCommit: return 3
        case .describeAcls, .createAcls, .deleteAcls: return 2
        case .describeConfigs: return 4
        case .alterConfigs: return 2
        case .describeLogDirs: return 2
        case .createPartitions: return 2
        case .deleteGroups: return 2
        case .electLeaders: return 2
        case .incrementalAlterConfigs: return 1
        case .alterPartitionReassignments: return 0
        case .listPartitionReassignments: return 0
        case .offsetDelete: return nil
        case .describeUserScramCredentials: return 0
        case .alterUserScramCredentials: return 0
        case .describeCluster: return 0
        case .consumerGroupHeartbeat, .consumerGroupDescribe: return 0
        }
    }

    func isFlexible(_ version: Int16) -> Bool { firstFlexible.map { version >= $0 } ?? false }

    /// Flexible responses carry a tagged-field section in their header (v1), except ApiVersions,
    /// whose response header is always v0 so that any client can read it (KIP-511).
    func responseHeaderHasTaggedFields(_ version: Int16) -> Bool { self != .apiVersions && isFlexible(version) }
}
