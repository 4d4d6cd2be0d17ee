#if canImport(Glibc)
import Glibc
#endif
import StrataBroker
import StrataCore
import StrataLog
import Synchronization

/// Throughput and latency of stream processing on an embedded broker (`strata-streams-bench`).
public enum StreamBenchmarks {
    public struct Options: Sendable {
        public var events = 2_000_000
        public var partitions: Int32 = 1
        /// Latency run: events per second, and for how long.
        public var latencyRate = 20_000
        public var latencySeconds = 5
        public var only: String?
        public init() {}
    }

    public struct Result: Sendable, CustomStringConvertible {
        public var name: String
        public var events: Int
        public var seconds: Double
        public var extra: String
        public var eventsPerSecond: Double { Double(events) / seconds }
        public var description: String {
            "\(name.padRight(34)) \(String(events).leftPad(9)) events in \(fmt(seconds, 2)) s = \(String(Int(eventsPerSecond)).leftPad(9)) events/s \(extra)"
        }
    }

    static func fmt(_ v: Double, _ digits: Int) -> String {
        var p = 1.0
        for _ in 0..<digits { p *= 10 }
        let r = (v * p).rounded() / p
        return "\(r)"
    }

    /// Events like `gen_events.py`: JSON of ~180 bytes, keyed by user (skewed), 1 ms apart.
    static func events(_ range: Range<Int>, startMs: Int64 = 1_759_276_800_000) -> [ProducerRecord] {
        let types = ["page_view", "page_view", "page_view", "page_view", "click", "click", "add_to_cart", "purchase", "search", "login"]
        let countries = ["US", "FR", "BR", "DE", "IN", "JP"]
        return range.map { i in
            var rng = SplitMix64(seed: UInt64(i))
            let r = Double(rng.next() % 1_000_000) / 1_000_000
            let user = "u-\(Int(5000 * r * r * r))"
            let ts = startMs + Int64(i)
            let type = types[Int(rng.next() % UInt64(types.count))]
            let v = "{\"event_type\":\"\(type)\",\"user_id\":\"\(user)\",\"ip\":\"203.0.113.\(rng.next() % 250)\",\"ts\":\(ts),"
                + "\"session_id\":\"s-\(String(rng.next() % 0xFFFF_FFFF, radix: 16))\",\"country\":\"\(countries[Int(rng.next() % 6)])\","
                + "\"amount\":\(type == "purchase" ? "\(rng.next() % 200).99" : "0.0"),\"latency_ms\":\(rng.next() % 300),\"path\":\"/p/\(rng.next() % 500)\"}"
            return ProducerRecord(key: Array(user.utf8), value: Array(v.utf8), timestamp: ts)
        }
    }

    static func load(_ broker: Broker, topic: String, count: Int) throws {
        var i = 0
        while i < count {
            let n = min(4000, count - i)
            try broker.produce(topic: topic, records: events(i..<(i + n)), acks: .leader)
            i += n
        }
        try broker.flush(topic: topic)
    }

    static func openBroker(_ dir: String) throws -> Broker {
        var o = Broker.Options()
        o.retentionCheckIntervalMs = 0
        o.cleanerBackoffMs = 0
        return try Broker.open(dataDirectory: dir, options: o)
    }

    /// Times a topology over `options.events` preloaded input events, from start to caught up.
    static func throughput(_ name: String, dir: String, options: Options, expectedOutput: (Int) -> Bool = { _ in true },
                           _ build: (StreamsBuilder) -> Void) async throws -> Result {
        let broker = try openBroker(dir)
        defer { try? broker.close() }
        try broker.createTopic("events", partitions: options.partitions)
        try broker.createTopic("out", partitions: options.partitions)
        try load(broker, topic: "events", count: options.events)
        let b = StreamsBuilder()
        build(b)
        let app = StreamsApp(applicationId: "bench", topology: try b.build(), broker: broker)
        let start = monotonicNanos()
        try await app.start()
        // Done when every input record went through and its output was produced (woken by the
        // tasks' progress, no polling).
        _ = await app.waitUntilCaughtUp(timeoutMs: 3_600_000)
        let seconds = Double(monotonicNanos() - start) / 1e9
        await app.stop()
        if let e = app.errors.first { throw StreamsError.invalidTopology(e) }
        let out = try broker.describeTopic("out").partitions.reduce(0) { $0 + Int($1.logEndOffset) }
        return Result(name: name, events: options.events, seconds: seconds, extra: "(\(out) output records)")
    }

    /// The same-run baseline for the stateless pipeline: the same work written by hand against
    /// the broker (read batches, re-key by user_id, drop page views, produce in 4000-record
    /// calls), without the library: what the library's tasks, records and commits cost on top.
    static func handWrittenCopy(dir: String, options: Options) throws -> Result {
        let broker = try openBroker(dir)
        defer { try? broker.close() }
        try broker.createTopic("events", partitions: options.partitions)
        try broker.createTopic("out", partitions: options.partitions)
        try load(broker, topic: "events", count: options.events)
        let start = monotonicNanos()
        var produced = 0
        for p in 0..<options.partitions {
            let log = try broker.log(topic: "events", partition: p)
            var next: Int64 = 0
            var pending: [ProducerRecord] = []
            while next < log.logEndOffset {
                let r = try log.read(from: next, maxBytes: 1 << 20)
                guard let slice = r.slice else { break }
                for rec in try Broker.records(in: slice, topic: "events", partition: p, from: next) {
                    guard let v = rec.value else { continue }
                    let record = StreamRecord(key: rec.key, value: v, timestamp: rec.timestamp)
                    guard record.jsonString("event_type") != "page_view" else { continue }
                    pending.append(ProducerRecord(key: record.jsonString("user_id").map { Array($0.utf8) }, value: v, timestamp: rec.timestamp))
                    if pending.count == 4000 {
                        produced += try broker.produce(topic: "out", records: pending, partition: p, acks: .leader).reduce(0) { $0 + $1.recordCount }
                        pending.removeAll(keepingCapacity: true)
                    }
                }
                next = r.nextOffset
            }
            if !pending.isEmpty { produced += try broker.produce(topic: "out", records: pending, partition: p, acks: .leader).reduce(0) { $0 + $1.recordCount } }
        }
        let seconds = Double(monotonicNanos() - start) / 1e9
        return Result(name: "baseline: same by hand, no library", events: options.events, seconds: seconds, extra: "(\(produced) output records)")
    }

    /// Input append → output append latency at a steady rate, through map → filter → to. The
    /// producer stamps each value with its monotonic send time; a consumer woken by the output's
    /// appends computes the difference.
    static func latency(dir: String, options: Options) async throws -> Result {
        let broker = try openBroker(dir)
        defer { try? broker.close() }
        try broker.createTopic("events", partitions: 1)
        try broker.createTopic("out", partitions: 1)
        let b = StreamsBuilder()
        b.stream("events").map { $0 }.filter { $0.value != nil }.to("out")
        let app = StreamsApp(applicationId: "bench-latency", topology: try b.build(), broker: broker)
        try await app.start()
        let total = options.latencyRate * options.latencySeconds
        let consumer = Task { () -> [Int64] in
            var samples: [Int64] = []
            samples.reserveCapacity(total)
            var next: Int64 = 0
            let log = try broker.log(topic: "out", partition: 0)
            while samples.count < total {
                if next == log.logEndOffset { await broker.waitForData([("out", 0, next)], timeoutMs: 1000) }
                let now = monotonicNanos()
                let r = try log.read(from: next, maxBytes: 1 << 20)
                guard let slice = r.slice else { continue }
                try slice.forEachBatch { batch in
                    try batch.forEachRecord { rec in
                        guard rec.offset >= next, let v = rec.value, v.count >= 8 else { return }
                        samples.append(now - v.loadUnaligned(as: Int64.self))
                    }
                }
                next = r.nextOffset
            }
            return samples
        }
        // 1 record per produce call, paced to the rate (bursts of up to 1 ms).
        let began = monotonicNanos()
        var sent = 0
        while sent < total {
            let due = Int((monotonicNanos() - began) * Int64(options.latencyRate) / 1_000_000_000)
            if sent >= due {
                try await Task.sleep(nanoseconds: 200_000)
                continue
            }
            while sent < min(due, total) {
                var v = [UInt8](repeating: 0, count: 64)
                let t = monotonicNanos()
                v.withUnsafeMutableBytes { $0.storeBytes(of: t, as: Int64.self) }
                try broker.produce(topic: "events", records: [ProducerRecord(key: nil, value: v, timestamp: wallClockMillis())], partition: 0, acks: .leader)
                sent += 1
            }
        }
        let samples = try await consumer.value.sorted()
        await app.stop()
        func pct(_ p: Double) -> String { fmt(Double(samples[min(samples.count - 1, Int(Double(samples.count) * p))]) / 1e6, 3) }
        return Result(name: "latency append→append @\(options.latencyRate)/s", events: total,
                      seconds: Double(monotonicNanos() - began) / 1e9,
                      extra: "p50 \(pct(0.50)) ms, p99 \(pct(0.99)) ms, p99.9 \(pct(0.999)) ms, max \(fmt(Double(samples.last ?? 0) / 1e6, 3)) ms")
    }

    /// Runs the benchmarks in fresh directories under `baseDirectory` and returns their results.
    public static func run(baseDirectory: String, options: Options = Options(), print: @Sendable (String) -> Void) async throws -> [Result] {
        var results: [Result] = []
        var n = 0
        func dir() -> String {
            n += 1
            let d = "\(baseDirectory)/run-\(getpid())-\(n)"
            mkdir(baseDirectory, 0o755)
            mkdir(d, 0o755)
            return d
        }
        if options.only == nil || options.only == "stateless" {
            let baseline = try handWrittenCopy(dir: dir(), options: options)
            print(baseline.description)
            results.append(baseline)
            let r = try await throughput("stateless map→filter→to", dir: dir(), options: options) { b in
                b.stream("events")
                    .map { r in r.withKey(r.jsonString("user_id").map { Array($0.utf8) }) }
                    .filter { $0.jsonString("event_type") != "page_view" }
                    .to("out")
            }
            print(r.description + " = \(fmt(r.eventsPerSecond / baseline.eventsPerSecond, 2))× the baseline")
            results.append(r)
        }
        if options.only == nil || options.only == "count" {
            let r = try await throughput("keyed 1-min tumbling count", dir: dir(), options: options) { b in
                b.stream("events").groupByKey()
                    .windowedBy(.tumbling(sizeMs: 60_000))
                    .count("per-minute", emit: .onWindowClose)
                    .toStream().to("out")
            }
            print(r.description)
            results.append(r)
        }
        if options.only == nil || options.only == "latency" {
            let r = try await latency(dir: dir(), options: options)
            print(r.description)
            results.append(r)
        }
        return results
    }
}

@inline(__always) func monotonicNanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
