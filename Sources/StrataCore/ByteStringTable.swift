import Glibc

/// Distinct byte strings numbered in order of first appearance, by open addressing over one
/// buffer: dictionary encodings (Parquet export, cold segments) look up every value without a
/// heap object per lookup.
public struct ByteStringTable {
    private var slots: [Int32] = Array(repeating: -1, count: 1024)
    private var hashes: [Int] = []
    private var keys: [UInt8] = []
    private var keyEnds: [Int] = []

    public init() {}

    public var count: Int { hashes.count }

    /// The number of `v`, inserting it when `insert` allows (nil when it refuses).
    public mutating func index(of v: UnsafeRawBufferPointer, insert: (Int) -> Bool) -> UInt32? {
        var hasher = Hasher()
        hasher.combine(bytes: v)
        let hash = hasher.finalize()
        let mask = slots.count - 1
        var slot = hash & mask
        while true {
            let e = Int(slots[slot])
            if e < 0 { break }
            if hashes[e] == hash {
                let start = e == 0 ? 0 : keyEnds[e - 1]
                let equal = keys.withUnsafeBytes { k in
                    keyEnds[e] - start == v.count && (v.isEmpty || memcmp(k.baseAddress! + start, v.baseAddress!, v.count) == 0)
                }
                if equal { return UInt32(e) }
            }
            slot = (slot + 1) & mask
        }
        guard insert(hashes.count) else { return nil }
        let e = hashes.count
        hashes.append(hash)
        keys.append(contentsOf: v)
        keyEnds.append(keys.count)
        slots[slot] = Int32(e)
        if hashes.count * 2 > slots.count { grow() }
        return UInt32(e)
    }

    /// The bytes of string number `i`.
    public func withString<R>(_ i: Int, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        let start = i == 0 ? 0 : keyEnds[i - 1]
        return keys.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[start..<keyEnds[i]])) }
    }

    private mutating func grow() {
        slots = Array(repeating: -1, count: slots.count * 2)
        let mask = slots.count - 1
        for (e, hash) in hashes.enumerated() {
            var slot = hash & mask
            while slots[slot] >= 0 { slot = (slot + 1) & mask }
            slots[slot] = Int32(e)
        }
    }
}
