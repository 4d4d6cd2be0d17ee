#if canImport(Glibc)
import Glibc
#endif

/// A mutex with a condition variable, for the few places where threads must sleep until
/// another thread changes state (group commit, background flusher). The pthread objects live
/// on the heap because they must not move.
/// `@unchecked Sendable`: its only state is the heap-allocated pthread mutex and condition,
/// which exist to be shared between threads and are touched only through pthread calls.
public final class ConditionLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        cond = .allocate(capacity: 1)
        precondition(pthread_mutex_init(mutex, nil) == 0)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        precondition(pthread_cond_init(cond, &attr) == 0)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }
    public func broadcast() { pthread_cond_broadcast(cond) }
    /// Caller holds the lock.
    public func wait() { pthread_cond_wait(cond, mutex) }

    /// Caller holds the lock. Returns false on timeout.
    @discardableResult
    public func wait(timeoutNanoseconds: Int64) -> Bool {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let total = Int64(ts.tv_nsec) + timeoutNanoseconds
        ts.tv_sec += Int(total / 1_000_000_000)
        ts.tv_nsec = Int(total % 1_000_000_000)
        return pthread_cond_timedwait(cond, mutex, &ts) == 0
    }

    @inline(__always)
    public func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// Milliseconds on a clock that never jumps, for roll and flush timers.
@inline(__always)
public func monotonicMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// Nanoseconds on a clock that never jumps, for latency metrics.
@inline(__always)
public func monotonicNanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Wall-clock milliseconds since the epoch (record timestamps).
@inline(__always)
public func wallClockMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
