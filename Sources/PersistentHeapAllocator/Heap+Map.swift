// The heap's extents in address order, for the picture `pheap stats` draws.

@_spi(Core) import PersistentHeapCore

extension Heap {
    /// Every extent of the heap from its unit table, with each run's fill from its bitmap; the
    /// metadata before the heap (headers, state page, lanes) first. Throws `corrupted` where the
    /// table cannot be walked (``check`` reports the details). Call while no other thread
    /// changes the pool.
    @_spi(Allocator) public func extentMap() throws(PoolError) -> [HeapExtent] {
        lockExtents()
        for c in 0..<classCount { lockClass(c) }
        defer {
            for c in 0..<classCount { unlockClass(c) }
            unlockExtents()
        }
        var map = [HeapExtent(kind: .metadata, offset: 0, length: heapOffset, fill: 0)]
        func add(_ kind: HeapExtent.Kind, _ u: Int, _ n: Int, _ fill: Double) {
            let offset = unitOffset(u), length = n << Format.unitShift
            if let last = map.last, last.kind == kind, kind != .run, kind != .object, last.offset + last.length == offset {
                map[map.count - 1].length += length
            } else {
                map.append(HeapExtent(kind: kind, offset: offset, length: length, fill: fill))
            }
        }
        var u = 0
        while u < units {
            let e = tableEntry(u)
            guard e.isWellFormed, e.length <= units - u, let kind = e.kind, segmentProblem(u, e) == nil else {
                throw PoolError(.corrupted, "the unit table cannot be walked at unit \(u) (pheap check lists the problems)")
            }
            let n = e.length
            switch kind {
            case .free: add(.free, u, n, 0)
            case .used: add(.object, u, n, 1)
            case .table: add(.metadata, u, n, 0)
            case .run:
                guard e.sizeClass < SizeClasses.count, runHeaderProblem(at: u, sizeClass: e.sizeClass, units: n) == nil else {
                    throw PoolError(.corrupted, "the run at unit \(u) is damaged (pheap check lists the problems)")
                }
                let g = geometry[e.sizeClass]
                add(.run, u, n, g.blockCount == 0 ? 0 : Double(usedBlocks(run: u, g)) / Double(g.blockCount))
            case .none: break
            }
            u += n
        }
        return map
    }
}
