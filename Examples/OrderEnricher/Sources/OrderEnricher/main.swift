// A consume-transform-produce service, exactly once, embedded in a Swift program.
//
//   order-enricher produce 5000   # append 5,000 orders
//   order-enricher run            # enrich every new order into `orders-enriched`, then exit when idle
//
// Each batch of orders read and the enriched orders written are committed in ONE transaction
// together with the group's input offsets: a crash at any point re-does the batch, and readers
// (read_committed, the default) never see an order twice. Data lives in ./strata-data.
import StrataKit

struct Order: Codable {
    var id: Int
    var customer: String
    var amount: Double
}

struct EnrichedOrder: Codable {
    var id: Int
    var customer: String
    var amount: Double
    var tax: Double
    var tier: String
}

let strata = try Strata(directory: "strata-data")
try strata.createTopic("orders", partitions: 3)
try strata.createTopic("orders-enriched", partitions: 3)
let arguments = CommandLine.arguments.dropFirst()

switch arguments.first {
case "produce":
    let count = Int(arguments.dropFirst().first ?? "5000") ?? 5000
    let first = try strata.describeTopic("orders").partitions.reduce(0) { $0 + Int($1.logEndOffset) }
    let orders = try (first..<first + count).map { i in
        try ProducerRecord(key: "customer-\(i % 40)", json: Order(id: i, customer: "customer-\(i % 40)", amount: Double(i % 500)))
    }
    try strata.produce("orders", orders)
    print("produced \(count) orders")

case "run":
    var options = GroupConsumer.Options()
    options.autoCommitIntervalMs = nil  // offsets are committed with the outputs, in the transaction
    let consumer = strata.consumer(group: "order-enricher", topics: ["orders"], options: options)
    let producer = try strata.transactionalProducer(id: "order-enricher-1")
    var enriched = 0
    while true {
        let batch = try await consumer.poll(timeoutMs: 1_000)
        if batch.isEmpty { break }  // idle for a second: done (a real service would keep polling)
        let outputs = try batch.map { record in
            let order: Order = try record.json()
            let out = EnrichedOrder(id: order.id, customer: order.customer, amount: order.amount,
                                    tax: (order.amount * 0.2 * 100).rounded() / 100, tier: order.amount >= 250 ? "gold" : "standard")
            return try ProducerRecord(key: record.key, json: out, timestamp: record.timestamp)
        }
        try producer.produce(topic: "orders-enriched", records: outputs)
        try producer.sendOffsets(group: "order-enricher", offsets: consumer.positions)
        try producer.commit()
        enriched += outputs.count
    }
    try consumer.close()
    var total = 0
    var gold = 0
    for try await record in strata.consume("orders-enriched", stopAtEnd: true) {
        total += 1
        if try record.json(as: EnrichedOrder.self).tier == "gold" { gold += 1 }
    }
    print("enriched this run: \(enriched)")
    print("orders-enriched: \(total) orders, \(gold) gold")

default:
    print("usage: order-enricher produce [N] | run")
}
try strata.close()
