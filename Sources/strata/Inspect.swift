import ArgumentParser
import StrataLog
import StrataBroker
import StrataCore

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show segments, indexes and offsets; --verify checks every batch.",
        discussion: "Read-only: works next to a running serve or produce.")

    @OptionGroup var options: DataOptions
    @Argument(help: "TOPIC or TOPIC-PARTITION (default: all).") var target: String?
    @Flag(help: "Validate every batch (CRC, offsets); exit 2 on damage.") var verify = false
    @Flag(help: "Recreate, empty, the partition directories a topic lists but the disk lacks (their records are lost; needs the data directory to itself: stop serve first).")
    var repair = false

    func run() throws {
        if repair {
            let broker = try options.openBroker()
            let recreated = try broker.recreateMissingPartitions()
            for name in recreated { print("recreated \(name) (empty)") }
            for (name, why) in broker.offlinePartitions.sorted(by: { $0.key < $1.key }) { print("still OFFLINE: \(name): \(why)") }
            if recreated.isEmpty { print("nothing to repair") }
            try broker.close()
            return
        }
        let manager = try LogManager.openReadOnly(dataDirectory: options.data)
        var damaged = false
        for (name, why) in manager.offlinePartitions.sorted(by: { $0.key < $1.key }) {
            if let target, !name.hasPrefix(target) { continue }
            print("\(name): OFFLINE: \(why)")
            damaged = true
        }
        // Partitions the metadata lists but the disk lacks.
        let metadataView = try? Broker.openReadOnly(dataDirectory: options.data)
        if let broker = metadataView {
            for topic in broker.topicNames() where target == nil || target == topic || target!.hasPrefix(topic + "-") {
                for p in 0..<(broker.partitionCount(topic) ?? 0) {
                    let name = LogManager.partitionDirectoryName(topic: topic, partition: p)
                    guard manager.log(topic: topic, partition: p) == nil, manager.offlinePartitions[name] == nil else { continue }
                    if let target, target != topic && target != name { continue }
                    print("\(name): OFFLINE: directory logs/\(name) is missing (topic '\(topic)' has \(broker.partitionCount(topic) ?? 0) partitions); `strata inspect --repair` recreates it empty")
                    damaged = true
                }
            }
        }
        var shown = 0
        var out = OutputBuffer()
        for name in manager.partitionNames {
            guard let (topic, p) = LogManager.splitPartitionDirectory(name), let log = manager.log(topic: topic, partition: p) else { continue }
            if let target, target != topic && target != name { continue }
            shown += 1
            out.write("\(name): offsets [\(log.logStartOffset), \(log.logEndOffset)) checkpointed recovery point \(log.recoveryPoint), \(log.sizeInBytes) bytes\n")
            if let t = try? log.tierSizes(), t.coldSegments > 0 { out.write("  " + Topics.tierLine(t) + "\n") }
            // Producer state: open transactions hold back what read_committed readers see.
            try log.catchUpProducerState()
            let states = log.producerStateSnapshot
            if !states.producers.isEmpty || !states.aborted.isEmpty {
                out.write("  producers \(states.producers.count), last stable offset \(log.lastStableOffset), aborted transactions \(states.aborted.count)\n")
                for open in log.openTransactions {
                    out.write("  OPEN TRANSACTION: producer \(open.producerId) since offset \(open.firstOffset)\n")
                }
            }
            for s in try log.segmentInfos() {
                if s.isCold {
                    out.write("  segment \(s.baseOffset) (cold): offsets [\(s.baseOffset), \(s.nextOffset)), \(s.sizeInBytes) bytes made from \(s.logBytes) bytes of log (\(String(format2: Double(s.logBytes) / Double(max(1, s.sizeInBytes))))x smaller), \(s.offsetIndexEntries) blocks, max timestamp \(s.largestTimestamp)\n")
                    continue
                }
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
        if let broker = metadataView, target == nil, let records = try? broker.metadata.transactions().records, !records.isEmpty {
            let now = wallClockMillis()
            out.write("transactional ids: \(records.count)\n")
            for r in records where r.state != .completeCommit && r.state != .completeAbort && r.state != .empty {
                let age = r.startMs >= 0 ? " for \(max(0, now - r.startMs) / 1000) s (timeout \(r.timeoutMs / 1000) s)" : ""
                out.write("  \(r.transactionalId): \(r.state)\(age), producer \(r.producerId) epoch \(r.epoch), partitions \(r.partitions.map { "\($0.topic)-\($0.partition)" }.joined(separator: " "))\n")
            }
        }
        out.flush()
        if let target, shown == 0 { throw CLIError("no partition matches '\(target)' in \(options.data)") }
        if damaged { throw ExitCode(2) }
    }
}
