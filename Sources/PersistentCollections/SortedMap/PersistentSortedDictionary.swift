import PersistentHeap

/// An ordered map in a pool: a B+ tree with inline entries, zero-copy reads, cursors and range
/// scans.
///
/// Keys and values are ``PersistentKey`` / ``PersistentValue`` types: integers (kept big-endian,
/// compared as bytes), `String` (its UTF-8, ordered as bytes), or your `BitwiseCopyable` types.
/// Keys up to 480 bytes; a key and value of up to 512 bytes together live inline in the leaf
/// (LMDB does the same), a larger value in a block of its own. Every change is a failure-atomic
/// transaction (joining the caller's if one is running): after a crash the map holds the state
/// before or after each change.
///
/// ```swift
/// struct Root: BitwiseCopyable { var kv: PersistentSortedDictionary<String, String>.Ref }
/// let kv = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.kv))
/// try kv.updateValue("1", forKey: "one")
/// for (k, v) in try kv.scan(from: "a", to: "p") { print(k, v) }
/// let n = try kv.withValue(forKey: "one") { bytes in bytes.count }   // no copy, no String
/// ```
///
/// Zero-copy reads (``withValue(forKey:_:)``, ``forEachEncoded(from:to:_:)``, ``Cursor``) hand
/// out the bytes in the pool: they are valid inside the closure only, and only until the map
/// next changes (inside a transaction: until it ends). Keys are the encoded bytes
/// (``PersistentValue/withEncodedBytes(_:_:)``): UTF-8 for strings, big-endian for integers.
///
/// Removal rebalances (a node below a quarter full merges with a sibling or takes entries from
/// it), and an emptied tree returns its nodes to the heap. Reads throw
/// (`PoolError.Code.corrupted` for a damaged pool, never a crash), so the map is not a Swift
/// `Sequence`: iterate with ``forEach(from:to:_:)``, an ``Iterator``, a ``Cursor`` or
/// ``scan(from:to:limit:)``.
///
/// Thread safety: concurrent reads are safe; changes must not race with other users of the map
/// (guard it with a `PMutex`).
public struct PersistentSortedDictionary<Key: PersistentKey, Value: PersistentValue>: PersistentContainer {
    /// The persistent header.
    @frozen
    public struct Header: BitwiseCopyable {
        /// The root node (null for an empty map).
        public var root: PRawPointer
        /// The number of entries.
        public var count: Int
        /// Levels of nodes (0 for an empty map, 1 when the root is a leaf).
        public var height: Int
        /// Incremented by every change: a cursor checks it to notice that the map changed.
        public var changes: UInt64
    }

    /// A persistent reference to a map (8 bytes; null = none).
    public typealias Ref = PPointer<Header>

    /// The pool holding the map.
    public let pool: Pool
    /// Where the header is.
    public let ref: Ref

    /// A handle on the map whose header is at `ref`.
    public init(_ pool: Pool, ref: Ref) {
        self.pool = pool
        self.ref = ref
    }

    // MARK: Header and keys

    /// The header, validated: a count no larger than the pool, a height within 64, a root exactly
    /// when the height is not 0.
    func header(_ r: BReader) throws -> Header {
        let v = try r.view(ref.raw, count: MemoryLayout<Header>.size, "B+ tree header")
        let h = v.load(Header.self, at: 0)
        guard h.count >= 0, h.count <= pool.size, h.height >= 0, h.height <= 64, h.root.isNull == (h.height == 0) else {
            throw corrupted(pool, "B+ tree header", at: Int(truncatingIfNeeded: ref.offset), "count \(h.count), height \(h.height), root \(h.root.offset)")
        }
        return h
    }

    /// A key being searched for: its encoded bytes and their order prefix.
    struct Probe {
        let key: Key
        let bytes: UnsafeRawBufferPointer
        let prefix: UInt64
    }

    /// Calls `body` with `key` encoded (refused beyond ``BTree/maxKeyBytes``).
    @inline(__always)
    func withProbe<R>(_ key: Key, _ body: (Probe) throws -> R) throws -> R {
        try Key.withEncodedBytes(key) { bytes in
            guard bytes.count <= BTree.maxKeyBytes else {
                throw PoolError(.invalidArgument, "a key of \(bytes.count) bytes is longer than the \(BTree.maxKeyBytes) bytes a sorted map keeps", path: pool.path)
            }
            return try body(Probe(key: key, bytes: bytes, prefix: Key.encodingIsOrdered ? BTree.prefix(bytes) : 0))
        }
    }

    /// Orders `probe` against entry `i` of `n`: negative, zero or positive.
    @inline(__always)
    func compare(_ probe: Probe, _ n: BNode, _ i: Int) throws -> Int {
        if Key.encodingIsOrdered {
            let p = n.order(i) >> 16
            if probe.prefix != p { return probe.prefix < p ? -1 : 1 }
            let e = try n.entry(i, pool)
            return -n.view.compare(at: e.keyOffset, length: e.keyLength, with: probe.bytes)
        }
        let e = try n.entry(i, pool)
        return Key.compareKeys(probe.key, try Key.decode(n.key(e), in: pool))
    }

    /// The first position of `n` whose key is not less than `probe` (`strictly`: greater).
    @inline(__always)
    func bound(_ n: BNode, _ probe: Probe, strictly: Bool) throws -> Int {
        var lo = 0, hi = n.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let c = try compare(probe, n, mid)
            if c > 0 || (c == 0 && strictly) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The leaf that may hold `probe`, descending from the root; calls `visit(node, position)` for
    /// each internal node on the way (an insertion or removal records its path).
    @inline(__always)
    func descend(_ probe: Probe, _ r: BReader, _ h: Header, visit: (BNode, Int) -> Void = { _, _ in }) throws -> BNode? {
        guard !h.root.isNull else { return nil }
        var n = try r.node(h.root)
        var depth = 1
        while !n.isLeaf {
            guard depth < h.height else { throw n.bad(pool, "an internal node at the leaves' depth \(h.height)") }
            let pos = try bound(n, probe, strictly: true)  // children 0...pos-1's separators ≤ key
            visit(n, pos)
            n = try r.node(try n.child(at: pos, pool))
            depth += 1
        }
        guard depth == h.height else { throw n.bad(pool, "a leaf at depth \(depth) of a tree of height \(h.height)") }
        return n
    }

    /// The entry holding `key`, if any: (leaf, entry).
    @inline(__always)
    func find(_ probe: Probe, _ r: BReader) throws -> (BNode, BEntry)? {
        guard let leaf = try descend(probe, r, try header(r)) else { return nil }
        let pos = try bound(leaf, probe, strictly: false)
        guard pos < leaf.count, try compare(probe, leaf, pos) == 0 else { return nil }
        return (leaf, try leaf.entry(pos, pool))
    }

    // MARK: Reading

    /// The number of entries.
    public var count: Int {
        get throws { try header(BReader(pool)).count }
    }

    /// Whether the map is empty.
    public var isEmpty: Bool {
        get throws { try count == 0 }
    }

    /// The value for `key`, or nil.
    /// - Complexity: O(log n) node visits, one key comparison per node in most cases.
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func value(forKey key: Key) throws -> Value? {
        let r = BReader(pool)
        return try withProbe(key) { probe -> Value? in
            guard let (leaf, e) = try find(probe, r) else { return nil }
            return try Value.decode(try r.value(leaf, e), in: pool)
        }
    }

    /// Calls `body` with the bytes of the value for `key` where they lie in the pool (no copy, no
    /// decoding); nil when there is none.
    /// - Warning: The buffer is valid inside `body` only (and only until the map changes).
    @inlinable
    public func withValue<R>(forKey key: Key, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        var result: R? = nil
        try withValueBytes(forKey: key) { result = try body($0) }
        return result
    }

    /// `withValue` without its generic result, so that it can be specialized (a generic method
    /// called from another module otherwise runs unspecialized: the key's encoding and
    /// comparison through witness tables).
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    @usableFromInline
    func withValueBytes(forKey key: Key, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let r = BReader(pool)
        try withProbe(key) { probe in
            guard let (leaf, e) = try find(probe, r) else { return }
            try r.value(leaf, e).withUnsafeBytes(body)
        }
    }

    /// The value for `key`, or nil (see ``value(forKey:)``).
    public subscript(key: Key) -> Value? {
        get throws { try value(forKey: key) }
    }

    /// Whether `key` has a value.
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func contains(_ key: Key) throws -> Bool {
        let r = BReader(pool)
        return try withProbe(key) { try find($0, r) != nil }
    }

    /// The entries with `from ≤ key < to` (either bound may be nil), in key order, at most `limit`.
    public func scan(from: Key? = nil, to: Key? = nil, limit: Int = .max) throws -> [(key: Key, value: Value)] {
        var out: [(key: Key, value: Value)] = []
        try forEach(from: from, to: to) { k, v in
            out.append((k, v))
            return out.count < limit
        }
        return out
    }

    /// Calls `body` for the entries with `from ≤ key < to` in key order, until it returns false.
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func forEach(from: Key? = nil, to: Key? = nil, _ body: (Key, Value) throws -> Bool) throws {
        try walk(from: from, to: to) { r, leaf, e in
            try body(try Key.decode(leaf.key(e), in: pool), try Value.decode(try r.value(leaf, e), in: pool))
        }
    }

    /// Calls `body` with the encoded key and the value bytes of the entries with
    /// `from ≤ key < to`, in key order, where they lie in the pool (no copy, no decoding), until
    /// it returns false.
    /// - Warning: The buffers are valid inside `body` only.
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func forEachEncoded(from: Key? = nil, to: Key? = nil,
                               _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool) throws {
        try walk(from: from, to: to) { r, leaf, e in
            try leaf.key(e).withUnsafeBytes { k in try r.value(leaf, e).withUnsafeBytes { v in try body(k, v) } }
        }
    }

    /// The leaf walk behind the scans: from the first entry not below `from` (or the first),
    /// while the key is below `to`, until `body` returns false.
    @inline(__always)
    func walk(from: Key?, to: Key?, _ body: (BReader, BNode, BEntry) throws -> Bool) throws {
        if let to {
            try withProbe(to) { end in try walk(from: from, until: end, body) }
        } else {
            try walk(from: from, until: nil, body)
        }
    }

    @inline(__always)
    func walk(from: Key?, until end: Probe?, _ body: (BReader, BNode, BEntry) throws -> Bool) throws {
        let r = BReader(pool)
        let h = try header(r)
        var leaf: BNode?
        var pos = 0
        if let from {
            try withProbe(from) { probe in
                leaf = try descend(probe, r, h)
                if let l = leaf { pos = try bound(l, probe, strictly: false) }
            }
        } else {
            leaf = try leftmostLeaf(r, h)
        }
        var leaves = 0
        while let n = leaf {
            while pos < n.count {
                if let end, try compare(end, n, pos) <= 0 { return }
                if try !body(r, n, try n.entry(pos, pool)) { return }
                pos += 1
            }
            leaves += 1
            guard leaves <= h.count + 1 else { throw n.bad(pool, "the leaf chain is longer than the map (a loop)") }
            let next = n.link
            leaf = next.isNull ? nil : try r.node(next)
            if let l = leaf, !l.isLeaf { throw n.bad(pool, "the leaf chain links to an internal node") }
            pos = 0
        }
    }

    /// The first leaf, or nil for an empty tree.
    func leftmostLeaf(_ r: BReader, _ h: Header) throws -> BNode? {
        guard !h.root.isNull else { return nil }
        var n = try r.node(h.root)
        var depth = 1
        while !n.isLeaf {
            guard depth < h.height else { throw n.bad(pool, "an internal node at the leaves' depth") }
            n = try r.node(n.link)
            depth += 1
        }
        return n
    }

    /// The last leaf, or nil for an empty tree.
    func rightmostLeaf(_ r: BReader, _ h: Header) throws -> BNode? {
        guard !h.root.isNull else { return nil }
        var n = try r.node(h.root)
        var depth = 1
        while !n.isLeaf {
            guard depth < h.height else { throw n.bad(pool, "an internal node at the leaves' depth") }
            n = try r.node(try n.child(at: n.count, pool))
            depth += 1
        }
        return n
    }

    /// An iterator over the entries in key order whose `next()` throws for a damaged map. The
    /// map must not change while it is used (a ``Cursor`` notices changes).
    public struct Iterator {
        var cursor: Cursor
        var started = false

        /// The next (key, value) in key order, or nil after the last.
        public mutating func next() throws -> (key: Key, value: Value)? {
            let more = started ? try cursor.next() : try cursor.first()
            started = true
            guard more else { return nil }
            return (try cursor.key, try cursor.value)
        }
    }

    /// An iterator in key order: `var it = map.makeIterator(); while let (k, v) = try it.next() { … }`.
    public func makeIterator() -> Iterator { Iterator(cursor: Cursor(map: self)) }
}

extension PersistentSortedDictionary.Header: PersistentValue, ContainerHeader {
    static func validateContainer(at ref: PRawPointer, in check: inout ContainerCheck) {
        PersistentSortedDictionary(check.pool, ref: ref.assumingType(Self.self)).validate(into: &check)
    }
}
