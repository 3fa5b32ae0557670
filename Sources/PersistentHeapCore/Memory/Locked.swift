#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A value guarded by a blocking lock (`pthread_mutex_t`): for slow paths only (lane hand-out,
/// the root's first creation, the simulated media, registries).
///
/// Not `Synchronization.Mutex`: that one locks through the standard library's own futex code,
/// which ThreadSanitizer cannot see, so every access it guards would be reported as a race. A
/// pthread mutex is intercepted by the sanitizer (and costs the same off the hot path).
@_spi(Core) public final class Locked<State>: @unchecked Sendable {
    private let lock = BlockingLock()
    private var state: State

    @_spi(Core) public init(_ state: State) { self.state = state }

    /// Runs `body` with the state, holding the lock.
    @_spi(Core) public func withLock<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        try lock.withLock { () throws(E) -> R in try body(&state) }
    }
}

/// A blocking lock guarding no stored value (growth, the root's first creation): `Locked<Void>`
/// would hand `body` an `inout` of a zero-sized value, an access ThreadSanitizer maps onto the
/// object's header and reports against unlocked reads of it (a false race seen in CI).
@_spi(Core) public final class BlockingLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    @_spi(Core) public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Runs `body` holding the lock.
    @_spi(Core) public func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
