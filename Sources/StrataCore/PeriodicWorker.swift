#if canImport(Glibc)
import Glibc
#endif

/// A background OS thread that runs `body` every `intervalMs` until stopped. Stopping wakes it at
/// once and waits for the current run to finish.
/// `@unchecked Sendable`: `stopping` is read and written only under `lock`; `thread` is written by
/// `start` and `stop`, which the owner calls from one thread, never concurrently.
public final class PeriodicWorker: @unchecked Sendable {
    private let lock = ConditionLock()
    private var stopping = false
    private var thread: pthread_t?
    private let intervalMs: Int64
    private let body: @Sendable () -> Void

    public init(intervalMs: Int64, body: @escaping @Sendable () -> Void) {
        self.intervalMs = max(1, intervalMs)
        self.body = body
    }

    public func start() {
        thread = startThread { [self] in loop() }
    }

    private func loop() {
        while true {
            let stop = lock.withLock { () -> Bool in
                if !stopping { lock.wait(timeoutNanoseconds: intervalMs * 1_000_000) }
                return stopping
            }
            if stop { return }
            body()
        }
    }

    public func stop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
        if let t = thread {
            pthread_join(t, nil)
            thread = nil
        }
    }
}
