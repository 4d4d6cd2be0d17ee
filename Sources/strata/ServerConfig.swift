import ArgumentParser
import StrataBroker
import StrataCore

/// `strata serve`'s effective configuration: Kafka `server.properties`-style keys, each with its
/// value and where that came from. Precedence, lowest first: built-in default, the environment
/// (STRATA_DATA), `--config-file`, then flags (`--config KEY=VALUE`, `--listen`, `--data`, ...).
/// Unknown keys are errors that name the key (and the file and line).
struct ServerConfig {
    enum Source: CustomStringConvertible, Equatable {
        case builtIn, environment(String), file(String, line: Int), flag(String)
        var description: String {
            switch self {
            case .builtIn: return "default"
            case .environment(let name): return "env \(name)"
            case .file(let path, let line): return "\(path):\(line)"
            case .flag(let flag): return "flag \(flag)"
            }
        }
    }

    struct Setting {
        let key: String
        let defaultValue: String
        let help: String
    }

    /// Settings of the server itself (listeners, data directory, HTTP, logging, metrics).
    static let serverSettings: [Setting] = [
        .init(key: "listeners", defaultValue: "PLAINTEXT://127.0.0.1:9092", help: "Kafka listeners, comma-separated PROTOCOL://HOST:PORT (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL; port 0 picks a free one)"),
        .init(key: "advertised.listeners", defaultValue: "", help: "what Metadata and FindCoordinator tell clients, one HOST:PORT per listener in order; empty: the listeners'"),
        .init(key: "log.dirs", defaultValue: "./strata-data", help: "the data directory (one; Kafka's log.dir is accepted too)"),
        .init(key: "sasl.enabled.mechanisms", defaultValue: "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512", help: "SASL mechanisms SASL_PLAINTEXT and SASL_SSL listeners accept"),
        .init(key: "super.users", defaultValue: "", help: "principals allowed to manage users on authenticated listeners, ';'-separated (User:admin;User:ops)"),
        .init(key: "ssl.certificate.location", defaultValue: "", help: "TLS certificate chain (PEM) of SSL and SASL_SSL listeners"),
        .init(key: "ssl.key.location", defaultValue: "", help: "TLS private key (PEM)"),
        .init(key: "ssl.ca.location", defaultValue: "", help: "CA certificates (PEM) that sign client certificates (mTLS)"),
        .init(key: "ssl.client.auth", defaultValue: "", help: "none | requested | required (default: required when ssl.ca.location is set)"),
        .init(key: "http.listen", defaultValue: "127.0.0.1:9644", help: "HTTP listener for /metrics, /healthz, /readyz and /v1/groups, HOST:PORT or off"),
        .init(key: "logging.level", defaultValue: "info", help: "trace | debug | info | notice | warning | error | critical"),
        .init(key: "logging.format", defaultValue: "text", help: "text | json (one event per line on stderr)"),
        .init(key: "metrics.max.partition.series", defaultValue: "2000", help: "partitions with their own offset/size series in /metrics (per-topic totals are always complete)"),
        .init(key: "metrics.max.lag.series", defaultValue: "2000", help: "group partitions with their own lag series in /metrics (per-group totals are always complete)"),
    ]

    /// Settings of the broker (Broker.Options).
    static let brokerSettings: [Setting] = [
        .init(key: "num.partitions", defaultValue: "1", help: "partitions of auto-created topics and of CreateTopics without a count"),
        .init(key: "auto.create.topics.enable", defaultValue: "true", help: "create unknown topics on Metadata and Produce"),
        .init(key: "default.replication.factor", defaultValue: "1", help: "a single node keeps one replica: only 1"),
        .init(key: "offsets.topic.num.partitions", defaultValue: "50", help: "partitions of __consumer_offsets"),
        .init(key: "log.retention.check.interval.ms", defaultValue: "300000", help: "period of the retention worker"),
        .init(key: "log.cleaner.backoff.ms", defaultValue: "15000", help: "period of the compaction worker"),
        .init(key: "log.cleaner.io.max.bytes.per.second", defaultValue: "0", help: "compaction read/write budget, 0: unlimited"),
        .init(key: "log.cold.check.interval.ms", defaultValue: "60000", help: "period of the cold-tier worker (topics with cold.after.ms), 0: never"),
        .init(key: "cold.block.cache.bytes", defaultValue: "268435456", help: "decoded cold blocks kept for readers"),
        .init(key: "group.initial.rebalance.delay.ms", defaultValue: "3000", help: "wait for more members before an empty group's first rebalance"),
        .init(key: "max.partitions", defaultValue: "12000", help: "partitions of all topics together"),
        .init(key: "max.partitions.per.topic", defaultValue: "10000", help: "partitions of one topic"),
        .init(key: "max.segment.bytes", defaultValue: "1073741824", help: "largest segment.bytes a topic may set"),
        .init(key: "log.max.open.segments", defaultValue: "4096", help: "closed segments kept mapped"),
        .init(key: "sasl.max.failed.authentications", defaultValue: "5", help: "failed SASL authentications from one address before it is refused for a window"),
        .init(key: "sasl.failed.authentication.window.ms", defaultValue: "60000", help: "that window"),
        .init(key: "transaction.max.timeout.ms", defaultValue: "900000", help: "the longest transaction.timeout.ms a producer may ask for"),
        .init(key: "transactional.id.expiration.ms", defaultValue: "604800000", help: "idle transactional ids are forgotten after this"),
        .init(key: "producer.id.expiration.ms", defaultValue: "86400000", help: "a partition forgets a producer id idle this long (no open transaction)"),
        .init(key: "group.consumer.heartbeat.interval.ms", defaultValue: "5000", help: "KIP-848 groups: how often members heartbeat"),
        .init(key: "group.consumer.session.timeout.ms", defaultValue: "45000", help: "KIP-848 groups: a silent member is removed after this"),
    ]

    /// Kafka's broker-level topic defaults (log.retention.ms, log.segment.bytes, ...), from the
    /// topic-config table, plus the unit aliases Kafka accepts.
    static let topicDefaultSettings: [Setting] = TopicConfig.definitions.compactMap { d in
        d.brokerDefault.map { Setting(key: $0, defaultValue: d.defaultValue, help: "default of topic config \(d.name): \(d.doc)") }
    }
    static let aliases: [String: String] = ["log.dir": "log.dirs"]
    static let unitAliases: Set<String> = ["log.retention.hours", "log.retention.minutes", "log.roll.hours"]

    static var allSettings: [Setting] { serverSettings + brokerSettings + topicDefaultSettings }
    static let known: [String: Setting] = Dictionary(allSettings.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })

    private(set) var values: [String: (value: String, source: Source)] = [:]

    init() {
        for s in Self.allSettings where values[s.key] == nil { values[s.key] = (s.defaultValue, .builtIn) }
    }

    subscript(key: String) -> String { values[key]?.value ?? "" }

    func source(_ key: String) -> Source { values[key]?.source ?? .builtIn }

    /// Whether `key` was set anywhere but the built-in defaults.
    func isSet(_ key: String) -> Bool { source(key) != .builtIn }

    mutating func set(_ key: String, _ value: String, from source: Source) throws {
        let key = Self.aliases[key] ?? key
        guard Self.known[key] != nil || Self.unitAliases.contains(key) else {
            let place: String
            if case .file(let path, let line) = source { place = "\(path):\(line): " } else { place = "" }
            throw ValidationError("\(place)unknown setting '\(key)' (strata serve --print-config lists every setting)")
        }
        values[key] = (value, source)
    }

    /// Reads a `server.properties`-style file: `key=value` (or `key: value`) per line, `#` and `!`
    /// comments, blank lines ignored; a key given twice is an error, as is a line without `=`.
    mutating func load(file path: String) throws {
        guard let text = ProcessEnvironment.readFile(path) else { throw ValidationError("cannot read config file \(path)") }
        var seen: [String: Int] = [:]
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = index + 1
            let line = raw.trimmingTrailingCarriageReturn().trimmedSpaces()
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix("!") { continue }
            guard let separator = line.firstIndex(where: { $0 == "=" || $0 == ":" }) else {
                throw ValidationError("\(path):\(lineNumber): expected key=value, got '\(line.prefix(80))'")
            }
            if line.hasSuffix("\\") { throw ValidationError("\(path):\(lineNumber): line continuations (a trailing backslash) are not supported") }
            let key = line[..<separator].trimmedSpaces()
            let value = line[line.index(after: separator)...].trimmedSpaces()
            if let first = seen[key] { throw ValidationError("\(path):\(lineNumber): '\(key)' is already set on line \(first)") }
            seen[key] = lineNumber
            try set(key, value, from: .file(path, line: lineNumber))
        }
    }

    /// The effective configuration, one `key=value` line each, sorted, with its source.
    func printed() -> String {
        values.keys.sorted().map { key in
            let (value, source) = values[key]!
            return "\(key)=\(value)    # \(source)"
        }.joined(separator: "\n")
    }

    /// The broker-level settings given anywhere (file or flags), for Broker.Options.settings and
    /// the topic-config defaults.
    var brokerSettingsGiven: [String: String] {
        var out: [String: String] = [:]
        for (key, entry) in values where entry.source != .builtIn && !Self.serverSettings.contains(where: { $0.key == key }) {
            out[key] = entry.value
        }
        return out
    }
}

extension StringProtocol {
    func trimmingTrailingCarriageReturn() -> String { hasSuffix("\r") ? String(dropLast()) : String(self) }
    /// Without leading and trailing spaces and tabs.
    func trimmedSpaces() -> String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
