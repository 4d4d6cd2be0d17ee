#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Runs `body(i)` for every `i` in `0..<count` on up to `threads` threads (the caller's among
/// them) and returns when all are done. For work that mostly waits on the disk (opening and
/// recovering thousands of partitions: Kafka's `num.recovery.threads.per.data.dir`), where more
/// threads than cores overlap the waits. Items are taken in order from a shared counter.
public enum ParallelLoop {
    private final class Shared: Sendable {
        let next = Atomic<Int>(0)
        let count: Int
        let body: @Sendable (Int) -> Void
        init(count: Int, body: @escaping @Sendable (Int) -> Void) {
            self.count = count
            self.body = body
        }
        func work() {
            while true {
                let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                guard i < count else { return }
                body(i)
            }
        }
    }

    public static func run(count: Int, threads: Int, _ body: @escaping @Sendable (Int) -> Void) {
        guard count > 0 else { return }
        let shared = Shared(count: count, body: body)
        var started: [pthread_t] = []
        for _ in 1..<max(1, min(threads, count)) {
            // Fewer threads when one cannot be created: the others do more.
            if let t = startThread({ shared.work() }) { started.append(t) }
        }
        shared.work()
        for t in started { pthread_join(t, nil) }
    }
}
