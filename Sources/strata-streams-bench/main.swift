// strata-streams-bench: throughput and latency of StrataStreams on an embedded broker.
//   strata-streams-bench [--events N] [--partitions P] [--rate R] [--seconds S]
//                        [--only stateless|count|latency] [--dir BASE]
#if canImport(Glibc)
import Glibc
#endif
import StrataStreams

//   strata-streams-bench crash-child DIR   (for the kill -9 test: runs the sales dashboard over
//   DIR's "orders" topic with tiny chunks and frequent commits, printing progress, until killed)
import StrataBroker

if CommandLine.arguments.count == 3 && CommandLine.arguments[1] == "crash-child" {
    var o = Broker.Options()
    o.retentionCheckIntervalMs = 0
    o.cleanerBackoffMs = 0
    let broker = try Broker.open(dataDirectory: CommandLine.arguments[2], options: o)
    var config = StreamsConfig()
    config.maxReadBytes = 2048
    config.commitEveryRecords = 100
    config.commitIntervalMs = 600_000
    let app = StreamsApp(applicationId: "dashboard", topology: try StreamExamples.salesDashboard(), broker: broker, config: config)
    try await app.start()
    var last = -1
    while true {
        let m = app.metrics.snapshot
        if m.processed != last {
            last = m.processed
            print("processed \(m.processed) commits \(m.commits)")
            fflush(nil)
        }
        try await Task.sleep(nanoseconds: 2_000_000)
    }
}

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
