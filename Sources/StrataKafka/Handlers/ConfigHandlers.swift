import StrataBroker
import StrataLog

extension KafkaRequestHandler {
    struct ConfigEntry { var name: String; var value: String; var source: ConfigSource; var type: Int8; var doc: String }

    /// Every topic config with its value and where the value comes from: set on the topic
    /// (TOPIC_CONFIG), a broker setting (STATIC_BROKER_CONFIG), or the default (DEFAULT_CONFIG).
    func topicConfigEntries(overrides: [String: String], config: TopicConfig) -> [ConfigEntry] {
        let effective = config.effective
        return TopicConfig.definitions.map { d in
            let source: ConfigSource
            if overrides[d.name] != nil { source = .topicConfig }
            else if let b = d.brokerDefault, broker.options.settings[b] != nil { source = .staticBrokerConfig }
            else { source = .defaultConfig }
            let type: Int8
            switch d.kind {
            case .long: type = 5
            case .ratio: type = 6
            case .bool: type = 1
            case .choice: type = 2
            case .list: type = 7
            }
            var doc = d.doc
            switch d.effect {
            case .applied: break
            case .noEffectOnOneNode: doc += " (accepted and stored; no effect on a single node)"
            case .governedBy(let what): doc += " (accepted and stored; Strata: \(what))"
            }
            return ConfigEntry(name: d.name, value: effective[d.name] ?? d.defaultValue, source: source, type: type, doc: doc)
        }
    }

    /// The broker resource (its node id, or "" for cluster defaults): the settings a client may
    /// look for, with their sources. All read-only: they change with `serve --config` only.
    func brokerConfigEntries() -> [ConfigEntry] {
        let o = broker.options
        let listener = "PLAINTEXT://\(advertisedHost):\(advertisedPort)"
        var entries: [(String, String, Int8, String)] = [
            ("advertised.listeners", listener, 7, "listener clients are told to connect to"),
            ("listeners", listener, 7, "listener"),
            ("broker.id", String(nodeId), 3, "this node's id"),
            ("node.id", String(nodeId), 3, "this node's id"),
            ("num.partitions", String(o.defaultPartitions), 3, "partitions of an auto-created topic"),
            ("default.replication.factor", "1", 3, "one node keeps one replica"),
            ("auto.create.topics.enable", String(o.autoCreateTopics), 1, "Metadata and Produce create unknown topics"),
            ("log.dirs", broker.logManager.logsDirectory, 7, "where partitions live"),
            ("log.retention.check.interval.ms", String(o.retentionCheckIntervalMs), 5, "retention runs this often"),
            ("log.cleaner.backoff.ms", String(o.cleanerBackoffMs), 5, "the cleaner looks for work this often"),
            ("offsets.topic.num.partitions", String(o.offsetsTopicPartitions), 3, "__consumer_offsets partitions"),
            ("group.initial.rebalance.delay.ms", String(o.initialRebalanceDelayMs), 3, "an empty group's first join waits this long for more members"),
            ("max.partitions", String(o.maxPartitionsPerBroker), 3, "partitions this broker holds in all (Strata)"),
            ("max.partitions.per.topic", String(o.maxPartitionsPerTopic), 3, "partitions one topic may have (Strata)"),
            ("max.segment.bytes", String(o.maxSegmentBytes), 5, "largest segment.bytes a topic may set (Strata)"),
            ("log.max.open.segments", String(MappedSegments.shared.budget), 3, "closed segments kept mapped (Strata)"),
            ("message.max.bytes", String(o.defaultTopicConfig.log.maxMessageBytes), 3, "largest batch (max.message.bytes default)"),
        ]
        // The broker-level defaults of topic configs (log.retention.ms, ...).
        let defaults = o.defaultTopicConfig.effective
        for d in TopicConfig.definitions {
            guard let b = d.brokerDefault, !entries.contains(where: { $0.0 == b }) else { continue }
            entries.append((b, defaults[d.name] ?? d.defaultValue, 2, d.doc))
        }
        return entries.map { name, value, type, doc in
            ConfigEntry(name: name, value: value, source: o.settings[name] != nil ? .staticBrokerConfig : .defaultConfig, type: type, doc: doc)
        }
    }

    func describeConfigs(_ request: DescribeConfigsRequest, _ v: Int16) -> DescribeConfigsResponse {
        DescribeConfigsResponse(results: request.resources.map { res in
            var result = DescribeConfigsResponse.Result(type: res.type, name: res.name, entries: [])
            var entries: [ConfigEntry] = []
            var readOnly = false
            switch ConfigResourceType(rawValue: res.type) {
            case .topic:
                guard let config = broker.topicConfig(res.name), let overrides = broker.topicOverrides(res.name) else {
                    result.errorCode = .unknownTopicOrPartition
                    result.errorMessage = "unknown topic '\(res.name)'"
                    return result
                }
                entries = topicConfigEntries(overrides: overrides, config: config)
            case .broker:
                guard res.name.isEmpty || res.name == String(nodeId) else {
                    result.errorCode = .invalidRequest
                    result.errorMessage = "Unexpected broker id, expected \(nodeId) or empty string, but received \(res.name)"
                    return result
                }
                // "" asks for dynamic cluster-wide defaults, of which there are none.
                entries = res.name.isEmpty ? [] : brokerConfigEntries()
                readOnly = true
            case .brokerLogger, nil:
                result.errorCode = .invalidRequest
                result.errorMessage = "resource type \(res.type) is not supported"
                return result
            }
            if let keys = res.keys { entries = entries.filter { keys.contains($0.name) } }
            result.entries = entries.map { e in
                .init(name: e.name, value: e.value, readOnly: readOnly, source: e.source, type: e.type,
                      documentation: request.includeDocumentation ? e.doc : nil)
            }
            return result
        })
    }

    /// AlterConfigs replaces a topic's whole override set; IncrementalAlterConfigs sets, deletes,
    /// appends to or subtracts from single entries. Broker settings are static (`serve --config`).
    func alterConfigs(_ request: AlterConfigsRequest) -> AlterConfigsResponse {
        AlterConfigsResponse(results: request.resources.map { res in
            guard ConfigResourceType(rawValue: res.type) == .topic else {
                if ConfigResourceType(rawValue: res.type) == .broker {
                    return (.invalidRequest, "broker settings are static in Strata: set them with `strata serve --config KEY=VALUE`", res.type, res.name)
                }
                return (.invalidRequest, "resource type \(res.type) is not supported", res.type, res.name)
            }
            guard let current = broker.topicOverrides(res.name) else { return (.unknownTopicOrPartition, "unknown topic '\(res.name)'", res.type, res.name) }
            var set: [String: String] = [:]
            var remove: [String] = []
            if request.incremental {
                for c in res.configs {
                    switch c.operation ?? .set {
                    case .set:
                        guard let value = c.value else { return (.invalidConfig, "config \(c.name): SET needs a value", res.type, res.name) }
                        set[c.name] = value
                    case .delete:
                        remove.append(c.name)
                    case .append, .subtract:
                        guard let d = TopicConfig.definitionsByName[c.name], case .list = d.kind else {
                            return (.invalidConfig, "config \(c.name) is not a list: APPEND and SUBTRACT apply to lists only", res.type, res.name)
                        }
                        var items = (set[c.name] ?? current[c.name] ?? broker.topicConfig(res.name)?.effective[c.name] ?? "")
                            .split(separator: ",").map(String.init).filter { !$0.isEmpty }
                        let given = (c.value ?? "").split(separator: ",").map(String.init)
                        if c.operation == .append { for g in given where !items.contains(g) { items.append(g) } }
                        else { items.removeAll { given.contains($0) } }
                        set[c.name] = items.joined(separator: ",")
                    }
                }
            } else {
                var nulls: [String] = []
                for c in res.configs { if let value = c.value { set[c.name] = value } else { nulls.append(c.name) } }
                if !nulls.isEmpty { return (.invalidConfig, "Null value not supported for topic configs: \(nulls.joined(separator: ","))", res.type, res.name) }
                remove = current.keys.filter { set[$0] == nil }
            }
            do {
                var merged = current
                for key in remove { merged[key] = nil }
                for (k, v) in set { merged[k] = v }
                _ = try TopicConfig.parse(merged, over: broker.options.defaultTopicConfig)
                if !request.validateOnly { try broker.alterTopicConfigs(res.name, set: set, remove: remove) }
                return (.none, nil, res.type, res.name)
            } catch let problem as TopicConfig.Problem {
                return (.invalidConfig, problem.description, res.type, res.name)
            } catch {
                return (ErrorCode(any: error), "\(error)", res.type, res.name)
            }
        })
    }
}
