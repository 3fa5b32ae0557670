#if canImport(Glibc)
import Glibc
#endif

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
        return txStates[heap.currentLane()]?.pointee.active ?? false
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
        if ctx.pointee.active {
            ctx.pointee.depth += 1
        } else {
            ctx.pointee.generation &+= 1
            ctx.pointee.active = true
            ctx.pointee.depth = 1
            ctx.pointee.thread = pthread_self()
        }
        return Transaction(pool: self, context: context, generation: ctx.pointee.generation)
    }

    /// The body of `tx` threw `error`: a joined transaction dooms the outermost one, the
    /// outermost aborts. Returns the error to rethrow.
    @usableFromInline
    func _failTransaction(_ tx: Transaction, _ error: any Error) -> any Error {
        let ctx = tx.context.state
        if ctx.pointee.depth > 1 {
            ctx.pointee.depth -= 1
            if ctx.pointee.doom == nil { ctx.pointee.doom = error }
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
        if ctx.pointee.depth > 1 {
            ctx.pointee.depth -= 1
            return
        }
        if let doom = ctx.pointee.doom {
            abortTransaction(context)
            throw doom
        }
        if ctx.pointee.hasWork || !heap.laneReservations(context.lane).pointee.pinnedRuns.isEmpty {
            do throws(PoolError) {
                try commitTransaction(context)
            } catch {
                abortTransaction(context)
                throw error
            }
        }
        ctx.pointee.reset()
    }

    private func abortTransaction(_ context: TransactionContext) {
        heap.endReservations(lane: context.lane, published: false)
        for a in context.state.pointee.extents { heap.cancelExtent(a) }
        context.state.pointee.reset()
    }

    /// Bytes the commit log takes.
    private func logBytes(_ ctx: TransactionState, lane: Int) -> Int {
        var n = 0
        for r in ctx.writeSet.ranges { n += (r.count == 8 && r.offset & 7 == 0) ? 16 : RedoLog.bytesEntrySize(r.count) }
        n += 16 * (ctx.fresh.count + heap.laneReservations(lane).pointee.blocks.count + ctx.extents.count)
        n += 32 * ctx.frees.count
        return n
    }

    private func commitTransaction(_ context: TransactionContext) throws(PoolError) {
        let lane = context.lane
        let ctx = context.state
        let reservations = heap.laneReservations(lane)
        let total = logBytes(ctx.pointee, lane: lane)
        var log: RedoLog
        var extensionBlock = 0
        let extensionSlot = heap.laneLogOffset(lane) + LaneLayout.extensionSlot
        var fast = total <= LaneLayout.fastLogSize - LogField.payload
        if fast {
            for r in ctx.pointee.writeSet.ranges where r.count != 8 || r.offset & 7 != 0 { fast = false }
        }
        if fast {
            log = heap.fastLog(lane)
        } else {
            log = heap.mainLog(lane)
            if total > log.remaining {
                // A large transaction: the log continues in one block, linked from the lane so
                // that a crash cannot leak it (recovery frees it). Entries never split across
                // segments, so the inline part may end early: size the extension for everything.
                // Its header carries a magic bound to the slot: recovery frees only such a block.
                extensionBlock = try heap.allocateLinked(size: total + 64 + LogExtensionField.header, alignment: 64,
                                                         slot: extensionSlot, zeroed: false) { p, usable in
                    p.storeBytes(of: UInt64(usable - LogExtensionField.header), toByteOffset: LogExtensionField.capacity, as: UInt64.self)
                    p.storeBytes(of: LogExtensionField.magic(slot: extensionSlot), toByteOffset: LogExtensionField.magic, as: UInt64.self)
                }
            }
        }
        // Moves to the extension when the next entry (`n` bytes) would not leave room for the jump.
        @inline(__always) func room(_ log: inout RedoLog, _ n: Int) {
            if extensionBlock != 0 && log.remaining < n + 16 && !log.isExtended {
                log.extend(to: extensionBlock + LogExtensionField.header, capacity: heap.usableSizeOf(extensionBlock) - LogExtensionField.header)
            }
        }
        // New blocks written in place: flushed under fence 1, verified over their final contents.
        for b in ctx.pointee.fresh where b.written {
            persistence.flush(bytes.pointer(b.offset), count: b.count)
            room(&log, 16)
            log.appendVerify(offset: b.offset, count: b.count)
        }
        for r in ctx.pointee.writeSet.ranges {
            if r.count == 8 && r.offset & 7 == 0 {
                room(&log, 16)
                log.append(.write8, offset: r.offset, operand: r.shadow.loadUnaligned(as: UInt64.self))
            } else {
                room(&log, RedoLog.bytesEntrySize(r.count))
                log.appendBytes(offset: r.offset, from: r.shadow, count: r.count)
            }
        }
        room(&log, 16 * reservations.pointee.blocks.count)
        heap.appendSetBits(&reservations.pointee.blocks, to: &log)
        for a in ctx.pointee.extents {
            room(&log, 16)
            log.append(.write8, offset: heap.tableEntryOffset(a), operand: UnitEntry(kind: .used, length: heap.info(a).length).raw)
        }
        for f in ctx.pointee.frees { room(&log, 32); heap.appendFree(f, to: &log) }
        heap.run(&log, lane: lane)
        // Volatile bookkeeping, now that everything is durable.
        heap.endReservations(lane: lane, published: true)
        for a in ctx.pointee.extents { heap.publishedExtent(a) }
        for f in ctx.pointee.frees {
            if case .large = f { heap.lockExtents(); heap.finishFreed(f); heap.unlockExtents() } else { heap.finishFreed(f) }
        }
        if extensionBlock != 0 { try heap.freeLinked(slot: extensionSlot) }
    }
}

extension Heap {
    /// Usable size of the live allocation at `offset` (which must be one).
    func usableSizeOf(_ offset: Int) -> Int {
        (try? locate(offset)).map(usableSize) ?? 0
    }
}
