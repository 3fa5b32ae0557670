@_spi(Allocator) import PersistentHeapAllocator
@_spi(Core) import PersistentHeapCore

extension Pool {
    /// The calling thread's transaction in this pool, if one is running: what a structure built
    /// on the pool reads through to see the transaction's own writes.
    public var currentTransaction: Transaction? {
        guard !isClosed else { return nil }
        let lane = heap.currentLane()
        guard let state = txStates[lane], state[0].active else { return nil }
        return Transaction(pool: self, context: TransactionContext(lane: lane, state: state), generation: state[0].generation)
    }

    /// Package hook for the containers' fast reads (PersistentCollections): a read-only view of
    /// `count` bytes at `p`, validated once (the pool open, the range inside the heap, 8-byte
    /// aligned), then read field by field without further lookups. The view is valid while the
    /// pool is open and the range is not freed: callers use it within one operation.
    /// - Throws: `invalidPointer` when the range is not inside the heap, `closed`.
    ///
    /// SPI (`@_spi(Containers) import PersistentHeap`), not `package`: its body must inline into
    /// the containers' node reads (a call per node visit measured 5.6% of a B+ tree lookup).
    @inlinable @inline(__always)
    @_spi(Containers) public func readView(_ p: PRawPointer, count: Int) throws(PoolError) -> ByteView {
        try checkOpen()
        let o = Int(truncatingIfNeeded: p.offset)
        guard o & 7 == 0, heap.inHeap(o, count) else {
            throw PoolError(.invalidPointer, "range 0x\(String(p.offset, radix: 16)) (\(count) bytes) is not an aligned range of the heap", path: path)
        }
        return bytes.view(at: o, count: count)
    }
}
