import PersistentHeap

/// The root of the allocator crash workloads: a table of slots, each null or pointing at an
/// object that carries its own id, size and a payload derived from the id.
public struct WorkloadRoot: BitwiseCopyable {
    public var table: PPointer<PRawPointer>
    public var slots: Int
    public var nextID: UInt64
}

/// A random workload that links everything it allocates (so after any crash: allocated objects
/// = objects reachable from the root, with intact contents), and its verifier.
///
/// Operations on a random slot: allocate-and-link into an empty slot; on a full one,
/// free-and-unlink, reallocate-and-relink, or free-and-unlink then allocate-and-link.
public struct LinkWorkload {
    public let slots: Int
    public let maxSize: Int
    /// Percentage of objects above 16 KiB (extents rather than run blocks).
    public let largePercent: Int
    public var rng: RepeatableRandomNumberGenerator

    public init(seed: UInt64, slots: Int = 64, maxSize: Int = 40_000, largePercent: Int = 5) {
        self.slots = slots
        self.maxSize = maxSize
        self.largePercent = largePercent
        rng = RepeatableRandomNumberGenerator(seed: seed)
    }

    /// The pattern word `k` of object `id`.
    @inline(__always) static func word(_ id: UInt64, _ k: Int) -> UInt64 {
        var z = id &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(k)
        z = (z ^ (z >> 29)) &* 0xBF58_476D_1CE4_E5B9
        return z ^ (z >> 32)
    }

    /// Creates the root and the slot table if missing (each step atomic).
    public static func setUp(_ pool: Pool, slots: Int) throws -> PPointer<WorkloadRoot> {
        let root = try pool.root(WorkloadRoot.self)
        if try pool.load(root).table.isNull {
            _ = try pool.allocate(PRawPointer.self, count: slots, linkedInto: root.field(\.table))
            try pool.store(slots, at: root.field(\.slots))
        }
        return root
    }

    mutating func size() -> Int {
        let r = Int.random(in: 0..<100, using: &rng)
        if r < largePercent { return Int.random(in: 16385...max(16385, maxSize), using: &rng) }
        return Int.random(in: 16...(r < 80 ? 512 : 16384), using: &rng)
    }

    /// What one step did: the slot it changed, the id of the object the slot holds afterwards
    /// (0: empty), and a short description.
    public struct Step: Sendable, CustomStringConvertible {
        public let slot: Int
        public let id: UInt64
        public let what: String
        public var description: String { "slot \(slot) id \(id) \(what)" }
    }

    /// Runs one random operation (durable when it returns).
    @discardableResult
    public mutating func step(_ pool: Pool, root: PPointer<WorkloadRoot>) throws -> Step {
        let r = try pool.load(root)
        let i = Int.random(in: 0..<r.slots, using: &rng)
        let slot = r.table.advanced(by: i)
        let current = try pool.load(slot)
        if current.isNull {
            return Step(slot: i, id: try allocate(pool, root: root, into: slot), what: "allocate")
        }
        switch Int.random(in: 0..<10, using: &rng) {
        case 0..<4:
            try pool.free(linkedFrom: slot)
            return Step(slot: i, id: 0, what: "free")
        case 4..<7:
            let oldSize = Int(try pool.load(PPointer<UInt64>(offset: current.offset + 8)))
            let n = max(oldSize, size())
            let p = try pool.reallocate(linkedFrom: slot.cast(to: PPointer<UInt64>.self), count: (n + 7) / 8)
            return Step(slot: i, id: try pool.load(p), what: "reallocate to \(n)")
        default:
            try pool.free(linkedFrom: slot)
            return Step(slot: i, id: try allocate(pool, root: root, into: slot), what: "replace")
        }
    }

    /// The id of the object each slot points at (0: null) — what acknowledgements are checked
    /// against after a crash.
    public static func slotIDs(_ pool: Pool) throws -> [UInt64] {
        guard let rootRaw = pool.rootPointer else { return [] }
        let r = try pool.load(rootRaw.assumingType(WorkloadRoot.self))
        guard !r.table.isNull else { return [] }
        return try (0..<r.slots).map { i in
            let p = try pool.load(r.table.advanced(by: i))
            return p.isNull ? 0 : try pool.load(p.assumingType(UInt64.self))
        }
    }

    private mutating func allocate(_ pool: Pool, root: PPointer<WorkloadRoot>, into slot: PPointer<PRawPointer>) throws -> UInt64 {
        let id = try pool.load(root).nextID + 1
        try pool.store(id, at: root.field(\.nextID))
        let n = size()
        let words = (n + 7) / 8
        _ = try pool.allocate(UInt64.self, count: words, linkedInto: slot.cast(to: PPointer<UInt64>.self)) { buf in
            buf[0] = id
            buf[1] = UInt64(n)
            for k in 2..<words { buf[k] = LinkWorkload.word(id, k) }
        }
        return id
    }

    /// Problems found in a (recovered) pool: `check()` findings, slots pointing at blocks that
    /// are not allocated or whose contents are damaged, and leaks (allocated blocks no slot
    /// reaches). Empty when everything holds.
    public static func verify(_ pool: Pool) throws -> [String] {
        var problems: [String] = []
        let report = try pool.check()
        problems += report.findings.map { "check: \($0)" }
        guard let rootRaw = pool.rootPointer else {
            if report.stats.objects != 0 { problems.append("leak: \(report.stats.objects) objects without a root") }
            return problems
        }
        let root = rootRaw.assumingType(WorkloadRoot.self)
        let r = try pool.load(root)
        var reachable = 1
        if !r.table.isNull {
            reachable += 1
            guard pool.isAllocated(r.table) else { return problems + ["the slot table is not allocated"] }
            for i in 0..<r.slots {
                let p = try pool.load(r.table.advanced(by: i))
                if p.isNull { continue }
                reachable += 1
                guard pool.isAllocated(p) else { problems.append("slot \(i) points at \(p), which is free"); continue }
                let id = try pool.load(p.assumingType(UInt64.self))
                let n = Int(try pool.load(PPointer<UInt64>(offset: p.offset + 8)))
                guard id != 0, id <= r.nextID, n >= 16, n <= (try pool.usableSize(of: p)) else {
                    problems.append("slot \(i): object header damaged (id \(id), size \(n))"); continue
                }
                for k in 2..<((n + 7) / 8) where try pool.load(PPointer<UInt64>(offset: p.offset + UInt64(8 * k))) != word(id, k) {
                    problems.append("slot \(i): object \(id) payload word \(k) damaged")
                    break
                }
            }
        }
        if report.stats.objects != reachable {
            problems.append("leak: \(report.stats.objects) objects allocated, \(reachable) reachable from the root")
        }
        return problems
    }
}
