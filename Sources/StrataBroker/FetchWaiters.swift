import Synchronization

/// Long-poll support: fetches at the log end park here and are resumed the moment an append to
/// their partition lands, or at their deadline. No polling loops.
final class FetchWaiters: Sendable {
    private final class Waiter: Sendable {
        private struct State {
            var continuation: CheckedContinuation<Void, Never>?
            var timer: Task<Void, Never>?
        }
        private let state: Mutex<State>
        /// Every partition it waits on (a multi-partition Fetch waits on several).
        let keys: [Key]
        init(_ c: CheckedContinuation<Void, Never>, keys: [Key]) {
            state = Mutex(State(continuation: c, timer: nil))
            self.keys = keys
        }
        /// Resumes once (later calls do nothing) and cancels the timeout timer, so that woken
        /// waits leave no sleeping timer tasks behind.
        func resume() {
            let (c, timer) = state.withLock { s in
                defer { s.continuation = nil; s.timer = nil }
                return (s.continuation, s.timer)
            }
            timer?.cancel()
            c?.resume()
        }
        /// Attaches the timeout timer; cancelled at once when the waiter was already resumed.
        func setTimer(_ t: Task<Void, Never>) {
            let resumed = state.withLock { s -> Bool in
                guard s.continuation != nil else { return true }
                s.timer = t
                return false
            }
            if resumed { t.cancel() }
        }
    }

    fileprivate struct Key: Hashable { let topic: String; let partition: Int32 }
    private let waiters = Mutex<[Key: [ObjectIdentifier: Waiter]]>([:])
    /// Bounded: a parked fetch costs a continuation and a timer task.
    static let maxWaitersPerPartition = 10_000
    /// Timeouts are capped (~12 days) so that the nanosecond conversion cannot overflow.
    static let maxTimeoutMs: Int64 = 1 << 30

    /// Waits until `notify(topic, partition)` or until `timeoutMs` passes, whichever is first.
    /// `stillEmpty` is checked after registering, so an append racing with the registration is
    /// never missed.
    func wait(topic: String, partition: Int32, timeoutMs: Int64, stillEmpty: @Sendable () -> Bool) async {
        await waitAny([(topic, partition)], timeoutMs: timeoutMs, stillEmpty: stillEmpty)
    }

    /// Waits until an append lands on any of `partitions`, `timeoutMs` passes (nil: no timeout),
    /// or the calling task is cancelled. `stillEmpty` is checked after registering on all of them,
    /// so a racing append is never missed.
    func waitAny(_ partitions: [(topic: String, partition: Int32)], timeoutMs: Int64?, stillEmpty: @Sendable () -> Bool) async {
        if let timeoutMs, timeoutMs <= 0 { return }
        guard !partitions.isEmpty, !Task.isCancelled else { return }
        let keys = partitions.map { Key(topic: $0.topic, partition: $0.partition) }
        // The waiter, once registered, for the cancellation handler (which may run before it exists).
        let current = Mutex<Waiter?>(nil)
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let waiter = Waiter(continuation, keys: keys)
                let id = ObjectIdentifier(waiter)
                let registered = waiters.withLock { all -> Bool in
                    for key in keys where all[key, default: [:]].count >= Self.maxWaitersPerPartition { return false }
                    for key in keys { all[key, default: [:]][id] = waiter }
                    return true
                }
                current.withLock { $0 = waiter }
                // Checked after publishing the waiter: a cancellation either sees it or is seen here.
                guard registered, stillEmpty(), !Task.isCancelled else {
                    for key in keys { remove(key, id) }
                    waiter.resume()
                    return
                }
                if let timeoutMs {
                    let ns = UInt64(min(timeoutMs, Self.maxTimeoutMs)) * 1_000_000
                    waiter.setTimer(Task {
                        guard (try? await Task.sleep(nanoseconds: ns)) != nil else { return }  // cancelled: woken already
                        for key in keys { self.remove(key, id) }
                        waiter.resume()
                    })
                }
            }
        } onCancel: {
            guard let waiter = current.withLock({ $0 }) else { return }
            let id = ObjectIdentifier(waiter)
            for key in keys { remove(key, id) }
            waiter.resume()
        }
    }

    private func remove(_ key: Key, _ id: ObjectIdentifier) {
        waiters.withLock { all in
            all[key]?[id] = nil
            if all[key]?.isEmpty == true { all[key] = nil }
        }
    }

    /// Wakes every fetch parked on the partition.
    func notify(topic: String, partition: Int32) {
        let key = Key(topic: topic, partition: partition)
        let woken = waiters.withLock { all -> [ObjectIdentifier: Waiter]? in
            guard let woken = all.removeValue(forKey: key) else { return nil }
            // A multi-partition waiter is registered under its other keys too: drop just those
            // entries (never a walk of every partition's waiters: an append costs what its own
            // partition's waiters cost, however many fetches are parked elsewhere).
            for (id, waiter) in woken where waiter.keys.count > 1 {
                for other in waiter.keys where other != key {
                    all[other]?[id] = nil
                    if all[other]?.isEmpty == true { all[other] = nil }
                }
            }
            return woken
        }
        guard let woken else { return }
        for waiter in woken.values { waiter.resume() }
    }

    func notifyAll() {
        let woken = waiters.withLock { all -> [Waiter] in
            defer { all.removeAll() }
            return all.values.flatMap { $0.values }
        }
        for waiter in woken { waiter.resume() }
    }
}
