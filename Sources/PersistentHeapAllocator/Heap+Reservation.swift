// The one reservation protocol: every allocation that must become durable together with other
// changes (a linked slot, a transaction's writes, several blocks at once) goes
//
//     reserve  →  fill the block  →  append its publish entries to a redo log  →  commit the log
//              →  finishPublished            (or cancel, at any point before the commit)
//
// and every such free goes prepareFree → appendFree → commit → finishFreed (or cancelFree).
// Nothing persistent changes before the log is committed: a reservation is volatile state only.
//
//   small block   reserve:  a zero bit of the lane's run is counted as taken (volatile); when the
//                           reservation is long-lived (transactions, the public API) the bit is
//                           listed, so the lane's next searches skip it, and a run the lane gives
//                           up while it holds listed reservations is pinned (no other lane takes it)
//                 publish:  or64 bitmap word |= bit
//   large object  reserve:  a free extent [a, a+L) taken out of the index, whole: its remainder
//                           [a+n, a+L) cannot be allocated by anyone until the commit, because the
//                           entry FREE(L) at a covers it until then (see Heap+Extents.swift). A
//                           long-lived reservation of a small piece of a large free extent splits
//                           it persistently first instead (one record), so the rest stays usable.
//                 publish:  [write8 table[a+n] := FREE(L−n)]  write8 table[a] := USED(n)
//   free          prepare:  locate the live allocation (invalidFree otherwise); a large object is
//                           claimed (a second free of it is refused)
//                 append:   andNot64 bitmap word &= ~bit [andNot64 FULL hint] | write8 table[a] := FREE(n)

/// Space chosen for an allocation, not yet allocated (nothing persistent changed): published by
/// the entries `Heap.appendPublish` writes into a log, or cancelled.
@_spi(Core) import PersistentHeapCore

/// What a block published by `Heap.publishLinked` holds.
@_spi(Allocator) public enum LinkedContents: Sendable {
    /// Whatever it holds (the caller promised nothing).
    case none
    /// Zeros over its usable size (replay zeroes it again).
    case zeroed
    /// Its first `n` bytes as written before the call.
    case initialized(Int)
}

@_spi(Allocator) public struct Reservation: Sendable, Equatable {
    enum Kind: Sendable, Equatable {
        case small(BlockSlot, sizeClass: Int, listed: Bool)
        /// `units` at `unit`, out of the free extent [unit, unit + extent) held out of the index.
        case large(unit: Int, units: Int, extent: Int, punched: Bool)
    }
    /// Pool offset of the block.
    @_spi(Allocator) public let offset: Int
    /// Usable bytes of the block (at least what was asked).
    @_spi(Allocator) public let usableSize: Int
    /// The lane that made it (it is published or cancelled on that lane).
    @_spi(Allocator) public let lane: Int
    let kind: Kind

    /// Log entries its publication takes.
    @_spi(Allocator) public var publishEntries: Int {
        if case .large(_, let n, let l, _) = kind { return l > n ? 2 : 1 }
        return 1
    }
}

/// A live allocation about to be freed by a log (`Heap.prepareFree`).
@_spi(Allocator) public struct FreeTarget: Sendable {
    /// Pool offset of the block.
    @_spi(Allocator) public let offset: Int
    let location: BlockLocation
}

/// Per lane: the long-lived small reservations it holds (bits its searches must skip) and the
/// runs it pinned while holding them.
///
/// The reserved bits are kept by bitmap word (`run << 8 | word`): in a short array searched
/// linearly while a lane holds few words (a transaction's handful of blocks: no hashing, and the
/// array's buffer is kept from one transaction to the next), in a dictionary past `fewLimit`.
struct LaneReservations {
    static let fewLimit = 16
    private var few: [(key: Int, bits: UInt64)] = []
    private var many: [Int: UInt64] = [:]
    /// Listed reservations held.
    var count = 0
    var pinnedRuns: [Int] = []

    /// The reserved bits of bitmap word `key`.
    @inline(__always) func bits(_ key: Int) -> UInt64 {
        for e in few where e.key == key { return e.bits }
        return many.isEmpty ? 0 : many[key] ?? 0
    }

    /// Lists one reservation: `mask` of word `key`.
    mutating func add(_ key: Int, _ mask: UInt64) {
        count += 1
        if let i = few.firstIndex(where: { $0.key == key }) { few[i].bits |= mask; return }
        if many.isEmpty && few.count < LaneReservations.fewLimit { few.append((key, mask)); return }
        if many.isEmpty { for e in few { many[e.key] = e.bits }; few.removeAll(keepingCapacity: true) }
        many[key, default: 0] |= mask
    }

    /// Unlists one reservation: `mask` of word `key`.
    mutating func remove(_ key: Int, _ mask: UInt64) {
        count -= 1
        if let i = few.firstIndex(where: { $0.key == key }) {
            let rest = few[i].bits & ~mask
            if rest == 0 { few.swapAt(i, few.count - 1); few.removeLast() } else { few[i].bits = rest }
        } else if let b = many[key] {
            let rest = b & ~mask
            many[key] = rest == 0 ? nil : rest
        }
    }

    /// Whether any listed reservation is in run `r`.
    func holds(run r: Int) -> Bool {
        few.contains { $0.key >> 8 == r } || many.keys.contains { $0 >> 8 == r }
    }
}

extension Heap {
    /// Rounds a request up to units for the extent path.
    @inline(__always) @_spi(Allocator) public static func unitsFor(_ size: Int) -> Int { (size + Format.unitSize - 1) >> Format.unitShift }

    /// Remainders at least this large are split off persistently by a long-lived reservation
    /// instead of being held out of the index until it is published.
    static let presplitUnits = 64

    // MARK: Reserving

    /// Chooses space for `size` bytes aligned to `alignment` on `lane` (volatile only). A
    /// long-lived reservation (published after other allocations of the lane) lists its block
    /// so the lane does not hand it out again, and splits large free extents persistently.
    @_spi(Allocator) public func reserve(size: Int, alignment: Int, lane: Int, longLived: Bool) throws(PoolError) -> Reservation {
        if let c = classIndex(size: size, alignment: alignment) {
            let s = try reserveBlock(lane: lane, sizeClass: c)
            if longLived {
                reservationLists[lane].add(s.run << 8 | s.word, s.mask)
            }
            return Reservation(offset: blockOffset(s, geometry[c]), usableSize: geometry[c].blockSize, lane: lane,
                               kind: .small(s, sizeClass: c, listed: longLived))
        }
        let n = Heap.unitsFor(size)
        let t = try takeFree(n)
        try prepareStorage(t, units: n)
        var extent = t.length
        if longLived && t.length - n >= Heap.presplitUnits {
            // Split persistently now (one record: the remainder's entry, the shortened entry at
            // the start): the remainder is usable by others at once.
            commitWords(WordEntries((.write8, tableEntryOffset(t.start + n), UnitEntry(kind: .free, length: t.length - n).raw), (.write8, tableEntryOffset(t.start), UnitEntry(kind: .free, length: n).raw)), lane: lane)
            indexRemainder(t, taken: n)
            extent = n
        }
        let i = info(t.start)
        lockExtents()   // a neighbour's merge reads the record at this extent's edge
        settle(t)       // a remainder not split off stays with the reservation until it is published
        i.kind = .reserved
        i.length = n
        unlockExtents()
        return Reservation(offset: unitOffset(t.start), usableSize: n << Format.unitShift, lane: lane,
                           kind: .large(unit: t.start, units: n, extent: extent, punched: t.punched))
    }

    /// Appends the entries that make `r` allocated.
    @inline(__always)
    @_spi(Allocator) public func appendPublish(_ r: Reservation, to log: inout LogRecord) {
        switch r.kind {
        case .small(let s, _, _):
            log.append(.or64, offset: bitmapWordOffset(run: s.run, word: s.word), operand: s.mask)
        case .large(let u, let n, let l, _):
            if l > n { log.append(.write8, offset: tableEntryOffset(u + n), operand: UnitEntry(kind: .free, length: l - n).raw) }
            log.append(.write8, offset: tableEntryOffset(u), operand: UnitEntry(kind: .used, length: n).raw)
        }
    }

    /// Appends the entries that publish every reservation of `rs`: small blocks sharing a bitmap
    /// word are set by one entry.
    @_spi(Allocator) public func appendPublish(_ rs: [Reservation], to log: inout LogRecord) {
        if rs.count <= Heap.fewReservations {
            // Few: one entry per distinct word, at its first occurrence (no allocation).
            for i in rs.indices {
                guard case .small(let s, _, _) = rs[i].kind else { appendPublish(rs[i], to: &log); continue }
                if Heap.sameWord(before: i, in: rs, as: s) { continue }
                var mask = s.mask
                for j in (i + 1)..<rs.count {
                    if case .small(let t, _, _) = rs[j].kind, t.run == s.run, t.word == s.word { mask |= t.mask }
                }
                log.append(.or64, offset: bitmapWordOffset(run: s.run, word: s.word), operand: mask)
            }
            return
        }
        var words: [(offset: Int, mask: UInt64)] = []
        for r in rs {
            if case .small(let s, _, _) = r.kind {
                words.append((bitmapWordOffset(run: s.run, word: s.word), s.mask))
            } else {
                appendPublish(r, to: &log)
            }
        }
        words.sort { $0.offset < $1.offset }
        var i = 0
        while i < words.count {
            var mask = words[i].mask
            var j = i + 1
            while j < words.count && words[j].offset == words[i].offset { mask |= words[j].mask; j += 1 }
            log.append(.or64, offset: words[i].offset, operand: mask)
            i = j
        }
    }

    /// Up to this many reservations are published by quadratic scans instead of a sort or a set.
    static let fewReservations = 32

    /// Whether a small reservation before index `i` of `rs` is in the bitmap word of `s`.
    @inline(__always)
    static func sameWord(before i: Int, in rs: [Reservation], as s: BlockSlot) -> Bool {
        for j in 0..<i {
            if case .small(let t, _, _) = rs[j].kind, t.run == s.run, t.word == s.word { return true }
        }
        return false
    }

    /// Entries `appendPublish(rs, to:)` writes.
    @_spi(Allocator) public func publishEntries(_ rs: [Reservation]) -> Int {
        if rs.count <= Heap.fewReservations {
            var n = 0
            for i in rs.indices {
                if case .small(let s, _, _) = rs[i].kind {
                    if !Heap.sameWord(before: i, in: rs, as: s) { n += 1 }
                } else {
                    n += rs[i].publishEntries
                }
            }
            return n
        }
        var words = Set<Int>(), n = 0
        for r in rs {
            if case .small(let s, _, _) = r.kind { words.insert(s.run << 8 | s.word) } else { n += r.publishEntries }
        }
        return n + words.count
    }

    /// Volatile bookkeeping once `r`'s publication is durable.
    @inline(__always)
    @_spi(Allocator) public func finishPublished(_ r: Reservation) {
        switch r.kind {
        case .small(let s, _, let listed):
            if listed { unlist(s, lane: r.lane) }
        case .large(let u, let n, let l, let punched):
            lockExtents()
            noteUsed(u, length: n)
            if l > n { addFreeExtent(u + n, length: l - n, punched: punched) }
            unlockExtents()
        }
    }

    /// Gives back a reservation that will not be published.
    @_spi(Allocator) public func cancel(_ r: Reservation) {
        switch r.kind {
        case .small(let s, _, let listed):
            unreserveBlock(s)
            if listed { unlist(s, lane: r.lane) }
        case .large(let u, _, let l, let punched):
            lockExtents()
            info(u).clear()
            addFreeExtent(u, length: l, punched: punched)
            unlockExtents()
        }
    }

    /// Bits of `word` of run `r` that `lane` holds listed reservations for.
    @inline(__always)
    func reservedBits(run r: Int, word: Int, lane: Int) -> UInt64 {
        reservationLists[lane].bits(r << 8 | word)
    }

    /// Whether `lane` holds listed reservations in run `r` (a run it gives up must then be pinned).
    func holdsReservations(inRun r: Int, lane: Int) -> Bool {
        guard reservationLists[lane].count > 0 else { return false }
        return reservationLists[lane].holds(run: r)
    }

    private func unlist(_ s: BlockSlot, lane: Int) {
        reservationLists[lane].remove(s.run << 8 | s.word, s.mask)
        if reservationLists[lane].count == 0 && !reservationLists[lane].pinnedRuns.isEmpty { unpinRuns(lane: lane) }
    }

    /// The lane holds no listed reservation any more: its pinned runs are unowned runs again.
    private func unpinRuns(lane: Int) {
        for r in reservationLists[lane].pinnedRuns {
            let i = info(r)
            let c = i.sizeClass
            lockClass(c)
            i.flags &= ~UnitFlags.pinned
            if i.owner == 0 && i.freeCount > 0 && positions[r] == 0 {
                classHeaps[c].insert(UInt32(r), positions: positions)
            }
            unlockClass(c)
        }
        reservationLists[lane].pinnedRuns.removeAll(keepingCapacity: true)
    }

    /// Pins run `r` that `lane` gives up while holding reservations in it. Class lock held.
    func pin(run r: Int, lane: Int) {
        info(r).flags |= UnitFlags.pinned
        reservationLists[lane].pinnedRuns.append(r)
    }

    // MARK: Freeing

    /// The live allocation at `offset`, ready to be freed by a log; a large object is claimed.
    /// - Throws: `invalidFree` when `offset` is not a live allocation.
    @_spi(Allocator) public func prepareFree(_ offset: Int) throws(PoolError) -> FreeTarget {
        let loc = try locate(offset)
        if case .large(let u) = loc { _ = try claimExtent(u) }
        return FreeTarget(offset: offset, location: loc)
    }

    /// Appends the entries that free `f`.
    @inline(__always)
    @_spi(Allocator) public func appendFree(_ f: FreeTarget, to log: inout LogRecord) {
        switch f.location {
        case .small(let r, _, let w, let mask):
            log.append(.andNot64, offset: bitmapWordOffset(run: r, word: w), operand: mask)
            if tableEntry(r).isHintedFull && log.remaining >= 16 {
                log.append(.andNot64, offset: tableEntryOffset(r), operand: UnitEntry.fullHint)
            }
        case .large(let u):
            log.append(.write8, offset: tableEntryOffset(u), operand: UnitEntry(kind: .free, length: info(u).length).raw)
        }
    }

    /// Log bytes `appendFree` may take (a small block's FULL hint adds an entry).
    @_spi(Allocator) public static let freeEntryBytes = 32

    /// Volatile bookkeeping after `f` was durably freed.
    @_spi(Allocator) public func finishFreed(_ f: FreeTarget) {
        switch f.location {
        case .small(let r, let c, let w, _):
            noteFreed(run: r, sizeClass: c, word: w)
        case .large(let u):
            releaseExtent(u, length: info(u).length)
        }
    }

    /// Undoes `prepareFree` (the free will not happen).
    @_spi(Allocator) public func cancelFree(_ f: FreeTarget) {
        if case .large(let u) = f.location { unclaimExtent(u) }
    }

    /// Usable bytes of a located allocation.
    func usableSize(_ loc: BlockLocation) -> Int {
        switch loc {
        case .small(_, let c, _, _): return geometry[c].blockSize
        case .large(let u): return info(u).length << Format.unitShift
        }
    }

    /// Usable bytes of the live allocation at `offset`.
    /// - Throws: `invalidFree` when it is not one.
    @_spi(Allocator) public func usableSize(at offset: Int) throws(PoolError) -> Int { usableSize(try locate(offset)) }

    // MARK: Linked publication (one block and one slot, atomically)

    /// Publishes `r` and stores its offset in `slot` with one record (one fence): `slot := offset`,
    /// the reservation's entries, and what the block must hold once published — its first
    /// `initialized` bytes as they are now (in the record when small; made durable by a fence of
    /// their own first when large), or zeros over its usable size. `slot` must be valid
    /// (`validateSlot` for the application's slots). `freeing`, when given, is freed by the same
    /// record (reallocate-and-relink). On failure both are given back.
    @_spi(Allocator) public func publishLinked(_ r: Reservation, slot: Int, contents: LinkedContents,
                                               freeing: FreeTarget? = nil, lane: Int) throws(PoolError) {
        var payload = 16 * (1 + r.publishEntries) + (freeing == nil ? 0 : Heap.freeEntryBytes)
        switch contents {
        case .none: break
        case .zeroed: payload += 16
        case .initialized(let n):
            if n <= copyLimit {
                payload += LogRecord.bytesEntrySize(n)
            } else {
                // Too large to carry: durable before the record can exist.
                settleForUnloggedWrite(r.offset, n)
                persistence.persist(offset: r.offset, count: n)
            }
        }
        var log: LogRecord
        do throws(PoolError) {
            log = try record(lane: lane, payload: payload, oneLine: payload <= Heap.lineRecordPayload)
        } catch {
            cancel(r)
            if let freeing { cancelFree(freeing) }
            throw error
        }
        log.append(.write8, offset: slot, operand: UInt64(r.offset))
        appendPublish(r, to: &log)
        if let freeing { appendFree(freeing, to: &log) }
        switch contents {
        case .none: break
        case .zeroed: log.append(.zero, offset: r.offset, operand: UInt64(r.usableSize))
        case .initialized(let n): if n <= copyLimit { log.appendCopy(offset: r.offset, count: n) }
        }
        commit(&log, lane: lane)
        if let freeing { finishFreed(freeing) }
        finishPublished(r)
    }

    /// Frees what `slot` points at and clears the slot with one record. A null slot is a no-op.
    /// The slot's value is untrusted: `prepareFree` refuses anything but a live allocation.
    @_spi(Allocator) public func freeLinked(slot: Int, lane: Int) throws(PoolError) {
        let x = Int(truncatingIfNeeded: bytes.atomicLoad(slot, .acquiring))
        guard x != 0 else { return }
        let f = try prepareFree(x)
        var log = lineRecord(lane: lane)
        log.append(.write8, offset: slot, operand: 0)
        appendFree(f, to: &log)
        commit(&log, lane: lane)
        finishFreed(f)
    }

    /// Checks that `slot`, given by the application, can hold a persistent pointer written by
    /// a linked operation: 8-byte aligned, in the heap (not in a run's header or bitmap) or the
    /// root slot. The headers, the state page and the lanes are refused.
    @inline(__always)
    @_spi(Allocator) public func validateSlot(_ slot: Int) throws(PoolError) {
        guard slot & 7 == 0, slot == StateField.rootSlot || (inHeap(slot, 8) && !isRunMetadata(slot)) else {
            throw PoolError(.invalidPointer, "slot offset \(slot) is not an 8-byte aligned location in an object of the heap or the root slot")
        }
    }
}

// MARK: Plain allocation (one fence each: not atomic with anything else)

extension Heap {
    /// Allocates `size` bytes: durable when it returns (one fence), not linked anywhere.
    public func allocate(size: Int, alignment: Int, zeroed: Bool) throws(PoolError) -> Int {
        if let c = classIndex(size: size, alignment: alignment) { return try allocateSmall(sizeClass: c, zeroed: zeroed) }
        return try allocateExtent(units: Heap.unitsFor(size), zeroed: zeroed)
    }

    /// Frees the live allocation at `offset` (one fence).
    /// - Throws: `invalidFree` when it is not one.
    public func free(_ offset: Int) throws(PoolError) {
        switch try locate(offset) {
        case .small(let r, let c, let w, let mask): try freeSmall(run: r, sizeClass: c, word: w, mask: mask)
        case .large(let u): try freeExtent(unit: u)
        }
    }

    /// Whether `offset` is the start of a live allocation.
    @_spi(Allocator) public func isAllocated(_ offset: Int) -> Bool { (try? locate(offset)) != nil }

    /// Gives the free tail back to the file system after dissolving the empty runs (the calling
    /// thread's runs included). Returns the bytes released.
    @_spi(Allocator) public func shrink() throws(PoolError) -> Int {
        releaseLaneRuns(currentLane())
        dissolveEmptyRuns()
        return try shrinkTail()
    }
}
