#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import NIOCore
import StrataCore
import StrataKafka
import StrataLog
import Synchronization

/// Kafka-protocol benchmarks from Swift, like Kafka's perf-test tools: point them at any broker
/// (`strata serve` or Kafka) with --bootstrap.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure a Kafka-protocol broker: produce, consume, end-to-end latency.",
        subcommands: [ProduceBench.self, ConsumeBench.self, EndToEnd.self])

    struct Target: ParsableArguments {
        @Option(help: "Topic (created with one partition if missing).") var topic: String = "strata-bench"
        @OptionGroup var client: ClientOptions

        var bootstrap: String { client.bootstrap }
        func connect(_ id: String) throws -> KafkaClient { try client.connect(id) }
    }

    static func acksValue(_ text: String) throws -> Int16 {
        switch text {
        case "0": return 0
        case "1": return 1
        case "all", "-1": return -1
        default: throw ValidationError("--acks must be 0, 1 or all")
        }
    }

    /// A ~200-byte JSON event like gen_events.py's.
    static func event(_ i: Int) -> [UInt8] {
        var s = "{\"event_type\":\"page_view\",\"user_id\":\"u-\(i % 100_000)\",\"seq\":\(i),\"country\":\"DE\",\"path\":\"/p/\(i % 997)\",\"pad\":\""
        s += String(repeating: "x", count: max(0, 198 - s.utf8.count)) + "\"}"
        return Array(s.utf8)
    }

    /// Creates `topic` with `partitions` partitions unless it exists (then it must have that many).
    static func ensureTopic(_ client: KafkaClient, _ topic: String, partitions: Int) throws {
        let existing = try client.topics().first { $0.name == topic }
        if let existing {
            guard existing.partitions >= partitions else { throw CLIError("topic '\(topic)' has \(existing.partitions) partitions, fewer than --partitions \(partitions)") }
            return
        }
        if let error = try client.createTopic(topic, partitions: Int32(partitions), configs: [:]) {
            throw CLIError("cannot create topic '\(topic)': \(error)")
        }
    }

    static func percentiles(_ samples: [Double]) -> String {
        guard !samples.isEmpty else { return "no samples" }
        let s = samples.sorted()
        func at(_ q: Double) -> Double { s[min(s.count - 1, Int(q * Double(s.count)))] }
        func f(_ v: Double) -> String { String((v * 1000).rounded() / 1000) }
        return "p50 \(f(at(0.5))) ms, p90 \(f(at(0.9))) ms, p99 \(f(at(0.99))) ms, p99.9 \(f(at(0.999))) ms, max \(f(s.last!)) ms"
    }

    struct ProduceBench: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "produce")
        @OptionGroup var target: Target
        @Option(help: "Events to send.") var events: Int = 1_000_000
        @Option(help: "Events per batch (one Produce request each).") var batch: Int = 1000
        @Option(help: "Requests in flight on the connection.") var inflight: Int = 8
        @Option(help: "0, 1 or all.") var acks: String = "1"
        @Option(help: "Partitions to spread the batches over, round-robin (the topic is created with them if missing).") var partitions: Int = 1

        func run() throws {
            let acks = try Bench.acksValue(self.acks)
            guard partitions >= 1, partitions <= 10_000 else { throw ValidationError("--partitions must be in 1...10000") }
            let client = try target.connect("strata-bench-produce")
            try Bench.ensureTopic(client, target.topic, partitions: partitions)
            // Batches are built before the clock starts: this measures the broker, not the encoder.
            let batchCount = (events + batch - 1) / batch
            let templates = (0..<min(batchCount, 16)).map { b in
                RecordBatchBuilder.build((0..<batch).map { i in ProducerRecord(key: Array("u-\(i % 1000)".utf8), value: Bench.event(b * batch + i), timestamp: wallClockMillis()) })
            }
            var sentAt: [Int32: Double] = [:]
            var latencies: [Double] = []
            var inFlight = 0
            var bytes = 0
            let started = nowSeconds()
            for b in 0..<batchCount {
                let payload = templates[b % templates.count]
                let id = try client.sendProduce(topic: target.topic, partition: Int32(b % partitions), batch: payload, acks: acks)
                bytes += payload.count
                if acks == 0 { continue }
                sentAt[id] = nowSeconds()
                inFlight += 1
                while inFlight >= inflight {
                    try receiveOne(client, &sentAt, &latencies)
                    inFlight -= 1
                }
            }
            while inFlight > 0 {
                try receiveOne(client, &sentAt, &latencies)
                inFlight -= 1
            }
            let seconds = nowSeconds() - started
            let n = batchCount * batch
            print("produce: \(n) events, \(bytes / 1_000_000) MB in \((seconds * 1000).rounded() / 1000) s: \(formatRate(Double(n), seconds: seconds)) events/s, \(Int(Double(bytes) / seconds / 1e6)) MB/s; acks=\(acks), batch \(batch), in flight \(inflight), \(partitions) partition(s)")
            if acks != 0 { print("produce request latency: \(Bench.percentiles(latencies))") }
        }

        private func receiveOne(_ client: KafkaClient, _ sentAt: inout [Int32: Double], _ latencies: inout [Double]) throws {
            let (id, body) = try client.receive()
            if let t = sentAt.removeValue(forKey: id) { latencies.append((nowSeconds() - t) * 1000) }
            let (error, _) = try KafkaClient.parseProduce(body)
            guard error == 0 else { throw CLIError("produce failed with Kafka error \(error)") }
        }
    }

    struct ConsumeBench: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "consume")
        @OptionGroup var target: Target
        @Option(help: "Bytes per Fetch.") var fetchBytes: Int32 = 4 << 20
        @Option(help: "Partitions to read, each to its end.") var partitions: Int = 1
        @Option(help: "Partitions per Fetch request (0: all unfinished ones, as a consumer assigned them all sends it); the order rotates between requests.")
        var perFetch: Int = 0
        @Option(help: "Bytes per partition in a multi-partition Fetch.") var partitionFetchBytes: Int32 = 1 << 20

        func run() throws {
            guard partitions >= 1, partitions <= 10_000 else { throw ValidationError("--partitions must be in 1...10000") }
            guard perFetch >= 0 else { throw ValidationError("--per-fetch must be 0 or more") }
            let client = try target.connect("strata-bench-consume")
            var offsets = [Int64](repeating: 0, count: partitions)
            var unfinished = Array(0..<partitions)
            var records = 0
            var bytes = 0
            var requests = 0
            var rotation = 0
            let started = nowSeconds()
            while !unfinished.isEmpty {
                let take = perFetch == 0 ? unfinished.count : min(perFetch, unfinished.count)
                rotation %= unfinished.count
                let chosen = (0..<take).map { unfinished[(rotation + $0) % unfinished.count] }
                rotation += take
                let answers = try client.fetch(topic: target.topic, positions: chosen.map { (Int32($0), offsets[$0]) },
                                               partitionMaxBytes: partitionFetchBytes, maxBytes: fetchBytes)
                requests += 1
                var finished = Set<Int>()
                for answer in answers {
                    let p = Int(answer.partition)
                    guard p >= 0, p < partitions else { throw CLIError("fetch answered partition \(p), which was not asked for") }
                    guard answer.error == 0 else { throw CLIError("fetch of partition \(p) failed with Kafka error \(answer.error)") }
                    var offset = offsets[p]
                    bytes += answer.batches.readableBytes
                    answer.batches.withUnsafeReadableBytes { b in
                        var position = 0
                        while position < b.count, let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: b[position...])), position + size <= b.count {
                            let batch = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: b[position..<position + size]))
                            if batch.lastOffset >= offset {
                                records += Int(batch.lastOffset - max(batch.baseOffset, offset) + 1)
                                offset = batch.nextOffset
                            }
                            position += size
                        }
                    }
                    offsets[p] = offset
                    if offset >= answer.highWatermark { finished.insert(p) }
                }
                if !finished.isEmpty { unfinished.removeAll { finished.contains($0) } }
            }
            let seconds = nowSeconds() - started
            print("consume: \(records) events, \(bytes / 1_000_000) MB in \((seconds * 1000).rounded() / 1000) s: \(formatRate(Double(records), seconds: seconds)) events/s, \(Int(Double(bytes) / seconds / 1e6)) MB/s, \(partitions) partition(s), \(requests) Fetch requests")
        }
    }

    struct EndToEnd: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "e2e")
        @OptionGroup var target: Target
        @Option(help: "Events per second.") var rate: Int = 10_000
        @Option(help: "Seconds to run.") var seconds: Int = 10
        @Option(help: "0, 1 or all.") var acks: String = "1"

        func run() throws {
            let acks = try Bench.acksValue(self.acks)
            let producer = try target.connect("strata-bench-e2e-producer")
            let consumer = try target.connect("strata-bench-e2e-consumer")
            _ = try producer.partitionCount(topic: target.topic)
            var start: Int64 = 0
            while true {  // the current end: measure only what is sent from now on
                let (error, hw, _) = try consumer.fetch(topic: target.topic, partition: 0, offset: Int64.max / 2, maxBytes: 1, maxWaitMs: 0)
                if error == 1 || error == 0 { start = hw; break }
            }
            let total = rate * seconds
            let firstOffset = start
            let runSeconds = seconds
            let latencies = Mutex<[Double]>([])
            let group = ThreadGroup()
            let topic = target.topic
            group.spawn {
                var offset = firstOffset
                var received = 0
                let deadline = nowSeconds() + Double(runSeconds) + 30
                while received < total && nowSeconds() < deadline {
                    guard let (_, _, batches) = try? consumer.fetch(topic: topic, partition: 0, offset: offset, maxBytes: 1 << 20, maxWaitMs: 500) else { return }
                    let now = wallClockNanos()
                    batches.withUnsafeReadableBytes { p in
                        var position = 0
                        while position < p.count, let size = RecordBatch.declaredSize(at: UnsafeRawBufferPointer(rebasing: p[position...])), position + size <= p.count {
                            let b = RecordBatch(unchecked: UnsafeRawBufferPointer(rebasing: p[position..<position + size]))
                            try? b.forEachRecord { r in
                                guard r.offset >= offset, let v = r.value, v.count >= 19,
                                      let sent = Int64(String(decoding: v[0..<19], as: UTF8.self)) else { return }
                                let ms = Double(now - sent) / 1e6
                                latencies.withLock { $0.append(ms) }
                                received += 1
                            }
                            offset = max(offset, b.nextOffset)
                            position += size
                        }
                    }
                }
            }
            let pad = [UInt8](repeating: UInt8(ascii: "x"), count: 180)
            let began = nowSeconds()
            var pending = 0
            for i in 0..<total {
                let due = began + Double(i) / Double(rate)
                let ahead = due - nowSeconds()
                if ahead > 0.0005 { usleep(UInt32(ahead * 1e6)) }
                let stamp = String(wallClockNanos())
                let value = Array(String(repeating: "0", count: max(0, 19 - stamp.count)).utf8) + Array(stamp.utf8) + pad
                let batch = RecordBatchBuilder.build([ProducerRecord(value: value, timestamp: wallClockMillis())])
                _ = try producer.sendProduce(topic: topic, partition: 0, batch: batch, acks: acks)
                if acks != 0 {
                    pending += 1
                    while pending > 64 { _ = try producer.receive(); pending -= 1 }
                }
            }
            while pending > 0 { _ = try producer.receive(); pending -= 1 }
            group.join()
            let samples = latencies.withLock { $0 }
            print("e2e: \(samples.count) of \(total) events at \(rate)/s, acks=\(acks): \(Bench.percentiles(samples))")
        }
    }
}

func wallClockNanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
