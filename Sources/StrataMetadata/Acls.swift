/// One ACL as Kafka defines it (kafka.security.authorizer, KIP-290 patterns), with Kafka's codes:
/// resource type (2 topic, 3 group, 4 cluster, 5 transactional id), pattern type (3 literal,
/// 4 prefixed), principal ("User:NAME", "User:*"), host ("*" or an address), operation (2 ALL,
/// 3 READ, 4 WRITE, 5 CREATE, 6 DELETE, 7 ALTER, 8 DESCRIBE, 9 CLUSTER_ACTION,
/// 10 DESCRIBE_CONFIGS, 11 ALTER_CONFIGS, 12 IDEMPOTENT_WRITE) and permission (2 DENY, 3 ALLOW).
public struct AclBinding: Sendable, Hashable {
    public var resourceType: Int8
    public var resourceName: String
    public var patternType: Int8
    public var principal: String
    public var host: String
    public var operation: Int8
    public var permission: Int8

    public init(resourceType: Int8, resourceName: String, patternType: Int8, principal: String, host: String, operation: Int8, permission: Int8) {
        self.resourceType = resourceType
        self.resourceName = resourceName
        self.patternType = patternType
        self.principal = principal
        self.host = host
        self.operation = operation
        self.permission = permission
    }

    /// The LMDB key: every field, NUL-separated (names cannot contain NUL: Kafka's rules, and
    /// principals and hosts are checked before they are stored).
    func key() -> [UInt8] {
        var k: [UInt8] = [UInt8(bitPattern: resourceType), UInt8(bitPattern: patternType), UInt8(bitPattern: operation), UInt8(bitPattern: permission)]
        for s in [resourceName, principal, host] { k += Array(s.utf8) + [0] }
        return k
    }

    static func decode(_ k: [UInt8]) -> AclBinding? {
        guard k.count >= 7 else { return nil }
        let strings = k[4...].split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard strings.count == 4, strings[3].isEmpty else { return nil }
        return AclBinding(resourceType: Int8(bitPattern: k[0]), resourceName: strings[0], patternType: Int8(bitPattern: k[1]),
                          principal: strings[1], host: strings[2], operation: Int8(bitPattern: k[2]), permission: Int8(bitPattern: k[3]))
    }
}

extension MetadataStore {
    public func putAcls(_ bindings: [AclBinding]) throws {
        try environment.write { txn in for b in bindings { try txn.put("acls", b.key(), []) } }
    }

    /// Deletes the given bindings; returns those that existed.
    public func deleteAcls(_ bindings: [AclBinding]) throws -> [AclBinding] {
        try environment.write { txn in try bindings.filter { try txn.delete("acls", $0.key()) } }
    }

    public func acls() throws -> [AclBinding] {
        try environment.read { txn in try txn.scan("acls").compactMap { AclBinding.decode($0.key) } }
    }
}
