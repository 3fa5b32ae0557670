import PersistentHeap

/// What every persistent container shares: a handle pairing a pool with the container's
/// persistent header, opened from a slot or created inside a transaction, and the deep check.
///
/// ``PersistentArray``, ``PersistentDictionary`` and ``PersistentSortedDictionary`` conform; a
/// container of your own built on the public API can too.
public protocol PersistentContainer {
    /// The container's persistent header (what a `Ref` points to).
    associatedtype Header: BitwiseCopyable
    /// The pool holding the container.
    var pool: Pool { get }
    /// Where the header is.
    var ref: PPointer<Header> { get }
    /// A handle on the container whose header is at `ref`.
    init(_ pool: Pool, ref: PPointer<Header>)
    /// The deep check, recording into `check` (shared with enclosing containers): what
    /// ``validate()`` walks, documented on each container.
    func validate(into check: inout ContainerCheck)
}

extension PersistentContainer {
    /// The container `slot` refers to — created (empty) and linked into `slot` atomically if the
    /// slot is null.
    public static func open(_ pool: Pool, at slot: PPointer<PPointer<Header>>) throws -> Self {
        Self(pool, ref: try pool.openContainerHeader(Header.self, at: slot))
    }

    /// A new empty container allocated in `tx` (link its `ref` somewhere in the same transaction).
    public static func create(in tx: Transaction) throws -> Self {
        Self(tx.pool, ref: try tx.allocate(Header.self, zeroed: true))
    }

    /// The deep check: walks the whole container (see ``validate(into:)`` on each container for
    /// what it verifies), asking the allocator about every block it reaches. Returns the
    /// problems found (empty when sound).
    public func validate() throws -> [String] {
        try requireOpen(pool)
        var check = ContainerCheck(pool: pool)
        validate(into: &check)
        return check.problems
    }
}
