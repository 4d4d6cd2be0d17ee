import ArgumentParser
import Glibc
import StrataBroker
import StrataCore
import StrataStreams
import Synchronization

/// `strata streams run EXAMPLE`: watch the stream-processing examples work on generated orders.
struct Streams: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "streams",
        abstract: "Stream processing (StrataStreams) examples.",
        subcommands: [Run.self])

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
        commandName: "run",
            abstract: "Run an example stream processor against generated orders.",
            discussion: """
                order-chain: orders → payments → stock reservations (join with the compacted inventory \
                table) → shipments → notifications, each step a stream processor emitting the next event. \
                dashboard: revenue and order count per product per one-minute window of event time, \
                printed as a live table and written to the compacted topic sales-dashboard. \
                The data directory is opened for writing (stop `strata serve` first). Ctrl-C stops \
                cleanly: state and input offsets are committed, and a new run continues from there.
                """)

        @OptionGroup var options: DataOptions
        @Argument(help: "order-chain or dashboard.") var example: String
        @Option(help: "Orders to generate (0: process only what the topics already hold).") var orders = 2_000
        @Option(help: "Orders per second (0: as fast as possible).") var rate = 0
        @Option(help: "Partitions of the topics the example creates.") var partitions: Int32 = 4
        @Option(help: "Seed of the order generator.") var seed: UInt64 = 42
        @Flag(help: "Keep running and processing new input until Ctrl-C.") var follow = false

        func run() throws {
            guard let which = StreamExamples.Example(rawValue: example) else {
                throw ValidationError("unknown example '\(example)': \(StreamExamples.Example.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard orders >= 0, rate >= 0, partitions >= 1, partitions <= 1024 else {
                throw ValidationError("--orders and --rate must be >= 0, --partitions in 1...1024")
            }
            // Ctrl-C / SIGTERM cancel the run, which then stops the application with a commit.
            var signals = sigset_t()
            sigemptyset(&signals)
            sigaddset(&signals, SIGINT)
            sigaddset(&signals, SIGTERM)
            pthread_sigmask(SIG_BLOCK, &signals, nil)

            let broker = try options.openBroker()
            var runOptions = StreamExamples.RunOptions()
            runOptions.orders = orders
            runOptions.ratePerSecond = rate
            runOptions.partitions = partitions
            runOptions.seed = seed
            runOptions.follow = follow
            let outcome = Outcome()
            let task = Task {
                do {
                    _ = try await StreamExamples.run(which, broker: broker, options: runOptions) { line in print(line) }
                    outcome.finish(nil)
                } catch {
                    outcome.finish(error)
                }
            }
            let signalled = Atomic<Bool>(false)
            let watcher = SignalWatcher(signals: signals) { signal in
                // A second signal means "now": exit without waiting for the commit.
                if signalled.exchange(true, ordering: .relaxed) { _exit(130) }
                printError("strata: signal \(signal), stopping the example (committing state and offsets; again to exit now)")
                task.cancel()
            }
            watcher.start()
            let failure = outcome.wait()
            try broker.close()
            if let failure, !(failure is CancellationError) { throw CLIError("\(failure)") }
        }
    }
}

/// The result of the run task, waited for by the command's thread.
final class Outcome: @unchecked Sendable {
    private let lock = ConditionLock()
    private var done = false
    private var error: Error?

    func finish(_ e: Error?) {
        lock.withLock {
            error = e
            done = true
            lock.broadcast()
        }
    }

    func wait() -> Error? {
        lock.withLock {
            while !done { lock.wait() }
            return error
        }
    }
}

/// A thread that waits for blocked signals with sigwait (no handler runs on arbitrary threads).
final class SignalWatcher: @unchecked Sendable {
    private let signals: sigset_t
    private let onSignal: @Sendable (Int32) -> Void

    init(signals: sigset_t, onSignal: @escaping @Sendable (Int32) -> Void) {
        self.signals = signals
        self.onSignal = onSignal
    }

    func start() {
        let unmanaged = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            let watcher = Unmanaged<SignalWatcher>.fromOpaque(arg!).takeRetainedValue()
            var set = watcher.signals
            var received: Int32 = 0
            while sigwait(&set, &received) == 0 { watcher.onSignal(received) }
            return nil
        }, unmanaged.toOpaque())
        if rc == 0 { pthread_detach(thread) } else { unmanaged.release() }
    }
}
