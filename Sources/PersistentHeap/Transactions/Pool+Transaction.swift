#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

// Transactions: a volatile write set, then one redo log at commit.
//
//   body runs       writes go to shadow copies; allocations are reservations; frees are listed
//   commit          1. one record: every written range, every allocation, every free, and the
//                      new blocks' contents (zero entries, or copies of small blocks; large
//                      written blocks are flushed and fenced before the record instead); one
//                      line when it fits, continued in the lane's extension block when large
//                   2. one fence (the record is durable: committed) · apply without a flush
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
    /// - Complexity: one fence at commit, whatever the number of ranges (two when it wrote a new
    ///   block larger than the copy limit — 256 bytes, 2 KiB on ordinary files); none for a
    ///   transaction that changed nothing or aborted.
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

    /// How a fresh block reaches the media at commit: a `zero` entry (allocated zeroed, never
    /// written), a copy in the record (written, small), a flush and a fence of its own before
    /// the record (written, larger than the heap's copy limit), or nothing (never initialised).
    private enum FreshCommit { case nothing, zero, copy, flushFirst }

    private func freshCommit(_ b: FreshBlock) -> FreshCommit {
        if !b.written { return b.zeroed ? .zero : .nothing }
        return b.count <= heap.copyLimit ? .copy : .flushFirst
    }

    /// Payload bytes of the commit record.
    private func recordBytes(_ ctx: FixedArray<TransactionState>, publishEntries: Int) -> Int {
        var n = 0
        for r in ctx[0].writeSet.ranges { n += LogRecord.writeEntrySize(r) }
        for b in ctx[0].fresh {
            switch freshCommit(b) {
            case .zero: n += 16
            case .copy: n += LogRecord.bytesEntrySize(b.count)
            case .nothing, .flushFirst: break
            }
        }
        n += 16 * publishEntries
        n += Heap.freeEntryBytes * ctx[0].frees.count
        return n
    }

    private func commitTransaction(_ context: TransactionContext) throws(PoolError) {
        let lane = context.lane
        let ctx = context.state
        // Large new blocks written in place: durable before the record can exist (a fence of
        // their own), after the records that wrote into that space before are retired.
        var flushedFirst = false
        for b in ctx[0].fresh where freshCommit(b) == .flushFirst {
            heap.settleForUnloggedWrite(b.offset, b.count)
            persistence.flush(offset: b.offset, count: b.count)
            flushedFirst = true
        }
        if flushedFirst { persistence.drain() }
        let publishEntries = heap.publishEntries(ctx[0].reservations)
        let total = recordBytes(ctx, publishEntries: publishEntries)
        var oneLine = total <= Heap.lineRecordPayload
        if oneLine {
            for r in ctx[0].writeSet.ranges where LogRecord.writeEntrySize(r) != 16 { oneLine = false }
            for b in ctx[0].fresh where freshCommit(b) == .copy { oneLine = false }
        }
        var log = try heap.record(lane: lane, payload: total, oneLine: oneLine)
        for b in ctx[0].fresh {
            switch freshCommit(b) {
            case .zero: log.append(.zero, offset: b.offset, operand: UInt64(b.count))
            case .copy: log.appendCopy(offset: b.offset, count: b.count)
            case .nothing, .flushFirst: break
            }
        }
        for r in ctx[0].writeSet.ranges { log.appendWrite(r) }
        heap.appendPublish(ctx[0].reservations, to: &log)
        for f in ctx[0].frees { heap.appendFree(f, to: &log) }
        heap.commit(&log, lane: lane)
        // Volatile bookkeeping, now that everything is durable.
        for r in ctx[0].reservations { heap.finishPublished(r) }
        for f in ctx[0].frees { heap.finishFreed(f) }
    }
}
