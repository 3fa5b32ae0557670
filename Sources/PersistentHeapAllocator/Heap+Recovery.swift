// Recovery, run at every open before the volatile indexes are built:
//   1. read every lane's log; keep those whose checksum holds (a torn log never completed
//      fence 1, so its operation never started to change anything);
//   2. replay them in `seq` order (their effects are absolute writes and bit sets/clears, so
//      replaying an already-applied log is harmless); flush, fence;
//   3. retire every lane (seq := 0); flush, fence.
// A crash during recovery leaves the logs valid: the next open replays them again.
//
// What replay overwrote is remembered (volatile), so that an open that fails afterwards — the
// unit table or the root turn out to be damaged — can put every byte back (`undoRecovery`):
// a failed open leaves the file as it found it.

/// What recovery found and did.
@_spi(Core) import PersistentHeapCore

@_spi(Allocator) public struct RecoveryReport: Sendable {
    /// Of the valid logs, those whose effects were not all in place yet.
    @_spi(Allocator) public var incompleteLogs = 0
    /// Bytes replay overwrote, in order: (pool offset, previous contents).
    var overwritten: [(offset: Int, bytes: [UInt8])] = []
    /// Log headers recovery retired: (pool offset, previous sequence number).
    var retired: [(offset: Int, seq: UInt64)] = []
}

extension Heap {
    /// Replays and retires the lane logs. In read-only mode nothing is written: a log whose
    /// effects are not all in place makes the open fail (the pool needs a read-write open).
    @_spi(Allocator) public func recover(laneCount: Int, readOnly: Bool) throws(PoolError) -> RecoveryReport {
        var report = RecoveryReport()
        var found: [RedoLog.Found] = []
        let allowed = writableRegions
        try forEachLog(laneCount: laneCount) { (at, size) throws(PoolError) in
            if let f = try RedoLog.validate(bytes: bytes, logOffset: at, size: size, allowed: allowed) { found.append(f) }
        }
        found.sort { $0.seq < $1.seq }
        for f in found {
            var complete = true
            RedoLog.forEachEntry(bytes: bytes, logOffset: f.logOffset, total: f.total) { e in
                if !RedoLog.isApplied(e, bytes: bytes) { complete = false }
            }
            if !complete { report.incompleteLogs += 1 }
        }
        if readOnly {
            if report.incompleteLogs > 0 {
                throw PoolError(.readOnly, "the pool was not closed cleanly and \(report.incompleteLogs) interrupted operation(s) must be finished: open it read-write once")
            }
            return report
        }
        for f in found {
            RedoLog.forEachEntry(bytes: bytes, logOffset: f.logOffset, total: f.total) { e in
                if let n = e.targetBytes { report.overwritten.append((e.offset, bytes.read(e.offset, count: n))) }
                RedoLog.perform(e, bytes: bytes, persistence: persistence)
            }
        }
        if !found.isEmpty { persistence.drain() }
        try forEachLog(laneCount: laneCount) { (at, _) throws(PoolError) in
            let seq = bytes.u64(at + LogField.seq)
            guard seq != 0 else { return }
            report.retired.append((at, seq))
            bytes.atomicStore(at + LogField.seq, 0, .releasing)
            persistence.flush(offset: at, count: 8)
        }
        if !report.retired.isEmpty { persistence.drain() }
        return report
    }

    /// Puts back everything `recover` wrote: the logs' sequence numbers first (so that a crash
    /// during the undo leaves them valid, to be replayed by the next open), then the bytes
    /// replay overwrote, newest first.
    @_spi(Allocator) public func undoRecovery(_ report: RecoveryReport) {
        guard !report.retired.isEmpty || !report.overwritten.isEmpty else { return }
        for (at, seq) in report.retired {
            bytes.atomicStore(at + LogField.seq, seq, .releasing)
            persistence.flush(offset: at, count: 8)
        }
        persistence.drain()
        for (offset, previous) in report.overwritten.reversed() {
            bytes.copy(previous, to: offset)
            persistence.flush(offset: offset, count: previous.count)
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

    /// After recovery and the walk: frees the log extension block a crashed transaction may
    /// have left linked from its lane. A slot holding anything else is left alone (nothing is
    /// freed on the word of a damaged slot); ``check(laneCount:rootSlot:)`` reports it.
    @_spi(Allocator) public func freeLeftoverExtensions(laneCount: Int) throws(PoolError) {
        for lane in 0..<laneCount {
            let slot = extensionSlot(lane)
            let x = Int(truncatingIfNeeded: bytes.u64(slot))
            guard x != 0, isExtensionBlock(x, slot: slot) else { continue }
            try freeLinked(slot: slot, lane: currentLane())
        }
    }
}
