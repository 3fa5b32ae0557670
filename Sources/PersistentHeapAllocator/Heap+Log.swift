// The lanes' logs: one fence per durable operation (docs/ARCHITECTURE.md §5.6).
//
//   commit     seq := next · write the record, flush its lines · FENCE · apply in place (no flush)
//              · note the ranges it changed (the lane's dirty list, the write filter)
//   checkpoint (when a lane's log is full, before a shrink or a hole punch, at close, on demand)
//              S := the highest seq below every record still in flight · flush every noted range
//              · FENCE · state.retired := S, flush · FENCE · every lane may start its log over
//   recovery   replay every record with seq > retired, in seq order (Heap+Recovery.swift)
//
// A lane's log is written only by the lane's thread; a record is immutable from its fence until
// the lane starts over, which it does only once a durable checkpoint retired all its records.
// Checkpoints are global (one lock): records of different lanes may change the same word (a
// block allocated on one lane, freed on another), and replay must see them in seq order, so no
// lane may retire a record while an older one of another lane is live.

@_spi(Core) import PersistentHeapCore

/// A lane's place in its logs (volatile; the lane's thread only).
struct LaneLogState {
    /// Bytes of the lane's log used by this pass.
    var position = 0
    /// Bytes of the lane's extension block used by this pass.
    var extensionPosition = 0
    /// The highest seq this lane wrote in this pass (0: none).
    var lastSeq: UInt64 = 0
}

/// Ranges changed by the lanes' applied records since the last checkpoint took them: per lane,
/// `capacity` (offset, count) pairs in one fixed buffer — no allocation on the commit path —
/// and, for a record with more entries than that (a large transaction), an overflow array.
/// A lane's part changes under its lock in `Heap.laneLocks` (its thread appends, a checkpoint
/// empties it). The lane's thread also reads its count without the lock, to decide whether a
/// record fits: `counts` is accessed atomically (relaxed) — another thread only ever lowers it
/// (to 0), so a count read as low enough stays low enough.
final class DirtyRanges: @unchecked Sendable {
    static let capacity = 256
    let pairs: FixedArray<Int>
    let counts: FixedArray<UInt64>
    let overflow: FixedArray<[(offset: Int, count: Int)]>

    init(lanes: Int) {
        pairs = .allocate(count: lanes * DirtyRanges.capacity * 2, repeating: 0)
        counts = .allocate(count: lanes, repeating: 0)
        overflow = .allocate(count: lanes, repeating: [])
    }

    deinit {
        pairs.deallocate()
        counts.deallocate()
        overflow.deallocate()
    }

    /// The number of ranges `lane` holds in its fixed buffer (any thread; see the type's comment).
    @inline(__always)
    func count(_ lane: Int) -> Int { Int(truncatingIfNeeded: counts.atomicLoad(lane, .relaxed)) }

    /// Notes `[offset, offset+count)` for `lane` (its lock held).
    @inline(__always)
    func append(_ lane: Int, _ offset: Int, _ count: Int) {
        let n = self.count(lane)
        if n < DirtyRanges.capacity {
            let at = (lane * DirtyRanges.capacity + n) * 2
            pairs[at] = offset
            pairs[at + 1] = count
            counts.atomicStore(lane, UInt64(truncatingIfNeeded: n + 1), .relaxed)
        } else {
            overflow[lane].append((offset, count))
        }
    }

    /// Moves `lane`'s ranges into `out` and empties it (its lock held).
    func take(_ lane: Int, into out: inout [(offset: Int, count: Int)]) {
        let n = count(lane)
        for i in 0..<n {
            let at = (lane * DirtyRanges.capacity + i) * 2
            out.append((pairs[at], pairs[at + 1]))
        }
        counts.atomicStore(lane, 0, .relaxed)
        if !overflow[lane].isEmpty {
            out.append(contentsOf: overflow[lane])
            overflow[lane].removeAll(keepingCapacity: false)
        }
    }
}

extension Heap {
    /// Payload bytes a one-line record holds (three entries).
    @_spi(Allocator) public static let lineRecordPayload = LogRecord.lineEntries * 16

    /// Every record with a seq at most this one is retired, durably (volatile copy of the state
    /// page's `retired`, raised only after it is durable).
    @inline(__always) var retiredSeq: UInt64 { retired.load(ordering: .acquiring) }

    // MARK: Placing and committing records

    /// A record of `lane` with room for `payload` bytes of entries, placed in the lane's log (or,
    /// beyond the lane's size, continued in its extension block). Starts the lane over when a
    /// checkpoint retired its records; checkpoints first when the log is full.
    /// `oneLine`: at most three 16-byte entries, built in registers and written as one line.
    @inline(__always)
    @_spi(Allocator) public func record(lane: Int, payload: Int, oneLine: Bool = false) throws(PoolError) -> LogRecord {
        let base = laneLogOffset(lane) + LaneLayout.log
        let last = laneLogs[lane].lastSeq
        if last != 0 && last <= retiredSeq { laneLogs[lane] = LaneLogState() }
        if LogField.payload + payload <= LaneLayout.logSize - laneLogs[lane].position
            && dirty.count(lane) + payload / 16 + 1 <= DirtyRanges.capacity {
            let p = laneLogs[lane].position
            return LogRecord(bytes: bytes, at: base + p, inlineCapacity: LaneLayout.logSize - p - LogField.payload, oneLine: oneLine)
        }
        return try recordSlow(lane: lane, payload: payload)
    }

    @inline(never)
    private func recordSlow(lane: Int, payload: Int) throws(PoolError) -> LogRecord {
        let base = laneLogOffset(lane) + LaneLayout.log
        if dirty.count(lane) + payload / 16 + 1 > DirtyRanges.capacity && laneLogs[lane].lastSeq > retiredSeq {
            // The lane's list of changed ranges is full: retire what it holds (a record with
            // more entries than the list takes goes to its overflow).
            checkpoint(through: laneLogs[lane].lastSeq)
            laneLogs[lane] = LaneLogState()
        }
        if LogField.payload + payload <= LaneLayout.logSize {
            // Fits an empty lane: retire what the lane holds and start over.
            checkpoint(through: laneLogs[lane].lastSeq)
            laneLogs[lane] = LaneLogState()
            return LogRecord(bytes: bytes, at: base, inlineCapacity: LaneLayout.logSize - LogField.payload, oneLine: false)
        }
        // Larger than the lane: a header and a jump in the lane's log, the entries in the
        // extension block (kept from one large record to the next, replaced by a larger one).
        var ext = try logExtension(lane: lane, payload: payload)
        if LogField.payload + 16 > LaneLayout.logSize - laneLogs[lane].position
            || payload > ext.capacity - laneLogs[lane].extensionPosition {
            checkpoint(through: laneLogs[lane].lastSeq)
            laneLogs[lane] = LaneLogState()
            // A block that holds only one record of this size would checkpoint at every one.
            ext = try logExtension(lane: lane, payload: payload, roomy: true)
        }
        let s = laneLogs[lane]
        var r = LogRecord(bytes: bytes, at: base + s.position, inlineCapacity: LaneLayout.logSize - s.position - LogField.payload, oneLine: false)
        r.extend(to: ext.offset + s.extensionPosition, capacity: ext.capacity - s.extensionPosition)
        return r
    }

    /// Commits `r`: seq, checksum, flush, **one fence** (the commit point), then the entries are
    /// applied in place without a flush and the ranges they changed are noted for the next
    /// checkpoint and for the write filter.
    @inline(__always)
    @_spi(Allocator) public func commit(_ r: inout LogRecord, lane: Int) {
        // In flight from here until applied: a checkpoint retires nothing at or above `floor`.
        // (Sequentially consistent store, then the seq's read-modify-write: see `checkpoint`.)
        let floor = logSequence.load(ordering: .sequentiallyConsistent)
        inflight.sequentiallyConsistentStore(lane, floor)
        let seq = logSequence.add(1, ordering: .sequentiallyConsistent).oldValue
        r.seal(seq: seq, persistence: persistence)
        persistence.drain()
        laneLocks.lock(lane)
        r.apply { [dirty, filter] o, n in
            dirty.append(lane, o, n)
            filter.note(o, n, seq: seq)
        }
        filter.noteRecord(seq: seq)
        laneLocks.unlock(lane)
        inflight.atomicStore(lane, 0, .releasing)
        laneLogs[lane].position += r.inlineLength
        laneLogs[lane].extensionPosition += r.extensionLength
        laneLogs[lane].lastSeq = seq
    }

    /// A one-line record of `lane` (three entries at most): it never needs the extension block,
    /// so placing it cannot fail.
    @inline(__always)
    @_spi(Allocator) public func lineRecord(lane: Int) -> LogRecord {
        let base = laneLogOffset(lane) + LaneLayout.log
        let last = laneLogs[lane].lastSeq
        if last != 0 && last <= retiredSeq { laneLogs[lane] = LaneLogState() }
        if LogField.payload + Heap.lineRecordPayload > LaneLayout.logSize - laneLogs[lane].position
            || dirty.count(lane) + LogRecord.lineEntries > DirtyRanges.capacity {
            checkpoint(through: laneLogs[lane].lastSeq)
            laneLogs[lane] = LaneLogState()
        }
        let p = laneLogs[lane].position
        return LogRecord(bytes: bytes, at: base + p, inlineCapacity: LaneLayout.logSize - p - LogField.payload, oneLine: true)
    }

    /// Whether a write of `[offset, offset+count)` made outside the lanes' logs would be undone
    /// by the replay of a live record — after retiring the calling lane's records first if its
    /// log is full (the record this write would otherwise become would checkpoint anyway, and
    /// being newer than that checkpoint it would keep the next plain operation logged too).
    @inline(__always)
    @_spi(Allocator) public func mustLog(_ offset: Int, _ count: Int, lane: Int) -> Bool {
        guard replayWouldOvertake(offset, count) else { return false }
        if LogField.payload + Heap.lineRecordPayload > LaneLayout.logSize - laneLogs[lane].position {
            checkpoint(through: laneLogs[lane].lastSeq)
            laneLogs[lane] = LaneLogState()
            return replayWouldOvertake(offset, count)
        }
        return true
    }

    /// A one-line record of up to three 8-byte entries `(op, offset, operand)`, committed (one
    /// fence): what most allocator operations need.
    @_spi(Allocator) public func commitWords(_ entries: WordEntries, lane: Int) {
        var r = lineRecord(lane: lane)
        for i in 0..<entries.count {
            let (op, o, v) = entries[i]
            r.append(op, offset: o, operand: v)
        }
        commit(&r, lane: lane)
    }

    // MARK: Checkpoints

    /// Retires every record with a seq at most `needed` (and as many more as are complete): waits
    /// for records still in flight below it, writes back every range the retired records changed,
    /// fences, and makes the new `retired` durable (a second fence). Two fences whatever the
    /// number of records; each changed line is flushed once.
    @_spi(Allocator) public func checkpoint(through needed: UInt64) {
        checkpointLock.withLock {
            guard needed > retiredSeq else { return }
            // S: below every record in flight. A lane publishes a lower bound of its seq before
            // taking it (sequentially consistent store, then the read-modify-write); this thread
            // reads the counter, then the bounds: a lane not seen in flight takes a seq above S.
            var s: UInt64 = 0
            while true {
                s = logSequence.load(ordering: .sequentiallyConsistent) - 1
                for l in 0..<lanes.highWater {
                    let floor = inflight.atomicLoad(l, .sequentiallyConsistent)
                    if floor != 0 && floor <= s { s = floor - 1 }
                }
                if s >= needed { break }
                ThreadContext.yield()  // a record below `needed` is being applied right now
            }
            guard s > retiredSeq else { return }
            // The ranges are gathered into a buffer kept across checkpoints (checkpoint lock
            // held): no allocation once it has grown to the usual size.
            var all = checkpointRanges
            checkpointRanges = []
            all.removeAll(keepingCapacity: true)
            for l in 0..<lanes.highWater {
                laneLocks.lock(l)
                dirty.take(l, into: &all)
                laneLocks.unlock(l)
            }
            flushRanges(all)
            checkpointRanges = all
            persistence.drain()
            bytes.atomicStore(StateField.retired, s, .releasing)
            persistence.persist(offset: StateField.retired, count: 8)
            retired.store(s, ordering: .releasing)
            persistence.countCheckpoint(fences: 2)
        }
    }

    /// Retires every committed record (close, shrink, an explicit checkpoint).
    @_spi(Allocator) public func checkpointAll() {
        checkpoint(through: logSequence.load(ordering: .sequentiallyConsistent) - 1)
    }

    /// Flushes each cache line covered by `ranges` once (a line changed by many records is
    /// written back once): lines already flushed in this checkpoint are remembered in
    /// `flushedLines`, a small open-addressing set of (epoch << 40 | line + 1) keys — a new epoch
    /// per checkpoint empties it without clearing it (cleared only when the epoch wraps).
    /// Checkpoint lock held. Ranges of more than 64 lines are flushed whole.
    private func flushRanges(_ ranges: [(offset: Int, count: Int)]) {
        let slots = flushedLines.count
        flushEpoch = flushEpoch &+ 1 & 0xf_ffff
        if flushEpoch == 0 {
            for i in 0..<slots { flushedLines[i] = 0 }
            flushEpoch = 1
        }
        let epoch = UInt64(flushEpoch) << 40
        var used = 0
        for r in ranges {
            let first = r.offset >> 6, last = (r.offset + r.count - 1) >> 6
            if last - first >= 64 {
                persistence.flush(offset: first << 6, count: (last - first + 1) << 6)
                continue
            }
            var line = first
            while line <= last {
                let key = epoch | UInt64(line + 1)
                var h = Int(truncatingIfNeeded: (UInt64(line) &* 0x9E37_79B9_7F4A_7C15) >> 52) & (slots - 1)
                var seen = false
                // A slot of an older epoch is free.
                while flushedLines[h] & ~0xff_ffff_ffff == epoch {
                    if flushedLines[h] == key { seen = true; break }
                    h = (h + 1) & (slots - 1)
                }
                if !seen {
                    persistence.flush(offset: line << 6, count: 64)
                    if used < slots / 2 {
                        flushedLines[h] = key
                        used += 1
                    }
                }
                line += 1
            }
        }
    }

    // MARK: Writes that are not records

    /// Whether a write to `[offset, offset+count)` that is not a record must not be made durable
    /// as it is: a live record changed some of those bytes, and its replay would undo the write.
    @inline(__always)
    @_spi(Allocator) public func replayWouldOvertake(_ offset: Int, _ count: Int) -> Bool {
        let retired = retiredSeq
        // Fast path: no live record wrote anything at all (plain operations only since the
        // last checkpoint).
        guard filter.newest > retired else { return false }
        return filter.latest(offset, count) > retired
    }

    /// Makes `[offset, offset+count)` durable for the application (`store`, `persist`): a flush
    /// and a fence, unless a live record changed some of those bytes — then the range goes into
    /// a record of its own (one fence too: replay applies it after the older one), or, for a
    /// range too large to log, a checkpoint runs first.
    @_spi(Allocator) public func persistUnlogged(_ offset: Int, _ count: Int) throws(PoolError) {
        guard count > 0 else { return }
        guard replayWouldOvertake(offset, count) else {
            persistence.persist(offset: offset, count: count)
            return
        }
        let lane = currentLane()
        if count <= copyLimit {
            var r = try record(lane: lane, payload: LogRecord.bytesEntrySize(count))
            r.appendCopy(offset: offset, count: count)
            commit(&r, lane: lane)
        } else {
            checkpointAll()
            persistence.persist(offset: offset, count: count)
        }
    }

    /// Before new contents of `[offset, offset+count)` are made durable outside a record (a run's
    /// header, a block's contents flushed before its record): retires the records that changed
    /// any of those bytes, so that no replay overtakes the new contents.
    @_spi(Allocator) public func settleForUnloggedWrite(_ offset: Int, _ count: Int) {
        if replayWouldOvertake(offset, count) { checkpointAll() }
    }
}

/// The entries of a one-line record: up to three `(op, offset, operand)` words, kept inline (an
/// allocator operation builds one without allocating from the process heap).
@_spi(Allocator) public struct WordEntries {
    public typealias Entry = (LogOp, Int, UInt64)
    private var e0: Entry = (.write8, 0, 0), e1: Entry = (.write8, 0, 0), e2: Entry = (.write8, 0, 0)
    /// The number of entries (0...3).
    public private(set) var count = 0

    public init() {}
    public init(_ a: Entry) { append(a) }
    public init(_ a: Entry, _ b: Entry) { append(a); append(b) }

    /// Adds an entry. This process's own callers add at most three (a line record's capacity).
    public mutating func append(_ e: Entry) {
        switch count {
        case 0: e0 = e
        case 1: e1 = e
        case 2: e2 = e
        default: preconditionFailure("a one-line record holds \(LogRecord.lineEntries) entries")
        }
        count += 1
    }

    public subscript(i: Int) -> Entry { i == 0 ? e0 : i == 1 ? e1 : e2 }
}
