import Foundation
import Testing

/// `strata serve --config-file` and `--print-config`, run as a user runs them.
@Suite(.serialized) struct ServeConfigTests {
    func write(_ text: String, in dir: TempDir, name: String = "strata.properties") throws -> String {
        let path = dir.path + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// key → (value, source) from --print-config.
    func printed(_ result: CLI.Result) -> [String: (value: String, source: String)] {
        var out: [String: (String, String)] = [:]
        for line in result.out.split(separator: "\n") {
            let parts = line.split(separator: "#", maxSplits: 1)
            guard parts.count == 2, let eq = parts[0].firstIndex(of: "=") else { continue }
            let key = String(parts[0][..<eq])
            let value = String(parts[0][parts[0].index(after: eq)...]).trimmingCharacters(in: .whitespaces)
            out[key] = (value, parts[1].trimmingCharacters(in: .whitespaces))
        }
        return out
    }

    @Test func flagsOverrideTheFileWhichOverridesDefaults() throws {
        let dir = TempDir()
        let file = try write("""
            # a Kafka-style server.properties
            listeners=PLAINTEXT://127.0.0.1:19092
            log.dirs = \(dir.path)/from-file
            num.partitions: 6
            log.retention.ms=3600000
            http.listen=off

            logging.format=json
            """, in: dir)
        let r = try CLI.run(["serve", "--config-file", file, "--config", "num.partitions=8", "--listen", "127.0.0.1:0", "--print-config"])
        #expect(r.status == 0, "\(r.stderr)")
        let c = printed(r)
        #expect(c["num.partitions"]?.value == "8")
        #expect(c["num.partitions"]?.source == "flag --config")
        #expect(c["listeners"]?.value == "127.0.0.1:0")
        #expect(c["listeners"]?.source == "flag --listen")
        #expect(c["log.dirs"]?.value == "\(dir.path)/from-file")
        #expect(c["log.dirs"]?.source == "\(file):3")
        #expect(c["log.retention.ms"]?.value == "3600000")
        #expect(c["log.retention.ms"]?.source == "\(file):5")
        #expect(c["logging.format"]?.source == "\(file):8")
        #expect(c["log.segment.bytes"]?.source == "default")
        #expect(c["max.partitions"]?.value == "12000")
        // --print-config opens nothing.
        #expect(!FileManager.default.fileExists(atPath: "\(dir.path)/from-file"))
    }

    @Test func unknownKeysAndBadValuesNameTheKeyAndLine() throws {
        let dir = TempDir()
        let unknown = try write("num.partitions=2\nlog.retention.mss=5\n", in: dir)
        var r = try CLI.run(["serve", "--config-file", unknown, "--print-config"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("\(unknown):2: unknown setting 'log.retention.mss'"), "\(r.stderr)")
        let noEquals = try write("num.partitions 2\n", in: dir, name: "b.properties")
        r = try CLI.run(["serve", "--config-file", noEquals, "--print-config"])
        #expect(r.status != 0 && r.stderr.contains("b.properties:1: expected key=value"), "\(r.stderr)")
        let twice = try write("num.partitions=2\nnum.partitions=3\n", in: dir, name: "c.properties")
        r = try CLI.run(["serve", "--config-file", twice, "--print-config"])
        #expect(r.status != 0 && r.stderr.contains("c.properties:2: 'num.partitions' is already set on line 1"), "\(r.stderr)")
        let badValue = try write("num.partitions=many\n", in: dir, name: "d.properties")
        r = try CLI.run(["serve", "--config-file", badValue, "--print-config"])
        #expect(r.status != 0 && r.stderr.contains("num.partitions"), "\(r.stderr)")
        r = try CLI.run(["serve", "--config", "no.such.key=1", "--print-config"])
        #expect(r.status != 0 && r.stderr.contains("unknown setting 'no.such.key'"), "\(r.stderr)")
        r = try CLI.run(["serve", "--log-level", "loud", "--print-config"])
        #expect(r.status != 0 && r.stderr.contains("logging.level"), "\(r.stderr)")
        r = try CLI.run(["serve", "--config-file", dir.path + "/missing.properties", "--print-config"])
        #expect(r.status != 0 && r.stderr.contains("cannot read config file"), "\(r.stderr)")
    }

    /// The transaction and KIP-848 settings are known, printed with their source, and checked.
    @Test func transactionAndConsumerGroupSettings() throws {
        var r = try CLI.run(["serve", "--config", "transaction.max.timeout.ms=1000", "--config", "group.consumer.heartbeat.interval.ms=1000",
                             "--config", "producer.id.expiration.ms=60000", "--print-config"])
        #expect(r.status == 0, "\(r.stderr)")
        let c = printed(r)
        #expect(c["transaction.max.timeout.ms"]?.value == "1000" && c["transaction.max.timeout.ms"]?.source == "flag --config")
        #expect(c["group.consumer.heartbeat.interval.ms"]?.value == "1000")
        #expect(c["producer.id.expiration.ms"]?.value == "60000")
        #expect(c["transactional.id.expiration.ms"]?.source == "default")
        #expect(c["group.consumer.session.timeout.ms"]?.value == "45000")
        for bad in ["transaction.max.timeout.ms=0", "group.consumer.heartbeat.interval.ms=5", "group.consumer.session.timeout.ms=x",
                    "producer.id.expiration.ms=-1", "transactional.id.expiration.ms=0"] {
            r = try CLI.run(["serve", "--config", bad, "--print-config"])
            #expect(r.status != 0 && r.stderr.contains(String(bad.split(separator: "=")[0])), "\(bad): \(r.stderr)")
        }
    }

    /// The file's settings take effect: a topic auto-created by a client gets num.partitions from
    /// the file, and serve logs JSON lines when the file says so.
    @Test func theFileConfiguresARunningServer() throws {
        let dir = TempDir()
        let file = try write("num.partitions=3\nlogging.format=json\nhttp.listen=off\nlog.dirs=data\n", in: dir)
        let serve = Process()
        serve.executableURL = URL(fileURLWithPath: CLI.executable)
        serve.arguments = ["serve", "--config-file", file, "--listen", "127.0.0.1:0"]
        serve.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        let err = Pipe()
        serve.standardError = err
        try serve.run()
        defer { if serve.isRunning { serve.interrupt(); serve.waitUntilExit() } }
        var seen = ""
        var port = ""
        while port.isEmpty {
            let chunk = err.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
            if let r = seen.range(of: #"Kafka listener on 127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = String(seen[r].split(separator: ":").last!)
            }
        }
        #expect(!port.isEmpty, "\(seen)")
        for line in seen.split(separator: "\n") {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["level"] as? String != nil && object?["msg"] as? String != nil, "not a JSON event: \(line)")
        }
        let r = try CLI.run(["produce", "auto", "--bootstrap", "127.0.0.1:" + port], stdinFile: try write("{\"a\":1}\n", in: dir, name: "e.jsonl"))
        #expect(r.status == 0, "\(r.stderr)")
        let d = try CLI.run(["topics", "describe", "auto", "--bootstrap", "127.0.0.1:" + port])
        #expect(d.status == 0 && d.out.contains("3 partition"), "\(d.out)\(d.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir.path + "/data/meta"))
    }
}
