#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CPersistentHeap

/// The calling thread's context, kept in one C `_Thread_local` record (read inline, no lookup):
/// persistence counters, the msync domain's pending range, and a small direct-mapped cache of the
/// lanes this thread holds, by pool id.
///
/// **Invariant:** the record is the calling thread's own; nothing here is shared between threads
/// except through `onThreadExit`, which runs on the exiting thread.
@_spi(Core) public enum ThreadContext {
    /// The CPU's spin-wait hint (`pause` on x86).
    @inlinable @inline(__always) @_spi(Core) public static func spinPause() { ph_pause() }

    /// Gives the CPU to another thread (`sched_yield`): a wait for another thread's short step.
    @_spi(Core) public static func yield() { sched_yield() }

    /// Sleeps the calling thread for about `microseconds` (`usleep`): a bounded wait's step.
    @_spi(Core) public static func sleep(microseconds: UInt32) { usleep(microseconds) }

    /// Entries of the lane cache.
    @_spi(Core) public static let laneCacheSize = 4

    /// The lane this thread holds in pool `poolID`, or -1.
    @inlinable @inline(__always) @_spi(Core) public static func lane(inPool poolID: UInt64) -> Int {
        Int(ph_tls_lane_lookup(poolID))
    }

    /// Records `lane` for `poolID`; returns the entry it replaces (pool id 0 when it was empty).
    @_spi(Core) public static func storeLane(_ lane: Int, pool poolID: UInt64) -> (pool: UInt64, lane: Int) {
        var oldPool: UInt64 = 0, oldLane: Int64 = -1
        ph_tls_lane_store(poolID, Int64(lane), &oldPool, &oldLane)
        return (oldPool, Int(oldLane))
    }

    /// Entry `i` of the lane cache.
    @_spi(Core) public static func laneEntry(_ i: Int) -> (pool: UInt64, lane: Int) {
        var pool: UInt64 = 0, lane: Int64 = -1
        ph_tls_lane_entry(UInt32(i), &pool, &lane)
        return (pool, Int(lane))
    }

    /// Clears entry `i` of the lane cache.
    @_spi(Core) public static func clearLaneEntry(_ i: Int) { ph_tls_lane_clear(UInt32(i)) }

    /// Runs `handler` when this thread exits (registered once per thread; the handler is the one
    /// set by `setThreadExitHandler`).
    @_spi(Core) public static func registerForExit() {
        guard let tls = ph_tls(), tls.pointee.exit_registered == 0 else { return }
        tls.pointee.exit_registered = 1
        for i in 0..<laneCacheSize { clearLaneEntry(i) }
        _ = ph_register_thread_exit(threadExitTrampoline, UnsafeMutableRawPointer(bitPattern: 1))
    }

    /// The function run on a registered thread's exit (one for the process: the lane hand-back).
    @_spi(Core) public static func setThreadExitHandler(_ handler: @escaping @Sendable () -> Void) {
        exitHandler.withLock { $0 = handler }
    }

    fileprivate static let exitHandler = Locked<(@Sendable () -> Void)?>(nil)
}

/// The C thread-exit callback: runs the registered handler on the exiting thread.
private func threadExitTrampoline(_ arg: UnsafeMutableRawPointer?) {
    if let handler = ThreadContext.exitHandler.withLock({ $0 }) { handler() }
}
