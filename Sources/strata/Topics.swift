import ArgumentParser
import StrataBroker

struct Topics: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list, describe, alter and delete topics.",
        subcommands: [Create.self, List.self, Describe.self, Alter.self, Delete.self])

    static func parseConfigs(_ pairs: [String]) throws -> [String: String] {
        var out: [String: String] = [:]
        for pair in pairs {
            guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else { throw ValidationError("--config takes KEY=VALUE, got '\(pair)'") }
            out[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
        }
        return out
    }

    struct Create: ParsableCommand {
        @OptionGroup var options: DataOptions
        @Argument(help: "Topic name ([A-Za-z0-9._-], at most 249 characters).") var name: String
        @Option(help: "Number of partitions.") var partitions: Int32 = 1
        @Option(name: .customLong("config"), help: "KEY=VALUE topic config (Kafka names, e.g. retention.ms=86400000).") var configs: [String] = []

        func run() throws {
            let broker = try options.openBroker()
            defer { try? broker.close() }
            try broker.createTopic(name, partitions: partitions, configs: try Topics.parseConfigs(configs))
            print("created topic \(name) with \(partitions) partition(s)")
        }
    }

    struct List: ParsableCommand {
        @OptionGroup var options: DataOptions
        func run() throws {
            let broker = try options.openReadOnly()
            for name in broker.topicNames() { print(name) }
        }
    }

    struct Describe: ParsableCommand {
        @OptionGroup var options: DataOptions
        @Argument var name: String
        func run() throws {
            let broker = try options.openReadOnly()
            let d = try broker.describeTopic(name)
            print("topic \(d.name): \(d.partitions.count) partition(s)")
            for p in d.partitions {
                print("  partition \(p.partition): offsets [\(p.logStartOffset), \(p.logEndOffset)), \(p.logEndOffset - p.logStartOffset) events, \(p.sizeInBytes) bytes, \(p.segments) segment(s)")
            }
            print("  configs:")
            for (k, v) in d.configs.sorted(by: { $0.key < $1.key }) {
                print("    \(k)=\(v)\(d.overrides[k] != nil ? "" : " (default)")")
            }
        }
    }

    struct Alter: ParsableCommand {
        static let configuration = CommandConfiguration(discussion: "retention.*, cleanup.policy and value.format apply at once; log file settings (segment.*, flush.*, index.*, max.message.bytes) when the topic is next opened.")
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
        @OptionGroup var options: DataOptions
        @Argument var name: String
        func run() throws {
            let broker = try options.openBroker()
            defer { try? broker.close() }
            try broker.deleteTopic(name)
            print("deleted topic \(name)")
        }
    }
}
