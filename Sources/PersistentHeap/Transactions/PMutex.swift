#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

/// A mutex that lives inside persistent objects (8 bytes), for isolating threads that change
/// the same persistent data — transactions give atomicity against crashes, not isolation.
///
/// The word holds `session × 2 + locked`, where `session` counts the pool's read-write opens:
/// a mutex locked in an earlier session (by a process that crashed while holding it) is free in
/// this one, so a lock held at the moment of a crash never stays held. Locking does not persist
/// anything: the state is meaningless after the session ends.
///
/// ```swift
/// struct Account: BitwiseCopyable { var lock: PMutex; var balance: Int }
/// try pool.withLock(account.field(\.lock)) {
///     try pool.transaction { tx in try tx.update(account.field(\.balance)) { $0 += 10 } }
/// }
/// ```
@frozen
public struct PMutex: BitwiseCopyable, Sendable {
    /// The raw lock word.
    public var word: UInt64
    /// An unlocked mutex (also what zeroed memory holds).
    public init() { word = 0 }
}

extension Pool {
    /// The pool offset of the mutex's word (validated).
    private func mutexWord(_ m: PPointer<PMutex>) throws(PoolError) -> Int {
        try checkWritable()
        return try checkedOffset(m)
    }

    /// Takes the mutex at `m` if it is free; returns whether it did.
    public func tryLock(_ m: PPointer<PMutex>) throws(PoolError) -> Bool {
        let w = try mutexWord(m)
        // Acquire pairs with unlock's release; the exchange is sequentially consistent.
        let v = bytes.atomicLoad(w, .acquiring)
        let held = v >> 1 == session && v & 1 == 1
        return !held && bytes.compareExchange(w, expected: v, desired: session << 1 | 1)
    }

    /// Takes the mutex at `m`, waiting while another thread holds it.
    public func lock(_ m: PPointer<PMutex>) throws(PoolError) {
        var spins = 0
        while try !tryLock(m) {
            spins += 1
            if spins < 64 { ThreadContext.spinPause() } else if spins < 1000 { ThreadContext.yield() } else { ThreadContext.sleep(microseconds: 50) }
        }
    }

    /// Releases the mutex at `m` (held by the caller).
    public func unlock(_ m: PPointer<PMutex>) throws(PoolError) {
        let w = try mutexWord(m)
        bytes.atomicStore(w, session << 1, .releasing)
    }

    /// Runs `body` holding the mutex at `m`.
    public func withLock<R>(_ m: PPointer<PMutex>, _ body: () throws -> R) throws -> R {
        try lock(m)
        defer { try? unlock(m) }
        return try body()
    }
}
