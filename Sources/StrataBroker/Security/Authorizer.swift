import StrataCore
import StrataMetadata
import Synchronization

public enum AclResourceType: Int8, Sendable, CaseIterable {
    case any = 1, topic = 2, group = 3, cluster = 4, transactionalId = 5
    public var name: String { ["", "Any", "Topic", "Group", "Cluster", "TransactionalId"][Int(rawValue)] }
    public init?(name: String) {
        guard let t = Self.allCases.first(where: { $0.name.lowercased() == name.lowercased() && $0 != .any }) else { return nil }
        self = t
    }
}

public enum AclPatternType: Int8, Sendable, CaseIterable {
    case any = 1, match = 2, literal = 3, prefixed = 4
    public var name: String { ["", "Any", "Match", "Literal", "Prefixed"][Int(rawValue)] }
}

public enum AclOperation: Int8, Sendable, CaseIterable {
    case any = 1, all = 2, read = 3, write = 4, create = 5, delete = 6, alter = 7, describe = 8, clusterAction = 9,
         describeConfigs = 10, alterConfigs = 11, idempotentWrite = 12
    public var name: String {
        ["", "Any", "All", "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "DescribeConfigs", "AlterConfigs", "IdempotentWrite"][Int(rawValue)]
    }
    public init?(name: String) {
        guard let o = Self.allCases.first(where: { $0.name.lowercased() == name.lowercased() && $0 != .any }) else { return nil }
        self = o
    }
}

public enum AclPermission: Int8, Sendable {
    case any = 1, deny = 2, allow = 3
    public var name: String { self == .deny ? "Deny" : self == .allow ? "Allow" : "Any" }
}

/// A filter over ACL bindings (DescribeAcls, DeleteAcls): nil fields and ANY match everything;
/// pattern MATCH matches the literal name, the literal "*" and every prefix of the name.
public struct AclFilter: Sendable {
    public var resourceType: Int8
    public var resourceName: String?
    public var patternType: Int8
    public var principal: String?
    public var host: String?
    public var operation: Int8
    public var permission: Int8

    public init(resourceType: Int8, resourceName: String?, patternType: Int8, principal: String?, host: String?, operation: Int8, permission: Int8) {
        (self.resourceType, self.resourceName, self.patternType) = (resourceType, resourceName, patternType)
        (self.principal, self.host, self.operation, self.permission) = (principal, host, operation, permission)
    }

    public func matches(_ b: AclBinding) -> Bool {
        if resourceType != AclResourceType.any.rawValue && resourceType != b.resourceType { return false }
        if let principal, principal != b.principal { return false }
        if let host, host != b.host { return false }
        if operation != AclOperation.any.rawValue && operation != b.operation { return false }
        if permission != AclPermission.any.rawValue && permission != b.permission { return false }
        switch AclPatternType(rawValue: patternType) {
        case .match?:
            guard let name = resourceName else { return true }
            return (b.patternType == AclPatternType.literal.rawValue && (b.resourceName == name || b.resourceName == "*"))
                || (b.patternType == AclPatternType.prefixed.rawValue && name.hasPrefix(b.resourceName))
        case .any?, nil:
            return resourceName.map { $0 == b.resourceName } ?? true
        default:
            return patternType == b.patternType && (resourceName.map { $0 == b.resourceName } ?? true)
        }
    }
}

/// Kafka's StandardAuthorizer rules over the ACLs in LMDB: super users may do everything; a
/// matching DENY wins over any ALLOW; with no matching ALLOW the answer is no
/// (allow.everyone.if.no.acl.found=false). READ, WRITE, DELETE and ALTER imply DESCRIBE;
/// ALTER_CONFIGS implies DESCRIBE_CONFIGS. ACLs are re-read at most every `reloadMs` (so that
/// `strata acls` in another process takes effect within a second) and at once after a change
/// made through this broker.
public final class Authorizer: Sendable {
    let metadata: MetadataStore
    public let superUsers: Set<String>
    let reloadMs: Int64
    private let cache = Mutex<(loadedMs: Int64, bindings: [AclBinding])?>(nil)

    public init(metadata: MetadataStore, superUsers: Set<String> = [], reloadMs: Int64 = 1000) {
        self.metadata = metadata
        self.superUsers = superUsers
        self.reloadMs = reloadMs
    }

    func bindings(nowMs: Int64 = monotonicMillis()) -> [AclBinding] {
        if let c = cache.withLock({ $0 }), nowMs - c.loadedMs < reloadMs { return c.bindings }
        let fresh = (try? metadata.acls()) ?? []
        cache.withLock { $0 = (nowMs, fresh) }
        return fresh
    }

    func invalidate() { cache.withLock { $0 = nil } }

    public func authorize(principal: String, host: String, operation: AclOperation, resourceType: AclResourceType, name: String) -> Bool {
        if superUsers.contains(principal) { return true }
        let relevant = bindings().filter { b in
            b.resourceType == resourceType.rawValue
                && (b.principal == principal || b.principal == "User:*")
                && (b.host == "*" || b.host == host)
                && ((b.patternType == AclPatternType.literal.rawValue && (b.resourceName == name || b.resourceName == "*"))
                    || (b.patternType == AclPatternType.prefixed.rawValue && name.hasPrefix(b.resourceName)))
        }
        if relevant.contains(where: { $0.permission == AclPermission.deny.rawValue && ($0.operation == operation.rawValue || $0.operation == AclOperation.all.rawValue) }) {
            return false
        }
        var granting: Set<Int8> = [operation.rawValue, AclOperation.all.rawValue]
        if operation == .describe { granting.formUnion([AclOperation.read, .write, .delete, .alter].map(\.rawValue)) }
        if operation == .describeConfigs { granting.insert(AclOperation.alterConfigs.rawValue) }
        return relevant.contains { $0.permission == AclPermission.allow.rawValue && granting.contains($0.operation) }
    }

    /// Whether some binding allows `operation` on some resource of `resourceType` to the principal
    /// (Kafka 3.0+ lets a producer that may WRITE any topic be idempotent).
    public func allowsSomewhere(principal: String, host: String, operation: AclOperation, resourceType: AclResourceType) -> Bool {
        if superUsers.contains(principal) { return true }
        return bindings().contains { b in
            b.resourceType == resourceType.rawValue && b.permission == AclPermission.allow.rawValue
                && (b.principal == principal || b.principal == "User:*") && (b.host == "*" || b.host == host)
                && (b.operation == operation.rawValue || b.operation == AclOperation.all.rawValue)
        }
    }

    /// Checks a binding before it is stored: known codes, a literal or prefixed pattern, a
    /// `User:` principal, a host, and the cluster resource named "kafka-cluster".
    public static func validate(_ b: AclBinding) -> String? {
        guard let type = AclResourceType(rawValue: b.resourceType), type != .any else { return "unknown resource type \(b.resourceType)" }
        guard b.patternType == AclPatternType.literal.rawValue || b.patternType == AclPatternType.prefixed.rawValue else { return "the pattern type must be LITERAL or PREFIXED" }
        guard let op = AclOperation(rawValue: b.operation), op != .any else { return "unknown operation \(b.operation)" }
        guard b.permission == AclPermission.allow.rawValue || b.permission == AclPermission.deny.rawValue else { return "the permission must be ALLOW or DENY" }
        guard b.principal.hasPrefix("User:"), b.principal.count > 5 else { return "the principal must be User:NAME or User:*" }
        guard !b.host.isEmpty else { return "the host must be * or an address" }
        for s in [b.resourceName, b.principal, b.host] where s.utf8.contains(0) || s.utf8.count > 1024 { return "names are at most 1024 bytes without NUL" }
        guard !b.resourceName.isEmpty else { return "the resource name is empty" }
        if type == .cluster && b.resourceName != "kafka-cluster" { return "the cluster resource is named kafka-cluster" }
        return nil
    }

    public func create(_ bindings: [AclBinding]) throws {
        try metadata.putAcls(bindings)
        invalidate()
    }

    /// Deletes every binding a filter matches; returns them per filter.
    public func delete(_ filters: [AclFilter]) throws -> [[AclBinding]] {
        let all = (try metadata.acls())
        let matched = filters.map { f in all.filter { f.matches($0) } }
        _ = try metadata.deleteAcls(Array(Set(matched.flatMap { $0 })))
        invalidate()
        return matched
    }

    public func describe(_ filter: AclFilter) throws -> [AclBinding] {
        try metadata.acls().filter { filter.matches($0) }
    }
}
