import Synchronization

/// Long-poll support: fetches at the log end park here and are resumed the moment an append to
/// their partition lands, or at their deadline. No polling loops.
final class FetchWaiters: Sendable {
    private final class Waiter: Sendable {
        let continuation: Mutex<CheckedContinuation<Void, Never>?>
        init(_ c: CheckedContinuation<Void, Never>) { continuation = Mutex(c) }
        /// Resumes once; later calls do nothing.
        func resume() { continuation.withLock { c in c?.resume(); c = nil } }
    }

    private struct Key: Hashable { let topic: String; let partition: Int32 }
    private let waiters = Mutex<[Key: [ObjectIdentifier: Waiter]]>([:])
    /// Bounded: a parked fetch costs a continuation and a timer task.
    static let maxWaitersPerPartition = 10_000

    /// Waits until `notify(topic, partition)` or until `timeoutMs` passes, whichever is first.
    /// `stillEmpty` is checked after registering, so an append racing with the registration is
    /// never missed.
    func wait(topic: String, partition: Int32, timeoutMs: Int64, stillEmpty: @Sendable () -> Bool) async {
        guard timeoutMs > 0 else { return }
        let key = Key(topic: topic, partition: partition)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waiter = Waiter(continuation)
            let id = ObjectIdentifier(waiter)
            let registered = waiters.withLock { all -> Bool in
                guard all[key, default: [:]].count < Self.maxWaitersPerPartition else { return false }
                all[key, default: [:]][id] = waiter
                return true
            }
            guard registered, stillEmpty() else {
                remove(key, id)
                waiter.resume()
                return
            }
            Task {
                try? await Task.sleep(nanoseconds: UInt64(timeoutMs) * 1_000_000)
                self.remove(key, id)
                waiter.resume()
            }
        }
    }

    /// Waits until an append lands on any of `partitions`, or `timeoutMs` passes. `stillEmpty` is
    /// checked after registering on all of them, so a racing append is never missed.
    func waitAny(_ partitions: [(topic: String, partition: Int32)], timeoutMs: Int64, stillEmpty: @Sendable () -> Bool) async {
        guard timeoutMs > 0, !partitions.isEmpty else { return }
        let keys = partitions.map { Key(topic: $0.topic, partition: $0.partition) }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waiter = Waiter(continuation)
            let id = ObjectIdentifier(waiter)
            let registered = waiters.withLock { all -> Bool in
                for key in keys where all[key, default: [:]].count >= Self.maxWaitersPerPartition { return false }
                for key in keys { all[key, default: [:]][id] = waiter }
                return true
            }
            guard registered, stillEmpty() else {
                for key in keys { remove(key, id) }
                waiter.resume()
                return
            }
            Task {
                try? await Task.sleep(nanoseconds: UInt64(timeoutMs) * 1_000_000)
                for key in keys { self.remove(key, id) }
                waiter.resume()
            }
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
            // A multi-partition waiter is registered under other keys too: drop those entries.
            for (otherKey, var entries) in all {
                var changed = false
                for id in woken.keys where entries[id] != nil { entries[id] = nil; changed = true }
                if changed { all[otherKey] = entries.isEmpty ? nil : entries }
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
