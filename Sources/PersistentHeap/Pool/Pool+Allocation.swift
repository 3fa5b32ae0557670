// The allocator's public API. Every call here is durable when it returns.

@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

extension Pool {
    /// The largest alignment an allocation may ask for: the heap's unit (`Format.unitSize`,
    /// asserted equal when a pool opens; a literal here because the inlined check below cannot
    /// name the core's SPI).
    @inlinable static var maxAlignment: Int { 4096 }

    /// Validates a request (inlined into the caller; the errors are built out of line).
    @inlinable @inline(__always)
    func checkRequest(bytes n: Int, alignment: Int) throws(PoolError) {
        guard n > 0, alignment > 0, alignment & (alignment - 1) == 0, alignment <= Pool.maxAlignment, n <= maxRequest else {
            throw requestError(bytes: n, alignment: alignment)
        }
    }

    @usableFromInline @inline(never)
    func requestError(bytes n: Int, alignment: Int) -> PoolError {
        if n <= 0 { return PoolError(.invalidArgument, "allocation size must be at least 1 byte (got \(n))", path: path) }
        if n > maxRequest { return PoolError(.outOfSpace, "\(n) bytes exceed the pool's maximum size of \(maxRequest)", path: path) }
        return PoolError(.invalidArgument, "alignment \(alignment) is not a power of two up to \(Format.unitSize)", path: path)
    }

    /// The pool offset of an application's slot, validated (``Heap/validateSlot(_:)``).
    @inline(__always)
    func userSlot<T>(_ slot: PPointer<T>) throws(PoolError) -> Int {
        let o = Int(truncatingIfNeeded: slot.offset)
        do throws(PoolError) { try heap.validateSlot(o) } catch { throw PoolError(error.code, error.message, path: path) }
        return o
    }

    @inline(__always)
    func allocateRaw(_ n: Int, alignment: Int, zeroed: Bool) throws(PoolError) -> Int {
        try checkWritable()
        try checkRequest(bytes: n, alignment: alignment)
        return try heap.allocate(size: n, alignment: alignment, zeroed: zeroed)
    }

    /// Allocate-and-link: reserves `size` bytes, lets `fill` write them (at their pool offset,
    /// with their usable size) or zeroes them, and publishes the block together with `slot := it`
    /// in one record (one fence). `slot` must be valid (``userSlot(_:)`` or one of the pool's own).
    func allocateLinked(size: Int, alignment: Int, slot: Int, zeroed: Bool,
                        fill: ((_ offset: Int, _ usable: Int) -> Void)?) throws(PoolError) -> Int {
        let lane = heap.currentLane()
        let r = try heap.reserve(size: size, alignment: alignment, lane: lane, longLived: false)
        if zeroed { bytes.zero(r.offset, count: r.usableSize) }
        fill?(r.offset, r.usableSize)
        let contents: LinkedContents
        switch (zeroed, fill != nil) {
        case (true, false): contents = .zeroed
        case (true, true): contents = .initialized(r.usableSize)  // zeros and what `fill` wrote
        case (false, true): contents = .initialized(size)
        case (false, false): contents = .none
        }
        try heap.publishLinked(r, slot: slot, contents: contents, lane: lane)
        return r.offset
    }

    /// Reallocate-and-relink: moves what `slot` points at to a block of at least `size` bytes in
    /// one record (the new block's contents, `slot := new`, the new block published, the old one
    /// freed). After a crash the slot points at the old object (intact) or the new one (with the
    /// old contents, the rest zeroed), and exactly that one is allocated. A null slot gets a new
    /// zeroed block; a block already large enough is returned as it is.
    func reallocateLinked(slot: Int, size: Int, alignment: Int) throws(PoolError) -> Int {
        let x = Int(truncatingIfNeeded: bytes.atomicLoad(slot, .acquiring))
        if x == 0 { return try allocateLinked(size: size, alignment: alignment, slot: slot, zeroed: true, fill: nil) }
        let oldSize = try heap.usableSize(at: x)
        if size <= oldSize && x & (alignment - 1) == 0 { return x }
        let lane = heap.currentLane()
        let old = try heap.prepareFree(x)
        let r: Reservation
        do throws(PoolError) {
            r = try heap.reserve(size: size, alignment: alignment, lane: lane, longLived: false)
        } catch {
            heap.cancelFree(old)
            throw error
        }
        let keep = min(oldSize, r.usableSize)
        bytes.move(from: x, to: r.offset, count: keep)
        bytes.zero(r.offset + keep, count: r.usableSize - keep)
        try heap.publishLinked(r, slot: slot, contents: .initialized(r.usableSize), freeing: old, lane: lane)
        return r.offset
    }

    /// Allocates `bytes` bytes aligned to `alignment` (a power of two up to 4096).
    ///
    /// The allocation is durable when this returns. The block is not reachable from anything
    /// persistent yet: if the process crashes before you link it, it is leaked. Use
    /// ``allocate(bytes:alignment:zeroed:linkedInto:)`` to allocate and link atomically.
    /// - Throws: `outOfSpace` (nothing is changed), `invalidArgument`, `readOnly`, `closed`.
    /// - Complexity: O(1) for blocks up to 16 KiB (amortised); O(log n) in the number of free
    ///   extents for larger ones.
    @inlinable
    public func allocate(bytes: Int, alignment: Int = 16, zeroed: Bool = false) throws(PoolError) -> PRawPointer {
        // Inlined into the caller: the checks, then one call into the allocator.
        try checkWritable()
        try checkRequest(bytes: bytes, alignment: alignment)
        return PRawPointer(offset: UInt64(truncatingIfNeeded: try allocator.allocate(size: bytes, alignment: alignment, zeroed: zeroed)))
    }

    /// Allocates room for `count` values of `T` (uninitialised unless `zeroed`).
    public func allocate<T: BitwiseCopyable>(_ type: T.Type, count: Int = 1, zeroed: Bool = false) throws(PoolError) -> PPointer<T> {
        let size = try byteCount(T.self, count)
        return PPointer(offset: UInt64(try allocateRaw(size, alignment: MemoryLayout<T>.alignment, zeroed: zeroed)))
    }

    func byteCount<T>(_: T.Type, _ count: Int) throws(PoolError) -> Int {
        guard count >= 1 else { throw PoolError(.invalidArgument, "count must be at least 1 (got \(count))", path: path) }
        let (size, overflow) = MemoryLayout<T>.stride.multipliedReportingOverflow(by: count)
        guard !overflow else { throw PoolError(.invalidArgument, "\(count) × \(T.self) overflows", path: path) }
        return max(size, 1)
    }

    /// Allocates `bytes` bytes and stores the new pointer in `slot` (an 8-byte persistent
    /// location in the heap), **atomically**: after a crash, either the block is allocated and
    /// `slot` points at it, or neither happened. One fence.
    public func allocate(bytes: Int, alignment: Int = 16, zeroed: Bool = true,
                         linkedInto slot: PPointer<PRawPointer>) throws(PoolError) -> PRawPointer {
        try checkWritable()
        try checkRequest(bytes: bytes, alignment: alignment)
        let x = try allocateLinked(size: bytes, alignment: alignment, slot: try userSlot(slot), zeroed: zeroed, fill: nil)
        return PRawPointer(offset: UInt64(x))
    }

    /// Allocates a `T`, initialises it to `value`, and stores the new pointer in `slot`,
    /// atomically (the value is durable before the slot can point at it).
    ///
    /// ```swift
    /// let node = try pool.allocate(Node(value: 42, next: oldHead), linkedInto: list.field(\.head))
    /// ```
    public func allocate<T: BitwiseCopyable>(_ value: T, linkedInto slot: PPointer<PPointer<T>>) throws(PoolError) -> PPointer<T> {
        try checkWritable()
        let size = max(MemoryLayout<T>.size, 1)
        try checkRequest(bytes: size, alignment: MemoryLayout<T>.alignment)
        let target = try userSlot(slot)
        let x = try allocateLinked(size: size, alignment: MemoryLayout<T>.alignment, slot: target, zeroed: false) { [bytes] o, _ in
            bytes.store(value, at: o)
        }
        return PPointer(offset: UInt64(x))
    }

    /// Frees the block `p` points at. Freeing null does nothing. Durable when it returns
    /// (one fence for small blocks).
    ///
    /// - Throws: `invalidFree` when `p` is not a live allocation (double free, interior pointer,
    ///   outside the heap) — detected from the allocation bitmap / unit table, nothing changed.
    public func free<T>(_ p: PPointer<T>) throws(PoolError) {
        try free(p.raw)
    }

    /// Frees the block `p` points at (see ``free(_:)-(PPointer<T>)``).
    @inlinable
    public func free(_ p: PRawPointer) throws(PoolError) {
        guard !p.isNull else { return }
        try checkWritable()
        do { try allocator.free(Int(truncatingIfNeeded: p.offset)) } catch { throw error.path == nil ? PoolError(error.code, error.message, path: path, errno: error.errno) : error }
    }

    /// Frees the block `slot` points at and sets `slot` to null, **atomically**. A null slot is
    /// a no-op. One fence.
    public func free<T>(linkedFrom slot: PPointer<PPointer<T>>) throws(PoolError) {
        try checkWritable()
        try heap.freeLinked(slot: try userSlot(slot), lane: heap.currentLane())
    }

    /// Frees the block `slot` points at and sets `slot` to null, atomically (raw slot).
    public func free(linkedFrom slot: PPointer<PRawPointer>) throws(PoolError) {
        try checkWritable()
        try heap.freeLinked(slot: try userSlot(slot), lane: heap.currentLane())
    }

    /// Resizes the object `slot` points at to hold `count` values of `T`, atomically with the
    /// slot: after a crash the slot points at either the old object (intact) or the new one
    /// (holding the old contents; added bytes zeroed), and only that one is allocated. A null
    /// slot gets a new zeroed object. Returns the (possibly unchanged) pointer.
    public func reallocate<T: BitwiseCopyable>(linkedFrom slot: PPointer<PPointer<T>>, count: Int) throws(PoolError) -> PPointer<T> {
        try checkWritable()
        let size = try byteCount(T.self, count)
        try checkRequest(bytes: size, alignment: MemoryLayout<T>.alignment)
        return PPointer(offset: UInt64(try reallocateLinked(slot: try userSlot(slot), size: size, alignment: MemoryLayout<T>.alignment)))
    }

    /// Resizes the object at `p` to hold `count` values of `T`: returns `p` when it is already
    /// large enough, else a new block holding the old contents (the rest uninitialised) with
    /// `p` freed. Not atomic with the references to `p`: use
    /// ``reallocate(linkedFrom:count:)`` for a pointer stored in the pool.
    public func reallocate<T: BitwiseCopyable>(_ p: PPointer<T>, count: Int) throws(PoolError) -> PPointer<T> {
        if p.isNull { return try allocate(T.self, count: count) }
        let size = try byteCount(T.self, count)
        let old = try usableSize(of: p)
        if size <= old { return p }
        let q = try allocate(T.self, count: count)
        bytes.move(from: Int(p.offset), to: Int(q.offset), count: old)
        try persistWrite(Int(q.offset), old)
        try free(p)
        return q
    }

    /// Usable bytes of the block `p` points at (at least what was requested).
    /// - Throws: `invalidFree` when `p` is not a live allocation.
    public func usableSize<T>(of p: PPointer<T>) throws(PoolError) -> Int {
        try checkOpen()
        return try heap.usableSize(at: Int(truncatingIfNeeded: p.offset))
    }

    /// Usable bytes of the block `p` points at.
    public func usableSize(of p: PRawPointer) throws(PoolError) -> Int {
        try usableSize(of: p.assumingType(UInt8.self))
    }

    /// Whether `p` is the start of a live allocation.
    public func isAllocated<T>(_ p: PPointer<T>) -> Bool { isAllocated(p.raw) }

    /// Whether `p` is the start of a live allocation.
    public func isAllocated(_ p: PRawPointer) -> Bool {
        guard !isClosed, !p.isNull else { return false }
        return heap.isAllocated(Int(truncatingIfNeeded: p.offset))
    }

    /// Gives the free tail of the pool back to the file system (truncates the file) and returns
    /// the number of bytes released. Runs that are entirely free and unowned are turned back
    /// into free space first. Large free extents inside the pool are already released with
    /// hole punching as they are freed.
    @discardableResult
    public func shrink() throws(PoolError) -> Int {
        try checkWritable()
        return try heap.shrink()
    }
}
