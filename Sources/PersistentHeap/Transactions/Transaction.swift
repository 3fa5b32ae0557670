#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

/// A failure-atomic transaction, passed to the body of ``Pool/transaction(_:)``.
///
/// Changes made through it — ``write(_:to:)``, ``update(_:_:)``, ``withMutableBytes(of:count:_:)``,
/// ``allocate(_:count:zeroed:)``, ``free(_:)-(PRawPointer)`` — take effect all together when the transaction
/// commits, or not at all. Reads through it (``read(_:)``) see its own writes.
///
/// Writes go to a shadow copy until commit (redo logging), so memory read *directly* (for
/// example through ``Pool/unsafeAddress(of:)-(PPointer<T>)``) does not show them before the
/// transaction commits. A `Transaction` is valid only inside the body it was given to, and only
/// on that thread; using it elsewhere throws `PoolError.Code.transactionMisuse`.
public struct Transaction {
    /// Unowned (no reference counting per transaction): every method validates `context` first,
    /// and a pool's contexts live as long as the pool, so a `Transaction` kept past its body
    /// fails that validation with `transactionMisuse`. Keeping one past the pool's lifetime is
    /// undefined, like any dangling reference.
    public unowned(unsafe) let pool: Pool
    let context: TransactionContext
    let generation: UInt64

    @inline(__always)
    func live() throws(PoolError) -> FixedArray<TransactionState> {
        try pool.checkOpen()
        let ctx = context.state
        guard ctx[0].active && ctx[0].generation == generation else {
            throw PoolError(.transactionMisuse, "this transaction has ended; use the one passed to the current transaction body", path: pool.path)
        }
        guard pthread_equal(ctx[0].thread, pthread_self()) != 0 else {
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
    @inlinable
    public func read<T>(_ p: PPointer<T>) throws(PoolError) -> T {
        // Inlined into the caller (specialized for `T`); the checks are one non-generic call.
        if let view = try readView(p.offset, size: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment, type: T.self) {
            return view.load(T.self, at: 0)
        }
        return try readThroughWriteSet(p)
    }

    /// The bytes of `[offset, offset+size)` for a typed read, validated (open, this thread's
    /// live transaction, inside the heap, aligned), or nil when the transaction's own writes
    /// overlap them (``readThroughWriteSet(_:)`` composes those).
    @usableFromInline
    func readView(_ offset: UInt64, size: Int, alignment: Int, type: Any.Type) throws(PoolError) -> ByteView? {
        let ctx = try live()
        let o = try range(offset, size)
        guard o % alignment == 0 else { throw misaligned(offset, alignment, type) }
        if ctx[0].writeSet.isEmpty || !ctx[0].writeSet.overlaps(o, size) { return pool.bytes.view(at: o, count: size) }
        return nil
    }

    /// A typed read of a range the transaction has written (its shadows over the pool's bytes).
    @usableFromInline
    func readThroughWriteSet<T>(_ p: PPointer<T>) throws(PoolError) -> T {
        let ctx = try live()
        let o = try range(p.offset, MemoryLayout<T>.size)
        return ctx[0].writeSet.load(T.self, at: o, memory: pool.bytes)
    }

    /// Writes `value` to `p` at commit.
    @inlinable
    public func write<T>(_ value: T, to p: PPointer<T>) throws(PoolError) {
        try writeView(p.offset, size: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment, type: T.self).store(value, at: 0)
    }

    /// Where a typed write of `[offset, offset+size)` goes, validated (see ``readView``).
    @usableFromInline
    func writeView(_ offset: UInt64, size: Int, alignment: Int, type: Any.Type) throws(PoolError) -> MutableByteView {
        let ctx = try live()
        let o = try range(offset, size)
        guard o % alignment == 0 else { throw misaligned(offset, alignment, type) }
        return target(ctx, o, size)
    }

    /// Where the transaction writes `[o, o+n)`: in place inside a block it allocated, else a
    /// shadow in the write set.
    @inline(__always)
    func target(_ ctx: FixedArray<TransactionState>, _ o: Int, _ n: Int) -> MutableByteView {
        if let i = ctx[0].freshIndex(o, n) {
            ctx[0].fresh[i].written = true
            return pool.bytes.mutableView(at: o, count: n)
        }
        return ctx[0].writeSet.cover(o, n, memory: pool.bytes)
    }

    /// A read-only view of `count` bytes at `p` as this transaction sees them (its own writes
    /// made before this call included). Valid until the transaction ends; it does not show
    /// writes made after it was taken.
    /// - Throws: `invalidPointer` when the range is not inside the heap, `transactionMisuse`.
    public func readView(of p: PRawPointer, count: Int) throws(PoolError) -> ByteView {
        let ctx = try live()
        let o = try range(p.offset, count)
        return ctx[0].writeSet.readView(o, count, memory: pool.bytes)
    }

    /// `count` bytes of zeroed scratch memory (process memory, not the pool), valid until the
    /// transaction ends and reused by the next one: room to build a structure's new image
    /// before copying it into the pool (no allocation after the first transactions).
    public func scratch(count: Int) throws(PoolError) -> MutableByteView {
        let ctx = try live()
        guard count >= 0, count <= 1 << 30 else { throw PoolError(.invalidArgument, "scratch of \(count) bytes", path: pool.path) }
        return ctx[0].writeSet.scratch(count)
    }

    /// Runs `body` on the value at `p` (as this transaction sees it); the result is written at commit.
    ///
    /// ```swift
    /// try pool.transaction { tx in
    ///     try tx.update(from) { $0.balance -= 10 }
    ///     try tx.update(to) { $0.balance += 10 }
    /// }
    /// ```
    @inlinable
    public func update<T, R>(_ p: PPointer<T>, _ body: (inout T) throws -> R) throws -> R {
        let view = try writeView(p.offset, size: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment, type: T.self)
        var value = view.load(T.self, at: 0)
        let result = try body(&value)
        view.store(value, at: 0)
        return result
    }

    /// Lets `body` change `count` bytes at `p` through a view of them as this transaction sees
    /// them (their current contents, its own writes included); the bytes are written at commit.
    /// - Warning: Do not keep the view past `body`.
    public func withMutableView<R>(of p: PRawPointer, count: Int, _ body: (MutableByteView) throws -> R) throws -> R {
        let ctx = try live()
        let o = try range(p.offset, count)
        return try body(target(ctx, o, count))
    }

    /// Adds `count` bytes at `p` to the transaction (their current contents), for later
    /// changes through ``withMutableBytes(of:count:_:)`` or the typed accessors. A range added
    /// twice, or overlapping another, is logged once.
    public func snapshot(_ p: PRawPointer, count: Int) throws(PoolError) {
        let ctx = try live()
        let o = try range(p.offset, count)
        if ctx[0].freshIndex(o, count) == nil { _ = ctx[0].writeSet.cover(o, count, memory: pool.bytes) }
    }

    /// Adds many ranges at once (see ``snapshot(_:count:)``). No fence is spent per range:
    /// the whole transaction costs two at commit however many ranges it touches.
    public func snapshot(_ ranges: [(PRawPointer, Int)]) throws(PoolError) {
        let ctx = try live()
        for (p, n) in ranges.sorted(by: { $0.0 < $1.0 }) {
            let o = try range(p.offset, n)
            if ctx[0].freshIndex(o, n) == nil { _ = ctx[0].writeSet.cover(o, n, memory: pool.bytes) }
        }
    }

    // MARK: Allocation

    /// Allocates `bytes` bytes; the allocation takes effect at commit and is released if the
    /// transaction aborts. New blocks are zeroed unless `zeroed` is false.
    public func allocate(bytes n: Int, alignment: Int = 16, zeroed: Bool = true) throws(PoolError) -> PRawPointer {
        let ctx = try live()
        try pool.checkRequest(bytes: n, alignment: alignment)
        let r = try pool.heap.reserve(size: n, alignment: alignment, lane: context.lane, longLived: true)
        ctx[0].reservations.append(r)
        // Free space until commit: zeroed and later written in place; the commit record carries
        // the contents (or zeroes the block).
        if zeroed { pool.bytes.zero(r.offset, count: r.usableSize) }
        ctx[0].addFresh(FreshBlock(offset: r.offset, count: r.usableSize, zeroed: zeroed, written: false))
        return PRawPointer(offset: UInt64(r.offset))
    }

    /// Allocates `bytes` bytes and lets `initialize` write their contents in place through a view
    /// (they start zeroed): cheaper than writing a new block through the transaction (no shadow
    /// copy). The allocation and its contents take effect at commit.
    /// - Warning: Do not keep the view past `initialize`.
    public func allocate(bytes n: Int, alignment: Int = 16, writing initialize: (MutableByteView) throws -> Void) throws -> PRawPointer {
        let ctx = try live()
        let p = try allocate(bytes: n, alignment: alignment, zeroed: true)
        let x = Int(p.offset)
        try initialize(pool.bytes.mutableView(at: x, count: n))
        guard let i = ctx[0].freshIndex(x, n) else {
            throw PoolError(.transactionMisuse, "the new block was freed by its own initializer", path: pool.path)
        }
        ctx[0].fresh[i].written = true
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
        // A block allocated by this transaction: cancel its reservation.
        if let k = ctx[0].reservations.lastIndex(where: { $0.offset == x }) {
            pool.heap.cancel(ctx[0].reservations.remove(at: k))
            ctx[0].fresh.removeAll { $0.offset == x }
            return
        }
        guard !ctx[0].freeOffsets.contains(x) else {
            throw PoolError(.invalidFree, "offset \(x) is already freed in this transaction", path: pool.path)
        }
        ctx[0].frees.append(try pool.heap.prepareFree(x))
        ctx[0].freeOffsets.append(x)
    }

    /// Frees the block `slot` points at and sets `slot` to null, both at commit.
    public func free<T>(linkedFrom slot: PPointer<PPointer<T>>) throws(PoolError) {
        let p = try read(slot)
        guard !p.isNull else { return }
        try free(p)
        try write(.null, to: slot)
    }

    private func misaligned(_ offset: UInt64, _ alignment: Int, _ type: Any.Type) -> PoolError {
        PoolError(.invalidPointer, "pointer 0x\(String(offset, radix: 16)) is not aligned to \(alignment) for \(type)", path: pool.path)
    }
}
