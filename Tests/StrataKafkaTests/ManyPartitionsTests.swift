import Foundation
import Testing
import StrataKafka
import StrataLog

/// `strata serve` holding 10,000 partitions (100 topics x 100), as a user runs it: a child
/// process on port 0, a real Kafka client, SIGKILL and clean restarts. What a partition costs is
/// asserted as resource bounds (disk blocks, descriptors, mappings, resident memory), never
/// as timings; the times are printed for the record.
@Suite(.serialized) struct ManyPartitionsTests {
    static let topics = 100
    static let partitionsPerTopic = 100
    static var partitions: Int { topics * partitionsPerTopic }

    struct ServeFailed: Error { let stderr: String }

    /// A running `strata serve`, its stderr in a file (10,000 partitions must not fill a pipe).
    final class Served {
        let process = Process()
        let port: Int
        let errorFile: String

        init(data: String, errorFile: String) throws {
            self.errorFile = errorFile
            FileManager.default.createFile(atPath: errorFile, contents: nil)
            process.executableURL = URL(fileURLWithPath: try Self.executable())
            process.arguments = ["serve", "--data", data, "--listen", "127.0.0.1:0", "--config", "num.partitions=1"]
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorFile))
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            var found: Int?
            for _ in 0..<1200 where found == nil {
                let text = (try? String(contentsOfFile: errorFile, encoding: .utf8)) ?? ""
                if let r = text.range(of: #"Kafka listener on 127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                    found = Int(text[r].split(separator: ":").last!)
                } else if !process.isRunning {
                    break
                } else {
                    usleep(50_000)
                }
            }
            guard let found else { throw ServeFailed(stderr: (try? String(contentsOfFile: errorFile, encoding: .utf8)) ?? "") }
            port = found
        }

        var pid: Int32 { process.processIdentifier }
        var stderrText: String { (try? String(contentsOfFile: errorFile, encoding: .utf8)) ?? "" }

        /// The "open in N ms" figure serve printed.
        var openMillis: Int? {
            guard let r = stderrText.range(of: #"open in (\d+) ms"#, options: .regularExpression) else { return nil }
            return Int(stderrText[r].split(separator: " ")[2])
        }

        func kill9() {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }

        func stop() {
            process.interrupt()
            process.waitUntilExit()
        }

        static func executable() throws -> String {
            var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            for _ in 0..<3 {
                let candidate = dir.appendingPathComponent("strata").path
                if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
                dir = dir.deletingLastPathComponent()
            }
            return FileManager.default.currentDirectoryPath + "/.build/debug/strata"
        }
    }

    struct Costs: CustomStringConvertible {
        var diskBytes = 0
        var descriptors = 0
        var mappings = 0
        var residentBytes = 0
        var description: String {
            "disk \(diskBytes / 1024) KiB, \(descriptors) descriptors, \(mappings) mappings, RSS \(residentBytes / 1024) KiB"
        }
    }

    static func costs(pid: Int32, data: String) -> Costs {
        var c = Costs()
        let e = FileManager.default.enumerator(atPath: data)
        while let name = e?.nextObject() as? String {
            var st = stat()
            if lstat(data + "/" + name, &st) == 0 { c.diskBytes += Int(st.st_blocks) * 512 }
        }
        c.descriptors = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
        // /proc files report size 0: read them to the end through a handle.
        let maps = FileHandle(forReadingAtPath: "/proc/\(pid)/maps").flatMap { try? $0.readToEnd() } ?? Data()
        c.mappings = maps.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        if let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) {
            c.residentBytes = (Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0) * 1024
        }
        return c
    }

    static func topic(_ t: Int) -> String { String(format: "many%03d", t) }
    static func value(_ t: Int, _ p: Int) -> String { "{\"topic\":\(t),\"partition\":\(p)}" }

    /// Produces one record to every partition, 200 requests in flight at a time.
    static func produceToAll(_ client: KafkaClient) throws -> Int {
        var pending = 0
        var failures = 0
        var sent = 0
        for t in 0..<topics {
            for p in 0..<partitionsPerTopic {
                let batch = RecordBatchBuilder.build([ProducerRecord(key: Array("k\(p)".utf8), value: Array(value(t, p).utf8), timestamp: 1_700_000_000_000)])
                _ = try client.sendProduce(topic: topic(t), partition: Int32(p), batch: batch, acks: 1)
                pending += 1
                sent += 1
                if pending == 200 || sent == partitions {
                    for _ in 0..<pending {
                        let (error, _) = try KafkaClient.parseProduce(try client.receive().body)
                        if error != 0 { failures += 1 }
                    }
                    pending = 0
                }
            }
        }
        return failures
    }

    /// Fetches every partition from offset 0 and checks its one record's value.
    static func readAll(_ client: KafkaClient) throws -> Int {
        var wrong = 0
        for t in 0..<topics {
            for p in 0..<partitionsPerTopic {
                let (error, highWatermark, records) = try client.fetch(topic: topic(t), partition: Int32(p), offset: 0, maxWaitMs: 0)
                let bytes = Array(records.readableBytesView)
                let text = String(decoding: bytes, as: UTF8.self)
                if error != 0 || highWatermark != 1 || !text.contains(value(t, p)) { wrong += 1 }
            }
        }
        return wrong
    }

    /// The open-file hard limit `serve` can raise itself to: one descriptor per partition.
    static var descriptorLimit: Int {
        var limit = rlimit()
        return getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Int(clamping: limit.rlim_max) : 0
    }

    @Test(.enabled(if: descriptorLimit >= partitions + 1200, "needs an open-file hard limit of 11,200 (one descriptor per partition)"))
    func tenThousandPartitionsCostKilobytesEachAndSurviveKilledAndCleanRestarts() throws {
        let dir = NSTemporaryDirectory() + "strata-many-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = dir + "/data"

        let first = try Served(data: data, errorFile: dir + "/serve-1.err")
        let empty = Self.costs(pid: first.pid, data: data)
        let client = try KafkaClient(host: "127.0.0.1", port: first.port, clientId: "many")
        var created = 0
        for t in 0..<Self.topics where try client.createTopic(Self.topic(t), partitions: Int32(Self.partitionsPerTopic), configs: [:]) == nil {
            created += 1
        }
        #expect(created == Self.topics)
        let idle = Self.costs(pid: first.pid, data: data)
        print("many partitions: empty broker \(empty); with \(Self.partitions) idle partitions \(idle)")
        let n = Self.partitions
        #expect((idle.diskBytes - empty.diskBytes) / n <= 64 * 1024, "disk per idle partition: \((idle.diskBytes - empty.diskBytes) / n) bytes")
        #expect(idle.descriptors - empty.descriptors <= n + 64, "one descriptor per partition: \(idle.descriptors - empty.descriptors)")
        #expect(idle.mappings - empty.mappings <= 3 * n + 64, "three mappings per partition: \(idle.mappings - empty.mappings)")
        #expect((idle.residentBytes - empty.residentBytes) / n <= 32 * 1024, "memory per idle partition: \((idle.residentBytes - empty.residentBytes) / n) bytes")

        #expect(try Self.produceToAll(client) == 0)
        let written = Self.costs(pid: first.pid, data: data)
        print("many partitions: one record in each \(written)")
        #expect((written.diskBytes - empty.diskBytes) / n <= 64 * 1024, "disk per partition holding one record: \((written.diskBytes - empty.diskBytes) / n) bytes")
        #expect(try Self.readAll(client) == 0)
        first.kill9()

        // After SIGKILL: every partition recovers and serves what was acknowledged.
        let second = try Served(data: data, errorFile: dir + "/serve-2.err")
        let recovered = Self.costs(pid: second.pid, data: data)
        print("many partitions: open after SIGKILL in \(second.openMillis ?? -1) ms (debug build); \(recovered)")
        #expect(!second.stderrText.contains("OFFLINE"))
        #expect(recovered.descriptors <= n + 128 && recovered.mappings <= 3 * n + 2_000)
        let afterKill = try KafkaClient(host: "127.0.0.1", port: second.port, clientId: "many")
        #expect(try Self.readAll(afterKill) == 0)
        second.stop()
        #expect(second.process.terminationStatus == 0)

        // After a clean stop: the same, with nothing to validate.
        let third = try Served(data: data, errorFile: dir + "/serve-3.err")
        print("many partitions: clean open in \(third.openMillis ?? -1) ms (debug build)")
        let clean = try KafkaClient(host: "127.0.0.1", port: third.port, clientId: "many")
        #expect(try Self.readAll(clean) == 0)
        #expect(try Self.produceToAll(clean) == 0, "and takes writes again")
        let reopened = Self.costs(pid: third.pid, data: data)
        #expect(reopened.descriptors <= n + 128 && reopened.mappings <= 3 * n + 2_000, "\(reopened)")
        third.stop()
        #expect(third.process.terminationStatus == 0)
    }
}
