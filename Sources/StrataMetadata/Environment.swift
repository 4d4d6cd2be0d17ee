#if canImport(Glibc)
import Glibc
#endif
import CLMDB
import StrataCore
import Synchronization

/// An LMDB error with the library's own message.
public struct MetadataError: Error, CustomStringConvertible, Sendable, Equatable {
    public let code: Int32
    public let context: String

    public var description: String { "\(context): \(String(cString: mdb_strerror(code))) (\(code))" }

    static func check(_ rc: Int32, _ context: @autoclosure () -> String) throws(MetadataError) {
        if rc != MDB_SUCCESS { throw MetadataError(code: rc, context: context()) }
    }
}

/// An LMDB environment (`<data>/meta/data.mdb` + `lock.mdb`). LMDB allows one writer and many
/// readers, across processes; a read-only environment can be opened next to a running writer.
///
/// Transactions run inside synchronous closures only: an LMDB transaction is bound to a thread and
/// must never span an `await`.
/// `@unchecked Sendable`: the LMDB environment is safe to share across threads (MDB_NOTLS, write
/// transactions serialised by `writeLock`); `databases` is filled in init and only read after.
public final class MetadataEnvironment: @unchecked Sendable {
    public let path: String
    public let readOnly: Bool
    let env: OpaquePointer
    /// Serializes write transactions in this process (LMDB also serializes across processes).
    private let writeLock = Mutex(())
    private var databases: [String: MDB_dbi] = [:]
    private let dbLock = Mutex(())

    /// Named databases, opened (created when writable) at open time.
    public static let databaseNames = ["topics", "partitions", "group_offsets", "groups", "cluster", "cleaner", "scram_credentials", "acls", "transactions"]
    /// Address space reserved for the map; the file grows only as data is written.
    public static let defaultMapSize = 16 << 30

    /// The named databases this environment opened (`databaseNames` unless given).
    public let names: [String]

    /// `databases` names the databases to open (default: the broker's metadata databases); other
    /// components (StrataStreams' state stores) open their own environments with their own names.
    public init(path: String, readOnly: Bool = false, mapSize: Int = MetadataEnvironment.defaultMapSize,
                databases: [String] = MetadataEnvironment.databaseNames) throws(MetadataError) {
        self.path = path
        self.readOnly = readOnly
        self.names = databases
        if !readOnly { mkdir(path, 0o700) }  // metadata holds credentials: owner only
        // A truncated data.mdb is mapped and then read past its end: SIGBUS. Check the file
        // against its own meta pages before LMDB maps it.
        try MetadataFileCheck.verify(path: path + "/data.mdb")
        // Everything is opened on a local handle: `env` is assigned only once it is fully open,
        // so a failure here closes the handle exactly once (deinit never sees it).
        var e: OpaquePointer?
        try MetadataError.check(mdb_env_create(&e), "mdb_env_create")
        let handle = e!
        do throws(MetadataError) {
            try MetadataError.check(mdb_env_set_mapsize(handle, mapSize), "mdb_env_set_mapsize")
            try MetadataError.check(mdb_env_set_maxdbs(handle, 16), "mdb_env_set_maxdbs")
            try MetadataError.check(mdb_env_set_maxreaders(handle, 256), "mdb_env_set_maxreaders")
            // NOTLS: read transactions are not tied to OS threads, so any thread may use any reader.
            let flags = UInt32(MDB_NOTLS) | (readOnly ? UInt32(MDB_RDONLY) : 0)
            try MetadataError.check(mdb_env_open(handle, path, flags, 0o600), "open LMDB environment \(path)")
            var dead: Int32 = 0
            mdb_reader_check(handle, &dead)  // clear reader slots of crashed processes
            let opened = try Self.openDatabases(handle, names: databases, readOnly: readOnly)
            self.databases = opened
        } catch {
            mdb_env_close(handle)
            throw error
        }
        env = handle
    }

    deinit { mdb_env_close(env) }

    private static func openDatabases(_ env: OpaquePointer, names: [String], readOnly: Bool) throws(MetadataError) -> [String: MDB_dbi] {
        var txn: OpaquePointer?
        try MetadataError.check(mdb_txn_begin(env, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &txn), "begin txn")
        var opened: [String: MDB_dbi] = [:]
        for name in names {
            var dbi: MDB_dbi = 0
            let rc = mdb_dbi_open(txn, name, readOnly ? 0 : UInt32(MDB_CREATE), &dbi)
            if rc == MDB_NOTFOUND && readOnly { continue }  // a writer has not created it yet
            if rc != MDB_SUCCESS {
                mdb_txn_abort(txn)
                throw MetadataError(code: rc, context: "open database \(name)")
            }
            opened[name] = dbi
        }
        try MetadataError.check(mdb_txn_commit(txn), "commit database creation")
        return opened
    }

    func dbi(_ name: String) -> MDB_dbi? { dbLock.withLock { _ in databases[name] } }

    /// Runs `body` in a write transaction and commits it (durably: LMDB syncs on commit).
    public func write<R>(_ body: (inout Transaction) throws -> R) throws -> R {
        guard !readOnly else { throw MetadataError(code: EACCES, context: "metadata \(path) is open read-only") }
        return try writeLock.withLock { _ in
            var txn = try Transaction(environment: self, readOnly: false)
            do {
                let result = try body(&txn)
                if let e = StorageFaults.check(.metadataCommit, path: path) {
                    throw MetadataError(code: e, context: "commit LMDB transaction in \(path)")
                }
                try txn.commit()
                return result
            } catch {
                txn.abort()
                throw error
            }
        }
    }

    /// Runs `body` in a read transaction (a consistent snapshot).
    public func read<R>(_ body: (inout Transaction) throws -> R) throws -> R {
        var txn = try Transaction(environment: self, readOnly: true)
        defer { txn.abort() }
        return try body(&txn)
    }

    /// Size of data.mdb in use, for `inspect`.
    public var usedBytes: Int {
        var info = MDB_envinfo()
        var stat = MDB_stat()
        mdb_env_info(env, &info)
        mdb_env_stat(env, &stat)
        return Int(info.me_last_pgno + 1) * Int(stat.ms_psize)
    }
}

/// One LMDB transaction. Values returned by `get`/`scan` are copied out, so they stay valid after
/// the transaction ends.
public struct Transaction: ~Copyable {
    let environment: MetadataEnvironment
    private var txn: OpaquePointer?

    init(environment: MetadataEnvironment, readOnly: Bool) throws(MetadataError) {
        self.environment = environment
        var t: OpaquePointer?
        try MetadataError.check(mdb_txn_begin(environment.env, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &t), "begin transaction")
        txn = t
    }

    deinit { if let txn { mdb_txn_abort(txn) } }

    mutating func commit() throws(MetadataError) {
        let t = txn
        txn = nil
        try MetadataError.check(mdb_txn_commit(t), "commit")  // frees the txn even on failure
    }

    mutating func abort() {
        if let t = txn { mdb_txn_abort(t) }
        txn = nil
    }

    private func dbi(_ name: String) throws(MetadataError) -> MDB_dbi? {
        environment.dbi(name)
    }

    public func get(_ db: String, _ key: [UInt8]) throws(MetadataError) -> [UInt8]? {
        guard let dbi = try dbi(db) else { return nil }
        var k = key
        var value: [UInt8]?
        let rc = k.withUnsafeMutableBytes { kp -> Int32 in
            var kv = MDB_val(mv_size: kp.count, mv_data: kp.baseAddress)
            var vv = MDB_val()
            let rc = mdb_get(txn, dbi, &kv, &vv)
            if rc == MDB_SUCCESS { value = Array(UnsafeRawBufferPointer(start: vv.mv_data, count: vv.mv_size)) }
            return rc
        }
        if rc == MDB_NOTFOUND { return nil }
        try MetadataError.check(rc, "get from \(db)")
        return value
    }

    public func put(_ db: String, _ key: [UInt8], _ value: [UInt8]) throws(MetadataError) {
        guard let dbi = try dbi(db) else { throw MetadataError(code: MDB_NOTFOUND, context: "no database \(db)") }
        var k = key
        var v = value
        let rc = k.withUnsafeMutableBytes { kp in
            v.withUnsafeMutableBytes { vp in
                var kv = MDB_val(mv_size: kp.count, mv_data: kp.baseAddress)
                var vv = MDB_val(mv_size: vp.count, mv_data: vp.baseAddress)
                return mdb_put(txn, dbi, &kv, &vv, 0)
            }
        }
        try MetadataError.check(rc, "put into \(db)")
    }

    @discardableResult
    public func delete(_ db: String, _ key: [UInt8]) throws(MetadataError) -> Bool {
        guard let dbi = environment.dbi(db) else { return false }
        var k = key
        let rc = k.withUnsafeMutableBytes { kp in
            var kv = MDB_val(mv_size: kp.count, mv_data: kp.baseAddress)
            return mdb_del(txn, dbi, &kv, nil)
        }
        if rc == MDB_NOTFOUND { return false }
        try MetadataError.check(rc, "delete from \(db)")
        return true
    }

    /// Every (key, value) whose key starts with `prefix`, in key order.
    public func scan(_ db: String, prefix: [UInt8] = []) throws(MetadataError) -> [(key: [UInt8], value: [UInt8])] {
        guard let dbi = try dbi(db) else { return [] }
        var cursor: OpaquePointer?
        try MetadataError.check(mdb_cursor_open(txn, dbi, &cursor), "open cursor on \(db)")
        defer { mdb_cursor_close(cursor) }
        var out: [(key: [UInt8], value: [UInt8])] = []
        var seek = prefix
        var rc: Int32 = seek.withUnsafeMutableBytes { kp in
            var kv = MDB_val(mv_size: kp.count, mv_data: kp.baseAddress)
            var vv = MDB_val()
            if kp.isEmpty { return mdb_cursor_get(cursor, &kv, &vv, MDB_FIRST) }
            return mdb_cursor_get(cursor, &kv, &vv, MDB_SET_RANGE)
        }
        while rc == MDB_SUCCESS {
            var kv = MDB_val()
            var vv = MDB_val()
            rc = mdb_cursor_get(cursor, &kv, &vv, MDB_GET_CURRENT)
            guard rc == MDB_SUCCESS else { break }
            let key = Array(UnsafeRawBufferPointer(start: kv.mv_data, count: kv.mv_size))
            guard key.starts(with: prefix) else { break }
            out.append((key, Array(UnsafeRawBufferPointer(start: vv.mv_data, count: vv.mv_size))))
            rc = mdb_cursor_get(cursor, &kv, &vv, MDB_NEXT)
        }
        if rc != MDB_SUCCESS && rc != MDB_NOTFOUND { throw MetadataError(code: rc, context: "scan \(db)") }
        return out
    }
}
