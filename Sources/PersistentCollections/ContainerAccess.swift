// What every container needs: reads that see the calling thread's transaction (its own writes
// included), and mutations that run as a transaction, joining the caller's if there is one.
//
// Everything a container reads from the pool is untrusted input (a file can be damaged or
// hostile): every count, length, index, kind and pointer is checked before it is used for
// arithmetic, indexing or a read, and a bad one throws `PoolError(.corrupted)` naming the
// structure, the offset and what was wrong. Reads go through `ContainerReader`, which bounds-
// checks every access against the heap; nodes are validated once (`region`), then read field by
// field at offsets computed from validated indexes.

@_spi(Containers) import PersistentHeap

extension Pool {
    /// The container header `slot` refers to; if the slot is null, a zeroed header is allocated
    /// and linked into it atomically (one transaction, joining the caller's).
    func openContainerHeader<H: BitwiseCopyable>(_ type: H.Type, at slot: PPointer<PPointer<H>>) throws -> PPointer<H> {
        let r = ContainerReader(self)
        let existing = try r.load(slot)
        if !existing.isNull {
            _ = try r.region(Int(truncatingIfNeeded: existing.offset), count: MemoryLayout<H>.size, "container header")
            return existing
        }
        return try transaction { tx -> PPointer<H> in
            let header = try tx.allocate(H.self, zeroed: true)
            try tx.write(header, to: slot)
            return header
        }
    }
}

/// Throws `closed` unless the pool is open.
@inline(__always)
func requireOpen(_ pool: Pool) throws(PoolError) {
    if pool.isClosed { throw PoolError(.closed, "the pool is closed", path: pool.path) }
}

/// A `.corrupted` error about a container structure at `offset`.
@inline(never)
func corrupted(_ pool: Pool, _ what: String, at offset: Int, _ problem: String) -> PoolError {
    PoolError(.corrupted, "\(what) at offset \(offset): \(problem)", path: pool.path)
}

/// Reads persistent memory as the calling thread sees it: through its transaction if one is
/// running, directly otherwise. Every read is bounds-checked against the heap.
struct ContainerReader {
    let pool: Pool
    let tx: Transaction?

    init(_ pool: Pool) {
        self.pool = pool
        tx = pool.currentTransaction
    }

    init(_ pool: Pool, _ tx: Transaction) {
        self.pool = pool
        self.tx = tx
    }

    /// The value at `p` (checked: inside the heap, aligned).
    @inline(__always)
    func load<T: BitwiseCopyable>(_ p: PPointer<T>) throws -> T {
        if let tx { return try tx.read(p) }
        return try pool.load(p)
    }

    /// A validated range `[offset, offset+count)` of the heap (8-byte aligned), read field by field.
    @inline(__always)
    func region(_ offset: Int, count: Int, _ what: @autoclosure () -> String) throws -> Region {
        let view: ByteView
        do {
            view = try pool.readView(PRawPointer(offset: UInt64(truncatingIfNeeded: offset)), count: count)
        } catch {
            if error.code == .closed { throw error }
            throw corrupted(pool, what(), at: offset, "\(count) bytes do not lie inside the heap")
        }
        return Region(offset: offset, view: view, tx: tx, pool: pool)
    }
}

/// A validated range read as the calling thread sees it: directly from a view of the pool, or
/// through its transaction (which overlays its own writes).
struct Region {
    let offset: Int
    let view: ByteView
    let tx: Transaction?
    /// The pool (for errors; nodes reach it here rather than holding a second reference).
    let pool: Pool

    /// The `T` at `rel` bytes into the region (aligned for `T` in a transaction). A position
    /// outside the region — computed from a damaged field that a caller did not bound — throws
    /// `.corrupted` (a second line of defence: callers bound every index they read).
    @inline(__always)
    func load<T: BitwiseCopyable>(_: T.Type, at rel: Int) throws -> T {
        guard let v = view.loadIfInside(T.self, at: rel) else { throw outside(rel, MemoryLayout<T>.size) }
        if let tx { return try tx.read(PPointer<T>(offset: UInt64(truncatingIfNeeded: offset + rel))) }
        return v
    }

    @inline(never)
    private func outside(_ rel: Int, _ size: Int) -> PoolError {
        PoolError(.corrupted, "structure at offset \(offset): field at +\(rel) (\(size) bytes) lies outside its \(view.count) bytes", path: pool.path)
    }
}

/// The deep check of persistent containers: what ``PersistentArray/validate()``,
/// ``PersistentDictionary/validate()`` and ``PersistentSortedDictionary/validate()`` walk with,
/// and what a ``PersistentValue`` uses to check what its stored form owns.
///
/// It collects findings instead of throwing, checks that every pointer is a live allocation of
/// the size its structure needs, and remembers every block it visited (so a block reached twice —
/// a cycle, or two structures sharing storage — is a finding, never a loop).
public struct ContainerCheck {
    /// The pool being checked.
    public let pool: Pool
    /// Each problem found, one sentence each (at most ``limit``).
    public private(set) var problems: [String] = []
    /// Problems kept at most (more are counted, not kept).
    public let limit = 100
    /// Problems found, including those beyond ``limit``.
    public private(set) var problemCount = 0
    /// Blocks visited so far.
    private var visited: Set<UInt64> = []

    /// A check of containers in `pool`.
    public init(pool: Pool) { self.pool = pool }

    /// Whether no problem was found.
    public var isConsistent: Bool { problemCount == 0 }

    /// Records a problem.
    public mutating func note(_ problem: String) {
        problemCount += 1
        if problems.count < limit { problems.append(problem) }
    }

    /// Whether `p` is the start of a live allocation of at least `bytes` bytes; records a
    /// problem (naming `what`) when it is not.
    @discardableResult
    public mutating func checkBlock(_ p: PRawPointer, bytes: Int, _ what: @autoclosure () -> String) -> Bool {
        guard !p.isNull else { note("\(what()): null pointer"); return false }
        let usable: Int
        do { usable = try pool.usableSize(of: p) } catch {
            note("\(what()) at \(p.offset): not a live allocation (\(error.message))")
            return false
        }
        guard usable >= bytes else {
            note("\(what()) at \(p.offset): the block has \(usable) bytes, the structure needs \(bytes)")
            return false
        }
        return true
    }

    /// Records `p` as visited; false (and a problem) when it was visited before.
    public mutating func firstVisit(_ p: PRawPointer, _ what: @autoclosure () -> String) -> Bool {
        guard visited.insert(p.offset).inserted else {
            note("\(what()) at \(p.offset) is reached twice (a cycle, or storage shared between structures)")
            return false
        }
        return true
    }

    /// Checks a string: a live block holding its byte count and that many bytes of valid UTF-8.
    public mutating func checkString(_ s: PersistentString, _ what: @autoclosure () -> String) {
        guard !s.storage.isNull else { return }
        let name = what()
        guard firstVisit(s.storage, name), checkBlock(s.storage, bytes: 8, name) else { return }
        do {
            let usable = try pool.usableSize(of: s.storage)
            let count = try pool.load(s.storage.assumingType(UInt64.self))
            guard count > 0, count <= UInt64(usable - 8) else {
                note("\(name) at \(s.storage.offset): byte count \(count) does not fit its block of \(usable) bytes")
                return
            }
            let valid = try s.withUTF8(in: pool) { String(validating: $0, as: UTF8.self) != nil }
            if !valid { note("\(name) at \(s.storage.offset): not valid UTF-8") }
        } catch {
            note("\(name) at \(s.storage.offset): \(error)")
        }
    }

    /// Runs `body`; a thrown error becomes a problem (naming `what`) instead of ending the check.
    public mutating func catching(_ what: @autoclosure () -> String, _ body: (inout ContainerCheck) throws -> Void) {
        do { try body(&self) } catch { note("\(what()): \(error)") }
    }
}

/// A container header type: validated by the deep check when a `Ref` to it is stored in
/// another container (a dictionary of arrays).
protocol ContainerHeader: BitwiseCopyable {
    static func validateContainer(at ref: PRawPointer, in check: inout ContainerCheck)
}
