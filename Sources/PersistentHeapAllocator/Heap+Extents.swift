// Extents: runs of whole units, free or holding one large object or one run of small blocks.
//
// Free extents are indexed by binary heaps, one per size bucket (lengths 1…32 exactly, then
// one bucket per power of two), each ordered by address. A request takes, among the buckets
// that can satisfy it, the free extent with the lowest address: low addresses are reused first,
// so the pool's tail stays free and `shrink()` can give it back.
//
// The persistent side (the unit table) is changed by log records (one fence each):
//   allocate n units from a free extent [a, a+L):
//     1. one record: [table[a+n] := FREE(L-n)] table[a] := USED(n) or RUN(c, n)  ← the commit
//     2. only now is the remainder [a+n, a+L) indexed: until the record is durable the entry at
//        a (FREE(L)) still covers it, so nothing may be allocated there before
//   free [a, a+n):  one record: table[a] := FREE(n)
// Adjacent persistent FREE extents are merged only in the volatile index; the walk at open
// merges them again.
//
// Locks: the extent lock is a spin lock held only for index operations — never across a system
// call (msync, ftruncate, fallocate, mmap), a fence or bulk work. An extent being changed is
// taken out of the index first (its volatile kind says why: reserved, retiring, punching), the
// lock released, the work done, the lock taken again to put the result in. Growth and shrink
// are serialised by the blocking growth lock; threads allocating from existing runs and extents
// never wait for them.

@_spi(Core) import PersistentHeapCore

extension Heap {
    @inline(__always) static func bucket(_ length: Int) -> Int {
        length <= 32 ? length - 1 : 27 + (Int.bitWidth - 1 - length.leadingZeroBitCount)
    }

    private func setBucketBit(_ b: Int, _ on: Bool) {
        if b < 64 {
            if on { bucketMask.0 |= 1 << UInt64(b) } else { bucketMask.0 &= ~(1 << UInt64(b)) }
        } else {
            if on { bucketMask.1 |= 1 << UInt64(b - 64) } else { bucketMask.1 &= ~(1 << UInt64(b - 64)) }
        }
    }

    private func bucketNonEmpty(_ b: Int) -> Bool {
        b < 64 ? bucketMask.0 & (1 << UInt64(b)) != 0 : bucketMask.1 & (1 << UInt64(b - 64)) != 0
    }

    /// Indexes the free extent [start, start+length) (no merging). Extent lock held.
    func insertFree(_ start: Int, length: Int, punched: Bool) {
        let i = info(start)
        i.kind = .free
        i.length = length
        i.flags = punched ? UnitFlags.punched : 0
        startOf[start] = UInt32(start)
        startOf[start + length - 1] = UInt32(start)
        let b = Heap.bucket(length)
        buckets[b].insert(UInt32(start), positions: positions)
        setBucketBit(b, true)
    }

    /// Removes the free extent at `start` from its bucket (its info stays). Extent lock held.
    func removeFree(_ start: Int) {
        let b = Heap.bucket(info(start).length)
        buckets[b].remove(UInt32(start), positions: positions)
        if buckets[b].isEmpty { setBucketBit(b, false) }
    }

    /// Adds [start, start+length) as free, merging with free neighbours. Extent lock held.
    /// Returns the merged extent. The merge is marked punched if any piece was: some of its
    /// storage may be a hole, so it is re-reserved before reuse (reserving space that is there
    /// already costs one `fallocate`, reusing a hole unreserved costs a SIGBUS on a full disk).
    @discardableResult
    func addFreeExtent(_ start: Int, length: Int, punched: Bool) -> (start: Int, length: Int) {
        var s = start, n = length, anyPunched = punched
        if s > 0 {
            let left = Int(startOf[s - 1])
            let li = info(left)
            if left < s && li.kind == .free && left + li.length == s {
                removeFree(left)
                anyPunched = anyPunched || li.flags & UnitFlags.punched != 0
                n += li.length
                if start != left { info(start).clear() }
                s = left
            }
        }
        let right = start + length
        if right < units {
            let ri = info(right)
            if ri.kind == .free {
                removeFree(right)
                anyPunched = anyPunched || ri.flags & UnitFlags.punched != 0
                n += ri.length
                ri.clear()
            }
        }
        insertFree(s, length: n, punched: anyPunched)
        return (s, n)
    }

    /// Finds the lowest-addressed free extent of at least `n` units, or nil. Extent lock held.
    /// - Complexity: O(buckets) plus, only when the request's own bucket holds extents of
    ///   mixed lengths and no larger bucket can serve it, a scan of that bucket.
    func findFree(_ n: Int) -> Int? {
        let b = Heap.bucket(n)
        var best: Int?
        if bucketNonEmpty(b), let top = buckets[b].min, info(Int(top)).length >= n { best = Int(top) }
        var bb = b + 1
        while bb < Heap.bucketCount {
            if bucketNonEmpty(bb), let top = buckets[bb].min, best == nil || Int(top) < best! { best = Int(top) }
            bb += 1
        }
        if best == nil && b >= 32 && bucketNonEmpty(b) {
            for k in 0..<buckets[b].count {
                let u = Int(buckets[b][k])
                if info(u).length >= n && (best == nil || u < best!) { best = u }
            }
        }
        return best
    }

    /// A free extent taken out of the index: no other thread can allocate in it until it is put
    /// back (`addFreeExtent`) or published.
    struct TakenExtent {
        let start: Int
        let length: Int
        /// Some of its storage may be a punched hole (reserve it before writing: `prepareStorage`).
        let punched: Bool
        /// The units asked for: `length - requested` come back to the index when the taker
        /// settles (``settle(_:)``) — counted meanwhile in `pendingRemainderUnits`.
        let requested: Int
    }

    /// Records that the taker of `t` is done with its remainder (indexed again, or kept by a
    /// reservation until it is published). Extent lock held.
    @inline(__always)
    func settle(_ t: TakenExtent) {
        pendingRemainderUnits -= t.length - t.requested
    }

    /// Takes the lowest-addressed free extent of at least `n` units out of the index. Extent lock held.
    private func takeIndexed(_ n: Int) -> TakenExtent? {
        guard let start = findFree(n) else { return nil }
        let i = info(start)
        let t = TakenExtent(start: start, length: i.length, punched: i.flags & UnitFlags.punched != 0, requested: n)
        pendingRemainderUnits += t.length - n
        removeFree(start)
        i.clear()
        return t
    }

    /// Takes a free extent of at least `n` units out of the index, growing the pool when none is
    /// free and growth is allowed. Takes and releases the locks itself (none is held on return):
    /// growth runs under the growth lock only, so other threads keep allocating meanwhile.
    func takeFree(_ n: Int) throws(PoolError) -> TakenExtent {
        lockExtents()
        if let t = takeIndexed(n) { unlockExtents(); return t }
        unlockExtents()
        guard let growFile else {
            throw PoolError(.outOfSpace, "no free extent of \(n) units (\(n << Format.unitShift) bytes) and the pool cannot grow")
        }
        return try growthLock.withLock { () throws(PoolError) -> TakenExtent in
            var waits = 0
            while true {
                lockExtents()
                if let t = takeIndexed(n) { unlockExtents(); return t }  // another thread grew meanwhile
                // Another thread has taken an extent whose remainder could serve this request and
                // is about to index it again (its commit is a fence or an msync away): wait for it
                // (bounded, ~2 ms) instead of growing the file for space that exists.
                if pendingRemainderUnits >= n && waits < 100 {
                    unlockExtents()
                    waits += 1
                    ThreadContext.sleep(microseconds: 20)
                    continue
                }
                // Grow by enough for the request even if the tail is partly free already.
                let old = units
                var tailFree = 0
                if old > 0 {
                    let t = Int(startOf[old - 1]); let ti = info(t)
                    if ti.kind == .free && t + ti.length == old { tailFree = ti.length }
                }
                unlockExtents()
                // The pool extends and maps the file, pre-writes the new units' tables and free
                // extents beyond the old end (`prewriteGrowth`) and commits the new size in its
                // header. The end must hold `n` contiguous free units in one segment.
                let newUnits = try growFile(segments.endHolding(n, old: old, tailFree: tailFree))
                lockExtents()
                indexGrowth(from: old, to: newUnits)
                if let t = takeIndexed(n) { unlockExtents(); return t }
                unlockExtents()  // the free tail was taken meanwhile: grow again
            }
        }
    }

    /// Makes the storage of `n` units at `start` of a taken extent writable: re-reserves it in the
    /// file if the extent may hold a punched hole (no lock held: a system call). On failure the
    /// extent goes back to the index and the error is `outOfSpace`.
    func prepareStorage(_ t: TakenExtent, units n: Int) throws(PoolError) {
        guard t.punched, let reserveUnits else { return }
        do throws(PoolError) {
            try reserveUnits(t.start, n)
        } catch {
            putBack(t)
            throw PoolError(.outOfSpace, "cannot reserve file space for \(n) units: \(error.message)", errno: error.errno)
        }
    }

    /// Returns a taken extent to the index, unchanged.
    func putBack(_ t: TakenExtent) {
        lockExtents()
        settle(t)
        addFreeExtent(t.start, length: t.length, punched: t.punched)
        unlockExtents()
    }

    /// Indexes the remainder of a split whose allocation is durably committed.
    func indexRemainder(_ t: TakenExtent, taken n: Int) {
        guard t.length > n else { return }
        lockExtents()
        addFreeExtent(t.start + n, length: t.length - n, punched: t.punched)
        unlockExtents()
    }

    /// Commits `entry` at the first unit of an extent: one record of one word (one fence). Call
    /// without the extent lock (in the msync domain a fence is a system call).
    func commitEntry(_ unit: Int, _ entry: UnitEntry) {
        commitWords(WordEntries((.write8, tableEntryOffset(unit), entry.raw)), lane: currentLane())
    }

    /// Records a large object [start, start+n) in the volatile index.
    func noteUsed(_ start: Int, length n: Int) { noteExtent(start, length: n, kind: .used) }

    /// Records the extent [start, start+n) of `kind` in the volatile index: its record and its
    /// boundary tags (first and last unit).
    func noteExtent(_ start: Int, length n: Int, kind: VolatileKind) {
        let i = info(start)
        i.kind = kind
        i.length = n
        startOf[start] = UInt32(start)
        startOf[start + n - 1] = UInt32(start)
    }

    /// Allocates a large object of `n` units: one record (one fence) of its entry and, when the
    /// extent is split, the remainder's. A zeroed object's zeros are flushed under the same
    /// fence (a crash before it leaves the object unallocated: nobody holds it yet), or, when a
    /// live record wrote into that space, zeroed by the record itself.
    func allocateExtent(units n: Int, zeroed: Bool) throws(PoolError) -> Int {
        let t = try takeFree(n)
        try prepareStorage(t, units: n)
        let a = t.start
        var entries = WordEntries()
        if t.length > n {
            entries.append((.write8, tableEntryOffset(a + n), UnitEntry(kind: .free, length: t.length - n).raw))
        }
        entries.append((.write8, tableEntryOffset(a), UnitEntry(kind: .used, length: n).raw))
        if zeroed {
            bytes.zero(unitOffset(a), count: n << Format.unitShift)
            if replayWouldOvertake(unitOffset(a), n << Format.unitShift) {
                entries.append((.zero, unitOffset(a), UInt64(n << Format.unitShift)))
            } else {
                persistence.flush(offset: unitOffset(a), count: n << Format.unitShift)
            }
        }
        commitWords(entries, lane: currentLane())
        lockExtents()
        settle(t)
        noteUsed(a, length: n)
        if t.length > n { addFreeExtent(a + n, length: t.length - n, punched: t.punched) }
        unlockExtents()
        return unitOffset(a)
    }

    /// Frees the large object at unit `a` (one fence). Validates it is a live large object.
    func freeExtent(unit a: Int) throws(PoolError) {
        let n = try claimExtent(a)
        commitEntry(a, UnitEntry(kind: .free, length: n))
        releaseExtent(a, length: n)
    }

    /// Claims the live large object at unit `a` for a free (its volatile kind becomes retiring:
    /// a second free of it is refused). Returns its length.
    func claimExtent(_ a: Int) throws(PoolError) -> Int {
        lockExtents()
        defer { unlockExtents() }
        let i = info(a)
        guard i.kind == .used else {
            throw PoolError(.invalidFree, "offset \(unitOffset(a)) is not a live allocation (double free?)")
        }
        i.kind = .retiring
        return i.length
    }

    /// Undoes `claimExtent` (a free that will not happen).
    func unclaimExtent(_ a: Int) {
        lockExtents()
        info(a).kind = .used
        unlockExtents()
    }

    /// After a durable free of [a, a+n): merges it into the index and, when the merged free
    /// extent is large, punches its storage out of the file — outside the extent lock, with the
    /// extent out of the index meanwhile (kind `.punching` would be the same as `.reserved`: no
    /// one may allocate or merge it while the hole is made).
    func releaseExtent(_ a: Int, length n: Int) {
        lockExtents()
        info(a).clear()
        let merged = addFreeExtent(a, length: n, punched: false)
        guard merged.length >= punchThreshold, let punchUnits else { unlockExtents(); return }
        removeFree(merged.start)
        let i = info(merged.start)
        i.kind = .reserved
        unlockExtents()
        // A live record that wrote into this space would be replayed into a hole (and could
        // find the disk full): retire such records first.
        settleForUnloggedWrite(unitOffset(merged.start), merged.length << Format.unitShift)
        punchUnits(merged.start, merged.length)
        lockExtents()
        i.clear()
        addFreeExtent(merged.start, length: merged.length, punched: true)
        unlockExtents()
    }

    // MARK: Shrink

    /// Gives the free tail of the pool back to the file system. Returns the bytes released.
    /// Under the growth lock; the tail is out of the index (no one allocates or merges it) while
    /// the header is committed and the file truncated. A segment left holding only its table is
    /// given back with it, and the tail of the segment before is tried next.
    func shrinkTail() throws(PoolError) -> Int {
        guard let shrinkFile else { return 0 }
        return try growthLock.withLock { () throws(PoolError) -> Int in
            var released = 0
            while let step = try shrinkStep(shrinkFile) {
                released += step.bytes
                if !step.droppedSegment { break }
            }
            return released
        }
    }

    /// One step of `shrinkTail`: the free extent at the end of the last segment, and that
    /// segment's table when nothing else is left in it. Nil when the tail is not free.
    private func shrinkStep(_ shrinkFile: (Int) throws(PoolError) -> Void) throws(PoolError) -> (bytes: Int, droppedSegment: Bool)? {
        lockExtents()
        let old = units
        guard old > 1 else { unlockExtents(); return nil }
        let t = Int(startOf[old - 1])
        let ti = info(t)
        guard ti.kind == .free, t + ti.length == old else { unlockExtents(); return nil }
        let k = segments.segment(of: t)
        let dropSegment = k > 0 && t == segments.dataStart(k)
        // Keep segment 0's table and one unit after it: a pool always has a heap.
        let keep = dropSegment ? segments.start(k) : max(t, segments.dataStart(0) + 1)
        guard keep < old else { unlockExtents(); return nil }
        removeFree(t)
        let punched = ti.flags & UnitFlags.punched != 0
        ti.kind = .reserved
        unlockExtents()
        if keep > t {
            // The whole heap is free: keep one unit. Split the chain at `keep` first (one record)
            // so it is valid for both the old and the new pool size.
            commitWords(WordEntries((.write8, tableEntryOffset(keep), UnitEntry(kind: .free, length: old - keep).raw), (.write8, tableEntryOffset(t), UnitEntry(kind: .free, length: keep - t).raw)), lane: currentLane())
        }
        // No live record may target the tail once the header says it is gone.
        checkpointAll()
        do throws(PoolError) {
            try shrinkFile(keep)
        } catch {
            lockExtents()
            ti.clear()
            insertFree(t, length: old - t, punched: punched)
            unlockExtents()
            throw error
        }
        lockExtents()
        units = keep
        ti.clear()
        if dropSegment {
            info(keep).clear()
        } else if keep > t {
            insertFree(t, length: keep - t, punched: punched)
        }
        unlockExtents()
        return ((old - keep) << Format.unitShift, dropSegment)
    }

    /// Growth, step 2 (between mapping the new bytes and committing the new size in the
    /// header): the new units [old, new) get their entries — a table extent at the start of each
    /// segment reached, one free extent for the rest of each segment — flushed and fenced.
    /// Beyond the old end they are ignored until the header commit.
    @_spi(Allocator) public func prewriteGrowth(from old: Int, to new: Int, header: PoolHeader) {
        Heap.writeSegmentEntries(bytes, persistence: persistence, header: header, from: old, to: new)
        persistence.drain()
    }

    /// Growth, step 4 (after the header commit; extent lock held): the new units join the
    /// volatile index — tables recorded, free extents merged with a free tail.
    func indexGrowth(from old: Int, to new: Int) {
        precondition(new > old)  // `Pool.grow` returns more units or throws
        units = new
        Heap.forEachSegmentPiece(segments, from: old, to: new) { u, entry in
            if entry.kind == .table {
                noteTable(u, length: entry.length)
            } else {
                addFreeExtent(u, length: entry.length, punched: false)
            }
        }
    }
}
