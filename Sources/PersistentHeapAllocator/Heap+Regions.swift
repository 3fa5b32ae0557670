// The map of a pool's regions, for the tools that damage pools on purpose (package-only).

@_spi(Core) import PersistentHeapCore

extension Heap {
    /// The regions of this pool: both headers, the state page, every lane's logs and extension
    /// slot, the used part of each segment's unit table, every run's header and bitmap, every live
    /// allocation (small blocks and large objects). Call while no other thread uses the pool.
    @_spi(Allocator) public func regions(laneCount: Int) throws(PoolError) -> [PoolRegion] {
        try loadAllHinted()
        var out: [PoolRegion] = [
            PoolRegion(kind: "header", offset: Format.primaryHeaderOffset, count: Format.headerSize),
            PoolRegion(kind: "backup header", offset: Format.backupHeaderOffset, count: Format.headerSize),
            PoolRegion(kind: "state page", offset: Format.statePageOffset, count: StateField.rootSlot + 8 - Format.statePageOffset),
        ]
        for lane in 0..<laneCount {
            // The lane's log as a whole, and each record of its current pass.
            let start = laneLogOffset(lane) + LaneLayout.log
            out.append(PoolRegion(kind: "lane log", offset: start, count: LaneLayout.logSize))
            try? LogRecord.forEachRecord(bytes: bytes, start: start, limit: start + LaneLayout.logSize, retired: .max, allowed: writableRegions) { f in
                out.append(PoolRegion(kind: "log record", offset: f.at, count: f.inlineLength))
            }
            out.append(PoolRegion(kind: "extension slot", offset: extensionSlot(lane), count: 8))
        }
        var u = 0
        while u < units {
            let e = tableEntry(u)
            guard e.isWellFormed, e.length <= units - u, let kind = e.kind else { break }
            switch kind {
            case .run:
                let g = geometry[e.sizeClass]
                out.append(PoolRegion(kind: "run header", offset: unitOffset(u), count: RunField.bitmap + g.bitmapWords * 8))
                let bitmap = unitOffset(u) + RunField.bitmap
                for k in 0..<g.blockCount where bytes.u64(bitmap + (k >> 6) * 8) & (1 << UInt64(k & 63)) != 0 {
                    out.append(PoolRegion(kind: "block", offset: unitOffset(u) + g.dataOffset + k * g.blockSize, count: g.blockSize))
                }
            case .used:
                out.append(PoolRegion(kind: "large object", offset: unitOffset(u), count: e.length << Format.unitShift))
            case .table:
                // The entries in use: this segment's units below the pool's end.
                let k = segments.segment(of: u)
                out.append(PoolRegion(kind: "unit table", offset: unitOffset(u), count: (min(units, segments.end(k)) - u) * 8))
            case .free, .none:
                break
            }
            u += e.length
        }
        return out
    }
}

