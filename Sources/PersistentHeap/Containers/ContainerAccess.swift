// What every container needs: reads that see the calling thread's transaction (its own writes
// included), and mutations that run as a transaction, joining the caller's if there is one.

extension Pool {
    /// The calling thread's transaction in this pool, if one is running.
    @inline(__always)
    func activeTransaction() -> Transaction? {
        guard let context = txContexts[heap.currentLane()], context.state.pointee.active else { return nil }
        return Transaction(pool: self, context: context, generation: context.state.pointee.generation)
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
        try load(PPointer<T>(offset: UInt64(offset)))
    }
}

/// Traps with a clear message: for non-throwing `Collection` requirements reading a pool whose
/// contents are damaged (the throwing methods report the same problems as errors).
@inline(never)
func containerFailure(_ error: any Error) -> Never {
    preconditionFailure("persistent container: \(error)")
}
