#if canImport(Glibc)
import Glibc
#endif

/// The mutable state of a lane's transactions. It lives behind a pointer (``TransactionContext``):
/// mutating struct properties of a class through the class would pay Swift's dynamic
/// exclusivity checks on every call (measured: ~700 instructions per transaction).
struct TransactionState {
    /// Incremented at each outermost begin: a `Transaction` from an earlier one is stale.
    var generation: UInt64 = 0
    var active = false
    var depth = 0
    var thread = pthread_t()
    var writeSet = WriteSet()
    /// Reserved large extents (start units).
    var extents: [Int] = []
    /// Blocks to free at commit, and their offsets (duplicate detection).
    var frees: [BlockLocation] = []
    var freeOffsets: [Int] = []
    /// Blocks allocated by this transaction, sorted by offset. Writes into them go in place (the
    /// block is invisible until commit); at commit, those written or initialised are flushed and
    /// covered by a `verify` entry over their final contents.
    var fresh: [FreshBlock] = []
    /// The error of a nested transaction that failed: the outermost one must abort.
    var doom: (any Error)?

    var hasWork: Bool { !writeSet.isEmpty || !extents.isEmpty || !frees.isEmpty || !fresh.isEmpty }

    /// Index in `fresh` of the block containing `[offset, offset+count)`, if any.
    @inline(__always)
    func freshIndex(_ offset: Int, _ count: Int) -> Int? {
        guard !fresh.isEmpty else { return nil }
        var lo = 0, hi = fresh.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if fresh[mid].offset + fresh[mid].count <= offset { lo = mid + 1 } else { hi = mid }
        }
        guard lo < fresh.count, fresh[lo].offset <= offset, offset + count <= fresh[lo].offset + fresh[lo].count else { return nil }
        return lo
    }

    mutating func addFresh(_ b: FreshBlock) {
        var lo = 0, hi = fresh.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if fresh[mid].offset < b.offset { lo = mid + 1 } else { hi = mid }
        }
        fresh.insert(b, at: lo)
    }

    /// Ends the transaction, keeping capacity; touches only what was used.
    mutating func reset() {
        if !writeSet.isEmpty { writeSet.reset() }
        if !extents.isEmpty { extents.removeAll(keepingCapacity: true) }
        if !frees.isEmpty {
            frees.removeAll(keepingCapacity: true)
            freeOffsets.removeAll(keepingCapacity: true)
        }
        if !fresh.isEmpty { fresh.removeAll(keepingCapacity: true) }
        if doom != nil { doom = nil }
        depth = 0
        active = false
    }
}

/// A block allocated by a transaction (usable bytes), and whether its contents must be verified.
struct FreshBlock {
    let offset: Int
    let count: Int
    var written: Bool
}

/// The per-lane transaction states of a pool (each created on first use), freed with the pool.
final class TransactionStates: @unchecked Sendable {
    let base: UnsafeMutablePointer<UnsafeMutablePointer<TransactionState>?>
    let count: Int

    init(count: Int) {
        self.count = count
        base = .allocate(capacity: count)
        base.initialize(repeating: nil, count: count)
    }

    deinit {
        for lane in 0..<count { if let state = base[lane] { TransactionContext.release(state) } }
        base.deinitialize(count: count)
        base.deallocate()
    }
}

/// A lane's transaction context: the lane and its state, reused from one transaction to the
/// next. A plain pair (no object): beginning a transaction takes no reference count.
struct TransactionContext {
    let lane: Int
    let state: UnsafeMutablePointer<TransactionState>

    /// A fresh state for a lane; released by ``release()`` when the pool goes away.
    static func make(lane: Int) -> TransactionContext {
        let state = UnsafeMutablePointer<TransactionState>.allocate(capacity: 1)
        state.initialize(to: TransactionState())
        return TransactionContext(lane: lane, state: state)
    }

    static func release(_ state: UnsafeMutablePointer<TransactionState>) {
        state.pointee.writeSet.deallocate()
        state.deinitialize(count: 1)
        state.deallocate()
    }
}

/// A failure-atomic transaction, passed to the body of ``Pool/transaction(_:)``.
///
/// Changes made through it — ``write(_:to:)``, ``update(_:_:)``, ``withMutableBytes(of:count:_:)``,
/// ``allocate(_:count:zeroed:)``, ``free(_:)`` — take effect all together when the transaction
/// commits, or not at all. Reads through it (``read(_:)``) see its own writes.
///
/// Writes go to a shadow copy until commit (redo logging), so memory read *directly* (for
/// example through ``Pool/unsafeAddress(of:)-(PPointer<T>)``) does not show them before the
/// transaction commits. A `Transaction` is valid only inside the body it was given to, and only
/// on that thread; using it elsewhere throws ``PoolError/Code/transactionMisuse``.
public struct Transaction {
    /// Unowned (no reference counting per transaction): every method validates `context` first,
    /// and a pool's contexts live as long as the pool, so a `Transaction` kept past its body
    /// fails that validation with `transactionMisuse`. Keeping one past the pool's lifetime is
    /// undefined, like any dangling reference.
    unowned(unsafe) let pool: Pool
    let context: TransactionContext
    let generation: UInt64

    @inline(__always)
    func live() throws(PoolError) -> UnsafeMutablePointer<TransactionState> {
        try pool.checkOpen()
        let ctx = context.state
        guard ctx.pointee.active && ctx.pointee.generation == generation else {
            throw PoolError(.transactionMisuse, "this transaction has ended; use the one passed to the current transaction body", path: pool.path)
        }
        guard pthread_equal(ctx.pointee.thread, pthread_self()) != 0 else {
            throw PoolError(.transactionMisuse, "a transaction can only be used on the thread that started it", path: pool.path)
        }
        return ctx
    }

    /// Validates a range a transaction may read or write: the heap, or the root slot.
    @inline(__always)
    func range(_ offset: UInt64, _ count: Int) throws(PoolError) -> Int {
        let o = Int(truncatingIfNeeded: offset)
        guard offset != 0, pool.heap.isUserRange(o, count: count) else {
            throw PoolError(.invalidPointer, "range 0x\(String(offset, radix: 16)) (\(count) bytes) is not inside the heap", path: pool.path)
        }
        return o
    }

    // MARK: Reading and writing

    /// The value at `p` as this transaction sees it (its own writes included).
    public func read<T>(_ p: PPointer<T>) throws(PoolError) -> T {
        let ctx = try live()
        let o = try range(p.offset, MemoryLayout<T>.size)
        guard o % MemoryLayout<T>.alignment == 0 else { throw misaligned(p.offset, T.self) }
        if ctx.pointee.writeSet.isEmpty || !ctx.pointee.writeSet.overlaps(o, MemoryLayout<T>.size) {
            return pool.bytes.pointer(o).load(as: T.self)
        }
        return withUnsafeTemporaryAllocation(byteCount: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment) { buf in
            ctx.pointee.writeSet.read(o, MemoryLayout<T>.size, memory: pool.bytes.base, into: buf.baseAddress!)
            return buf.baseAddress!.load(as: T.self)
        }
    }

    /// Writes `value` to `p` at commit.
    public func write<T>(_ value: T, to p: PPointer<T>) throws(PoolError) {
        let ctx = try live()
        let o = try range(p.offset, MemoryLayout<T>.size)
        guard o % MemoryLayout<T>.alignment == 0 else { throw misaligned(p.offset, T.self) }
        target(ctx, o, MemoryLayout<T>.size).storeBytes(of: value, as: T.self)
    }

    /// Where the transaction writes `[o, o+n)`: in place inside a block it allocated, else a
    /// shadow in the write set.
    @inline(__always)
    func target(_ ctx: UnsafeMutablePointer<TransactionState>, _ o: Int, _ n: Int) -> UnsafeMutableRawPointer {
        if let i = ctx.pointee.freshIndex(o, n) {
            ctx.pointee.fresh[i].written = true
            return pool.bytes.pointer(o)
        }
        return ctx.pointee.writeSet.cover(o, n, memory: pool.bytes.base)
    }

    /// Runs `body` on the value at `p` (as this transaction sees it); the result is written at commit.
    ///
    /// ```swift
    /// try pool.transaction { tx in
    ///     try tx.update(from) { $0.balance -= 10 }
    ///     try tx.update(to) { $0.balance += 10 }
    /// }
    /// ```
    public func update<T, R>(_ p: PPointer<T>, _ body: (inout T) throws -> R) throws -> R {
        let ctx = try live()
        let o = try range(p.offset, MemoryLayout<T>.size)
        guard o % MemoryLayout<T>.alignment == 0 else { throw misaligned(p.offset, T.self) }
        let shadow = target(ctx, o, MemoryLayout<T>.size)
        var value = shadow.loadUnaligned(as: T.self)
        let result = try body(&value)
        shadow.storeBytes(of: value, as: T.self)
        return result
    }

    /// Snapshots `count` bytes at `p` and lets `body` change them; the bytes are written at commit.
    /// - Warning: Do not let the buffer escape `body`.
    public func withMutableBytes<R>(of p: PRawPointer, count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        let ctx = try live()
        let o = try range(p.offset, count)
        return try body(UnsafeMutableRawBufferPointer(start: target(ctx, o, count), count: count))
    }

    /// Adds `count` bytes at `p` to the transaction (their current contents), for later
    /// changes through ``withMutableBytes(of:count:_:)`` or the typed accessors. A range added
    /// twice, or overlapping another, is logged once.
    public func snapshot(_ p: PRawPointer, count: Int) throws(PoolError) {
        let ctx = try live()
        let o = try range(p.offset, count)
        if ctx.pointee.freshIndex(o, count) == nil { _ = ctx.pointee.writeSet.cover(o, count, memory: pool.bytes.base) }
    }

    /// Adds many ranges at once (see ``snapshot(_:count:)``). No fence is spent per range:
    /// the whole transaction costs two at commit however many ranges it touches.
    public func snapshot(_ ranges: [(PRawPointer, Int)]) throws(PoolError) {
        let ctx = try live()
        for (p, n) in ranges.sorted(by: { $0.0 < $1.0 }) {
            let o = try range(p.offset, n)
            if ctx.pointee.freshIndex(o, n) == nil { _ = ctx.pointee.writeSet.cover(o, n, memory: pool.bytes.base) }
        }
    }

    // MARK: Allocation

    /// Allocates `bytes` bytes; the allocation takes effect at commit and is released if the
    /// transaction aborts. New blocks are zeroed unless `zeroed` is false.
    public func allocate(bytes n: Int, alignment: Int = 16, zeroed: Bool = true) throws(PoolError) -> PRawPointer {
        let ctx = try live()
        try pool.checkRequest(bytes: n, alignment: alignment)
        let heap = pool.heap
        let x: Int, usable: Int
        if let c = heap.classIndex(size: n, alignment: alignment) {
            let s = try heap.reserveSmall(lane: context.lane, sizeClass: c)
            x = heap.blockOffset(s, heap.geometry[c])
            usable = heap.geometry[c].blockSize
        } else {
            let units = Heap.unitsFor(n)
            let a = try heap.reserveExtent(units: units)
            ctx.pointee.extents.append(a)
            x = heap.unitOffset(a)
            usable = units << Format.unitShift
        }
        // Free space until commit: zeroed and later written in place, verified by the log.
        if zeroed { pool.bytes.pointer(x).initializeMemory(as: UInt8.self, repeating: 0, count: usable) }
        ctx.pointee.addFresh(FreshBlock(offset: x, count: usable, written: zeroed))
        return PRawPointer(offset: UInt64(x))
    }

    /// Allocates `bytes` bytes and lets `initialize` write their contents in place: cheaper than
    /// writing a new block through the transaction (the bytes are not copied into the log; the
    /// log only verifies them). The allocation and its contents take effect at commit.
    /// - Warning: Do not let the buffer escape `initialize`.
    public func allocate(bytes n: Int, alignment: Int = 16,
                         initializingWith initialize: (UnsafeMutableRawBufferPointer) throws -> Void) throws -> PRawPointer {
        let ctx = try live()
        let p = try allocate(bytes: n, alignment: alignment, zeroed: true)
        let x = Int(p.offset)
        try initialize(UnsafeMutableRawBufferPointer(start: pool.bytes.pointer(x), count: n))
        guard ctx.pointee.freshIndex(x, n) != nil else {
            throw PoolError(.transactionMisuse, "the new block was freed by its own initializer", path: pool.path)
        }
        return p
    }

    /// Allocates `count` values of `T` (see ``allocate(bytes:alignment:zeroed:)``).
    public func allocate<T: BitwiseCopyable>(_ type: T.Type, count: Int = 1, zeroed: Bool = true) throws(PoolError) -> PPointer<T> {
        let size = try pool.byteCount(T.self, count)
        return try allocate(bytes: size, alignment: MemoryLayout<T>.alignment, zeroed: zeroed).assumingType(T.self)
    }

    /// Allocates a `T` holding `value` and stores its pointer in `slot`, both at commit.
    public func allocate<T: BitwiseCopyable>(_ value: T, linkedInto slot: PPointer<PPointer<T>>) throws(PoolError) -> PPointer<T> {
        let p = try allocate(T.self, zeroed: false)
        try write(value, to: p)
        try write(p, to: slot)
        return p
    }

    /// Frees the block at `p` at commit. Freeing null does nothing; freeing a block allocated in
    /// this transaction releases it at once.
    /// - Throws: `invalidFree` when `p` is not a live allocation or was already freed in this transaction.
    public func free<T>(_ p: PPointer<T>) throws(PoolError) {
        try free(p.raw)
    }

    /// Frees the block at `p` at commit (see ``free(_:)-(PPointer<T>)``).
    public func free(_ p: PRawPointer) throws(PoolError) {
        let ctx = try live()
        guard !p.isNull else { return }
        let x = Int(truncatingIfNeeded: p.offset)
        let heap = pool.heap
        // A block allocated by this transaction: cancel its reservation.
        if heap.cancelSmallReservation(at: x, lane: context.lane) {
            ctx.pointee.fresh.removeAll { $0.offset == x }
            return
        }
        if let k = ctx.pointee.extents.firstIndex(where: { heap.unitOffset($0) == x }) {
            heap.cancelExtent(ctx.pointee.extents.remove(at: k))
            ctx.pointee.fresh.removeAll { $0.offset == x }
            return
        }
        guard !ctx.pointee.freeOffsets.contains(x) else {
            throw PoolError(.invalidFree, "offset \(x) is already freed in this transaction", path: pool.path)
        }
        ctx.pointee.frees.append(try heap.locate(x))
        ctx.pointee.freeOffsets.append(x)
    }

    /// Frees the block `slot` points at and sets `slot` to null, both at commit.
    public func free<T>(linkedFrom slot: PPointer<PPointer<T>>) throws(PoolError) {
        let p = try read(slot)
        guard !p.isNull else { return }
        try free(p)
        try write(.null, to: slot)
    }

    private func misaligned<T>(_ offset: UInt64, _: T.Type) -> PoolError {
        PoolError(.invalidPointer, "pointer 0x\(String(offset, radix: 16)) is not aligned to \(MemoryLayout<T>.alignment) for \(T.self)", path: pool.path)
    }
}
