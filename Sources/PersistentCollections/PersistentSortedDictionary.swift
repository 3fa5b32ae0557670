import PersistentHeap

/// An ordered map in a pool: a B+ tree with range scans.
///
/// Keys and values are ``PersistentKey`` / ``PersistentValue`` types: `Int`, `UInt64`, …,
/// `String` (ordered by UTF-8 bytes), or your `BitwiseCopyable` types. Every change is a
/// failure-atomic transaction (joining the caller's if one is running): after a crash the map
/// holds the state before or after each change. Iteration is in key order.
///
/// ```swift
/// struct Root: BitwiseCopyable { var kv: PersistentSortedDictionary<String, String>.Ref }
/// let kv = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.kv))
/// try kv.updateValue("1", forKey: "one")
/// for (k, v) in try kv.scan(from: "a", to: "p") { print(k, v) }
/// ```
///
/// Layout: leaves and internal nodes hold up to 255 entries in fixed slots, plus an *order*
/// array sorted by key (each entry: a 56-bit key prefix and a slot number) — an insertion writes
/// one slot and shifts a few order entries, so a transaction logs little. Leaves are chained for scans. Removal does not
/// rebalance (a leaf may become empty); ``destroy(unlinking:)`` frees every node and entry.
///
/// Reads throw (``PoolError/Code/corrupted`` for a damaged pool, never a crash), so the map is
/// not a Swift `Sequence`: iterate with ``forEach(from:to:_:)``, an ``Iterator`` or ``scan(from:to:limit:)``.
///
/// Thread safety: concurrent reads are safe; changes must not race with other users of the map
/// (guard it with a ``PMutex``).
public struct PersistentSortedDictionary<Key: PersistentKey, Value: PersistentValue> {
    /// The persistent header.
    @frozen
    public struct Header: BitwiseCopyable {
        public var root: PRawPointer
        public var count: Int
        public var height: Int
    }

    /// A persistent reference to a map (8 bytes; null = none).
    public typealias Ref = PPointer<Header>

    /// The pool holding the map.
    public let pool: Pool
    /// Where the header is.
    public let ref: Ref

    /// Node geometry, computed once per handle.
    let leafLayout: Layout
    let innerLayout: Layout

    /// A handle on the map whose header is at `ref`.
    public init(_ pool: Pool, ref: Ref) {
        self.pool = pool
        self.ref = ref
        leafLayout = Self.layout(leaf: true)
        innerLayout = Self.layout(leaf: false)
    }

    /// The map `slot` refers to, created (empty) and linked into `slot` atomically if null.
    public static func open(_ pool: Pool, at slot: PPointer<Ref>) throws -> Self {
        Self(pool, ref: try pool.openContainerHeader(Header.self, at: slot))
    }

    /// A new empty map allocated in `tx` (link its ``ref`` somewhere in the same transaction).
    public static func create(in tx: Transaction) throws -> Self {
        Self(tx.pool, ref: try tx.allocate(Header.self, zeroed: true))
    }

    // MARK: Node layout
    //
    //     0   kind   UInt32   1 leaf, 2 internal
    //     4   count  UInt32
    //     8   link   UInt64   leaf: next leaf; internal: first (leftmost) child
    //     64  order  [UInt64 × capacity]  in key order: key prefix (56 bits) << 8 | slot number
    //     S   slots  [Entry × capacity]   leaf: (key, value); internal: (separator, right child)

    struct Layout {
        let capacity: Int
        let entry: Int
        let slots: Int
        let valueOffset: Int
        var bytes: Int { slots + capacity * entry }
    }

    static func layout(leaf: Bool) -> Layout {
        let k = MemoryLayout<Key.Stored>.stride
        // The second field: a value in leaves, a child pointer in internal nodes.
        let v = leaf ? MemoryLayout<Value.Stored>.stride : 8
        let vAlign = leaf ? MemoryLayout<Value.Stored>.alignment : 8
        let align = Swift.max(MemoryLayout<Key.Stored>.alignment, vAlign, 8)
        let valueOffset = (k + vAlign - 1) / vAlign * vAlign
        let entry = (valueOffset + v + align - 1) / align * align
        // ~3.5 KB nodes (measured: 7 KB nodes made inserts 35% slower and lookups no faster).
        let capacity = Swift.max(4, Swift.min(255, (3500 - 64) / (entry + 8)))
        let slots = (64 + capacity * 8 + align - 1) / align * align
        return Layout(capacity: capacity, entry: entry, slots: slots, valueOffset: valueOffset)
    }


    /// A node read through a reader. `node(_:_:)` validated its kind, its count (≤ capacity,
    /// kept here: a node is never read again through the same `Node` after it was changed) and
    /// that its whole byte range lies in the heap; every slot number read from its order array
    /// is checked against the capacity before it is used (`slot(_:)`).
    struct Node {
        let region: Region
        let isLeaf: Bool
        let layout: Layout
        let count: Int
        var offset: Int { region.offset }
        var pool: Pool { region.pool }
        var link: PRawPointer { get throws { try region.load(PRawPointer.self, at: 8) } }
        /// Order entry `i` (`i < count`: every caller's index is bounded by the validated count).
        @inline(__always)
        func entry(_ i: Int) throws -> UInt64 {
            assert(i >= 0 && i < layout.capacity)
            return try region.load(UInt64.self, at: 64 + i * 8)
        }
        @inline(__always)
        func slot(_ i: Int) throws -> Int { try slot(entry: try entry(i)) }
        /// The slot number of an order entry, checked against the capacity.
        @inline(__always)
        func slot(entry e: UInt64) throws -> Int {
            let s = Int(e & 0xff)
            guard s < layout.capacity else { throw corrupted(pool, "B+ tree node", at: offset, "slot \(s) out of range (capacity \(layout.capacity))") }
            return s
        }
        func key(_ l: Layout, slot s: Int) throws -> Key.Stored { try region.load(Key.Stored.self, at: l.slots + s * l.entry) }
        func value(_ l: Layout, slot s: Int) throws -> Value.Stored {
            try region.load(Value.Stored.self, at: l.slots + s * l.entry + l.valueOffset)
        }
        func child(_ l: Layout, slot s: Int) throws -> PRawPointer {
            try region.load(PRawPointer.self, at: l.slots + s * l.entry + l.valueOffset)
        }
    }

    /// The node at `p`, validated: aligned, its first line inside the heap, a known kind, a count
    /// within the capacity, and then its whole byte range inside the heap.
    @inline(__always)
    func node(_ p: PRawPointer, _ r: ContainerReader) throws -> Node {
        let o = Int(truncatingIfNeeded: p.offset)
        guard !p.isNull else { throw corrupted(pool, "B+ tree", at: Int(truncatingIfNeeded: ref.offset), "a node pointer is null") }
        let head = try r.region(o, count: 64, "B+ tree node").load(UInt64.self, at: 0)  // kind (low half), count (high half)
        let kind = UInt32(truncatingIfNeeded: head), c = Int(head >> 32)
        let l = kind == 1 ? leafLayout : innerLayout
        guard kind == 1 || kind == 2, c <= l.capacity else {
            throw corrupted(pool, "B+ tree node", at: o, kind == 1 || kind == 2 ? "claims \(c) entries" : "unknown kind \(kind)")
        }
        return Node(region: try r.region(o, count: l.bytes, "B+ tree node"), isLeaf: kind == 1, layout: l, count: c)
    }

    /// The header, validated: a non-negative count no larger than the pool, a height within 64.
    func header(_ r: ContainerReader) throws -> Header {
        let h = try r.load(ref)
        guard h.count >= 0, h.count <= pool.size, h.height >= 0, h.height <= 64, h.root.isNull == (h.height == 0) else {
            throw corrupted(pool, "B+ tree header", at: Int(truncatingIfNeeded: ref.offset), "count \(h.count), height \(h.height), root \(h.root.offset)")
        }
        return h
    }

    /// A prepared key: its order prefix and a comparator against stored keys.
    struct Probe {
        let prefix: UInt64
        let cmp: (Key.Stored) throws -> Int
    }

    /// Calls `body` with `key` prepared for many comparisons.
    func withProbe<R>(_ key: Key, _ body: (Probe) throws -> R) throws -> R {
        let prefix = Key.orderPrefix(key)
        return try Key.withComparator(key, in: pool) { cmp in
            try withoutActuallyEscaping(cmp) { try body(Probe(prefix: prefix, cmp: $0)) }
        }
    }

    /// First position in `n` whose key is greater than `key` (`orEqual`: not less than).
    func upperBound(_ n: Node, _ l: Layout, _ key: Key, orEqual: Bool) throws -> Int {
        try withProbe(key) { try upperBound(n, l, $0, orEqual: orEqual) }
    }

    /// `upperBound` with a prepared key: the search runs over the compact order array, reading
    /// a slot's key only where the 56-bit prefixes are equal.
    @inline(__always)
    func upperBound(_ n: Node, _ l: Layout, _ probe: Probe, orEqual: Bool) throws -> Int {
        var lo = 0, hi = n.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let e = try n.entry(mid)
            let ep = e >> 8
            let c = probe.prefix > ep ? 1 : (probe.prefix < ep ? -1 : try probe.cmp(try n.key(l, slot: try n.slot(entry: e))))
            if c > 0 || (c == 0 && !orEqual) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Descends to the leaf that may hold `key`, recording (internal node, position taken) in
    /// `path` unless it is nil (only an insertion needs the path; lookups, scans and removals
    /// keep none, and allocate no array for it).
    func descend(_ key: Key, _ r: ContainerReader, path: inout [(Node, Int)]?) throws -> Node? {
        try withProbe(key) { try descend($0, r, path: &path) }
    }

    func descend(_ cmp: Probe, _ r: ContainerReader, path: inout [(Node, Int)]?) throws -> Node? {
        let h = try header(r)
        guard !h.root.isNull else { return nil }
        var n = try node(h.root, r)
        var depth = 0
        while !n.isLeaf {
            depth += 1
            guard depth <= 64 else { throw PoolError(.corrupted, "B+ tree deeper than 64 levels", path: pool.path) }
            let l = innerLayout
            let pos = try upperBound(n, l, cmp, orEqual: false)  // entries[0..<pos] have separator ≤ key
            path?.append((n, pos))
            let child = pos == 0 ? try n.link : try n.child(l, slot: try n.slot(pos - 1))
            n = try node(child, r)
        }
        return n
    }

    // MARK: Reading

    /// The number of entries.
    public var count: Int {
        get throws { try header(ContainerReader(pool)).count }
    }

    /// Whether the map is empty.
    public var isEmpty: Bool {
        get throws { try count == 0 }
    }

    /// The value for `key`, or nil.
    /// - Complexity: O(log n) node visits.
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func value(forKey key: Key) throws -> Value? {
        let r = ContainerReader(pool)
        return try withProbe(key) { probe -> Value? in
            var noPath: [(Node, Int)]? = nil
            guard let leaf = try descend(probe, r, path: &noPath) else { return nil }
            let l = leafLayout
            let pos = try upperBound(leaf, l, probe, orEqual: true)
            guard pos < leaf.count else { return nil }
            let s = try leaf.slot(pos)
            guard try probe.cmp(try leaf.key(l, slot: s)) == 0 else { return nil }
            return try Value.load(try leaf.value(l, slot: s), from: pool)
        }
    }

    /// The value for `key`, or nil (see ``value(forKey:)``).
    public subscript(key: Key) -> Value? {
        get throws { try value(forKey: key) }
    }

    /// Whether `key` has a value.
    public func contains(_ key: Key) throws -> Bool { try value(forKey: key) != nil }

    /// The entries with `from ≤ key < to` (either bound may be nil), in key order, at most `limit`.
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
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
        let r = ContainerReader(pool)
        let l = leafLayout
        var leaf: Node?
        var pos = 0
        if let from {
            var noPath: [(Node, Int)]? = nil
            leaf = try descend(from, r, path: &noPath)
            if let leaf { pos = try upperBound(leaf, l, from, orEqual: true) }
        } else {
            leaf = try leftmostLeaf(r)
        }
        var visited = 0
        while let n = leaf {
            let c = n.count
            while pos < c {
                let s = try n.slot(pos)
                let stored = try n.key(l, slot: s)
                if let to, try Key.compare(to, stored, in: pool) <= 0 { return }
                if try !body(try Key.load(stored, from: pool), try Value.load(try n.value(l, slot: s), from: pool)) { return }
                pos += 1
            }
            let next = try n.link
            visited += 1
            guard visited <= pool.size / 64 else { throw corrupted(pool, "B+ tree leaf chain", at: n.offset, "loops") }
            leaf = next.isNull ? nil : try node(next, r)
            if let l = leaf, !l.isLeaf { throw corrupted(pool, "B+ tree leaf chain", at: n.offset, "links to an internal node") }
            pos = 0
        }
    }

    /// The first leaf, or nil for an empty tree.
    func leftmostLeaf(_ r: ContainerReader) throws -> Node? {
        let h = try header(r)
        guard !h.root.isNull else { return nil }
        var n = try node(h.root, r)
        var depth = 0
        while !n.isLeaf {
            depth += 1
            guard depth <= 64 else { throw corrupted(pool, "B+ tree", at: Int(truncatingIfNeeded: ref.offset), "deeper than 64 levels") }
            n = try node(try n.link, r)
        }
        return n
    }

    /// An iterator over the entries in key order whose `next()` throws for a damaged map. The
    /// map must not change while it is used.
    public struct Iterator {
        let map: PersistentSortedDictionary
        var leaf: PRawPointer? = nil
        var pos = 0
        var started = false
        var leaves = 0

        /// The next (key, value) in key order, or nil after the last.
        public mutating func next() throws -> (key: Key, value: Value)? {
            let r = ContainerReader(map.pool)
            if !started {
                started = true
                leaf = try map.leftmostLeaf(r).map { PRawPointer(offset: UInt64($0.offset)) }
            }
            while let p = leaf {
                let n = try map.node(p, r)
                guard n.isLeaf else { throw corrupted(map.pool, "B+ tree leaf chain", at: n.offset, "links to an internal node") }
                if pos < n.count {
                    let s = try n.slot(pos)
                    pos += 1
                    let l = map.leafLayout
                    return (try Key.load(try n.key(l, slot: s), from: map.pool), try Value.load(try n.value(l, slot: s), from: map.pool))
                }
                let next = try n.link
                leaves += 1
                guard leaves <= map.pool.size / 64 else { throw corrupted(map.pool, "B+ tree leaf chain", at: n.offset, "loops") }
                leaf = next.isNull ? nil : next
                pos = 0
            }
            return nil
        }
    }

    /// An iterator in key order: `var it = map.makeIterator(); while let (k, v) = try it.next() { … }`.
    public func makeIterator() -> Iterator { Iterator(map: self) }

    // MARK: Changing

    /// Sets the value for `key`; returns the previous value, if any. One transaction.
    /// - Complexity: O(log n) node visits; a split allocates one node per level at most.
    @discardableResult
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func updateValue(_ value: Value, forKey key: Key) throws -> Value? {
        try pool.transaction { tx -> Value? in try insert(key, value, tx) }
    }

    private func insert(_ key: Key, _ value: Value, _ tx: Transaction) throws -> Value? {
        let r = ContainerReader(pool, tx)
        var h = try header(r)
        let l = leafLayout
        var path: [(Node, Int)]? = []
        guard let leaf = try descend(key, r, path: &path) else {
            let k = try Key.store(key, in: tx), v = try Value.store(value, in: tx)
            let root = try newNode(tx, leaf: true, link: .null, entries: [(k, Self.bits(v))])
            h.root = root
            h.count = 1
            h.height = 1
            try tx.write(h, to: ref)
            return nil
        }
        let pos = try upperBound(leaf, l, key, orEqual: true)
        if pos < leaf.count {
            let s = try leaf.slot(pos)
            if try Key.compare(key, try leaf.key(l, slot: s), in: pool) == 0 {
                let old = try leaf.value(l, slot: s)
                let previous = try Value.load(old, from: pool)
                try Value.release(old, in: tx)
                try tx.write(try Value.store(value, in: tx), to: PPointer(offset: UInt64(leaf.offset + l.slots + s * l.entry + l.valueOffset)))
                return previous
            }
        }
        let k = try Key.store(key, in: tx), v = try Value.store(value, in: tx)
        try insertEntry(tx, r, node: leaf, layout: l, at: pos, key: k, payload: Self.bits(v), path: &path, height: &h.height, root: &h.root)
        h.count += 1
        try tx.write(h, to: ref)
        return nil
    }

    /// The bytes of a value or child pointer, as a slot's second field.
    static func bits<T: BitwiseCopyable>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v) { Array($0) } }

    /// Copies a slot's second field (possibly empty: a zero-size value) to `offset` of `view`.
    static func copy(_ bytes: [UInt8], into view: MutableByteView, at offset: Int) {
        bytes.withUnsafeBufferPointer { view.copy($0, to: offset) }
    }

    /// Allocates a node initialised in place with `entries` in order.
    private func newNode(_ tx: Transaction, leaf: Bool, link: PRawPointer, entries: [(Key.Stored, [UInt8])]) throws -> PRawPointer {
        let l = leaf ? leafLayout : innerLayout
        return try tx.allocate(bytes: l.bytes, alignment: 64) { (view: MutableByteView) in
            view.store(UInt32(leaf ? 1 : 2), at: 0)
            view.store(UInt32(entries.count), at: 4)
            view.store(link, at: 8)
            for (i, (k, v)) in entries.enumerated() {
                view.store(Key.orderPrefix(stored: k) << 8 | UInt64(i), at: 64 + i * 8)
                view.store(k, at: l.slots + i * l.entry)
                Self.copy(v, into: view, at: l.slots + i * l.entry + l.valueOffset)
            }
        }
    }

    /// Inserts (key, payload) at order position `pos` of `n`, splitting up the path as needed.
    private func insertEntry(_ tx: Transaction, _ r: ContainerReader, node n: Node, layout l: Layout, at pos: Int,
                             key: Key.Stored, payload: [UInt8], path: inout [(Node, Int)]?,
                             height: inout Int, root: inout PRawPointer) throws {
        let count = n.count
        let leaf = n.isLeaf
        if count < l.capacity {
            try writeEntry(tx, n, l, at: pos, count: count, key: key, payload: payload)
            return
        }
        // Split: the upper half moves to a new node initialised in place; the node keeps its
        // slots and gets a new order array (the new entry, if it stays, takes a freed slot).
        let entries = try (0..<count).map { i -> (Key.Stored, [UInt8], slot: Int) in
            let s = try n.slot(i)
            return (try n.key(l, slot: s), leaf ? Self.bits(try n.value(l, slot: s)) : Self.bits(try n.child(l, slot: s)), s)
        }
        var all = entries
        all.insert((key, payload, -1), at: pos)
        let half = all.count / 2
        let left = Array(all[0..<half])
        var right = Array(all[half...]).map { ($0.0, $0.1) }
        let separator: Key.Stored
        let rightLink: PRawPointer
        if leaf {
            // The separator is a copy of the right node's first key (the leaf keeps its own).
            separator = try Key.store(try Key.load(right[0].0, from: pool), in: tx)
            rightLink = try n.link
        } else {
            // The middle separator moves up; its child becomes the right node's first child.
            separator = right[0].0
            rightLink = right[0].1.withUnsafeBytes { $0.loadUnaligned(as: PRawPointer.self) }
            right.removeFirst()
        }
        let newRight = try newNode(tx, leaf: leaf, link: rightLink, entries: right)
        try keepLeft(tx, n, l, entries: left, link: leaf ? newRight : try n.link)
        let payloadRight = Self.bits(newRight)
        if let (parent, ppos) = path?.popLast() {
            try insertEntry(tx, r, node: parent, layout: innerLayout, at: ppos, key: separator, payload: payloadRight,
                            path: &path, height: &height, root: &root)
        } else {
            root = try newNode(tx, leaf: false, link: PRawPointer(offset: UInt64(n.offset)), entries: [(separator, payloadRight)])
            height += 1
        }
    }

    /// Writes (key, payload) into a free slot of `n` and shifts the order array.
    private func writeEntry(_ tx: Transaction, _ n: Node, _ l: Layout, at pos: Int, count: Int, key: Key.Stored, payload: [UInt8]) throws {
        // Slots are below the capacity, at most 256 (the order array keeps a slot in 8 bits).
        var used = SIMD4<UInt64>(repeating: 0)
        for i in 0..<count { let s = try n.slot(i); used[s >> 6] |= 1 << UInt64(s & 63) }
        var free = l.capacity
        for k in 0..<4 where used[k] != ~0 { free = k << 6 | (~used[k]).trailingZeroBitCount; break }
        // `count` distinct slots leave one below the capacity free: none means duplicate slots.
        guard free < l.capacity else { throw corrupted(pool, "B+ tree node", at: n.offset, "no free slot among \(count) entries") }
        try tx.withMutableView(of: PRawPointer(offset: UInt64(n.offset + l.slots + free * l.entry)), count: l.entry) { view in
            view.store(key, at: 0)
            Self.copy(payload, into: view, at: l.valueOffset)
        }
        try tx.withMutableView(of: PRawPointer(offset: UInt64(n.offset + 64 + pos * 8)), count: (count - pos + 1) * 8) { view in
            if count > pos { view.move(from: 0, to: 8, count: (count - pos) * 8) }
            view.store(Key.orderPrefix(stored: key) << 8 | UInt64(free), at: 0)
        }
        try tx.write(UInt32(count + 1), to: PPointer(offset: UInt64(n.offset + 4)))
    }

    /// Makes `n` hold exactly `entries` (the lower half after a split), keeping each entry's
    /// slot: only the order array, the count and the link are written, plus the new entry (slot
    /// -1) in a slot no kept entry uses.
    private func keepLeft(_ tx: Transaction, _ n: Node, _ l: Layout, entries: [(Key.Stored, [UInt8], slot: Int)], link: PRawPointer) throws {
        var used = [Bool](repeating: false, count: l.capacity)
        for e in entries where e.slot >= 0 { used[e.slot] = true }
        var order: [UInt64] = []
        for e in entries {
            var slot = e.slot
            if slot < 0 {
                guard let f = used.firstIndex(of: false) else {
                    throw corrupted(pool, "B+ tree node", at: n.offset, "no free slot left while splitting (duplicate slots)")
                }
                slot = f
                used[slot] = true
                try tx.withMutableView(of: PRawPointer(offset: UInt64(n.offset + l.slots + slot * l.entry)), count: l.entry) { view in
                    view.store(e.0, at: 0)
                    Self.copy(e.1, into: view, at: l.valueOffset)
                }
            }
            order.append(Key.orderPrefix(stored: e.0) << 8 | UInt64(slot))
        }
        try tx.withMutableView(of: PRawPointer(offset: UInt64(n.offset + 4)), count: 4 + 8 + 56 + order.count * 8) { view in
            view.store(UInt32(order.count), at: 0)
            view.store(link, at: 4)
            for (i, o) in order.enumerated() { view.store(o, at: 60 + i * 8) }
        }
    }

    /// Removes `key`; returns its value, if it had one. One transaction.
    @discardableResult
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func removeValue(forKey key: Key) throws -> Value? {
        try pool.transaction { tx -> Value? in
            let r = ContainerReader(pool, tx)
            var noPath: [(Node, Int)]? = nil
            guard let leaf = try descend(key, r, path: &noPath) else { return nil }
            let l = leafLayout
            let count = leaf.count
            let pos = try upperBound(leaf, l, key, orEqual: true)
            guard pos < count else { return nil }
            let s = try leaf.slot(pos)
            let storedKey = try leaf.key(l, slot: s)
            guard try Key.compare(key, storedKey, in: pool) == 0 else { return nil }
            let storedValue = try leaf.value(l, slot: s)
            let previous = try Value.load(storedValue, from: pool)
            try Key.release(storedKey, in: tx)
            try Value.release(storedValue, in: tx)
            try tx.withMutableBytes(of: PRawPointer(offset: UInt64(leaf.offset + 64 + pos * 8)), count: (count - pos) * 8) { buf in
                if count - pos > 1 { buf.baseAddress!.copyMemory(from: buf.baseAddress! + 8, byteCount: (count - pos - 1) * 8) }
            }
            try tx.write(UInt32(count - 1), to: PPointer(offset: UInt64(leaf.offset + 4)))
            let h = try header(r)
            guard h.count > 0 else { throw corrupted(pool, "B+ tree header", at: Int(truncatingIfNeeded: ref.offset), "count 0 but an entry was found") }
            try tx.write(h.count - 1, to: ref.field(\.count))
            return previous
        }
    }

    /// Frees every node, key and value, and the header; if `slot` is given, sets it to null in
    /// the same transaction. The handle must not be used afterwards.
    public func destroy(unlinking slot: PPointer<Ref>? = nil) throws {
        try pool.transaction { tx in
            let r = ContainerReader(pool, tx)
            let h = try header(r)
            if !h.root.isNull { try free(h.root, r, tx, depth: 0) }
            try tx.free(ref)
            if let slot { try tx.write(.null, to: slot) }
        }
    }

    private func free(_ p: PRawPointer, _ r: ContainerReader, _ tx: Transaction, depth: Int) throws {
        guard depth <= 64 else { throw PoolError(.corrupted, "B+ tree deeper than 64 levels", path: pool.path) }
        let n = try node(p, r)
        let leaf = n.isLeaf
        let l = n.layout
        if !leaf { try free(try n.link, r, tx, depth: depth + 1) }
        for i in 0..<n.count {
            let s = try n.slot(i)
            try Key.release(try n.key(l, slot: s), in: tx)
            if leaf { try Value.release(try n.value(l, slot: s), in: tx) } else { try free(try n.child(l, slot: s), r, tx, depth: depth + 1) }
        }
        try tx.free(p)
    }

    // MARK: Deep check

    /// Walks the whole tree: every node is a live allocation of a node's size, reached once, of a
    /// known kind, with a count within its capacity (internal nodes: at least one entry), distinct
    /// slot numbers, order prefixes that match their keys, keys in strictly increasing order and
    /// inside the range its parent's separators give the subtree, every leaf at the header's
    /// height, the leaf chain linking the leaves in key order, the header's count equal to the
    /// entries, and what every key and value owns (strings, nested containers). Returns the
    /// problems found (empty when sound).
    public func validate() throws -> [String] {
        try requireOpen(pool)
        var check = ContainerCheck(pool: pool)
        validate(into: &check)
        return check.problems
    }

    /// The deep check, recording into `check` (shared with enclosing containers).
    public func validate(into check: inout ContainerCheck) {
        guard check.firstVisit(ref.raw, "B+ tree header"),
              check.checkBlock(ref.raw, bytes: MemoryLayout<Header>.size, "B+ tree header") else { return }
        check.catching("B+ tree at \(ref.offset)") { check in
            let r = ContainerReader(pool)
            let h = try header(r)
            guard !h.root.isNull else {
                if h.count != 0 { check.note("B+ tree at \(ref.offset): empty tree with count \(h.count)") }
                return
            }
            var walk = TreeWalk()
            try validateNode(h.root, depth: 1, height: h.height, low: nil, high: nil, r, &walk, &check)
            if walk.entries != h.count { check.note("B+ tree at \(ref.offset): \(walk.entries) entries reachable, header says \(h.count)") }
            if let last = walk.lastLeaf, try !node(last, r).link.isNull {
                check.note("B+ tree at \(ref.offset): the last leaf links to another node")
            }
        }
    }

    /// State of a deep-check walk: entries seen, and the previous leaf in key order (the leaf
    /// chain must link the leaves in exactly the order the walk meets them).
    struct TreeWalk {
        var entries = 0
        var lastLeaf: PRawPointer?
    }

    private func validateNode(_ p: PRawPointer, depth: Int, height: Int, low: Key.Stored?, high: Key.Stored?,
                              _ r: ContainerReader, _ walk: inout TreeWalk, _ check: inout ContainerCheck) throws {
        let at = p.offset
        guard depth <= 64, check.firstVisit(p, "B+ tree node") else { return }
        let n = try node(p, r)
        guard check.checkBlock(p, bytes: n.layout.bytes, "B+ tree node") else { return }
        let l = n.layout
        let count = n.count
        if n.isLeaf != (depth == height) {
            check.note("B+ tree node at \(at): a \(n.isLeaf ? "leaf" : "internal node") at depth \(depth) of a tree of height \(height)")
            return
        }
        if !n.isLeaf && count == 0 { check.note("B+ tree node at \(at): internal node without entries") }
        var slots = Set<Int>()
        var previous: Key.Stored? = low
        var previousIsLow = low != nil
        for i in 0..<count {
            let e = try n.entry(i)
            let s = try n.slot(i)
            if !slots.insert(s).inserted { check.note("B+ tree node at \(at): slot \(s) used twice"); return }
            let k = try n.key(l, slot: s)
            Key.validate(k, in: &check)
            if e >> 8 != Key.orderPrefix(stored: k) & 0x00ff_ffff_ffff_ffff { check.note("B+ tree node at \(at): order prefix of entry \(i) does not match its key") }
            let key = try Key.load(k, from: pool)
            if let previous {
                // Keys strictly increase; the first key of a subtree may equal its low bound.
                let c = try Key.compare(key, previous, in: pool)
                if c < 0 || (c == 0 && !previousIsLow) { check.note("B+ tree node at \(at): keys out of order at entry \(i)") }
            }
            if let high, try Key.compare(key, high, in: pool) >= 0 { check.note("B+ tree node at \(at): key \(i) is not below the subtree's upper bound") }
            previous = k
            previousIsLow = false
            if n.isLeaf { Value.validate(try n.value(l, slot: s), in: &check) }
        }
        if n.isLeaf {
            walk.entries += count
            if let last = walk.lastLeaf, try node(last, r).link != p {
                check.note("B+ tree leaf at \(at) is not linked from the leaf before it")
            }
            walk.lastLeaf = p
            return
        }
        // Children: the leftmost below the first separator, child i between separators i and i+1.
        var bound = low
        for i in -1..<count {
            let child = i < 0 ? try n.link : try n.child(l, slot: try n.slot(i))
            let lo = i < 0 ? bound : try n.key(l, slot: try n.slot(i))
            let hi = i + 1 < count ? try n.key(l, slot: try n.slot(i + 1)) : high
            try validateNode(child, depth: depth + 1, height: height, low: lo, high: hi, r, &walk, &check)
            bound = lo
            guard check.problemCount < check.limit else { return }
        }
    }
}

extension PersistentSortedDictionary.Header: PersistentValue, ContainerHeader {
    static func validateContainer(at ref: PRawPointer, in check: inout ContainerCheck) {
        PersistentSortedDictionary(check.pool, ref: ref.assumingType(Self.self)).validate(into: &check)
    }
}


