import CPersistentHeap

// Extents: runs of whole units, free or holding one large object or one run of small blocks.
//
// Free extents are indexed by binary heaps, one per size bucket (lengths 1…32 exactly, then
// one bucket per power of two), each ordered by address. A request takes, among the buckets
// that can satisfy it, the free extent with the lowest address: low addresses are reused first,
// so the pool's tail stays free and `shrink()` can give it back.
//
// The persistent side (the unit table) is changed with single-word commits:
//   allocate n units from a free extent [a, a+L):
//     1. if L > n: write table[a+n] = FREE(L-n)   (an interior entry: harmless if it lands early)
//        flush, fence
//     2. write table[a] = USED(n) or RUN(c, n); flush, fence   ← the commit point
//   free [a, a+n):  write table[a] = FREE(n); flush, fence    ← one word
// Adjacent persistent FREE extents are merged only in the volatile index; the walk at open
// merges them again.

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
        i.flags = punched ? UnitInfo.punchedFlag : 0
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
    /// Returns the merged extent.
    @discardableResult
    func addFreeExtent(_ start: Int, length: Int, punched: Bool) -> (start: Int, length: Int) {
        var s = start, n = length, allPunched = punched
        if s > 0 {
            let left = Int(startOf[s - 1])
            let li = info(left)
            if left < s && li.kind == .free && left + li.length == s {
                removeFree(left)
                allPunched = allPunched && li.flags & UnitInfo.punchedFlag != 0
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
                allPunched = allPunched && ri.flags & UnitInfo.punchedFlag != 0
                n += ri.length
                ri.clear()
            }
        }
        insertFree(s, length: n, punched: allPunched)
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

    /// Takes `n` units: finds a free extent (growing the pool when allowed), removes it from the
    /// index and reserves file storage if it was punched. Extent lock held. Returns the start and
    /// the length of the whole free extent taken (the caller splits).
    func takeFree(_ n: Int) throws(PoolError) -> (start: Int, length: Int) {
        var found = findFree(n)
        if found == nil, let growFile {
            // Grow by enough for the request even if the tail is partly free already.
            let tailFree: Int = {
                guard units > 0 else { return 0 }
                let t = Int(startOf[units - 1]); let ti = info(t)
                return ti.kind == .free && t + ti.length == units ? ti.length : 0
            }()
            let old = units
            // The pool maps the new bytes, calls `prewriteGrowth`, then commits the new size.
            let newUnits = try growFile(n - tailFree)
            precondition(newUnits > old)  // `Pool.grow` returns more units or throws
            units = newUnits
            addFreeExtent(old, length: newUnits - old, punched: false)
            found = findFree(n)
        }
        guard let start = found else {
            throw PoolError(.outOfSpace, "no free extent of \(n) units (\(n << Format.unitShift) bytes) and the pool cannot grow")
        }
        let i = info(start)
        let length = i.length
        let punched = i.flags & UnitInfo.punchedFlag != 0
        removeFree(start)
        if punched, let reserveUnits {
            do throws(PoolError) {
                try reserveUnits(start, n)
            } catch {
                insertFree(start, length: length, punched: true)
                throw PoolError(.outOfSpace, "cannot reserve file space for \(n) units: \(error.message)", errno: error.errno)
            }
        }
        i.clear()
        return (start, length)
    }

    /// Writes the split remainder's entry (step 1 of an extent allocation) and indexes it.
    /// Returns true when a pre-write was made (it needs a fence before the commit).
    func splitRemainder(start: Int, taken n: Int, length: Int, punched: Bool = false) -> Bool {
        guard length > n else { return false }
        let rem = start + n
        bytes.setU64(tableEntryOffset(rem), UnitEntry(kind: .free, length: length - n).raw)
        persistence.flush(bytes.pointer(tableEntryOffset(rem)), count: 8)
        insertFree(rem, length: length - n, punched: punched)
        return true
    }

    /// Commits `entry` at the first unit of an extent: one atomic word, flushed and fenced.
    func commitEntry(_ unit: Int, _ entry: UnitEntry) {
        bytes.atomicStore(tableEntryOffset(unit), entry.raw)
        persistence.persist(bytes.pointer(tableEntryOffset(unit)), count: 8)
    }

    /// Records a large object [start, start+n) in the volatile index.
    func noteUsed(_ start: Int, length n: Int) {
        let i = info(start)
        i.kind = .used
        i.length = n
        startOf[start] = UInt32(start)
        startOf[start + n - 1] = UInt32(start)
    }

    /// Allocates a large object of `n` units (two fences when split, one otherwise).
    func allocateExtent(units n: Int, zeroed: Bool) throws(PoolError) -> Int {
        lockExtents()
        defer { unlockExtents() }
        let (a, length) = try takeFree(n)
        if zeroed {
            bytes.pointer(unitOffset(a)).initializeMemory(as: UInt8.self, repeating: 0, count: n << Format.unitShift)
            persistence.flush(bytes.pointer(unitOffset(a)), count: n << Format.unitShift)
        }
        if splitRemainder(start: a, taken: n, length: length) || zeroed { persistence.drain() }
        commitEntry(a, UnitEntry(kind: .used, length: n))
        noteUsed(a, length: n)
        return unitOffset(a)
    }

    /// Frees the large object at unit `a` (one fence). Validates it is a live large object.
    func freeExtent(unit a: Int) throws(PoolError) {
        lockExtents()
        defer { unlockExtents() }
        let i = info(a)
        guard i.kind == .used else {
            throw PoolError(.invalidFree, "offset \(unitOffset(a)) is not a live allocation (double free?)")
        }
        let n = i.length
        commitEntry(a, UnitEntry(kind: .free, length: n))
        i.clear()
        releaseExtentVolatile(a, length: n)
    }

    /// After a persistent free of [a, a+n): merge into the index and punch large extents.
    func releaseExtentVolatile(_ a: Int, length n: Int) {
        let merged = addFreeExtent(a, length: n, punched: false)
        if merged.length >= punchThreshold, let punchUnits {
            punchUnits(merged.start, merged.length)
            info(merged.start).flags |= UnitInfo.punchedFlag
        }
    }

    // MARK: Shrink

    /// Gives the free tail of the pool back to the file system. Returns the bytes released.
    func shrinkTail() throws(PoolError) -> Int {
        lockExtents()
        defer { unlockExtents() }
        guard let shrinkFile, units > 1 else { return 0 }
        let t = Int(startOf[units - 1])
        let ti = info(t)
        guard ti.kind == .free, t + ti.length == units else { return 0 }
        let keep = max(t, 1)
        guard keep < units else { return 0 }
        let old = units
        removeFree(t)
        let punched = ti.flags & UnitInfo.punchedFlag != 0
        ti.clear()
        if keep > t {
            // The whole heap is free: keep one unit. Split the chain at `keep` first (pre-write,
            // fence, commit) so it is valid for both the old and the new pool size.
            bytes.setU64(tableEntryOffset(keep), UnitEntry(kind: .free, length: old - keep).raw)
            persistence.persist(bytes.pointer(tableEntryOffset(keep)), count: 8)
            commitEntry(t, UnitEntry(kind: .free, length: keep - t))
            insertFree(t, length: keep - t, punched: punched)
        }
        do throws(PoolError) {
            try shrinkFile(keep)
        } catch {
            if keep > t { removeFree(t); info(t).clear() }
            insertFree(t, length: old - t, punched: punched)
            throw error
        }
        units = keep
        return (old - keep) << Format.unitShift
    }

    /// Growth, step 2 (between mapping the new bytes and committing the new size in the
    /// header): the new units [old, new) become one free extent in the unit table. Beyond the
    /// old end, the entry is ignored until the header commit.
    func prewriteGrowth(from old: Int, to new: Int) {
        bytes.setU64(tableEntryOffset(old), UnitEntry(kind: .free, length: new - old).raw)
        persistence.persist(bytes.pointer(tableEntryOffset(old)), count: 8)
    }

    /// Length in units of the largest free extent. O(free extents).
    var largestFreeExtent: Int {
        var best = 0
        for b in 0..<Heap.bucketCount where bucketNonEmpty(b) {
            for k in 0..<buckets[b].count { best = max(best, info(Int(buckets[b][k])).length) }
        }
        return best
    }
}
