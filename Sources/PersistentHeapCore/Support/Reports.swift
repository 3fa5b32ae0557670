// What the allocator's check reports: data only (the check itself is the allocator's).

/// Allocation statistics of a pool.
public struct PoolStats: Sendable, Codable, Equatable {
    /// Blocks of one size class.
    public struct SizeClassStats: Sendable, Codable, Equatable {
        @_spi(Core) public init(blockSize: Int, runs: Int, objects: Int, freeBlocks: Int) {
            self.blockSize = blockSize
            self.runs = runs
            self.objects = objects
            self.freeBlocks = freeBlocks
        }
        /// Bytes per block.
        public var blockSize: Int
        /// Runs of this class.
        public var runs: Int
        /// Live blocks.
        public var objects: Int
        /// Free blocks in those runs.
        public var freeBlocks: Int
    }

    /// Bytes of the pool file in use.
    public var poolSize = 0
    /// Bytes of heap units (the pool minus its metadata).
    public var heapSize = 0
    /// Usable bytes of live allocations.
    public var allocatedBytes = 0
    /// Free bytes: free extents plus free blocks inside runs.
    public var freeBytes = 0
    /// Bytes of free extents (whole free units).
    public var freeExtentBytes = 0
    /// Live allocations.
    public var objects = 0
    /// Live allocations larger than 16 KiB (whole units).
    public var largeObjects = 0
    /// Runs of small blocks.
    public var runs = 0
    /// Lanes' redo-log extension blocks (allocator metadata kept across large transactions; not
    /// counted in ``objects`` or ``allocatedBytes``).
    public var logExtensions = 0
    /// Usable bytes of those blocks.
    public var logExtensionBytes = 0
    /// Bytes of run headers and bitmaps, and the slack at the end of runs.
    public var runOverheadBytes = 0
    /// Bytes of the segments' unit tables (inside the heap: one 8-byte entry per unit).
    public var unitTableBytes = 0
    /// Bytes of the largest free extent.
    public var largestFreeExtent = 0
    /// Free extents (after merging neighbours).
    public var freeExtents = 0
    /// External fragmentation of the extent space: 1 − largest free extent / free extent bytes
    /// (0 when all free extent space is one extent).
    public var fragmentation = 0.0
    /// Size classes with at least one run.
    public var sizeClasses: [SizeClassStats] = []

    @_spi(Core) public init() {}
}

/// The result of `Pool.check()`.
public struct CheckReport: Sendable, Codable, Equatable {
    /// Each inconsistency found, one sentence each; empty when the pool is consistent.
    public var findings: [String]
    /// Statistics gathered during the walk.
    public var stats: PoolStats
    /// Whether no inconsistency was found.
    public var isConsistent: Bool { findings.isEmpty }

    @_spi(Core) public init(findings: [String], stats: PoolStats) {
        self.findings = findings
        self.stats = stats
    }
}


/// One extent of a pool's address space, as `Pool.heapMap()` reports it (what `pheap stats`
/// draws).
public struct HeapExtent: Sendable, Codable, Equatable {
    /// What an extent holds.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// Headers, the state page, the lanes' logs and the segments' unit tables.
        case metadata
        /// Free space.
        case free
        /// One large object (a whole extent of units).
        case object
        /// A run of small blocks of one size class (``HeapExtent/fill`` of them allocated).
        case run
    }

    /// What the extent holds.
    public var kind: Kind
    /// Its first byte, as an offset in the pool.
    public var offset: Int
    /// Its length in bytes.
    public var length: Int
    /// The allocated fraction: 1 for an object, 0 for free space and metadata, the share of
    /// allocated blocks for a run.
    public var fill: Double

    @_spi(Core) public init(kind: Kind, offset: Int, length: Int, fill: Double) {
        self.kind = kind
        self.offset = offset
        self.length = length
        self.fill = fill
    }
}
