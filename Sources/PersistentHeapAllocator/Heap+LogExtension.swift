// A lane's log extension block: where records larger than the lane's log keep their entries.
// It stays linked from the lane's extension slot (PMDK keeps its lanes' log extensions the same
// way) and is used as a second log: records follow one another in it and it starts over with
// the lane, after a checkpoint. A record that does not fit even an empty block replaces it by a
// larger one (a checkpoint first: the old block may hold live records). `close()` frees the
// blocks; so does recovery for a block a crash left linked.
//
//     block:  0 capacity UInt64 · 8 magic UInt64 ("PHLOGEXT" xor the slot's offset) · 16 payload

@_spi(Core) import PersistentHeapCore

extension Heap {
    /// Smallest extension block payload.
    static let minimumExtension = 64 << 10

    /// The payload capacity a new extension block gets for records of `payload` bytes: room for
    /// several (up to 1 MiB in all), so that consecutive large records share one checkpoint; a
    /// larger record gets a block of its own size.
    static func extensionCapacity(for payload: Int) -> Int {
        max(Heap.minimumExtension, min(payload * 8, max(payload, 1 << 20))) + 64
    }

    /// The payload area of `lane`'s extension block, at least `payload` bytes (`roomy`: at least
    /// the capacity a new block would get, so that more than one such record fits): (pool
    /// offset, capacity in bytes). Links a new block (or a larger one) with one record when needed.
    func logExtension(lane: Int, payload: Int, roomy: Bool = false) throws(PoolError) -> (offset: Int, capacity: Int) {
        let slot = extensionSlot(lane)
        let x = Int(truncatingIfNeeded: bytes.u64(slot))
        var old: FreeTarget?
        if x != 0 && isExtensionBlock(x, slot: slot) {
            let capacity = Int(bytes.u64(x + LogExtensionField.capacity))
            if capacity >= (roomy ? min(Heap.extensionCapacity(for: payload), 2 * payload) : payload) {
                return (x + LogExtensionField.header, capacity)
            }
            // The old block may hold entries of live records: retire them, then replace it.
            checkpoint(through: laneLogs[lane].lastSeq)
            laneLogs[lane] = LaneLogState()
            old = try prepareFree(x)
        }
        let size = Heap.extensionCapacity(for: payload) + LogExtensionField.header
        let r: Reservation
        do throws(PoolError) {
            r = try reserve(size: size, alignment: 64, lane: lane, longLived: false)
        } catch {
            if let old { cancelFree(old) }
            throw error
        }
        // Its payload area is written outside records from now on: no older record may replay into it.
        settleForUnloggedWrite(r.offset, r.usableSize)
        let capacity = r.usableSize - LogExtensionField.header
        bytes.setU64(r.offset + LogExtensionField.capacity, UInt64(capacity))
        bytes.setU64(r.offset + LogExtensionField.magic, LogExtensionField.magic(slot: slot))
        // One record: the block's header, the block linked and allocated, the old one freed.
        var log = try record(lane: lane, payload: LogRecord.bytesEntrySize(LogExtensionField.header) + 16 * (1 + r.publishEntries) + Heap.freeEntryBytes)
        log.appendCopy(offset: r.offset, count: LogExtensionField.header)
        log.append(.write8, offset: slot, operand: UInt64(r.offset))
        appendPublish(r, to: &log)
        if let old { appendFree(old, to: &log) }
        commit(&log, lane: lane)
        finishPublished(r)
        if let old { finishFreed(old) }
        return (r.offset + LogExtensionField.header, capacity)
    }

    /// Frees every lane's extension block (at close: a cleanly closed pool holds none; at open:
    /// blocks a crash left linked). A slot holding anything but a block made for it is left alone.
    @_spi(Allocator) public func releaseLogExtensions(laneCount: Int) throws(PoolError) {
        for lane in 0..<laneCount {
            let slot = extensionSlot(lane)
            let x = Int(truncatingIfNeeded: bytes.u64(slot))
            guard x != 0, isExtensionBlock(x, slot: slot) else { continue }
            // Its live records first: the block must not be reused while recovery could need it.
            checkpointAll()
            try freeLinked(slot: slot, lane: currentLane())
        }
    }
}
