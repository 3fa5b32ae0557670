import CPersistentHeap

// Operations that change an allocation and a persistent 8-byte slot together, atomically:
// allocate-and-link, free-and-unlink, reallocate-and-relink, publish. Each writes one redo log
// in the caller's lane (fence 1), applies it (fence 2) and retires it without a fence.
//
//   allocate-and-link (small):  log { slot := X ; bitmap word |= bit(X) }
//   free-and-unlink   (small):  log { slot := 0 ; bitmap word &= ~bit(X) }
//   large objects:              the bitmap entry is replaced by the unit-table entry of X
// Initial contents of a new object are flushed before fence 1, so they are durable before the
// slot can point at them.

/// An allocation chosen but not yet made durable.
enum PendingAllocation {
    case small(BlockSlot, sizeClass: Int)
    /// A large object at `unit` of `units` units, split from a free extent of `extentUnits`
    /// (the rest becomes a free extent by the same log); the extent lock is held until it is
    /// published.
    case large(unit: Int, units: Int, extentUnits: Int)

    /// Log entries `Heap.appendAllocate` writes for it.
    var entries: Int {
        if case .large(_, let n, let l) = self { return l > n ? 2 : 1 }
        return 1
    }
}

extension Heap {
    /// Rounds a request up to units for the extent path.
    @inline(__always) static func unitsFor(_ size: Int) -> Int { (size + Format.unitSize - 1) >> Format.unitShift }

    /// Chooses space for `size` bytes. For a large object this takes the extent lock, which the
    /// caller releases after publishing or cancelling (``finish(_:)``).
    func prepareAllocation(size: Int, alignment: Int, lane: Int) throws(PoolError) -> (PendingAllocation, offset: Int) {
        if let c = classIndex(size: size, alignment: alignment) {
            let s = try reserveBlock(lane: lane, sizeClass: c)
            return (.small(s, sizeClass: c), blockOffset(s, geometry[c]))
        }
        let n = Heap.unitsFor(size)
        lockExtents()
        do throws(PoolError) {
            let (a, length) = try takeFree(n)
            // The remainder's entry is written by the log (not pre-written): a pre-write
            // flushed under the log's own fence could be missing when the log is replayed.
            if length > n { insertFree(a + n, length: length - n, punched: false) }
            return (.large(unit: a, units: n, extentUnits: length), unitOffset(a))
        } catch {
            unlockExtents()
            throw error
        }
    }

    /// Appends the entry that makes `p` allocated.
    @inline(__always)
    func appendAllocate(_ p: PendingAllocation, to log: inout RedoLog) {
        switch p {
        case .small(let s, _):
            log.append(.or64, offset: bitmapWordOffset(run: s.run, word: s.word), operand: s.mask)
        case .large(let u, let n, let l):
            if l > n { log.append(.write8, offset: tableEntryOffset(u + n), operand: UnitEntry(kind: .free, length: l - n).raw) }
            log.append(.write8, offset: tableEntryOffset(u), operand: UnitEntry(kind: .used, length: n).raw)
        }
    }

    /// Volatile bookkeeping once `p` is durable, and the extent lock released for large objects.
    @inline(__always)
    func finishPublished(_ p: PendingAllocation) {
        if case .large(let u, let n, _) = p {
            noteUsed(u, length: n)
            unlockExtents()
        }
    }

    /// Returns a prepared allocation that will not be published.
    func cancel(_ p: PendingAllocation) {
        switch p {
        case .small(let s, _):
            unreserveBlock(s)
        case .large(let u, let n, let l):
            if l > n { removeFree(u + n); info(u + n).clear() }
            releaseExtentVolatileNoPunch(u, length: l)
            unlockExtents()
        }
    }

    private func releaseExtentVolatileNoPunch(_ a: Int, length n: Int) {
        addFreeExtent(a, length: n, punched: false)
    }

    /// Usable bytes of a located allocation.
    func usableSize(_ loc: BlockLocation) -> Int {
        switch loc {
        case .small(_, let c, _, _): return geometry[c].blockSize
        case .large(let u): return info(u).length << Format.unitShift
        }
    }

    /// Pool offset of a located allocation.
    func offset(of loc: BlockLocation) -> Int {
        switch loc {
        case .small(let r, let c, let w, let mask):
            return unitOffset(r) + geometry[c].dataOffset + (w << 6 | mask.trailingZeroBitCount) * geometry[c].blockSize
        case .large(let u): return unitOffset(u)
        }
    }

    /// Appends the entry that frees `loc`. For a large object the extent lock must be held.
    @inline(__always)
    func appendFree(_ loc: BlockLocation, to log: inout RedoLog) {
        switch loc {
        case .small(let r, _, let w, let mask):
            log.append(.andNot64, offset: bitmapWordOffset(run: r, word: w), operand: mask)
            if tableEntry(r).isHintedFull && log.remaining >= 16 {
                log.append(.andNot64, offset: tableEntryOffset(r), operand: UnitEntry.fullHint)
            }
        case .large(let u):
            log.append(.write8, offset: tableEntryOffset(u), operand: UnitEntry(kind: .free, length: info(u).length).raw)
        }
    }

    /// Volatile bookkeeping after `loc` was durably freed.
    @inline(__always)
    func finishFreed(_ loc: BlockLocation) {
        switch loc {
        case .small(let r, let c, let w, _):
            noteFreed(run: r, sizeClass: c, word: w)
        case .large(let u):
            let n = info(u).length
            info(u).clear()
            releaseExtentVolatile(u, length: n)
        }
    }

    /// Checks that `slot`, given by the application, can hold a persistent pointer written by
    /// a linked operation: 8-byte aligned, in the heap (not in a run's header or bitmap) or the
    /// root slot. The headers, the state page and the lanes are refused.
    @inline(__always)
    func validateSlot(_ slot: Int) throws(PoolError) {
        guard slot & 7 == 0, slot == StateField.rootSlot || (inHeap(slot, 8) && !isRunMetadata(slot)) else {
            throw PoolError(.invalidPointer, "slot offset \(slot) is not an 8-byte aligned location in an object of the heap or the root slot")
        }
    }

    /// Commits, applies and retires `log` in `lane` (fence 1, fence 2, deferred retirement).
    @inline(__always)
    func run(_ log: inout RedoLog, lane: Int) {
        log.commit(seq: nextSequence(), persistence: persistence, lane: lane)
        log.apply(persistence: persistence, lane: lane)
        log.retire(persistence: persistence, slot: lane)
    }

    /// Allocates `size` bytes, lets `initialize` fill them (or zeroes them), and stores the new
    /// offset in the 8-byte `slot`: after a crash, either both happened or neither.
    /// `slot` must be valid (``validateSlot(_:)`` for the application's slots).
    func allocateLinked(size: Int, alignment: Int, slot: Int, zeroed: Bool,
                        initialize: ((UnsafeMutableRawPointer, Int) -> Void)?) throws(PoolError) -> Int {
        let lane = currentLane()
        let (pending, x) = try prepareAllocation(size: size, alignment: alignment, lane: lane)
        let usable: Int
        switch pending {
        case .small(_, let c): usable = geometry[c].blockSize
        case .large(_, let n, _): usable = n << Format.unitShift
        }
        if zeroed { bytes.pointer(x).initializeMemory(as: UInt8.self, repeating: 0, count: usable) }
        if let initialize { initialize(bytes.pointer(x), usable) }
        let written = zeroed ? usable : size
        let initialized = zeroed || initialize != nil
        var log = 1 + pending.entries + (initialized ? 1 : 0) <= 3 ? fastLog(lane) : mainLog(lane)
        if initialized {
            persistence.flush(bytes.pointer(x), count: written)
            log.appendVerify(offset: x, count: written)
        }
        log.append(.write8, offset: slot, operand: UInt64(x))
        appendAllocate(pending, to: &log)
        run(&log, lane: lane)
        finishPublished(pending)
        return x
    }

    /// Frees the allocation `slot` points at and clears the slot, atomically. A null slot is a
    /// no-op. The slot's value is untrusted: `locate` refuses anything but a live allocation.
    func freeLinked(slot: Int) throws(PoolError) {
        let x = Int(truncatingIfNeeded: bytes.atomicLoad(slot))
        guard x != 0 else { return }
        let lane = currentLane()
        let loc = try locate(x)
        if case .large = loc { lockExtents() }
        defer { if case .large = loc { unlockExtents() } }
        if case .large(let u) = loc, info(u).kind != .used {
            throw PoolError(.invalidFree, "offset \(x) is not a live allocation (double free?)")
        }
        var log = fastLog(lane)
        log.append(.write8, offset: slot, operand: 0)
        appendFree(loc, to: &log)
        run(&log, lane: lane)
        finishFreed(loc)
    }

    /// Moves the object `slot` points at to a block of at least `size` bytes, atomically with the
    /// slot update: after a crash the slot points at the old object (intact) or at the new one
    /// (with the old contents, the rest zeroed), and exactly that one is allocated.
    /// Returns the new offset (the same one when the block is already large enough).
    func reallocateLinked(slot: Int, size: Int, alignment: Int) throws(PoolError) -> Int {
        let x = Int(truncatingIfNeeded: bytes.atomicLoad(slot))
        if x == 0 { return try allocateLinked(size: size, alignment: alignment, slot: slot, zeroed: true, initialize: nil) }
        let old = try locate(x)
        let oldSize = usableSize(old)
        if size <= oldSize && x & (alignment - 1) == 0 { return x }
        let lane = currentLane()
        let (pending, y) = try prepareAllocation(size: size, alignment: alignment, lane: lane)
        // A large old object is freed under the extent lock: take it unless `pending` holds it.
        var tookLock = false
        if case .large = old, case .small = pending { lockExtents(); tookLock = true }
        let newUsable: Int
        switch pending {
        case .small(_, let c): newUsable = geometry[c].blockSize
        case .large(_, let n, _): newUsable = n << Format.unitShift
        }
        let keep = min(oldSize, newUsable)
        bytes.pointer(y).copyMemory(from: bytes.pointer(x), byteCount: keep)
        bytes.pointer(y + keep).initializeMemory(as: UInt8.self, repeating: 0, count: newUsable - keep)
        persistence.flush(bytes.pointer(y), count: newUsable)
        var log = mainLog(lane)
        log.appendVerify(offset: y, count: newUsable)
        log.append(.write8, offset: slot, operand: UInt64(y))
        appendAllocate(pending, to: &log)
        appendFree(old, to: &log)
        run(&log, lane: lane)
        finishFreed(old)
        if tookLock { unlockExtents() }
        finishPublished(pending)
        return y
    }
}
