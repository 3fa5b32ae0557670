// Package-only: the map of this pool's regions, for the mutation fuzzer and tests.

@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

extension Pool {
    /// The regions of this pool (see `Heap.regions`). Call while no other thread uses the pool.
    package func regions() throws(PoolError) -> [PoolRegion] {
        try checkOpen()
        return try heap.regions(laneCount: Int(header.laneCount))
    }
}
