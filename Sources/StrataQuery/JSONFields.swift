import CStrataScan

/// The fast path behind JSON members: a byte scan (CStrataScan, SSE2) that finds top-level
/// members of a JSON object without building a parse tree or allocating. Whatever it is not sure
/// about (a key with escapes, a nested or escaped result, a number SQLite might read differently,
/// anything malformed) comes back as `.fallback`, and the caller hands the value to SQLite's own
/// json_extract, so results and error messages are SQLite's wherever the fast path steps aside.
///
/// Without `stopEarly` the whole object is walked structurally even after the members are
/// found: brackets, strings and separators must be well formed to the closing brace, so a
/// truncated or garbled value is not read as if it were valid.
final class JSONMemberScanner {
    private let keys: [[UInt8]]
    private let keyPointers: UnsafeMutablePointer<UnsafePointer<UInt8>?>
    private let keyLengths: UnsafeMutablePointer<UInt32>
    private let storage: UnsafeMutableRawPointer
    private let results: UnsafeMutablePointer<strata_json_field>
    let stopEarly: Bool
    private var scratch = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 1)
    private var scratchCapacity = 64

    init(keys: [[UInt8]], stopEarly: Bool) {
        self.keys = keys
        self.stopEarly = stopEarly
        let count = max(1, keys.count)
        keyPointers = .allocate(capacity: count)
        keyLengths = .allocate(capacity: count)
        results = .allocate(capacity: count)
        let total = max(1, keys.reduce(0) { $0 + $1.count })
        storage = .allocate(byteCount: total, alignment: 1)
        var at = 0
        for (i, key) in keys.enumerated() {
            key.withUnsafeBytes { (storage + at).copyMemory(from: $0.baseAddress!, byteCount: key.count) }
            keyPointers[i] = UnsafePointer((storage + at).assumingMemoryBound(to: UInt8.self))
            keyLengths[i] = UInt32(key.count)
            at += key.count
        }
    }

    deinit {
        keyPointers.deallocate()
        keyLengths.deallocate()
        results.deallocate()
        storage.deallocate()
        scratch.deallocate()
    }

    var keyCount: Int { keys.count }

    /// Scans `json`; then `field(i)` is member `keys[i]`.
    @inline(__always) func scan(_ json: UnsafeRawBufferPointer) {
        strata_json_members(json.baseAddress?.assumingMemoryBound(to: UInt8.self), json.count, keyPointers, keyLengths,
                            Int32(keys.count), stopEarly ? 1 : 0, results)
    }

    /// Member `keys[i]` of the last scanned `json` (whose bytes start at `json`). Escaped text is
    /// decoded into `arena` (alive as long as the caller keeps it), or without an arena into the
    /// scanner's scratch buffer, valid until the next call.
    @inline(__always) func field(_ i: Int, in json: UnsafeRawPointer, arena: Arena?) -> FieldValue {
        let r = results[i]
        switch Int(r.kind) {
        case Int(STRATA_JSON_NULL): return .null
        case Int(STRATA_JSON_INTEGER): return .integer(r.integer)
        case Int(STRATA_JSON_REAL): return .real(r.real)
        case Int(STRATA_JSON_TEXT): return .text(json + Int(r.start), r.count)
        case Int(STRATA_JSON_ESCAPED): return decode(json + Int(r.start), Int(r.count), arena: arena)
        default: return .fallback
        }
    }

    /// Escaped text as SQLite's ->> decodes it; `.fallback` where only SQLite knows.
    private func decode(_ raw: UnsafeRawPointer, _ count: Int, arena: Arena?) -> FieldValue {
        let destination: UnsafeMutableRawPointer
        if let arena {
            destination = arena.allocate(count)
        } else {
            if scratchCapacity < count {
                scratch.deallocate()
                scratchCapacity = max(count, 2 * scratchCapacity)
                scratch = .allocate(byteCount: scratchCapacity, alignment: 1)
            }
            destination = scratch
        }
        let decoded = strata_json_unescape(raw.assumingMemoryBound(to: UInt8.self), count, destination.assumingMemoryBound(to: UInt8.self))
        arena?.shrink(by: decoded < 0 ? count : count - Int(decoded))
        return decoded < 0 ? .fallback : .text(UnsafeRawPointer(destination), decoded)
    }
}

extension JSONMemberScanner {
    /// The one member this scanner looks for, in `json` (a scanner per `->>` path, reused);
    /// decoded text stays valid until the next call.
    func member(in json: UnsafeRawBufferPointer) -> FieldValue {
        scan(json)
        guard let base = json.baseAddress else { return .fallback }
        return field(0, in: base, arena: nil)
    }
}
