#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import StrataBroker
import StrataCore
import StrataLog
import StrataKafka

/// JSON lines in, events out: each line is validated, keyed, partitioned like Kafka's Java client,
/// and written in batches.
struct Produce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "produce",
        abstract: "Write JSON lines from stdin (or --file) to a topic, one event per line.",
        discussion: """
            Every line must be a JSON value; an invalid line stops the command with its line number \
            (lines before it are written) unless --skip-invalid counts and skips it. A missing topic is \
            created with 1 partition. The summary goes to stderr once the events are written (and, with \
            --acks all, synced to disk).
            """)

    @OptionGroup var options: DataOptions
    @Argument(help: "Topic name.") var topic: String
    @Option(help: "Use this top-level JSON field of each event as its key.") var keyField: String?
    @Option(help: "Use this key for every event.") var key: String?
    @Option(help: "Take each event's timestamp from this top-level field (RFC 3339 string or epoch ms).") var timestampField: String?
    @Option(help: "Write every event to this partition.") var partition: Int32?
    @Option(help: "all: synced to disk before it is reported; 1 or 0: written to the log (survives this process, not the OS).") var acks: String = "all"
    @Flag(help: "Count and skip invalid lines instead of stopping.") var skipInvalid = false
    @Option(help: "Read this file instead of stdin.") var file: String?
    @Option(help: "Events per batch (1...100000).") var batchRecords: Int = 1000
    @Option(help: "Produce through a running server at HOST:PORT (Kafka protocol) instead of the local data directory.") var bootstrap: String?

    func validate() throws {
        if keyField != nil && key != nil { throw ValidationError("--key-field and --key are exclusive") }
        if let why = TopicName.problem(topic) { throw ValidationError(why) }
        guard ["0", "1", "all", "-1"].contains(acks) else { throw ValidationError("--acks must be 0, 1 or all") }
        guard (1...100_000).contains(batchRecords) else { throw ValidationError("--batch-records must be in 1...100000") }
    }

    func run() throws {
        let fd: Int32
        if let file {
            fd = open(file, O_RDONLY)
            guard fd >= 0 else { throw CLIError("cannot open \(file): \(String(cString: strerror(errno)))") }
        } else {
            fd = 0
        }
        defer { if fd != 0 { close(fd) } }
        if let bootstrap {
            let (host, port) = try Serve.split(bootstrap)
            let sink = try RemoteSink(host: host, port: port, topic: topic, acks: acks == "0" ? 0 : (acks == "1" ? 1 : -1))
            let summary = try produce(sink: sink, fd: fd)
            try sink.sync()
            printError(summary)
            return
        }
        let broker = try options.openBroker()
        var failure: Error?
        var summary = ""
        do {
            summary = try produce(sink: try LocalSink(broker: broker, topic: topic), fd: fd)
        } catch {
            failure = error
        }
        // Closing syncs everything (clean shutdown); only then is anything reported as written.
        try broker.close()
        if let failure { throw failure }
        printError(summary)
    }

    private func produce(sink: ProduceSink, fd: Int32) throws -> String {
        let partitions = sink.partitions
        if let partition, partition < 0 || partition >= partitions {
            throw CLIError("topic \(topic) has \(partitions) partition(s); --partition \(partition) does not exist")
        }
        // Property-wrapper getters of ArgumentParser are generic and cost a metadata lookup per
        // access: read every option once, outside the per-line loop.
        let topic = self.topic
        let partition = self.partition
        let skipInvalid = self.skipInvalid
        let timestampField = self.timestampField
        let batchRecords = self.batchRecords
        let maxBatchBytes = sink.maxBatchBytes
        let syncEvery = 16 << 20
        let ackMode: Acks = acks == "all" || acks == "-1" ? .all : .leader
        var writers = (0..<partitions).map { _ in RecordBatchWriter(reservingCapacity: 256 * 1024) }
        var sticky = Int32.random(in: 0..<partitions)
        let fixedKey = key.map { Array($0.utf8) }
        var wanted: [[UInt8]] = []
        let keySlot = keyField.map { wanted.append(Array($0.utf8)); return wanted.count - 1 }
        let tsSlot = timestampField.map { wanted.append(Array($0.utf8)); return wanted.count - 1 }
        var found: [JSONScanner.Field?] = []
        var unescaped: [UInt8] = []

        var lineNumber = 0
        var now: Int64 = 0
        var events = 0
        var bytes = 0
        var skipped = 0
        var unsynced = 0
        let started = nowSeconds()
        var lastProgress = started
        let showProgress = isatty(2) == 1

        func flush(_ p: Int32) throws {
            guard !writers[Int(p)].isEmpty else { return }
            let batch = writers[Int(p)].finish()
            try sink.append(partition: p, batch: batch)
            unsynced += batch.count
            if ackMode == .all && unsynced >= syncEvery {
                try sink.sync()
                unsynced = 0
            }
            if p == sticky && partition == nil { sticky = (sticky + 1) % partitions }
        }

        var reader = LineReader(fd: fd)
        try reader.forEachLine { line in
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { return }
            do throws(JSONScanner.Failure) {
                try JSONScanner.validate(line, capturing: wanted, into: &found)
            } catch {
                if skipInvalid { skipped += 1; return }
                throw CLIError("line \(lineNumber): \(error); \(events) event(s) before it were written")
            }
            var timestamp: Int64
            if let tsSlot {
                guard let field = found[tsSlot],
                      let t = Timestamps.parseField(UnsafeRawBufferPointer(rebasing: line[field.range]), isString: field.isString) else {
                    if skipInvalid { skipped += 1; return }
                    throw CLIError("line \(lineNumber): field '\(timestampField!)' is missing or not an RFC 3339 time or epoch milliseconds; \(events) event(s) before it were written")
                }
                timestamp = t
            } else {
                // CreateTime of the batch being filled; the clock is read every 1024 lines, not per line.
                if lineNumber & 1023 == 1 || now == 0 { now = wallClockMillis() }
                timestamp = now
            }
            let overhead = RecordBatchWriter.maxRecordOverhead(keyCount: 256, valueCount: line.count)
            guard overhead + RecordBatch.headerSize <= maxBatchBytes else {
                throw CLIError("line \(lineNumber) is \(line.count) bytes; the topic's max.message.bytes is \(maxBatchBytes)")
            }
            func place(_ key: UnsafeRawBufferPointer?) throws {
                let p = partition ?? key.map { Partitioner.partition(forKey: $0, partitions: partitions) } ?? sticky
                if writers[Int(p)].sizeInBytes + overhead + (key?.count ?? 0) > maxBatchBytes { try flush(p) }
                writers[Int(p)].append(key: key, value: line, timestamp: timestamp)
                if writers[Int(p)].recordCount >= batchRecords { try flush(p) }
            }
            if let fixedKey {
                try fixedKey.withUnsafeBytes { try place($0) }
            } else if let keySlot, let field = found[keySlot] {
                if field.hasEscapes {
                    JSONScanner.unescape(UnsafeRawBufferPointer(rebasing: line[field.range]), into: &unescaped)
                    try unescaped.withUnsafeBytes { try place($0) }
                } else {
                    try place(UnsafeRawBufferPointer(rebasing: line[field.range]))
                }
            } else {
                try place(nil)
            }
            events += 1
            bytes += line.count + 1
            if showProgress && events % 65536 == 0 {
                let now = nowSeconds()
                if now - lastProgress >= 1 {
                    lastProgress = now
                    printErrorNoNewline("\r\(events) events, \(bytes >> 20) MiB, \(formatRate(Double(events), seconds: now - started)) events/s   ")
                }
            }
        }
        for p in 0..<partitions { try flush(p) }
        if ackMode == .all { try sink.sync() }
        let seconds = nowSeconds() - started
        if showProgress { printErrorNoNewline("\r\u{1B}[K") }
        var line = "produced \(events) events, \(bytes) bytes to \(topic) in \((seconds * 1000).rounded() / 1000) s (\(formatRate(Double(events), seconds: seconds)) events/s)"
        if skipped > 0 { line += "; skipped \(skipped) invalid line(s)" }
        return line
    }
}

/// Where `produce` sends its batches: the local data directory, or a server over the Kafka protocol.
protocol ProduceSink: AnyObject {
    var partitions: Int32 { get }
    var maxBatchBytes: Int { get }
    func append(partition: Int32, batch: [UInt8]) throws
    /// Returns once everything appended so far is as durable as the acks setting promises.
    func sync() throws
}

final class LocalSink: ProduceSink {
    let broker: Broker
    let topic: String
    let partitions: Int32
    let maxBatchBytes: Int

    init(broker: Broker, topic: String) throws {
        if broker.partitionCount(topic) == nil { try broker.createTopic(topic) }
        self.broker = broker
        self.topic = topic
        partitions = broker.partitionCount(topic)!
        maxBatchBytes = broker.topicConfig(topic)!.log.maxMessageBytes
    }

    func append(partition: Int32, batch: [UInt8]) throws {
        try batch.withUnsafeBytes { b in
            _ = try broker.appendBatch(topic: topic, partition: partition, batch: b, acks: .leader, valuesValidatedAsJSON: true)
        }
    }

    func sync() throws { try broker.flush(topic: topic) }
}

/// Produce requests pipelined on one connection (up to 8 in flight); every response is checked.
final class RemoteSink: ProduceSink {
    let client: KafkaClient
    let topic: String
    let acks: Int16
    let partitions: Int32
    /// Kafka's default max.message.bytes; the server refuses larger batches with a clear error.
    let maxBatchBytes = 1_000_000
    private var inFlight = 0
    static let maxInFlight = 8

    init(host: String, port: Int, topic: String, acks: Int16) throws {
        client = try KafkaClient(host: host, port: port, clientId: "strata-produce")
        self.topic = topic
        self.acks = acks
        partitions = Int32(try client.partitionCount(topic: topic, autoCreate: true))
    }

    func append(partition: Int32, batch: [UInt8]) throws {
        _ = try client.sendProduce(topic: topic, partition: partition, batch: batch, acks: acks)
        guard acks != 0 else { return }
        inFlight += 1
        while inFlight >= Self.maxInFlight { try receiveOne() }
    }

    private func receiveOne() throws {
        let (_, body) = try client.receive()
        inFlight -= 1
        let (error, _) = try KafkaClient.parseProduce(body)
        guard error == 0 else { throw CLIError("the server refused a batch of \(topic): Kafka error \(error)") }
    }

    func sync() throws {
        while inFlight > 0 { try receiveOne() }
    }
}
