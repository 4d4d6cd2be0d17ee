#if canImport(Glibc)
import Glibc
#endif
import StrataCore
import CPlatform
import Synchronization

/// Kafka's topic name rule. Topic names become directory names, so nothing else may pass.
public enum TopicName {
    public static let maxLength = 249

    /// nil when valid, else why not.
    public static func problem(_ name: String) -> String? {
        if name.isEmpty { return "topic name is empty" }
        if name == "." || name == ".." { return "topic name cannot be '.' or '..'" }
        if name.utf8.count > maxLength { return "topic name is \(name.utf8.count) characters; the limit is \(maxLength)" }
        for c in name.unicodeScalars {
            let ok = (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "." || c == "_" || c == "-"
            if !ok { return "topic name '\(name)' contains '\(c.escaped(asASCII: true))'; allowed are A-Z a-z 0-9 . _ -" }
        }
        return nil
    }
}

/// The writer's exclusive lock on a data directory (`<data>/.lock`, flock). A second writer gets
/// `.locked` naming the pid that holds it; read-only openers take no lock.
/// `@unchecked Sendable`: `fd` is written in init and by `takeDescriptor`, which the opening
/// thread calls once before the lock is shared.
public final class DataDirectoryLock: @unchecked Sendable {
    private var fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    public static func acquire(dataDirectory: String) throws(LogError) -> DataDirectoryLock {
        try FileIO.mkdirs(dataDirectory)
        let lockPath = dataDirectory + "/" + LogManager.lockFileName
        let fd = try FileIO.open(lockPath, flags: O_RDWR | O_CREAT)
        // A few short retries: a lock just released can stay held for a moment by a child process
        // forked meanwhile (its copy of the descriptor closes at exec).
        var acquired = false
        for attempt in 0..<10 {
            if cplatform_flock_exclusive_nonblocking(fd) == 0 { acquired = true; break }
            if attempt < 9 { usleep(20_000) }
        }
        if !acquired {
            let holder = (try? FileIO.readAll(path: lockPath)).flatMap { String(decoding: $0, as: UTF8.self) } ?? ""
            Glibc.close(fd)
            throw LogError.locked(path: dataDirectory, reason: "another Strata process holds it (\(holder.isEmpty ? "unknown pid" : "pid " + holder))")
        }
        _ = try? FileIO.truncate(fd: fd, to: 0, path: lockPath)
        try? FileIO.writeAll(fd: fd, array: Array(String(getpid()).utf8), at: 0, path: lockPath)
        return DataDirectoryLock(fd: fd)
    }

    /// Hands the descriptor (and with it the lock) to the caller.
    func takeDescriptor() -> Int32 {
        defer { fd = -1 }
        return fd
    }
}

/// Owns the `logs/` directory of a data dir: every partition log, the clean-shutdown marker, the
/// writer lock on the data dir, and the background flusher for `.interval` (and roll flushes in
/// `.os`) mode.
/// `@unchecked Sendable`: the logs are in a `Mutex`; `flusherNextDue` is touched only by the flusher
/// thread; `flusherThread` and `lockFD` are written by `open` before the instance is shared and by
/// `close`/deinit, which the owner runs once.
public final class LogManager: @unchecked Sendable {
    public static let cleanShutdownFileName = ".clean-shutdown"
    public static let lockFileName = ".lock"

    public let dataDirectory: String
    public let defaultConfig: LogConfig
    public let loadReports: [String: RecoveryReport]
    private let logs: Mutex<[String: PartitionLog]>
    private let flusherControl = FlusherControl()
    private var flusherThread: pthread_t?
    private var flusherNextDue: [String: Int64] = [:]  // flusher thread only
    private var lockFD: Int32

    public var logsDirectory: String { dataDirectory + "/logs" }

    /// Opens the data directory for writing: takes its lock (a second writer gets `.locked`),
    /// loads every partition (scanning only unflushed tails unless the last stop was unclean),
    /// then removes the clean-shutdown marker so a crash from here on is seen as one.
    /// What the threads opening partitions hand back, by index in the sorted listing.
    private final class OpenResults: Sendable {
        let byIndex = Mutex<[Int: Result<(PartitionLog, RecoveryReport), LogError>]>([:])
    }

    private final class CloseErrors: Sendable {
        let first = Mutex<LogError?>(nil)
    }

    /// Threads that open partitions at start (Kafka's num.recovery.threads.per.data.dir).
    public static let recoveryThreads = 8

    public static func open(dataDirectory: String, defaultConfig: LogConfig = LogConfig(), lock: DataDirectoryLock? = nil,
                            configForTopic: (String) -> LogConfig? = { _ in nil }) throws(LogError) -> LogManager {
        try defaultConfig.validate()
        try FileIO.mkdirs(dataDirectory + "/logs")
        let heldLock: DataDirectoryLock
        if let lock { heldLock = lock } else { heldLock = try DataDirectoryLock.acquire(dataDirectory: dataDirectory) }
        let fd = heldLock.takeDescriptor()
        let markerPath = dataDirectory + "/" + cleanShutdownFileName
        let clean = FileIO.exists(markerPath)
        var logs: [String: PartitionLog] = [:]
        var reports: [String: RecoveryReport] = [:]
        var offline: [String: String] = [:]
        do {
            var found: [String] = []
            for name in try FileIO.listDirectory(dataDirectory + "/logs").sorted() {
                if name.hasSuffix(deletedDirectorySuffix) {
                    // A topic deletion that did not finish: finish it.
                    try FileIO.removeTree(dataDirectory + "/logs/" + name)
                    continue
                }
                guard let (topic, _) = splitPartitionDirectory(name), TopicName.problem(topic) == nil else { continue }
                found.append(name)
            }
            // Partitions open on several threads (Kafka's num.recovery.threads.per.data.dir):
            // opening is mostly waiting on the disk (directory syncs, checkpoints, index files),
            // and with 10,000 partitions one thread would take seconds.
            let names = found
            let configs = names.map { configForTopic(splitPartitionDirectory($0)!.0) ?? defaultConfig }
            let results = OpenResults()
            ParallelLoop.run(count: names.count, threads: recoveryThreads) { i in
                // One damaged partition must not stop the others: it is kept offline, with the
                // reason, and everything else loads.
                let result: Result<(PartitionLog, RecoveryReport), LogError>
                do throws(LogError) {
                    result = .success(try PartitionLog.open(directory: dataDirectory + "/logs/" + names[i], config: configs[i], cleanShutdown: clean))
                } catch {
                    result = .failure(error)
                }
                results.byIndex.withLock { $0[i] = result }
            }
            for (i, result) in results.byIndex.withLock({ $0 }) {
                switch result {
                case .success(let (log, report)):
                    logs[names[i]] = log
                    reports[names[i]] = report
                case .failure(let error):
                    offline[names[i]] = error.description
                }
            }
            if clean {
                try FileIO.unlink(markerPath)
                // The marker is gone either way; a failed directory sync (full disk) only means a
                // crash right now could be taken for a clean stop: the next flush syncs again.
                try? FileIO.syncDirectory(dataDirectory)
            }
        } catch {
            Glibc.close(fd)
            throw error
        }
        let manager = LogManager(dataDirectory: dataDirectory, defaultConfig: defaultConfig, logs: logs, reports: reports, lockFD: fd)
        manager.offlinePartitions = offline
        manager.startFlusher()
        return manager
    }

    /// Opens every partition of a data directory read-only, next to a writer that may be running:
    /// takes no lock, changes nothing, starts no flusher (see `PartitionLog.openReadOnly`).
    public static func openReadOnly(dataDirectory: String, defaultConfig: LogConfig = LogConfig()) throws(LogError) -> LogManager {
        var logs: [String: PartitionLog] = [:]
        let logsDirectory = dataDirectory + "/logs"
        let names = FileIO.exists(logsDirectory) ? try FileIO.listDirectory(logsDirectory) : []
        var offline: [String: String] = [:]
        for name in names.sorted() {
            guard let (topic, _) = splitPartitionDirectory(name), TopicName.problem(topic) == nil else { continue }
            do throws(LogError) {
                logs[name] = try PartitionLog.openReadOnly(directory: logsDirectory + "/" + name, config: defaultConfig)
            } catch {
                offline[name] = error.description
            }
        }
        let manager = LogManager(dataDirectory: dataDirectory, defaultConfig: defaultConfig, logs: logs, reports: [:], lockFD: -1, readOnly: true)
        manager.offlinePartitions = offline
        return manager
    }

    /// True for a manager from `openReadOnly`.
    public let readOnly: Bool

    private init(dataDirectory: String, defaultConfig: LogConfig, logs: [String: PartitionLog], reports: [String: RecoveryReport], lockFD: Int32, readOnly: Bool = false) {
        self.readOnly = readOnly
        self.dataDirectory = dataDirectory
        self.defaultConfig = defaultConfig
        self.logs = Mutex(logs)
        self.loadReports = reports
        self.lockFD = lockFD
    }

    deinit {
        stopFlusherThread()
        if lockFD >= 0 { Glibc.close(lockFD) }
    }

    /// "<topic>-<partition>" → (topic, partition).
    public static func splitPartitionDirectory(_ name: String) -> (String, Int32)? {
        guard let dash = name.lastIndex(of: "-"), let p = Int32(name[name.index(after: dash)...]), p >= 0 else { return nil }
        return (String(name[..<dash]), p)
    }

    public static func partitionDirectoryName(topic: String, partition: Int32) -> String { "\(topic)-\(partition)" }

    /// A partition directory being deleted; '~' cannot occur in a topic name, so it is never loaded.
    static let deletedDirectorySuffix = "~deleted"

    /// The name a partition directory is renamed to while it is deleted. It must fit in a file
    /// name (255 bytes) whatever the topic's length (249 + "-9999" already takes 254), so the topic
    /// part is cut, as Kafka does, and a random tag keeps two deletions of one name apart.
    static func deletedDirectoryName(topic: String, partition: Int32) -> String {
        let tag = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let tail = "-\(partition).\(tag)\(deletedDirectorySuffix)"
        let room = 255 - tail.utf8.count
        // Topic names are ASCII (TopicName), so cutting bytes cuts characters.
        return String(decoding: topic.utf8.prefix(room), as: UTF8.self) + tail
    }

    /// Closes a partition's log and deletes its directory: renamed first (one atomic step that
    /// hides it from the next load), then removed.
    public func deleteLog(topic: String, partition: Int32) throws(LogError) {
        let name = Self.partitionDirectoryName(topic: topic, partition: partition)
        let log = logs.withLock { $0.removeValue(forKey: name) }
        try? log?.close()
        let path = logsDirectory + "/" + name
        guard FileIO.exists(path) else { return }
        let doomed = logsDirectory + "/" + Self.deletedDirectoryName(topic: topic, partition: partition)
        try FileIO.rename(path, doomed)
        try FileIO.syncDirectory(logsDirectory)
        try FileIO.removeTree(doomed)
    }

    public var partitionNames: [String] { logs.withLock { Array($0.keys).sorted() } }

    /// Partition directories that could not be loaded, with why (set once at open).
    public private(set) var offlinePartitions: [String: String] = [:]

    public func log(topic: String, partition: Int32) -> PartitionLog? {
        logs.withLock { $0[Self.partitionDirectoryName(topic: topic, partition: partition)] }
    }

    /// Returns the partition's log, creating its directory on first use.
    public func getOrCreateLog(topic: String, partition: Int32, config: LogConfig? = nil) throws(LogError) -> PartitionLog {
        if readOnly {
            if let log = log(topic: topic, partition: partition) { return log }
            throw LogError.readOnly(reason: "\(dataDirectory) is opened read-only; no partition \(topic)-\(partition)")
        }
        if let why = TopicName.problem(topic) { throw LogError.invalidConfig(why) }
        guard partition >= 0 else { throw LogError.invalidConfig("partition must be >= 0") }
        let name = Self.partitionDirectoryName(topic: topic, partition: partition)
        return try logs.withLock { (logs: inout [String: PartitionLog]) throws(LogError) -> PartitionLog in
            if let existing = logs[name] { return existing }
            let (log, _) = try PartitionLog.open(directory: logsDirectory + "/" + name, config: config ?? defaultConfig, cleanShutdown: true)
            try FileIO.syncDirectory(logsDirectory)
            logs[name] = log
            return log
        }
    }

    /// Closes every log and, only if all closed cleanly, writes the clean-shutdown marker.
    public func close() throws(LogError) {
        if readOnly { return }
        stopFlusherThread()
        let all = logs.withLock { $0 }.sorted(by: { $0.key < $1.key }).map(\.value)
        // Each close syncs a few files: on several threads, as at open.
        let errors = CloseErrors()
        ParallelLoop.run(count: all.count, threads: Self.recoveryThreads) { i in
            do throws(LogError) { try all[i].close() } catch { errors.first.withLock { if $0 == nil { $0 = error } } }
        }
        if let firstError = errors.first.withLock({ $0 }) { throw firstError }
        let marker = dataDirectory + "/" + Self.cleanShutdownFileName
        let fd = try FileIO.open(marker, flags: O_WRONLY | O_CREAT | O_TRUNC)
        _ = fsync(fd)
        Glibc.close(fd)
        try FileIO.syncDirectory(dataDirectory)
        // Release the data directory for the next writer.
        if lockFD >= 0 {
            Glibc.close(lockFD)
            lockFD = -1
        }
    }

    // MARK: Background flusher

    /// Shared by the manager and its flusher thread. The thread holds the manager only weakly, so
    /// a manager dropped without `close` (a simulated crash in tests) is still freed.
    /// `@unchecked Sendable`: `stopping` is read and written under `lock`; `manager` is set once,
    /// before the flusher thread is created (pthread_create orders it), and only read after.
    private final class FlusherControl: @unchecked Sendable {
        let lock = ConditionLock()
        var stopping = false
        weak var manager: LogManager?
    }

    private func startFlusher() {
        flusherControl.manager = self
        let control = Unmanaged.passRetained(flusherControl)
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            let control = Unmanaged<FlusherControl>.fromOpaque(arg!).takeRetainedValue()
            while true {
                let stop = control.lock.withLock { () -> Bool in
                    if !control.stopping { control.lock.wait(timeoutNanoseconds: 50_000_000) }
                    return control.stopping
                }
                if stop { return nil }
                guard let manager = control.manager else { return nil }
                manager.flushDueLogs()
            }
        }, control.toOpaque())
        if rc == 0 { flusherThread = thread } else { control.release() }
    }

    private func stopFlusherThread() {
        flusherControl.lock.withLock {
            flusherControl.stopping = true
            flusherControl.lock.broadcast()
        }
        if let t = flusherThread {
            if pthread_equal(t, pthread_self()) == 0 { pthread_join(t, nil) } else { pthread_detach(t) }
            flusherThread = nil
        }
    }

    /// `.interval` logs are flushed every `flushMs`. `.os` logs get their rolled segments flushed
    /// (as Kafka does on roll) so the recovery point, and with it recovery time, keeps up.
    private func flushDueLogs() {
        let now = monotonicMillis()
        for (name, log) in logs.withLock({ $0 }) {
            switch log.config.flushMode {
            case .sync:
                continue
            case .interval:
                if now >= flusherNextDue[name, default: 0], log.hasUnflushedData {
                    try? log.flush()
                    flusherNextDue[name] = now + log.config.flushMs
                }
            case .os:
                if let activeBase = log.segmentBaseOffsets.last, log.recoveryPoint < activeBase {
                    try? log.flush(upTo: activeBase)
                }
            }
        }
    }
}
