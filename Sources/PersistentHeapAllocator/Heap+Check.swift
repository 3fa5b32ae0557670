// A full consistency check of the heap: the persistent metadata walked on its own, then every
// volatile index compared with it. Call it while no other thread uses the pool.

@_spi(Core) import PersistentHeapCore

extension Heap {
    /// The full check: loads every run indexed from its FULL hint, then walks with every lock held.
    @_spi(Allocator) public func checkAll(laneCount: Int, rootSlot: Int) throws(PoolError) -> CheckReport {
        try loadAllHinted()
        lockExtents()
        for c in 0..<classCount { lockClass(c) }
        defer {
            for c in 0..<classCount { unlockClass(c) }
            unlockExtents()
        }
        return check(laneCount: laneCount, rootSlot: rootSlot)
    }

    /// Walks the persistent metadata and the volatile indexes; see ``CheckReport``.
    func check(laneCount: Int, rootSlot: Int) -> CheckReport {
        var findings: [String] = []
        func note(_ s: String) { if findings.count < 200 { findings.append(s) } }
        var stats = PoolStats()
        stats.poolSize = poolEnd
        stats.heapSize = units << Format.unitShift
        var classStats = [PoolStats.SizeClassStats?](repeating: nil, count: SizeClasses.count)
        var persistentFree: [(Int, Int)] = []  // merged persistent free extents

        // 1. The unit table, on its own.
        var u = 0
        while u < units {
            let e = tableEntry(u)
            guard e.isWellFormed else { note("unit \(u): malformed table entry 0x\(String(e.raw, radix: 16)); walk stopped"); break }
            guard e.length <= units - u, let kind = e.kind else { note("unit \(u): extent of \(e.length) units runs past the end (\(units))"); break }
            if let problem = segmentProblem(u, e) { note("\(problem); walk stopped"); break }
            let n = e.length
            switch kind {
            case .free:
                if let last = persistentFree.last, last.0 + last.1 == u {
                    persistentFree[persistentFree.count - 1].1 += n
                } else {
                    persistentFree.append((u, n))
                }
            case .used:
                stats.objects += 1
                stats.largeObjects += 1
                stats.allocatedBytes += n << Format.unitShift
                let i = info(u)
                if i.kind != .used || i.length != n { note("unit \(u): large object of \(n) units not indexed as such") }
                if startOf[u] != UInt32(u) || startOf[u + n - 1] != UInt32(u) { note("unit \(u): large object boundary tags wrong") }
            case .run:
                checkRun(at: u, entry: e, stats: &stats, classStats: &classStats, note: note)
            case .table:
                stats.unitTableBytes += n << Format.unitShift
                let i = info(u)
                if i.kind != .table || i.length != n { note("unit \(u): unit table of \(n) units not indexed as such") }
            case .none:
                break
            }
            u += n
        }

        // 2. Free extents: the volatile index must hold exactly the merged persistent ones.
        var indexed = 0
        for b in 0..<Heap.bucketCount {
            if let v = buckets[b].invariantViolation(positions: positions) { note("free-extent bucket \(b): \(v)") }
            for k in 0..<buckets[b].count {
                let s = Int(buckets[b][k])
                let i = info(s)
                if i.kind != .free { note("free-extent bucket \(b) holds unit \(s), which is not a free extent start") }
                if Heap.bucket(i.length) != b { note("free extent at unit \(s) (\(i.length) units) is in bucket \(b)") }
                indexed += 1
            }
        }
        if indexed != persistentFree.count { note("\(indexed) free extents indexed, \(persistentFree.count) in the unit table") }
        for (s, n) in persistentFree {
            stats.freeExtentBytes += n << Format.unitShift
            stats.largestFreeExtent = max(stats.largestFreeExtent, n << Format.unitShift)
            let i = info(s)
            if i.kind != .free || i.length != n {
                note("free extent at unit \(s) of \(n) units is indexed as \(i.kind) of \(i.length)")
            } else if positions[s] == 0 {
                note("free extent at unit \(s) is in no bucket")
            }
            if startOf[s] != UInt32(s) || startOf[s + n - 1] != UInt32(s) { note("free extent at unit \(s): boundary tags wrong") }
        }
        stats.freeExtents = persistentFree.count
        stats.freeBytes += stats.freeExtentBytes
        if stats.freeExtentBytes > 0 {
            stats.fragmentation = 1 - Double(stats.largestFreeExtent) / Double(stats.freeExtentBytes)
        }

        // 3. Class heaps: exactly the unowned runs with free blocks, in address order.
        for c in 0..<SizeClasses.count {
            if let v = classHeaps[c].invariantViolation(positions: positions) { note("run heap of class \(c): \(v)") }
            for k in 0..<classHeaps[c].count {
                let r = Int(classHeaps[c][k])
                let i = info(r)
                if i.kind != .run || i.sizeClass != c { note("run heap of class \(c) holds unit \(r), not a run of that class") }
                if i.owner != 0 { note("run at unit \(r) is both owned by a lane and in its class heap") }
            }
        }

        // 4. Space accounting: every heap byte is allocated, free, run overhead or unit table.
        let accounted = stats.allocatedBytes + stats.freeBytes + stats.runOverheadBytes + stats.unitTableBytes
        if findings.isEmpty && accounted != stats.heapSize {
            note("accounting: \(accounted) bytes allocated + free + overhead + tables, heap has \(stats.heapSize)")
        }

        // 5. Logs: every record of every lane's current pass is well formed and targets only
        //    the writable regions; and the live records are applied to the allocator's words
        //    (replaying them in seq order would change no bitmap, table entry or slot of a lane;
        //    the application's own bytes are its to change).
        do throws(PoolError) {
            let live = try liveRecords(laneCount: laneCount, retired: retiredSeq)
            if replayChangesMemory(live, metadataOnly: true) {
                note("logs: replaying the \(live.count) live record(s) would change the allocator's metadata (a record was not applied)")
            }
        } catch {
            note("logs: \(error.message)")
        }

        // 6. Lanes' extension slots: empty, or a log extension block of that lane.
        for lane in 0..<laneCount {
            let slot = extensionSlot(lane)
            let x = Int(truncatingIfNeeded: bytes.u64(slot))
            if x != 0 && !isExtensionBlock(x, slot: slot) {
                note("lane \(lane): the extension slot holds 0x\(String(UInt(bitPattern: x), radix: 16)), which is not a log extension block")
            }
        }

        // Log extension blocks are the allocator's, not the application's.
        for lane in 0..<laneCount {
            let slot = extensionSlot(lane)
            let x = Int(truncatingIfNeeded: bytes.u64(slot))
            guard x != 0, isExtensionBlock(x, slot: slot), let size = try? usableSize(at: x) else { continue }
            stats.logExtensions += 1
            stats.logExtensionBytes += size
            stats.objects -= 1
            stats.allocatedBytes -= size
            if size > 16384 { stats.largeObjects -= 1 }
        }

        // 7. The root slot.
        let root = Int(truncatingIfNeeded: bytes.u64(rootSlot))
        if root != 0 && (try? locate(root)) == nil { note("the root slot holds 0x\(String(UInt(bitPattern: root), radix: 16)), which is not a live allocation") }

        stats.sizeClasses = classStats.compactMap { $0 }
        return CheckReport(findings: findings, stats: stats)
    }

    private func checkRun(at u: Int, entry e: UnitEntry, stats: inout PoolStats,
                          classStats: inout [PoolStats.SizeClassStats?], note: (String) -> Void) {
        guard e.sizeClass < SizeClasses.count else { note("run at unit \(u): size class \(e.sizeClass) does not exist"); return }
        if let p = runHeaderProblem(at: u, sizeClass: e.sizeClass, units: e.length) { note("run at unit \(u): \(p)"); return }
        let g = geometry[e.sizeClass]
        let used = usedBlocks(run: u, g)
        let free = g.blockCount - used
        let i = info(u)
        if i.kind != .run || i.sizeClass != e.sizeClass || i.length != e.length {
            note("run at unit \(u) is not indexed as a run of class \(e.sizeClass)")
        } else {
            let volatileFree = Int(i.freeCount)
            if volatileFree != free { note("run at unit \(u): bitmap has \(free) free blocks, index says \(volatileFree)") }
            let owned = i.owner != 0
            if !owned && free > 0 && positions[u] == 0 { note("run at unit \(u) has free blocks but is in no heap and owned by no lane") }
        }
        for k in u..<(u + e.length) where startOf[k] != UInt32(u) { note("run at unit \(u): unit \(k) does not map back to it"); break }
        stats.runs += 1
        stats.objects += used
        stats.allocatedBytes += used * g.blockSize
        stats.freeBytes += free * g.blockSize
        stats.runOverheadBytes += (e.length << Format.unitShift) - g.blockCount * g.blockSize
        var cs = classStats[e.sizeClass] ?? PoolStats.SizeClassStats(blockSize: g.blockSize, runs: 0, objects: 0, freeBlocks: 0)
        cs.runs += 1
        cs.objects += used
        cs.freeBlocks += free
        classStats[e.sizeClass] = cs
    }
}
