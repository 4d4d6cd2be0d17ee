// libFuzzer target: the cold segment format (StrataLog/Cold, docs/format.md "Cold segments"). The
// input's first byte picks a mode; the rest is split at newlines into record values:
//  - even: the values (with keys that are sometimes one of their strings) go through
//    ColdBlock.encode and decode, which must give back every record exactly; for each value,
//    if strata_json_shape accepts it, its literals and slots must concatenate to the value, and
//    strata_json_top_members (strata export's member walker) must accept the same objects;
//  - odd: the block encoded from the values is damaged at positions the input chooses, and
//    decoding it must refuse or succeed without trapping, and whatever it returns must encode
//    and decode to itself; opening it for a column scan (ColdColumnarBlock) must refuse or
//    succeed without trapping as well. See docs/fuzzing.md.
@testable import StrataLog
import CStrataScan

func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String = "invariant broken",
             file: StaticString = #file, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}

func checkShape(_ value: [UInt8]) {
    var slots = [strata_json_slot](repeating: strata_json_slot(), count: 600)
    let n = Int(value.withUnsafeBufferPointer { strata_json_shape($0.baseAddress, $0.count, &slots, 600) })
    // The export's member walker and the shape walker are two strict RFC 8259 readers: on an
    // object they must agree (below the shape walker's 600-scalar cap).
    var members = [strata_json_member](repeating: strata_json_member(), count: 8)
    let m = Int(value.withUnsafeBufferPointer { strata_json_top_members($0.baseAddress, $0.count, &members, 8) })
    if m >= 0 { require(n >= 0 || value.filter({ $0 == UInt8(ascii: ",") }).count >= 599, "a member walker's object is not a shape") }
    if n >= 0, value.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "{") {
        require(m >= 0, "a shape's object is refused by the member walker")
    }
    guard n >= 0 else { return }
    var rebuilt: [UInt8] = []
    var at = 0
    for k in 0..<n {
        let start = Int(slots[k].start), length = Int(slots[k].length)
        require(start >= at && start + length <= value.count, "slot \(k) out of order or bounds")
        rebuilt.append(contentsOf: value[at..<(start + length)])
        at = start + length
    }
    rebuilt.append(contentsOf: value[at...])
    require(rebuilt == value, "literals and slots do not give the value back")
}

func batches(_ values: [[UInt8]]) -> [ColdBatch] {
    var out: [ColdBatch] = []
    var offset: Int64 = 100
    for (b, chunk) in stride(from: 0, to: values.count, by: 7).map({ (i: Int) in (i, Array(values[i..<min(values.count, i + 7)])) }) {
        var records: [ColdRecord] = []
        for (i, v) in chunk.enumerated() {
            // Keys: null, the value's first quoted text (often a string slot), or fixed bytes.
            var key: [UInt8]? = nil
            if i % 3 == 1, let q = v.firstIndex(of: UInt8(ascii: "\"")), let e = v[(q + 1)...].firstIndex(of: UInt8(ascii: "\"")) {
                key = Array(v[(q + 1)..<e])
            } else if i % 3 == 2 {
                key = [0xFF, UInt8(truncatingIfNeeded: i)]
            }
            let value: [UInt8]? = v == [0x7E] ? nil : v  // a lone "~" stands for a null value
            records.append(ColdRecord(offset: offset, timestamp: 1_700_000_000_000 + Int64(i * 37) - Int64(b), key: key, value: value,
                                      headers: i % 4 == 3 ? [ColdHeader(key: Array(v.prefix(3)), value: nil)] : []))
            offset += 1 + Int64(i % 2)
        }
        let base = records[0].offset
        out.append(ColdBatch(baseOffset: base, lastOffsetDelta: Int32(records[records.count - 1].offset - base), partitionLeaderEpoch: 3,
                             attributes: b % 2 == 0 ? 0 : 0x10, producerId: Int64(b) - 1, producerEpoch: 0, baseSequence: Int32(b),
                             baseTimestamp: records[0].timestamp, maxTimestamp: records.map(\.timestamp).max()!, records: records))
    }
    return out
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 2 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let mode = bytes[0]
    let values = bytes[1...].split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map { Array($0) }
    for v in values { checkShape(v) }
    let input = batches(values)
    guard !input.isEmpty, let block = try? ColdBlock.encode(input) else { return 0 }
    if mode & 1 == 0 {
        let back = block.withUnsafeBytes { try? ColdBlock.decode($0) }
        require(back == input, "a block does not decode to the records it was made of")
        // The column scan's view (StrataQuery's ColdColumnScan) of the same block: every record's
        // offset, timestamp and value kind, and every column's tokens.
        let columnar = block.withUnsafeBytes { try? ColdColumnarBlock($0) }
        require(columnar != nil, "a block does not open for a column scan")
        let records = input.flatMap(\.records)
        let columnarRecords = try? columnar!.records()
        require(columnarRecords?.count == records.count && columnar!.valueKinds.count == records.count, "the column scan sees another number of records")
        for (i, (r, c)) in zip(records, columnarRecords!).enumerated() {
            require(r.offset == c.offset && r.timestamp == c.timestamp && (r.value == nil) == (c.valueKind == 0) && c.valueKind == columnar!.valueKinds[i],
                    "a record differs in the column scan")
        }
        // The batches alone (what a fold over whole batches reads) cover the same records.
        require(columnar!.batches.map(\.records.count).reduce(0, +) == records.count, "the batches hold another number of records")
        for column in columnar!.tokenCounts.indices {
            let tokens = try? columnar!.tokens(column)
            require(tokens != nil, "column \(column) does not decode")
            // The column as stored (what the column scan converts from) gives the same tokens.
            let typed = try? columnar!.values(column)
            require(typed != nil && typed!.count == tokens!.ends.count, "column \(column) does not decode typed")
            for t in 0..<typed!.count { require(typed!.text(t) == Array(tokens!.token(t)), "column \(column) token \(t) differs typed") }
        }
        return 0
    }
    var damaged = block
    for (i, b) in bytes.prefix(16).enumerated() where i > 0 && !damaged.isEmpty {
        damaged[(Int(b) &* 131 &+ i &* 977) % damaged.count] ^= UInt8(truncatingIfNeeded: b | 1)
    }
    if mode & 2 != 0 { damaged = Array(damaged.prefix(Int(mode) % max(1, damaged.count))) }
    // Opening a damaged block for a column scan and decoding its columns refuses or succeeds
    // without trapping, whatever the damage.
    if let columnar = damaged.withUnsafeBytes({ try? ColdColumnarBlock($0, maxBytes: 1 << 24) }) {
        for column in columnar.tokenCounts.indices {
            _ = try? columnar.tokens(column)
            if let typed = try? columnar.values(column) { for t in 0..<typed.count { _ = typed.text(t) } }
        }
        if let records = try? columnar.records() {
            for i in records.indices where records[i].valueKind == 1 { _ = try? columnar.wholeValue(i) }
        }
    }
    guard let decoded = damaged.withUnsafeBytes({ try? ColdBlock.decode($0, maxBytes: 1 << 24) }), !decoded.isEmpty,
          decoded.allSatisfy({ !$0.records.isEmpty }) else { return 0 }
    if let again = try? ColdBlock.encode(decoded) {
        require(again.withUnsafeBytes { try? ColdBlock.decode($0) } == decoded, "a decoded block does not survive encoding again")
    }
    return 0
}
