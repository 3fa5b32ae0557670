// What every container needs: reads that see the calling thread's transaction (its own writes
// included), and mutations that run as a transaction, joining the caller's if there is one.

extension Pool {
    /// The container header `slot` refers to; if the slot is null, a zeroed header is allocated
    /// and linked into it atomically (one transaction, joining the caller's).
    func openContainerHeader<H: BitwiseCopyable>(_ type: H.Type, at slot: PPointer<PPointer<H>>) throws -> PPointer<H> {
        let existing = try ContainerReader(self).load(slot)
        if !existing.isNull { return existing }
        return try transaction { tx -> PPointer<H> in
            let header = try tx.allocate(H.self, zeroed: true)
            try tx.write(header, to: slot)
            return header
        }
    }

    /// The calling thread's transaction in this pool, if one is running.
    @inline(__always)
    func activeTransaction() -> Transaction? {
        let lane = heap.currentLane()
        guard let state = txStates[lane], state.pointee.active else { return nil }
        return Transaction(pool: self, context: TransactionContext(lane: lane, state: state), generation: state.pointee.generation)
    }
}

/// Reads persistent memory as the calling thread sees it: through its transaction if one is
/// running, directly (checked) otherwise.
struct ContainerReader {
    let pool: Pool
    let tx: Transaction?

    init(_ pool: Pool) {
        self.pool = pool
        tx = pool.activeTransaction()
    }

    init(_ pool: Pool, _ tx: Transaction) {
        self.pool = pool
        self.tx = tx
    }

    @inline(__always)
    func load<T: BitwiseCopyable>(_ p: PPointer<T>) throws -> T {
        if let tx { return try tx.read(p) }
        return try pool.load(p)
    }

    @inline(__always)
    func load<T: BitwiseCopyable>(_ type: T.Type, at offset: Int) throws -> T {
        if tx == nil, let base { return (base + offset).loadUnaligned(as: T.self) }
        return try load(PPointer<T>(offset: UInt64(offset)))
    }

    /// Outside a transaction, the mapping's base, for direct reads of ranges validated by
    /// ``validate(_:count:)`` (a container node is checked once, then read field by field).
    var base: UnsafeRawPointer? { tx == nil ? UnsafeRawPointer(pool.bytes.base) : nil }

    /// Checks that `[offset, offset+count)` lies inside the heap.
    @inline(__always)
    func validate(_ offset: Int, count: Int) throws {
        guard offset >= pool.heap.heapOffset, count >= 0, offset <= pool.heap.poolEnd - count else {
            throw PoolError(.corrupted, "container node at \(offset) (\(count) bytes) lies outside the heap", path: pool.path)
        }
    }
}

/// Traps with a clear message: for non-throwing `Collection` requirements reading a pool whose
/// contents are damaged (the throwing methods report the same problems as errors).
@inline(never)
func containerFailure(_ error: any Error) -> Never {
    preconditionFailure("persistent container: \(error)")
}
