import StrataBroker
import StrataCore
import StrataLog
import Synchronization

/// RFC 3339 text of epoch milliseconds (UTC), e.g. `2025-10-01T00:00:05.120Z`.
public func formatRFC3339(_ ms: Int64) -> String {
    let days = Int64((Double(ms) / 86_400_000).rounded(.down))
    var rem = ms - days * 86_400_000
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = doy - (153 * mp + 2) / 5 + 1
    let m = mp < 10 ? mp + 3 : mp - 9
    let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
    let h = rem / 3_600_000; rem %= 3_600_000
    let mi = rem / 60_000; rem %= 60_000
    let s = rem / 1000, milli = rem % 1000
    func pad(_ v: Int64, _ n: Int) -> String {
        let t = String(v)
        return String(repeating: "0", count: max(0, n - t.count)) + t
    }
    return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(h, 2)):\(pad(mi, 2)):\(pad(s, 2)).\(pad(milli, 3))Z"
}

/// Synthetic orders for the examples: `{"order_id","customer","product","quantity","amount","ts"}`
/// keyed by product (the orders topic is partitioned by product, so per-product aggregations and
/// the inventory join need no repartitioning), deterministic for a seed. Event times advance ~`meanGapMs` per order; a
/// share of orders arrive late (event time up to `maxLatenessMs` behind), as real clients do.
public struct OrderGenerator: Sendable {
    public static let products: [(id: String, name: String, priceCents: Int64)] = [
        ("p-1", "espresso machine", 24_900), ("p-2", "coffee grinder", 8_950), ("p-3", "milk frother", 3_499),
        ("p-4", "tamper", 1_999), ("p-5", "beans 1kg", 2_450), ("p-6", "scale", 2_999), ("p-7", "kettle", 5_900),
        ("p-8", "cups (6)", 1_850),
    ]

    public var seed: UInt64
    public var startMs: Int64
    public var meanGapMs: Int64
    public var latePercent: Int
    public var maxLatenessMs: Int64
    public var customers: Int

    public init(seed: UInt64 = 42, startMs: Int64 = 1_759_276_800_000, meanGapMs: Int64 = 250, latePercent: Int = 5,
                maxLatenessMs: Int64 = 8_000, customers: Int = 500) {
        self.seed = seed
        self.startMs = startMs
        self.meanGapMs = meanGapMs
        self.latePercent = latePercent
        self.maxLatenessMs = maxLatenessMs
        self.customers = customers
    }

    public struct Order: Sendable {
        public var orderId: String
        public var customer: String
        public var product: String
        public var quantity: Int64
        public var amountCents: Int64
        public var timestamp: Int64

        public var json: [UInt8] {
            JSONObjectWriter().string("order_id", orderId).string("customer", customer).string("product", product)
                .int("quantity", quantity).raw("amount", JSON.formatCents(amountCents)).string("ts", formatRFC3339(timestamp)).json
        }
        public var record: ProducerRecord { ProducerRecord(key: Array(product.utf8), value: json, timestamp: timestamp) }
    }

    /// Orders `range` (order numbers are global, so chunks generate the same orders as one call).
    public func orders(_ range: Range<Int>) -> [Order] {
        range.map { n in
            var rng = SplitMix64(seed: seed &+ UInt64(n) &* 0x9E37_79B9)
            let p = Self.products[Int(rng.next() % UInt64(Self.products.count))]
            let q = Int64(1 + rng.next() % 3)
            var t = startMs + Int64(n) * meanGapMs + Int64(rng.next() % UInt64(max(1, meanGapMs)))
            if Int(rng.next() % 100) < latePercent { t -= Int64(rng.next() % UInt64(max(1, maxLatenessMs))) }
            return Order(orderId: "o-\(n)", customer: "c-\(rng.next() % UInt64(customers))", product: p.id, quantity: q,
                         amountCents: p.priceCents * q, timestamp: t)
        }
    }

    /// The inventory table the order chain joins: product → `{"product","name","stock","warehouse"}`;
    /// two products are out of stock.
    public static func inventory(timestamp: Int64) -> [ProducerRecord] {
        products.enumerated().map { i, p in
            let stock: Int64 = (i == 2 || i == 6) ? 0 : Int64(100 + i * 10)
            let v = JSONObjectWriter().string("product", p.id).string("name", p.name).int("stock", stock)
                .string("warehouse", i % 2 == 0 ? "lyon" : "porto").json
            return ProducerRecord(key: Array(p.id.utf8), value: v, timestamp: timestamp)
        }
    }
}

/// One row of the sales dashboard: orders and revenue of a product in a one-minute window.
public struct DashboardRow: Sendable, Equatable, StateValue {
    public var product: String
    public var windowStart: Int64
    public var windowEnd: Int64
    public var orders: Int64
    public var revenueCents: Int64

    public init(product: String = "", windowStart: Int64 = 0, windowEnd: Int64 = 0, orders: Int64 = 0, revenueCents: Int64 = 0) {
        self.product = product
        self.windowStart = windowStart
        self.windowEnd = windowEnd
        self.orders = orders
        self.revenueCents = revenueCents
    }

    /// As stored and emitted: `{"orders":N,"revenue":"12.34"}` (the aggregate of the window).
    public var stateBytes: [UInt8] {
        JSONObjectWriter().int("orders", orders).raw("revenue", JSON.formatCents(revenueCents)).json
    }

    public init?(stateBytes: [UInt8]) {
        let f = JSON.fields([Array("orders".utf8), Array("revenue".utf8)], in: stateBytes)
        guard let o = f[0]?.int64, let r = f[1]?.cents else { return nil }
        self.init(orders: o, revenueCents: r)
    }

    /// The dashboard's output record value.
    public var json: [UInt8] {
        JSONObjectWriter().string("product", product).string("window_start", formatRFC3339(windowStart))
            .string("window_end", formatRFC3339(windowEnd)).int("orders", orders).raw("revenue", JSON.formatCents(revenueCents)).json
    }
}

/// The runnable examples of `strata streams run`, as library code.
public enum StreamExamples {
    public enum Example: String, CaseIterable, Sendable {
        case orderChain = "order-chain"
        case dashboard
    }

    // MARK: Order chain

    /// Topic names of the order chain.
    public struct OrderChainTopics: Sendable {
        public var orders = "orders"
        public var inventory = "inventory"
        public var payments = "payments"
        public var reservations = "stock-reservations"
        public var shipments = "shipments"
        public var notifications = "notifications"
        public init() {}
        public var all: [String] { [orders, inventory, payments, reservations, shipments, notifications] }
    }

    /// The order chain: an order placed → payment (paid or declined) → stock reserved or
    /// backordered (a join with the `inventory` table; orders and payments are keyed by product,
    /// like the table) → shipment → delivered notification. Every step is a stream transform
    /// reacting to the previous step's topic; declines and backorders become notifications too,
    /// so every order ends in exactly one notification (keyed by order id).
    public static func orderChain(topics: OrderChainTopics = OrderChainTopics()) throws -> Topology {
        let b = StreamsBuilder()
        // 1. Payment: declined for ~1 order in 10 (deterministic per order id).
        b.stream(topics.orders, timestamp: .jsonField("ts"))
            .mapValues { r in
                let f = r.jsonFields(["order_id", "product", "amount", "customer"])
                guard let id = f[0]?.text else { return nil }
                let declined = Partitioner.murmur2(Array(id.utf8)) % 10 == 0
                return JSONObjectWriter().string("order_id", id).string("customer", f[3]?.text).string("product", f[1]?.text)
                    .raw("amount", f[2]?.text ?? "0").string("status", declined ? "declined" : "paid").json
            }
            .filter { $0.value != nil }
            .to(topics.payments)
        // 2. Stock: paid orders joined with the inventory table (both keyed by product).
        let inventory = b.table(topics.inventory, storeName: "inventory-table")
        let payments = b.stream(topics.payments).branch([
            { $0.jsonString("status") == "paid" },
            { $0.jsonString("status") == "declined" },
        ])
        payments[0]
            .leftJoin(inventory) { payment, item in
                let p = payment.jsonFields(["order_id", "customer"])
                let stock = item.flatMap { JSON.fields([Array("stock".utf8), Array("warehouse".utf8)], in: $0) }
                let inStock = (stock?[0]?.int64 ?? 0) > 0
                return JSONObjectWriter().string("order_id", p[0]?.text).string("customer", p[1]?.text)
                    .string("product", payment.keyString).string("status", inStock ? "reserved" : "backordered")
                    .string("warehouse", inStock ? stock?[1]?.text : nil).json
            }
            .selectKey { $0.jsonString("order_id") }
            .to(topics.reservations)
        payments[1]
            .selectKey { $0.jsonString("order_id") }
            .mapValues { r in
                JSONObjectWriter().string("order_id", r.jsonString("order_id")).string("customer", r.jsonString("customer"))
                    .string("message", "payment declined").json
            }
            .to(topics.notifications)
        // 3. Shipment for reserved stock; backorders notify the customer.
        let reservations = b.stream(topics.reservations).branch([
            { $0.jsonString("status") == "reserved" },
            { $0.jsonString("status") == "backordered" },
        ])
        reservations[0]
            .mapValues { r in
                let f = r.jsonFields(["order_id", "customer", "warehouse"])
                let id = f[0]?.text ?? ""
                return JSONObjectWriter().string("order_id", id).string("customer", f[1]?.text).string("from", f[2]?.text)
                    .string("carrier", Partitioner.murmur2(Array(id.utf8)) & 1 == 0 ? "colissimo" : "ups")
                    .string("tracking", "TRK-\(String(UInt32(bitPattern: Partitioner.murmur2(Array(id.utf8))), radix: 16))").json
            }
            .to(topics.shipments)
        reservations[1]
            .selectKey { $0.jsonString("order_id") }
            .mapValues { r in
                JSONObjectWriter().string("order_id", r.jsonString("order_id")).string("customer", r.jsonString("customer"))
                    .string("message", "backordered: \(r.jsonString("product") ?? "?") is out of stock").json
            }
            .to(topics.notifications)
        // 4. Delivered notification.
        b.stream(topics.shipments)
            .mapValues { r in
                let f = r.jsonFields(["order_id", "customer", "carrier", "tracking"])
                return JSONObjectWriter().string("order_id", f[0]?.text).string("customer", f[1]?.text)
                    .string("message", "delivered by \(f[2]?.text ?? "?") (\(f[3]?.text ?? "?"))").json
            }
            .to(topics.notifications)
        return try b.build()
    }

    // MARK: Sales dashboard

    /// Revenue and order count per product per one-minute tumbling window of event time (the
    /// order's `ts`, 10 s grace for late orders; the input is keyed by product, so no
    /// repartitioning reorders it), updated with every order: each update is written
    /// to `output` keyed `<product>@<start>-<end>` (compacted: the latest row per window) and
    /// passed to `onRow` (called on the processing task: keep it quick).
    public static func salesDashboard(input: String = "orders", output: String = "sales-dashboard", windowMs: Int64 = 60_000,
                                      graceMs: Int64 = 10_000, emit: EmitStrategy = .onUpdate,
                                      onRow: (@Sendable (DashboardRow) -> Void)? = nil) throws -> Topology {
        let b = StreamsBuilder()
        let updates = b.stream(input, timestamp: .jsonField("ts"))
            .groupByKey()
            .windowedBy(.tumbling(sizeMs: windowMs, graceMs: graceMs))
            .aggregate("sales-per-minute", emit: emit, initializer: { DashboardRow() }) { r, row in
                var row = row
                row.orders += 1
                // Amounts come from input: an absurd one must not trap the processor.
                let (revenue, overflow) = row.revenueCents.addingReportingOverflow(r.jsonFields(["amount"])[0]?.cents ?? 0)
                if !overflow { row.revenueCents = revenue }
                return row
            }
            .toStream()
            .map { r in
                guard let w = r.window, let key = r.key, let base = WindowedKey.decode(key), let v = r.value,
                      var row = DashboardRow(stateBytes: v) else { return r }
                row.product = String(decoding: base.key, as: UTF8.self)
                row.windowStart = w.start
                row.windowEnd = w.end
                return r.withValue(row.json)
            }
        if let onRow {
            updates.peek { r in
                guard let v = r.value, let w = r.window else { return }
                let f = JSON.fields([Array("product".utf8), Array("orders".utf8), Array("revenue".utf8)], in: v)
                onRow(DashboardRow(product: f[0]?.text ?? "", windowStart: w.start, windowEnd: w.end, orders: f[1]?.int64 ?? 0,
                                   revenueCents: f[2]?.cents ?? 0))
            }.to(output)
        } else {
            updates.to(output)
        }
        return try b.build()
    }

    /// The dashboard topology and its updated rows as an `AsyncStream` (finished when the
    /// application stops consuming it; rows are buffered newest-first up to `bufferSize`).
    public static func salesDashboardRows(input: String = "orders", output: String = "sales-dashboard",
                                          bufferSize: Int = 10_000) throws -> (Topology, AsyncStream<DashboardRow>) {
        let (stream, continuation) = AsyncStream.makeStream(of: DashboardRow.self, bufferingPolicy: .bufferingNewest(bufferSize))
        let topology = try salesDashboard(input: input, output: output, onRow: { continuation.yield($0) })
        return (topology, stream)
    }

    /// The latest row per (product, window), for printing as a live table.
    public final class DashboardTable: Sendable {
        private let rows = Mutex<[String: DashboardRow]>([:])
        public init() {}

        public func update(_ row: DashboardRow) {
            rows.withLock { $0["\(row.windowStart)|\(row.product)"] = row }
        }

        public var all: [DashboardRow] {
            rows.withLock { Array($0.values) }.sorted { ($0.windowStart, $0.product) < ($1.windowStart, $1.product) }
        }

        /// The last `windows` minutes as a text table: one line per product and window.
        public func render(windows: Int = 3) -> String {
            let all = self.all
            let starts = Array(Set(all.map(\.windowStart))).sorted().suffix(windows)
            var out = "window (UTC)              product  orders    revenue\n"
            for s in starts {
                for r in all where r.windowStart == s {
                    let t = String(formatRFC3339(s).prefix(19))
                    let revenue = JSON.formatCents(r.revenueCents)
                    out += "\(t)       \(r.product.padRight(8))\(String(r.orders).leftPad(6))\(revenue.leftPad(11))\n"
                }
            }
            return out
        }
    }

    // MARK: Running an example

    public struct RunOptions: Sendable {
        /// Orders to generate (0: none, only process what the topics hold).
        public var orders = 2_000
        public var seed: UInt64 = 42
        /// Orders per second (0: as fast as possible).
        public var ratePerSecond = 0
        public var partitions: Int32 = 4
        /// Keep running (processing new input) until the calling task is cancelled.
        public var follow = false
        /// Application id (default: the example's name).
        public var applicationId: String?
        public var config = StreamsConfig()
        public init() {}
    }

    public struct RunSummary: Sendable {
        /// Records per topic (input, intermediate and output topics of the example).
        public var topicCounts: [String: Int]
        public var metrics: StreamsMetrics.Snapshot
        /// Dashboard only: the latest rows.
        public var dashboard: [DashboardRow]
    }

    /// Creates the example's topics, starts it, feeds it generated orders (paced by
    /// `ratePerSecond`), waits until everything is processed, prints progress through `print`
    /// (the dashboard prints its live table), and stops it. `strata streams run EXAMPLE` calls this.
    public static func run(_ example: Example, broker: Broker, options: RunOptions = RunOptions(),
                           print: @escaping @Sendable (String) -> Void) async throws -> RunSummary {
        let table = DashboardTable()
        let topology: Topology
        var topics: [String]
        switch example {
        case .orderChain:
            let t = OrderChainTopics()
            topics = t.all
            for name in t.all where broker.partitionCount(name) == nil {
                try broker.createTopic(name, partitions: options.partitions, configs: name == t.inventory ? ["cleanup.policy": "compact"] : [:])
            }
            if try broker.describeTopic(t.inventory).partitions.allSatisfy({ $0.logEndOffset == 0 }) {
                try broker.produce(topic: t.inventory, records: OrderGenerator.inventory(timestamp: OrderGenerator().startMs - 60_000))
            }
            topology = try orderChain(topics: t)
        case .dashboard:
            topics = ["orders", "sales-dashboard"]
            if broker.partitionCount("orders") == nil { try broker.createTopic("orders", partitions: options.partitions) }
            if broker.partitionCount("sales-dashboard") == nil {
                try broker.createTopic("sales-dashboard", partitions: options.partitions, configs: ["cleanup.policy": "compact"])
            }
            topology = try salesDashboard(onRow: { table.update($0) })
        }
        let app = StreamsApp(applicationId: options.applicationId ?? example.rawValue, topology: topology, broker: broker, config: options.config)
        try await app.start()
        do {
            let generator = OrderGenerator(seed: options.seed)
            let existing = Int(try broker.describeTopic("orders").partitions.reduce(0) { $0 + $1.logEndOffset })
            var produced = 0
            var lastPrint = monotonicMillis()
            let began = monotonicMillis()
            let chunk = options.ratePerSecond > 0 ? max(1, min(500, options.ratePerSecond / 20)) : 1000
            while produced < options.orders {
                try Task.checkCancellation()
                let n = min(chunk, options.orders - produced)
                try broker.produce(topic: "orders", records: generator.orders((existing + produced)..<(existing + produced + n)).map(\.record), acks: .leader)
                produced += n
                if options.ratePerSecond > 0 {
                    let due = began + Int64(produced) * 1000 / Int64(options.ratePerSecond)
                    let wait = due - monotonicMillis()
                    if wait > 0 { try await Task.sleep(nanoseconds: UInt64(wait) * 1_000_000) }
                }
                if monotonicMillis() - lastPrint >= 1000 {
                    lastPrint = monotonicMillis()
                    print(example == .dashboard ? "\u{1B}[2J\u{1B}[H" + table.render() : progressLine(app, produced))
                }
            }
            _ = await app.waitUntilCaughtUp(timeoutMs: 120_000)
            if options.follow {
                while !Task.isCancelled {
                    try? await Task.sleep(nanoseconds: 1_000_000_000)
                    print(example == .dashboard ? "\u{1B}[2J\u{1B}[H" + table.render() : progressLine(app, produced))
                }
            }
        } catch {
            await app.stop()
            throw error
        }
        await app.stop()
        if let e = app.errors.first { throw StreamsError.invalidTopology("task failed: \(e)") }
        var counts: [String: Int] = [:]
        for t in topics { counts[t] = Int(try broker.describeTopic(t).partitions.reduce(0) { $0 + $1.logEndOffset - $1.logStartOffset }) }
        if example == .dashboard {
            print(table.render(windows: 5))
        } else {
            print(counts.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "\n"))
        }
        return RunSummary(topicCounts: counts, metrics: app.metrics.snapshot, dashboard: table.all)
    }

    static func progressLine(_ app: StreamsApp, _ produced: Int) -> String {
        let m = app.metrics.snapshot
        return "orders produced \(produced), records processed \(m.processed), outputs \(m.produced), commits \(m.commits)"
    }
}

extension String {
    func padRight(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
