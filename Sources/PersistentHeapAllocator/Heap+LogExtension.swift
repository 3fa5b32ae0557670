// A lane's log extension block: where a transaction's redo log continues when it outgrows the
// lane's main log. The block stays linked from the lane's extension slot across transactions
// (PMDK keeps its lane's undo log extensions the same way): the first large transaction of a lane
// links one (two fences, once), a larger one replaces it in a single log (two fences), and every
// other large transaction pays only its own commit. `close()` frees them; recovery frees one a
// crash left linked.
//
//     block:  0 capacity UInt64 · 8 magic UInt64 ("PHLOGEXT" xor the slot's offset) · 16 payload

@_spi(Core) import PersistentHeapCore

extension Heap {
    /// The payload area of `lane`'s extension block, at least `payload` bytes: (pool offset,
    /// capacity in bytes).
    @_spi(Allocator) public func logExtension(lane: Int, payload: Int) throws(PoolError) -> (offset: Int, capacity: Int) {
        let slot = extensionSlot(lane)
        let x = Int(truncatingIfNeeded: bytes.u64(slot))
        var old: FreeTarget?
        if x != 0 && isExtensionBlock(x, slot: slot) {
            let capacity = Int(bytes.u64(x + LogExtensionField.capacity))
            if capacity >= payload { return (x + LogExtensionField.header, capacity) }
            old = try prepareFree(x)
        }
        // Room for the payload and a jump entry, rounded to the block it will get.
        let r = try reserve(size: payload + 64 + LogExtensionField.header, alignment: 64, lane: lane, longLived: false)
        let capacity = r.usableSize - LogExtensionField.header
        bytes.setU64(r.offset + LogExtensionField.capacity, UInt64(capacity))
        bytes.setU64(r.offset + LogExtensionField.magic, LogExtensionField.magic(slot: slot))
        // One log: the new block linked (its header verified), the old one freed.
        persistence.flush(offset: r.offset, count: LogExtensionField.header)
        var log = mainLog(lane)
        log.appendVerify(offset: r.offset, count: LogExtensionField.header)
        log.append(.write8, offset: slot, operand: UInt64(r.offset))
        appendPublish(r, to: &log)
        if let old { appendFree(old, to: &log) }
        commit(&log, lane: lane)
        finishPublished(r)
        if let old { finishFreed(old) }
        return (r.offset + LogExtensionField.header, capacity)
    }

    /// Frees every lane's extension block (at close: a cleanly closed pool holds none).
    @_spi(Allocator) public func releaseLogExtensions(laneCount: Int) throws(PoolError) {
        for lane in 0..<laneCount {
            let slot = extensionSlot(lane)
            let x = Int(truncatingIfNeeded: bytes.u64(slot))
            guard x != 0, isExtensionBlock(x, slot: slot) else { continue }
            try freeLinked(slot: slot, lane: currentLane())
        }
    }
}
