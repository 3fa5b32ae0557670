#if canImport(Glibc)
import Glibc
#endif
import CPersistentHeap
import Dispatch
import Synchronization

/// The allocator of one pool: persistent metadata (unit table, run bitmaps, lane logs) is the
/// truth; the volatile indexes below are rebuilt from it at every open.
///
/// Volatile indexes (all guarded as noted):
/// - per-unit `UnitInfo` (32 B) and `startOf` (4 B) arrays, valid at extent starts (and, for
///   runs, `startOf` at every unit), for O(1) pointer → block lookup;
/// - free extents in **binary heaps** by size bucket, each ordered by address, with positions
///   tracked so a merge removes a neighbour in O(log n)            — extent lock;
/// - per size class, a **binary heap of runs** with free blocks, ordered by address, from which
///   lanes take the lowest run when theirs fills up                 — that class's lock;
/// - per lane, the run each class allocates from                    — the lane's thread only.
final class Heap: @unchecked Sendable {
    let bytes: PoolBytes
    let persistence: Persistence
    let heapOffset: Int
    let tableOffset: Int
    let maxUnits: Int
    let laneOffset: Int
    let lanes: LaneTable
    let poolID: UInt64

    /// Heap units in use. Changes only under the extent lock (growth, shrink); read by every
    /// bounds check without it — atomically: a reader sees the old or the new count, never a torn
    /// one (an acquire load is a plain load on x86 and arm64).
    var units: Int {
        get { unitCount.load(ordering: .acquiring) }
        set { unitCount.store(newValue, ordering: .releasing) }
    }
    private let unitCount = Atomic<Int>(0)

    private let infoStorage: VolatileArray
    private let startStorage: VolatileArray
    private let positionStorage: VolatileArray
    let startOf: UnsafeMutablePointer<UInt32>
    let positions: UnsafeMutablePointer<Int32>
    /// Base of the per-unit `UnitInfo` records.
    let infoBase: UnsafeMutableRawPointer
    /// `SizeClasses.lookup`, copied: request size / 16 → class index.
    let classLookup: UnsafeMutablePointer<UInt8>
    /// Number of size classes (an instance constant: a static one costs a `swift_once` per use).
    let classCount = SizeClasses.count
    /// `SizeClasses.all`, copied for lookups without array overhead on the hot path.
    let geometry: UnsafeMutablePointer<SizeClass>

    // Size classes: a lock (own cache line) and a heap of runs with free blocks, per class.
    static let lockStride = 16
    let classLocks: UnsafeMutablePointer<Int32>
    let classHeaps: UnsafeMutablePointer<UnitHeap>
    /// Per lane and class: start unit + 1 of the run the lane allocates from (0: none).
    let laneRuns: UnsafeMutablePointer<UInt32>
    /// Per lane: which fast log the next record uses.
    let laneToggle: UnsafeMutablePointer<UInt8>
    /// Per lane and class: the first bitmap word of the lane's run that may hold a free bit.
    let laneHints: UnsafeMutablePointer<UInt32>
    /// Per lane: unpublished small-block reservations (transactions).
    let reservationLists: UnsafeMutablePointer<LaneReservations>

    // Extents.
    static let bucketCount = 72
    let extentLock: UnsafeMutablePointer<Int32>
    let buckets: UnsafeMutablePointer<UnitHeap>
    var bucketMask: (UInt64, UInt64) = (0, 0)

    /// Order of redo logs across lanes.
    let logSequence = Atomic<UInt64>(1)

    /// Grows the pool file by at least `units` units; returns the new unit count. Set by the pool.
    var growFile: ((Int) throws(PoolError) -> Int)?
    /// Gives the tail past `units` units back to the file system. Set by the pool.
    var shrinkFile: ((Int) throws(PoolError) -> Void)?
    /// Releases / re-reserves the storage of a unit range (`punch`, `reserve`). Set by the pool
    /// for file pools; nil for simulated ones.
    var punchUnits: ((Int, Int) -> Void)?
    var reserveUnits: ((Int, Int) throws(PoolError) -> Void)?
    /// Free extents at least this long are punched out of the file.
    var punchThreshold = 64

    init(bytes: PoolBytes, persistence: Persistence, header: PoolHeader, lanes: LaneTable, poolID: UInt64) throws(PoolError) {
        self.bytes = bytes
        self.persistence = persistence
        heapOffset = Int(header.heapOffset)
        tableOffset = Int(header.tableOffset)
        maxUnits = Int(header.maxUnits)
        laneOffset = Int(header.laneOffset)
        self.lanes = lanes
        self.poolID = poolID
        unitCount.store(header.units, ordering: .relaxed)
        infoStorage = try VolatileArray(bytes: maxUnits * UnitInfo.stride)
        startStorage = try VolatileArray(bytes: maxUnits * 4)
        positionStorage = try VolatileArray(bytes: maxUnits * 4)
        startOf = startStorage.base.assumingMemoryBound(to: UInt32.self)
        infoBase = infoStorage.base
        classLookup = .allocate(capacity: SizeClasses.lookup.count)
        classLookup.initialize(from: SizeClasses.lookup, count: SizeClasses.lookup.count)
        positions = positionStorage.base.assumingMemoryBound(to: Int32.self)
        let classes = SizeClasses.count
        geometry = .allocate(capacity: classes)
        geometry.initialize(from: SizeClasses.all, count: classes)
        classLocks = .allocate(capacity: classes * Heap.lockStride)
        classLocks.initialize(repeating: 0, count: classes * Heap.lockStride)
        classHeaps = .allocate(capacity: classes)
        for c in 0..<classes { (classHeaps + c).initialize(to: UnitHeap()) }
        laneRuns = .allocate(capacity: lanes.count * classes)
        laneRuns.initialize(repeating: 0, count: lanes.count * classes)
        laneToggle = .allocate(capacity: lanes.count)
        laneToggle.initialize(repeating: 0, count: lanes.count)
        laneHints = .allocate(capacity: lanes.count * classes)
        laneHints.initialize(repeating: 0, count: lanes.count * classes)
        reservationLists = .allocate(capacity: lanes.count)
        reservationLists.initialize(repeating: LaneReservations(), count: lanes.count)
        extentLock = .allocate(capacity: Heap.lockStride)
        extentLock.initialize(repeating: 0, count: Heap.lockStride)
        buckets = .allocate(capacity: Heap.bucketCount)
        for b in 0..<Heap.bucketCount { (buckets + b).initialize(to: UnitHeap()) }
    }

    deinit {
        for c in 0..<SizeClasses.count { classHeaps[c].deallocate() }
        classHeaps.deallocate()
        geometry.deallocate()
        classLookup.deallocate()
        classLocks.deallocate()
        laneRuns.deallocate()
        laneToggle.deallocate()
        laneHints.deallocate()
        reservationLists.deinitialize(count: lanes.count)
        reservationLists.deallocate()
        for b in 0..<Heap.bucketCount { buckets[b].deallocate() }
        buckets.deallocate()
        extentLock.deallocate()
    }

    // MARK: Geometry

    @inline(__always) func info(_ unit: Int) -> UnitInfo { UnitInfo(p: infoBase + unit * UnitInfo.stride) }

    /// The size class for a request of `size` bytes (1...16 KiB) and `alignment` (power of
    /// two), or nil when only an extent can satisfy it. Reads the copies above, not
    /// `SizeClasses` (its static arrays cost a `swift_once` and bounds checks per call).
    @inline(__always)
    func classIndex(size: Int, alignment: Int) -> Int? {
        guard size <= SizeClasses.maxSmallSize else { return nil }
        var c = Int(classLookup[(size + 15) >> 4])
        if alignment > 16 {
            while c < classCount && geometry[c].alignment < alignment { c += 1 }
            if c == classCount { return nil }
        }
        return c
    }
    @inline(__always) func unitOffset(_ unit: Int) -> Int { heapOffset + unit << Format.unitShift }
    @inline(__always) func tableEntryOffset(_ unit: Int) -> Int { tableOffset + unit * 8 }
    @inline(__always) func tableEntry(_ unit: Int) -> UnitEntry { UnitEntry(raw: bytes.u64(tableEntryOffset(unit))) }
    @inline(__always) func laneLogOffset(_ lane: Int) -> Int { laneOffset + lane * Format.laneSize }

    /// The next fast log of `lane` (the two alternate), for records of up to three entries.
    @inline(__always) func fastLog(_ lane: Int) -> RedoLog {
        let k = Int(laneToggle[lane])
        laneToggle[lane] = UInt8(1 - k)
        return RedoLog(bytes: bytes, at: laneLogOffset(lane) + LaneLayout.fastLogs[k], size: LaneLayout.fastLogSize)
    }

    /// The main log of `lane`.
    @inline(__always) func mainLog(_ lane: Int) -> RedoLog {
        RedoLog(bytes: bytes, at: laneLogOffset(lane) + LaneLayout.mainLog, size: LaneLayout.mainLogSize)
    }

    /// Calls `body` with the pool offset and size of every log of every lane.
    func forEachLog(laneCount: Int, _ body: (Int, Int) throws(PoolError) -> Void) throws(PoolError) {
        for lane in 0..<laneCount {
            for (at, size) in LaneLayout.logs { try body(laneLogOffset(lane) + at, size) }
        }
    }
    /// End of the pool in bytes.
    var poolEnd: Int { heapOffset + units << Format.unitShift }

    /// Where a redo log may write: the state page, the unit table, the heap, and the lanes'
    /// extension slots (nothing else of the lanes, nor the headers).
    var writableRegions: WritableRegions {
        WritableRegions(ranges: [Format.statePageOffset..<(Format.statePageOffset + Format.page), tableOffset..<poolEnd],
                        laneOffset: laneOffset, laneCount: lanes.count)
    }

    /// Whether `[offset, offset+count)` lies inside the heap. Overflow-safe for any `offset`
    /// and `count` (both may come from a damaged pool).
    @inline(__always)
    func inHeap(_ offset: Int, _ count: Int) -> Bool {
        let end = poolEnd
        return offset >= heapOffset && count >= 0 && offset <= end && count <= end - offset
    }

    /// Whether `[offset, offset+count)` is persistent memory the application may change: the
    /// heap, or exactly the root slot (not the rest of the state page, the headers or the lanes).
    @inline(__always)
    func isUserRange(_ offset: Int, count: Int) -> Bool {
        inHeap(offset, count) || (offset == StateField.rootSlot && count == 8)
    }

    /// Whether `offset` lies in the header or bitmap of a run (allocator metadata inside the heap).
    @inline(__always)
    func isRunMetadata(_ offset: Int) -> Bool {
        let u = (offset - heapOffset) >> Format.unitShift
        let s = Int(startOf[u])
        let i = info(s)
        guard i.kind == .run || i.kind == .retiring, s <= u, u < s + i.length else { return false }
        return offset - unitOffset(s) < geometry[i.sizeClass].dataOffset
    }

    @inline(__always) func lockClass(_ c: Int) { ph_spin_lock(classLocks + c * Heap.lockStride) }
    @inline(__always) func unlockClass(_ c: Int) { ph_spin_unlock(classLocks + c * Heap.lockStride) }
    @inline(__always) func lockExtents() { ph_spin_lock(extentLock) }
    @inline(__always) func unlockExtents() { ph_spin_unlock(extentLock) }

    /// The lane of the calling thread.
    @inline(__always) func currentLane() -> Int { lanes.current(poolID: poolID) }

    /// A fresh log sequence number.
    @inline(__always) func nextSequence() -> UInt64 { logSequence.add(1, ordering: .relaxed).oldValue }

    // MARK: Loading (open)

    /// Rebuilds every volatile index by walking the unit table from unit 0, validating each
    /// extent (well-formed entry, inside the pool; runs: header checksum and geometry, bitmap
    /// padding). Throws `corrupted` at the first impossible value; never reads outside the pool.
    ///
    /// Three passes: the chain of table entries (dense, cheap); the run headers and bitmaps
    /// (one page fault each on a freshly mapped pool: the cost of opening a full pool), checked
    /// and counted in parallel on all cores for large heaps; then the indexes, in address order.
    func load() throws(PoolError) {
        var extents: [(unit: Int, entry: UnitEntry)] = []
        var u = 0
        while u < units {
            let e = tableEntry(u)
            guard e.isWellFormed else {
                throw PoolError(.corrupted, "unit table entry \(u) is malformed (0x\(String(e.raw, radix: 16)))")
            }
            guard e.length <= units - u else {
                throw PoolError(.corrupted, "extent at unit \(u) of \(e.length) units runs past the end of the pool (\(units) units)")
            }
            if e.kind == .run && e.sizeClass >= classCount {
                throw PoolError(.corrupted, "run at unit \(u) has size class \(e.sizeClass)")
            }
            extents.append((u, e))
            u += e.length
        }
        // Pass 2: per run not hinted full, nil for a bad header, else its used-block count.
        var used = [Int?](repeating: 0, count: extents.count)
        let runs = extents.indices.filter { extents[$0].entry.kind == .run && !extents[$0].entry.isHintedFull }
        used.withUnsafeMutableBufferPointer { out in
            // Each worker writes only its own indexes of `out`.
            let outBase = UncheckedSendable(out.baseAddress!)
            let runList = runs, extentList = extents
            let work: @Sendable (Range<Int>) -> Void = { range in
                for k in range {
                    let i = runList[k]
                    outBase.value[i] = self.countUsed(run: extentList[i].unit, entry: extentList[i].entry)
                }
            }
            let workers = runs.count >= 256 ? min(4, max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))) : 1
            if workers == 1 {
                work(0..<runs.count)
            } else {
                let chunk = (runs.count + workers - 1) / workers
                DispatchQueue.concurrentPerform(iterations: workers) { w in
                    work((w * chunk)..<min(runs.count, (w + 1) * chunk))
                }
            }
        }
        for (k, (u, e)) in extents.enumerated() {
            switch e.kind ?? .none {
            case .free:
                addFreeExtent(u, length: e.length, punched: false)
            case .used:
                let i = info(u)
                i.kind = .used
                i.length = e.length
                startOf[u] = UInt32(u)
                startOf[u + e.length - 1] = UInt32(u)
            case .run:
                let g = geometry[e.sizeClass]
                guard e.length == g.units else {
                    throw PoolError(.corrupted, "run at unit \(u) has \(e.length) units; class \(e.sizeClass) runs have \(g.units)")
                }
                let i = info(u)
                i.kind = .run
                i.sizeClass = e.sizeClass
                i.length = e.length
                ph_atomic_store_i32(i.owner, 0)
                for k in u..<(u + e.length) { startOf[k] = UInt32(u) }
                if e.isHintedFull {
                    // Read on first use (`ensureLoaded`): opening a full pool touches no run page.
                    i.flags = UnitInfo.unloadedFlag
                    ph_atomic_store_i32(i.freeCount, 0)
                    continue
                }
                guard let usedBlocks = used[k] else {
                    let problem = runHeaderProblem(at: u, sizeClass: e.sizeClass, units: e.length) ?? "bad run header"
                    throw PoolError(.corrupted, "run at unit \(u): \(problem)")
                }
                ph_atomic_store_i32(i.freeCount, Int32(g.blockCount - usedBlocks))
                if usedBlocks < g.blockCount { classHeaps[e.sizeClass].insert(UInt32(u), positions: positions) }
            case .none:
                // Excluded by `isWellFormed` in the first pass; refused rather than trusted.
                throw PoolError(.corrupted, "unit table entry \(u) has no kind")
            }
        }
    }

    /// Reads a run indexed from its FULL hint: validates its header and counts its free blocks.
    /// Called before anything reads its bitmap.
    @inline(__always)
    func ensureLoaded(_ r: Int) throws(PoolError) {
        if info(r).flags & UnitInfo.unloadedFlag != 0 { try loadHinted(r) }
    }

    @inline(never)
    private func loadHinted(_ r: Int) throws(PoolError) {
        let i = info(r)
        let c = i.sizeClass
        lockClass(c)
        defer { unlockClass(c) }
        guard i.flags & UnitInfo.unloadedFlag != 0 else { return }
        let e = tableEntry(r)
        guard let usedBlocks = countUsed(run: r, entry: e) else {
            let problem = runHeaderProblem(at: r, sizeClass: c, units: i.length) ?? "bad run header"
            throw PoolError(.corrupted, "run at unit \(r): \(problem)")
        }
        let free = geometry[c].blockCount - usedBlocks
        _ = ph_atomic_add_i32(i.freeCount, Int32(free))
        i.flags &= ~UnitInfo.unloadedFlag
        if ph_atomic_load_i32(i.freeCount) > 0 && ph_atomic_load_i32(i.owner) == 0 && positions[r] == 0
            && i.flags & UnitInfo.pinnedFlag == 0 {
            classHeaps[c].insert(UInt32(r), positions: positions)
        }
    }

    /// Loads every run indexed from its FULL hint (check, stats).
    func loadAllHinted() throws(PoolError) {
        var u = 0
        while u < units {
            let i = info(u)
            let n = max(i.length, 1)
            if i.kind == .run { try ensureLoaded(u) }
            u += i.kind == .none ? 1 : n
        }
    }

    /// Validates the header of the run at `u` and counts its allocated blocks; nil when the
    /// header is bad. Reads only the run's own bytes.
    private func countUsed(run u: Int, entry e: UnitEntry) -> Int? {
        if runHeaderProblem(at: u, sizeClass: e.sizeClass, units: e.length) != nil { return nil }
        return usedBlocks(run: u, geometry[e.sizeClass])
    }

    /// Allocated blocks of the run at `u` (whose header is sound), from its bitmap: set bits
    /// minus the padding bits past the last block.
    func usedBlocks(run u: Int, _ g: SizeClass) -> Int {
        let bitmap = bytes.words(unitOffset(u) + RunField.bitmap)
        var used = 0
        for w in 0..<g.bitmapWords { used += bitmap[w].nonzeroBitCount }
        return used - (g.bitmapWords * 64 - g.blockCount)
    }

    /// Checks the header of the run at unit `u` against the geometry of its class; nil when sound.
    func runHeaderProblem(at u: Int, sizeClass c: Int, units n: Int) -> String? {
        let cls = geometry[c]
        let h = unitOffset(u)
        if bytes.u32(h + RunField.magic) != RunField.magicValue { return "bad run magic" }
        let crc = Checksum.crc32c(bytes.pointer(h), count: RunField.checksum)
        if crc != bytes.u32(h + RunField.checksum) { return "run header checksum mismatch" }
        if Int(bytes.u16(h + RunField.sizeClass)) != c || Int(bytes.u16(h + RunField.units)) != n || n != cls.units
            || Int(bytes.u32(h + RunField.blockSize)) != cls.blockSize || Int(bytes.u32(h + RunField.blockCount)) != cls.blockCount
            || Int(bytes.u32(h + RunField.dataOffset)) != cls.dataOffset || Int(bytes.u32(h + RunField.bitmapWords)) != cls.bitmapWords {
            return "run header disagrees with size class \(c)"
        }
        let tail = cls.blockCount & 63
        if tail != 0 {
            let padding = ~UInt64(0) << UInt64(tail)
            if bytes.u64(h + RunField.bitmap + (cls.bitmapWords - 1) * 8) & padding != padding { return "bitmap padding bits are clear" }
        }
        return nil
    }

    /// Writes a fresh run header and an empty bitmap at unit `u` (not yet flushed).
    func writeRunHeader(at u: Int, sizeClass c: Int) {
        let cls = geometry[c]
        let h = unitOffset(u)
        bytes.pointer(h).initializeMemory(as: UInt8.self, repeating: 0, count: RunField.bitmap + cls.bitmapWords * 8)
        bytes.setU32(h + RunField.magic, RunField.magicValue)
        bytes.setU16(h + RunField.sizeClass, UInt16(c))
        bytes.setU16(h + RunField.units, UInt16(cls.units))
        bytes.setU32(h + RunField.blockSize, UInt32(cls.blockSize))
        bytes.setU32(h + RunField.blockCount, UInt32(cls.blockCount))
        bytes.setU32(h + RunField.dataOffset, UInt32(cls.dataOffset))
        bytes.setU32(h + RunField.bitmapWords, UInt32(cls.bitmapWords))
        bytes.setU32(h + RunField.checksum, Checksum.crc32c(bytes.pointer(h), count: RunField.checksum))
        let tail = cls.blockCount & 63
        if tail != 0 { bytes.setU64(h + RunField.bitmap + (cls.bitmapWords - 1) * 8, ~UInt64(0) << UInt64(tail)) }
    }
}

/// A value handed to concurrent workers that use it without races by construction.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// The byte ranges redo-log entries may target (validated before any replay).
struct WritableRegions {
    let ranges: [Range<Int>]
    let laneOffset: Int
    let laneCount: Int

    func contains(_ offset: Int, count n: Int) -> Bool {
        guard n >= 0 else { return false }
        if ranges.contains(where: { $0.lowerBound <= offset && offset + n <= $0.upperBound }) { return true }
        let rel = offset - laneOffset
        return n == 8 && rel >= 0 && rel < laneCount * Format.laneSize && rel % Format.laneSize == LaneLayout.extensionSlot
    }
}
