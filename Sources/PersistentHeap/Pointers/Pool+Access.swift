// Reading and writing persistent memory through persistent pointers, checked.
//
// The naming ladder (after swift-nio):
//   load / store / withMutable        checked (bounds + alignment), errors thrown; store and
//                                     withMutable persist what they changed
//   subscript                         checked, traps on a bad pointer; the setter persists
//   withUnsafePointer / withUnsafeMutablePointer, unsafeAddress(of:)   Pool+Unsafe.swift

@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

extension Pool {
    /// Direct writes inside a transaction of the same thread would bypass it (and be lost or
    /// overwritten at commit): they are refused.
    @inline(__always)
    func checkNoTransaction() throws(PoolError) {
        if let state = txStates[heap.currentLane()], state[0].active {
            throw PoolError(.transactionMisuse, "direct write inside a transaction: write through the transaction (tx.write / tx.update)", path: path)
        }
    }

    /// Bytes taken by `count` elements of `T` (the last one without its padding), or nil when
    /// `count` is negative or the size overflows.
    @inline(__always)
    static func byteSize<T>(_: T.Type, count: Int) -> Int? {
        guard count >= 0 else { return nil }
        if count == 0 { return 0 }
        let (extra, o1) = MemoryLayout<T>.stride.multipliedReportingOverflow(by: count - 1)
        let (total, o2) = extra.addingReportingOverflow(MemoryLayout<T>.size)
        return o1 || o2 ? nil : total
    }

    /// Validates that `count` elements of `T` at `p` lie inside the heap, aligned; returns the
    /// pool offset. Every quantity is checked before it is used in arithmetic: a pointer or count
    /// read from a damaged pool gets `invalidPointer` / `invalidArgument`, never a trap.
    @inline(__always)
    func checkedOffset<T>(_ p: PPointer<T>, count: Int = 1) throws(PoolError) -> Int {
        try checkedRange(p.offset, count: count, stride: MemoryLayout<T>.stride, size: MemoryLayout<T>.size,
                         alignment: MemoryLayout<T>.alignment, type: T.self)
    }

    /// The checks of ``checkedOffset(_:count:)``, for any type: not generic, so that the
    /// inlined, specialized accessors share one out-of-line copy.
    ///
    /// `@inline(never)`: Swift 6.3.1 miscompiled the generic form of this typed-throws function
    /// when it was inlined into the (generic, typed-throws) accessors and optimized across
    /// modules: callers saw a spurious, uninitialised `PoolError`. Found by the release
    /// `selftest` of Benchmarks/pheap-compare, which CI runs.
    @usableFromInline @inline(never)
    func checkedRange(_ offset: UInt64, count: Int, stride: Int, size: Int, alignment: Int, type: Any.Type) throws(PoolError) -> Int {
        try checkOpen()
        guard offset != 0 else { throw PoolError(.invalidPointer, "null pointer dereferenced", path: path) }
        guard count >= 0 else { throw PoolError(.invalidArgument, "count \(count) of \(type) is negative", path: path) }
        var bytes = 0
        if count > 0 {
            let (extra, o1) = stride.multipliedReportingOverflow(by: count - 1)
            let (total, o2) = extra.addingReportingOverflow(size)
            guard !o1 && !o2 else { throw PoolError(.invalidArgument, "count \(count) of \(type) is too large", path: path) }
            bytes = total
        }
        let o = Int(truncatingIfNeeded: offset)
        guard heap.inHeap(o, bytes) else {
            throw PoolError(.invalidPointer, "pointer 0x\(String(offset, radix: 16)) (\(bytes) bytes) lies outside the heap", path: path)
        }
        guard o % alignment == 0 else {
            throw PoolError(.invalidPointer, "pointer 0x\(String(offset, radix: 16)) is not aligned to \(alignment) for \(type)", path: path)
        }
        return o
    }

    /// A read-only view of the value of `size` bytes at `offset`, validated (``checkedRange``).
    @usableFromInline
    func checkedView(_ offset: UInt64, size: Int, alignment: Int, type: Any.Type) throws(PoolError) -> ByteView {
        bytes.view(at: try checkedRange(offset, count: 1, stride: size, size: size, alignment: alignment, type: type), count: size)
    }

    /// Reads the value `p` points at.
    /// - Throws: `invalidPointer` when `p` is null, misaligned or outside the heap.
    @inlinable
    public func load<T>(_ p: PPointer<T>) throws(PoolError) -> T {
        try checkedView(p.offset, size: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment, type: T.self).load(T.self, at: 0)
    }

    /// Stores `value` at `p` and makes it durable.
    /// - Note: Not failure-atomic for values larger than 8 bytes: a crash may leave some
    ///   cache lines updated and others not. Use a transaction for atomic multi-word updates.
    public func store<T>(_ value: T, at p: PPointer<T>) throws(PoolError) {
        try checkWritable()
        try checkNoTransaction()
        let o = try checkedOffset(p)
        bytes.store(value, at: o)
        try persistWrite(o, MemoryLayout<T>.size)
    }

    /// Runs `body` on the value at `p`, stores the result back and makes it durable. When `body`
    /// throws, nothing is stored.
    /// - Note: Not failure-atomic beyond 8 bytes (see ``store(_:at:)``).
    public func withMutable<T, R>(_ p: PPointer<T>, _ body: (inout T) throws -> R) throws -> R {
        try checkWritable()
        try checkNoTransaction()
        let o = try checkedOffset(p)
        var value = bytes.load(T.self, at: o)
        let result = try body(&value)
        bytes.store(value, at: o)
        try persistWrite(o, MemoryLayout<T>.size)
        return result
    }

    /// Checked access with a trap for a bad pointer. The setter persists the stored value.
    ///
    /// For pointers your own code computed. A pointer read from the pool is data from the
    /// file: dereference it with ``load(_:)`` / ``store(_:at:)``, which throw instead of trapping
    /// when the pool is damaged.
    public subscript<T>(p: PPointer<T>) -> T {
        // The one trapping accessor, by design (like Array's subscript): documented above.
        get {
            do { return try load(p) } catch { preconditionFailure("\(error)") }
        }
        set {
            do { try store(newValue, at: p) } catch { preconditionFailure("\(error)") }
        }
    }

    /// Makes `count` elements at `p` durable (flush and fence through the persistence layer).
    /// - Throws: `invalidPointer` (null, misaligned, outside the heap), `invalidArgument`
    ///   (a negative or overflowing count), `closed`.
    public func persist<T>(_ p: PPointer<T>, count: Int = 1) throws(PoolError) {
        let o = try checkedOffset(p, count: count)
        try persistWrite(o, Pool.byteSize(T.self, count: count) ?? 0)
    }

    /// Makes `count` bytes at `p` durable.
    public func persist(_ p: PRawPointer, count: Int) throws(PoolError) {
        let o = try checkedOffset(p.assumingType(UInt8.self), count: count)
        try persistWrite(o, count)
    }

    /// Makes the application's write of `[o, o+n)` durable: a flush and a fence — or, when a live
    /// log record changed some of those bytes (its replay after a crash would undo the write), a
    /// record of its own (docs/ARCHITECTURE.md §5.6, "writes that are not records").
    @inline(__always)
    func persistWrite(_ o: Int, _ n: Int) throws(PoolError) {
        do throws(PoolError) { try heap.persistUnlogged(o, n) } catch { throw PoolError(error.code, error.message, path: path, errno: error.errno) }
    }

    /// Whether `p` points into this pool's heap (bounds only: not whether it is allocated).
    public func contains<T>(_ p: PPointer<T>) -> Bool {
        !isClosed && p.offset != 0 && heap.inHeap(Int(truncatingIfNeeded: p.offset), MemoryLayout<T>.size)
    }
}
