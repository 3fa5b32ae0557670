#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(Core) import PersistentHeapCore
import Synchronization

/// Hands out lanes to threads. A lane is a persistent redo log plus the volatile per-thread
/// allocation state (the run each size class currently allocates from). A thread takes a lane
/// the first time it uses a pool and keeps it (cached in a thread-local slot) until it exits,
/// so the allocation fast path takes no lock. When every lane is taken, a new thread waits.
@_spi(Allocator) public final class LaneTable: @unchecked Sendable {
    @_spi(Allocator) public let count: Int
    private let free: Locked<[Int]>
    /// Called with a lane index when a thread gives its lane back (exit, eviction, close).
    @_spi(Allocator) public var onRelease: (@Sendable (Int) -> Void)?

    @_spi(Allocator) public init(count: Int) {
        self.count = count
        free = Locked(Array((0..<count).reversed()))
    }

    /// One more than the highest lane ever handed out (lanes are handed out lowest first, so
    /// scans over "every lane" stop here).
    /// (Sequentially consistent, as the bump in `acquire`: a checkpoint reads the seq counter,
    /// then this; a lane it does not count took its lane, then its seq, after both reads.)
    @_spi(Allocator) public var highWater: Int { used.load(ordering: .sequentiallyConsistent) }
    private let used = Atomic<Int>(0)

    /// Takes a free lane, waiting while all are in use.
    func acquire() -> Int {
        var spins = 0
        while true {
            if let lane = free.withLock({ $0.popLast() }) {
                var h = used.load(ordering: .relaxed)
                while h < lane + 1 {
                    let (exchanged, original) = used.compareExchange(expected: h, desired: lane + 1, ordering: .sequentiallyConsistent)
                    if exchanged { break }
                    h = original
                }
                return lane
            }
            spins += 1
            if spins < 100 { ThreadContext.yield() } else { ThreadContext.sleep(microseconds: 100) }
        }
    }

    /// Gives a lane back.
    func release(_ lane: Int) {
        onRelease?(lane)
        free.withLock { $0.append(lane) }
    }

}

/// Pool ids, unique for the life of the process (never reused, so a stale thread-local cache
/// entry can never name a newer pool).
@_spi(Allocator) public enum PoolIdentity {
    private static let next = Atomic<UInt64>(1)
    @_spi(Allocator) public static func make() -> UInt64 { next.add(1, ordering: .relaxed).oldValue }
}

/// Maps live pool ids to their lane tables, so a thread that exits can give its lanes back.
@_spi(Allocator) public enum LaneRegistry {
    final class Entry: @unchecked Sendable { weak var lanes: LaneTable? ; init(_ l: LaneTable) { lanes = l } }
    private static let table = Locked<[UInt64: Entry]>([:])

    @_spi(Allocator) public static func register(_ id: UInt64, _ lanes: LaneTable) { table.withLock { $0[id] = Entry(lanes) } }
    @_spi(Allocator) public static func unregister(_ id: UInt64) { _ = table.withLock { $0.removeValue(forKey: id) } }
    static func lookup(_ id: UInt64) -> LaneTable? { table.withLock { $0[id]?.lanes } }
}

/// Runs at thread exit: gives back every lane the thread holds.
@Sendable func laneThreadExit() {
    for i in 0..<ThreadContext.laneCacheSize {
        let (pool, lane) = ThreadContext.laneEntry(i)
        if pool != 0 && lane >= 0 { LaneRegistry.lookup(pool)?.release(lane) }
        ThreadContext.clearLaneEntry(i)
    }
}

/// Installs the thread-exit handler once per process.
private let laneExitHandlerInstalled: Bool = {
    ThreadContext.setThreadExitHandler(laneThreadExit)
    return true
}()

extension LaneTable {
    /// The lane of the calling thread in pool `poolID`, taking one on first use.
    @inlinable @inline(__always)
    func current(poolID: UInt64) -> Int {
        let cached = ThreadContext.lane(inPool: poolID)
        if cached >= 0 { return cached }
        return currentSlow(poolID: poolID)
    }

    @inline(never) @usableFromInline
    func currentSlow(poolID: UInt64) -> Int {
        _ = laneExitHandlerInstalled
        ThreadContext.registerForExit()
        let lane = acquire()
        let old = ThreadContext.storeLane(lane, pool: poolID)
        // The slot held a lane of another pool: give it back (that pool may be gone).
        if old.pool != 0 && old.pool != poolID && old.lane >= 0 { LaneRegistry.lookup(old.pool)?.release(old.lane) }
        return lane
    }

    /// Forgets the calling thread's cached lane of `poolID` (and gives it back).
    @_spi(Allocator) public func releaseCurrent(poolID: UInt64) {
        for i in 0..<ThreadContext.laneCacheSize {
            let (pool, lane) = ThreadContext.laneEntry(i)
            if pool == poolID {
                ThreadContext.clearLaneEntry(i)
                if lane >= 0 { release(lane) }
            }
        }
    }
}
