import ArgumentParser
import StrataLog

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show segments, indexes and offsets; --verify checks every batch.",
        discussion: "Read-only: works next to a running serve or produce.")

    @OptionGroup var options: DataOptions
    @Argument(help: "TOPIC or TOPIC-PARTITION (default: all).") var target: String?
    @Flag(help: "Validate every batch (CRC, offsets); exit 2 on damage.") var verify = false

    func run() throws {
        let manager = try LogManager.openReadOnly(dataDirectory: options.data)
        var damaged = false
        var shown = 0
        var out = OutputBuffer()
        for name in manager.partitionNames {
            guard let (topic, p) = LogManager.splitPartitionDirectory(name), let log = manager.log(topic: topic, partition: p) else { continue }
            if let target, target != topic && target != name { continue }
            shown += 1
            out.write("\(name): offsets [\(log.logStartOffset), \(log.logEndOffset)) checkpointed recovery point \(log.recoveryPoint), \(log.sizeInBytes) bytes\n")
            for s in try log.segmentInfos() {
                let density = s.offsetIndexEntries > 0 ? "1 entry / \(s.sizeInBytes / s.offsetIndexEntries) bytes" : "no entries"
                out.write("  segment \(s.baseOffset)\(s.isActive ? " (newest)" : ""): offsets [\(s.baseOffset), \(s.nextOffset)), \(s.sizeInBytes) bytes, index \(s.offsetIndexEntries) (\(density)), timeindex \(s.timeIndexEntries), max timestamp \(s.largestTimestamp)\n")
            }
            if verify {
                let problems = log.verify()
                for problem in problems { out.write("  DAMAGE: \(problem)\n") }
                if problems.isEmpty { out.write("  verified: every batch intact\n") }
                damaged = damaged || !problems.isEmpty
            }
        }
        out.flush()
        if let target, shown == 0 { throw CLIError("no partition matches '\(target)' in \(options.data)") }
        if damaged { throw ExitCode(2) }
    }
}
