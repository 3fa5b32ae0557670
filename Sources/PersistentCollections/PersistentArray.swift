import PersistentHeap

/// A growable array in a pool, with random access, of any ``PersistentValue``: integers,
/// `Double`, `String` (each element owns its bytes when longer than 16), another container's
/// `Ref`, or your `BitwiseCopyable` types declared `PersistentValue` (one empty extension).
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
/// let mean = try samples.elements().reduce(0, +) / Double(try samples.count)
/// ```
///
/// Reads throw: the array lives in a file, and a damaged file makes a read fail with
/// `PoolError.Code.corrupted` instead of crashing the process. That is why the handle is not a
/// Swift `Collection` (whose requirements cannot throw): use ``count``, the throwing
/// ``subscript(_:)``, ``forEach(_:)``, ``elements()`` (a copy) or an ``Iterator``.
///
/// Thread safety: concurrent reads are safe; a thread changing the array must not race with
/// others using it (guard it with a `PMutex`).
public struct PersistentArray<Element: PersistentValue>: PersistentContainer {
    /// The stored form of an element (the element itself for bitwise-copyable types).
    public typealias Stored = Element.Stored

    /// The persistent header.
    @frozen
    public struct Header: BitwiseCopyable {
        /// The elements' stored forms, `capacity` of them.
        public var storage: PPointer<Stored>
        /// The number of elements.
        public var count: Int
        /// Room for elements in `storage`.
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

    static var stride: Int { MemoryLayout<Stored>.stride }

    /// The header, validated: `0 ≤ count ≤ capacity`, the storage null exactly when the capacity
    /// is 0, and `capacity` elements no larger than the pool.
    func header(_ r: ContainerReader) throws -> Header {
        let h = try r.load(ref)
        let (bytes, overflow) = h.capacity.multipliedReportingOverflow(by: Swift.max(Self.stride, 1))
        guard h.count >= 0, h.count <= h.capacity, !overflow, bytes <= pool.size,
              h.storage.isNull == (h.capacity == 0) else {
            throw corrupted(pool, "array header", at: Int(truncatingIfNeeded: ref.offset),
                            "count \(h.count), capacity \(h.capacity), storage \(h.storage.offset)")
        }
        return h
    }

    // MARK: Reading

    /// The number of elements.
    public var count: Int {
        get throws { try header(ContainerReader(pool)).count }
    }

    /// Whether the array is empty.
    public var isEmpty: Bool {
        get throws { try count == 0 }
    }

    /// The element at `i`.
    /// - Throws: `invalidArgument` for an index out of bounds, `corrupted` for a damaged array.
    public subscript(i: Int) -> Element {
        get throws { try element(at: i) }
    }

    /// The element at `i`, or an error for an index out of bounds.
    public func element(at i: Int) throws -> Element {
        let r = ContainerReader(pool)
        let h = try header(r)
        guard i >= 0 && i < h.count else {
            throw PoolError(.invalidArgument, "index \(i) out of bounds (count \(h.count))", path: pool.path)
        }
        return try Element.load(try r.load(h.storage.advanced(by: i)), from: pool)
    }

    /// Calls `body` with every element in order; stops at the first error (from `body` or a
    /// damaged array) and rethrows it.
    public func forEach(_ body: (Element) throws -> Void) throws {
        let r = ContainerReader(pool)
        let h = try header(r)
        for i in 0..<h.count { try body(try Element.load(try r.load(h.storage.advanced(by: i)), from: pool)) }
    }

    /// A copy of every element, in order.
    public func elements() throws -> [Element] {
        var out: [Element] = []
        out.reserveCapacity(try count)
        try forEach { out.append($0) }
        return out
    }

    /// An iterator whose `next()` throws (a damaged array), over the elements in order. It reads
    /// the array as it is at each step.
    public struct Iterator {
        let array: PersistentArray
        var index = 0
        /// The next element, or nil after the last.
        public mutating func next() throws -> Element? {
            let r = ContainerReader(array.pool)
            let h = try array.header(r)
            guard index < h.count else { return nil }
            defer { index += 1 }
            return try Element.load(try r.load(h.storage.advanced(by: index)), from: array.pool)
        }
    }

    /// An iterator over the elements: `var it = array.makeIterator(); while let x = try it.next() { … }`.
    public func makeIterator() -> Iterator { Iterator(array: self) }

    // MARK: Deep check

    /// Walks the whole array: the header, the storage block (a live allocation large enough
    /// for the capacity) and what every element owns (a string's block, a nested container).
    /// Records what it finds in `check` (shared with enclosing containers); ``validate()`` returns it.
    public func validate(into check: inout ContainerCheck) {
        guard check.firstVisit(ref.raw, "array header"),
              check.checkBlock(ref.raw, bytes: MemoryLayout<Header>.size, "array header") else { return }
        check.catching("array at \(ref.offset)") { check in
            let h = try header(ContainerReader(pool))
            guard h.capacity > 0 else { return }
            guard check.firstVisit(h.storage.raw, "array storage"),
                  check.checkBlock(h.storage.raw, bytes: h.capacity * Self.stride, "array storage") else { return }
            let r = ContainerReader(pool)
            for i in 0..<h.count {
                Element.validate(try r.load(h.storage.advanced(by: i)), in: &check)
                guard check.problemCount < check.limit else { return }
            }
        }
    }

    // MARK: Changes (each one atomic)

    private func grow(_ tx: Transaction, _ h: inout Header, to minimum: Int) throws {
        guard minimum > h.capacity else { return }
        let capacity = Swift.max(minimum, h.capacity * 2, 4)
        let stride = Swift.max(MemoryLayout<Stored>.stride, 1)
        let (bytes, overflow) = capacity.multipliedReportingOverflow(by: stride)
        guard !overflow else { throw PoolError(.invalidArgument, "\(capacity) elements of \(Element.self) overflow", path: pool.path) }
        let old = h.storage, count = h.count
        let r = ContainerReader(pool, tx)
        let storage = try tx.allocate(bytes: bytes, alignment: MemoryLayout<Stored>.alignment) { (view: MutableByteView) in
            for i in 0..<count { view.store(try r.load(old.advanced(by: i)), at: i * stride) }
        }
        if !old.isNull { try tx.free(old) }
        h.storage = storage.assumingType(Stored.self)
        h.capacity = capacity
    }

    /// Appends `element`.
    /// - Complexity: amortised O(1).
    public func append(_ element: Element) throws {
        try pool.transaction { tx in
            var h = try header(ContainerReader(pool, tx))
            try grow(tx, &h, to: h.count + 1)
            try tx.write(try Element.store(element, in: tx), to: h.storage.advanced(by: h.count))
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
            try grow(tx, &h, to: h.count &+ items.count)
            let stride = MemoryLayout<Stored>.stride
            let stored = try items.map { try Element.store($0, in: tx) }
            try tx.withMutableView(of: h.storage.advanced(by: h.count).raw, count: items.count * stride) { view in
                for (i, e) in stored.enumerated() { view.store(e, at: i * stride) }
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
            guard i >= 0 && i <= h.count else { throw PoolError(.invalidArgument, "insertion index \(i) out of bounds (count \(h.count))", path: pool.path) }
            try grow(tx, &h, to: h.count + 1)
            let stride = MemoryLayout<Stored>.stride
            let stored = try Element.store(element, in: tx)
            try tx.withMutableView(of: h.storage.advanced(by: i).raw, count: (h.count - i + 1) * stride) { view in
                if h.count > i { view.move(from: 0, to: stride, count: (h.count - i) * stride) }
                view.store(stored, at: 0)
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
            guard i >= 0 && i < h.count else { throw PoolError(.invalidArgument, "index \(i) out of bounds (count \(h.count))", path: pool.path) }
            let stride = MemoryLayout<Stored>.stride
            let stored = try tx.read(h.storage.advanced(by: i))
            let removed = try Element.load(stored, from: pool)
            try Element.release(stored, in: tx)
            if i < h.count - 1 {
                try tx.withMutableView(of: h.storage.advanced(by: i).raw, count: (h.count - i) * stride) { view in
                    view.move(from: stride, to: 0, count: (h.count - i - 1) * stride)
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
        let n = try count
        guard n > 0 else { throw PoolError(.invalidArgument, "removeLast on an empty array", path: pool.path) }
        return try remove(at: n - 1)
    }

    /// Replaces the element at `i`.
    public func set(_ element: Element, at i: Int) throws {
        try pool.transaction { tx in
            let h = try header(ContainerReader(pool, tx))
            guard i >= 0 && i < h.count else { throw PoolError(.invalidArgument, "index \(i) out of bounds (count \(h.count))", path: pool.path) }
            let slot = h.storage.advanced(by: i)
            try Element.release(try tx.read(slot), in: tx)
            try tx.write(try Element.store(element, in: tx), to: slot)
        }
    }

    /// Changes the element at `i` in place.
    public func update<R>(at i: Int, _ body: (inout Element) throws -> R) throws -> R {
        try pool.transaction { tx -> R in
            let h = try header(ContainerReader(pool, tx))
            guard i >= 0 && i < h.count else { throw PoolError(.invalidArgument, "index \(i) out of bounds (count \(h.count))", path: pool.path) }
            let slot = h.storage.advanced(by: i)
            let old = try tx.read(slot)
            var value = try Element.load(old, from: pool)
            let result = try body(&value)
            try Element.release(old, in: tx)
            try tx.write(try Element.store(value, in: tx), to: slot)
            return result
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
            for i in 0..<h.count { try Element.release(try tx.read(h.storage.advanced(by: i)), in: tx) }
            if !keepingCapacity && !h.storage.isNull {
                try tx.free(h.storage)
                h.storage = .null
                h.capacity = 0
            }
            h.count = 0
            try tx.write(h, to: ref)
        }
    }

    /// Frees the array's storage, what its elements own (strings' blocks) and its header; if
    /// `slot` is given, sets it to null in the same transaction. The handle must not be used
    /// afterwards. (Nested containers referred to by elements are not destroyed: free them first.)
    public func destroy(unlinking slot: PPointer<Ref>? = nil) throws {
        try pool.transaction { tx in
            let h = try header(ContainerReader(pool, tx))
            for i in 0..<h.count { try Element.release(try tx.read(h.storage.advanced(by: i)), in: tx) }
            if !h.storage.isNull { try tx.free(h.storage) }
            try tx.free(ref)
            if let slot { try tx.write(.null, to: slot) }
        }
    }
}

extension PersistentArray.Header: PersistentValue, ContainerHeader {
    static func validateContainer(at ref: PRawPointer, in check: inout ContainerCheck) {
        PersistentArray(check.pool, ref: ref.assumingType(Self.self)).validate(into: &check)
    }
}
