import Foundation
import Testing
@testable import StrataLog

/// Path of the `strata` executable built next to the test bundle.
func strataExecutable() throws -> String {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<3 {
        let candidate = dir.appendingPathComponent("strata").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    let fallback = FileManager.default.currentDirectoryPath + "/.build/debug/strata"
    try #require(FileManager.default.isExecutableFile(atPath: fallback), "build the strata executable first (swift build)")
    return fallback
}

@Suite(.serialized) struct KillTests {
    /// Four threads append in `sync` mode in a child process; after a few hundred acknowledgements
    /// the child is killed with SIGKILL mid-stream. Every batch it acknowledged must be in the log,
    /// whole and with its own bytes, and the log must be a valid prefix.
    @Test(arguments: [FlushMode.sync, .interval, .os])
    func sigkillLosesNoAcknowledgedAppend(mode: FlushMode) throws {
        let dir = TempDirectory("strata-kill")
        let logDir = dir.path + "/events-0"
        for round in 0..<3 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: try strataExecutable())
            process.arguments = ["debug", "append-acks", "--dir", logDir, "--threads", "4", "--records", "7", "--flush-mode", mode.rawValue]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            var acks: [(base: Int64, last: Int64, thread: Int, seq: Int)] = []
            var pending = Data()
            let target = 200 + round * 150
            while acks.count < target {
                let chunk = pipe.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let nl = pending.firstIndex(of: 0x0A) {
                    let line = String(decoding: pending[pending.startIndex..<nl], as: UTF8.self)
                    pending.removeSubrange(pending.startIndex...nl)
                    let f = line.split(separator: " ")
                    if f.count == 5, f[0] == "ack" {
                        acks.append((Int64(f[1])!, Int64(f[2])!, Int(f[3])!, Int(f[4])!))
                    }
                }
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal, "the child was killed, not finished")
            #expect(acks.count >= target)

            let (log, _) = try PartitionLog.open(directory: logDir, config: LogConfig())
            var values: [Int64: String] = [:]
            for (offset, value) in try readAll(log, maxBytes: 1 << 20) { values[offset] = String(decoding: value, as: UTF8.self) }
            #expect(values.count == Int(log.logEndOffset - log.logStartOffset), "round \(round): a dense prefix")
            var missing = 0
            for ack in acks {
                for (j, offset) in (ack.base...ack.last).enumerated() where values[offset] != "t\(ack.thread)-s\(ack.seq)-r\(j)" {
                    missing += 1
                }
            }
            #expect(missing == 0, "round \(round) \(mode): \(missing) acknowledged records lost or wrong")
            #expect(log.verify().isEmpty)
            try log.close()
        }
    }
}
