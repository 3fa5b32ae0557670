#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

/// What `pheap info` shows: the header, the shutdown state and the root.
public struct PoolInfo: Sendable, Equatable, Codable {
    /// The layout name given at creation.
    public var layout: String
    /// Format version "major.minor".
    public var version: String
    /// Bytes in use by the pool (the file may be larger after an interrupted shrink).
    public var size: Int
    /// The size the pool may grow to.
    public var maxSize: Int
    /// Bytes added per growth (0: fixed size).
    public var growthStep: Int
    /// The pool's UUID (random, set at creation).
    public var uuid: String
    /// The persistence domain: the one in use for an open pool; for a file read by
    /// ``read(path:)``, the one `open` would choose.
    public var domain: String
    /// "clean" when the last session closed the pool; "dirty" when it is open or crashed
    /// (``inUse`` tells which).
    public var state: String
    /// Whether a process (this one included) has the pool open for writing. Set by
    /// ``read(path:)``, which probes the writer's lock without waiting; true for ``Pool/info``.
    /// A dirty pool not in use was not closed cleanly: a crash or a kill, recovered at the next open.
    public var inUse: Bool
    /// Pool offset of the root object, 0 when there is none.
    public var rootOffset: UInt64
    /// Creation time, seconds since 1970.
    public var created: Double
    /// Number of lanes (concurrent threads without waiting).
    public var lanes: Int
    /// Offset of the first heap unit.
    public var heapOffset: Int
    /// Segments of the heap (each starts with the unit table of its own units; see
    /// docs/ARCHITECTURE.md §2).
    public var segments: Int
    /// Bytes of allocator metadata at the current size: headers, state page, lanes and the
    /// segments' unit tables (proportional to the current size, not to the maximum).
    public var metadataBytes: Int

    /// The state in words: clean, in use, or not closed cleanly.
    public var stateDescription: String {
        if state == "clean" { return "clean (closed)" }
        return inUse ? "in use by another process (open for writing)"
            : "not closed cleanly (crashed or killed): recovery runs at the next open"
    }

    init(header h: PoolHeader, domain: String, state: UInt64, root: UInt64, inUse: Bool) {
        self.inUse = inUse
        layout = h.layout
        version = "\(h.major).\(h.minor)"
        size = Int(h.poolSize)
        maxSize = Int(h.maxSize)
        growthStep = Int(h.growStep)
        uuid = PoolInfo.format(uuid: h.uuid)
        self.domain = domain
        self.state = state == ShutdownState.clean ? "clean" : "dirty"
        rootOffset = root
        created = Double(h.createdNanos) / 1e9
        lanes = Int(h.laneCount)
        heapOffset = Int(h.heapOffset)
        let g = SegmentGeometry(shift: Int(h.segmentShift))
        segments = g.segment(of: h.units - 1) + 1
        metadataBytes = heapOffset + g.tableUnits(inHeapOf: h.units) << Format.unitShift
    }

    static func format(uuid u: [UInt8]) -> String {
        let hex = u.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
        return [hex[0..<4], hex[4..<6], hex[6..<8], hex[8..<10], hex[10..<16]].map { $0.joined() }.joined(separator: "-")
    }

    /// Reads the information of the pool file at `path` without opening it for use: no lock is
    /// taken, nothing is mapped or written, so it works on a pool another process has open and
    /// on a pool left dirty by a crash.
    public static func read(path: String) throws(PoolError) -> PoolInfo {
        let fd = try FileDescriptor.open(path, flags: O_RDONLY)
        defer { fd.close() }
        let st = try fd.stat()
        if st.st_mode & S_IFMT == S_IFDIR { throw PoolError(.isDirectory, "is a directory, not a pool file", path: path) }
        let (header, _) = try HeaderSelection.read(fd, fileSize: Int(st.st_size))
        guard Int(header.poolSize) <= Int(st.st_size) else {
            throw PoolError(.truncated, "the header records a pool of \(header.poolSize) bytes but the file has \(st.st_size)", path: path)
        }
        let state = StatePage(try fd.read(count: StatePage.size, at: Format.statePageOffset))
        let domain = Pool.chooseDomain(.automatic, mapSync: false)
        // A writer holds an exclusive lock: a shared one is refused while it runs (the probe
        // is released when `fd` closes; a writer opening at this instant waits ≤ 20 ms for it).
        var inUse = false
        do { try fd.lock(exclusive: false) } catch { inUse = error.code == .poolBusy }
        return PoolInfo(header: header, domain: domain.rawValue, state: state.shutdown, root: state.root, inUse: inUse)
    }
}

extension Pool {
    /// The pool's header information and state.
    public var info: PoolInfo {
        PoolInfo(header: currentHeader, domain: persistence.domain.rawValue,
                 state: isClosed ? ShutdownState.clean : bytes.u64(StateField.shutdown),
                 root: isClosed ? 0 : bytes.u64(StateField.rootSlot), inUse: !isClosed && !isReadOnly)
    }

    /// The layout name.
    public var layout: String { header.layout }
    /// Bytes in use by the pool.
    public var size: Int { heap.poolEnd }
    /// The size the pool may grow to.
    public var maxSize: Int { Int(header.maxSize) }
    /// The pool's UUID.
    public var uuid: String { PoolInfo.format(uuid: header.uuid) }
}
