// Changing the B+ tree: insert (with splits up the path), replace, remove (with merges and
// redistribution up the path), destroy. Each public change is one transaction.
//
//   insert into a node with room:     write the entry into free space, shift the order array's
//                                     tail by one slot, write the node's head word (a few hundred
//                                     bytes of record)
//   with room only after compaction:  the node rebuilt whole (its image made in scratch memory)
//   without room:                     split by bytes: a new right node built in place, the left
//                                     node rebuilt, the separator inserted in the parent (which
//                                     may split in turn); a root split adds a level
//   remove:                           drop the order slot (the entry's bytes become garbage);
//                                     a node below a quarter full (not the root) is merged with a
//                                     sibling when both fit one node, else the two share their
//                                     entries evenly and the parent's separator is replaced; an
//                                     empty root leaf is freed, a root with one child collapses
//
// The path from the root is kept as (node offset << 16 | position) words in a 64-entry stack
// buffer: no allocation on the way down. Nodes are re-read after every change (a `BNode` shows
// the bytes as they were when it was read).

import PersistentHeap

/// An entry to place in a node: its bytes in some view (a node, or scratch memory).
struct BItem {
    let view: ByteView
    let entry: BEntry
    var size: Int { entry.size }
}

extension PersistentSortedDictionary {
    // MARK: Entries and node images

    /// A leaf entry for `key` and `value`, built in scratch memory: inline when the entry fits
    /// ``BTree/maxInlineEntry``, else with the value in a block of its own.
    func leafItem(_ tx: Transaction, key: UnsafeRawBufferPointer, value: Value) throws -> BItem {
        try Value.withEncodedBytes(value) { v -> BItem in
            let k = key.count
            if 4 + k + v.count <= BTree.maxInlineEntry {
                let e = BEntry(offset: 0, keyLength: k, valueLength: v.count, outOfLine: false)
                let s = try tx.scratch(count: e.size)
                s.store(UInt16(k), at: 0)
                s.store(UInt16(v.count), at: 2)
                s.copy(key, to: 4)
                s.copy(v, to: 4 + k)
                return BItem(view: s.readOnly, entry: e)
            }
            let block = try tx.allocate(bytes: 8 + v.count, alignment: 8) { (b: MutableByteView) in
                b.store(UInt64(v.count), at: 0)
                b.copy(v, to: 8)
            }
            let e = BEntry(offset: 0, keyLength: k, valueLength: BTree.outOfLineBytes, outOfLine: true)
            let s = try tx.scratch(count: e.size)
            s.store(UInt16(k), at: 0)
            s.store(BTree.outOfLineFlag, at: 2)
            s.copy(key, to: 4)
            s.store(UInt64(v.count), at: 4 + k)
            s.store(block, at: 12 + k)
            return BItem(view: s.readOnly, entry: e)
        }
    }

    /// An internal entry: `key` (the bytes of a key view) and `child`, in scratch memory.
    func innerItem(_ tx: Transaction, key: ByteView, child: PRawPointer) throws -> BItem {
        let e = BEntry(offset: 0, keyLength: key.count, valueLength: 8, outOfLine: false)
        let s = try tx.scratch(count: e.size)
        s.store(UInt16(key.count), at: 0)
        s.store(UInt16(8), at: 2)
        s.copy(from: key, at: 0, count: key.count, to: 4)
        s.store(child, at: 4 + key.count)
        return BItem(view: s.readOnly, entry: e)
    }

    /// Entry `i` of `n` as an item.
    @inline(__always)
    func item(_ n: BNode, _ i: Int) throws -> BItem { BItem(view: n.view, entry: try n.entry(i, pool)) }

    /// The order word of an item placed at `offset`.
    @inline(__always)
    func orderWord(_ it: BItem, at offset: Int) -> UInt64 {
        let p = Key.encodingIsOrdered ? BTree.prefix(it.view, at: it.entry.keyOffset, length: it.entry.keyLength) : 0
        return p << 16 | UInt64(offset)
    }

    /// Writes a whole node image into `image`: header, `count` entries from `item(i)` in order
    /// (packed from the end), their order array. The items must fit (the callers size them).
    func build(_ image: MutableByteView, leaf: Bool, link: PRawPointer, prev: PRawPointer,
               count: Int, _ item: (Int) throws -> BItem) rethrows {
        image.zero(at: 0, count: BTree.headerSize)
        var data = BTree.nodeSize
        for i in 0..<count {
            let it = try item(i)
            data -= it.size
            image.copy(from: it.view, at: it.entry.offset, count: 4 + it.entry.keyLength + it.entry.valueLength, to: data)
            image.store(orderWord(it, at: data), at: BTree.headerSize + 8 * i)
        }
        image.store(Self.head(leaf: leaf, count: count, dataStart: data, garbage: 0), at: 0)
        image.store(link, at: 8)
        image.store(prev, at: 16)
    }

    /// A node's first word: kind, count, dataStart, garbage.
    static func head(leaf: Bool, count: Int, dataStart: Int, garbage: Int) -> UInt64 {
        UInt64(leaf ? 1 : 2) | UInt64(count) << 16 | UInt64(dataStart) << 32 | UInt64(garbage) << 48
    }

    /// A new node built in place (allocated in `tx`).
    func newNode(_ tx: Transaction, leaf: Bool, link: PRawPointer, prev: PRawPointer, count: Int,
                 _ item: (Int) throws -> BItem) throws -> PRawPointer {
        try tx.allocate(bytes: BTree.nodeSize, alignment: 64) { (image: MutableByteView) in
            try build(image, leaf: leaf, link: link, prev: prev, count: count, item)
        }
    }

    /// Rewrites node `n` whole from an image built in scratch memory.
    func rewrite(_ tx: Transaction, _ n: BNode, leaf: Bool, link: PRawPointer, prev: PRawPointer, count: Int,
                 _ item: (Int) throws -> BItem) throws {
        let image = try tx.scratch(count: BTree.nodeSize)
        try build(image, leaf: leaf, link: link, prev: prev, count: count, item)
        try tx.withMutableView(of: n.pointer, count: BTree.nodeSize) { $0.copy(from: image.readOnly, at: 0, count: BTree.nodeSize, to: 0) }
    }

    /// The position (in `0..<count`) where cumulative item bytes first reach half the total:
    /// the split point of `count` items (both sides non-empty).
    func half(count: Int, _ item: (Int) throws -> BItem) rethrows -> Int {
        var total = 0
        for i in 0..<count { total += try item(i).size + 8 }
        var acc = 0
        for i in 0..<count {
            acc += try item(i).size + 8
            if acc * 2 >= total { return Swift.max(1, Swift.min(i + 1, count - 1)) }
        }
        return count / 2
    }

    // MARK: Path

    /// Entry `d` of a descent path: (node offset, position taken).
    @inline(__always)
    static func step(_ path: UnsafeMutableBufferPointer<UInt64>, _ d: Int) -> (Int, Int) {
        (Int(path[d] >> 16), Int(path[d] & 0xffff))
    }

    /// Descends to the leaf for `probe`, recording the path; returns (leaf, path depth).
    func descendRecording(_ probe: Probe, _ r: BReader, _ h: Header, _ path: UnsafeMutableBufferPointer<UInt64>) throws -> (BNode, Int)? {
        var depth = 0
        let leaf = try descend(probe, r, h) { n, pos in
            if depth < path.count { path[depth] = UInt64(n.offset) << 16 | UInt64(pos) }
            depth += 1
        }
        guard let leaf else { return nil }
        guard depth < path.count else { throw PoolError(.corrupted, "B+ tree deeper than \(path.count) levels", path: pool.path) }
        return (leaf, depth)
    }

    // MARK: Insert

    /// Sets the value for `key`; returns the previous value, if any. One transaction.
    /// - Complexity: O(log n) node visits; a split allocates one node per level at most.
    @discardableResult
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func updateValue(_ value: Value, forKey key: Key) throws -> Value? {
        try pool.transaction { tx -> Value? in try insert(key, value, tx) }
    }

    func insert(_ key: Key, _ value: Value, _ tx: Transaction) throws -> Value? {
        let r = BReader(pool, tx)
        var h = try header(r)
        let previous: Value? = try withProbe(key) { probe in
            try withUnsafeTemporaryAllocation(of: UInt64.self, capacity: 64) { path -> Value? in
                guard let (leaf, depth) = try descendRecording(probe, r, h, path) else {
                    let it = try leafItem(tx, key: probe.bytes, value: value)
                    h.root = try newNode(tx, leaf: true, link: .null, prev: .null, count: 1) { _ in it }
                    h.count = 1
                    h.height = 1
                    return nil
                }
                let pos = try bound(leaf, probe, strictly: false)
                if pos < leaf.count, try compare(probe, leaf, pos) == 0 {
                    let e = try leaf.entry(pos, pool)
                    let old = try Value.decode(try r.value(leaf, e), in: pool)
                    try replace(tx, r, leaf, pos, e, key: probe.bytes, value: value, path, depth, &h)
                    return old
                }
                let it = try leafItem(tx, key: probe.bytes, value: value)
                try place(tx, r, leaf, at: pos, it, replacing: false, path, depth, &h)
                h.count += 1
                return nil
            }
        }
        h.changes &+= 1
        try tx.write(h, to: ref)
        return previous
    }

    /// Replaces the value of entry `pos` of `leaf`: in place when the new inline value has the
    /// old one's size, else a new entry takes the slot (the old block, if any, is freed).
    func replace(_ tx: Transaction, _ r: BReader, _ leaf: BNode, _ pos: Int, _ e: BEntry, key: UnsafeRawBufferPointer,
                 value: Value, _ path: UnsafeMutableBufferPointer<UInt64>, _ depth: Int, _ h: inout Header) throws {
        let sameSize = try Value.withEncodedBytes(value) { v -> Bool in
            guard !e.outOfLine, v.count == e.valueLength, 4 + key.count + v.count <= BTree.maxInlineEntry else { return false }
            try tx.withMutableView(of: PRawPointer(offset: UInt64(leaf.offset + e.valueOffset)), count: v.count) { $0.copy(v, to: 0) }
            return true
        }
        if sameSize { return }
        if e.outOfLine { try tx.free(PRawPointer(offset: leaf.view.load(UInt64.self, at: e.valueOffset + 8))) }
        let it = try leafItem(tx, key: key, value: value)
        try place(tx, r, leaf, at: pos, it, replacing: true, path, depth, &h)
    }

    /// Places `it` at order position `pos` of `n` — inserted before the entry there, or
    /// `replacing` it — splitting `n` (and its ancestors) when it does not fit.
    func place(_ tx: Transaction, _ r: BReader, _ n: BNode, at pos: Int, _ it: BItem, replacing: Bool,
               _ path: UnsafeMutableBufferPointer<UInt64>, _ depth: Int, _ h: inout Header) throws {
        let old = replacing ? try n.entry(pos, pool).size : 0
        let count = replacing ? n.count : n.count + 1
        // The items of `n` with `it` in place: item(i) for i in 0..<count.
        let items: (Int) throws -> BItem = { i in
            if i == pos { return it }
            return try self.item(n, replacing || i < pos ? i : i - 1)
        }
        let orderGrowth = replacing ? 0 : 8
        if n.freeBytes >= it.size + orderGrowth {
            // Into free space: the entry, the order slots from `pos` on, the head word.
            let o = n.dataStart - it.size
            try tx.withMutableView(of: PRawPointer(offset: UInt64(n.offset + o)), count: it.size) {
                $0.copy(from: it.view, at: it.entry.offset, count: 4 + it.entry.keyLength + it.entry.valueLength, to: 0)
            }
            let tail = replacing ? 1 : n.count - pos + 1
            try tx.withMutableView(of: PRawPointer(offset: UInt64(n.offset + BTree.headerSize + 8 * pos)), count: 8 * tail) { v in
                if !replacing && tail > 1 { v.move(from: 0, to: 8, count: 8 * (tail - 1)) }
                v.store(orderWord(it, at: o), at: 0)
            }
            try tx.write(Self.head(leaf: n.isLeaf, count: count, dataStart: o, garbage: n.garbage + old),
                         to: PPointer<UInt64>(offset: UInt64(n.offset)))
            return
        }
        if n.freeBytes + n.garbage + old >= it.size + orderGrowth {
            // Compacted, it fits: rebuild the node whole.
            try rewrite(tx, n, leaf: n.isLeaf, link: n.link, prev: n.prev, count: count, items)
            return
        }
        try split(tx, r, n, count: count, items, path, depth, &h)
    }

    /// Splits `n` whose entries would be `items(0..<count)`: the upper half to a new right node,
    /// the separator into the parent.
    func split(_ tx: Transaction, _ r: BReader, _ n: BNode, count: Int, _ items: (Int) throws -> BItem,
               _ path: UnsafeMutableBufferPointer<UInt64>, _ depth: Int, _ h: inout Header) throws {
        // An internal node keeps a separator on each side of the one that moves up.
        let k = n.isLeaf ? try half(count: count, items) : Swift.max(1, Swift.min(try half(count: count, items), count - 2))
        let right: PRawPointer
        let separator: BItem
        if n.isLeaf {
            // Leaves: [0, k) stay, [k, count) move; the separator is a copy of the right's first key.
            right = try newNode(tx, leaf: true, link: n.link, prev: n.pointer, count: count - k) { try items(k + $0) }
            let first = try items(k)
            separator = try innerItem(tx, key: first.view.slice(at: first.entry.keyOffset, count: first.entry.keyLength), child: right)
            let next = n.link
            try rewrite(tx, n, leaf: true, link: right, prev: n.prev, count: k, items)
            try relinkPrevious(tx, r, of: next, to: right)
        } else {
            // Internal nodes: [0, k) stay, entry k moves up (its child becomes the right's
            // leftmost), [k+1, count) move.
            let middle = try items(k)
            let middleChild = PRawPointer(offset: middle.view.load(UInt64.self, at: middle.entry.valueOffset))
            right = try newNode(tx, leaf: false, link: middleChild, prev: .null, count: count - k - 1) { try items(k + 1 + $0) }
            separator = try innerItem(tx, key: middle.view.slice(at: middle.entry.keyOffset, count: middle.entry.keyLength), child: right)
            try rewrite(tx, n, leaf: false, link: n.link, prev: .null, count: k, items)
        }
        if depth == 0 {
            // A root split adds a level.
            h.root = try newNode(tx, leaf: false, link: n.pointer, prev: .null, count: 1) { _ in separator }
            h.height += 1
            guard h.height <= 64 else { throw PoolError(.corrupted, "B+ tree deeper than 64 levels", path: pool.path) }
            return
        }
        let (parentOffset, ppos) = Self.step(path, depth - 1)
        let parent = try r.node(PRawPointer(offset: UInt64(parentOffset)))
        try place(tx, r, parent, at: ppos, separator, replacing: false, path, depth - 1, &h)
    }

    // MARK: Remove

    /// Removes `key`; returns its value, if it had one. One transaction.
    @discardableResult
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func removeValue(forKey key: Key) throws -> Value? {
        try pool.transaction { tx -> Value? in
            let r = BReader(pool, tx)
            var h = try header(r)
            let previous: Value? = try withProbe(key) { probe in
                try withUnsafeTemporaryAllocation(of: UInt64.self, capacity: 64) { path -> Value? in
                    guard let (leaf, depth) = try descendRecording(probe, r, h, path) else { return nil }
                    let pos = try bound(leaf, probe, strictly: false)
                    guard pos < leaf.count, try compare(probe, leaf, pos) == 0 else { return nil }
                    let e = try leaf.entry(pos, pool)
                    let old = try Value.decode(try r.value(leaf, e), in: pool)
                    if e.outOfLine { try tx.free(PRawPointer(offset: leaf.view.load(UInt64.self, at: e.valueOffset + 8))) }
                    try drop(tx, leaf, pos, e)
                    guard h.count > 0 else { throw corrupted(pool, "B+ tree header", at: Int(truncatingIfNeeded: ref.offset), "count 0 but an entry was found") }
                    h.count -= 1
                    try rebalance(tx, r, leaf.offset, path, depth, &h)
                    return old
                }
            }
            if previous != nil {
                h.changes &+= 1
                try tx.write(h, to: ref)
            }
            return previous
        }
    }

    /// Drops entry `pos` (`e`) of `n`: its order slot goes, its bytes become garbage.
    func drop(_ tx: Transaction, _ n: BNode, _ pos: Int, _ e: BEntry) throws {
        let tail = n.count - pos
        try tx.withMutableView(of: PRawPointer(offset: UInt64(n.offset + BTree.headerSize + 8 * pos)), count: 8 * tail) { v in
            if tail > 1 { v.move(from: 8, to: 0, count: 8 * (tail - 1)) }
            v.store(UInt64(0), at: 8 * (tail - 1))
        }
        try tx.write(Self.head(leaf: n.isLeaf, count: n.count - 1, dataStart: n.dataStart, garbage: n.garbage + e.size),
                     to: PPointer<UInt64>(offset: UInt64(n.offset)))
    }

    /// After a removal from the node at `offset` (depth `depth` of `path`): an empty root goes,
    /// a root with one child collapses, a node below a quarter full merges with a sibling or
    /// shares its entries (up the path as parents lose separators).
    func rebalance(_ tx: Transaction, _ r: BReader, _ offset: Int, _ path: UnsafeMutableBufferPointer<UInt64>,
                   _ depth: Int, _ h: inout Header) throws {
        let n = try r.node(PRawPointer(offset: UInt64(offset)))
        if depth == 0 {
            if n.count == 0 {
                // An empty root leaf: the tree is empty. A root without separators: its only
                // child becomes the root.
                h.root = n.isLeaf ? .null : n.link
                h.height -= 1
                try tx.free(n.pointer)
            }
            return
        }
        guard n.usedBytes < BTree.minFill else { return }
        let (parentOffset, ppos) = Self.step(path, depth - 1)
        let parent = try r.node(PRawPointer(offset: UInt64(parentOffset)))
        guard parent.count > 0 else { throw parent.bad(pool, "an internal node without separators") }
        // The pair: (left, right) with the separator between them at index `sep` of the parent.
        let sep = ppos > 0 ? ppos - 1 : 0
        let left = ppos > 0 ? try r.node(try parent.child(at: ppos - 1, pool)) : n
        let right = ppos > 0 ? n : try r.node(try parent.child(at: 1, pool))
        guard left.isLeaf == n.isLeaf, right.isLeaf == n.isLeaf else { throw parent.bad(pool, "children of different kinds") }
        let sepEntry = try parent.entry(sep, pool)
        // The items of both, in order (internal nodes: the parent's separator between them, over
        // the right node's leftmost child).
        let down = n.isLeaf ? nil : try innerItem(tx, key: parent.key(sepEntry), child: right.link)
        let count = left.count + right.count + (down == nil ? 0 : 1)
        let items: (Int) throws -> BItem = { i in
            if i < left.count { return try self.item(left, i) }
            if let down { return i == left.count ? down : try self.item(right, i - left.count - 1) }
            return try self.item(right, i - left.count)
        }
        var total = 0
        for i in 0..<count { total += try items(i).size + 8 }
        if total <= BTree.capacity {
            // Merge into the left node; the right node goes, and its separator with it.
            let next = right.link
            try rewrite(tx, left, leaf: n.isLeaf, link: n.isLeaf ? next : left.link, prev: left.prev, count: count, items)
            if n.isLeaf { try relinkPrevious(tx, r, of: next, to: left.pointer) }
            try tx.free(right.pointer)
            try drop(tx, parent, sep, sepEntry)
            try rebalance(tx, r, parent.offset, path, depth - 1, &h)
            return
        }
        // Share evenly; the parent's separator becomes the new right node's first key. Both
        // images are built before either node is written (a node allocated in this transaction
        // is written in place, and the items are read from both).
        let k = n.isLeaf ? try half(count: count, items) : Swift.max(1, Swift.min(try half(count: count, items), count - 2))
        let separator: BItem
        let leftImage = try tx.scratch(count: BTree.nodeSize), rightImage = try tx.scratch(count: BTree.nodeSize)
        if n.isLeaf {
            let first = try items(k)
            separator = try innerItem(tx, key: first.view.slice(at: first.entry.keyOffset, count: first.entry.keyLength), child: right.pointer)
            try build(rightImage, leaf: true, link: right.link, prev: right.prev, count: count - k) { try items(k + $0) }
            try build(leftImage, leaf: true, link: left.link, prev: left.prev, count: k, items)
        } else {
            let middle = try items(k)
            let middleChild = PRawPointer(offset: middle.view.load(UInt64.self, at: middle.entry.valueOffset))
            separator = try innerItem(tx, key: middle.view.slice(at: middle.entry.keyOffset, count: middle.entry.keyLength), child: right.pointer)
            try build(rightImage, leaf: false, link: middleChild, prev: .null, count: count - k - 1) { try items(k + 1 + $0) }
            try build(leftImage, leaf: false, link: left.link, prev: .null, count: k, items)
        }
        try tx.withMutableView(of: right.pointer, count: BTree.nodeSize) { $0.copy(from: rightImage.readOnly, at: 0, count: BTree.nodeSize, to: 0) }
        try tx.withMutableView(of: left.pointer, count: BTree.nodeSize) { $0.copy(from: leftImage.readOnly, at: 0, count: BTree.nodeSize, to: 0) }
        try place(tx, r, try r.node(parent.pointer), at: sep, separator, replacing: true, path, depth - 1, &h)
    }

    /// Points the `prev` link of leaf `next` (if not null) at `leaf`.
    func relinkPrevious(_ tx: Transaction, _ r: BReader, of next: PRawPointer, to leaf: PRawPointer) throws {
        guard !next.isNull else { return }
        let n = try r.node(next)
        guard n.isLeaf else { throw n.bad(pool, "the leaf chain links to an internal node") }
        try tx.write(leaf, to: PPointer<PRawPointer>(offset: next.offset + 16))
    }

    // MARK: Destroy

    /// Frees every node and value block, and the header; if `slot` is given, sets it to null in
    /// the same transaction. The handle must not be used afterwards.
    public func destroy(unlinking slot: PPointer<Ref>? = nil) throws {
        try pool.transaction { tx in
            let r = BReader(pool, tx)
            let h = try header(r)
            if !h.root.isNull { try free(h.root, r, tx, depth: 1, height: h.height) }
            try tx.free(ref)
            if let slot { try tx.write(.null, to: slot) }
        }
    }

    private func free(_ p: PRawPointer, _ r: BReader, _ tx: Transaction, depth: Int, height: Int) throws {
        guard depth <= height else { throw PoolError(.corrupted, "B+ tree deeper than its height \(height)", path: pool.path) }
        let n = try r.node(p)
        if n.isLeaf {
            for i in 0..<n.count {
                let e = try n.entry(i, pool)
                if e.outOfLine { try tx.free(PRawPointer(offset: n.view.load(UInt64.self, at: e.valueOffset + 8))) }
            }
        } else {
            for i in 0...n.count { try free(try n.child(at: i, pool), r, tx, depth: depth + 1, height: height) }
        }
        try tx.free(p)
    }
}
