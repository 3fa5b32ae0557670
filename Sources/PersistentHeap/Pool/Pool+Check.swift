// The pool's consistency check and statistics (the allocator's full check).

@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

extension Pool {
    /// A full consistency check of the heap (not only the header): every unit-table entry and
    /// run header valid, bitmaps agree with the run headers and the volatile counts, no extent
    /// overlaps another, the free-space indexes (binary heaps) hold exactly the free space,
    /// the space accounting adds up, every log record is well formed and its allocator changes
    /// are in place, the root is live.
    ///
    /// Call it while no other thread uses the pool.
    /// - Complexity: O(units walked + bitmap words + indexed extents).
    public func check() throws(PoolError) -> CheckReport {
        try checkOpen()
        return try heap.checkAll(laneCount: Int(header.laneCount), rootSlot: Pool.rootSlotOffset)
    }

    /// Allocation statistics: bytes allocated and free, objects per size class, largest free
    /// extent, fragmentation. O(heap metadata), like ``check()``.
    public func stats() throws(PoolError) -> PoolStats {
        try check().stats
    }

    /// Writes back in place everything the live log records changed and retires them: two
    /// fences (one `msync` each on an ordinary file) plus one flush per changed line, however
    /// many operations ran since the last checkpoint.
    ///
    /// Never needed for durability — every operation is durable when it returns — it bounds
    /// what recovery replays after a crash. Checkpoints also run by themselves: when a lane's
    /// log is full (every ~60 small operations of a thread), before a shrink, and at ``close()``.
    /// - Throws: `readOnly`, `closed`.
    public func checkpoint() throws(PoolError) {
        try checkWritable()
        heap.checkpointAll()
    }
}
