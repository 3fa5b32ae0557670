// Recovery, run at every open before the volatile indexes are built:
//   1. read every lane's log; keep those whose checksum holds (a torn log never completed
//      fence 1, so its operation never started to change anything);
//   2. replay them in `seq` order (their effects are absolute writes and bit sets/clears, so
//      replaying an already-applied log is harmless); flush, fence;
//   3. retire every lane (seq := 0); flush, fence.
// A crash during recovery leaves the logs valid: the next open replays them again.

/// What recovery found and did.
struct RecoveryReport: Sendable {
    /// Logs whose checksum held (replayed unless read-only).
    var validLogs = 0
    /// Of those, logs whose effects were not all in place yet.
    var incompleteLogs = 0
}

extension Heap {
    /// Replays and retires the lane logs. In read-only mode nothing is written: a log whose
    /// effects are not all in place makes the open fail (the pool needs a read-write open).
    func recover(laneCount: Int, readOnly: Bool) throws(PoolError) -> RecoveryReport {
        var report = RecoveryReport()
        var found: [RedoLog.Found] = []
        let allowed = writableRegions
        try forEachLog(laneCount: laneCount) { (at, size) throws(PoolError) in
            if let f = try RedoLog.validate(bytes: bytes, lane: at, size: size, allowed: allowed) { found.append(f) }
        }
        found.sort { $0.seq < $1.seq }
        report.validLogs = found.count
        for f in found {
            var complete = true
            RedoLog.forEachEntry(bytes: bytes, lane: f.lane, total: f.total) { e in
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
            RedoLog.forEachEntry(bytes: bytes, lane: f.lane, total: f.total) { e in
                RedoLog.perform(e, bytes: bytes, persistence: persistence)
            }
        }
        if !found.isEmpty { persistence.drain() }
        var retired = false
        try forEachLog(laneCount: laneCount) { (at, _) throws(PoolError) in
            guard bytes.u64(at + LogField.seq) != 0 else { return }
            bytes.atomicStore(at + LogField.seq, 0)
            persistence.flush(bytes.pointer(at), count: 8)
            retired = true
        }
        if retired { persistence.drain() }
        return report
    }

    /// After recovery and the walk: frees the log extension block a crashed transaction may
    /// have left linked from its lane (an invalid value is cleared).
    func freeLeftoverExtensions(laneCount: Int) throws(PoolError) {
        for lane in 0..<laneCount {
            let slot = laneLogOffset(lane) + LaneLayout.extensionSlot
            let x = Int(bytes.u64(slot))
            guard x != 0 else { continue }
            if (try? locate(x)) != nil {
                try freeLinked(slot: slot)
            } else {
                bytes.atomicStore(slot, 0)
                persistence.persist(bytes.pointer(slot), count: 8)
            }
        }
    }
}
