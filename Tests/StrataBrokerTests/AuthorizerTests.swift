import Testing
@testable import StrataBroker
import StrataMetadata

/// Kafka's authorizer rules over bindings in a real LMDB store.
@Suite struct AuthorizerTests {
    func binding(_ type: AclResourceType, _ name: String, _ op: AclOperation, principal: String = "User:alice",
                 prefixed: Bool = false, deny: Bool = false, host: String = "*") -> AclBinding {
        AclBinding(resourceType: type.rawValue, resourceName: name, patternType: (prefixed ? AclPatternType.prefixed : .literal).rawValue,
                   principal: principal, host: host, operation: op.rawValue, permission: (deny ? AclPermission.deny : .allow).rawValue)
    }

    @Test func denyWinsPrefixesMatchAndDescribeIsImplied() throws {
        let dir = TempDir()
        let store = try MetadataStore(directory: dir.path + "/meta")
        let authorizer = Authorizer(metadata: store, superUsers: ["User:admin"], reloadMs: 0)
        try authorizer.create([
            binding(.topic, "orders", .write),
            binding(.topic, "shared-", .read, prefixed: true),
            binding(.topic, "shared-secret", .read, deny: true),
            binding(.group, "g1", .read),
            binding(.topic, "*", .describe, principal: "User:*"),
            binding(.topic, "logs", .all, host: "10.0.0.1"),
            binding(.cluster, "kafka-cluster", .alterConfigs, principal: "User:ops"),
        ])
        func can(_ op: AclOperation, _ type: AclResourceType, _ name: String, _ who: String = "User:alice", host: String = "127.0.0.1") -> Bool {
            authorizer.authorize(principal: who, host: host, operation: op, resourceType: type, name: name)
        }
        #expect(can(.write, .topic, "orders"))
        #expect(!can(.read, .topic, "orders"), "WRITE does not grant READ")
        #expect(can(.describe, .topic, "orders"), "WRITE implies DESCRIBE")
        #expect(can(.read, .topic, "shared-x") && can(.read, .topic, "shared-"))
        #expect(!can(.read, .topic, "shared-secret"), "a DENY wins over a prefixed ALLOW")
        #expect(can(.describe, .topic, "shared-secret"), "a denied READ does not deny DESCRIBE")
        #expect(!can(.read, .topic, "share"), "a prefix is not matched by a shorter name")
        #expect(can(.read, .group, "g1") && !can(.read, .group, "g2"))
        #expect(can(.describe, .topic, "anything", "User:bob"), "User:* and the literal * match everyone and everything")
        #expect(!can(.write, .topic, "anything", "User:bob"), "nothing else for bob: deny by default")
        #expect(!can(.write, .topic, "logs") && can(.write, .topic, "logs", host: "10.0.0.1"), "hosts are matched")
        #expect(can(.describeConfigs, .cluster, "kafka-cluster", "User:ops"), "ALTER_CONFIGS implies DESCRIBE_CONFIGS")
        #expect(can(.delete, .topic, "orders", "User:admin") && can(.alter, .cluster, "kafka-cluster", "User:admin"), "super users")
        #expect(authorizer.allowsSomewhere(principal: "User:alice", host: "1.2.3.4", operation: .write, resourceType: .topic))
        #expect(!authorizer.allowsSomewhere(principal: "User:bob", host: "1.2.3.4", operation: .write, resourceType: .topic))
    }

    @Test func filtersDescribeAndDeleteAndBindingsRoundTrip() throws {
        let dir = TempDir()
        let store = try MetadataStore(directory: dir.path + "/meta")
        let authorizer = Authorizer(metadata: store, reloadMs: 0)
        let a = binding(.topic, "orders", .write)
        let b = binding(.topic, "ord", .read, prefixed: true)
        let c = binding(.group, "g", .read, principal: "User:bob")
        try authorizer.create([a, b, c, a])
        #expect(Set(try store.acls()) == [a, b, c], "stored once each, and decoded field for field")
        let any = AclFilter(resourceType: AclResourceType.any.rawValue, resourceName: nil, patternType: AclPatternType.any.rawValue,
                            principal: nil, host: nil, operation: AclOperation.any.rawValue, permission: AclPermission.any.rawValue)
        #expect(try authorizer.describe(any).count == 3)
        var match = any
        match.resourceType = AclResourceType.topic.rawValue
        match.resourceName = "orders"
        match.patternType = AclPatternType.match.rawValue
        #expect(Set(try authorizer.describe(match)) == [a, b], "MATCH finds the literal and the prefix that cover the name")
        var bob = any
        bob.principal = "User:bob"
        #expect(try authorizer.delete([bob]) == [[c]])
        #expect(Set(try store.acls()) == [a, b])
    }

    @Test func invalidBindingsAreRefused() {
        #expect(Authorizer.validate(binding(.topic, "t", .read)) == nil)
        #expect(Authorizer.validate(binding(.cluster, "other", .alter)) != nil, "the cluster is kafka-cluster")
        #expect(Authorizer.validate(binding(.topic, "t", .read, principal: "alice")) != nil, "principals are User:NAME")
        #expect(Authorizer.validate(binding(.topic, "", .read)) != nil)
        #expect(Authorizer.validate(binding(.topic, "a\u{0}b", .read)) != nil)
        var b = binding(.topic, "t", .read)
        b.operation = AclOperation.any.rawValue
        #expect(Authorizer.validate(b) != nil, "ANY is a filter, not an operation")
        b = binding(.topic, "t", .read)
        b.patternType = AclPatternType.match.rawValue
        #expect(Authorizer.validate(b) != nil, "MATCH is a filter, not a pattern")
        b = binding(.topic, "t", .read)
        b.resourceType = 99
        #expect(Authorizer.validate(b) != nil)
    }
}
