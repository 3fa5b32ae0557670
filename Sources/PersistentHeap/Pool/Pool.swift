#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator
import Logging
import Synchronization

/// A persistent heap in one file, mapped into memory.
///
/// ```swift
/// let pool = try Pool.create(path: "/mnt/pmem/app.pool", size: 64 << 20, layout: "app")
/// let root = try pool.root(Counter.self)
/// try pool.withMutable(root) { $0.value += 1 }   // stored and persisted
/// try pool.close()
/// ```
///
/// A pool is created once (`create`), then opened (`open`) by one writer at a time — a second
/// writer, in this process or another, gets `PoolError.Code.poolBusy`. Opening runs recovery:
/// operations interrupted by a crash are finished or rolled back before `open` returns.
///
/// The base address of the mapping never changes while the pool is open, even when it grows;
/// persistent data refers to other persistent data only by ``PPointer`` (an offset), so a pool
/// works at any address.
///
/// All methods are thread-safe, except ``close()``, which must not race with other calls.
public final class Pool: @unchecked Sendable {
    /// The pool file, or nil for a simulated pool.
    public let path: String?
    /// Whether the pool was opened read-only.
    public let isReadOnly: Bool
    /// Whether the previous session ended with ``close()``. False after a crash or kill: recovery ran.
    public let previousShutdownWasClean: Bool
    /// Whether a damaged header copy was rewritten from the other one during `open`.
    public let repairedHeader: Bool
    /// Log records recovery replayed at open: operations acknowledged before a crash whose
    /// effects a checkpoint had not yet written back in place (0 after a clean close).
    public let recoveredOperations: Int
    /// Where the pool reports its rare events (``PoolOptions/logger``), or nil.
    public let logger: Logger?
    /// This session's number (the count of read-write opens); persistent mutexes compare against it.
    private(set) var session: UInt64 = 0

    let mapping: PoolMapping
    /// The persistence layer of this pool.
    public let persistence: Persistence
    @_spi(Containers) public let heap: Heap
    /// `heap` again, for the inlinable `allocate`/`free` (an SPI property cannot be named there).
    @usableFromInline let allocator: Heap
    let lanes: LaneTable
    let poolID: UInt64
    @_spi(Containers) public let bytes: PoolBytes
    /// The header as read (or made) at open. Immutable: the pool's current size is the heap's
    /// (``size``); growth and shrink write copies with the new size (``writeHeader(poolSize:)``).
    let header: PoolHeader
    /// `header.maxSize`, kept apart: reading a field of `header` on the hot path would copy
    /// the struct (and retain its array and string).
    @usableFromInline let maxRequest: Int
    /// True until `init` completes, and after `close()`: a failed open never runs `close()`.
    @usableFromInline let closed = Atomic<Bool>(true)
    /// Per lane: the lane's transaction state (created on first use, touched only by the lane's
    /// thread). `txStates` is `transactionStates.base`, kept apart for the hot path.
    let txStates: FixedArray<FixedArray<TransactionState>?>
    /// Owns `txStates` (freed when the pool goes away — including when `init` fails midway,
    /// where no `deinit` runs).
    private let transactionStates: TransactionStates
    let rootLock = BlockingLock()

    /// The simulated media (tests), or nil for a file pool.
    public var simulatedMedia: SimulatedMedia? { persistence.media }

    private init(path: String?, mapping: PoolMapping, header: PoolHeader, domain: PersistenceDomain,
                 media: SimulatedMedia?, readOnly: Bool, repair: HeaderSelection.Repair, logger: Logger?) throws(PoolError) {
        self.path = path
        self.logger = logger
        self.mapping = mapping
        self.header = header
        maxRequest = Int(header.maxSize)
        isReadOnly = readOnly
        poolID = PoolIdentity.make()
        bytes = mapping.bytes
        lanes = LaneTable(count: Int(header.laneCount))
        transactionStates = TransactionStates(count: Int(header.laneCount))
        txStates = transactionStates.states
        persistence = Persistence(domain: domain, mapping: mapping, media: media)
        heap = try Heap(bytes: bytes, persistence: persistence, header: header, lanes: lanes, poolID: poolID)
        allocator = heap
        assert(Pool.maxAlignment == Format.unitSize, "Pool.maxAlignment must be the heap's unit")

        let state = bytes.u64(StateField.shutdown)
        previousShutdownWasClean = state == ShutdownState.clean
        // Nothing is written before the logs and the heap have been validated, except the
        // replay of valid logs (what any open does) — and that is undone if the heap then
        // turns out to be damaged: a failed open leaves the file as it found it.
        let report = try heap.recover(laneCount: Int(header.laneCount), readOnly: readOnly)
        recoveredOperations = report.replayedRecords
        repairedHeader = repair != .none && !readOnly
        do throws(PoolError) {
            try heap.load()
            try validateRoot()
        } catch {
            if !readOnly { heap.undoRecovery(report) }
            throw PoolError(error.code, error.message, path: path, errno: error.errno)
        }
        if !readOnly {
            switch repair {
            case .none: break
            case .primary: writeHeaderCopy(header, at: Format.primaryHeaderOffset)
            case .backup: writeHeaderCopy(header, at: Format.backupHeaderOffset)
            }
            try heap.freeLeftoverExtensions(laneCount: Int(header.laneCount))
            // Dirty until close(): a crash from here on is detected at the next open.
            bytes.atomicStore(StateField.shutdown, ShutdownState.dirty, .releasing)
            bytes.atomicStore(StateField.session, bytes.u64(StateField.session) &+ 1, .releasing)
            persistence.persist(offset: Format.statePageOffset, count: 16)
        }
        session = bytes.u64(StateField.session)
        logOpen(domain: domain)
        installCallbacks()
        LaneRegistry.register(poolID, lanes)
        lanes.onRelease = { [heap, txStates] lane in
            Pool.cancelHeld(lane: lane, states: txStates, heap: heap)
            heap.releaseLaneRuns(lane)
        }
        closed.store(false, ordering: .releasing)
    }

    deinit {
        if !closed.load(ordering: .acquiring) { try? close() }
    }

    // MARK: Creating

    /// Creates a pool file of `size` bytes at `path` (which must not exist) for `layout`.
    ///
    /// - Parameters:
    ///   - path: where to create the file (its directory must exist).
    ///   - size: the initial file size in bytes (at least 256 KiB; rounded down to 4 KiB).
    ///   - layout: a name the application chooses, at most 64 bytes of UTF-8; `open` refuses a
    ///     pool whose layout differs.
    ///   - options: durability, maximum size, growth step, lanes, logger (``PoolOptions``).
    /// - Throws: `alreadyExists`, `tooSmall`, `invalidArgument`, `permissionDenied`, `outOfSpace`, `ioError`.
    public static func create(path: String, size: Int, layout: String, options: PoolOptions = PoolOptions()) throws(PoolError) -> Pool {
        let header = try makeHeader(size: size, layout: layout, options: options, path: path)
        let fd = try FileDescriptor.open(path, flags: O_RDWR | O_CREAT | O_EXCL, mode: 0o644)
        var mapping: PoolMapping?  // owns `fd` once made
        do throws(PoolError) {
            try fd.lock(exclusive: true)
            let poolSize = Int(header.poolSize)
            try fd.truncate(to: poolSize)
            // Reserve the file's blocks, so stores through the mapping never fault for lack of space.
            try fd.allocateSpace(offset: 0, length: poolSize)
            let m = try PoolMapping(file: fd, size: poolSize, reserve: Int(header.maxSize), writable: true,
                                    trySync: options.durability == .automatic)
            mapping = m
            let domain = chooseDomain(options.durability, mapSync: m.mapSync)
            let persistence = Persistence(domain: domain, mapping: m, media: nil)
            format(m.bytes, header: header, persistence: persistence)
            return try Pool(path: path, mapping: m, header: header, domain: domain, media: nil, readOnly: false, repair: .none, logger: options.logger)
        } catch {
            // Nothing of value was written yet: remove the partial file.
            unlink(path)
            if let mapping { mapping.release() } else { fd.close() }
            throw error
        }
    }

    /// Creates a pool in process memory whose durability is simulated (see `SimulatedMedia`).
    /// For tests: crash images taken from its media can be opened with ``openSimulated(image:layout:options:onFence:)``.
    public static func createSimulated(size: Int, layout: String, options: PoolOptions = PoolOptions()) throws(PoolError) -> Pool {
        let header = try makeHeader(size: size, layout: layout, options: options, path: nil)
        let poolSize = Int(header.poolSize)
        let mapping = try PoolMapping(anonymousSize: poolSize, reserve: Int(header.maxSize), image: nil)
        let media = SimulatedMedia(mapping: mapping, size: poolSize)
        let persistence = Persistence(domain: .simulated, mapping: mapping, media: media)
        format(mapping.bytes, header: header, persistence: persistence)
        return try Pool(path: nil, mapping: mapping, header: header, domain: .simulated, media: media, readOnly: false, repair: .none, logger: options.logger)
    }

    /// Opens a simulated pool from a crash image (or any pool image), running recovery on it.
    /// The new pool's durable image starts as `image`. `onFence`, when given, is installed
    /// before recovery runs, so recovery itself can be crash-tested.
    public static func openSimulated(image: [UInt8], layout: String, options: PoolOptions = PoolOptions(),
                                     onFence: (@Sendable (SimulatedMedia, Int) -> Void)? = nil) throws(PoolError) -> Pool {
        let (header, repair) = try HeaderSelection.select(image: image, path: nil)
        try checkLayout(header, layout, path: nil)
        guard Int(header.poolSize) <= image.count else {
            throw PoolError(.truncated, "the header records \(header.poolSize) bytes but the image has \(image.count)")
        }
        let poolSize = Int(header.poolSize)
        let mapping = try PoolMapping(anonymousSize: poolSize, reserve: Int(header.maxSize), image: image)
        let media = SimulatedMedia(mapping: mapping, size: poolSize, durableImage: image)
        media.onFence = onFence
        return try Pool(path: nil, mapping: mapping, header: header, domain: .simulated, media: media,
                        readOnly: options.readOnly, repair: repair, logger: options.logger)
    }

    /// Opens a simulated pool from `snapshot` with `writes` applied — the image copied on write,
    /// page by page, never whole (crash testing: `PersistentHeapTesting`). Recovery runs; `onFence`
    /// is installed before it, as in ``openSimulated(image:layout:options:onFence:)``.
    @_spi(Testing) public static func openSimulated(snapshot: DurableSnapshot, writes: [LineWrite], layout: String,
                                                   options: PoolOptions = PoolOptions(),
                                                   onFence: (@Sendable (SimulatedMedia, Int) -> Void)? = nil) throws(PoolError) -> Pool {
        let primary = try snapshot.bytes(applying: writes, offset: Format.primaryHeaderOffset, count: Format.headerSize)
        let backup = try snapshot.bytes(applying: writes, offset: Format.backupHeaderOffset, count: Format.headerSize)
        let (header, repair) = try HeaderSelection.select(primary: primary, backup: backup.count == Format.headerSize ? backup : nil, path: nil)
        try checkLayout(header, layout, path: nil)
        guard Int(header.poolSize) <= snapshot.size else {
            throw PoolError(.truncated, "the header records \(header.poolSize) bytes but the image has \(snapshot.size)")
        }
        let poolSize = Int(header.poolSize)
        let mapping = try PoolMapping(size: poolSize, reserve: Int(header.maxSize), snapshot: snapshot, writes: writes)
        let media = try SimulatedMedia(mapping: mapping, size: poolSize, snapshot: snapshot, writes: writes)
        media.onFence = onFence
        return try Pool(path: nil, mapping: mapping, header: header, domain: .simulated, media: media,
                        readOnly: options.readOnly, repair: repair, logger: options.logger)
    }

    static func makeHeader(size: Int, layout: String, options: PoolOptions, path: String?) throws(PoolError) -> PoolHeader {
        guard layout.utf8.count <= Format.layoutNameMax else {
            throw PoolError(.invalidArgument, "layout name is \(layout.utf8.count) bytes; at most \(Format.layoutNameMax) are allowed", path: path)
        }
        guard !layout.utf8.contains(0) else { throw PoolError(.invalidArgument, "layout name contains a NUL byte", path: path) }
        let limit = Int(PoolGeometry.sizeLimit)
        let maxSize = max(options.maxSize ?? min(size.multipliedReportingOverflow(by: 16).overflow ? limit : size * 16, limit), size)
        let lanes = options.laneCount ?? min(64, max(2, size / (256 << 10)))
        let plan = try PoolGeometry.plan(size: size, maxSize: maxSize, lanes: lanes, path: path)
        let step = options.growthStep ?? size
        guard step >= 0 else { throw PoolError(.invalidArgument, "negative growth step", path: path) }
        guard step <= limit else { throw PoolError(.invalidArgument, "growth step \(step) exceeds 16 TiB", path: path) }
        var uuid = [UInt8](repeating: 0, count: 16)
        var rng = SystemRandomNumberGenerator()
        for i in 0..<16 { uuid[i] = rng.next() }
        uuid[6] = uuid[6] & 0x0f | 0x40 // version 4
        uuid[8] = uuid[8] & 0x3f | 0x80 // variant 1
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return PoolHeader(
            uuid: uuid, layout: layout, createdNanos: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec),
            poolSize: UInt64(plan.poolSize), maxSize: UInt64(min(max(maxSize, plan.poolSize), plan.maxSize)),
            growStep: UInt64(step), laneOffset: UInt64(Format.laneRegionOffset), laneCount: UInt32(lanes),
            segmentShift: UInt32(plan.segments.shift), heapOffset: UInt64(plan.heapOffset), maxUnits: UInt32(plan.maxUnits))
    }

    /// Writes the initial metadata of a new pool: state page, one free extent, then both header
    /// copies last — a crash before that leaves a file `open` rejects as not a pool.
    static func format(_ bytes: PoolBytes, header: PoolHeader, persistence: Persistence) {
        bytes.setU64(StateField.shutdown, ShutdownState.clean)
        bytes.setU64(StateField.session, 0)
        bytes.setU64(StateField.rootSlot, 0)
        persistence.flush(offset: Format.statePageOffset, count: Format.page)
        // Segment 0: its table extent, then one free extent (what growth from nothing would write).
        Heap.writeSegmentEntries(bytes, persistence: persistence, header: header, from: 0, to: header.units)
        persistence.drain()
        let encoded = header.encode()
        for at in [Format.primaryHeaderOffset, Format.backupHeaderOffset] {
            bytes.copy(encoded, to: at)
            persistence.persist(offset: at, count: Format.headerSize)
        }
    }

    // MARK: Opening

    /// Opens the pool at `path`, which must have been created with `layout`.
    ///
    /// Recovery runs before this returns (read-write opens): operations interrupted by a crash
    /// are completed or undone. ``previousShutdownWasClean`` tells whether the last session
    /// closed the pool.
    ///
    /// - Throws: `fileNotFound`, `isDirectory`, `permissionDenied`, `tooSmall`, `notAPool`,
    ///   `corruptedHeader`, `truncated`, `layoutMismatch`, `versionTooNew`,
    ///   `unsupportedFeature`, `poolBusy`, `corrupted`, `ioError`.
    public static func open(path: String, layout: String, options: PoolOptions = PoolOptions()) throws(PoolError) -> Pool {
        let readOnly = options.readOnly
        let fd = try FileDescriptor.open(path, flags: readOnly ? O_RDONLY : O_RDWR)
        var mapping: PoolMapping?  // owns `fd` once made
        do throws(PoolError) {
            let st = try fd.stat()
            if st.st_mode & S_IFMT == S_IFDIR { throw PoolError(.isDirectory, "is a directory, not a pool file", path: path) }
            guard st.st_mode & S_IFMT == S_IFREG else {
                throw PoolError(.invalidArgument, "not a regular file", path: path)
            }
            try fd.lock(exclusive: !readOnly)
            let fileSize = Int(st.st_size)
            let (header, repair) = try readHeader(fd, fileSize: fileSize)
            try checkLayout(header, layout, path: path)
            guard Int(header.poolSize) <= fileSize else {
                throw PoolError(.truncated, "the header records a pool of \(header.poolSize) bytes but the file has \(fileSize)", path: path)
            }
            let m = try PoolMapping(file: fd, size: Int(header.poolSize), reserve: Int(header.maxSize),
                                    writable: !readOnly, trySync: options.durability == .automatic)
            mapping = m
            return try Pool(path: path, mapping: m, header: header, domain: chooseDomain(options.durability, mapSync: m.mapSync),
                            media: nil, readOnly: readOnly, repair: repair, logger: options.logger)
        } catch {
            if let mapping { mapping.release() } else { fd.close() }
            throw error
        }
    }

    /// Opens the pool at `path`, or creates it there if no file exists at `path` — the call an
    /// application makes at start-up.
    ///
    /// ```swift
    /// let pool = try Pool.openOrCreate(path: "todo.pool", size: 8 << 20, layout: "todo")
    /// ```
    ///
    /// It creates the pool file and nothing else (a missing directory is an error, not made). An
    /// existing file is opened exactly as ``open(path:layout:options:)`` opens it, with the
    /// layout check and recovery; it is never replaced, whatever it holds. When another process
    /// creates the file between the two steps, the one that lost the race opens it.
    ///
    /// - Parameters:
    ///   - path: the pool file (its directory must exist).
    ///   - size: the initial size if the pool is created (see ``create(path:size:layout:options:)``).
    ///   - layout: the application's layout name: checked when the pool exists, recorded when created.
    ///   - options: used for both; the `create`-only options apply only when the pool is created.
    ///     With `readOnly`, a missing pool is an error (`fileNotFound`): nothing is created.
    /// - Throws: what ``open(path:layout:options:)`` and ``create(path:size:layout:options:)`` throw.
    public static func openOrCreate(path: String, size: Int, layout: String,
                                    options: PoolOptions = PoolOptions()) throws(PoolError) -> Pool {
        do {
            return try open(path: path, layout: layout, options: options)
        } catch where error.code == .fileNotFound && !options.readOnly {
            do {
                return try create(path: path, size: size, layout: layout, options: options)
            } catch where error.code == .alreadyExists {
                return try open(path: path, layout: layout, options: options)
            }
        }
    }

    /// Reads and selects a header from the file with `pread` (no mapping: a short file cannot fault).
    static func readHeader(_ fd: FileDescriptor, fileSize: Int) throws(PoolError) -> (PoolHeader, HeaderSelection.Repair) {
        try HeaderSelection.read(fd, fileSize: fileSize)
    }

    static func checkLayout(_ header: PoolHeader, _ layout: String, path: String?) throws(PoolError) {
        guard header.layout == layout else {
            throw PoolError(.layoutMismatch, "the pool has layout \"\(header.layout)\", not \"\(layout)\"", path: path)
        }
    }

    static func chooseDomain(_ d: PoolOptions.Durability, mapSync: Bool) -> PersistenceDomain {
        switch d {
        case .automatic:
            if mapSync { return .cacheLineFlush }
            if let force = getenv("PHEAP_FORCE_PMEM"), String(cString: force) == "1" { return .cacheLineFlush }
            return .msync
        case .cacheLineFlush: return .cacheLineFlush
        case .fenceOnly: return .fenceOnly
        case .msync: return .msync
        }
    }

    // MARK: Closing

    /// Makes everything durable, marks the pool cleanly closed, unmaps it and releases the lock.
    /// Further calls on this pool throw `PoolError.Code.closed`. Calling `close` twice is harmless.
    ///
    /// - Throws: `transactionMisuse` when called inside a transaction of this pool on this
    ///   thread (the pool stays open: close it after the transaction body returns).
    public func close() throws(PoolError) {
        if !closed.load(ordering: .acquiring) {
            let lane = ThreadContext.lane(inPool: poolID)
            if lane >= 0, let state = txStates[lane], state[0].active {
                throw PoolError(.transactionMisuse, "close() inside a transaction of this pool: close it after the transaction body returns", path: path)
            }
        }
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if !isReadOnly {
            // A cleanly closed pool holds no log extension block (a failure here leaves one
            // linked, which the next open frees).
            try? heap.releaseLogExtensions(laneCount: lanes.count)
        }
        LaneRegistry.unregister(poolID)
        lanes.onRelease = nil
        lanes.releaseCurrent(poolID: poolID)
        if !isReadOnly {
            for lane in 0..<lanes.count {
                Pool.cancelHeld(lane: lane, states: txStates, heap: heap)
                heap.releaseLaneRuns(lane)
            }
            // Every record written back in place and retired: a clean pool has no live record.
            heap.checkpointAll()
            bytes.atomicStore(StateField.shutdown, ShutdownState.clean, .releasing)
            persistence.persist(offset: StateField.shutdown, count: 8)
        }
        if let file = mapping.file, !isReadOnly, persistence.domain != .msync {
            // Page-cache backed mappings also need the file's metadata on disk.
            try? file.sync()
        }
        persistence.media?.detach()
        mapping.release()
        logger?.debug("pool closed", metadata: logMetadata)
    }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { closed.load(ordering: .acquiring) }

    @inlinable @inline(__always)
    func checkOpen() throws(PoolError) {
        if closed.load(ordering: .relaxed) { throw PoolError(.closed, "the pool is closed", path: path) }
    }

    @inlinable @inline(__always)
    func checkWritable() throws(PoolError) {
        try checkOpen()
        if isReadOnly { throw PoolError(.readOnly, "the pool is open read-only", path: path) }
    }

    // MARK: Header, growth, shrink

    /// The header as it is now: `header` with the current pool size.
    var currentHeader: PoolHeader {
        var h = header
        h.poolSize = UInt64(heap.poolEnd)
        return h
    }

    /// Rewrites both header copies with pool size `poolSize`: primary, persist, backup, persist.
    /// A torn write leaves one good copy, which the next open prefers and repairs the other from.
    func writeHeader(poolSize: Int) {
        var h = header
        h.poolSize = UInt64(poolSize)
        writeHeaderCopy(h, at: Format.primaryHeaderOffset)
        writeHeaderCopy(h, at: Format.backupHeaderOffset)
    }

    private func writeHeaderCopy(_ h: PoolHeader, at offset: Int) {
        bytes.copy(h.encode(), to: offset)
        persistence.persist(offset: offset, count: Format.headerSize)
    }

    private func installCallbacks() {
        heap.growFile = { [unowned self] target throws(PoolError) -> Int in try self.grow(toAtLeastUnits: target) }
        heap.shrinkFile = { [unowned self] keep throws(PoolError) in try self.shrinkFile(toUnits: keep) }
        if let file = mapping.file {
            let heapOffset = Int(header.heapOffset)
            heap.punchUnits = { u, n in file.punchHole(offset: heapOffset + u << Format.unitShift, length: n << Format.unitShift) }
            heap.reserveUnits = { u, n throws(PoolError) in
                try file.allocateSpace(offset: heapOffset + u << Format.unitShift, length: n << Format.unitShift)
            }
        }
    }

    /// Growth (growth lock held, not the extent lock): extend and map the file, pre-write the
    /// new units' table and free extents, then commit the new size in the header. The heap ends
    /// at `target` units or more (one growth step when the maximum allows); returns the new count.
    private func grow(toAtLeastUnits target: Int) throws(PoolError) -> Int {
        // Every header value is ≤ 16 TiB (PoolHeader.inconsistency), so nothing below overflows.
        let heapOffset = Int(header.heapOffset)
        let old = heap.units
        let step = Int(header.growStep)
        guard step > 0 else {
            throw PoolError(.outOfSpace, "the pool is full and growth is disabled (growth step 0)", path: path)
        }
        let limit = (Int(header.maxSize) - heapOffset) >> Format.unitShift
        let stepUnits = (step + Format.unitSize - 1) >> Format.unitShift
        guard let newUnits = heap.segments.growthEnd(target: target, old: old, stepUnits: stepUnits, limit: limit) else {
            throw PoolError(.outOfSpace, "the pool is full: it has reached its maximum size of \(header.maxSize) bytes", path: path)
        }
        let newSize = heapOffset + newUnits << Format.unitShift
        try mapping.grow(to: newSize)
        persistence.media?.grow(to: newSize)
        heap.prewriteGrowth(from: old, to: newUnits, header: header)
        writeHeader(poolSize: newSize)
        logger?.info("pool grown", metadata: logMetadata.merging(
            ["pheap.from": "\(heapOffset + old << Format.unitShift)", "pheap.to": "\(newSize)"]) { a, _ in a })
        return newUnits
    }

    /// Shrink (extent lock held): commit the smaller size in the header, then unmap and truncate.
    private func shrinkFile(toUnits keep: Int) throws(PoolError) {
        let newSize = Int(header.heapOffset) + keep << Format.unitShift
        writeHeader(poolSize: newSize)
        try mapping.shrink(to: newSize)
        persistence.media?.shrink(to: newSize)
        logger?.info("pool shrunk", metadata: logMetadata.merging(["pheap.to": "\(newSize)"]) { a, _ in a })
    }

    /// The metadata of every event: the pool's path (or "simulated").
    var logMetadata: Logger.Metadata { ["pheap.pool": "\(path ?? "simulated")"] }

    /// The open's events: an unclean previous shutdown, records replayed, a header repaired.
    private func logOpen(domain: PersistenceDomain) {
        guard let logger else { return }
        let meta = logMetadata
        if !previousShutdownWasClean {
            logger.warning("pool was not closed cleanly (a crash or a kill): recovery ran",
                           metadata: meta.merging(["pheap.replayed": "\(recoveredOperations)"]) { a, _ in a })
        }
        if recoveredOperations > 0 {
            logger.notice("recovery replayed \(recoveredOperations) log record(s)",
                          metadata: meta.merging(["pheap.replayed": "\(recoveredOperations)"]) { a, _ in a })
        }
        if repairedHeader {
            logger.warning("a damaged header copy was rewritten from the other copy", metadata: meta)
        }
        logger.debug("pool opened", metadata: meta.merging(
            ["pheap.domain": "\(domain.rawValue)", "pheap.size": "\(heap.poolEnd)", "pheap.readOnly": "\(isReadOnly)"]) { a, _ in a })
    }
}
