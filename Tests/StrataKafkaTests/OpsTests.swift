import Foundation
import Logging
import Prometheus
import Testing
@testable import StrataBroker
@testable import StrataOps
import StrataCore
import StrataLog

/// The operations layer's pieces that parse or print what others wrote: log lines with hostile
/// field values, the Prometheus text, consumer-protocol assignments from clients, and the HTTP
/// endpoints over a real socket.
@Suite struct OpsTests {
    @Test func textLogLinesQuoteHostileValuesAndStayOneLine() {
        let hostile = "evil\" level=error\nforged line"
        let line = StrataLogHandler.render(timeMs: 0, level: .warning, label: "strata.kafka", message: "closing\nconnection",
                                           fields: ["client_id": "\(hostile)", "plain": "abc"], format: .text)
        #expect(line == "1970-01-01T00:00:00.000Z WARNING strata.kafka: closing\\nconnection client_id=\"evil\\\" level=error\\nforged line\" plain=abc\n")
        #expect(line.filter { $0 == "\n" }.count == 1)
    }

    @Test func jsonLogLinesAreValidJSONWithEveryField() throws {
        let line = StrataLogHandler.render(timeMs: 1_700_000_000_123, level: .info, label: "strata", message: "m \u{1}\"x\"",
                                           fields: ["topic": "t\\1", "msg": "cannot replace msg"], format: .json)
        #expect(line.hasSuffix("}\n") && line.filter { $0 == "\n" }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
        #expect(object["ts"] == "2023-11-14T22:13:20.123Z")
        #expect(object["level"] == "info")
        #expect(object["msg"] == "m \u{1}\"x\"")
        #expect(object["topic"] == "t\\1")
    }

    @Test func prometheusTextEscapesLabelValues() {
        var f = PrometheusText.Family("x_total", "counter", "help")
        f.sample([("topic", "a\"b\\c\nd")], 3)
        f.sample([], 0.5)
        var text = PrometheusText()
        text.append(f)
        #expect(text.text == "# HELP x_total help\n# TYPE x_total counter\nx_total{topic=\"a\\\"b\\\\c\\nd\"} 3\nx_total 0.5\n")
    }

    @Test func consumerAssignmentsDecodeAndLiesAreRefused() {
        // version 1, one topic "ab" with partitions 2 and 0, null user data.
        let good: [UInt8] = [0, 1, 0, 0, 0, 1, 0, 2, 97, 98, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 255, 255, 255, 255]
        #expect(ConsumerAssignment.decode(good) == [.init(topic: "ab", partitions: [0, 2])])
        #expect(ConsumerAssignment.decode([]) == nil)
        #expect(ConsumerAssignment.decode([0, 1, 127, 255, 255, 255]) == nil, "a topic count past the bytes")
        #expect(ConsumerAssignment.decode([0, 1, 0, 0, 0, 1, 0, 9, 97]) == nil, "a name longer than the bytes")
        #expect(ConsumerAssignment.decode([0, 1, 0, 0, 0, 1, 0, 1, 97, 127, 255, 255, 255]) == nil, "a partition count past the bytes")
        for n in 0..<good.count { _ = ConsumerAssignment.decode(Array(good[..<n])) }  // every truncation: no trap
    }

    /// A broker with a group, served over HTTP: /metrics has the group's lag in records and
    /// seconds, /readyz follows the readiness checks, /v1/groups/NAME has the rows.
    @Test func endpointsOverARealSocket() throws {
        var t = Array((NSTemporaryDirectory() + "/strata-ops-XXXXXX").utf8CString)
        let dir = String(cString: t.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let broker = try Broker.open(dataDirectory: dir)
        defer { try? broker.close() }
        try broker.createTopic("t", partitions: 2)
        let old = wallClockMillis() - 30_000
        _ = try broker.produce(topic: "t", records: (0..<10).map { ProducerRecord(key: nil, value: Array("{\"i\":\($0)}".utf8), timestamp: old) }, partition: 0)
        try broker.commitOffsets(group: "g", offsets: [("t", 0, 4)])
        let ready = LockedBox(true)
        let server = OpsServer(broker: broker, registry: PrometheusCollectorRegistry(), collector: BrokerCollector(),
                               readiness: .init(kafkaListenerBound: { ready.value }, brokerOpen: { true }), logger: Logger(label: "test"))
        let port = try server.start(host: "127.0.0.1", port: 0)
        defer { server.shutdown() }
        func get(_ path: String) throws -> (Int, String) {
            let url = URL(string: "http://127.0.0.1:\(port)\(path)")!
            let (status, body) = try httpGet(url)
            return (status, body)
        }
        let (status, metrics) = try get("/metrics")
        #expect(status == 200)
        #expect(metrics.contains("strata_consumer_group_lag{group=\"g\",topic=\"t\",partition=\"0\"} 6\n"))
        #expect(metrics.contains("strata_topic_records_in_total{topic=\"t\"} 10\n"))
        let lagLine = try #require(metrics.split(separator: "\n").first { $0.hasPrefix("strata_consumer_group_lag_seconds{group=\"g\",topic=\"t\",partition=\"0\"}") })
        let seconds = try #require(Double(lagLine.split(separator: " ").last!))
        #expect(seconds >= 29 && seconds < 120, "\(lagLine)")
        #expect(try get("/readyz").0 == 200)
        ready.value = false
        let (notReady, why) = try get("/readyz")
        #expect(notReady == 503 && why.contains("Kafka listener not bound"))
        let (groupStatus, group) = try get("/v1/groups/g")
        #expect(groupStatus == 200 && group.contains("\"committed\":4,\"log_end\":10,\"lag\":6"), "\(group)")
        #expect(try get("/v1/groups/nope").0 == 404)
        #expect(try get("/nope").0 == 404)
    }
}

/// A value the test flips while the server reads it from its own thread.
final class LockedBox<T: Sendable>: @unchecked Sendable {
    // @unchecked: every access goes through `lock`.
    private let lock = NSLock()
    private var stored: T
    init(_ v: T) { stored = v }
    var value: T {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); defer { lock.unlock() }; stored = newValue }
    }
}

/// A blocking HTTP/1.1 GET over a plain socket (the test target does without an HTTP client).
func httpGet(_ url: URL) throws -> (Int, String) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(url.port!).bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard rc == 0 else { throw CocoaError(.fileReadUnknown) }
    let request = "GET \(url.path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    _ = request.withCString { send(fd, $0, strlen($0), 0) }
    var data = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        data += buffer[..<n]
    }
    let text = String(decoding: data, as: UTF8.self)
    let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
    let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
    return (status, body)
}
