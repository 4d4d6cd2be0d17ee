/// What a task needs from every state store: the entries changed since the last commit (to write
/// to LMDB and the changelog), and a committed value by encoded key (to repair a changelog tail).
protocol AnyStateStore: AnyObject {
    var name: String { get }
    /// Entries changed since the last call, encoded; a nil value is a deletion.
    func drainDirty() -> [(key: [UInt8], value: [UInt8]?)]
    /// The current value of an encoded key, encoded.
    func encodedValue(_ key: [UInt8]) -> [UInt8]?
    var entryCount: Int { get }
}

/// A key-value store of one task: decoded values in memory (loaded from LMDB or the changelog when
/// the task starts), changes tracked and written out at each commit.
public final class KeyValueStore<V: StateValue>: AnyStateStore {
    struct Entry {
        var value: V?
        var dirty: Bool
    }

    public let name: String
    var map: [[UInt8]: Entry] = [:]
    var dirtyKeys: [[UInt8]] = []

    init(name: String, restored: [(key: [UInt8], value: [UInt8])]) {
        self.name = name
        map.reserveCapacity(restored.count)
        for (k, v) in restored {
            if let value = V(stateBytes: v) { map[k] = Entry(value: value, dirty: false) }
        }
    }

    public func get(_ key: [UInt8]) -> V? { map[key]?.value }

    public func put(_ key: [UInt8], _ value: V?) {
        if let i = map.index(forKey: key) {
            map.values[i].value = value
            if !map.values[i].dirty {
                map.values[i].dirty = true
                dirtyKeys.append(key)
            }
        } else {
            map[key] = Entry(value: value, dirty: true)
            dirtyKeys.append(key)
        }
    }

    /// Applies `update` to the value of `key` (nil when absent) with one hash lookup.
    @inline(__always)
    func update(_ key: [UInt8], _ update: (V?) -> V?) -> V? {
        if let i = map.index(forKey: key) {
            let new = update(map.values[i].value)
            map.values[i].value = new
            if !map.values[i].dirty {
                map.values[i].dirty = true
                dirtyKeys.append(key)
            }
            return new
        }
        let new = update(nil)
        map[key] = Entry(value: new, dirty: true)
        dirtyKeys.append(key)
        return new
    }

    public var entryCount: Int { map.count }

    /// Current (key, value) pairs, unordered.
    public var all: [(key: [UInt8], value: V)] { map.compactMap { k, e in e.value.map { (k, $0) } } }

    func drainDirty() -> [(key: [UInt8], value: [UInt8]?)] {
        var out: [(key: [UInt8], value: [UInt8]?)] = []
        out.reserveCapacity(dirtyKeys.count)
        for k in dirtyKeys {
            guard let i = map.index(forKey: k) else { continue }
            let value = map.values[i].value
            if value == nil { map.remove(at: i) } else { map.values[i].dirty = false }
            out.append((k, value?.stateBytes))
        }
        dirtyKeys.removeAll(keepingCapacity: true)
        return out
    }

    func encodedValue(_ key: [UInt8]) -> [UInt8]? { map[key]?.value?.stateBytes }
}

/// Big-endian helpers for the store encodings.
enum BE {
    static func append(_ v: Int64, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) }
    }

    static func bytes(_ v: Int64) -> [UInt8] {
        var out: [UInt8] = []
        append(v, to: &out)
        return out
    }

    /// A windowed store's stream time as a changelog entry (key [0]): it travels with the
    /// windows, so a restored task closes windows at the same point.
    static func streamTimeEntry(_ streamTime: Int64) -> (key: [UInt8], value: [UInt8]) { ([0], bytes(streamTime)) }
    static func append(_ v: UInt32, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) }
    }
    static func int64<C: Collection>(_ b: C, at i: C.Index) -> Int64 where C.Element == UInt8 {
        var v: UInt64 = 0
        var j = i
        for _ in 0..<8 { v = v << 8 | UInt64(b[j]); j = b.index(after: j) }
        return Int64(bitPattern: v)
    }
    static func uint32<C: Collection>(_ b: C, at i: C.Index) -> UInt32 where C.Element == UInt8 {
        var v: UInt32 = 0
        var j = i
        for _ in 0..<4 { v = v << 8 | UInt32(b[j]); j = b.index(after: j) }
        return v
    }
}

/// The store of a time-windowed aggregation: one value per (key, window start), plus the
/// processor's observed stream time (persisted with the values, so a restarted task drops and
/// closes exactly the windows an uninterrupted one would). Encoded keys: `0x01 start(8) key`;
/// the stream time is under `0x00`.
final class WindowStore<V: StateValue>: AnyStateStore {
    struct Key: Hashable {
        var start: Int64
        var key: [UInt8]
    }
    struct Entry {
        var value: V?
        var dirty: Bool
        var timestamp: Int64
    }

    let name: String
    var map: [Key: Entry] = [:]
    var dirtyKeys: [Key] = []
    var streamTime: Int64 = .min
    var streamTimeDirty = false

    init(name: String, restored: [(key: [UInt8], value: [UInt8])]) {
        self.name = name
        for (k, v) in restored {
            if k == [0] {
                if v.count == 8 { streamTime = BE.int64(v, at: 0) }
                continue
            }
            guard k.count >= 9, k[0] == 1, v.count >= 8, let value = V(stateBytes: Array(v[8...])) else { continue }
            map[Key(start: BE.int64(k, at: 1), key: Array(k[9...]))] = Entry(value: value, dirty: false, timestamp: BE.int64(v, at: 0))
        }
    }

    var entryCount: Int { map.count }

    func advance(to t: Int64) {
        if t > streamTime {
            streamTime = t
            streamTimeDirty = true
        }
    }

    @inline(__always)
    func update(_ key: Key, timestamp: Int64, _ update: (V?) -> V?) -> V? {
        if let i = map.index(forKey: key) {
            let new = update(map.values[i].value)
            map.values[i].value = new
            map.values[i].timestamp = max(map.values[i].timestamp, timestamp)
            if !map.values[i].dirty {
                map.values[i].dirty = true
                dirtyKeys.append(key)
            }
            return new
        }
        let new = update(nil)
        map[key] = Entry(value: new, dirty: true, timestamp: timestamp)
        dirtyKeys.append(key)
        return new
    }

    func remove(_ key: Key) {
        guard let i = map.index(forKey: key) else { return }
        map.values[i].value = nil
        if !map.values[i].dirty {
            map.values[i].dirty = true
            dirtyKeys.append(key)
        }
    }

    static func encode(_ k: Key) -> [UInt8] {
        var out: [UInt8] = [1]
        out.reserveCapacity(9 + k.key.count)
        BE.append(k.start, to: &out)
        out.append(contentsOf: k.key)
        return out
    }

    static func encode(_ e: Entry) -> [UInt8]? {
        guard let v = e.value else { return nil }
        var out: [UInt8] = []
        BE.append(e.timestamp, to: &out)
        out.append(contentsOf: v.stateBytes)
        return out
    }

    func drainDirty() -> [(key: [UInt8], value: [UInt8]?)] {
        var out: [(key: [UInt8], value: [UInt8]?)] = []
        out.reserveCapacity(dirtyKeys.count + 1)
        for k in dirtyKeys {
            guard let i = map.index(forKey: k) else { continue }
            let e = map.values[i]
            if e.value == nil { map.remove(at: i) } else { map.values[i].dirty = false }
            out.append((Self.encode(k), Self.encode(e)))
        }
        dirtyKeys.removeAll(keepingCapacity: true)
        if streamTimeDirty {
            out.append(BE.streamTimeEntry(streamTime))
            streamTimeDirty = false
        }
        return out
    }

    func encodedValue(_ key: [UInt8]) -> [UInt8]? {
        if key == [0] { return streamTime == .min ? nil : BE.bytes(streamTime) }
        guard key.count >= 9, key[0] == 1 else { return nil }
        return map[Key(start: BE.int64(key, at: 1), key: Array(key[9...]))].flatMap(Self.encode)
    }
}

/// The store of a session-windowed aggregation: per key, its open sessions (sorted by start),
/// plus the observed stream time. Encoded keys: `0x01 key` → `count(4) (start(8) end(8) len(4) value)*`.
final class SessionStore<V: StateValue>: AnyStateStore {
    struct Session {
        var start: Int64
        var end: Int64
        var value: V
    }
    struct Entry {
        var sessions: [Session]
        var dirty: Bool
    }

    let name: String
    var map: [[UInt8]: Entry] = [:]
    var dirtyKeys: [[UInt8]] = []
    var streamTime: Int64 = .min
    var streamTimeDirty = false

    init(name: String, restored: [(key: [UInt8], value: [UInt8])]) {
        self.name = name
        for (k, v) in restored {
            if k == [0] {
                if v.count == 8 { streamTime = BE.int64(v, at: 0) }
                continue
            }
            guard k.count >= 1, k[0] == 1, let sessions = Self.decodeSessions(v) else { continue }
            map[Array(k[1...])] = Entry(sessions: sessions, dirty: false)
        }
    }

    var entryCount: Int { map.count }

    func advance(to t: Int64) {
        if t > streamTime {
            streamTime = t
            streamTimeDirty = true
        }
    }

    func sessions(_ key: [UInt8]) -> [Session] { map[key]?.sessions ?? [] }

    func set(_ key: [UInt8], _ sessions: [Session]) {
        if let i = map.index(forKey: key) {
            map.values[i].sessions = sessions
            if !map.values[i].dirty {
                map.values[i].dirty = true
                dirtyKeys.append(key)
            }
        } else {
            map[key] = Entry(sessions: sessions, dirty: true)
            dirtyKeys.append(key)
        }
    }

    static func encodeSessions(_ s: [Session]) -> [UInt8]? {
        guard !s.isEmpty else { return nil }
        var out: [UInt8] = []
        BE.append(UInt32(s.count), to: &out)
        for x in s {
            BE.append(x.start, to: &out)
            BE.append(x.end, to: &out)
            let b = x.value.stateBytes
            BE.append(UInt32(b.count), to: &out)
            out.append(contentsOf: b)
        }
        return out
    }

    static func decodeSessions(_ b: [UInt8]) -> [Session]? {
        guard b.count >= 4 else { return nil }
        let n = Int(BE.uint32(b, at: 0))
        var i = 4
        var out: [Session] = []
        for _ in 0..<n {
            guard i + 20 <= b.count else { return nil }
            let s = BE.int64(b, at: i), e = BE.int64(b, at: i + 8)
            let len = Int(BE.uint32(b, at: i + 16))
            i += 20
            guard i + len <= b.count, let v = V(stateBytes: Array(b[i..<(i + len)])) else { return nil }
            i += len
            out.append(Session(start: s, end: e, value: v))
        }
        return out
    }

    func drainDirty() -> [(key: [UInt8], value: [UInt8]?)] {
        var out: [(key: [UInt8], value: [UInt8]?)] = []
        for k in dirtyKeys {
            guard let i = map.index(forKey: k) else { continue }
            let e = map.values[i]
            if e.sessions.isEmpty { map.remove(at: i) } else { map.values[i].dirty = false }
            out.append(([1] + k, Self.encodeSessions(e.sessions)))
        }
        dirtyKeys.removeAll(keepingCapacity: true)
        if streamTimeDirty {
            out.append(BE.streamTimeEntry(streamTime))
            streamTimeDirty = false
        }
        return out
    }

    func encodedValue(_ key: [UInt8]) -> [UInt8]? {
        if key == [0] { return streamTime == .min ? nil : BE.bytes(streamTime) }
        guard key.first == 1 else { return nil }
        return map[Array(key[1...])].flatMap { Self.encodeSessions($0.sessions) }
    }
}
