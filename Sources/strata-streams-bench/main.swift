// strata-streams-bench: throughput and latency of StrataStreams on an embedded broker.
//   strata-streams-bench [--events N] [--partitions P] [--rate R] [--seconds S]
//                        [--only stateless|count|latency] [--dir BASE]
#if canImport(Glibc)
import Glibc
#endif
import StrataStreams

var options = StreamBenchmarks.Options()
var base = "/tmp/strata-streams-bench"
var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    let a = args.removeFirst()
    guard !args.isEmpty else {
        print("usage: strata-streams-bench [--events N] [--partitions P] [--rate R] [--seconds S] [--only stateless|count|latency] [--dir BASE]")
        exit(a == "--help" || a == "-h" ? 0 : 2)
    }
    let v = args.removeFirst()
    switch a {
    case "--events": options.events = Int(v) ?? options.events
    case "--partitions": options.partitions = Int32(v) ?? options.partitions
    case "--rate": options.latencyRate = Int(v) ?? options.latencyRate
    case "--seconds": options.latencySeconds = Int(v) ?? options.latencySeconds
    case "--only": options.only = v
    case "--dir": base = v
    default:
        print("unknown option \(a)")
        exit(2)
    }
}
do {
    _ = try await StreamBenchmarks.run(baseDirectory: base, options: options) { print($0) }
    _ = system("rm -rf '\(base)'")
} catch {
    print("error: \(error)")
    _ = system("rm -rf '\(base)'")
    exit(1)
}
