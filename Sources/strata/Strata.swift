import ArgumentParser
import StrataLog

@main
struct Strata: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "strata",
        abstract: "Strata: a Kafka-compatible event log database.",
        subcommands: [Serve.self, LogCommand.self, Inspect.self, DebugCommand.self]
    )
}

/// Options shared by every command that opens a data directory.
struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "Data directory (env STRATA_DATA).")
    var data: String = ProcessEnvironment.value("STRATA_DATA") ?? "./strata-data"

    @Option(name: .long, help: "Flush mode for partitions: sync, interval or os (see docs/durability.md).")
    var flushMode: String = "sync"

    func logConfig() throws -> LogConfig {
        var config = LogConfig()
        guard let mode = FlushMode(rawValue: flushMode) else {
            throw ValidationError("--flush-mode must be one of sync, interval, os")
        }
        config.flushMode = mode
        return config
    }
}
