#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CoreMetrics
import Logging
import Prometheus
import StrataBroker
import StrataCore
import StrataKafka
import StrataLog
import StrataOps
import StrataQuery
import Synchronization

/// Runs Strata on a data directory: loads and recovers every partition, serves the Kafka protocol
/// and the HTTP operations endpoints, keeps the background workers running, and closes cleanly
/// (writing the clean-shutdown marker) on SIGINT/SIGTERM.
struct Serve: ParsableCommand {
    /// How often the background pass looks for closed segments without a block summary.
    static let summaryIntervalMs: Int64 = 30_000
    /// Log bytes one pass reads at most (~3 s of one core): years of unsummarised history are
    /// caught up over many passes, not at the clients' expense.
    static let summaryBytesPerPass = 1 << 30

    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Open the data directory, recover it, and serve Kafka clients until interrupted.",
        discussion: "Settings come from built-in defaults, STRATA_DATA, --config-file, then flags (each overrides the one before); --print-config shows the result and where each value came from. docs/operations.md lists every setting.")

    @Option(name: .long, help: "Data directory (default ./strata-data, or env STRATA_DATA, or log.dirs in the config file).")
    var data: String?

    @Option(help: "Kafka listener address HOST:PORT (port 0 picks a free one); default 127.0.0.1:9092.")
    var listen: String?

    @Option(help: "Address clients are told to connect to (Metadata, FindCoordinator); default: --listen.")
    var advertised: String?

    @Option(help: "Kafka listeners, comma-separated PROTOCOL://HOST:PORT (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), e.g. PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093.")
    var listeners: String?

    @Option(help: "What Metadata advertises for each listener, comma-separated HOST:PORT in the same order; default: the listeners.")
    var advertisedListeners: String?

    @Option(help: "TLS certificate chain (PEM) of SSL and SASL_SSL listeners.")
    var tlsCert: String?

    @Option(help: "TLS private key (PEM).")
    var tlsKey: String?

    @Option(help: "CA certificates (PEM) that sign client certificates; with it, clients must present one (mTLS) unless --tls-client-auth says otherwise.")
    var tlsCa: String?

    @Option(help: "Client certificates: none, requested or required (default: required with --tls-ca, else none).")
    var tlsClientAuth: String?

    @Option(help: "HTTP listener for /metrics, /healthz, /readyz and the admin API, HOST:PORT or 'off'; default 127.0.0.1:9644.")
    var httpListen: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (default info).")
    var logLevel: String?

    @Option(help: "Log format on stderr: text or json (one event per line; default text).")
    var logFormat: String?

    @Option(help: "A server.properties-style file of settings (key=value lines); flags override it.")
    var configFile: String?

    @Option(name: .customLong("config"), help: "Setting KEY=VALUE, as in the config file (repeatable): num.partitions, log.retention.ms, log.segment.bytes, max.partitions, ... (--print-config lists them all).")
    var configs: [String] = []

    @Flag(help: "Print the effective configuration (each value with its source) and exit.")
    var printConfig = false

    static func split(_ address: String) throws -> (String, Int) {
        var address = address
        let parts = address.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        if parts.count == 2 { address = String(parts[1]) }
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("'\(address)' is not HOST:PORT")
        }
        return (String(address[..<colon]), port)
    }

    /// The configuration from defaults, environment, file and flags, in that order.
    func resolvedConfig() throws -> ServerConfig {
        var config = ServerConfig()
        if let env = ProcessEnvironment.value("STRATA_DATA") { try config.set("log.dirs", env, from: .environment("STRATA_DATA")) }
        if let configFile { try config.load(file: configFile) }
        for (key, value) in try Topics.parseConfigs(configs) { try config.set(key, value, from: .flag("--config")) }
        if let data { try config.set("log.dirs", data, from: .flag("--data")) }
        if let listen { try config.set("listeners", listen, from: .flag("--listen")) }
        if let listeners { try config.set("listeners", listeners, from: .flag("--listeners")) }
        if let advertised { try config.set("advertised.listeners", advertised, from: .flag("--advertised")) }
        if let advertisedListeners { try config.set("advertised.listeners", advertisedListeners, from: .flag("--advertised-listeners")) }
        if let tlsCert { try config.set("ssl.certificate.location", tlsCert, from: .flag("--tls-cert")) }
        if let tlsKey { try config.set("ssl.key.location", tlsKey, from: .flag("--tls-key")) }
        if let tlsCa { try config.set("ssl.ca.location", tlsCa, from: .flag("--tls-ca")) }
        if let tlsClientAuth { try config.set("ssl.client.auth", tlsClientAuth, from: .flag("--tls-client-auth")) }
        if let httpListen { try config.set("http.listen", httpListen, from: .flag("--http-listen")) }
        if let logLevel { try config.set("logging.level", logLevel, from: .flag("--log-level")) }
        if let logFormat { try config.set("logging.format", logFormat, from: .flag("--log-format")) }
        return config
    }

    /// Broker.Options from the broker settings; every value checked, errors name the key.
    static func brokerOptions(_ config: ServerConfig) throws -> Broker.Options {
        var options = Broker.Options()
        let settings = config.brokerSettingsGiven
        options.settings = settings
        do {
            options.defaultTopicConfig = try TopicConfig.brokerDefaults(settings)
        } catch {
            throw ValidationError("setting \(error)")
        }
        for (key, value) in settings where TopicConfig.topicKeyForBrokerKey[key] == nil {
            switch key {
            case "log.cleaner.io.max.bytes.per.second":
                guard let v = Int(value), v >= 0 else { throw ValidationError("\(key) must be a number >= 0") }
                options.cleanerMaxBytesPerSecond = v
            case "max.partitions":
                guard let n = Int(value), n >= 1, n <= 1_000_000 else { throw ValidationError("\(key) must be a number in 1...1000000") }
                options.maxPartitionsPerBroker = n
            case "max.partitions.per.topic":
                guard let n = Int32(value), n >= 1, n <= Broker.Options.maxPartitions else {
                    throw ValidationError("\(key) must be a number in 1...\(Broker.Options.maxPartitions)")
                }
                options.maxPartitionsPerTopic = n
            case "max.segment.bytes":
                guard let n = Int(value), n >= 1024, n <= Int(Int32.max) else { throw ValidationError("\(key) must be a number in 1024...\(Int32.max)") }
                options.maxSegmentBytes = n
            case "log.max.open.segments":
                guard let n = Int(value), n >= 16, n <= 1_000_000 else { throw ValidationError("\(key) must be a number in 16...1000000") }
                MappedSegments.shared.budget = n
            case "cold.block.cache.bytes":
                guard let n = Int(value), n >= 0, n <= 1 << 40 else { throw ValidationError("\(key) must be a number of bytes in 0...\(1 << 40)") }
                ColdBlockCache.shared.budgetBytes = n
            case "sasl.max.failed.authentications":
                guard let n = Int(value), n >= 1, n <= 1_000_000 else { throw ValidationError("\(key) must be a number in 1...1000000") }
                options.maxFailedAuthentications = n
            case "sasl.failed.authentication.window.ms":
                guard let ms = Int64(value), ms >= 0, ms <= 86_400_000 else { throw ValidationError("\(key) must be a number of milliseconds in 0...86400000") }
                options.failedAuthenticationWindowMs = ms
            case "transaction.max.timeout.ms":
                guard let ms = Int32(value), ms >= 1 else { throw ValidationError("\(key) must be a number of milliseconds in 1...\(Int32.max)") }
                options.transactionMaxTimeoutMs = ms
            case "transactional.id.expiration.ms":
                guard let ms = Int64(value), ms >= 1 else { throw ValidationError("\(key) must be a number of milliseconds >= 1") }
                options.transactionalIdExpirationMs = ms
            case "producer.id.expiration.ms":
                guard let ms = Int64(value), ms >= 1 else { throw ValidationError("\(key) must be a number of milliseconds >= 1") }
                options.defaultTopicConfig.log.producerIdExpirationMs = ms
            case "group.consumer.heartbeat.interval.ms":
                guard let ms = Int32(value), ms >= 100, ms <= 3_600_000 else { throw ValidationError("\(key) must be a number of milliseconds in 100...3600000") }
                options.consumerGroupHeartbeatIntervalMs = ms
            case "group.consumer.session.timeout.ms":
                guard let ms = Int64(value), ms >= 1000, ms <= 3_600_000 else { throw ValidationError("\(key) must be a number of milliseconds in 1000...3600000") }
                options.consumerGroupSessionTimeoutMs = ms
            case "group.initial.rebalance.delay.ms":
                guard let ms = Int64(value), ms >= 0, ms <= 300_000 else { throw ValidationError("\(key) must be a number of milliseconds in 0...300000") }
                options.initialRebalanceDelayMs = ms
            case "log.retention.check.interval.ms", "log.cleaner.backoff.ms", "log.cold.check.interval.ms":
                guard let ms = Int64(value), ms >= 0 else { throw ValidationError("\(key) must be a number of milliseconds >= 0") }
                switch key {
                case "log.cleaner.backoff.ms": options.cleanerBackoffMs = ms
                case "log.cold.check.interval.ms": options.coldCheckIntervalMs = ms
                default: options.retentionCheckIntervalMs = ms
                }
            case "num.partitions":
                guard let n = Int32(value), n >= 1, n <= Broker.Options.maxPartitions else {
                    throw ValidationError("\(key) must be a number in 1...\(Broker.Options.maxPartitions)")
                }
                options.defaultPartitions = n
            case "offsets.topic.num.partitions":
                guard let n = Int32(value), n >= 1, n <= 1000 else { throw ValidationError("\(key) must be a number in 1...1000") }
                options.offsetsTopicPartitions = n
            case "auto.create.topics.enable":
                guard let b = Bool(value) else { throw ValidationError("\(key) must be true or false") }
                options.autoCreateTopics = b
            case "default.replication.factor":
                // One node keeps one replica: 1 is the only factor that can be honoured.
                guard value == "1" else { throw ValidationError("\(key): a single Strata node keeps one replica; only 1 is accepted") }
            default:
                throw ValidationError("unknown setting '\(key)' (strata serve --print-config lists every setting)")
            }
        }
        return options
    }

    func run() throws {
        let config = try resolvedConfig()
        let brokerOptions = try Self.brokerOptions(config)
        let listeners = try Self.listeners(config)
        let security = try Self.securitySettings(config, listeners: listeners)
        let http = config["http.listen"] == "off" ? nil : try Self.split(config["http.listen"])
        guard let level = Logger.Level(rawValue: config["logging.level"]) else {
            throw ValidationError("logging.level '\(config["logging.level"])' is not one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let format = StrataLogHandler.Format(rawValue: config["logging.format"]) else {
            throw ValidationError("logging.format '\(config["logging.format"])' is not text or json")
        }
        guard let maxPartitionSeries = Int(config["metrics.max.partition.series"]), maxPartitionSeries >= 0,
              let maxLagSeries = Int(config["metrics.max.lag.series"]), maxLagSeries >= 0 else {
            throw ValidationError("metrics.max.partition.series and metrics.max.lag.series must be numbers >= 0")
        }
        let dataDirectory = config["log.dirs"]
        guard !dataDirectory.isEmpty, !dataDirectory.contains(",") else { throw ValidationError("log.dirs must name one data directory") }
        if printConfig {
            print(config.printed())
            return
        }

        // Logging and metrics first: handles made later (the listener's, the log engine's) bind
        // to these backends. Without an HTTP listener nothing could scrape, so metrics stay no-ops.
        LoggingSystem.bootstrap { label in StrataLogHandler(label: label, level: level, format: format) }
        let logger = Logger(label: "strata")
        let registry = PrometheusCollectorRegistry()
        if http != nil {
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.defaultDurationHistogramBuckets = [
                .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500), .milliseconds(5),
                .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
            ]
            factory.valueHistogramBuckets["strata_log_flush_records"] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10_000, 100_000]
            MetricsSystem.bootstrap(factory)
        }

        // Block the stop signals in every thread; the main thread collects them with sigwait.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGHUP)
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        raiseDescriptorLimit(for: brokerOptions.maxPartitionsPerBroker, logger: logger)
        let started = nowSeconds()
        let broker = try DataOptions(data: dataDirectory).openBroker(options: brokerOptions, reportWarnings: false)
        logRecovery(broker, openedInMs: Int((nowSeconds() - started) * 1000), logger: logger)

        let server = KafkaServer(broker: broker)
        let listenerBound = Atomic<Bool>(false)
        do {
            try server.start(listeners: listeners, security: security, logger: Logger(label: "strata.kafka"))
            listenerBound.store(true, ordering: .releasing)
        } catch {
            try? broker.close()
            throw CLIError("cannot listen on \(listeners.map(\.description).joined(separator: ",")): \(error)")
        }
        let brokerOpen = Atomic<Bool>(true)
        var ops: OpsServer?
        if let http {
            let opsServer = OpsServer(
                broker: broker, registry: registry,
                collector: BrokerCollector(maxPartitionSeries: maxPartitionSeries, maxLagSeries: maxLagSeries),
                readiness: .init(kafkaListenerBound: { listenerBound.load(ordering: .acquiring) }, brokerOpen: { brokerOpen.load(ordering: .acquiring) }),
                logger: Logger(label: "strata.http"))
            do {
                let bound = try opsServer.start(host: http.0, port: http.1)
                logger.info("HTTP listener on \(http.0):\(bound) (/metrics, /healthz, /readyz, /v1/groups)")
                ops = opsServer
            } catch where !config.isSet("http.listen") {
                // The built-in default address taken (a second server on this machine) costs the
                // metrics, not the broker; an address the user chose must work or stop the start.
                opsServer.shutdown()
                logger.warning("HTTP listener not started: the default address is taken; set --http-listen HOST:PORT (or off)",
                               metadata: ["address": "\(http.0):\(http.1)", "error": "\(error)"])
            } catch {
                opsServer.shutdown()
                try? server.shutdown()
                try? broker.close()
                throw CLIError("cannot listen for HTTP on \(http.0):\(http.1): \(error) (--http-listen off disables it)")
            }
        }
        let mtls = security.tls.map { $0.clientAuth == .required } ?? false
        for listener in server.bound where !Self.isLoopback(listener.host) {
            switch listener.securityProtocol {
            case .plaintext:
                logger.warning("the Kafka listener accepts unauthenticated, unencrypted clients on a non-loopback address: anyone who can reach it can read, write and delete every topic",
                               metadata: ["listener": "\(listener.description)"])
            case .ssl where !mtls:
                logger.warning("the SSL listener encrypts but does not authenticate clients (no --tls-ca / ssl.client.auth=required): anyone who can reach it can read, write and delete every topic",
                               metadata: ["listener": "\(listener.description)"])
            default: break
            }
        }
        let authenticating = server.bound.contains { $0.securityProtocol.usesSASL || ($0.securityProtocol.usesTLS && mtls) }
        if authenticating, security.superUsers.isEmpty, ((try? broker.metadata.acls()) ?? []).isEmpty {
            logger.warning("ACLs are enforced on authenticated listeners and there are none (and no super.users): authenticated clients may do nothing yet; add some with 'strata acls add' (docs/security.md)")
        }
        // The wording is relied on: tools and tests read the bound port from "Kafka listener on".
        for listener in server.bound {
            let advertised = "\(listener.advertisedHost ?? listener.host):\(listener.advertisedPort ?? listener.port)"
            let kind = listener.securityProtocol == .plaintext ? "Kafka listener" : "Kafka \(listener.securityProtocol.rawValue) listener"
            logger.info("\(kind) on \(listener.host):\(listener.port) (advertised \(advertised)), data \(dataDirectory). Ctrl-C stops cleanly.")
        }
        // Block summaries of closed segments for strata query's pruning (docs/query.md), built in
        // the background shortly after a segment closes.
        let summaryMemory = BlockSummaries.Memory()
        let summaries = PeriodicWorker(intervalMs: Self.summaryIntervalMs) {
            for (topic, result) in BlockSummaries.buildAll(broker: broker, maxBytesPerPass: Self.summaryBytesPerPass, memory: summaryMemory,
                                                           shouldStop: { !brokerOpen.load(ordering: .acquiring) }) {
                // (A topic deleted while the pass ran is not worth a warning.)
                if case .failure(let error) = result, broker.partitionCount(topic) != nil {
                    Logger(label: "strata.summaries").warning("block summaries not built; retried on the next pass",
                                                              metadata: ["topic": "\(topic)", "error": "\(error)"])
                }
            }
        }
        summaries.start()
        var received: Int32 = 0
        while true {
            sigwait(&signals, &received)
            guard received == SIGHUP else { break }
            do {
                try server.reloadTLS()
                logger.info("SIGHUP: TLS certificate, key and CA files reloaded (new connections use them)")
            } catch {
                logger.error("SIGHUP: TLS files not reloaded; the previous ones stay in use", metadata: ["error": "\(error)"])
            }
        }
        logger.info("closing", metadata: ["signal": "\(received)"])
        listenerBound.store(false, ordering: .releasing)
        try? server.shutdown()
        brokerOpen.store(false, ordering: .releasing)
        summaries.stop()
        try broker.close()
        ops?.shutdown()
        logger.info("clean shutdown")
    }

    /// The listeners from `listeners` and `advertised.listeners` (same order; one HOST:PORT each).
    static func listeners(_ config: ServerConfig) throws -> [Listener] {
        var listeners = try config["listeners"].split(separator: ",").map { try Listener.parse($0.trimmedSpaces()) }
        guard !listeners.isEmpty else { throw ValidationError("listeners: at least one PROTOCOL://HOST:PORT") }
        guard Set(listeners.map(\.securityProtocol)).count == listeners.count else {
            throw ValidationError("listeners: one listener per security protocol")
        }
        let advertised = config["advertised.listeners"].split(separator: ",").map { $0.trimmedSpaces() }
        if !advertised.isEmpty {
            guard advertised.count == listeners.count else {
                throw ValidationError("advertised.listeners has \(advertised.count) address(es) for \(listeners.count) listener(s): give one per listener, in order")
            }
            for (i, text) in advertised.enumerated() {
                let a = try Listener.parse(text)
                guard !isWildcard(a.host) else { throw ValidationError("advertised.listeners: '\(text)' is not an address clients can connect to") }
                listeners[i].advertisedHost = a.host
                listeners[i].advertisedPort = a.port
            }
        }
        // A listener on every interface cannot advertise 0.0.0.0: clients are told this host's
        // name instead, as Kafka does (set advertised.listeners for anything else).
        for i in listeners.indices where listeners[i].advertisedHost == nil && isWildcard(listeners[i].host) {
            listeners[i].advertisedHost = hostName()
        }
        return listeners
    }

    static func securitySettings(_ config: ServerConfig, listeners: [Listener]) throws -> SecuritySettings {
        let mechanisms = config["sasl.enabled.mechanisms"].split(separator: ",").map { $0.trimmedSpaces().uppercased() }
        for m in mechanisms where !SecuritySettings.supportedMechanisms.contains(m) {
            throw ValidationError("sasl.enabled.mechanisms: '\(m)' is not one of \(SecuritySettings.supportedMechanisms.joined(separator: ", "))")
        }
        if listeners.contains(where: { $0.securityProtocol.usesSASL }) && mechanisms.isEmpty {
            throw ValidationError("sasl.enabled.mechanisms is empty but a SASL listener is configured")
        }
        var security = SecuritySettings(saslMechanisms: mechanisms)
        security.superUsers = config["super.users"].split(separator: ";").map { $0.trimmedSpaces() }.filter { !$0.isEmpty }
        for user in security.superUsers where !user.hasPrefix("User:") {
            throw ValidationError("super.users: '\(user)' is not a principal (User:NAME, or the certificate subject as User:CN=...)")
        }
        let cert = config["ssl.certificate.location"], key = config["ssl.key.location"], ca = config["ssl.ca.location"]
        if !cert.isEmpty || !key.isEmpty {
            guard !cert.isEmpty, !key.isEmpty else { throw ValidationError("TLS needs both a certificate (--tls-cert) and a key (--tls-key)") }
            let authText = config["ssl.client.auth"].isEmpty ? (ca.isEmpty ? "none" : "required") : config["ssl.client.auth"]
            guard let auth = TLSSettings.ClientAuth(rawValue: authText) else { throw ValidationError("ssl.client.auth must be none, requested or required") }
            security.tls = TLSSettings(certificatePath: cert, keyPath: key, caPath: ca.isEmpty ? nil : ca, clientAuth: auth)
        } else if listeners.contains(where: { $0.securityProtocol.usesTLS }) {
            throw ValidationError("an SSL or SASL_SSL listener needs --tls-cert and --tls-key (ssl.certificate.location, ssl.key.location)")
        }
        return security
    }

    static func isWildcard(_ host: String) -> Bool { host.isEmpty || host == "0.0.0.0" || host == "::" }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(cString: buffer)
        return name.isEmpty ? "localhost" : name
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host.hasPrefix("127.") || host == "::1"
    }

    /// Each partition keeps one descriptor (its active log): take the hard limit, as Kafka's
    /// packaging does, and say so when even that is below what max.partitions needs.
    private func raiseDescriptorLimit(for maxPartitions: Int, logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        let needed = rlim_t(maxPartitions + 1024)
        if limit.rlim_cur < needed {
            logger.warning("the open-file limit is below what max.partitions needs (one descriptor per partition plus connections): raise it (ulimit -n) or lower max.partitions",
                           metadata: ["limit": "\(limit.rlim_cur)", "max.partitions": "\(maxPartitions)", "needed": "\(needed)"])
        }
    }

    /// One event for the open, one per partition that needed recovery or has something to say
    /// (at most 50, then a count): a broker of 10,000 partitions must not log 10,000 lines on
    /// every start.
    private func logRecovery(_ broker: Broker, openedInMs: Int, logger: Logger) {
        let manager = broker.logManager
        logger.info("data directory \(broker.dataDirectory) open in \(openedInMs) ms: \(broker.topicNames().count) topic(s), \(manager.partitionNames.count) partition(s)")
        var cleanPartitions = 0
        var recoveredPartitions = 0
        var logged = 0
        var unlogged = 0
        for name in manager.partitionNames {
            guard let report = manager.loadReports[name], let (topic, p) = LogManager.splitPartitionDirectory(name),
                  let log = manager.log(topic: topic, partition: p) else { continue }
            if report.cleanShutdown { cleanPartitions += 1 } else { recoveredPartitions += 1 }
            guard report.segmentsRecovered > 0 || !report.warnings.isEmpty else { continue }
            guard logged < 50 else { unlogged += 1; continue }
            logged += 1
            let fields: Logger.Metadata = [
                "topic": "\(topic)", "partition": "\(p)", "log_start_offset": "\(log.logStartOffset)", "log_end_offset": "\(log.logEndOffset)",
                "segments": "\(report.segments)", "segments_recovered": "\(report.segmentsRecovered)", "bytes_validated": "\(report.bytesValidated)",
            ]
            logger.info("partition recovered", metadata: fields)
            for warning in report.warnings {
                logger.warning("partition recovery", metadata: ["topic": "\(topic)", "partition": "\(p)", "detail": "\(warning)"])
            }
        }
        if unlogged > 0 { logger.info("more partitions recovered or with warnings", metadata: ["count": "\(unlogged)"]) }
        if !manager.partitionNames.isEmpty {
            logger.info("\(cleanPartitions) partition(s) closed cleanly, \(recoveredPartitions) checked after an unclean stop")
        }
        for (name, why) in broker.offlinePartitions.sorted(by: { $0.key < $1.key }) {
            logger.error("partition \(name) is OFFLINE (clients get KAFKA_STORAGE_ERROR; the others serve)", metadata: ["partition": "\(name)", "reason": "\(why)"])
        }
        for orphan in broker.orphanPartitions {
            logger.warning("directory is on disk but belongs to no topic; left alone", metadata: ["directory": "\(orphan)"])
        }
        for warning in broker.transactionRecoveryWarnings { logger.warning("transactions at open", metadata: ["detail": "\(warning)"]) }
        let recovered = broker.transactions.recovered.load(ordering: .relaxed)
        if recovered > 0 { logger.info("completed \(recovered) transaction(s) decided before the last stop") }
    }
}
