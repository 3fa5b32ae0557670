#if canImport(Glibc)
import Glibc
#endif
import CPersistentHeap
import Synchronization

/// Hands out lanes to threads. A lane is a persistent redo log plus the volatile per-thread
/// allocation state (the run each size class currently allocates from). A thread takes a lane
/// the first time it uses a pool and keeps it (cached in a thread-local slot) until it exits,
/// so the allocation fast path takes no lock. When every lane is taken, a new thread waits.
final class LaneTable: @unchecked Sendable {
    let count: Int
    private let free: Locked<[Int]>
    /// Called with a lane index when a thread gives its lane back (exit, eviction, close).
    var onRelease: (@Sendable (Int) -> Void)?

    init(count: Int) {
        self.count = count
        free = Locked(Array((0..<count).reversed()))
    }

    /// Takes a free lane, waiting while all are in use.
    func acquire() -> Int {
        var spins = 0
        while true {
            if let lane = free.withLock({ $0.popLast() }) { return lane }
            spins += 1
            if spins < 100 { sched_yield() } else { usleep(100) }
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
enum PoolIdentity {
    private static let next = Atomic<UInt64>(1)
    static func make() -> UInt64 { next.add(1, ordering: .relaxed).oldValue }
}

/// Maps live pool ids to their lane tables, so a thread that exits can give its lanes back.
enum LaneRegistry {
    final class Entry: @unchecked Sendable { weak var lanes: LaneTable? ; init(_ l: LaneTable) { lanes = l } }
    private static let table = Locked<[UInt64: Entry]>([:])

    static func register(_ id: UInt64, _ lanes: LaneTable) { table.withLock { $0[id] = Entry(lanes) } }
    static func unregister(_ id: UInt64) { _ = table.withLock { $0.removeValue(forKey: id) } }
    static func lookup(_ id: UInt64) -> LaneTable? { table.withLock { $0[id]?.lanes } }
}

/// Runs at thread exit (registered through a pthread key): gives back every lane the thread holds.
func laneThreadExit(_ arg: UnsafeMutableRawPointer?) {
    for i in 0..<4 as Range<UInt32> {
        var pool: UInt64 = 0, lane: Int64 = -1
        ph_tls_lane_entry(i, &pool, &lane)
        if pool != 0 && lane >= 0 { LaneRegistry.lookup(pool)?.release(Int(lane)) }
        ph_tls_lane_clear(i)
    }
}

extension LaneTable {
    /// The lane of the calling thread in pool `poolID`, taking one on first use.
    @inline(__always)
    func current(poolID: UInt64) -> Int {
        let cached = ph_tls_lane_lookup(poolID)
        if cached >= 0 { return Int(cached) }
        return currentSlow(poolID: poolID)
    }

    @inline(never)
    private func currentSlow(poolID: UInt64) -> Int {
        let tls = ph_tls()!
        if tls.pointee.exit_registered == 0 {
            tls.pointee.exit_registered = 1
            for i in 0..<4 as Range<UInt32> { ph_tls_lane_clear(i) }
            _ = ph_register_thread_exit(laneThreadExit, UnsafeMutableRawPointer(bitPattern: 1))
        }
        let lane = acquire()
        var oldPool: UInt64 = 0, oldLane: Int64 = -1
        ph_tls_lane_store(poolID, Int64(lane), &oldPool, &oldLane)
        // The slot held a lane of another pool: give it back (that pool may be gone).
        if oldPool != 0 && oldPool != poolID && oldLane >= 0 { LaneRegistry.lookup(oldPool)?.release(Int(oldLane)) }
        return lane
    }

    /// Forgets the calling thread's cached lane of `poolID` (and gives it back).
    func releaseCurrent(poolID: UInt64) {
        for i in 0..<4 as Range<UInt32> {
            var pool: UInt64 = 0, lane: Int64 = -1
            ph_tls_lane_entry(i, &pool, &lane)
            if pool == poolID {
                ph_tls_lane_clear(i)
                if lane >= 0 { release(Int(lane)) }
            }
        }
    }
}
