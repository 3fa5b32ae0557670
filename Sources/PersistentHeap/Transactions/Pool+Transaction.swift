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
    func transactionContext(_ lane: Int) -> TransactionContext {
        if let c = txContexts[lane] { return c }
        let c = TransactionContext(lane: lane)
        txContexts[lane] = c
        return c
    }

    /// Whether the calling thread is inside a transaction of this pool.
    public var inTransaction: Bool {
        guard !isClosed else { return false }
        return txContexts[heap.currentLane()]?.active ?? false
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
    public func transaction<R>(_ body: (Transaction) throws -> R) throws -> R {
        try checkWritable()
        let lane = heap.currentLane()
        let ctx = transactionContext(lane)
        if ctx.active {
            ctx.depth += 1
            defer { ctx.depth -= 1 }
            do {
                return try body(Transaction(pool: self, context: ctx, generation: ctx.generation))
            } catch {
                if ctx.doom == nil { ctx.doom = error }
                throw error
            }
        }
        ctx.generation &+= 1
        ctx.active = true
        ctx.depth = 1
        ctx.thread = pthread_self()
        let result: R
        do {
            result = try body(Transaction(pool: self, context: ctx, generation: ctx.generation))
        } catch {
            abortTransaction(ctx)
            throw error
        }
        if let doom = ctx.doom {
            abortTransaction(ctx)
            throw doom
        }
        if ctx.hasWork || !heap.laneReservations(lane).pointee.pinnedRuns.isEmpty {
            do throws(PoolError) {
                try commitTransaction(ctx)
            } catch {
                abortTransaction(ctx)
                throw error
            }
        }
        ctx.reset()
        return result
    }

    private func abortTransaction(_ ctx: TransactionContext) {
        heap.endReservations(lane: ctx.lane, published: false)
        for a in ctx.extents { heap.cancelExtent(a) }
        ctx.reset()
    }

    /// Bytes the commit log of `ctx` takes.
    private func logBytes(_ ctx: TransactionContext) -> Int {
        var n = 0
        for r in ctx.writeSet.ranges { n += (r.count == 8 && r.offset & 7 == 0) ? 16 : RedoLog.bytesEntrySize(r.count) }
        n += 16 * (ctx.verifies.count + heap.laneReservations(ctx.lane).pointee.blocks.count + ctx.extents.count)
        n += 32 * ctx.frees.count
        return n
    }

    private func commitTransaction(_ ctx: TransactionContext) throws(PoolError) {
        let lane = ctx.lane
        let total = logBytes(ctx)
        var log: RedoLog
        var extensionBlock = 0
        let extensionSlot = heap.laneLogOffset(lane) + LaneLayout.extensionSlot
        if total <= LaneLayout.fastLogSize - LogField.payload && ctx.writeSet.ranges.allSatisfy({ $0.count == 8 && $0.offset & 7 == 0 }) {
            log = heap.fastLog(lane)
        } else {
            log = heap.mainLog(lane)
            if total > log.remaining {
                // A large transaction: the log continues in one block, linked from the lane so
                // that a crash cannot leak it (recovery frees it).
                // Entries never split across segments, so the inline part may end early: size the
                // extension for everything.
                let need = total + 64
                extensionBlock = try heap.allocateLinked(size: need + LogExtensionField.header, alignment: 64,
                                                         slot: extensionSlot, zeroed: false, initialize: nil)
            }
        }
        var extended = false
        func room(_ n: Int) {
            if !extended && extensionBlock != 0 && log.remaining < n + 16 {
                log.extend(to: extensionBlock + LogExtensionField.header, capacity: heap.usableSizeOf(extensionBlock) - LogExtensionField.header)
                extended = true
            }
        }
        for v in ctx.verifies { room(16); log.appendVerify(offset: v.offset, count: v.count) }
        for r in ctx.writeSet.ranges {
            if r.count == 8 && r.offset & 7 == 0 {
                room(16)
                log.append(.write8, offset: r.offset, operand: r.shadow.loadUnaligned(as: UInt64.self))
            } else {
                room(RedoLog.bytesEntrySize(r.count))
                log.appendBytes(offset: r.offset, from: r.shadow, count: r.count)
            }
        }
        let reserved = heap.laneReservations(lane).pointee.blocks
        for _ in 0..<reserved.count { room(16) }
        heap.appendSetBits(reserved, to: &log)
        for a in ctx.extents {
            room(16)
            log.append(.write8, offset: heap.tableEntryOffset(a), operand: UnitEntry(kind: .used, length: heap.info(a).length).raw)
        }
        for f in ctx.frees { room(32); heap.appendFree(f, to: &log) }
        heap.run(&log, lane: lane)
        // Volatile bookkeeping, now that everything is durable.
        heap.endReservations(lane: lane, published: true)
        for a in ctx.extents { heap.publishedExtent(a) }
        for f in ctx.frees {
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
