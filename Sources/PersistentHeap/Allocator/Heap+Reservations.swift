import CPersistentHeap

// Reservations: blocks chosen now, made allocated later by a redo log (transactions), or given
// back. Nothing persistent changes for a small block until it is published. A large extent is
// split off persistently as its own FREE extent (so other threads can use the rest at once) and
// kept out of the volatile indexes.
//
// A lane's reservations are listed per lane; the runs holding them are *pinned*: the lane's
// bitmap search skips reserved bits, and a pinned run never goes to another lane.

/// Per-lane list of unpublished small-block reservations.
struct LaneReservations {
    var blocks: [BlockSlot] = []
    /// Runs pinned by these reservations (a run stays pinned until the list ends, even if its
    /// reservations were cancelled one by one).
    var pinnedRuns: [Int] = []
}

extension Heap {
    @inline(__always) func laneReservations(_ lane: Int) -> UnsafeMutablePointer<LaneReservations> {
        reservationLists + lane
    }

    /// Bits of `word` of run `r` reserved by `lane`.
    func reservedBits(run r: Int, word: Int, lane: Int) -> UInt64 {
        var bits: UInt64 = 0
        for b in laneReservations(lane).pointee.blocks where b.run == r && b.word == word { bits |= b.mask }
        return bits
    }

    /// Reserves a block of class `c` for `lane`.
    func reserveSmall(lane: Int, sizeClass c: Int) throws(PoolError) -> BlockSlot {
        let s = try reserveBlock(lane: lane, sizeClass: c)
        let list = laneReservations(lane)
        list.pointee.blocks.append(s)
        if info(s.run).flags & UnitInfo.pinnedFlag == 0 {
            info(s.run).flags |= UnitInfo.pinnedFlag
            list.pointee.pinnedRuns.append(s.run)
        }
        return s
    }

    /// Reserves `n` units for a transaction: the extent is split persistently (pre-write the
    /// remainder, fence, commit `FREE(n)` at its start, fence) and leaves the indexes.
    func reserveExtent(units n: Int) throws(PoolError) -> Int {
        lockExtents()
        defer { unlockExtents() }
        let (a, length) = try takeFree(n)
        if splitRemainder(start: a, taken: n, length: length) {
            persistence.drain()
            commitEntry(a, UnitEntry(kind: .free, length: n))
        }
        let i = info(a)
        i.kind = .reserved
        i.length = n
        startOf[a] = UInt32(a)
        startOf[a + n - 1] = UInt32(a)
        return a
    }

    /// Gives back an unpublished extent reservation.
    func cancelExtent(_ a: Int) {
        lockExtents()
        let n = info(a).length
        info(a).clear()
        addFreeExtent(a, length: n, punched: false)
        unlockExtents()
    }

    /// Volatile bookkeeping once a reserved extent was durably marked USED.
    func publishedExtent(_ a: Int) {
        lockExtents()
        noteUsed(a, length: info(a).length)
        unlockExtents()
    }

    /// Ends every small reservation of `lane`: published (their bits are now durably set) or
    /// cancelled (the blocks are free again). Unpins the runs.
    func endReservations(lane: Int, published: Bool) {
        let list = laneReservations(lane)
        guard !list.pointee.pinnedRuns.isEmpty else { return }
        if !published {
            for b in list.pointee.blocks { _ = ph_atomic_add_i32(info(b.run).freeCount, 1) }
        }
        list.pointee.blocks.removeAll(keepingCapacity: true)
        for r in list.pointee.pinnedRuns {
            let i = info(r)
            let c = i.sizeClass
            lockClass(c)
            i.flags &= ~UnitInfo.pinnedFlag
            if ph_atomic_load_i32(i.owner) == 0 && ph_atomic_load_i32(i.freeCount) > 0 && positions[r] == 0 {
                classHeaps[c].insert(UInt32(r), positions: positions)
            }
            unlockClass(c)
        }
        list.pointee.pinnedRuns.removeAll(keepingCapacity: true)
    }

    /// Cancels the small-block reservation of `lane` at pool offset `offset`, if there is one
    /// (the block is free again; its run stays pinned until the reservations end). Returns
    /// whether there was.
    func cancelSmallReservation(at offset: Int, lane: Int) -> Bool {
        let list = laneReservations(lane)
        guard let k = list.pointee.blocks.firstIndex(where: { blockOffset($0, geometry[info($0.run).sizeClass]) == offset }) else {
            return false
        }
        unreserveBlock(list.pointee.blocks.remove(at: k))
        return true
    }

    /// Appends the entries that set the bits of `blocks` (one entry per bitmap word; sorts
    /// `blocks` in place).
    func appendSetBits(_ sorted: inout [BlockSlot], to log: inout RedoLog) {
        var i = 0
        if sorted.count > 1 { sorted.sort { ($0.run, $0.word) < ($1.run, $1.word) } }
        while i < sorted.count {
            var mask = sorted[i].mask
            var j = i + 1
            while j < sorted.count && sorted[j].run == sorted[i].run && sorted[j].word == sorted[i].word {
                mask |= sorted[j].mask
                j += 1
            }
            log.append(.or64, offset: bitmapWordOffset(run: sorted[i].run, word: sorted[i].word), operand: mask)
            i = j
        }
    }
}
