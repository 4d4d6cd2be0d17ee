import ArgumentParser
import StrataBroker
import StrataKafka
import StrataMetadata

/// `strata acls`: ACLs of authenticated listeners, in the data directory's LMDB (the server
/// re-reads them within a second), or with `--remote` through a running server's
/// DescribeAcls/CreateAcls/DeleteAcls (any Kafka broker; on an authenticated listener the
/// principal needs DESCRIBE/ALTER on the cluster, or to be a super user).
struct Acls: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "acls",
        abstract: "List, add and remove ACLs (enforced on SASL and client-certificate listeners).",
        subcommands: [List.self, Add.self, Remove.self])

    struct Binding: ParsableArguments {
        @Option(help: "The principal: User:NAME, or User:* for every authenticated principal.") var principal: String
        @Option(help: "Read, Write, Create, Delete, Alter, Describe, DescribeConfigs, AlterConfigs, ClusterAction, IdempotentWrite or All (repeatable).")
        var operation: [String]
        @Option(help: "A topic name (or prefix with --prefixed); * for every topic.") var topic: String?
        @Option(help: "A consumer group id (or prefix).") var group: String?
        @Option(help: "A transactional id (or prefix).") var transactionalId: String?
        @Flag(help: "The cluster resource (topic creation, cluster admin).") var cluster = false
        @Flag(help: "Match every name starting with the given one.") var prefixed = false
        @Flag(help: "Deny instead of allow (a deny wins over any allow).") var deny = false
        @Option(help: "The client address it applies to.") var host: String = "*"

        func bindings() throws -> [AclBinding] {
            let resources: [(AclResourceType, String)] = [topic.map { (.topic, $0) }, group.map { (.group, $0) },
                                                         transactionalId.map { (.transactionalId, $0) }, cluster ? (.cluster, "kafka-cluster") : nil].compactMap { $0 }
            guard resources.count == 1, let (type, name) = resources.first else {
                throw ValidationError("give exactly one of --topic, --group, --transactional-id, --cluster")
            }
            guard !operation.isEmpty else { throw ValidationError("give at least one --operation") }
            return try operation.map { text in
                guard let op = AclOperation(name: text) else { throw ValidationError("unknown operation '\(text)'") }
                let b = AclBinding(resourceType: type.rawValue, resourceName: name,
                                   patternType: (prefixed ? AclPatternType.prefixed : .literal).rawValue, principal: principal, host: host,
                                   operation: op.rawValue, permission: (deny ? AclPermission.deny : .allow).rawValue)
                if let problem = Authorizer.validate(b) { throw ValidationError(problem) }
                return b
            }
        }
    }

    struct Remote: ParsableArguments {
        @Flag(help: "Work through a running server (the Kafka ACL APIs) at --bootstrap instead of the data directory.") var remote = false
        @OptionGroup var client: ClientOptions
    }

    static func exact(_ b: AclBinding) -> AclFilter {
        AclFilter(resourceType: b.resourceType, resourceName: b.resourceName, patternType: b.patternType, principal: b.principal,
                  host: b.host, operation: b.operation, permission: b.permission)
    }

    static func describe(_ b: AclBinding) -> [String] {
        [AclPermission(rawValue: b.permission)?.name ?? "?", b.principal, AclOperation(rawValue: b.operation)?.name ?? "?",
         AclResourceType(rawValue: b.resourceType)?.name ?? "?", b.resourceName, AclPatternType(rawValue: b.patternType)?.name ?? "?", b.host]
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list")
        @OptionGroup var options: DataOptions
        @OptionGroup var remote: Remote
        @Option(help: "Only this principal's.") var principal: String?

        func run() throws {
            let all: [AclBinding]
            if remote.remote {
                all = try remote.client.connect("strata-acls").describeAcls(AclFilter(
                    resourceType: AclResourceType.any.rawValue, resourceName: nil, patternType: AclPatternType.any.rawValue, principal: principal,
                    host: nil, operation: AclOperation.any.rawValue, permission: AclPermission.any.rawValue))
            } else {
                all = try Users.store(options).acls()
            }
            let rows = all.filter { principal == nil || $0.principal == principal }
                .sorted { Acls.describe($0).lexicographicallyPrecedes(Acls.describe($1)) }
            printTable(["PERMISSION", "PRINCIPAL", "OPERATION", "RESOURCE", "NAME", "PATTERN", "HOST"], rows.map(Acls.describe))
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "add")
        @OptionGroup var options: DataOptions
        @OptionGroup var remote: Remote
        @OptionGroup var binding: Binding

        func run() throws {
            let bindings = try binding.bindings()
            if remote.remote {
                let results = try remote.client.connect("strata-acls").createAcls(bindings)
                if let failed = results.first(where: { $0.error != 0 }) {
                    throw CLIError("CreateAcls refused: Kafka error \(failed.error)\(failed.message.map { ": \($0)" } ?? "")")
                }
            } else {
                try Users.store(options).putAcls(bindings)
            }
            printError("added \(bindings.count) ACL(s)")
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "remove")
        @OptionGroup var options: DataOptions
        @OptionGroup var remote: Remote
        @OptionGroup var binding: Binding

        func run() throws {
            let bindings = try binding.bindings()
            let removed: [AclBinding]
            if remote.remote {
                let results = try remote.client.connect("strata-acls").deleteAcls(bindings.map(Acls.exact))
                if let failed = results.first(where: { $0.error != 0 }) {
                    throw CLIError("DeleteAcls refused: Kafka error \(failed.error)\(failed.message.map { ": \($0)" } ?? "")")
                }
                removed = results.flatMap(\.deleted)
            } else {
                removed = try Users.store(options).deleteAcls(bindings)
            }
            guard !removed.isEmpty else { throw CLIError("no such ACL") }
            printError("removed \(removed.count) ACL(s)")
        }
    }
}
