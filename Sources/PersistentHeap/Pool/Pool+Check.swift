// The pool's consistency check and statistics (the allocator's full check).

@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

extension Pool {
    /// A full consistency check of the heap (not only the header): every unit-table entry and
    /// run header valid, bitmaps agree with the run headers and the volatile counts, no extent
    /// overlaps another, the free-space indexes (binary heaps) hold exactly the free space,
    /// the space accounting adds up, no log holds an unfinished operation, the root is live.
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
}
