#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(Core) import PersistentHeapCore
import Dispatch
import Synchronization

/// Volatile kinds of the extent starting at a unit (a superset of `UnitKind`), kept in the
/// `kindRaw` byte of its `UnitInfo`.
enum VolatileKind: UInt8 {
    case none = 0
    case free = 1
    case used = 2
    case run = 3
    /// A run being turned back into a free extent: frees into it are refused.
    case retiring = 4
    /// A free extent reserved by a transaction: persistently its own FREE extent, volatilely
    /// out of every index until the transaction publishes or cancels it.
    case reserved = 5
    /// A segment's unit table (never allocated, freed or merged).
    case table = 6
}

/// Flags in a `UnitInfo` record.
enum UnitFlags {
    /// The extent's storage was punched out of the file.
    static let punched: UInt8 = 1
    /// A run indexed from its FULL hint, header and bitmap not read yet.
    static let unloaded: UInt8 = 2
    /// The owning lane holds unpublished reservations in this run (it must not go to another lane).
    static let pinned: UInt8 = 4
}

extension UnitInfo {
    /// The allocator's kind of the extent (unknown bytes read as `.none`).
    @inline(__always) var kind: VolatileKind {
        get { VolatileKind(rawValue: kindRaw) ?? .none }
        nonmutating set { kindRaw = newValue.rawValue }
    }
}

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
///
/// The class and its two plain entry points, ``allocate(size:alignment:zeroed:)`` and
/// ``free(_:)``, are public (not SPI) so that `Pool`'s inlinable `allocate`/`free` can call them
/// straight from the application's code (one call, as when everything was one module). The
/// module is not a product: nothing here is visible to a user's `import PersistentHeap`.
public final class Heap: @unchecked Sendable {
    @_spi(Allocator) public let bytes: PoolBytes
    @_spi(Allocator) public let persistence: Persistence
    @_spi(Allocator) public let heapOffset: Int
    /// The heap's segments (each starts with the unit table of its own units).
    @_spi(Allocator) public let segments: SegmentGeometry
    /// Byte offset of the first unit of segment 0 after its table (no user range starts lower).
    @usableFromInline let firstDataOffset: Int
    /// Byte offset of the end of segment 0: a range below it needs no per-segment check.
    @usableFromInline let firstSegmentEndOffset: Int
    let maxUnits: Int
    @_spi(Allocator) public let laneOffset: Int
    @_spi(Allocator) public let lanes: LaneTable
    @usableFromInline let poolID: UInt64

    /// Heap units in use. Changes only under the extent lock (growth, shrink); read by every
    /// bounds check without it — atomically: a reader sees the old or the new count, never a torn
    /// one (an acquire load is a plain load on x86 and arm64).
    @_spi(Allocator) public var units: Int {
        @inlinable get { unitCount.load(ordering: .acquiring) }
        set { unitCount.store(newValue, ordering: .releasing) }
    }
    @usableFromInline let unitCount = Atomic<Int>(0)

    /// Per unit: the volatile record of the extent starting there.
    let infos: UnitInfoTable
    private let startMemory: MappedMemory
    private let positionMemory: MappedMemory
    /// Per unit: the start of the extent it belongs to (every unit of a run; the first and last
    /// unit of other extents): O(1) pointer → block, and boundary tags for merging.
    let startOf: FixedArray<UInt32>
    /// Per unit: its index + 1 in the binary heap holding it (0: in none), shared by all heaps.
    let positions: FixedArray<Int32>
    /// `SizeClasses.lookup`, copied: request size / 16 → class index.
    let classLookup: FixedArray<UInt8>
    /// Number of size classes (an instance constant: a static one costs a `swift_once` per use).
    let classCount = SizeClasses.count
    /// `SizeClasses.all`, copied for lookups without array overhead on the hot path.
    let geometry: FixedArray<SizeClass>

    // Size classes: a lock and a heap of runs with free blocks, per class.
    let classLocks: SpinLocks
    let classHeaps: FixedArray<UnitHeap>
    /// Per lane and class: start unit + 1 of the run the lane allocates from (0: none).
    let laneRuns: FixedArray<UInt32>
    /// Per lane: its place in its logs (the lane's thread only).
    let laneLogs: FixedArray<LaneLogState>
    /// Per lane: 0, or a lower bound of the seq of the record it is committing (atomic; see
    /// `checkpoint`).
    let inflight: FixedArray<UInt64>
    /// Per lane: the ranges its applied records changed since the last checkpoint took them
    /// (under the lane's lock in `laneLocks`: the lane's thread appends, a checkpoint empties).
    let dirty: DirtyRanges
    let laneLocks: SpinLocks
    /// The bytes live records wrote (unlogged writes look here first: §5.6).
    let filter = WriteFilter()
    /// Volatile copy of the state page's `retired`, raised once the new value is durable.
    let retired = Atomic<UInt64>(0)
    /// Lines a checkpoint flushed (an open-addressing set, checkpoint lock held: see `flushRanges`).
    let flushedLines: FixedArray<UInt64> = .allocate(count: 4096, repeating: 0)
    /// The current checkpoint's epoch in `flushedLines` (checkpoint lock held).
    var flushEpoch = 0
    /// The dirty ranges a checkpoint gathers, kept between checkpoints (checkpoint lock held).
    var checkpointRanges: [(offset: Int, count: Int)] = []
    /// One checkpoint at a time (a blocking lock: in the msync domain a checkpoint is a system call).
    let checkpointLock = BlockingLock()
    /// New contents up to this size travel inside a record; larger ones are made durable by a
    /// fence of their own first (in the msync domain a fence is a system call: more is logged).
    @_spi(Allocator) public let copyLimit: Int
    /// Per lane and class: the first bitmap word of the lane's run that may hold a free bit.
    let laneHints: FixedArray<UInt32>
    /// Per lane: unpublished small-block reservations (transactions).
    let reservationLists: FixedArray<LaneReservations>

    // Extents.
    static let bucketCount = 72
    let extentLock: SpinLocks
    let buckets: FixedArray<UnitHeap>
    var bucketMask: (UInt64, UInt64) = (0, 0)

    /// The next log record's seq (records are ordered across lanes by it).
    let logSequence = Atomic<UInt64>(1)
    /// Serialises growth and shrink (a blocking lock: they make system calls), so that the extent
    /// lock is never held across them.
    let growthLock = BlockingLock()
    /// Units of taken extents' remainders on their way back to the index (extent lock): growth
    /// waits for them rather than extending the file (`takeFree`).
    var pendingRemainderUnits = 0

    /// Grows the pool file by at least `units` units; returns the new unit count. Set by the pool.
    @_spi(Allocator) public var growFile: ((Int) throws(PoolError) -> Int)?
    /// Gives the tail past `units` units back to the file system. Set by the pool.
    @_spi(Allocator) public var shrinkFile: ((Int) throws(PoolError) -> Void)?
    /// Releases / re-reserves the storage of a unit range (`punch`, `reserve`). Set by the pool
    /// for file pools; nil for simulated ones.
    @_spi(Allocator) public var punchUnits: ((Int, Int) -> Void)?
    @_spi(Allocator) public var reserveUnits: ((Int, Int) throws(PoolError) -> Void)?
    /// Free extents at least this long are punched out of the file.
    var punchThreshold = 64

    @_spi(Allocator) public init(bytes: PoolBytes, persistence: Persistence, header: PoolHeader, lanes: LaneTable, poolID: UInt64) throws(PoolError) {
        self.bytes = bytes
        self.persistence = persistence
        heapOffset = Int(header.heapOffset)
        segments = SegmentGeometry(shift: Int(header.segmentShift))
        firstDataOffset = heapOffset + segments.dataStart(0) << Format.unitShift
        firstSegmentEndOffset = heapOffset + segments.end(0) << Format.unitShift
        maxUnits = Int(header.maxUnits)
        laneOffset = Int(header.laneOffset)
        self.lanes = lanes
        self.poolID = poolID
        unitCount.store(header.units, ordering: .relaxed)
        infos = try UnitInfoTable(units: maxUnits)
        startMemory = try MappedMemory(bytes: maxUnits * 4)
        positionMemory = try MappedMemory(bytes: maxUnits * 4)
        startOf = startMemory.array(of: UInt32.self, count: maxUnits)
        positions = positionMemory.array(of: Int32.self, count: maxUnits)
        classLookup = .allocate(copying: SizeClasses.lookup)
        let classes = SizeClasses.count
        geometry = .allocate(copying: SizeClasses.all)
        classLocks = SpinLocks(count: classes)
        classHeaps = .allocate(count: classes) { _ in UnitHeap() }
        laneRuns = .allocate(count: lanes.count * classes, repeating: 0)
        laneLogs = .allocate(count: lanes.count, repeating: LaneLogState())
        inflight = .allocate(count: lanes.count, repeating: 0)
        dirty = DirtyRanges(lanes: lanes.count)
        laneLocks = SpinLocks(count: lanes.count)
        copyLimit = persistence.domain == .msync ? 2048 : 256
        laneHints = .allocate(count: lanes.count * classes, repeating: 0)
        reservationLists = .allocate(count: lanes.count, repeating: LaneReservations())
        extentLock = SpinLocks(count: 1)
        buckets = .allocate(count: Heap.bucketCount) { _ in UnitHeap() }
    }

    deinit {
        for c in 0..<classHeaps.count { classHeaps[c].deallocate() }
        for b in 0..<buckets.count { buckets[b].deallocate() }
        classHeaps.deallocate()
        geometry.deallocate()
        classLookup.deallocate()
        classLocks.deallocate()
        laneRuns.deallocate()
        laneLogs.deallocate()
        flushedLines.deallocate()
        inflight.deallocate()
        laneLocks.deallocate()
        laneHints.deallocate()
        reservationLists.deallocate()
        buckets.deallocate()
        extentLock.deallocate()
    }

    // MARK: Geometry

    @inline(__always) func info(_ unit: Int) -> UnitInfo { infos[unit] }

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
    @inline(__always) func tableEntryOffset(_ unit: Int) -> Int { heapOffset + segments.entryOffset(unit) }
    @inline(__always) func tableEntry(_ unit: Int) -> UnitEntry { UnitEntry(raw: bytes.u64(tableEntryOffset(unit))) }
    @inline(__always) func laneLogOffset(_ lane: Int) -> Int { laneOffset + lane * Format.laneSize }

    /// End of the pool in bytes.
    @inlinable @_spi(Allocator) public var poolEnd: Int { heapOffset + units << Format.unitShift }

    /// Where a log record may write: the state page, the unit table, the heap, and the lanes'
    /// extension slots (nothing else of the lanes, nor the headers).
    var writableRegions: WritableRegions {
        WritableRegions(ranges: [Format.statePageOffset..<(Format.statePageOffset + Format.page), heapOffset..<poolEnd],
                        laneOffset: laneOffset, laneCount: lanes.count)
    }

    /// Whether `[offset, offset+count)` lies inside the heap's data: inside the pool and in no
    /// segment's unit table. Overflow-safe for any `offset` and `count` (both may come from a
    /// damaged pool).
    @inlinable @inline(__always)
    @_spi(Allocator) public func inHeap(_ offset: Int, _ count: Int) -> Bool {
        let end = poolEnd
        guard offset >= firstDataOffset && count >= 0 && offset <= end && count <= end - offset else { return false }
        return offset + count <= firstSegmentEndOffset || inLaterSegmentData(offset, count)
    }

    /// `inHeap` past segment 0: the range lies after the table of the segment it starts in, and
    /// ends in that segment.
    @usableFromInline
    func inLaterSegmentData(_ offset: Int, _ count: Int) -> Bool {
        let u = (offset - heapOffset) >> Format.unitShift
        let k = segments.segment(of: u)
        return u >= segments.dataStart(k) && offset + count <= heapOffset + segments.end(k) << Format.unitShift
    }

    /// Whether `[offset, offset+count)` is persistent memory the application may change: the
    /// heap, or exactly the root slot (not the rest of the state page, the headers or the lanes).
    @inlinable @inline(__always)
    @_spi(Allocator) public func isUserRange(_ offset: Int, count: Int) -> Bool {
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

    @inline(__always) func lockClass(_ c: Int) { classLocks.lock(c) }
    @inline(__always) func unlockClass(_ c: Int) { classLocks.unlock(c) }
    @inline(__always) func lockExtents() { extentLock.lock(0) }
    @inline(__always) func unlockExtents() { extentLock.unlock(0) }

    /// The lane of the calling thread.
    @inlinable @inline(__always) @_spi(Allocator) public func currentLane() -> Int { lanes.current(poolID: poolID) }

    // MARK: Loading (open)

    /// Rebuilds every volatile index by walking the unit table from unit 0, validating each
    /// extent (well-formed entry, inside the pool; runs: header checksum and geometry, bitmap
    /// padding). Throws `corrupted` at the first impossible value; never reads outside the pool.
    ///
    /// Three passes: the chain of table entries (dense, cheap); the run headers and bitmaps
    /// (one page fault each on a freshly mapped pool: the cost of opening a full pool), checked
    /// and counted in parallel on all cores for large heaps; then the indexes, in address order.
    @_spi(Allocator) public func load() throws(PoolError) {
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
            if let problem = segmentProblem(u, e) { throw PoolError(.corrupted, problem) }
            extents.append((u, e))
            u += e.length
        }
        // Pass 2: per run not hinted full, nil for a bad header, else its used-block count.
        // Each worker writes only its own indexes of `out` (-1: a bad header).
        let out = FixedArray<Int>.allocate(count: extents.count, repeating: 0)
        defer { out.deallocate() }
        let runs = extents.indices.filter { extents[$0].entry.kind == .run && !extents[$0].entry.isHintedFull }
        let runList = runs, extentList = extents
        let work: @Sendable (Range<Int>) -> Void = { range in
            for k in range {
                let i = runList[k]
                out[i] = self.countUsed(run: extentList[i].unit, entry: extentList[i].entry) ?? -1
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
        for (k, (u, e)) in extents.enumerated() {
            switch e.kind ?? .none {
            case .free:
                addFreeExtent(u, length: e.length, punched: false)
            case .used:
                noteUsed(u, length: e.length)
            case .run:
                let g = geometry[e.sizeClass]
                guard e.length == g.units else {
                    throw PoolError(.corrupted, "run at unit \(u) has \(e.length) units; class \(e.sizeClass) runs have \(g.units)")
                }
                let i = info(u)
                i.kind = .run
                i.sizeClass = e.sizeClass
                i.length = e.length
                i.storeOwner(0)
                for k in u..<(u + e.length) { startOf[k] = UInt32(u) }
                if e.isHintedFull {
                    // Read on first use (`ensureLoaded`): opening a full pool touches no run page.
                    i.flags = UnitFlags.unloaded
                    i.storeFreeCount(0)
                    continue
                }
                let usedBlocks = out[k]
                guard usedBlocks >= 0 else {
                    let problem = runHeaderProblem(at: u, sizeClass: e.sizeClass, units: e.length) ?? "bad run header"
                    throw PoolError(.corrupted, "run at unit \(u): \(problem)")
                }
                i.storeFreeCount(Int32(g.blockCount - usedBlocks))
                if usedBlocks < g.blockCount { classHeaps[e.sizeClass].insert(UInt32(u), positions: positions) }
            case .table:
                noteTable(u, length: e.length)
            case .none:
                // Excluded by `isWellFormed` in the first pass; refused rather than trusted.
                throw PoolError(.corrupted, "unit table entry \(u) has no kind")
            }
        }
    }

    /// Why the extent `e` at unit `u` breaks the segment rules (tables exactly at segment
    /// starts, nothing else there, no extent across a segment's end), or nil.
    func segmentProblem(_ u: Int, _ e: UnitEntry) -> String? {
        let k = segments.segment(of: u)
        let isStart = u == segments.start(k)
        if isStart != (e.kind == .table) {
            return isStart ? "unit \(u) starts segment \(k) but holds no unit table" : "unit \(u) holds a unit table but starts no segment"
        }
        if isStart && e.length != segments.tableUnits(k) {
            return "the unit table of segment \(k) is \(e.length) units; it must be \(segments.tableUnits(k))"
        }
        if e.length > segments.end(k) - u { return "extent at unit \(u) of \(e.length) units crosses the end of segment \(k)" }
        return nil
    }

    /// Records a segment's table extent [u, u+n) in the volatile index.
    func noteTable(_ u: Int, length n: Int) { noteExtent(u, length: n, kind: .table) }

    /// Writes the table and free-extent entries of the units [from, to) — a new pool's heap, or
    /// growth beyond the old end — and flushes them (the caller fences). Each segment reached
    /// at its start gets its table extent; the rest of each segment becomes one free extent.
    /// Beyond the recorded pool size every entry is ignored until the header commits the size.
    @_spi(Allocator) public static func writeSegmentEntries(_ bytes: PoolBytes, persistence: Persistence, header: PoolHeader,
                                                            from: Int, to: Int) {
        let g = SegmentGeometry(shift: Int(header.segmentShift))
        forEachSegmentPiece(g, from: from, to: to) { u, entry in
            let at = Int(header.heapOffset) + g.entryOffset(u)
            bytes.setU64(at, entry.raw)
            persistence.flush(offset: at, count: 8)
        }
    }

    /// Calls `body` with the first unit and entry of each table and free extent that growth from
    /// `from` to `to` units creates (in address order).
    static func forEachSegmentPiece(_ g: SegmentGeometry, from: Int, to: Int, _ body: (Int, UnitEntry) -> Void) {
        var pos = from
        while pos < to {
            let k = g.segment(of: pos)
            let end = min(to, g.end(k))
            var free = pos
            if pos == g.start(k) {
                body(pos, UnitEntry(kind: .table, length: g.tableUnits(k)))
                free = g.dataStart(k)
            }
            if free < end { body(free, UnitEntry(kind: .free, length: end - free)) }
            pos = end
        }
    }

    /// Reads a run indexed from its FULL hint: validates its header and counts its free blocks.
    /// Called before anything reads its bitmap.
    @inline(__always)
    func ensureLoaded(_ r: Int) throws(PoolError) {
        if info(r).flags & UnitFlags.unloaded != 0 { try loadHinted(r) }
    }

    @inline(never)
    private func loadHinted(_ r: Int) throws(PoolError) {
        let i = info(r)
        let c = i.sizeClass
        lockClass(c)
        defer { unlockClass(c) }
        guard i.flags & UnitFlags.unloaded != 0 else { return }
        let e = tableEntry(r)
        guard let usedBlocks = countUsed(run: r, entry: e) else {
            let problem = runHeaderProblem(at: r, sizeClass: c, units: i.length) ?? "bad run header"
            throw PoolError(.corrupted, "run at unit \(r): \(problem)")
        }
        let free = geometry[c].blockCount - usedBlocks
        i.addFreeCount(Int32(free))
        i.flags &= ~UnitFlags.unloaded
        if i.freeCount > 0 && i.owner == 0 && positions[r] == 0 && i.flags & UnitFlags.pinned == 0 {
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
        let bitmap = unitOffset(u) + RunField.bitmap
        var used = 0
        for w in 0..<g.bitmapWords { used += bytes.u64(bitmap + w << 3).nonzeroBitCount }
        return used - (g.bitmapWords * 64 - g.blockCount)
    }

    /// Checks the header of the run at unit `u` against the geometry of its class; nil when sound.
    func runHeaderProblem(at u: Int, sizeClass c: Int, units n: Int) -> String? {
        let cls = geometry[c]
        let h = unitOffset(u)
        if bytes.u32(h + RunField.magic) != RunField.magicValue { return "bad run magic" }
        let crc = bytes.crc32c(h, count: RunField.checksum)
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
        bytes.zero(h, count: RunField.bitmap + cls.bitmapWords * 8)
        bytes.setU32(h + RunField.magic, RunField.magicValue)
        bytes.setU16(h + RunField.sizeClass, UInt16(c))
        bytes.setU16(h + RunField.units, UInt16(cls.units))
        bytes.setU32(h + RunField.blockSize, UInt32(cls.blockSize))
        bytes.setU32(h + RunField.blockCount, UInt32(cls.blockCount))
        bytes.setU32(h + RunField.dataOffset, UInt32(cls.dataOffset))
        bytes.setU32(h + RunField.bitmapWords, UInt32(cls.bitmapWords))
        bytes.setU32(h + RunField.checksum, bytes.crc32c(h, count: RunField.checksum))
        let tail = cls.blockCount & 63
        if tail != 0 { bytes.setU64(h + RunField.bitmap + (cls.bitmapWords - 1) * 8, ~UInt64(0) << UInt64(tail)) }
    }
}
