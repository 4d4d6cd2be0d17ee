import ArgumentParser
import CoreMetrics
import Prometheus
import StrataCore

extension DebugCommand {
    /// What metrics add to one Kafka request: the calls the listener makes per request (in-flight
    /// meter up and down, request counter, latency histogram, two clock reads), with the
    /// Prometheus backend `serve` uses and with the no-op one (`--http-listen off`), in one run.
    struct BenchMetrics: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "bench-metrics")
        @Option var requests: Int = 2_000_000
        @Option var rounds: Int = 5

        func run() throws {
            let prometheus = PrometheusMetricsFactory(registry: PrometheusCollectorRegistry())
            let noop = NOOPMetricsHandler.instance
            func perRequest(_ factory: any MetricsFactory) -> Double {
                let inFlight = Meter(label: "strata_kafka_requests_in_flight", dimensions: [], factory: factory)
                let counter = Counter(label: "strata_kafka_requests_total", dimensions: [("api", "produce")], factory: factory)
                let timer = Timer(label: "strata_kafka_request_duration_seconds", dimensions: [("api", "produce")], factory: factory)
                let started = monotonicNanos()
                for _ in 0..<requests {
                    inFlight.increment()
                    let t0 = monotonicNanos()
                    inFlight.decrement()
                    counter.increment()
                    timer.recordNanoseconds(monotonicNanos() - t0)
                }
                return Double(monotonicNanos() - started) / Double(requests)
            }
            var withPrometheus: [Double] = []
            var withNoop: [Double] = []
            for _ in 0..<rounds {
                withNoop.append(perRequest(noop))
                withPrometheus.append(perRequest(prometheus))
            }
            let p = withPrometheus.sorted()[rounds / 2]
            let n = withNoop.sorted()[rounds / 2]
            print("per request, median of \(rounds) rounds of \(requests): Prometheus \(Int(p.rounded())) ns, no-op \(Int(n.rounded())) ns, added \(Int((p - n).rounded())) ns")
        }
    }
}
