// Small blocks (≤ 16 KiB) live in runs. A run's bitmap is the persistent truth (1 = allocated);
// its free count, owner and search hint are volatile.
//
// Each lane owns at most one run per size class and is the only thread that allocates from it,
// so the fast path takes no lock: find a zero bit from the hint, set it with an atomic OR (other
// threads may be clearing other bits of the word concurrently), flush the word, fence.
// Frees from any thread clear their bit atomically, flush, fence. Either is a single-word commit
// outside the lanes' logs — unless a live log record changed that bitmap word (its replay would
// undo the commit): then the bit is set or cleared by a record of its own (one fence as well).
//
// When a lane's run fills, it gives the run up and takes the lowest-addressed run with free
// blocks from its class's binary heap (under the class lock), or makes a new run from a free
// extent. A run that becomes entirely free while unowned goes back to the extents when its class
// has another run to serve from.

/// A block found free in a run (its bit is still 0).
@_spi(Core) import PersistentHeapCore

struct BlockSlot: Sendable, Equatable {
    let run: Int
    let word: Int
    let bit: Int
    @inline(__always) var mask: UInt64 { 1 << UInt64(bit) }
}

/// What a pool offset given to `free` designates.
enum BlockLocation: Sendable {
    case small(run: Int, sizeClass: Int, word: Int, mask: UInt64)
    case large(unit: Int)
}

extension Heap {
    @inline(__always) func bitmapWordOffset(run: Int, word: Int) -> Int {
        unitOffset(run) + RunField.bitmap + word << 3
    }

    @inline(__always) func blockOffset(_ s: BlockSlot, _ g: SizeClass) -> Int {
        unitOffset(s.run) + g.dataOffset + (s.word << 6 | s.bit) * g.blockSize
    }

    /// Finds a free block of class `c` for `lane` and counts it as taken in the volatile state.
    /// The caller sets its bit (directly, or through a redo log).
    @inline(__always)
    func reserveBlock(lane: Int, sizeClass c: Int) throws(PoolError) -> BlockSlot {
        let slot = lane * classCount + c
        var r = Int(laneRuns[slot]) - 1
        while true {
            if r >= 0 {
                if let s = findFreeBit(run: r, sizeClass: c, lane: lane, hint: slot) {
                    info(r).addFreeCount(-1)
                    return s
                }
                releaseRun(r, sizeClass: c, lane: lane)
                laneRuns[slot] = 0
            }
            r = try acquireRun(sizeClass: c, lane: lane)
            laneRuns[slot] = UInt32(r + 1)
            laneHints[slot] = 0
        }
    }

    /// Returns an unpublished reservation to the volatile state.
    func unreserveBlock(_ s: BlockSlot) {
        info(s.run).addFreeCount(1)
    }

    /// A zero bit in the run's bitmap, searching from the lane's hint (`laneHints[hint]`).
    @inline(__always)
    private func findFreeBit(run r: Int, sizeClass c: Int, lane: Int, hint: Int) -> BlockSlot? {
        let i = info(r)
        guard i.freeCount > 0 else { return nil }
        let bitmap = unitOffset(r) + RunField.bitmap
        let count = geometry[c].bitmapWords
        let listed = reservationLists[lane].count > 0
        var w = Int(laneHints[hint])
        for _ in 0..<count {
            // Relaxed: frees by other threads clear bits concurrently; a stale 1 only skips a block.
            var v = bytes.atomicLoad(bitmap + w << 3, .relaxed)
            if listed { v |= reservedBits(run: r, word: w, lane: lane) }
            if v != ~0 {
                laneHints[hint] = UInt32(w)
                return BlockSlot(run: r, word: w, bit: (~v).trailingZeroBitCount)
            }
            w += 1
            if w == count { w = 0 }
        }
        return nil
    }

    /// Allocates a small block: one flushed line, one fence.
    @inline(__always)
    func allocateSmall(sizeClass c: Int, zeroed: Bool) throws(PoolError) -> Int {
        let lane = currentLane()
        let s = try reserveBlock(lane: lane, sizeClass: c)
        let g = geometry[c]
        let offset = blockOffset(s, g)
        let word = bitmapWordOffset(run: s.run, word: s.word)
        if mustLog(word, 8, lane: lane) || (zeroed && mustLog(offset, g.blockSize, lane: lane)) {
            return allocateSmallLogged(s, offset: offset, blockSize: g.blockSize, zeroed: zeroed, lane: lane)
        }
        if zeroed {
            bytes.zero(offset, count: g.blockSize)
            persistence.flush(offset: offset, count: g.blockSize)
        }
        bytes.atomicOr(word, s.mask, .acquiringAndReleasing)
        persistence.flush(offset: word, count: 8)
        persistence.drain()
        return offset
    }

    /// `allocateSmall` through a record: a live record changed the bitmap word or the block.
    @inline(never)
    private func allocateSmallLogged(_ s: BlockSlot, offset: Int, blockSize: Int, zeroed: Bool, lane: Int) -> Int {
        var entries = WordEntries((.or64, bitmapWordOffset(run: s.run, word: s.word), s.mask))
        if zeroed {
            bytes.zero(offset, count: blockSize)
            entries.append((.zero, offset, UInt64(blockSize)))
        }
        commitWords(entries, lane: lane)
        return offset
    }

    /// Identifies the live allocation at pool offset `offset`, or throws `invalidFree`.
    @inline(__always)
    func locate(_ offset: Int) throws(PoolError) -> BlockLocation {
        guard offset >= heapOffset, offset < poolEnd else {
            throw PoolError(.invalidFree, "offset \(offset) is outside the heap")
        }
        let u = (offset - heapOffset) >> Format.unitShift
        let s = Int(startOf[u])
        let i = info(s)
        if i.kind == .run && s <= u && u < s + i.length {
            try ensureLoaded(s)
            let g = geometry[i.sizeClass]
            let rel = offset - unitOffset(s) - g.dataOffset
            let k = rel >= 0 ? Int((UInt64(rel) &* g.reciprocal) >> 32) : -1
            guard rel >= 0, k * g.blockSize == rel, k < g.blockCount else {
                throw PoolError(.invalidFree, "offset \(offset) is not the start of a block")
            }
            let word = k >> 6, mask: UInt64 = 1 << UInt64(k & 63)
            guard bytes.u64(bitmapWordOffset(run: s, word: word)) & mask != 0 else {
                throw PoolError(.invalidFree, "offset \(offset) is not allocated (double free?)")
            }
            return .small(run: s, sizeClass: i.sizeClass, word: word, mask: mask)
        }
        if (offset - heapOffset) & (Format.unitSize - 1) == 0 && info(u).kind == .used {
            return .large(unit: u)
        }
        throw PoolError(.invalidFree, "offset \(offset) is not a live allocation")
    }

    /// Frees a small block: clear its bit, flush, fence (one line, one fence).
    @inline(__always)
    func freeSmall(run r: Int, sizeClass c: Int, word: Int, mask: UInt64) throws(PoolError) {
        let off = bitmapWordOffset(run: r, word: word)
        let lane = currentLane()
        // Only the bitmap word decides: the run's table entry changes here only by clearing its
        // FULL hint, and a replayed record can only clear that hint too (no record sets it), so
        // replay never undoes this write even when a live record wrote the entry (run creation).
        if mustLog(off, 8, lane: lane) {
            return freeSmallLogged(run: r, sizeClass: c, word: word, mask: mask)
        }
        let old = bytes.atomicAnd(off, ~mask, .acquiringAndReleasing)
        guard old & mask != 0 else {
            throw PoolError(.invalidFree, "block in run at unit \(r) is not allocated (double free)")
        }
        persistence.flush(offset: off, count: 8)
        clearFullHint(r) // made durable by this free's fence
        persistence.drain()
        noteFreed(run: r, sizeClass: c, word: word)
    }

    /// `freeSmall` through a record: a live record changed the bitmap word or the run's entry.
    @inline(never)
    private func freeSmallLogged(run r: Int, sizeClass c: Int, word: Int, mask: UInt64) {
        // `locate` found the bit set: the record clears it (as free-and-unlink does; two threads
        // freeing the same block at once is the caller's race, as for any double free).
        let off = bitmapWordOffset(run: r, word: word)
        var entries = WordEntries((.andNot64, off, mask))
        if tableEntry(r).isHintedFull { entries.append((.andNot64, tableEntryOffset(r), UnitEntry.fullHint)) }
        commitWords(entries, lane: currentLane())
        noteFreed(run: r, sizeClass: c, word: word)
    }

    /// Clears the FULL hint of run `r` if set (flushed, no fence of its own).
    ///
    /// Orderings: the FULL-hint protocol is a store→load handshake between a lane giving the run up
    /// (`setFullHint`: set the hint, then read the free count) and a free (`noteFreed`: count the
    /// block, then read the hint). Both sides are sequentially consistent, so at least one of them
    /// sees the other and the hint never stays set on a run with free blocks.
    @inline(__always)
    func clearFullHint(_ r: Int) {
        let e = tableEntryOffset(r)
        if bytes.atomicLoad(e, .sequentiallyConsistent) & UnitEntry.fullHint != 0 {
            bytes.atomicAnd(e, ~UnitEntry.fullHint, .sequentiallyConsistent)
            persistence.flush(offset: e, count: 8)
        }
    }

    /// Sets the FULL hint of run `r` (flushed, no fence of its own), unless a free raced in.
    private func setFullHint(_ r: Int) {
        let e = tableEntryOffset(r)
        bytes.atomicOr(e, UnitEntry.fullHint, .sequentiallyConsistent)
        persistence.flush(offset: e, count: 8)
        // A free that incremented the count before seeing the hint would leave it stale.
        if info(r).freeCount > 0 { clearFullHint(r) }
    }

    /// Volatile bookkeeping after a block of run `r` was freed (its cleared bit is durable).
    @inline(__always)
    func noteFreed(run r: Int, sizeClass c: Int, word: Int) {
        let i = info(r)
        let nowFree = Int(i.addFreeCount(1)) + 1
        if nowFree == 1 { clearFullHint(r) } // a hint set concurrently (see setFullHint)
        let owner = Int(i.owner)
        if owner != 0 {
            // Only the owner's thread touches its search hint; another lane's free is found by
            // the owner's wrap-around search.
            if owner - 1 == ThreadContext.lane(inPool: poolID) {
                let h = (owner - 1) * classCount + c
                if word < Int(laneHints[h]) { laneHints[h] = UInt32(word) }
            }
            return
        }
        if positions[r] != 0 && nowFree < geometry[c].blockCount { return }
        lockClass(c)
        guard i.kind == .run, i.owner == 0, i.flags & UnitFlags.pinned == 0 else { unlockClass(c); return }
        if positions[r] == 0 && i.freeCount > 0 {
            classHeaps[c].insert(UInt32(r), positions: positions)
        }
        dissolveIfEmpty(run: r, sizeClass: c) // unlocks the class
    }

    /// Gives up a lane's run: unowned, back in the class heap if it has free blocks — unless the
    /// lane holds unpublished reservations in it: then it is pinned (no other lane may take it)
    /// until they are published or cancelled.
    func releaseRun(_ r: Int, sizeClass c: Int, lane: Int) {
        lockClass(c)
        let i = info(r)
        i.storeOwner(0)
        if i.flags & UnitFlags.pinned == 0 && holdsReservations(inRun: r, lane: lane) { pin(run: r, lane: lane) }
        if i.flags & UnitFlags.pinned != 0 { unlockClass(c); return } // back when unpinned
        if i.freeCount == 0 { setFullHint(r) }
        if i.freeCount > 0 && positions[r] == 0 {
            classHeaps[c].insert(UInt32(r), positions: positions)
        }
        dissolveIfEmpty(run: r, sizeClass: c)
    }

    /// With the class lock held: if the unowned run `r` is entirely free and its class has
    /// another run to serve from, turns it back into a free extent. Always unlocks the class.
    private func dissolveIfEmpty(run r: Int, sizeClass c: Int) {
        let i = info(r)
        let g = geometry[c]
        guard i.owner == 0, Int(i.freeCount) == g.blockCount,
              positions[r] != 0, classHeaps[c].count > 1 else {
            unlockClass(c)
            return
        }
        classHeaps[c].remove(UInt32(r), positions: positions)
        i.kind = .retiring
        unlockClass(c)
        commitEntry(r, UnitEntry(kind: .free, length: g.units))
        releaseExtent(r, length: g.units)
    }

    /// Takes the lowest-addressed run of class `c` with free blocks, or makes a new one.
    private func acquireRun(sizeClass c: Int, lane: Int) throws(PoolError) -> Int {
        lockClass(c)
        if let r = classHeaps[c].popMin(positions: positions) {
            let i = info(Int(r))
            i.storeOwner(Int32(lane + 1))
            unlockClass(c)
            return Int(r)
        }
        unlockClass(c)
        return try createRun(sizeClass: c, lane: lane)
    }

    /// Makes a run of class `c` from a free extent, owned by `lane` (two fences: the header and
    /// empty bitmap, then a record of the table entries — the run's and the split's remainder;
    /// no lock held across them).
    private func createRun(sizeClass c: Int, lane: Int) throws(PoolError) -> Int {
        let g = geometry[c]
        let t = try takeFree(g.units)
        try prepareStorage(t, units: g.units)
        let a = t.start
        let metadata = RunField.bitmap + g.bitmapWords * 8
        // Written outside a record: no older record may replay into these bytes.
        settleForUnloggedWrite(unitOffset(a), metadata)
        writeRunHeader(at: a, sizeClass: c)
        persistence.persist(offset: unitOffset(a), count: metadata)
        var entries = WordEntries()
        if t.length > g.units {
            entries.append((.write8, tableEntryOffset(a + g.units), UnitEntry(kind: .free, length: t.length - g.units).raw))
        }
        entries.append((.write8, tableEntryOffset(a), UnitEntry(kind: .run, length: g.units, sizeClass: c).raw))
        commitWords(entries, lane: lane)
        // The record and the boundary tags under the extent lock, like `noteUsed`: a neighbour's
        // free (`addFreeExtent`, lock held) reads `startOf` and the kind at this run's edges.
        let i = info(a)
        i.storeFreeCount(Int32(g.blockCount))
        i.storeOwner(Int32(lane + 1))
        lockExtents()
        settle(t)
        i.kind = .run
        i.sizeClass = c
        i.length = g.units
        for k in a..<(a + g.units) { startOf[k] = UInt32(a) }
        if t.length > g.units { addFreeExtent(a + g.units, length: t.length - g.units, punched: t.punched) }
        unlockExtents()
        return a
    }

    /// Turns every unowned, entirely free run back into free extents (before a shrink).
    /// Returns the number of runs dissolved.
    @discardableResult
    func dissolveEmptyRuns() -> Int {
        var dissolved = 0
        for c in 0..<classCount {
            let g = geometry[c]
            lockClass(c)
            var empty: [Int] = []
            for k in 0..<classHeaps[c].count {
                let r = Int(classHeaps[c][k])
                let i = info(r)
                if i.owner == 0 && Int(i.freeCount) == g.blockCount { empty.append(r) }
            }
            for r in empty {
                classHeaps[c].remove(UInt32(r), positions: positions)
                info(r).kind = .retiring
            }
            unlockClass(c)
            for r in empty {
                commitEntry(r, UnitEntry(kind: .free, length: g.units))
                releaseExtent(r, length: g.units)
                dissolved += 1
            }
        }
        return dissolved
    }

    /// Gives back every run `lane` owns (the lane's thread exited or the pool closes).
    @_spi(Allocator) public func releaseLaneRuns(_ lane: Int) {
        for c in 0..<classCount {
            let slot = lane * classCount + c
            let r = Int(laneRuns[slot]) - 1
            if r >= 0 {
                laneRuns[slot] = 0
                releaseRun(r, sizeClass: c, lane: lane)
            }
        }
    }
}
