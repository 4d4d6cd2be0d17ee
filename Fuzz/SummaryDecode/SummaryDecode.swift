// libFuzzer target: StrataQuery's block summary files (SegmentSummary, docs/format.md), which a
// query maps and trusts to skip blocks. Arbitrary bytes go through `decode` both ways (copying
// the Bloom filters, and probing them in place as a query does); whatever decodes must satisfy
// the invariants a query relies on (blocks in order inside the segment, at most 8 members) and
// encode back to the same bytes; the filters of every member and key are probed with the
// query-side checks (`MemberFilter`, `MemberRange`, `KeyFilter` logic through `mayContain`).
//
// Unless the top bit of the input's first byte is set, the harness first writes the right
// CRC-32C over the input into its last 4 bytes (and the magic into its first 8), so mutations
// get past the checksum. See docs/fuzzing.md.
@testable import StrataQuery
import StrataLog

func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String = "invariant broken",
             file: StaticString = #file, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}

func fix(_ bytes: inout [UInt8]) {
    guard bytes.count >= 12, bytes[0] & 0x80 == 0 else { return }
    for (i, b) in SegmentSummary.magic.enumerated() where i < bytes.count - 4 { bytes[i] = b }
    let crc = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<(bytes.count - 4)])) }
    withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { bytes[bytes.count - 4 + i] = $0[i] } }
}

func check(_ bytes: [UInt8]) {
    let copied = try? SegmentSummary.decode(bytes)
    let viewed: SegmentSummary? = bytes.withUnsafeBytes { try? SegmentSummary.decode($0, copyingFilters: false) }
    require((copied == nil) == (viewed == nil), "the copying and the mapped decoder disagree")
    guard let summary = copied, let view = viewed else { return }
    require(summary == view, "copied and mapped summaries differ")
    require(summary.members.count <= SegmentSummary.maxMembers)
    var previous = summary.identity.baseOffset
    for block in summary.blocks {
        require(block.startOffset >= previous && block.endOffset > block.startOffset && block.endOffset <= summary.identity.nextOffset,
                "block \(block.startOffset)..<\(block.endOffset) outside the segment or out of order")
        previous = block.endOffset
        require(block.members.count == summary.members.count)
        for h in [0, 1, UInt64.max, 0x9E37_79B9_7F4A_7C15] {
            _ = block.keys.mayContain(h)
            for m in block.members { _ = m.bloom.mayContain(h) }
        }
        for m in block.members { require(!m.minNumber.isNaN && !m.maxNumber.isNaN) }
    }
    require(summary.encoded() == bytes, "a decoded summary does not encode to its bytes")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var bytes = Array(UnsafeBufferPointer(start: data, count: size))
    fix(&bytes)
    check(bytes)
    return 0
}
