import ArgumentParser
import StrataBroker
import StrataKafka
import StrataLog

struct Topics: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topics",
        abstract: "Create, list, describe, alter and delete topics.",
        subcommands: [Create.self, List.self, Describe.self, Alter.self, Delete.self])

    static func client(_ bootstrap: String) throws -> KafkaClient {
        let (host, port) = try Serve.split(bootstrap)
        return try KafkaClient(host: host, port: port, clientId: "strata-topics")
    }

    static func parseConfigs(_ pairs: [String]) throws -> [String: String] {
        var out: [String: String] = [:]
        for pair in pairs {
            guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else { throw ValidationError("--config takes KEY=VALUE, got '\(pair)'") }
            out[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
        }
        return out
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "create")
        @OptionGroup var options: DataOptions
        @Argument(help: "Topic name ([A-Za-z0-9._-], at most 249 characters).") var name: String
        @Option(help: "Number of partitions.") var partitions: Int32 = 1
        @Option(name: .customLong("config"), help: "KEY=VALUE topic config (Kafka names, e.g. retention.ms=86400000).") var configs: [String] = []
        @Option(help: "Create through a running server at HOST:PORT.") var bootstrap: String?

        func run() throws {
            if let bootstrap {
                if let problem = try Topics.client(bootstrap).createTopic(name, partitions: partitions, configs: try Topics.parseConfigs(configs)) {
                    throw CLIError(problem)
                }
                print("created topic \(name) with \(partitions) partition(s)")
                return
            }
            let broker = try options.openBroker()
            defer { try? broker.close() }
            try broker.createTopic(name, partitions: partitions, configs: try Topics.parseConfigs(configs))
            print("created topic \(name) with \(partitions) partition(s)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list")
        @OptionGroup var options: DataOptions
        @Option(help: "List through a running server at HOST:PORT.") var bootstrap: String?
        func run() throws {
            if let bootstrap {
                for t in try Topics.client(bootstrap).topics().sorted(by: { $0.name < $1.name }) { print(t.name) }
                return
            }
            let broker = try options.openReadOnly()
            for name in broker.topicNames() { print(name) }
        }
    }

    struct Describe: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "describe")
        @OptionGroup var options: DataOptions
        @Argument var name: String
        @Option(help: "Describe through a running server at HOST:PORT (partitions and offsets).") var bootstrap: String?
        func run() throws {
            if let bootstrap {
                let client = try Topics.client(bootstrap)
                guard let t = try client.topics().first(where: { $0.name == name }) else { throw CLIError("unknown topic '\(name)'") }
                print("topic \(name): \(t.partitions) partition(s)")
                for p in 0..<Int32(t.partitions) {
                    let start = try client.listOffset(topic: name, partition: p, timestamp: -2)
                    let end = try client.listOffset(topic: name, partition: p, timestamp: -1)
                    print("  partition \(p): offsets [\(start), \(end)), \(end - start) events")
                }
                return
            }
            let broker = try options.openReadOnly()
            let d = try broker.describeTopic(name)
            print("topic \(d.name): \(d.partitions.count) partition(s)")
            for p in d.partitions {
                if let why = p.offlineReason {
                    print("  partition \(p.partition): OFFLINE: \(why)")
                    continue
                }
                print("  partition \(p.partition): offsets [\(p.logStartOffset), \(p.logEndOffset)), \(p.logEndOffset - p.logStartOffset) events, \(p.sizeInBytes) bytes, \(p.segments) segment(s)")
                if let t = p.tiers, t.coldSegments > 0 { print("    " + tierLine(t)) }
                if let ratio = p.dirtyRatio {
                    let c = p.cleaner
                    print("    cleaner: dirty ratio \((ratio * 100).rounded() / 100), \(c?.passes ?? 0) pass(es), last clean \(c.map { $0.lastCleanMs > 0 ? String($0.lastCleanMs) : "never" } ?? "never"), \(c?.bytesReclaimed ?? 0) bytes reclaimed, \(c?.errors ?? 0) error(s)\(c.map { $0.lastError.isEmpty ? "" : " (last: \($0.lastError))" } ?? "")")
                }
            }
            print("  configs:")
            for (k, v) in d.configs.sorted(by: { $0.key < $1.key }) {
                print("    \(k)=\(v)\(d.overrides[k] != nil ? "" : " (default)")")
            }
        }
    }

    /// "hot H bytes, cold C bytes in N segment(s) (L bytes of log, R x smaller)".
    static func tierLine(_ t: PartitionLog.TierSizes) -> String {
        let ratio = Double(t.coldLogBytes) / Double(max(1, t.coldBytes))
        return "tiers: hot \(t.hotBytes) bytes; cold \(t.coldBytes) bytes in \(t.coldSegments) segment(s), made from \(t.coldLogBytes) bytes of log (\(String(format2: ratio))x smaller)"
    }

    struct Alter: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "alter", discussion: "retention.*, cleanup.policy and value.format apply at once; log file settings (segment.*, flush.*, index.*, max.message.bytes) when the topic is next opened.")
        @OptionGroup var options: DataOptions
        @Argument var name: String
        @Option(name: .customLong("config"), help: "KEY=VALUE to set.") var configs: [String] = []
        @Option(name: .customLong("delete-config"), help: "KEY to reset to its default.") var deleteConfigs: [String] = []
        @Option(help: "Grow the topic to this many partitions.") var partitions: Int32?

        func run() throws {
            let broker = try options.openBroker()
            defer { try? broker.close() }
            let set = try Topics.parseConfigs(configs)
            if !set.isEmpty || !deleteConfigs.isEmpty { try broker.alterTopicConfigs(name, set: set, remove: deleteConfigs) }
            if let partitions { try broker.addPartitions(name, total: partitions) }
            print("altered topic \(name)")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "delete")
        @OptionGroup var options: DataOptions
        @Argument var name: String
        @Option(help: "Delete through a running server at HOST:PORT.") var bootstrap: String?
        func run() throws {
            if let bootstrap {
                let error = try Topics.client(bootstrap).deleteTopic(name)
                guard error == 0 else { throw CLIError(error == 3 ? "unknown topic '\(name)'" : "delete failed: Kafka error \(error)") }
                print("deleted topic \(name)")
                return
            }
            let broker = try options.openBroker()
            defer { try? broker.close() }
            try broker.deleteTopic(name)
            print("deleted topic \(name)")
        }
    }
}
