import Foundation
import Testing
@testable import StrataBroker

/// End-to-end tests of the `strata` executable, the way a user runs it.
enum CLI {
    static var executable: String {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent("strata").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return FileManager.default.currentDirectoryPath + "/.build/debug/strata"
    }

    struct Result {
        let status: Int32
        let stdout: Data
        let stderr: String
        var out: String { String(decoding: stdout, as: UTF8.self) }
    }

    @discardableResult
    static func run(_ args: [String], stdinFile: String? = nil, cwd: String? = nil) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let outFile = NSTemporaryDirectory() + "/strata-cli-out-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: outFile, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outFile))
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        if let stdinFile { p.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: stdinFile)) }
        else { p.standardInput = FileHandle.nullDevice }
        try p.run()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        try out.close()
        let data = try Data(contentsOf: URL(fileURLWithPath: outFile))
        try? FileManager.default.removeItem(atPath: outFile)
        return Result(status: p.terminationStatus, stdout: data, stderr: String(decoding: errData, as: UTF8.self))
    }

    /// The shared event generator (`../shared/data/gen_events.py`), found from this source file.
    static func generateEvents(_ count: Int, to path: String) throws {
        var dir = URL(fileURLWithPath: #filePath)
        var script: String?
        for _ in 0..<6 {
            dir = dir.deletingLastPathComponent()
            let candidate = dir.appendingPathComponent("shared/data/gen_events.py").path
            if FileManager.default.fileExists(atPath: candidate) { script = candidate; break }
        }
        guard let script else { throw CLIErrorForTests("shared/data/gen_events.py not found above \(#filePath)") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script, "-n", String(count), "-o", path]
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw CLIErrorForTests("gen_events.py failed") }
    }
}

struct CLIErrorForTests: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Parsed `--print-meta` line.
struct MetaLine: Decodable {
    let partition: Int32
    let offset: Int64
    let timestamp: Int64
    let key: String?
}

@Suite(.serialized) struct CLITests {
    @Test func aMillionEventsRoundTripByteIdentical() throws {
        let dir = TempDir()
        let events = dir.path + "/events.jsonl"
        try CLI.generateEvents(1_000_000, to: events)
        let data = dir.path + "/data"
        let produced = try CLI.run(["produce", "events", "--data", data, "--file", events])
        #expect(produced.status == 0, "\(produced.stderr)")
        #expect(produced.stderr.contains("produced 1000000 events"))
        let consumed = try CLI.run(["consume", "events", "--data", data, "--from-beginning"])
        #expect(consumed.status == 0, "\(consumed.stderr)")
        let original = try Data(contentsOf: URL(fileURLWithPath: events))
        #expect(consumed.stdout.count == original.count)
        #expect(consumed.stdout == original, "byte-identical round trip")
        let verified = try CLI.run(["inspect", "events", "--data", data, "--verify"])
        #expect(verified.status == 0 && verified.out.contains("every batch intact"))
    }

    @Test func keyedEventsKeepPerKeyOrderInKafkasPartition() throws {
        let dir = TempDir()
        let events = dir.path + "/events.jsonl"
        try CLI.generateEvents(100_000, to: events)
        let data = dir.path + "/data"
        try CLI.run(["topics", "create", "events", "--data", data, "--partitions", "8"])
        let produced = try CLI.run(["produce", "events", "--data", data, "--file", events, "--key-field", "user_id", "--timestamp-field", "ts"])
        #expect(produced.status == 0, "\(produced.stderr)")

        // Expected: per user, the input order of their events (by line number).
        let lines = try String(contentsOfFile: events, encoding: .utf8).split(separator: "\n")
        var expectedByUser: [String: [Substring]] = [:]
        for line in lines {
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            expectedByUser[obj["user_id"] as! String, default: []].append(line)
        }
        var total = 0
        for p in 0..<8 {
            let r = try CLI.run(["consume", "events", "--data", data, "--partition", String(p), "--from-beginning", "--print-meta"])
            #expect(r.status == 0)
            var seenByUser: [String: Int] = [:]
            for line in r.out.split(separator: "\n") {
                let meta = try JSONDecoder().decode(MetaLine.self, from: Data(line.utf8))
                let key = meta.key!
                #expect(Partitioner.partition(forKey: Array(key.utf8), partitions: 8) == meta.partition, "\(key) in Kafka's partition")
                let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                let value = try JSONSerialization.data(withJSONObject: obj["value"]!, options: [.sortedKeys])
                let i = seenByUser[key, default: 0]
                let expected = try JSONSerialization.data(withJSONObject: JSONSerialization.jsonObject(with: Data(expectedByUser[key]![i].utf8)), options: [.sortedKeys])
                if value != expected { Issue.record("user \(key): event \(i) out of order"); break }
                seenByUser[key] = i + 1
                total += 1
            }
            for (user, n) in seenByUser { #expect(n == expectedByUser[user]!.count, "all of \(user)'s events are in one partition") }
        }
        #expect(total == 100_000)
    }

    @Test func sinceAndUntilReturnExactlyTheWindow() throws {
        let dir = TempDir()
        let events = dir.path + "/events.jsonl"
        try CLI.generateEvents(50_000, to: events)
        let data = dir.path + "/data"
        try CLI.run(["topics", "create", "events", "--data", data, "--partitions", "3", "--config", "segment.bytes=1048576"])
        #expect(try CLI.run(["produce", "events", "--data", data, "--file", events, "--key-field", "user_id", "--timestamp-field", "ts"]).status == 0)
        let since = "2025-10-07T12:00:00Z", until = "2025-10-08T00:30:00Z"
        let r = try CLI.run(["consume", "events", "--data", data, "--since", since, "--until", until])
        #expect(r.status == 0, "\(r.stderr)")
        let got = r.out.split(separator: "\n").sorted()
        let expected = try String(contentsOfFile: events, encoding: .utf8).split(separator: "\n").filter { line in
            let ts = (try! JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any])["ts"] as! String
            return ts >= "2025-10-07T12:00:00" && ts < "2025-10-08T00:30:00"
        }.sorted()
        #expect(got.count == expected.count)
        let same = got == expected  // compared outside #expect: a failure should not print 10k lines
        #expect(same, "the window holds exactly the events with since <= ts < until")
        #expect(!expected.isEmpty)
    }

    @Test func consumerGroupsResumeFromCommittedOffsetsAfterRestart() throws {
        let dir = TempDir()
        let events = dir.path + "/events.jsonl"
        try CLI.generateEvents(1000, to: events)
        let data = dir.path + "/data"
        try CLI.run(["topics", "create", "events", "--data", data, "--partitions", "2"])
        try CLI.run(["produce", "events", "--data", data, "--file", events, "--key-field", "user_id"])
        for p in ["0", "1"] {
            var all: [Substring] = []
            for _ in 0..<3 {  // three "restarts" of the consumer
                let r = try CLI.run(["consume", "events", "--data", data, "--group", "dash", "--partition", p, "--from-beginning", "--max-messages", "50"])
                #expect(r.status == 0, "\(r.stderr)")
                all += r.out.split(separator: "\n")
            }
            let whole = try CLI.run(["consume", "events", "--data", data, "--partition", p, "--from-beginning", "--max-messages", "150"])
            let expected = whole.out.split(separator: "\n")
            #expect(all.count == 150)
            let same = all == expected
            #expect(same, "partition \(p): each run resumed where the last committed (\(zip(all, expected).filter { $0 != $1 }.count) lines differ)")
        }
        let other = try CLI.run(["consume", "events", "--data", data, "--group", "other", "--partition", "0", "--from-beginning", "--max-messages", "1"])
        let first = try CLI.run(["consume", "events", "--data", data, "--partition", "0", "--from-beginning", "--max-messages", "1"])
        #expect(other.out == first.out, "a new group starts from the beginning")
    }

    @Test func aKilledProduceLeavesAValidPrefixAndReleasesTheLock() throws {
        let dir = TempDir()
        let events = dir.path + "/events.jsonl"
        try CLI.generateEvents(400_000, to: events)
        let data = dir.path + "/data"
        try CLI.run(["topics", "create", "events", "--data", data, "--partitions", "4"])
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.executable)
        p.arguments = ["produce", "events", "--data", data, "--file", events, "--key-field", "user_id"]
        p.standardError = FileHandle.nullDevice
        try p.run()
        usleep(400_000)
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        // Every partition holds a prefix of its share of the input, in order, with no damage.
        let lines = try String(contentsOfFile: events, encoding: .utf8).split(separator: "\n")
        var share: [[Substring]] = Array(repeating: [], count: 4)
        for line in lines {
            let user = (try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any])["user_id"] as! String
            share[Int(Partitioner.partition(forKey: Array(user.utf8), partitions: 4))].append(line)
        }
        var kept = 0
        for part in 0..<4 {
            let r = try CLI.run(["consume", "events", "--data", data, "--partition", String(part), "--from-beginning"])
            let got = r.out.split(separator: "\n")
            let isPrefix = Array(share[part].prefix(got.count)) == got
            #expect(isPrefix, "partition \(part) is a prefix of its input")
            kept += got.count
        }
        #expect(kept < 400_000 || p.terminationReason == .exit, "killed mid-stream (or finished first on a fast machine)")
        #expect(try CLI.run(["inspect", "--data", data, "--verify"]).status == 0)
        let again = try CLI.run(["produce", "events", "--data", data, "--file", events, "--key-field", "user_id"])
        #expect(again.status == 0, "the lock died with the killed process: \(again.stderr)")
    }

    @Test func badInputGetsClearErrorsAndChangesNothing() throws {
        let dir = TempDir()
        let data = dir.path + "/data"
        for name in ["../x", "a/b", String(repeating: "t", count: 250), ""] {
            let r = try CLI.run(["topics", "create", name, "--data", data])
            #expect(r.status != 0, "'\(name)' refused")
            #expect(r.stderr.contains("topic name"), "\(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/x"))
        #expect((try? FileManager.default.contentsOfDirectory(atPath: data + "/logs"))?.isEmpty ?? true)

        try CLI.run(["topics", "create", "j", "--data", data, "--config", "value.format=json"])
        let input = dir.path + "/in.jsonl"
        try "{\"a\":1}\n{\"a\":2}\n{\"a\":\n{\"a\":4}\n".write(toFile: input, atomically: true, encoding: .utf8)
        let bad = try CLI.run(["produce", "j", "--data", data, "--file", input])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("line 3"), "\(bad.stderr)")
        let skipped = try CLI.run(["produce", "j", "--data", data, "--file", input, "--skip-invalid"])
        #expect(skipped.status == 0 && skipped.stderr.contains("skipped 1 invalid line"), "\(skipped.stderr)")
        #expect(try CLI.run(["topics", "create", "j", "--data", data]).stderr.contains("already exists"))
        #expect(try CLI.run(["topics", "create", "k", "--data", data, "--config", "retention.ms=soon"]).stderr.contains("retention.ms"))
    }

    @Test func aSecondWriterIsRefusedWhileReadersWorkAlongsideServe() throws {
        let dir = TempDir()
        let data = dir.path + "/data"
        let input = dir.path + "/in.jsonl"
        try (0..<100).map { "{\"n\":\($0)}" }.joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        try CLI.run(["produce", "t", "--data", data, "--file", input])
        let serve = Process()
        serve.executableURL = URL(fileURLWithPath: CLI.executable)
        serve.arguments = ["serve", "--data", data]
        let err = Pipe()
        serve.standardError = err
        try serve.run()
        defer { if serve.isRunning { serve.terminate(); serve.waitUntilExit() } }
        // Wait until serve holds the data directory.
        var waited = 0
        while waited < 100, !((try? String(contentsOfFile: data + "/.lock", encoding: .utf8)) == String(serve.processIdentifier)) {
            usleep(50_000)
            waited += 1
        }
        let second = try CLI.run(["produce", "t", "--data", data, "--file", input])
        #expect(second.status != 0)
        #expect(second.stderr.contains("pid \(serve.processIdentifier)"), "names the holder: \(second.stderr)")
        let read = try CLI.run(["consume", "t", "--data", data, "--from-beginning"])
        #expect(read.status == 0 && read.out.split(separator: "\n").count == 100, "read-only consume works next to serve")
        #expect(try CLI.run(["topics", "describe", "t", "--data", data]).status == 0)
        #expect(try CLI.run(["inspect", "--data", data]).status == 0)
        serve.interrupt()
        serve.waitUntilExit()
        #expect(serve.terminationStatus == 0)
        #expect(FileManager.default.fileExists(atPath: data + "/.clean-shutdown"))
    }

    @Test func produceConsumeAndTopicsWorkThroughARunningServer() throws {
        let dir = TempDir()
        let data = dir.path + "/data"
        let events = dir.path + "/events.jsonl"
        try CLI.generateEvents(20_000, to: events)
        let serve = Process()
        serve.executableURL = URL(fileURLWithPath: CLI.executable)
        serve.arguments = ["serve", "--data", data, "--listen", "127.0.0.1:0"]
        let err = Pipe()
        serve.standardError = err
        try serve.run()
        defer { if serve.isRunning { serve.interrupt(); serve.waitUntilExit() } }
        // The listener line carries the port it picked.
        var port = ""
        var seen = Data()
        while port.isEmpty {
            let chunk = err.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen.append(chunk)
            let text = String(decoding: seen, as: UTF8.self)
            if let r = text.range(of: #"Kafka listener on 127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = String(text[r].split(separator: ":").last!)
            }
        }
        let bootstrap = "127.0.0.1:" + port
        #expect(try CLI.run(["topics", "create", "events", "--partitions", "4", "--bootstrap", bootstrap]).status == 0)
        #expect(try CLI.run(["topics", "list", "--bootstrap", bootstrap]).out == "events\n")
        // While a producer writes through the server, a query reads the same data directory
        // read-only and sees one snapshot: two scans of the table in one statement agree.
        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: CLI.executable)
        writer.arguments = ["produce", "events", "--bootstrap", bootstrap, "--file", events, "--key-field", "user_id"]
        writer.standardOutput = FileHandle.nullDevice
        writer.standardError = FileHandle.nullDevice
        try writer.run()
        var snapshots: [String] = []
        while writer.isRunning || snapshots.isEmpty {
            let q = try CLI.run(["query", "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM events WHERE value->>'$.event_type' IS NOT NULL)",
                                 "--data", data, "--format", "csv"])
            #expect(q.status == 0, "\(q.stderr)")
            let counts = q.out.split(separator: "\n").last.map { $0.split(separator: ",").map(String.init) } ?? []
            #expect(counts.count == 2 && counts[0] == counts[1], "one snapshot per query: \(q.out)")
            snapshots.append(counts.first ?? "")
        }
        writer.waitUntilExit()
        #expect(writer.terminationStatus == 0)
        #expect(snapshots.compactMap { Int($0) }.allSatisfy { $0 <= 20_000 })
        let after = try CLI.run(["query", "SELECT count(*) FROM events", "--data", data, "--format", "csv"])
        #expect(after.out == "count(*)\n20000\n", "\(after.out) \(after.stderr)")
        var total = 0
        for p in 0..<4 {
            let r = try CLI.run(["consume", "events", "--bootstrap", bootstrap, "--partition", String(p), "--from-beginning"])
            #expect(r.status == 0, "\(r.stderr)")
            total += r.out.split(separator: "\n").count
        }
        #expect(total == 20_000)
        // Groups through the server resume too.
        let first = try CLI.run(["consume", "events", "--bootstrap", bootstrap, "--partition", "0", "--group", "g", "--from-beginning", "--max-messages", "10"])
        let second = try CLI.run(["consume", "events", "--bootstrap", bootstrap, "--partition", "0", "--group", "g", "--max-messages", "10"])
        let whole = try CLI.run(["consume", "events", "--bootstrap", bootstrap, "--partition", "0", "--from-beginning", "--max-messages", "20"])
        #expect(first.out + second.out == whole.out)
        #expect(try CLI.run(["topics", "delete", "events", "--bootstrap", bootstrap]).status == 0)
        // Only Kafka's internal offsets topic (the group's commits are mirrored there) remains.
        #expect(try CLI.run(["topics", "list", "--bootstrap", bootstrap]).out.split(separator: "\n").allSatisfy { $0.hasPrefix("__consumer_offsets") })
    }

    @Test func queryAnswersSQLOverTopicsInEveryFormat() throws {
        let dir = TempDir()
        let data = dir.path + "/data"
        let input = dir.path + "/in.jsonl"
        try (0..<300).map { "{\"type\":\"\(["a", "b", "c"][$0 % 3])\",\"n\":\($0)}" }.joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        try CLI.run(["produce", "t", "--data", data, "--file", input])
        let csv = try CLI.run(["query", "SELECT value->>'$.type' AS type, count(*) AS n, sum(value->>'$.n') AS total FROM t GROUP BY 1 ORDER BY 1", "--data", data, "--format", "csv"])
        #expect(csv.status == 0, "\(csv.stderr)")
        #expect(csv.out == "type,n,total\na,100,14850\nb,100,14950\nc,100,15050\n")
        let jsonl = try CLI.run(["query", "SELECT offset, value FROM t WHERE offset = 7", "--data", data, "--format", "jsonl"])
        #expect(jsonl.out == "{\"offset\":7,\"value\":{\"type\":\"b\",\"n\":7}}\n")
        let table = try CLI.run(["query", "SELECT count(*) AS n FROM t", "--data", data])
        #expect(table.out.contains("300"))
        let bad = try CLI.run(["query", "DELETE FROM t", "--data", data])
        #expect(bad.status != 0 && (bad.stderr.contains("read-only") || bad.stderr.contains("may not be modified")), "\(bad.stderr)")
        let unknown = try CLI.run(["query", "SELECT * FROM nope", "--data", data])
        #expect(unknown.status != 0 && unknown.stderr.contains("no such table"))
    }

    @Test func streamExamplesRunAndContinueWhereTheyStopped() throws {
        let dir = TempDir()
        let data = dir.path + "/data"
        let first = try CLI.run(["streams", "run", "order-chain", "--data", data, "--orders", "1500"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.out.contains("notifications: 1500"), "\(first.out)")
        // A second run adds orders; the first ones are not processed again (committed offsets).
        let second = try CLI.run(["streams", "run", "order-chain", "--data", data, "--orders", "500"])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.out.contains("notifications: 2000"), "\(second.out)")
        let perOrder = try CLI.run(["query", "SELECT count(DISTINCT key), count(*) FROM notifications", "--data", data, "--format", "csv"])
        #expect(perOrder.out.hasSuffix("2000,2000\n"), "every order ends in exactly one notification: \(perOrder.out)")

        let dashboard = try CLI.run(["streams", "run", "dashboard", "--data", data, "--orders", "3000"])
        #expect(dashboard.status == 0, "\(dashboard.stderr)")
        #expect(dashboard.out.contains("revenue"))
        // The latest row per window (a compacted topic read with SQL) adds up to every order.
        let latest = try CLI.run(["query", """
            SELECT sum(o), round(sum(r), 2) FROM (SELECT value->>'$.orders' AS o, value->>'$.revenue' AS r, max(offset)
            FROM "sales-dashboard" GROUP BY partition, key)
            """, "--data", data, "--format", "csv"])
        let orders = try CLI.run(["query", "SELECT count(*), round(sum(value->>'$.amount'), 2) FROM orders", "--data", data, "--format", "csv"])
        #expect(latest.status == 0 && orders.status == 0, "\(latest.stderr) \(orders.stderr)")
        #expect(latest.out.split(separator: "\n").last == orders.out.split(separator: "\n").last, "\(latest.out) vs \(orders.out)")
        #expect(orders.out.hasSuffix("5000,") == false && orders.out.contains("5000"), "\(orders.out)")
        let unknown = try CLI.run(["streams", "run", "nope", "--data", data])
        #expect(unknown.status != 0 && unknown.stderr.contains("order-chain"))
    }

    @Test func aDamagedDataDirOpensWithTheValidPrefixAndAWarning() throws {
        let dir = TempDir()
        let data = dir.path + "/data"
        let input = dir.path + "/in.jsonl"
        try (0..<2000).map { "{\"n\":\($0),\"pad\":\"\(String(repeating: "x", count: 100))\"}" }.joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        try CLI.run(["produce", "t", "--data", data, "--file", input, "--batch-records", "100"])
        // Damage: no clean-shutdown marker and a torn last batch.
        try FileManager.default.removeItem(atPath: data + "/.clean-shutdown")
        let segment = data + "/logs/t-0/00000000000000000000.log"
        let size = try FileManager.default.attributesOfItem(atPath: segment)[.size] as! Int
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: segment))
        try handle.truncate(atOffset: UInt64(size - 100))
        try handle.close()
        let r = try CLI.run(["produce", "t", "--data", data, "--file", input])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("warning"), "\(r.stderr)")
        let all = try CLI.run(["consume", "t", "--data", data, "--from-beginning"]).out.split(separator: "\n")
        #expect(all.count == 1900 + 2000, "the torn batch of 100 is gone, everything else is there")
        #expect(try CLI.run(["inspect", "--data", data, "--verify"]).status == 0)
    }

    /// The README's streams example from a relative working directory with the default
    /// (relative) data directory: state lands under ./strata-data, nothing at the root of the file
    /// system, no double free.
    @Test func streamsRunFromARelativeDirectoryWithTheDefaultDataDirectory() throws {
        let dir = NSTemporaryDirectory() + "/strata-rel-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run(["streams", "run", "dashboard", "--orders", "300"], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/strata-data/streams"))
        #expect(!FileManager.default.fileExists(atPath: "/strata-data/streams/dashboard"))
    }

    /// Every CLI path that handles topic names, at Kafka's limit of 249 characters.
    @Test func topicNamesOfTheMaximumLengthWorkEverywhere() throws {
        let dir = NSTemporaryDirectory() + "/strata-long-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let name = String(repeating: "t", count: 249)
        let input = dir + "/in.jsonl"
        try Array(repeating: "{\"a\":1}", count: 10).joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        var r = try CLI.run(["topics", "create", name, "--partitions", "12", "--data", "d"], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run(["produce", name, "--file", input, "--data", "d"], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run(["consume", name, "--from-beginning", "--max-messages", "10", "--data", "d"], cwd: dir)
        #expect(r.status == 0 && r.out.split(separator: "\n").count == 10, "\(r.stderr)")
        r = try CLI.run(["topics", "describe", name, "--data", "d"], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run(["inspect", name, "--verify", "--data", "d"], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run(["topics", "delete", name, "--data", "d"], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        let left = try FileManager.default.contentsOfDirectory(atPath: dir + "/d/logs")
        #expect(left.isEmpty, "deleted partition directories remain: \(left)")
        // Re-created, the name starts empty: the old records do not come back.
        r = try CLI.run(["topics", "create", name, "--partitions", "12", "--data", "d"], cwd: dir)
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run(["topics", "describe", name, "--data", "d"], cwd: dir)
        #expect(r.out.contains("0 events") && !r.out.contains("10 events"), "\(r.out)")
    }
}
