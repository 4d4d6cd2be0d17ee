import Foundation
import StrataCore
@testable import StrataLog

/// A fresh directory under /tmp, removed when the value is released.
final class TempDirectory: @unchecked Sendable {
    let path: String

    init(_ label: String = "strata-test") {
        let template = NSTemporaryDirectory() + "/\(label)-XXXXXX"
        var bytes = Array(template.utf8CString)
        let result = bytes.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(result != nil, "mkdtemp failed")
        path = String(cString: result!)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { path + "/" + name }
}

/// Deterministic pseudo-random numbers (SplitMix64), so a failing property test can be replayed.
typealias SeededRandom = SplitMix64

/// A JSON event like the ones gen_events.py makes, `size`-ish bytes.
func event(_ i: Int, size: Int = 200) -> [UInt8] {
    var s = "{\"event_type\":\"page_view\",\"user_id\":\"u-\(i % 1000)\",\"seq\":\(i),\"pad\":\""
    let pad = max(0, size - s.utf8.count - 2)
    s += String(repeating: "x", count: pad) + "\"}"
    return Array(s.utf8)
}

func makeBatch(first: Int, count: Int, timestamp: Int64 = 1_700_000_000_000, valueSize: Int = 200, keyed: Bool = true) -> [UInt8] {
    let records = (0..<count).map { i in
        ProducerRecord(key: keyed ? Array("k\((first + i) % 17)".utf8) : nil, value: event(first + i, size: valueSize),
                       headers: i % 5 == 0 ? [.init(key: "h", value: [1, 2, 3])] : [], timestamp: timestamp + Int64(i))
    }
    return RecordBatchBuilder.build(records)
}

/// Every (offset, value) readable from `log`, walking from logStartOffset.
func readAll(_ log: PartitionLog, maxBytes: Int = 64 * 1024) throws -> [(Int64, [UInt8])] {
    var out: [(Int64, [UInt8])] = []
    var offset = log.logStartOffset
    while offset < log.logEndOffset {
        let result = try log.read(from: offset, maxBytes: maxBytes)
        guard let slice = result.slice else { break }
        try slice.forEachBatch { batch in
            try batch.forEachRecord { r in
                if r.offset >= offset { out.append((r.offset, Array(r.value!))) }
            }
        }
        precondition(result.nextOffset > offset, "read made no progress")
        offset = result.nextOffset
    }
    return out
}

extension LogConfig {
    static func small(segmentBytes: Int = 64 * 1024, flushMode: FlushMode = .os, indexIntervalBytes: Int = 1024) -> LogConfig {
        var c = LogConfig()
        c.segmentBytes = segmentBytes
        c.maxMessageBytes = min(c.maxMessageBytes, segmentBytes)
        c.flushMode = flushMode
        c.indexIntervalBytes = indexIntervalBytes
        c.segmentIndexBytes = 64 * 1024
        return c
    }
}

/// Names of files in a directory, sorted.
func listing(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
}
