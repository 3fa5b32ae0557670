// Reading and writing persistent memory through persistent pointers, checked.
//
// The naming ladder (after swift-nio):
//   load / store / withMutable        checked (bounds + alignment), errors thrown; store and
//                                     withMutable persist what they changed
//   subscript                         checked, traps on a bad pointer; the setter persists
//   withUnsafePointer / withUnsafeMutablePointer, unsafeAddress(of:)   Pool+Unsafe.swift

import PersistentHeapCore
import PersistentHeapAllocator

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
    ///
    /// `@inline(never)`: Swift 6.3.1 miscompiles this generic typed-throws function when it is
    /// inlined into the (generic, typed-throws) accessors below and optimized across modules:
    /// callers saw a spurious, uninitialised `PoolError`. Found by the release `selftest` of
    /// Benchmarks/pheap-compare, which CI runs.
    @inline(never)
    func checkedOffset<T>(_ p: PPointer<T>, count: Int = 1) throws(PoolError) -> Int {
        try checkOpen()
        guard p.offset != 0 else { throw PoolError(.invalidPointer, "null pointer dereferenced", path: path) }
        guard let size = Pool.byteSize(T.self, count: count) else {
            throw PoolError(.invalidArgument, "count \(count) of \(T.self) is negative or too large", path: path)
        }
        let o = Int(truncatingIfNeeded: p.offset)
        guard heap.inHeap(o, size) else {
            throw PoolError(.invalidPointer, "pointer 0x\(String(p.offset, radix: 16)) (\(size) bytes) lies outside the heap", path: path)
        }
        guard o % MemoryLayout<T>.alignment == 0 else {
            throw PoolError(.invalidPointer, "pointer 0x\(String(p.offset, radix: 16)) is not aligned to \(MemoryLayout<T>.alignment) for \(T.self)", path: path)
        }
        return o
    }

    /// Reads the value `p` points at.
    /// - Throws: `invalidPointer` when `p` is null, misaligned or outside the heap.
    public func load<T>(_ p: PPointer<T>) throws(PoolError) -> T {
        bytes.load(T.self, at: try checkedOffset(p))
    }

    /// Stores `value` at `p` and makes it durable.
    /// - Note: Not failure-atomic for values larger than 8 bytes: a crash may leave some
    ///   cache lines updated and others not. Use a transaction for atomic multi-word updates.
    public func store<T>(_ value: T, at p: PPointer<T>) throws(PoolError) {
        try checkWritable()
        try checkNoTransaction()
        let o = try checkedOffset(p)
        bytes.store(value, at: o)
        persistence.persist(offset: o, count: MemoryLayout<T>.size)
    }

    /// Runs `body` on the value at `p`, stores the result back and makes it durable.
    /// - Note: Not failure-atomic beyond 8 bytes (see ``store(_:at:)``).
    public func withMutable<T, R>(_ p: PPointer<T>, _ body: (inout T) throws -> R) throws -> R {
        try checkWritable()
        try checkNoTransaction()
        let o = try checkedOffset(p)
        var value = bytes.load(T.self, at: o)
        defer {
            bytes.store(value, at: o)
            persistence.persist(offset: o, count: MemoryLayout<T>.size)
        }
        return try body(&value)
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
        persistence.persist(offset: o, count: Pool.byteSize(T.self, count: count) ?? 0)
    }

    /// Makes `count` bytes at `p` durable.
    public func persist(_ p: PRawPointer, count: Int) throws(PoolError) {
        let o = try checkedOffset(p.assumingType(UInt8.self), count: count)
        persistence.persist(offset: o, count: count)
    }

    /// Whether `p` points into this pool's heap (bounds only: not whether it is allocated).
    public func contains<T>(_ p: PPointer<T>) -> Bool {
        !isClosed && p.offset != 0 && heap.inHeap(Int(truncatingIfNeeded: p.offset), MemoryLayout<T>.size)
    }
}
