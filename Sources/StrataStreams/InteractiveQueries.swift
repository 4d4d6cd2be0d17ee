import StrataCore
import StrataMetadata

/// Interactive queries: the state stores of a running application, read from outside its tasks.
///
/// Reads see each task's state **as of its last commit** (at most `commitIntervalMs` old, or
/// `commitEveryRecords` records): committed state lives in LMDB, which readers share safely with
/// the running tasks, while the in-memory working state belongs to each task's thread alone.
/// Only the tasks this instance runs are read (in-process instances of one application split
/// them: ask each, or run one instance). Windowed stores hold the windows not closed yet — closed
/// windows are evicted once final (their results are in the output topic).
extension StreamsApp {
    public enum QueryError: Error, CustomStringConvertible, Sendable {
        case unknownStore(String)
        case wrongStoreKind(store: String, expected: String)

        public var description: String {
            switch self {
            case .unknownStore(let s): return "no state store named '\(s)' in the topology"
            case .wrongStoreKind(let s, let expected): return "state store '\(s)' is not a \(expected) store"
            }
        }
    }

    /// The value of `key` in the key-value store `store` (a table or non-windowed aggregation):
    /// `Int64` for `count`, `[UInt8]` for tables and `reduce`, your type for `aggregate`.
    public func get<V: StateValue>(_ store: String, key: [UInt8], as type: V.Type = V.self) throws -> V? {
        let (env, tasks, tag) = try locate(store, kind: "key-value") { $0 == .keyValue }
        return try env.read { txn -> V? in
            for t in tasks {
                if let raw = try txn.get(AppRuntime.stateDB, Self.prefix(t, tag) + key) { return V(stateBytes: raw) }
            }
            return nil
        }
    }

    public func get<V: StateValue>(_ store: String, key: String, as type: V.Type = V.self) throws -> V? {
        try get(store, key: Array(key.utf8), as: type)
    }

    /// Every entry of a key-value store (as of the tasks' last commits), in key order per task.
    public func entries<V: StateValue>(_ store: String, as type: V.Type = V.self) throws -> [(key: [UInt8], value: V)] {
        let (env, tasks, tag) = try locate(store, kind: "key-value") { $0 == .keyValue }
        return try env.read { txn in
            var out: [(key: [UInt8], value: V)] = []
            for t in tasks {
                let prefix = Self.prefix(t, tag)
                for (k, v) in try txn.scan(AppRuntime.stateDB, prefix: prefix) {
                    if let value = V(stateBytes: v) { out.append((Array(k[prefix.count...]), value)) }
                }
            }
            return out
        }
    }

    /// The open windows of `key` in the time-windowed store `store` whose start is in
    /// `[fromMs, toMs]`, by start.
    public func windows<V: StateValue>(_ store: String, key: [UInt8], fromMs: Int64 = 0, toMs: Int64 = .max,
                                       as type: V.Type = V.self) throws -> [(window: Window, value: V)] {
        var size: Int64 = 0
        let (env, tasks, tag) = try locate(store, kind: "time-windowed") {
            if case .window(let s) = $0 { size = s; return true }
            return false
        }
        return try env.read { txn in
            var out: [(window: Window, value: V)] = []
            for t in tasks {
                let prefix = Self.prefix(t, tag) + [1]
                // Entries are `0x01 start(8) key`: ordered by start, then key.
                for (k, v) in try txn.scan(AppRuntime.stateDB, prefix: prefix) {
                    let rest = k[prefix.count...]
                    guard rest.count >= 8, v.count >= 8, rest.dropFirst(8).elementsEqual(key) else { continue }
                    let start = BE.int64(rest, at: rest.startIndex)
                    guard start >= fromMs && start <= toMs, let value = V(stateBytes: Array(v[8...])) else { continue }
                    out.append((Window(start: start, end: start &+ size), value))
                }
            }
            return out.sorted { $0.window.start < $1.window.start }
        }
    }

    public func windows<V: StateValue>(_ store: String, key: String, fromMs: Int64 = 0, toMs: Int64 = .max,
                                       as type: V.Type = V.self) throws -> [(window: Window, value: V)] {
        try windows(store, key: Array(key.utf8), fromMs: fromMs, toMs: toMs, as: type)
    }

    /// The open sessions of `key` in the session-windowed store `store`, by start.
    public func sessions<V: StateValue>(_ store: String, key: [UInt8], as type: V.Type = V.self) throws -> [(window: Window, value: V)] {
        let (env, tasks, tag) = try locate(store, kind: "session") { $0 == .session }
        return try env.read { txn in
            var out: [(window: Window, value: V)] = []
            for t in tasks {
                guard let raw = try txn.get(AppRuntime.stateDB, Self.prefix(t, tag) + [1] + key),
                      let sessions = SessionStore<V>.decodeSessions(raw) else { continue }
                out += sessions.map { (Window(start: $0.start, end: $0.end), $0.value) }
            }
            return out.sorted { $0.window.start < $1.window.start }
        }
    }

    public func sessions<V: StateValue>(_ store: String, key: String, as type: V.Type = V.self) throws -> [(window: Window, value: V)] {
        try sessions(store, key: Array(key.utf8), as: type)
    }

    /// LMDB key prefix of a store's entries in a task: `<task> 0x00 <store tag>`.
    private static func prefix(_ task: TaskId, _ tag: Int) -> [UInt8] { Array(task.description.utf8) + [0, UInt8(tag)] }

    /// The state environment, this instance's tasks of the subtopology holding `store`, and the
    /// store's tag in them.
    private func locate(_ store: String, kind: String, _ matches: (StoreKind) -> Bool) throws
        -> (MetadataEnvironment, [TaskId], Int) {
        guard let k = topology.storeKinds[store],
              let sub = topology.subtopologies.first(where: { $0.stores.contains(store) }),
              let tag = sub.stores.firstIndex(of: store) else { throw QueryError.unknownStore(store) }
        guard matches(k) else { throw QueryError.wrongStoreKind(store: store, expected: kind) }
        guard let env = stateEnvironment else { throw StreamsError.notRunning }
        return (env, assignedTasks.filter { $0.subtopology == sub.id }, tag)
    }
}
