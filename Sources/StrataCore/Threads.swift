#if canImport(Glibc)
import Glibc
#endif

/// Starts an OS thread running `body` (the background workers, parallel loops, read-ahead of
/// cold blocks: threads of their own, off Swift's two-thread cooperative pool). Returns the
/// thread to join or detach, or nil when it could not be created (`body` is then released
/// unrun; callers do the work themselves or report it).
public func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t? {
    final class Box: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body))
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { arg in
        Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
        return nil
    }, box.toOpaque())
    guard rc == 0 else {
        box.release()
        return nil
    }
    return thread
}
