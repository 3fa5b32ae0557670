// What every container needs: reads that see the calling thread's transaction (its own writes
// included), and mutations that run as a transaction, joining the caller's if there is one.
//
// Everything a container reads from the pool is untrusted input (a file can be damaged or
// hostile): every count, length, index, kind and pointer is checked before it is used for
// arithmetic, indexing or a read, and a bad one throws `PoolError(.corrupted)` naming the
// structure, the offset and what was wrong. Reads go through `ContainerReader`, which bounds-
// checks every access against the heap; nodes are validated once (`region`), then read field by
// field at offsets computed from validated indexes.

extension Pool {
    /// The container header `slot` refers to; if the slot is null, a zeroed header is allocated
    /// and linked into it atomically (one transaction, joining the caller's).
    func openContainerHeader<H: BitwiseCopyable>(_ type: H.Type, at slot: PPointer<PPointer<H>>) throws -> PPointer<H> {
        let existing = try ContainerReader(self).load(slot)
        if !existing.isNull {
            try ContainerReader(self).validate(Int(truncatingIfNeeded: existing.offset), count: MemoryLayout<H>.size, "container header")
            return existing
        }
        return try transaction { tx -> PPointer<H> in
            let header = try tx.allocate(H.self, zeroed: true)
            try tx.write(header, to: slot)
            return header
        }
    }

    /// The calling thread's transaction in this pool, if one is running.
    @inline(__always)
    func activeTransaction() -> Transaction? {
        guard !isClosed else { return nil }
        let lane = heap.currentLane()
        guard let state = txStates[lane], state[0].active else { return nil }
        return Transaction(pool: self, context: TransactionContext(lane: lane, state: state), generation: state[0].generation)
    }
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
        tx = pool.activeTransaction()
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

    /// The value at pool offset `offset`, which must lie in a range validated by
    /// ``validate(_:count:_:)`` (a node: checked once, then read field by field).
    @inline(__always)
    func load<T: BitwiseCopyable>(_ type: T.Type, at offset: Int) throws -> T {
        if tx == nil { return (UnsafeRawPointer(pool.bytes.base) + offset).loadUnaligned(as: T.self) }
        return try load(PPointer<T>(offset: UInt64(truncatingIfNeeded: offset)))
    }

    /// Checks that `[offset, offset+count)` lies inside the heap and is 8-byte aligned (and
    /// that the pool is still open: direct reads of the range follow).
    @inline(__always)
    func validate(_ offset: Int, count: Int, _ what: @autoclosure () -> String) throws {
        try pool.checkOpen()
        guard offset & 7 == 0, pool.heap.inHeap(offset, count) else {
            throw corrupted(pool, what(), at: offset, "\(count) bytes do not lie inside the heap")
        }
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
