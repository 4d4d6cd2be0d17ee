#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import StrataLog
import StrataKafka
import StrataBroker

/// Runs Strata on a data directory: loads and recovers every partition, keeps the background
/// flusher running, and closes cleanly (writing the clean-shutdown marker) on SIGINT/SIGTERM.
/// The Kafka listener is added by the protocol layer; meanwhile `consume`, `topics list|describe`
/// and `inspect` read the data directory alongside it.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Open the data directory, recover it, and run until interrupted.")

    @OptionGroup var options: DataOptions

    @Option(help: "Kafka listener address HOST:PORT (port 0 picks a free one).")
    var listen: String = "127.0.0.1:9092"

    @Option(help: "Address clients are told to connect to (Metadata, FindCoordinator); default: --listen.")
    var advertised: String?

    @Option(name: .customLong("config"), help: "Broker setting KEY=VALUE: num.partitions (default 1), auto.create.topics.enable (default true), default.replication.factor (1), log.retention.check.interval.ms (default 300000), log.cleaner.backoff.ms (default 15000), log.cleaner.io.max.bytes.per.second (default 0: unlimited), group.initial.rebalance.delay.ms (default 3000), max.partitions (default 12000, all topics), max.partitions.per.topic (default 10000), max.segment.bytes (default 1073741824), log.max.open.segments (closed segments kept mapped, default 4096), and Kafka's topic-config defaults (log.retention.ms, log.retention.hours, log.segment.bytes, log.roll.ms, log.cleanup.policy, compression.type, message.max.bytes, log.message.timestamp.type, ...).")
    var configs: [String] = []

    static let brokerSettings = ["num.partitions", "auto.create.topics.enable", "default.replication.factor", "offsets.topic.num.partitions",
                                 "log.retention.check.interval.ms", "log.cleaner.backoff.ms", "log.cleaner.io.max.bytes.per.second",
                                 "group.initial.rebalance.delay.ms", "max.partitions", "max.partitions.per.topic", "max.segment.bytes",
                                 "log.max.open.segments"]

    static func split(_ address: String) throws -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("'\(address)' is not HOST:PORT")
        }
        return (String(address[..<colon]), port)
    }

    func run() throws {
        // Block the stop signals in every thread; the main thread collects them with sigwait.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let started = nowSeconds()
        var brokerOptions = Broker.Options()
        let settings = try Topics.parseConfigs(configs)
        brokerOptions.settings = settings
        // Kafka's broker-level topic defaults (log.retention.ms, log.segment.bytes, ...).
        do {
            brokerOptions.defaultTopicConfig = try TopicConfig.brokerDefaults(settings)
        } catch {
            throw ValidationError("broker setting \(error)")
        }
        for (key, value) in settings {
            if TopicConfig.topicKeyForBrokerKey[key] != nil { continue }
            switch key {
            case "log.cleaner.io.max.bytes.per.second":
                guard let v = Int(value), v >= 0 else { throw ValidationError("\(key) must be a number >= 0") }
                brokerOptions.cleanerMaxBytesPerSecond = v
            case "max.partitions":
                guard let n = Int(value), n >= 1, n <= 1_000_000 else { throw ValidationError("\(key) must be a number in 1...1000000") }
                brokerOptions.maxPartitionsPerBroker = n
            case "max.partitions.per.topic":
                guard let n = Int32(value), n >= 1, n <= Broker.Options.maxPartitions else {
                    throw ValidationError("\(key) must be a number in 1...\(Broker.Options.maxPartitions)")
                }
                brokerOptions.maxPartitionsPerTopic = n
            case "max.segment.bytes":
                guard let n = Int(value), n >= 1024, n <= Int(Int32.max) else { throw ValidationError("\(key) must be a number in 1024...\(Int32.max)") }
                brokerOptions.maxSegmentBytes = n
            case "log.max.open.segments":
                guard let n = Int(value), n >= 16, n <= 1_000_000 else { throw ValidationError("\(key) must be a number in 16...1000000") }
                MappedSegments.shared.budget = n
            case "group.initial.rebalance.delay.ms":
                guard let ms = Int64(value), ms >= 0, ms <= 300_000 else { throw ValidationError("\(key) must be a number of milliseconds in 0...300000") }
                brokerOptions.initialRebalanceDelayMs = ms
            case "log.retention.check.interval.ms", "log.cleaner.backoff.ms":
                guard let ms = Int64(value), ms >= 0 else { throw ValidationError("\(key) must be a number of milliseconds >= 0") }
                if key == "log.cleaner.backoff.ms" { brokerOptions.cleanerBackoffMs = ms } else { brokerOptions.retentionCheckIntervalMs = ms }
            case "num.partitions":
                guard let n = Int32(value), n >= 1, n <= Broker.Options.maxPartitions else {
                    throw ValidationError("\(key) must be a number in 1...\(Broker.Options.maxPartitions)")
                }
                brokerOptions.defaultPartitions = n
            case "offsets.topic.num.partitions":
                guard let n = Int32(value), n >= 1, n <= 1000 else { throw ValidationError("\(key) must be a number in 1...1000") }
                brokerOptions.offsetsTopicPartitions = n
            case "auto.create.topics.enable":
                guard let b = Bool(value) else { throw ValidationError("\(key) must be true or false") }
                brokerOptions.autoCreateTopics = b
            case "default.replication.factor":
                // One node keeps one replica: 1 is the only factor that can be honoured.
                guard value == "1" else { throw ValidationError("\(key): a single Strata node keeps one replica; only 1 is accepted") }
            default:
                throw ValidationError("unknown broker setting '\(key)' (known: \(Self.brokerSettings.joined(separator: ", ")), and the log.* topic-config defaults)")
            }
        }
        // Each partition keeps one descriptor (its active log): take the hard limit, as Kafka's
        // packaging does, and say so when even that is below what max.partitions needs.
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            if limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max
                _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            }
            let needed = rlim_t(brokerOptions.maxPartitionsPerBroker + 1024)
            if limit.rlim_cur < needed {
                printError("strata: warning: the open-file limit is \(limit.rlim_cur); max.partitions=\(brokerOptions.maxPartitionsPerBroker) needs about \(needed) (one descriptor per partition plus connections): raise it (ulimit -n) or lower max.partitions")
            }
        }
        let broker = try options.openBroker(options: brokerOptions)
        let manager = broker.logManager
        let elapsed = Int((nowSeconds() - started) * 1000)
        printError("strata: data directory \(options.data) open in \(elapsed) ms: \(broker.topicNames().count) topic(s), \(manager.partitionNames.count) partition(s)")
        // One line per partition that needed recovery or has something to say (at most 50, then
        // a count): a broker of 10,000 partitions must not print 10,000 lines on every start.
        var cleanPartitions = 0
        var recoveredPartitions = 0
        var printed = 0
        var unprinted = 0
        for name in manager.partitionNames {
            guard let report = manager.loadReports[name], let (topic, p) = LogManager.splitPartitionDirectory(name),
                  let log = manager.log(topic: topic, partition: p) else { continue }
            if report.cleanShutdown { cleanPartitions += 1 } else { recoveredPartitions += 1 }
            guard report.segmentsRecovered > 0 || !report.warnings.isEmpty else { continue }
            guard printed < 50 else { unprinted += 1; continue }
            printed += 1
            let mode = report.cleanShutdown ? "clean" : "recovered \(report.segmentsRecovered) segment(s), \(report.bytesValidated) bytes validated"
            printError("  \(name): offsets [\(log.logStartOffset), \(log.logEndOffset)), \(report.segments) segment(s), \(mode)")
            for warning in report.warnings { printError("  warning: \(name): \(warning)") }
        }
        if unprinted > 0 { printError("  ... and \(unprinted) more partition(s) recovered or with warnings") }
        if manager.partitionNames.count > 0 {
            printError("strata: \(cleanPartitions) partition(s) closed cleanly, \(recoveredPartitions) checked after an unclean stop")
        }
        for (name, why) in broker.offlinePartitions.sorted(by: { $0.key < $1.key }) {
            printError("  error: partition \(name) is OFFLINE (clients get KAFKA_STORAGE_ERROR; the others serve): \(why)")
        }
        for orphan in broker.orphanPartitions { printError("  warning: \(orphan) is on disk but belongs to no topic; left alone") }
        let (host, port) = try Self.split(listen)
        let adv = try advertised.map(Self.split)
        let server = KafkaServer(broker: broker)
        do {
            try server.start(host: host, port: port, advertisedHost: adv?.0, advertisedPort: adv?.1,
                             log: { printError("strata: \($0)") })
        } catch {
            try? broker.close()
            throw CLIError("cannot listen on \(listen): \(error)")
        }
        printError("strata: Kafka listener on \(host):\(server.port) (advertised \(adv.map { "\($0.0):\($0.1)" } ?? "\(host):\(server.port)")), data \(options.data). Ctrl-C stops cleanly.")
        var received: Int32 = 0
        sigwait(&signals, &received)
        printError("strata: signal \(received), closing")
        try? server.shutdown()
        try broker.close()
        printError("strata: clean shutdown")
    }
}
