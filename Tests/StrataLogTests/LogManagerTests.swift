import Foundation
import Testing
@testable import StrataLog
import StrataCore

@Suite struct LogManagerTests {
    @Test(arguments: ["../x", "a/b", String(repeating: "t", count: 250), "", ".", "..", "a b", "tópico", "x\0y"])
    func invalidTopicNamesAreRefusedAndCreateNothing(_ name: String) throws {
        let dir = TempDirectory()
        let manager = try LogManager.open(dataDirectory: dir.path)
        #expect(TopicName.problem(name) != nil)
        #expect(throws: LogError.self) { try manager.getOrCreateLog(topic: name, partition: 0) }
        #expect(listing(dir.path + "/logs").isEmpty)
        #expect(listing(dir.path).filter { !$0.hasPrefix(".") && $0 != "logs" }.isEmpty, "nothing created outside logs/")
        try manager.close()
    }

    @Test func validTopicNames() {
        for name in ["events", "a", "user.logins_v2-eu", String(repeating: "t", count: 249), "..."] {
            #expect(TopicName.problem(name) == nil, "\(name)")
        }
    }

    @Test func aSecondWriterGetsAClearError() throws {
        let dir = TempDirectory()
        let first = try LogManager.open(dataDirectory: dir.path)
        do {
            _ = try LogManager.open(dataDirectory: dir.path)
            Issue.record("a second writer opened the data directory")
        } catch {
            guard case .locked(_, let reason) = error else { Issue.record("wrong error \(error)"); return }
            #expect(reason.contains("pid \(getpid())"))
        }
        try first.close()
        let again = try LogManager.open(dataDirectory: dir.path)  // released on close
        try again.close()
    }

    @Test func cleanShutdownMarkerIsWrittenOnCloseAndRemovedOnOpen() throws {
        let dir = TempDirectory()
        let marker = dir.path + "/" + LogManager.cleanShutdownFileName
        do {
            let manager = try LogManager.open(dataDirectory: dir.path)
            let log = try manager.getOrCreateLog(topic: "events", partition: 0)
            try log.append(makeBatch(first: 0, count: 10))
            #expect(!FileManager.default.fileExists(atPath: marker))
            try manager.close()
            #expect(FileManager.default.fileExists(atPath: marker))
        }
        do {
            let manager = try LogManager.open(dataDirectory: dir.path)
            #expect(!FileManager.default.fileExists(atPath: marker), "a crash from now on must be seen as one")
            #expect(manager.loadReports["events-0"]?.cleanShutdown == true)
            #expect(manager.log(topic: "events", partition: 0)?.logEndOffset == 10)
            // No close: a crash. The next open recovers.
        }
        let manager = try LogManager.open(dataDirectory: dir.path)
        #expect(manager.loadReports["events-0"]?.cleanShutdown == false)
        #expect(manager.log(topic: "events", partition: 0)?.logEndOffset == 10)
        try manager.close()
    }

    @Test func intervalModeFlushesInTheBackground() throws {
        let dir = TempDirectory()
        var config = LogConfig()
        config.flushMode = .interval
        config.flushMs = 20
        let manager = try LogManager.open(dataDirectory: dir.path, defaultConfig: config)
        let log = try manager.getOrCreateLog(topic: "t", partition: 0)
        try log.append(makeBatch(first: 0, count: 5))
        #expect(log.recoveryPoint == 0, "interval mode does not sync on append")
        var waited = 0
        while log.recoveryPoint < 5 && waited < 3000 {  // up to 30 s on a loaded machine; normally ~20 ms
            usleep(10_000)
            waited += 1
        }
        #expect(log.recoveryPoint == 5, "the background flusher advanced the recovery point")
        try manager.close()
    }

    @Test func syncModeIsDurableWhenAppendReturns() throws {
        let dir = TempDirectory()
        let (log, _) = try PartitionLog.open(directory: dir.path, config: .small(flushMode: .sync))
        let info = try log.append(makeBatch(first: 0, count: 3))
        #expect(log.recoveryPoint >= info.lastOffset + 1)
        try log.close()
    }
}
