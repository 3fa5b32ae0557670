/// A growable array of `BitwiseCopyable` elements in a pool, with random access.
///
/// The array is a small persistent header (``Header``) reached by a ``Ref``, which can be kept in
/// the root or in another container; `PersistentArray` is the handle that reads and changes it.
/// Every change is failure-atomic (a transaction, joining the caller's if one is running); reads
/// inside a transaction see its writes.
///
/// ```swift
/// struct Root: BitwiseCopyable { var samples: PersistentArray<Double>.Ref }
/// let samples = try PersistentArray<Double>.open(pool, at: root.field(\.samples))
/// try samples.append(3.5)
/// let mean = samples.reduce(0, +) / Double(samples.count)
/// ```
///
/// Thread safety: concurrent reads are safe; a thread changing the array must not race with
/// others using it (guard it with a ``PMutex``).
public struct PersistentArray<Element: BitwiseCopyable>: RandomAccessCollection {
    /// The persistent header.
    @frozen
    public struct Header: BitwiseCopyable {
        public var storage: PPointer<Element>
        public var count: Int
        public var capacity: Int
    }

    /// A persistent reference to an array (8 bytes; null = none).
    public typealias Ref = PPointer<Header>

    /// The pool holding the array.
    public let pool: Pool
    /// Where the header is.
    public let ref: Ref

    /// A handle on the array whose header is at `ref`.
    public init(_ pool: Pool, ref: Ref) {
        self.pool = pool
        self.ref = ref
    }

    /// The array `slot` refers to, created (empty) and linked into `slot` atomically if the slot is null.
    public static func open(_ pool: Pool, at slot: PPointer<Ref>) throws -> PersistentArray {
        PersistentArray(pool, ref: try pool.openContainerHeader(Header.self, at: slot))
    }

    /// A new empty array allocated in `tx` (link its ``ref`` somewhere in the same transaction).
    public static func create(in tx: Transaction) throws -> PersistentArray {
        PersistentArray(tx.pool, ref: try tx.allocate(Header.self, zeroed: true))
    }

    func header(_ r: ContainerReader) throws -> Header {
        let h = try r.load(ref)
        guard h.count >= 0, h.count <= h.capacity, h.capacity == 0 || !h.storage.isNull else {
            throw PoolError(.corrupted, "array header at \(ref) holds count \(h.count), capacity \(h.capacity)", path: pool.path)
        }
        return h
    }

    // MARK: Collection

    public var startIndex: Int { 0 }
    public var endIndex: Int {
        do { return try header(ContainerReader(pool)).count } catch { containerFailure(error) }
    }

    /// The element at `i`. Traps when `i` is out of bounds.
    public subscript(i: Int) -> Element {
        do { return try element(at: i) } catch { containerFailure(error) }
    }

    /// The element at `i`, or an error for an index out of bounds.
    public func element(at i: Int) throws -> Element {
        let r = ContainerReader(pool)
        let h = try header(r)
        guard i >= 0 && i < h.count else {
            throw PoolError(.invalidArgument, "index \(i) out of bounds (count \(h.count))", path: pool.path)
        }
        return try r.load(h.storage.advanced(by: i))
    }

    // MARK: Changes (each one atomic)

    private func grow(_ tx: Transaction, _ h: inout Header, to minimum: Int) throws {
        guard minimum > h.capacity else { return }
        let capacity = Swift.max(minimum, h.capacity * 2, 4)
        let stride = MemoryLayout<Element>.stride
        let old = h.storage, count = h.count
        let r = ContainerReader(pool, tx)
        let storage = try tx.allocate(bytes: capacity * stride, alignment: MemoryLayout<Element>.alignment) { buf in
            for i in 0..<count { buf.storeBytes(of: try r.load(old.advanced(by: i)), toByteOffset: i * stride, as: Element.self) }
        }
        if !old.isNull { try tx.free(old) }
        h.storage = storage.assumingType(Element.self)
        h.capacity = capacity
    }

    /// Appends `element`.
    /// - Complexity: amortised O(1).
    public func append(_ element: Element) throws {
        try pool.transaction { tx in
            var h = try header(ContainerReader(pool, tx))
            try grow(tx, &h, to: h.count + 1)
            try tx.write(element, to: h.storage.advanced(by: h.count))
            h.count += 1
            try tx.write(h, to: ref)
        }
    }

    /// Appends every element of `elements`, all in one transaction.
    public func append<S: Sequence>(contentsOf elements: S) throws where S.Element == Element {
        let items = Array(elements)
        guard !items.isEmpty else { return }
        try pool.transaction { tx in
            var h = try header(ContainerReader(pool, tx))
            try grow(tx, &h, to: h.count + items.count)
            let stride = MemoryLayout<Element>.stride
            try tx.withMutableBytes(of: h.storage.advanced(by: h.count).raw, count: items.count * stride) { buf in
                for (i, e) in items.enumerated() { buf.storeBytes(of: e, toByteOffset: i * stride, as: Element.self) }
            }
            h.count += items.count
            try tx.write(h, to: ref)
        }
    }

    /// Inserts `element` at `i` (0...count), shifting the rest.
    /// - Complexity: O(count - i).
    public func insert(_ element: Element, at i: Int) throws {
        try pool.transaction { tx in
            var h = try header(ContainerReader(pool, tx))
            guard i >= 0 && i <= h.count else { throw PoolError(.invalidArgument, "insertion index \(i) out of bounds (count \(h.count))") }
            try grow(tx, &h, to: h.count + 1)
            let stride = MemoryLayout<Element>.stride
            try tx.withMutableBytes(of: h.storage.advanced(by: i).raw, count: (h.count - i + 1) * stride) { buf in
                if h.count > i { (buf.baseAddress! + stride).copyMemory(from: buf.baseAddress!, byteCount: (h.count - i) * stride) }
                buf.storeBytes(of: element, as: Element.self)
            }
            h.count += 1
            try tx.write(h, to: ref)
        }
    }

    /// Removes and returns the element at `i`, shifting the rest.
    /// - Complexity: O(count - i).
    @discardableResult
    public func remove(at i: Int) throws -> Element {
        try pool.transaction { tx -> Element in
            var h = try header(ContainerReader(pool, tx))
            guard i >= 0 && i < h.count else { throw PoolError(.invalidArgument, "index \(i) out of bounds (count \(h.count))") }
            let stride = MemoryLayout<Element>.stride
            let removed = try tx.read(h.storage.advanced(by: i))
            if i < h.count - 1 {
                try tx.withMutableBytes(of: h.storage.advanced(by: i).raw, count: (h.count - i) * stride) { buf in
                    buf.baseAddress!.copyMemory(from: buf.baseAddress! + stride, byteCount: (h.count - i - 1) * stride)
                }
            }
            h.count -= 1
            try tx.write(h, to: ref)
            return removed
        }
    }

    /// Removes and returns the last element.
    @discardableResult
    public func removeLast() throws -> Element {
        let n = count
        guard n > 0 else { throw PoolError(.invalidArgument, "removeLast on an empty array") }
        return try remove(at: n - 1)
    }

    /// Replaces the element at `i`.
    public func set(_ element: Element, at i: Int) throws {
        try pool.transaction { tx in
            let h = try header(ContainerReader(pool, tx))
            guard i >= 0 && i < h.count else { throw PoolError(.invalidArgument, "index \(i) out of bounds (count \(h.count))") }
            try tx.write(element, to: h.storage.advanced(by: i))
        }
    }

    /// Changes the element at `i` in place.
    public func update<R>(at i: Int, _ body: (inout Element) throws -> R) throws -> R {
        try pool.transaction { tx -> R in
            let h = try header(ContainerReader(pool, tx))
            guard i >= 0 && i < h.count else { throw PoolError(.invalidArgument, "index \(i) out of bounds (count \(h.count))") }
            return try tx.update(h.storage.advanced(by: i), body)
        }
    }

    /// Makes room for `n` elements without further allocation.
    public func reserveCapacity(_ n: Int) throws {
        try pool.transaction { tx in
            var h = try header(ContainerReader(pool, tx))
            guard n > h.capacity else { return }
            try grow(tx, &h, to: n)
            try tx.write(h, to: ref)
        }
    }

    /// Removes every element (and frees the storage unless `keepingCapacity`).
    public func removeAll(keepingCapacity: Bool = false) throws {
        try pool.transaction { tx in
            var h = try header(ContainerReader(pool, tx))
            if !keepingCapacity && !h.storage.isNull {
                try tx.free(h.storage)
                h.storage = .null
                h.capacity = 0
            }
            h.count = 0
            try tx.write(h, to: ref)
        }
    }

    /// Frees the array's storage and header; if `slot` is given, sets it to null in the same
    /// transaction. The handle must not be used afterwards.
    public func destroy(unlinking slot: PPointer<Ref>? = nil) throws {
        try pool.transaction { tx in
            let h = try header(ContainerReader(pool, tx))
            if !h.storage.isNull { try tx.free(h.storage) }
            try tx.free(ref)
            if let slot { try tx.write(.null, to: slot) }
        }
    }
}

extension PersistentArray.Header: PersistentValue {}
