import StrataLog

/// Topic configs under Kafka's names, validated. Unknown keys and bad values are refused with a
/// message naming the key.
public struct TopicConfig: Sendable, Equatable {
    public var log = LogConfig()
    /// retention.ms (-1 = forever). Enforced by the retention worker.
    public var retentionMs: Int64 = 7 * 24 * 3600 * 1000
    /// retention.bytes per partition (-1 = unlimited).
    public var retentionBytes: Int64 = -1
    /// cleanup.policy: delete, compact, or both.
    public var cleanupPolicy = "delete"
    /// value.format: `json` makes produce reject values that are not valid JSON.
    public var valueFormat = "raw"
    /// delete.retention.ms: how long compaction keeps tombstones.
    public var deleteRetentionMs: Int64 = 86_400_000
    /// min.cleanable.dirty.ratio: compaction runs when this share of the closed bytes is uncompacted.
    public var minCleanableDirtyRatio: Double = 0.5
    /// compaction.strategy (+ compaction.window.ms for the windowed one).
    public var compactionStrategy: CompactionStrategy = .keyLatest

    public var requiresJSON: Bool { valueFormat == "json" }

    public static let knownKeys: [String: String] = [
        "retention.ms": "time to keep data, ms (-1: forever)",
        "retention.bytes": "bytes to keep per partition (-1: unlimited)",
        "segment.bytes": "segment size that triggers a roll",
        "segment.ms": "segment age that triggers a roll, ms",
        "cleanup.policy": "delete | compact | delete,compact",
        "max.message.bytes": "largest record batch accepted",
        "flush.mode": "sync | interval | os (see docs/durability.md)",
        "flush.ms": "flush period in interval mode, ms",
        "index.interval.bytes": "bytes between sparse index entries",
        "segment.index.bytes": "preallocated index size; a full index rolls the segment",
        "value.format": "raw | json",
        "delete.retention.ms": "how long compaction keeps tombstones, ms",
        "min.cleanable.dirty.ratio": "share of uncompacted closed bytes that triggers compaction (0...1)",
        "compaction.strategy": "key-latest | key-latest-windowed | size-tiered",
        "compaction.window.ms": "window of key-latest-windowed, ms (default 3600000)",
    ]

    public init() {}

    public struct Problem: Error, CustomStringConvertible, Sendable, Equatable {
        public let key: String
        public let reason: String
        public var description: String { "config \(key): \(reason)" }
    }

    /// Applies `configs` over `base` (the broker defaults, or the topic's current config).
    public static func parse(_ configs: [String: String], over base: TopicConfig = TopicConfig()) throws(Problem) -> TopicConfig {
        var c = base
        for (key, value) in configs.sorted(by: { $0.key < $1.key }) {
            func int(_ range: ClosedRange<Int64>) throws(Problem) -> Int64 {
                guard let v = Int64(value), range.contains(v) else {
                    throw Problem(key: key, reason: "'\(value)' is not an integer in \(range.lowerBound)...\(range.upperBound)")
                }
                return v
            }
            switch key {
            case "retention.ms": c.retentionMs = try int(-1...Int64.max)
            case "retention.bytes": c.retentionBytes = try int(-1...Int64.max)
            case "segment.bytes": c.log.segmentBytes = Int(try int(1024...Int64(Int32.max)))
            case "segment.ms": c.log.segmentMs = try int(1...Int64.max)
            case "max.message.bytes": c.log.maxMessageBytes = Int(try int(Int64(RecordBatch.headerSize)...Int64(Int32.max)))
            case "flush.ms": c.log.flushMs = try int(1...Int64.max)
            case "index.interval.bytes": c.log.indexIntervalBytes = Int(try int(0...Int64(Int32.max)))
            case "segment.index.bytes": c.log.segmentIndexBytes = Int(try int(24...Int64(Int32.max)))
            case "flush.mode":
                guard let m = FlushMode(rawValue: value) else { throw Problem(key: key, reason: "'\(value)' is not one of sync, interval, os") }
                c.log.flushMode = m
            case "cleanup.policy":
                let parts = Set(value.split(separator: ",").map { $0.trimmingCharacters(in: " ") })
                guard !parts.isEmpty, parts.isSubset(of: ["delete", "compact"]) else {
                    throw Problem(key: key, reason: "'\(value)' is not delete, compact or delete,compact")
                }
                c.cleanupPolicy = parts.sorted().joined(separator: ",")
            case "delete.retention.ms": c.deleteRetentionMs = try int(0...Int64.max)
            case "min.cleanable.dirty.ratio":
                guard let r = Double(value), r >= 0, r <= 1 else { throw Problem(key: key, reason: "'\(value)' is not a number in 0...1") }
                c.minCleanableDirtyRatio = r
            case "compaction.strategy":
                switch value {
                case "key-latest": c.compactionStrategy = .keyLatest
                case "size-tiered": c.compactionStrategy = .sizeTiered
                case "key-latest-windowed":
                    let window = configs["compaction.window.ms"].flatMap(Int64.init) ?? 3_600_000
                    c.compactionStrategy = .keyLatestWindowed(windowMs: window)
                default: throw Problem(key: key, reason: "'\(value)' is not key-latest, key-latest-windowed or size-tiered")
                }
            case "compaction.window.ms":
                let w = try int(1...Int64.max)
                if case .keyLatestWindowed = c.compactionStrategy { c.compactionStrategy = .keyLatestWindowed(windowMs: w) }
            case "value.format":
                guard value == "json" || value == "raw" else { throw Problem(key: key, reason: "'\(value)' is not raw or json") }
                c.valueFormat = value
            default:
                throw Problem(key: key, reason: "unknown config (known: \(knownKeys.keys.sorted().joined(separator: ", ")))")
            }
        }
        if c.log.maxMessageBytes > c.log.segmentBytes {
            if configs["max.message.bytes"] != nil {
                throw Problem(key: "max.message.bytes", reason: "must not exceed segment.bytes (\(c.log.segmentBytes))")
            }
            c.log.maxMessageBytes = c.log.segmentBytes  // a small segment.bytes caps the default
        }
        do throws(LogError) { try c.log.validate() } catch { throw Problem(key: "(combination)", reason: error.description) }
        return c
    }

    /// Every config with its effective value, for describe.
    public var effective: [String: String] {
        [
            "retention.ms": String(retentionMs), "retention.bytes": String(retentionBytes),
            "segment.bytes": String(log.segmentBytes), "segment.ms": String(log.segmentMs),
            "cleanup.policy": cleanupPolicy, "max.message.bytes": String(log.maxMessageBytes),
            "flush.mode": log.flushMode.rawValue, "flush.ms": String(log.flushMs),
            "index.interval.bytes": String(log.indexIntervalBytes), "segment.index.bytes": String(log.segmentIndexBytes),
            "value.format": valueFormat,
            "delete.retention.ms": String(deleteRetentionMs), "min.cleanable.dirty.ratio": String(minCleanableDirtyRatio),
            "compaction.strategy": compactionStrategy.name,
        ]
    }
}

extension Substring {
    func trimmingCharacters(in set: Character) -> String {
        String(drop(while: { $0 == set }).reversed().drop(while: { $0 == set }).reversed())
    }
}
