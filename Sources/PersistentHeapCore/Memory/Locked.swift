#if canImport(Glibc)
import Glibc
#endif

/// A value guarded by a blocking lock (`pthread_mutex_t`): for slow paths only (lane hand-out,
/// the root's first creation, the simulated media, registries).
///
/// Not `Synchronization.Mutex`: that one locks through the standard library's own futex code,
/// which ThreadSanitizer cannot see, so every access it guards would be reported as a race. A
/// pthread mutex is intercepted by the sanitizer (and costs the same off the hot path).
package final class Locked<State>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var state: State

    package init(_ state: State) {
        self.state = state
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Runs `body` with the state, holding the lock.
    package func withLock<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }
}
