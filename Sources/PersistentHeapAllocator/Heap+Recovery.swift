// Recovery, run at every open before the volatile indexes are built:
//   1. read every lane's log from its start: the records of its current pass, each valid
//      (checksum, bounds) and newer than the one before it; keep the live ones (seq > the state
//      page's `retired`). A torn record ends its lane: its fence never completed, and nothing
//      was written after it;
//   2. replay the live records in seq order (their effects are absolute writes, zeroings and
//      bit sets/clears, so replaying an already-applied record is harmless), flushing each
//      target; fence;
//   3. retired := the highest seq found; flush; fence — every lane starts its log over.
// A crash during recovery leaves the records live: the next open replays them again.
//
// What replay overwrote is remembered (volatile), so that an open that fails afterwards — the
// unit table or the root turn out to be damaged — can put every byte back (`undoRecovery`):
// a failed open leaves the file as it found it.

@_spi(Core) import PersistentHeapCore

/// What recovery found and did.
@_spi(Allocator) public struct RecoveryReport: Sendable {
    /// Live records replayed: operations acknowledged before the crash whose effects had not
    /// all been written back by a checkpoint.
    @_spi(Allocator) public var replayedRecords = 0
    /// Bytes replay overwrote, in order: (pool offset, previous contents).
    var overwritten: [(offset: Int, bytes: [UInt8])] = []
    /// The state page's `retired` before recovery raised it (nil: not raised).
    var previousRetired: UInt64?
}

extension Heap {
    /// The live records of every lane, in seq order. Throws `corrupted` for a record whose
    /// checksum holds but whose entries target bytes outside the writable regions.
    func liveRecords(laneCount: Int, retired: UInt64) throws(PoolError) -> [LogRecord.Found] {
        var found: [LogRecord.Found] = []
        let allowed = writableRegions
        for lane in 0..<laneCount {
            let start = laneLogOffset(lane) + LaneLayout.log
            try LogRecord.forEachRecord(bytes: bytes, start: start, limit: start + LaneLayout.logSize, retired: retired, allowed: allowed) { (f) throws(PoolError) in
                if f.seq > retired { found.append(f) }
            }
        }
        found.sort { $0.seq < $1.seq }
        return found
    }

    /// Replays the live records and retires them. In read-only mode nothing is written: records
    /// whose replay would change the pool make the open fail (it needs a read-write open).
    @_spi(Allocator) public func recover(laneCount: Int, readOnly: Bool) throws(PoolError) -> RecoveryReport {
        var report = RecoveryReport()
        let retiredBefore = bytes.u64(StateField.retired)
        guard retiredBefore < Heap.maxSequence else {
            throw PoolError(.corrupted, "the state page's retired sequence number \(retiredBefore) is out of range")
        }
        let found = try liveRecords(laneCount: laneCount, retired: retiredBefore)
        let newest = max(retiredBefore, found.last?.seq ?? 0)
        guard newest < Heap.maxSequence else {
            throw PoolError(.corrupted, "a log record's sequence number \(newest) is out of range")
        }
        // New records are numbered after everything found; all of these are retired below.
        logSequence.store(newest + 1, ordering: .relaxed)
        retired.store(newest, ordering: .relaxed)
        report.replayedRecords = found.count
        if readOnly {
            if replayChangesMemory(found) {
                throw PoolError(.readOnly, "the pool was not closed cleanly and \(found.count) logged operation(s) must be written back: open it read-write once")
            }
            return report
        }
        guard !found.isEmpty else { return report }
        for f in found {
            LogRecord.forEachEntry(bytes: bytes, at: f.at, total: f.total) { e in
                guard let n = e.targetBytes else { return }
                report.overwritten.append((e.offset, bytes.read(e.offset, count: n)))
                LogRecord.perform(e, bytes: bytes)
                persistence.flush(offset: e.offset, count: n)
            }
        }
        persistence.drain()
        report.previousRetired = retiredBefore
        bytes.atomicStore(StateField.retired, newest, .releasing)
        persistence.persist(offset: StateField.retired, count: 8)
        return report
    }

    /// Sequence numbers stay below this (a hostile value must not make the counter wrap).
    static let maxSequence: UInt64 = 1 << 62

    /// Whether replaying `records` (in seq order) would change any byte (`metadataOnly`: any of
    /// the allocator's words): replay simulated on copies of the pages it touches.
    func replayChangesMemory(_ records: [LogRecord.Found], metadataOnly: Bool = false) -> Bool {
        var pages: [Int: [UInt8]] = [:]
        func load(_ p: Int) { if pages[p] == nil { pages[p] = bytes.read(p << 12, count: Format.page) } }
        func get(_ o: Int) -> UInt8 { load(o >> 12); return pages[o >> 12]![o & 4095] }
        func set(_ o: Int, _ v: UInt8) { load(o >> 12); pages[o >> 12]![o & 4095] = v }
        for f in records {
            LogRecord.forEachEntry(bytes: bytes, at: f.at, total: f.total) { e in
                guard let n = e.targetBytes, n > 0 else { return }
                // The allocator's words only: bitmaps, unit tables, extension slots — and not the
                // advisory FULL hint of a table entry, which is set and cleared outside records.
                if metadataOnly && !(e.op == .or64 || e.op == .andNot64 || (e.op == .write8 && !isUserRange(e.offset, count: 8))) { return }
                if metadataOnly && e.op == .andNot64 && e.operand == UnitEntry.fullHint { return }
                switch e.op {
                case .write8, .or64, .andNot64:
                    var old: UInt64 = 0
                    for k in 0..<8 { old |= UInt64(get(e.offset + k)) << UInt64(8 * k) }
                    var v = e.op == .write8 ? e.operand : e.op == .or64 ? old | e.operand : old & ~e.operand
                    if metadataOnly && e.op == .write8 { v = v & ~UnitEntry.fullHint | old & UnitEntry.fullHint }
                    for k in 0..<8 { set(e.offset + k, UInt8(truncatingIfNeeded: v >> UInt64(8 * k))) }
                case .writeBytes:
                    for k in 0..<n { set(e.offset + k, bytes.u8(e.dataOffset + k)) }
                case .zero:
                    for k in 0..<n { set(e.offset + k, 0) }
                case .extend:
                    break
                }
            }
        }
        for (p, copy) in pages where bytes.read(p << 12, count: Format.page) != copy { return true }
        return false
    }

    /// Puts back everything `recover` wrote: `retired` first (so that a crash during the undo
    /// leaves the records live, to be replayed by the next open), then the bytes replay
    /// overwrote, newest first.
    @_spi(Allocator) public func undoRecovery(_ report: RecoveryReport) {
        guard let previous = report.previousRetired else { return }
        bytes.atomicStore(StateField.retired, previous, .releasing)
        persistence.persist(offset: StateField.retired, count: 8)
        for (offset, old) in report.overwritten.reversed() {
            bytes.copy(old, to: offset)
            persistence.flush(offset: offset, count: old.count)
        }
        persistence.drain()
    }

    /// The pool offset of `lane`'s extension slot.
    @inline(__always) @_spi(Allocator) public func extensionSlot(_ lane: Int) -> Int { laneLogOffset(lane) + LaneLayout.extensionSlot }

    /// Whether the extension slot at `slot` points at a log extension block made for it: a live
    /// allocation whose header carries the magic bound to this slot. A stray value (one flipped
    /// bit, or the offset of some live object) is not one.
    func isExtensionBlock(_ x: Int, slot: Int) -> Bool {
        guard let loc = try? locate(x), usableSize(loc) >= LogExtensionField.header else { return false }
        return bytes.u64(x + LogExtensionField.magic) == LogExtensionField.magic(slot: slot)
    }

    /// After recovery and the walk: frees the log extension block a crash left linked from its
    /// lane. A slot holding anything else is left alone (nothing is freed on the word of a
    /// damaged slot); ``check(laneCount:rootSlot:)`` reports it.
    @_spi(Allocator) public func freeLeftoverExtensions(laneCount: Int) throws(PoolError) {
        try releaseLogExtensions(laneCount: laneCount)
    }
}
