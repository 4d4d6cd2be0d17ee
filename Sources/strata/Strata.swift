import ArgumentParser
import CPlatform
import StrataBroker
import StrataLog

@main
struct Strata: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strata",
        abstract: "Strata: a Kafka-compatible event log database.",
        subcommands: [Serve.self, Topics.self, Groups.self, Users.self, Acls.self, Produce.self, Consume.self, Query.self, Streams.self, Inspect.self, Compact.self, Index.self, Export.self, Tier.self, Bench.self, DebugCommand.self]
    )

    static func main() {
        // Reading a cold segment allocates and frees a few MB per block on each scan thread.
        // glibc's defaults give the freed tops of its per-thread arenas back to the kernel
        // (trim threshold 128 KiB) and serve large buffers by mmap, so every block faulted
        // its memory in afresh: ~40% of a cold `strata query`'s time was the kernel clearing
        // pages. For the commands that run and exit, fix the thresholds at what glibc's own
        // dynamic tuning reaches at most on 64-bit (mmap 32 MiB, trim twice that). Not for the
        // long-running ones (serve, streams): up to 64 MiB kept per arena and buffers up to
        // 32 MiB taken from fragmenting heaps would grow a busy broker's memory.
        if let command = CommandLine.arguments.dropFirst().first, !["serve", "streams"].contains(command) {
            _ = cplatform_malloc_thresholds(32 << 20, 64 << 20)
        }
        Self.main(nil)
    }
}

/// Options shared by every command that opens a data directory.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "Data directory (env STRATA_DATA).")
    var data: String = ProcessEnvironment.value("STRATA_DATA") ?? "./strata-data"

    init() {}
    init(data: String) { self.data = data }

    /// Opens the data directory for writing, with a clear message when another process has it.
    /// `reportWarnings` prints recovery warnings (serve logs them itself).
    func openBroker(options: Broker.Options = Broker.Options(), reportWarnings: Bool = true) throws -> Broker {
        do {
            let broker = try Broker.open(dataDirectory: data, options: options)
            // Recovery findings are worth a line each: a truncated tail means lost, unsynced data.
            for (name, report) in broker.logManager.loadReports.sorted(by: { $0.key < $1.key }) where reportWarnings {
                for warning in report.warnings { printError("strata: warning: \(name): \(warning)") }
            }
            return broker
        } catch let error as LogError {
            if case .locked = error {
                throw CLIError("\(error). Stop that process first (or use a read-only command: consume without --group, inspect).")
            }
            throw CLIError("\(error)")
        }
    }

    /// Opens for reading next to a running writer; `commits` also allows consumer-group commits.
    func openReadOnly(commits: Bool = false) throws -> Broker {
        guard ProcessEnvironment.fileExists(data + "/meta/data.mdb") else { throw CLIError("no Strata data directory at \(data)") }
        return try Broker.openReadOnly(dataDirectory: data, allowOffsetCommits: commits)
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
