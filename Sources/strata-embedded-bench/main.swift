// strata-embedded-bench: the embedded client API (StrataKit) beside the Broker calls it wraps,
// in one run: produce in batches, one record per call and Codable JSON; consume through the
// AsyncSequence and a group consumer beside Broker.fetch. Release build:
//   swift build -c release --product strata-embedded-bench
//   .build/release/strata-embedded-bench [--records N] [--dir BASE]
#if canImport(Glibc)
import Glibc
#endif
import StrataCore
import StrataKit

struct Event: Codable {
    var event_type: String
    var user_id: String
    var amount: Double
    var ts: Int64
    var page: String
}

var count = 1_000_000
var base = "/tmp"
var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    let a = args.removeFirst()
    switch a {
    case "--records" where !args.isEmpty: count = Int(args.removeFirst()) ?? count
    case "--dir" where !args.isEmpty: base = args.removeFirst()
    default:
        print("usage: strata-embedded-bench [--records N] [--dir BASE]")
        exit(2)
    }
}
let dir = "\(base)/strata-embedded-bench-\(getpid())"
let strata = try Strata(directory: dir)
let broker = strata.broker
let partitions: Int32 = 4
let batchSize = 1000

func event(_ i: Int) -> Event {
    Event(event_type: "purchase", user_id: "u-\(i % 5000)", amount: Double(i % 1000) + 0.5, ts: 1_767_225_600_000 + Int64(i),
          page: "/products/item-\(i % 300)")
}
func text(_ i: Int) -> String {
    let e = event(i)
    return "{\"event_type\":\"\(e.event_type)\",\"user_id\":\"\(e.user_id)\",\"amount\":\(e.amount),\"ts\":\(e.ts),\"page\":\"\(e.page)\"}"
}

func nanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

var baseline: [String: Double] = [:]
@MainActor func report(_ group: String, _ name: String, records: Int, since start: UInt64, baselineOf: String? = nil) {
    let seconds = Double(nanos() - start) / 1e9
    let rate = Double(records) / seconds
    if baselineOf == nil { baseline[group] = rate }
    let ratio = baseline[group].map { " \(Double(Int(rate / $0 * 100)) / 100)x" } ?? ""
    let padded = name + String(repeating: " ", count: max(1, 52 - name.count))
    print("\(padded) \(Int(rate)) records/s\(baselineOf == nil ? " (baseline)" : ratio)")
}

// Inputs prepared outside the timed sections (keys by user, as an application would).
let keys = (0..<count).map { "u-\($0 % 5000)" }
let values = (0..<count).map(text)

print("== produce, \(count) records of ~\(values[0].utf8.count) bytes, \(partitions) partitions, batches of \(batchSize), acks=all")
try strata.createTopic("direct", partitions: partitions)
var t = nanos()
for s in stride(from: 0, to: count, by: batchSize) {
    let slice = (s..<min(s + batchSize, count)).map { ProducerRecord(key: Array(keys[$0].utf8), value: Array(values[$0].utf8), timestamp: 0) }
    try broker.produce(topic: "direct", records: slice)
}
report("produce", "Broker.produce (bytes)", records: count, since: t)

try strata.createTopic("kit", partitions: partitions)
t = nanos()
for s in stride(from: 0, to: count, by: batchSize) {
    try strata.produce("kit", (s..<min(s + batchSize, count)).map { ProducerRecord(key: keys[$0], value: values[$0]) })
}
report("produce", "Strata.produce (String, batch)", records: count, since: t, baselineOf: "produce")

try strata.createTopic("json", partitions: partitions)
t = nanos()
for s in stride(from: 0, to: count, by: batchSize) {
    try strata.produce("json", (s..<min(s + batchSize, count)).map { try ProducerRecord(key: keys[$0], json: event($0)) })
}
report("produce", "Strata.produce (Codable JSON, batch)", records: count, since: t, baselineOf: "produce")

let singles = min(count, 100_000)
try strata.createTopic("single", partitions: partitions)
t = nanos()
for i in 0..<singles { try strata.produce("single", key: keys[i], value: values[i], acks: .leader) }
report("produce", "Strata.produce (one record per call, acks=leader)", records: singles, since: t, baselineOf: "produce")

print("== consume \(count) records")
t = nanos()
var n = 0
for p in 0..<partitions {
    var next: Int64 = 0
    while true {
        let r = try await broker.fetch(topic: "kit", partition: p, offset: next)
        guard let slice = r.slice else { break }
        n += try Broker.records(in: slice, topic: "kit", partition: p, from: next).count
        next = r.nextOffset
    }
}
precondition(n == count, "fetch read \(n)")
report("consume", "Broker.fetch + records(in:)", records: n, since: t)

t = nanos()
n = 0
for try await _ in strata.consume("kit", stopAtEnd: true) { n += 1 }
precondition(n == count, "consume read \(n)")
report("consume", "Strata.consume (AsyncSequence, stopAtEnd)", records: n, since: t, baselineOf: "consume")

t = nanos()
n = 0
var decoded = 0.0
for try await r in strata.consume("json", stopAtEnd: true) {
    decoded += try r.json(as: Event.self).amount
    n += 1
}
precondition(n == count, "json consume read \(n)")
report("consume", "Strata.consume + json(as:) decode", records: n, since: t, baselineOf: "consume")

t = nanos()
n = 0
var users = 0
for try await r in strata.consume("json", stopAtEnd: true) {
    if r.jsonFields(["user_id", "amount"])[0] != nil { users += 1 }
    n += 1
}
precondition(n == count && users == count, "json scan read \(n)")
report("consume", "Strata.consume + jsonFields([2 members])", records: n, since: t, baselineOf: "consume")

var options = GroupConsumer.Options()
options.maxRecordsPerPoll = 500
let consumer = strata.consumer(group: "bench", topics: ["kit"], options: options)
t = nanos()
n = 0
while n < count {
    n += try await consumer.poll(timeoutMs: 1000).count
}
try consumer.close()
report("consume", "GroupConsumer.poll (commits every 5 s)", records: n, since: t, baselineOf: "consume")

try strata.close()
_ = system("rm -rf '\(dir)'")
