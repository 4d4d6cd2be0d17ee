import CoreMetrics
import StrataCore
import Synchronization

/// The Kafka listener's metrics, through the swift-metrics facade (no-ops unless a backend is
/// bootstrapped, as `strata serve` does before it starts the listener). Every handle is made once,
/// when the server starts: the request path indexes arrays and never builds a label.
final class KafkaMetrics: Sendable {
    /// Indexed by API key; nil for keys this broker does not serve.
    private let requests: [Counter?]
    private let durations: [Timer?]
    /// (api, error code) → counter; errors are rare, so a lock and a lazily filled table serve.
    private let errors = Mutex<[Int32: Counter]>([:])
    let connections = Meter(label: "strata_kafka_connections")
    let inFlight = Meter(label: "strata_kafka_requests_in_flight")
    let connectionsClosedOnError = Counter(label: "strata_kafka_connections_closed_on_error_total")

    init() {
        let slots = Int(ApiKey.allCases.map(\.rawValue).max()!) + 1
        var requests = [Counter?](repeating: nil, count: slots)
        var durations = [Timer?](repeating: nil, count: slots)
        for api in ApiKey.allCases {
            requests[Int(api.rawValue)] = Counter(label: "strata_kafka_requests_total", dimensions: [("api", api.metricName)])
            durations[Int(api.rawValue)] = Timer(label: "strata_kafka_request_duration_seconds", dimensions: [("api", api.metricName)])
        }
        self.requests = requests
        self.durations = durations
    }

    /// A request of `api` was answered after `nanoseconds` (from parsing to the response queued).
    func answered(_ apiKey: Int16, nanoseconds: Int64) {
        guard apiKey >= 0, Int(apiKey) < requests.count else { return }
        requests[Int(apiKey)]?.increment()
        durations[Int(apiKey)]?.recordNanoseconds(nanoseconds)
    }

    /// Counts the error codes a response carries.
    func countErrors(_ api: ApiKey, _ response: some KafkaResponseBody) {
        response.forEachErrorCode { code in
            guard code != .none else { return }
            let key = Int32(api.rawValue) << 16 | Int32(UInt16(bitPattern: code.rawValue))
            let counter = errors.withLock { table in
                if let c = table[key] { return c }
                let c = Counter(label: "strata_kafka_errors_total", dimensions: [("api", api.metricName), ("code", code.metricName)])
                table[key] = c
                return c
            }
            counter.increment()
        }
    }
}

extension ApiKey {
    /// snake_case, as the metric label: list_offsets, offset_commit, ...
    var metricName: String { snakeCase(String(describing: self), upper: false) }
}

extension ErrorCode {
    /// Kafka's name for the code: OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION, ...
    var metricName: String { snakeCase(String(describing: self), upper: true) }
}

private func snakeCase(_ camel: String, upper: Bool) -> String {
    var out = ""
    for ch in camel {
        if ch.isUppercase, !out.isEmpty { out.append("_") }
        out.append(contentsOf: upper ? ch.uppercased() : ch.lowercased())
    }
    return out
}

// MARK: Error codes per response

extension ProduceResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for t in topics { for p in t.partitions { body(p.errorCode) } } }
}
extension FetchResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for t in topics { for p in t.partitions { body(p.errorCode) } } }
}
extension ListOffsetsResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for t in topics { for p in t.partitions { body(p.errorCode) } } }
}
extension MetadataResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) {
        for t in topics {
            body(t.errorCode)
            for p in t.partitions { body(p.errorCode) }
        }
    }
}
extension PartitionErrorsResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) {
        if let topLevelError { body(topLevelError) }
        for t in topics { for p in t.partitions { body(p.errorCode) } }
    }
}
extension OffsetFetchResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) {
        body(errorCode)
        for t in topics { for p in t.partitions { body(p.errorCode) } }
    }
}
extension JoinGroupResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { body(errorCode) }
}
extension SyncGroupResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { body(errorCode) }
}
extension ErrorOnlyResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { body(errorCode) }
}
extension LeaveGroupResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) {
        body(errorCode)
        for m in members { body(m.errorCode) }
    }
}
extension FindCoordinatorResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for c in coordinators { body(c.errorCode) } }
}
extension DescribeGroupsResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for g in groups { body(g.errorCode) } }
}
extension DeleteGroupsResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for r in results { body(r.errorCode) } }
}
extension CreateTopicsResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for t in topics { body(t.errorCode) } }
}
extension DeleteTopicsResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for r in results { body(r.errorCode) } }
}
extension TopicErrorsResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for r in results { body(r.errorCode) } }
}
extension DeleteRecordsResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for t in topics { for p in t.partitions { body(p.errorCode) } } }
}
extension InitProducerIdResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { body(errorCode) }
}
extension DescribeConfigsResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for r in results { body(r.errorCode) } }
}
extension AlterConfigsResponse {
    func forEachErrorCode(_ body: (ErrorCode) -> Void) { for r in results { body(r.errorCode) } }
}
