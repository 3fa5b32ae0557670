import PersistentHeap

extension PersistentSortedDictionary {
    /// A position in a sorted map: seek to a key, step forwards and backwards along the leaves,
    /// read the entry there — decoded (``key``, ``value``) or in place (``withCurrent(_:)``).
    ///
    /// A cursor is valid while the map does not change: every step checks the map's change
    /// counter and throws `PoolError.Code.invalidArgument` if the map changed since the cursor
    /// was positioned (seek again). Inside a transaction it reads through the transaction (its
    /// own writes included).
    ///
    /// ```swift
    /// var c = map.makeCursor()
    /// var more = try c.seek(to: "user:")         // the first key ≥ "user:"
    /// while more, try c.key < "user;" { print(try c.key); more = try c.next() }
    /// ```
    public struct Cursor {
        /// The map.
        public let map: PersistentSortedDictionary
        /// The leaf and the position in it (leaf 0: not positioned).
        var leaf: UInt64 = 0
        var index = 0
        /// The map's change counter when the cursor was positioned.
        var changes: UInt64 = 0

        init(map: PersistentSortedDictionary) { self.map = map }

        /// Whether the cursor is on an entry.
        public var isPositioned: Bool { leaf != 0 }

        /// The current leaf, checked: the map unchanged, the position inside it.
        func current(_ r: BReader) throws -> BNode {
            guard leaf != 0 else { throw PoolError(.invalidArgument, "the cursor is not on an entry", path: map.pool.path) }
            let h = try map.header(r)
            guard h.changes == changes else {
                throw PoolError(.invalidArgument, "the map changed since the cursor was positioned: seek again", path: map.pool.path)
            }
            let n = try r.node(PRawPointer(offset: leaf))
            guard n.isLeaf, index < n.count else { throw n.bad(map.pool, "a cursor position outside its leaf") }
            return n
        }

        /// Moves to the first entry whose key is not less than `key` (`strictly`: greater).
        /// Returns whether there is one.
        @discardableResult
        @_specialize(where Key == String, Value == String)
        @_specialize(where Key == Int, Value == Int)
        public mutating func seek(to key: Key, strictly: Bool = false) throws -> Bool {
            let r = BReader(map.pool)
            let h = try map.header(r)
            changes = h.changes
            let (leafNode, pos): (BNode?, Int) = try map.withProbe(key) { probe in
                guard let l = try map.descend(probe, r, h) else { return (nil, 0) }
                return (l, try map.bound(l, probe, strictly: strictly))
            }
            guard let l = leafNode else { leaf = 0; return false }
            return try settle(r, l, pos, forward: true)
        }

        /// Moves to the first entry. Returns whether the map has one.
        @discardableResult
        public mutating func first() throws -> Bool {
            let r = BReader(map.pool)
            let h = try map.header(r)
            changes = h.changes
            guard let l = try map.leftmostLeaf(r, h) else { leaf = 0; return false }
            return try settle(r, l, 0, forward: true)
        }

        /// Moves to the last entry. Returns whether the map has one.
        @discardableResult
        public mutating func last() throws -> Bool {
            let r = BReader(map.pool)
            let h = try map.header(r)
            changes = h.changes
            guard let l = try map.rightmostLeaf(r, h) else { leaf = 0; return false }
            return try settle(r, l, l.count - 1, forward: false)
        }

        /// Moves to the next entry in key order. Returns false (and leaves the cursor unpositioned)
        /// after the last.
        @discardableResult
        public mutating func next() throws -> Bool {
            let r = BReader(map.pool)
            let n = try current(r)
            return try settle(r, n, index + 1, forward: true)
        }

        /// Moves to the previous entry in key order. Returns false (and leaves the cursor
        /// unpositioned) before the first.
        @discardableResult
        public mutating func previous() throws -> Bool {
            let r = BReader(map.pool)
            let n = try current(r)
            return try settle(r, n, index - 1, forward: false)
        }

        /// Positions at `pos` of `n`, following the leaf chain over empty positions (a position
        /// past the end continues in the next leaf, one before the start in the previous leaf).
        private mutating func settle(_ r: BReader, _ start: BNode, _ pos: Int, forward: Bool) throws -> Bool {
            var n = start, i = pos
            var steps = 0
            while i >= n.count || i < 0 {
                let link = forward ? n.link : n.prev
                guard !link.isNull else { leaf = 0; return false }
                steps += 1
                guard steps <= map.pool.size / BTree.nodeSize else { throw n.bad(map.pool, "the leaf chain loops") }
                n = try r.node(link)
                guard n.isLeaf else { throw n.bad(map.pool, "the leaf chain links to an internal node") }
                i = forward ? 0 : n.count - 1
            }
            leaf = UInt64(n.offset)
            index = i
            return true
        }

        /// The current key.
        public var key: Key {
            get throws {
                let r = BReader(map.pool)
                let n = try current(r)
                return try Key.decode(n.key(try n.entry(index, map.pool)), in: map.pool)
            }
        }

        /// The current value.
        public var value: Value {
            get throws {
                let r = BReader(map.pool)
                let n = try current(r)
                return try Value.decode(try r.value(n, try n.entry(index, map.pool)), in: map.pool)
            }
        }

        /// Calls `body` with the current entry's encoded key and value bytes where they lie in the
        /// pool (no copy).
        /// - Warning: The buffers are valid inside `body` only.
        public func withCurrent<R>(_ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> R) throws -> R {
            let r = BReader(map.pool)
            let n = try current(r)
            let e = try n.entry(index, map.pool)
            return try n.key(e).withUnsafeBytes { k in try r.value(n, e).withUnsafeBytes { v in try body(k, v) } }
        }
    }

    /// A cursor on this map, not positioned yet (``Cursor/seek(to:strictly:)``, ``Cursor/first()``,
    /// ``Cursor/last()``).
    public func makeCursor() -> Cursor { Cursor(map: self) }
}
