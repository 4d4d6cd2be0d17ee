import Synchronization

/// The storage operations Strata performs, as the fault-injection seam names them.
public enum StorageOperation: String, CaseIterable, Sendable {
    case open, write, datasync, directorySync, rename, unlink, allocate, truncate, mkdir
    /// An open that creates a file (fails on a full disk, unlike opening an existing one).
    case create
    /// An LMDB write transaction's commit (the metadata store).
    case metadataCommit
}

/// The fault-injection seam under the log engine and the metadata store, after SQLite's
/// test_syscall.c and ioerr.test: every storage syscall wrapper asks `check` before it calls the
/// kernel, and a test can make the Nth matching call (and, persistently, every later one) fail
/// with an errno of its choice (EIO, ENOSPC, EMFILE, ...). Calls are counted only for paths under
/// the plan's prefix, so tests running in parallel in other directories are not affected.
///
/// Production cost: one relaxed atomic load per syscall while nothing is armed.
public enum StorageFaults {
    /// The operations a full disk fails (ENOSPC): creating files and directories, writing,
    /// allocating, committing metadata. Reading, syncing what is written and unlinking still work.
    public static let fullDisk: Set<StorageOperation> = [.create, .write, .allocate, .mkdir, .metadataCommit]

    public struct Plan: Sendable {
        public var pathPrefix: String
        /// 1-based index of the first matching call that fails (Int.max: count only).
        public var failAt: Int
        public var errno: Int32
        /// Fail every matching call from `failAt` on (a disk that stays full), not just that one.
        public var persistent: Bool
        /// The operations counted; nil: all of them.
        public var operations: Set<StorageOperation>?

        public init(pathPrefix: String, failAt: Int, errno: Int32, persistent: Bool = false, operations: Set<StorageOperation>? = nil) {
            self.pathPrefix = pathPrefix
            self.failAt = failAt
            self.errno = errno
            self.persistent = persistent
            self.operations = operations
        }
    }

    /// What an armed plan saw.
    public struct Report: Sendable {
        public var calls = 0
        public var faults = 0
        public var failedOperations: [String] = []
    }

    private struct Armed {
        var plan: Plan
        var report = Report()
    }

    /// Armed plans by path prefix: tests in different directories run side by side.
    private static let armedCount = Atomic<Int>(0)
    private static let state = Mutex<[String: Armed]>([:])

    public static func arm(_ plan: Plan) {
        state.withLock { plans in
            plans[plan.pathPrefix] = Armed(plan: plan)
            armedCount.store(plans.count, ordering: .releasing)
        }
    }

    /// Stops injecting under `pathPrefix`; returns what happened while armed.
    @discardableResult
    public static func disarm(_ pathPrefix: String) -> Report {
        state.withLock { plans in
            let report = plans.removeValue(forKey: pathPrefix)?.report ?? Report()
            armedCount.store(plans.count, ordering: .releasing)
            return report
        }
    }

    /// The errno `operation` on `path` must fail with, or nil to go ahead.
    @inline(__always)
    public static func check(_ operation: StorageOperation, path: String) -> Int32? {
        guard armedCount.load(ordering: .relaxed) > 0 else { return nil }
        return state.withLock { plans -> Int32? in
            guard let key = plans.keys.first(where: { path.hasPrefix($0) }), var armed = plans[key] else { return nil }
            defer { plans[key] = armed }
            let plan = armed.plan
            if let ops = plan.operations, !ops.contains(operation) { return nil }
            armed.report.calls += 1
            let n = armed.report.calls
            guard n == plan.failAt || (plan.persistent && n > plan.failAt) else { return nil }
            armed.report.faults += 1
            if armed.report.failedOperations.count < 16 { armed.report.failedOperations.append("\(operation.rawValue) \(path)") }
            return plan.errno
        }
    }
}
