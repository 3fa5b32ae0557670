#if canImport(Glibc)
import Glibc
#endif
@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

// Transactions: a volatile write set, then one redo log at commit.
//
//   body runs       writes go to shadow copies; allocations are reservations; frees are listed
//   commit          1. the log: every written range, every allocation, every free (+ verify
//                      entries for blocks zeroed in place); one fast line when it fits, the main
//                      log otherwise, continued in an extension block for large transactions
//                   2. fence 1 (log durable) · apply · fence 2 (changes durable) · retire
//   abort           reservations given back, shadows dropped: memory was never changed
//
// Recovery replays committed logs; a transaction without a complete log changed nothing.

extension Pool {
    @inline(__always)
    func transactionContext(_ lane: Int) -> TransactionContext {
        if let state = txStates[lane] { return TransactionContext(lane: lane, state: state) }
        let c = TransactionContext.make(lane: lane)
        txStates[lane] = c.state
        return c
    }

    /// Whether the calling thread is inside a transaction of this pool.
    public var inTransaction: Bool {
        guard !isClosed else { return false }
        return txStates[heap.currentLane()]?[0].active ?? false
    }

    /// Runs `body` as one failure-atomic transaction and returns its result.
    ///
    /// Everything `body` changes through its `Transaction` takes effect together when `body`
    /// returns (durably: it survives any crash after `transaction` returns), or not at all:
    /// an error thrown by `body` aborts the transaction and is rethrown; a crash before the
    /// commit completes is rolled back by recovery. A transaction started inside another on the
    /// same thread joins it (flattened): an error in the inner one aborts the whole, even if the
    /// outer body catches it.
    ///
    /// Isolation between threads is the application's (see ``PMutex``); each thread may run its
    /// own transactions concurrently.
    ///
    /// - Complexity: two fences at commit, whatever the number of ranges; none for a
    ///   transaction that changed nothing.
    @discardableResult
    @inlinable
    public func transaction<R>(_ body: (Transaction) throws -> R) throws -> R {
        // Generic shell, specialised in the caller (the body is called directly); the work is
        // in the non-generic begin/end below.
        let tx = try _beginTransaction()
        let result: R
        do {
            result = try body(tx)
        } catch {
            throw _failTransaction(tx, error)
        }
        try _endTransaction(tx)
        return result
    }

    /// Begins a transaction on the calling thread's lane, or joins the one running there.
    @usableFromInline
    func _beginTransaction() throws(PoolError) -> Transaction {
        try checkWritable()
        let context = transactionContext(heap.currentLane())
        let ctx = context.state
        if ctx[0].active {
            ctx[0].depth += 1
        } else {
            ctx[0].generation &+= 1
            ctx[0].active = true
            ctx[0].depth = 1
            ctx[0].thread = pthread_self()
        }
        return Transaction(pool: self, context: context, generation: ctx[0].generation)
    }

    /// The body of `tx` threw `error`: a joined transaction dooms the outermost one, the
    /// outermost aborts. Returns the error to rethrow.
    @usableFromInline
    func _failTransaction(_ tx: Transaction, _ error: any Error) -> any Error {
        let ctx = tx.context.state
        if ctx[0].depth > 1 {
            ctx[0].depth -= 1
            if ctx[0].doom == nil { ctx[0].doom = error }
        } else {
            abortTransaction(tx.context)
        }
        return error
    }

    /// The body of `tx` returned: a joined transaction just leaves; the outermost commits
    /// (or aborts, if a joined one failed).
    @usableFromInline
    func _endTransaction(_ tx: Transaction) throws {
        let context = tx.context
        let ctx = context.state
        if ctx[0].depth > 1 {
            ctx[0].depth -= 1
            return
        }
        if let doom = ctx[0].doom {
            abortTransaction(context)
            throw doom
        }
        if ctx[0].hasWork {
            do throws(PoolError) {
                try commitTransaction(context)
            } catch {
                abortTransaction(context)
                throw error
            }
        }
        ctx[0].reset()
    }

    private func abortTransaction(_ context: TransactionContext) {
        let ctx = context.state
        for r in ctx[0].reservations { heap.cancel(r) }
        for f in ctx[0].frees { heap.cancelFree(f) }
        ctx[0].reset()
    }

    /// Bytes the commit log takes.
    private func logBytes(_ ctx: FixedArray<TransactionState>, publishEntries: Int) -> Int {
        var n = 0
        for r in ctx[0].writeSet.ranges { n += RedoLog.writeEntrySize(r) }
        for b in ctx[0].fresh where b.written { n += 16 }
        n += 16 * publishEntries
        n += Heap.freeEntryBytes * ctx[0].frees.count
        return n
    }

    private func commitTransaction(_ context: TransactionContext) throws(PoolError) {
        let lane = context.lane
        let ctx = context.state
        let publishEntries = heap.publishEntries(ctx[0].reservations)
        let total = logBytes(ctx, publishEntries: publishEntries)
        var log: RedoLog
        var ext: (offset: Int, capacity: Int)?
        var fast = total <= LaneLayout.fastLogSize - LogField.payload
        if fast {
            for r in ctx[0].writeSet.ranges where RedoLog.writeEntrySize(r) != 16 { fast = false }
        }
        if fast {
            log = heap.log(lane: lane, entries: 3)
        } else {
            log = heap.log(lane: lane, entries: .max)
            if total > log.remaining {
                // A large transaction: the log continues in the lane's extension block (kept
                // linked across transactions). Entries never split across segments, so the
                // inline part may end early: size the extension for everything.
                ext = try heap.logExtension(lane: lane, payload: total + 64)
            }
        }
        // Moves to the extension when the next entry (`n` bytes) would not leave room for the jump.
        @inline(__always) func room(_ log: inout RedoLog, _ n: Int) {
            if let ext, log.remaining < n + 16 && !log.isExtended { log.extend(to: ext.offset, capacity: ext.capacity) }
        }
        // New blocks written in place: flushed under fence 1, verified over their final contents.
        for b in ctx[0].fresh where b.written {
            persistence.flush(offset: b.offset, count: b.count)
            room(&log, 16)
            log.appendVerify(offset: b.offset, count: b.count)
        }
        for r in ctx[0].writeSet.ranges {
            room(&log, RedoLog.writeEntrySize(r))
            log.appendWrite(r)
        }
        room(&log, 16 * publishEntries)
        heap.appendPublish(ctx[0].reservations, to: &log)
        for f in ctx[0].frees { room(&log, Heap.freeEntryBytes); heap.appendFree(f, to: &log) }
        heap.commit(&log, lane: lane)
        // Volatile bookkeeping, now that everything is durable.
        for r in ctx[0].reservations { heap.finishPublished(r) }
        for f in ctx[0].frees { heap.finishFreed(f) }
    }
}
