import Foundation
import Testing
@testable import StrataMetadata

final class TempDir: @unchecked Sendable {
    let path: String
    init() {
        var t = Array((NSTemporaryDirectory() + "/strata-meta-XXXXXX").utf8CString)
        path = String(cString: t.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

@Suite struct MetadataStoreTests {
    @Test func topicsRoundTripAndSurviveReopen() throws {
        let dir = TempDir()
        let record = TopicRecord(name: "events", partitions: 8, configs: ["retention.ms": "604800000", "value.format": "json"], createdMs: 123)
        do {
            let store = try MetadataStore(directory: dir.path + "/meta")
            try store.putTopic(record)
            try store.putTopic(TopicRecord(name: "audit", partitions: 1, configs: [:], createdMs: 5))
            #expect(try store.topic("events") == record)
            #expect(try store.topic("missing") == nil)
        }
        let store = try MetadataStore(directory: dir.path + "/meta")
        #expect(try store.topics().map(\.name) == ["audit", "events"])
        #expect(try store.topic("events") == record)
        let id = try store.clusterId()
        #expect(id.count == 22)
        #expect(try MetadataStore(directory: dir.path + "/meta").clusterId() == id, "the cluster id is stable")
    }

    @Test func offsetsCommitFetchAndDeleteWithTheirTopic() throws {
        let dir = TempDir()
        let store = try MetadataStore(directory: dir.path + "/meta")
        try store.putTopic(TopicRecord(name: "a", partitions: 2, configs: [:], createdMs: 0))
        try store.commitOffsets([
            OffsetCommit(group: "g1", topic: "a", partition: 0, committed: CommittedOffset(offset: 10, metadata: "m", commitTimeMs: 1)),
            OffsetCommit(group: "g1", topic: "a", partition: 1, committed: CommittedOffset(offset: 20, commitTimeMs: 2)),
            OffsetCommit(group: "g2", topic: "a", partition: 0, committed: CommittedOffset(offset: 30, commitTimeMs: 3)),
        ])
        #expect(try store.committedOffset(group: "g1", topic: "a", partition: 0) == CommittedOffset(offset: 10, metadata: "m", commitTimeMs: 1))
        #expect(try store.committedOffsets(group: "g1").map(\.committed.offset) == [10, 20])
        #expect(try store.groups() == ["g1", "g2"])
        try store.commitOffsets([OffsetCommit(group: "g1", topic: "a", partition: 0, committed: CommittedOffset(offset: 11, commitTimeMs: 4))])
        #expect(try store.committedOffset(group: "g1", topic: "a", partition: 0)?.offset == 11)
        try store.deleteTopic("a")
        #expect(try store.committedOffsets(group: "g1").isEmpty)
        #expect(try store.topic("a") == nil)
    }

    @Test func concurrentCommitsShareTransactions() async throws {
        let dir = TempDir()
        let store = try MetadataStore(directory: dir.path + "/meta")
        let writers = 16
        let perWriter = 50
        await withTaskGroup(of: Void.self) { group in
            for w in 0..<writers {
                group.addTask {
                    for i in 0..<perWriter {
                        try! store.commitOffsets([OffsetCommit(group: "g\(w)", topic: "t", partition: 0, committed: CommittedOffset(offset: Int64(i), commitTimeMs: 0))])
                    }
                }
            }
        }
        for w in 0..<writers { #expect(try store.committedOffset(group: "g\(w)", topic: "t", partition: 0)?.offset == Int64(perWriter - 1)) }
        #expect(store.offsetTransactionCount <= writers * perWriter)
    }

    @Test func aReadOnlyOpenerSeesTheWritersCommits() throws {
        let dir = TempDir()
        let writer = try MetadataStore(directory: dir.path + "/meta")
        try writer.putTopic(TopicRecord(name: "t", partitions: 3, configs: [:], createdMs: 0))
        let reader = try MetadataStore(directory: dir.path + "/meta", readOnly: true)
        #expect(try reader.topic("t")?.partitions == 3)
        try writer.putTopic(TopicRecord(name: "u", partitions: 1, configs: [:], createdMs: 0))
        #expect(try reader.topics().count == 2, "a new read transaction sees the latest commit")
        #expect(throws: (any Error).self) { try reader.putTopic(TopicRecord(name: "x", partitions: 1, configs: [:], createdMs: 0)) }
    }

    @Test func codecRejectsTruncatedValues() {
        let c = CommittedOffset(offset: 42, metadata: "hello", commitTimeMs: 7)
        let bytes = Codec.encode(c)
        #expect(Codec.decodeCommitted(bytes) == c)
        #expect(Codec.decodeCommitted(Array(bytes.prefix(10))) == nil)
        let t = TopicRecord(name: "n", partitions: 4, configs: ["a": "b"], createdMs: 9)
        let tb = Codec.encode(t)
        #expect(Codec.decodeTopic(name: "n", tb) == t)
        for cut in 0..<tb.count { #expect(Codec.decodeTopic(name: "n", Array(tb.prefix(cut))) == nil) }
    }
}

@Suite struct MetadataFileCheckTests {
    @Test func aTruncatedDataFileIsAnErrorNamingTheFileNotSIGBUS() throws {
        let dir = TempDir()
        do {
            let store = try MetadataStore(directory: dir.path + "/meta")
            for i in 0..<2000 {
                try store.putTopic(TopicRecord(name: "topic-\(i)", partitions: 8, configs: ["retention.ms": String(repeating: "9", count: 40)], createdMs: Int64(i)))
            }
        }
        let path = dir.path + "/meta/data.mdb"
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        #expect(truncate(path, off_t(size / 2)) == 0)
        #expect {
            _ = try MetadataStore(directory: dir.path + "/meta")
        } throws: { error in
            "\(error)".contains(path) && "\(error)".contains("truncated")
        }
    }

    @Test func anEnvironmentThatFailsToOpenIsClosedOnce() throws {
        // A regular file where the environment's directory should be: mdb_env_open fails, and
        // the failed initializer must close the handle exactly once (it used to double free).
        let dir = TempDir()
        let path = dir.path + "/not-a-directory"
        _ = FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3]))
        for _ in 0..<3 {
            #expect(throws: MetadataError.self) { _ = try MetadataEnvironment(path: path) }
        }
    }
}
