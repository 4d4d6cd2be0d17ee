import StrataLog

/// Topic configs under Kafka's names, validated. Every topic config Kafka 4.x defines is accepted
/// (see `TopicConfig.definitions`); Strata adds a few of its own. Unknown keys and bad values are
/// refused with a message naming the key, as Kafka refuses them (INVALID_CONFIG).
public struct TopicConfig: Sendable, Equatable {
    public var log = LogConfig()
    /// retention.ms (-1 = forever). Enforced by the retention worker.
    public var retentionMs: Int64 = 7 * 24 * 3600 * 1000
    /// retention.bytes per partition (-1 = unlimited).
    public var retentionBytes: Int64 = -1
    /// cleanup.policy: delete, compact, or both ("compact,delete" as written in sorted order).
    public var cleanupPolicy = "delete"
    /// value.format: `json` makes produce reject values that are not valid JSON.
    public var valueFormat = "raw"
    /// delete.retention.ms: how long compaction keeps tombstones.
    public var deleteRetentionMs: Int64 = 86_400_000
    /// min.cleanable.dirty.ratio: compaction runs when this share of the closed bytes is uncompacted.
    public var minCleanableDirtyRatio: Double = 0.5
    /// compaction.strategy (+ compaction.window.ms for the windowed one).
    public var compactionStrategy: CompactionStrategy = .keyLatest
    /// min.compaction.lag.ms: records younger than this are never compacted away.
    public var minCompactionLagMs: Int64 = 0
    /// max.compaction.lag.ms: a segment with records older than this is compacted whatever the
    /// dirty ratio.
    public var maxCompactionLagMs: Int64 = .max
    /// compression.type: `producer` stores batches as sent; a codec (or `uncompressed`)
    /// re-encodes every batch on append.
    public var compressionType = "producer"
    /// message.timestamp.*: checked and applied on append.
    public var timestampType: TimestampType = .createTime
    public var timestampBeforeMaxMs: Int64 = .max
    public var timestampAfterMaxMs: Int64 = .max
    /// Every config set explicitly or by a broker default, by Kafka name, as given (for describe).
    public private(set) var values: [String: String] = [:]

    /// query.index.members: value members summarised per block for strata query's pruning.
    public var queryIndexMembers: [String] = []
    /// cold.after.ms: closed segments older than this are rewritten into the cold tier by the
    /// broker's cold worker (-1: never). Age as retention measures it.
    public var coldAfterMs: Int64 = -1
    /// cold.fetch.compression: how batches read from cold segments are compressed for readers.
    public var coldFetchCompression: CompressionCodec = .none

    public var requiresJSON: Bool { valueFormat == "json" }
    public var isCompacted: Bool { cleanupPolicy.contains("compact") }

    /// What an append checks for this topic.
    public var appendPolicy: AppendPolicy {
        var p = AppendPolicy()
        p.timestampType = timestampType
        p.timestampBeforeMaxMs = timestampBeforeMaxMs
        p.timestampAfterMaxMs = timestampAfterMaxMs
        p.requireKeys = isCompacted
        p.recompression = recompression
        return p
    }

    /// The codec batches are re-encoded with on append, nil for `producer` (stored as sent).
    public var recompression: CompressionCodec? {
        switch compressionType {
        case "uncompressed": return CompressionCodec.none
        case "gzip": return .gzip
        case "snappy": return .snappy
        case "lz4": return .lz4
        case "zstd": return .zstd
        default: return nil
        }
    }

    public init() {}

    public struct Problem: Error, CustomStringConvertible, Sendable, Equatable {
        public let key: String
        public let reason: String
        public var description: String { "config \(key): \(reason)" }
    }

    /// How a config is validated and what it does on one node.
    public enum Effect: Sendable, Equatable {
        /// Changes what Strata does.
        case applied
        /// Only meaningful with replication or tiered storage: accepted, stored, reported; no effect.
        case noEffectOnOneNode
        /// Accepted, stored and reported; Strata's own setting governs (the text says which).
        case governedBy(String)
    }

    public enum Kind: Sendable, Equatable {
        case long(ClosedRange<Int64>)
        case ratio
        case bool
        case choice([String])
        case list([String]?)  // allowed items, nil: any
    }

    public struct Definition: Sendable {
        public let name: String
        public let kind: Kind
        public let defaultValue: String
        /// The broker setting that supplies the default (Kafka's `log.*` names), if any.
        public let brokerDefault: String?
        public let effect: Effect
        public let doc: String
    }

    static let longMax = String(Int64.max)

    /// Kafka 4.x's topic configs (TopicConfig / LogConfig) and Strata's own, in one table: the
    /// single place a name, its validation, its default and its broker-level default are written.
    public static let definitions: [Definition] = [
        .init(name: "cleanup.policy", kind: .list(["delete", "compact"]), defaultValue: "delete", brokerDefault: "log.cleanup.policy", effect: .applied, doc: "delete | compact | compact,delete"),
        .init(name: "compression.type", kind: .choice(["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]), defaultValue: "producer", brokerDefault: "compression.type", effect: .applied, doc: "producer keeps batches as sent; a codec re-encodes on append"),
        .init(name: "compression.gzip.level", kind: .long(-1...9), defaultValue: "-1", brokerDefault: "compression.gzip.level", effect: .governedBy("the codec libraries' default levels"), doc: "gzip level when re-encoding"),
        .init(name: "compression.lz4.level", kind: .long(1...17), defaultValue: "9", brokerDefault: "compression.lz4.level", effect: .governedBy("the codec libraries' default levels"), doc: "lz4 level when re-encoding"),
        .init(name: "compression.zstd.level", kind: .long(-131_072...22), defaultValue: "3", brokerDefault: "compression.zstd.level", effect: .governedBy("the codec libraries' default levels"), doc: "zstd level when re-encoding"),
        .init(name: "delete.retention.ms", kind: .long(0...Int64.max), defaultValue: "86400000", brokerDefault: "log.cleaner.delete.retention.ms", effect: .applied, doc: "how long compaction keeps tombstones, ms"),
        .init(name: "file.delete.delay.ms", kind: .long(0...Int64.max), defaultValue: "60000", brokerDefault: "log.segment.delete.delay.ms", effect: .governedBy("segments are unlinked when their last reader finishes"), doc: "delay before deleted segment files are removed"),
        .init(name: "flush.messages", kind: .long(1...Int64.max), defaultValue: longMax, brokerDefault: "log.flush.interval.messages", effect: .governedBy("flush.mode"), doc: "messages between fsyncs"),
        .init(name: "flush.ms", kind: .long(1...Int64.max), defaultValue: "1000", brokerDefault: "log.flush.interval.ms", effect: .applied, doc: "flush period in flush.mode=interval, ms"),
        .init(name: "follower.replication.throttled.replicas", kind: .list(nil), defaultValue: "", brokerDefault: nil, effect: .noEffectOnOneNode, doc: "replication throttling"),
        .init(name: "index.interval.bytes", kind: .long(0...Int64(Int32.max)), defaultValue: "4096", brokerDefault: "log.index.interval.bytes", effect: .applied, doc: "bytes between sparse index entries"),
        .init(name: "leader.replication.throttled.replicas", kind: .list(nil), defaultValue: "", brokerDefault: nil, effect: .noEffectOnOneNode, doc: "replication throttling"),
        .init(name: "local.retention.bytes", kind: .long(-2...Int64.max), defaultValue: "-2", brokerDefault: "log.local.retention.bytes", effect: .noEffectOnOneNode, doc: "tiered storage"),
        .init(name: "local.retention.ms", kind: .long(-2...Int64.max), defaultValue: "-2", brokerDefault: "log.local.retention.ms", effect: .noEffectOnOneNode, doc: "tiered storage"),
        .init(name: "max.compaction.lag.ms", kind: .long(1...Int64.max), defaultValue: longMax, brokerDefault: "log.cleaner.max.compaction.lag.ms", effect: .applied, doc: "records older than this are compacted whatever the dirty ratio, ms"),
        .init(name: "max.message.bytes", kind: .long(Int64(RecordBatch.headerSize)...Int64(Int32.max)), defaultValue: "1048588", brokerDefault: "message.max.bytes", effect: .applied, doc: "largest record batch accepted"),
        .init(name: "message.downconversion.enable", kind: .bool, defaultValue: "true", brokerDefault: "log.message.downconversion.enable", effect: .applied, doc: "down-conversion for old consumers: false answers Fetch v0-v3 with UNSUPPORTED_VERSION (removed in Kafka 4.0)"),
        .init(name: "message.format.version", kind: .list(nil), defaultValue: "3.0-IV1", brokerDefault: "log.message.format.version", effect: .governedBy("RecordBatch v2 is always stored (removed in Kafka 4.0; accepted for older tools)"), doc: "message format"),
        .init(name: "message.timestamp.after.max.ms", kind: .long(0...Int64.max), defaultValue: longMax, brokerDefault: "log.message.timestamp.after.max.ms", effect: .applied, doc: "how far a CreateTime may be in the future, ms"),
        .init(name: "message.timestamp.before.max.ms", kind: .long(0...Int64.max), defaultValue: longMax, brokerDefault: "log.message.timestamp.before.max.ms", effect: .applied, doc: "how far a CreateTime may be in the past, ms"),
        .init(name: "message.timestamp.difference.max.ms", kind: .long(0...Int64.max), defaultValue: longMax, brokerDefault: "log.message.timestamp.difference.max.ms", effect: .applied, doc: "older name: sets both bounds above"),
        .init(name: "message.timestamp.type", kind: .choice(["CreateTime", "LogAppendTime"]), defaultValue: "CreateTime", brokerDefault: "log.message.timestamp.type", effect: .applied, doc: "CreateTime | LogAppendTime"),
        .init(name: "min.cleanable.dirty.ratio", kind: .ratio, defaultValue: "0.5", brokerDefault: "log.cleaner.min.cleanable.ratio", effect: .applied, doc: "share of uncompacted closed bytes that triggers compaction (0...1)"),
        .init(name: "min.compaction.lag.ms", kind: .long(0...Int64.max), defaultValue: "0", brokerDefault: "log.cleaner.min.compaction.lag.ms", effect: .applied, doc: "records younger than this are not compacted, ms"),
        .init(name: "min.insync.replicas", kind: .long(1...Int64(Int32.max)), defaultValue: "1", brokerDefault: "min.insync.replicas", effect: .noEffectOnOneNode, doc: "replication"),
        .init(name: "preallocate", kind: .bool, defaultValue: "false", brokerDefault: "log.preallocate", effect: .governedBy("segment files are reserved in steps ahead of the data (segment.reserve.step.bytes)"), doc: "preallocate segment files"),
        .init(name: "remote.log.copy.disable", kind: .bool, defaultValue: "false", brokerDefault: nil, effect: .noEffectOnOneNode, doc: "tiered storage"),
        .init(name: "remote.log.delete.on.disable", kind: .bool, defaultValue: "false", brokerDefault: nil, effect: .noEffectOnOneNode, doc: "tiered storage"),
        .init(name: "remote.storage.enable", kind: .choice(["false"]), defaultValue: "false", brokerDefault: nil, effect: .noEffectOnOneNode, doc: "tiered storage (not available: only false)"),
        .init(name: "retention.bytes", kind: .long(-1...Int64.max), defaultValue: "-1", brokerDefault: "log.retention.bytes", effect: .applied, doc: "bytes to keep per partition (-1: unlimited)"),
        .init(name: "retention.ms", kind: .long(-1...Int64.max), defaultValue: "604800000", brokerDefault: "log.retention.ms", effect: .applied, doc: "time to keep data, ms (-1: forever)"),
        .init(name: "segment.bytes", kind: .long(1024...Int64(Int32.max)), defaultValue: "134217728", brokerDefault: "log.segment.bytes", effect: .applied, doc: "segment size that triggers a roll"),
        .init(name: "segment.index.bytes", kind: .long(24...Int64(Int32.max)), defaultValue: "10485760", brokerDefault: "log.index.size.max.bytes", effect: .applied, doc: "most bytes of each index (reserved in steps); a full index rolls the segment"),
        .init(name: "segment.jitter.ms", kind: .long(0...Int64.max), defaultValue: "0", brokerDefault: "log.roll.jitter.ms", effect: .applied, doc: "random amount subtracted from segment.ms per segment, ms"),
        .init(name: "segment.ms", kind: .long(1...Int64.max), defaultValue: "604800000", brokerDefault: "log.roll.ms", effect: .applied, doc: "segment age that triggers a roll, ms"),
        .init(name: "unclean.leader.election.enable", kind: .bool, defaultValue: "false", brokerDefault: "unclean.leader.election.enable", effect: .noEffectOnOneNode, doc: "replication"),
        // Strata's own.
        .init(name: "flush.mode", kind: .choice(["sync", "interval", "os"]), defaultValue: "sync", brokerDefault: "log.flush.mode", effect: .applied, doc: "sync | interval | os (see docs/durability.md)"),
        .init(name: "segment.reserve.step.bytes", kind: .long(4096...1 << 30), defaultValue: "8388608", brokerDefault: "log.segment.reserve.step.bytes", effect: .applied, doc: "largest step by which the active segment's file grows ahead of its data (fallocate)"),
        .init(name: "value.format", kind: .choice(["raw", "json"]), defaultValue: "raw", brokerDefault: nil, effect: .applied, doc: "raw | json"),
        .init(name: "compaction.strategy", kind: .choice(["key-latest", "key-latest-windowed", "size-tiered"]), defaultValue: "key-latest", brokerDefault: nil, effect: .applied, doc: "key-latest | key-latest-windowed | size-tiered"),
        .init(name: "compaction.window.ms", kind: .long(1...Int64.max), defaultValue: "3600000", brokerDefault: nil, effect: .applied, doc: "window of key-latest-windowed, ms"),
        .init(name: "cold.after.ms", kind: .long(-1...Int64.max), defaultValue: "-1", brokerDefault: "log.cold.after.ms", effect: .applied, doc: "closed segments older than this move to the cold tier, a columnar format ~10x smaller that still serves every reader (-1: never; docs/retention.md)"),
        .init(name: "cold.fetch.compression", kind: .choice(["none", "zstd"]), defaultValue: "none", brokerDefault: "log.cold.fetch.compression", effect: .applied, doc: "none | zstd: how batches read from cold segments are compressed for consumers"),
        .init(name: "query.index.members", kind: .list(nil), defaultValue: "", brokerDefault: nil, effect: .applied, doc: "JSON members of the value (user_id, geo.city, items[0].sku; up to 8) whose values get a Bloom filter per block of closed segments, so strata query skips blocks (docs/query.md)"),
    ]

    public static let definitionsByName: [String: Definition] = Dictionary(uniqueKeysWithValues: definitions.map { ($0.name, $0) })

    /// Kafka's broker setting name → topic config name (`log.retention.ms` → `retention.ms`).
    public static let topicKeyForBrokerKey: [String: String] = {
        var map: [String: String] = [:]
        for d in definitions { if let b = d.brokerDefault { map[b] = d.name } }
        map["log.retention.hours"] = "retention.ms"
        map["log.retention.minutes"] = "retention.ms"
        map["log.roll.hours"] = "segment.ms"
        return map
    }()

    public static var knownKeys: [String: String] { Dictionary(uniqueKeysWithValues: definitions.map { ($0.name, $0.doc) }) }

    /// Checks one value against its definition; returns it normalised (lists trimmed).
    static func check(_ key: String, _ value: String) throws(Problem) -> String {
        guard let d = definitionsByName[key] else {
            throw Problem(key: key, reason: "unknown topic config (Kafka's topic configs and Strata's flush.mode, value.format, compaction.strategy, compaction.window.ms, query.index.members are known)")
        }
        switch d.kind {
        case .long(let range):
            guard let v = Int64(value), range.contains(v) else {
                throw Problem(key: key, reason: "'\(value.prefix(64))' is not an integer in \(range.lowerBound)...\(range.upperBound)")
            }
        case .ratio:
            guard let r = Double(value), r >= 0, r <= 1 else { throw Problem(key: key, reason: "'\(value.prefix(64))' is not a number in 0...1") }
        case .bool:
            guard value == "true" || value == "false" else { throw Problem(key: key, reason: "'\(value.prefix(64))' is not true or false") }
        case .choice(let allowed):
            guard allowed.contains(value) else { throw Problem(key: key, reason: "'\(value.prefix(64))' is not one of \(allowed.joined(separator: ", "))") }
        case .list(let allowed):
            let items = value.split(separator: ",").map { $0.trimmingCharacters(in: " ") }.filter { !$0.isEmpty }
            if let allowed {
                guard !items.isEmpty, items.allSatisfy(allowed.contains) else {
                    throw Problem(key: key, reason: "'\(value.prefix(64))' is not a list of \(allowed.joined(separator: ", "))")
                }
                return Array(Set(items)).sorted().joined(separator: ",")
            }
            return items.joined(separator: ",")
        }
        return value
    }

    /// Applies `configs` over `base` (the broker defaults, or the topic's current config).
    public static func parse(_ configs: [String: String], over base: TopicConfig = TopicConfig()) throws(Problem) -> TopicConfig {
        var c = base
        // The older combined bound first, so that the two explicit ones win when both are given.
        let ordered = configs.sorted { a, b in
            let (pa, pb) = (a.key == "message.timestamp.difference.max.ms" ? 0 : 1, b.key == "message.timestamp.difference.max.ms" ? 0 : 1)
            return pa != pb ? pa < pb : a.key < b.key
        }
        for (key, raw) in ordered {
            let value = try check(key, raw)
            c.values[key] = value
            let long = Int64(value) ?? 0
            switch key {
            case "retention.ms": c.retentionMs = long
            case "retention.bytes": c.retentionBytes = long
            case "segment.bytes": c.log.segmentBytes = Int(long)
            case "segment.ms": c.log.segmentMs = long
            case "segment.jitter.ms": c.log.segmentJitterMs = long
            case "max.message.bytes": c.log.maxMessageBytes = Int(long)
            case "flush.ms": c.log.flushMs = long
            case "index.interval.bytes": c.log.indexIntervalBytes = Int(long)
            case "segment.index.bytes": c.log.segmentIndexBytes = Int(long)
            case "segment.reserve.step.bytes": c.log.reserveStepBytes = Int(long)
            case "flush.mode": c.log.flushMode = FlushMode(rawValue: value) ?? .sync
            case "cleanup.policy": c.cleanupPolicy = value
            case "delete.retention.ms": c.deleteRetentionMs = long
            case "min.cleanable.dirty.ratio": c.minCleanableDirtyRatio = Double(value) ?? 0.5
            case "min.compaction.lag.ms": c.minCompactionLagMs = long
            case "max.compaction.lag.ms": c.maxCompactionLagMs = long
            case "compression.type": c.compressionType = value
            case "message.timestamp.type": c.timestampType = TimestampType(rawValue: value) ?? .createTime
            case "message.timestamp.before.max.ms": c.timestampBeforeMaxMs = long
            case "message.timestamp.after.max.ms": c.timestampAfterMaxMs = long
            case "message.timestamp.difference.max.ms":
                c.timestampBeforeMaxMs = long
                c.timestampAfterMaxMs = long
            case "compaction.strategy":
                switch value {
                case "size-tiered": c.compactionStrategy = .sizeTiered
                case "key-latest-windowed":
                    let window = configs["compaction.window.ms"].flatMap(Int64.init) ?? 3_600_000
                    c.compactionStrategy = .keyLatestWindowed(windowMs: max(1, window))
                default: c.compactionStrategy = .keyLatest
                }
            case "compaction.window.ms":
                if case .keyLatestWindowed = c.compactionStrategy { c.compactionStrategy = .keyLatestWindowed(windowMs: long) }
            case "value.format": c.valueFormat = value
            case "cold.after.ms": c.coldAfterMs = long
            case "cold.fetch.compression": c.coldFetchCompression = value == "zstd" ? .zstd : .none
            case "query.index.members":
                let members = value.split(separator: ",").map(String.init)
                guard members.count <= 8 else { throw Problem(key: key, reason: "at most 8 members, not \(members.count)") }
                for m in members where m.utf8.count > 200 || m.contains(where: { $0 == "\"" || $0 == "'" || $0 == "$" || $0.isWhitespace }) {
                    throw Problem(key: key, reason: "'\(m.prefix(64))' is not a member name or path (user_id, geo.city, items[0].sku)")
                }
                c.queryIndexMembers = members
            default: break  // accepted and stored (see the table's effect)
            }
        }
        if c.log.maxMessageBytes > c.log.segmentBytes {
            if configs["max.message.bytes"] != nil {
                throw Problem(key: "max.message.bytes", reason: "must not exceed segment.bytes (\(c.log.segmentBytes))")
            }
            c.log.maxMessageBytes = c.log.segmentBytes  // a small segment.bytes caps the default
        }
        if c.minCompactionLagMs > c.maxCompactionLagMs {
            throw Problem(key: "min.compaction.lag.ms", reason: "must not exceed max.compaction.lag.ms (\(c.maxCompactionLagMs))")
        }
        do throws(LogError) { try c.log.validate() } catch { throw Problem(key: "(combination)", reason: error.description) }
        return c
    }

    /// Every config with its effective value, for describe.
    public var effective: [String: String] {
        var all: [String: String] = [:]
        for d in Self.definitions { all[d.name] = values[d.name] ?? d.defaultValue }
        all["retention.ms"] = String(retentionMs)
        all["retention.bytes"] = String(retentionBytes)
        all["segment.bytes"] = String(log.segmentBytes)
        all["segment.ms"] = String(log.segmentMs)
        all["segment.jitter.ms"] = String(log.segmentJitterMs)
        all["cleanup.policy"] = cleanupPolicy
        all["max.message.bytes"] = String(log.maxMessageBytes)
        all["flush.mode"] = log.flushMode.rawValue
        all["flush.ms"] = String(log.flushMs)
        all["index.interval.bytes"] = String(log.indexIntervalBytes)
        all["segment.index.bytes"] = String(log.segmentIndexBytes)
        all["value.format"] = valueFormat
        all["delete.retention.ms"] = String(deleteRetentionMs)
        all["min.cleanable.dirty.ratio"] = String(minCleanableDirtyRatio)
        all["compaction.strategy"] = compactionStrategy.name
        all["min.compaction.lag.ms"] = String(minCompactionLagMs)
        all["max.compaction.lag.ms"] = String(maxCompactionLagMs)
        all["compression.type"] = compressionType
        all["message.timestamp.type"] = timestampType.rawValue
        all["message.timestamp.before.max.ms"] = String(timestampBeforeMaxMs)
        all["message.timestamp.after.max.ms"] = String(timestampAfterMaxMs)
        return all
    }

    /// Applies Kafka broker settings (`log.retention.ms=...`) as topic-config defaults.
    public static func brokerDefaults(_ settings: [String: String]) throws(Problem) -> TopicConfig {
        var topic: [String: String] = [:]
        for (key, value) in settings {
            guard let name = topicKeyForBrokerKey[key] else { continue }
            switch key {
            case "log.retention.hours", "log.roll.hours":
                guard let h = Int64(value), h >= -1, h < Int64.max / 3_600_000 else { throw Problem(key: key, reason: "'\(value)' is not a number of hours") }
                topic[name] = String(h < 0 ? -1 : h * 3_600_000)
            case "log.retention.minutes":
                guard let m = Int64(value), m >= -1, m < Int64.max / 60_000 else { throw Problem(key: key, reason: "'\(value)' is not a number of minutes") }
                topic[name] = String(m < 0 ? -1 : m * 60_000)
            default:
                topic[name] = value
            }
        }
        var config = try parse(topic)
        config.values = [:]  // broker defaults are not topic overrides
        return config
    }
}

extension Substring {
    func trimmingCharacters(in set: Character) -> String {
        String(drop(while: { $0 == set }).reversed().drop(while: { $0 == set }).reversed())
    }
}
