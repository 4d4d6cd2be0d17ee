// Purchases per user and minute, with StrataStreams embedded in a Swift program.
//
//   purchases-per-user produce 20000   # append 20,000 purchases, keyed by user
//   purchases-per-user count           # count them per user and one-minute window, print the top users
//
// Data lives in ./strata-data (relative to the working directory). Run `count` again: nothing is
// counted twice (the application resumes from its committed position); `produce` more and
// `count` continues from there.
import StrataKit

struct Purchase: Codable {
    var user: String
    var amount: Double
    var ts: Int64  // event time, ms since the epoch
}

let strata = try Strata(directory: "strata-data")
try strata.createTopic("purchases", partitions: 4)
let arguments = CommandLine.arguments.dropFirst()

switch arguments.first {
case "produce":
    // Purchase i happens at start + i·600 ms (100 per minute), by one of 50 users (user-0 most often).
    let count = Int(arguments.dropFirst().first ?? "20000") ?? 20000
    let first = try strata.describeTopic("purchases").partitions.reduce(0) { $0 + Int($1.logEndOffset) }
    let start: Int64 = 1_767_225_600_000  // 2026-01-01T00:00:00Z
    let purchases = try (first..<first + count).map { i in
        let u = (i * 7919) % 1000
        let p = Purchase(user: "user-\(u * u / 20_000)", amount: Double(i % 100) + 0.99, ts: start + Int64(i) * 600)
        return try ProducerRecord(key: p.user, json: p)
    }
    try strata.produce("purchases", purchases)
    print("produced \(count) purchases (\(first + count) in all)")

case "count":
    let builder = StreamsBuilder()
    builder.stream("purchases", timestamp: .jsonField("ts"))
        .groupByKey()
        .windowedBy(.tumbling(sizeMs: 60_000, graceMs: 1_000))
        // One final count per user and minute; once the input goes quiet for 500 ms, stream
        // time follows the wall clock, so the last minutes are emitted too.
        .count("purchases-per-minute", emit: .onWindowCloseOrIdle(idleMs: 500))
        .toStream()
        .to("purchases-per-minute")
    let before = try outputCount()
    let app = strata.streamsApp("purchases-per-user", topology: try builder.build())
    try await app.start()
    guard await app.waitUntilCaughtUp(timeoutMs: 120_000) else { fatalError("not caught up: \(app.errors)") }
    await app.stop()

    // Sum the final per-minute counts per user.
    var totals: [String: Int] = [:]
    var windows = 0
    for try await record in strata.consume("purchases-per-minute", stopAtEnd: true) {
        guard let (user, _) = WindowedKey.decode(record.key ?? []), let n = Int(record.valueString ?? "") else { continue }
        totals[String(decoding: user, as: UTF8.self), default: 0] += n
        windows += 1
    }
    print("windows emitted this run: \(windows - before)")
    print("purchases counted: \(totals.values.reduce(0, +)) in \(windows) user-minutes")
    for (user, n) in totals.sorted(by: { ($0.value, $1.key) > ($1.value, $0.key) }).prefix(3) { print("  \(user): \(n)") }

default:
    print("usage: purchases-per-user produce [N] | count")
}
try strata.close()

/// Records in the output topic so far.
func outputCount() throws -> Int {
    guard strata.topics.contains("purchases-per-minute") else { return 0 }
    return try strata.describeTopic("purchases-per-minute").partitions.reduce(0) { $0 + Int($1.logEndOffset) }
}
