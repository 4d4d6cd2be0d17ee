import ArgumentParser
import StrataLog

@main
struct Strata: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "strata", abstract: "Strata: a Kafka-compatible event log database.")
}
