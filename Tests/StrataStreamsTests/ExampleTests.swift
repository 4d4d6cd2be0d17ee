import Foundation
import Testing
import StrataBroker
import StrataLog
@testable import StrataStreams

@Suite struct ExampleTests {
    @Test func orderChainEndsEveryOrderInExactlyOneNotification() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        var options = StreamExamples.RunOptions()
        options.orders = 1200
        let lines = Collected()
        let summary = try await StreamExamples.run(.orderChain, broker: broker, options: options) { lines.add($0) }
        let orders = OrderGenerator().orders(0..<1200)
        let declined = orders.filter { Partitioner.murmur2(Array($0.orderId.utf8)) % 10 == 0 }
        let outOfStock: Set<String> = ["p-3", "p-7"]
        let shipped = orders.filter { o in !declined.contains { $0.orderId == o.orderId } && !outOfStock.contains(o.product) }
        #expect(summary.topicCounts["payments"] == 1200)
        #expect(summary.topicCounts["stock-reservations"] == 1200 - declined.count)
        #expect(summary.topicCounts["shipments"] == shipped.count)
        #expect(summary.topicCounts["notifications"] == 1200, "declined, backordered or delivered: one notification per order")
        let notifications = try readTopic(broker, "notifications")
        #expect(Set(notifications.compactMap(\.key)) == Set(orders.map(\.orderId)))
        let delivered = notifications.filter { $0.value?.contains("delivered by") == true }.compactMap(\.key)
        #expect(Set(delivered) == Set(shipped.map(\.orderId)))
        #expect(!declined.isEmpty && shipped.count < 1200 - declined.count, "every branch is exercised")
        #expect(lines.all.last?.contains("notifications: 1200") == true)
    }

    @Test func salesDashboardTotalsMatchTheGeneratedOrders() async throws {
        let dir = TempDir()
        let broker = try openBroker(dir)
        var options = StreamExamples.RunOptions()
        options.orders = 3000
        let summary = try await StreamExamples.run(.dashboard, broker: broker, options: options) { _ in }
        var expected: [String: (orders: Int64, cents: Int64)] = [:]
        for o in OrderGenerator().orders(0..<3000) {
            let start = o.timestamp - o.timestamp % 60_000
            let k = "\(o.product)@\(start)"
            expected[k, default: (0, 0)].orders += 1
            expected[k, default: (0, 0)].cents += o.amountCents
        }
        #expect(summary.metrics.lateDropped == 0, "lateness stays within the grace period")
        var got: [String: (orders: Int64, cents: Int64)] = [:]
        for r in summary.dashboard { got["\(r.product)@\(r.windowStart)"] = (r.orders, r.revenueCents) }
        #expect(got.count == expected.count)
        for (k, v) in expected { #expect(got[k]?.orders == v.orders && got[k]?.cents == v.cents, "\(k)") }
        // The output topic holds the same rows (latest per product and window).
        let rows = latest(try readTopic(broker, "sales-dashboard"))
        #expect(rows.count == expected.count)
        for (key, value) in rows {
            guard let (product, window) = WindowedKey.decode(Array(key.utf8)), let value else {
                Issue.record("bad row \(key)")
                continue
            }
            let f = JSON.fields([Array("orders".utf8), Array("revenue".utf8)], in: Array(value.utf8))
            let e = expected["\(String(decoding: product, as: UTF8.self))@\(window.start)"]
            #expect(f[0]?.int64 == e?.orders && f[1]?.cents == e?.cents)
        }
        #expect(StreamExamples.DashboardTable().render().hasPrefix("window"))
    }

    @Test func jsonMembersAreFoundAtTheTopLevelOnly() {
        let r = StreamRecord(key: "k", value: #"{"nested":{"user_id":"inner","x":"}"},"arr":[1,"]",{"a":2}], "user_id" : "u-\"7","n":-12.5e1,"t":true,"z":null}"#, timestamp: 0)
        #expect(r.jsonString("user_id") == "u-\"7")
        #expect(r.jsonDouble("n") == -125)
        #expect(r.jsonString("t") == "true")
        #expect(r.jsonString("missing") == nil)
        #expect(r.jsonFields(["z", "arr", "n"]).map { $0?.text } == ["null", #"[1,"]",{"a":2}]"#, "-12.5e1"])
        #expect(StreamRecord(key: "k", value: "[1,2]", timestamp: 0).jsonString("a") == nil)
        #expect(StreamRecord(key: "k", value: #"{"a":"#, timestamp: 0).jsonString("a") == nil)
        #expect(StreamRecord(key: "k", value: #"{"a":"x"#, timestamp: 0).jsonString("a") == nil)
        #expect(JSON.timestampField(Array("ts".utf8), in: Array(#"{"ts":"2025-10-01T00:00:01Z"}"#.utf8)) == 1_759_276_801_000)
    }

    @Test func rfc3339FormattingRoundTrips() {
        for ms: Int64 in [0, 1_759_276_800_000, 1_759_276_805_120, 951_782_400_999, 4_102_444_799_999] {
            #expect(Timestamps.parseRFC3339(formatRFC3339(ms)) == ms, "\(ms)")
        }
        #expect(formatRFC3339(1_759_276_805_120) == "2025-10-01T00:00:05.120Z")
        #expect(JSON.parseCents("19.99") == 1999 && JSON.parseCents("-0.5") == -50 && JSON.parseCents("3") == 300)
        #expect(JSON.formatCents(1999) == "19.99" && JSON.formatCents(5) == "0.05" && JSON.formatCents(-150) == "-1.50")
    }
}
