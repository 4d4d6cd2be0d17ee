import ArgumentParser
import StrataBroker
import StrataQuery

/// Builds the block summaries strata query prunes with, now (a running server builds them in
/// the background within half a minute of a segment closing).
struct Index: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Summarise a topic's closed segments for strata query: key and member Bloom filters per ~256 KiB block.",
        discussion: """
            Members come from the topic's query.index.members config (keys are always summarised). \
            Segments with an up-to-date summary are skipped; summaries of deleted or rewritten \
            segments are removed or rebuilt. Safe next to a running server.
            """)

    @OptionGroup var options: DataOptions
    @Argument(help: "Topic name.") var topic: String

    func run() throws {
        let broker = try options.openReadOnly()
        defer { try? broker.close() }
        guard broker.partitionCount(topic) != nil else { throw CLIError("unknown topic '\(topic)'") }
        let members = broker.topicConfig(topic)?.queryIndexMembers ?? []
        let r = try BlockSummaries.build(broker: broker, topic: topic)
        print("""
            \(topic): \(r.segmentsBuilt) of \(r.segmentsClosed) closed segments summarised (\(r.segmentsClosed - r.segmentsBuilt) up to date), \
            \(r.blocks) blocks, \(r.bytesScanned) bytes read, \(r.summaryBytes) bytes of summaries; \
            keys\(members.isEmpty ? "" : " and " + members.joined(separator: ", "))\(r.filesRemoved > 0 ? "; \(r.filesRemoved) stale files removed" : "")
            """)
    }
}
