// Bulk insertion: many entries in one transaction, copy-on-write.
//
//   1. the new entries are encoded and sorted by key (the last of equal keys wins)
//   2. the leaves are walked in order; a leaf no new key falls into is kept as it is; a leaf
//      new keys fall into is merged with them into new leaves, packed full (their contents are
//      flushed before the commit record, not logged), and freed
//   3. the leaf chain is relinked where new leaves meet kept ones (8-byte writes), and the
//      internal levels are rebuilt, packed, from the leaves' first keys; the old internal
//      nodes are freed
// An empty map is built bottom-up. The cost is the leaves touched, not the entries: sorted input
// appended after the last key touches one leaf per batch. The space freed by replaced nodes is
// reused by later batches.

import PersistentHeap

extension PersistentSortedDictionary {
    /// Sets the value of every entry (a later entry wins over an earlier one with the same key)
    /// in **one transaction** (joining the caller's): the bulk path for loading data. The
    /// entries are sorted; every leaf they fall into is rebuilt, packed, as new nodes, and the
    /// internal levels are rebuilt above the leaves — a map built this way is smaller and its
    /// load far faster than with one ``updateValue(_:forKey:)`` per entry.
    ///
    /// Bound the batch (tens of thousands of entries): the transaction holds its new nodes until
    /// it commits, and the replaced ones until then too.
    /// - Complexity: O(k log k) for k entries, plus the leaves they touch, plus the internal nodes.
    public func insert(contentsOf entries: some Sequence<(key: Key, value: Value)>) throws {
        let all = Array(entries)
        try pool.transaction { tx in try bulkInsert(all, tx) }
    }

    /// A new entry: its encoded key (in a shared byte buffer) and its leaf item.
    struct Pending {
        let key: Range<Int>
        let item: BItem
    }

    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    func bulkInsert(_ entries: [(key: Key, value: Value)], _ tx: Transaction) throws {
        // 1. Encode and sort (stable: the last of equal keys wins).
        var keyBytes: [UInt8] = []
        var pending: [Pending] = []
        for (k, v) in entries {
            try Key.withEncodedBytes(k) { bytes in
                guard bytes.count <= BTree.maxKeyBytes else {
                    throw PoolError(.invalidArgument, "a key of \(bytes.count) bytes is longer than the \(BTree.maxKeyBytes) bytes a sorted map keeps", path: pool.path)
                }
                let start = keyBytes.count
                keyBytes.append(contentsOf: bytes)
                pending.append(Pending(key: start..<keyBytes.count, item: try leafItem(tx, key: bytes, value: v)))
            }
        }
        guard !pending.isEmpty else { return }
        let compare: (Pending, Pending) throws -> Int = { a, b in
            try self.compareEncoded(keyBytes, a.key, keyBytes, b.key)
        }
        var order = Array(pending.indices)
        try order.sort { i, j in
            let c = try compare(pending[i], pending[j])
            return c < 0 || (c == 0 && i < j)
        }
        var sorted: [Pending] = []
        sorted.reserveCapacity(order.count)
        for i in order {
            if let last = sorted.last, try compare(last, pending[i]) == 0 {
                // A later duplicate replaces the earlier one (whose out-of-line block goes).
                try freeBlock(of: last.item, tx)
                sorted[sorted.count - 1] = pending[i]
            } else {
                sorted.append(pending[i])
            }
        }
        let r = BReader(pool, tx)
        var h = try header(r)
        // 2. Merge into the leaves.
        var leaves: [PRawPointer] = []     // the new leaf level, in order
        var fresh: [Bool] = []             // whether each was built by this call
        var added = 0
        if h.root.isNull {
            try packLeaves(tx, count: sorted.count, { sorted[$0].item }, into: &leaves, fresh: &fresh)
            added = sorted.count
        } else {
            var next = 0
            var leaf = try leftmostLeaf(r, h)
            var walked = 0
            while let n = leaf {
                walked += 1
                guard walked <= h.count + 1 else { throw n.bad(pool, "the leaf chain is longer than the map (a loop)") }
                let following = n.link.isNull ? nil : try r.node(n.link)
                // The new entries below the next leaf's first key belong here.
                var end = next
                if let f = following {
                    guard f.isLeaf, f.count > 0 else { throw f.bad(pool, "an empty or internal node in the leaf chain") }
                    let bound = f.key(try f.entry(0, pool))
                    while end < sorted.count, try compareEncoded(keyBytes, sorted[end].key, bound) < 0 { end += 1 }
                } else {
                    end = sorted.count
                }
                if end == next {
                    leaves.append(n.pointer)
                    fresh.append(false)
                } else {
                    // Merge the leaf's entries with sorted[next..<end] (new ones win).
                    var merged: [BItem] = []
                    merged.reserveCapacity(n.count + end - next)
                    var i = 0, j = next
                    while i < n.count || j < end {
                        if j == end { merged.append(try item(n, i)); i += 1; continue }
                        if i == n.count { merged.append(sorted[j].item); j += 1; added += 1; continue }
                        let e = try n.entry(i, pool)
                        let c = try compareEncoded(keyBytes, sorted[j].key, n.key(e))
                        if c < 0 {
                            merged.append(sorted[j].item); j += 1; added += 1
                        } else if c > 0 {
                            merged.append(BItem(view: n.view, entry: e)); i += 1
                        } else {
                            if e.outOfLine { try tx.free(PRawPointer(offset: n.view.load(UInt64.self, at: e.valueOffset + 8))) }
                            merged.append(sorted[j].item); j += 1; i += 1
                        }
                    }
                    try packLeaves(tx, count: merged.count, { merged[$0] }, into: &leaves, fresh: &fresh)
                    try tx.free(n.pointer)
                }
                next = end
                leaf = following
            }
            // The old internal levels go (rebuilt below).
            if h.height > 1 { try freeInternal(h.root, r, tx, depth: 1, height: h.height) }
        }
        // 3. Relink the chain where it changed, then build the internal levels.
        for (k, p) in leaves.enumerated() {
            let prev = k > 0 ? leaves[k - 1] : .null, next = k + 1 < leaves.count ? leaves[k + 1] : .null
            if fresh[k] || (k > 0 && fresh[k - 1]) { try tx.write(prev, to: PPointer<PRawPointer>(offset: p.offset + 16)) }
            if fresh[k] || (k + 1 < leaves.count && fresh[k + 1]) { try tx.write(next, to: PPointer<PRawPointer>(offset: p.offset + 8)) }
        }
        var level = leaves
        var height = 1
        while level.count > 1 {
            level = try buildInternalLevel(tx, r, children: level)
            height += 1
        }
        h.root = level[0]
        h.height = height
        h.count += added
        h.changes &+= 1
        try tx.write(h, to: ref)
    }

    /// Orders encoded keys (`a[ra]` against `b[rb]`) as the map does.
    func compareEncoded(_ a: [UInt8], _ ra: Range<Int>, _ b: [UInt8], _ rb: Range<Int>) throws -> Int {
        try a.withUnsafeBytes { x in try b.withUnsafeBytes { y in
            try compareEncoded(UnsafeRawBufferPointer(rebasing: x[ra]), UnsafeRawBufferPointer(rebasing: y[rb]))
        } }
    }

    /// Orders an encoded key in `a[ra]` against key bytes in a node.
    func compareEncoded(_ a: [UInt8], _ ra: Range<Int>, _ b: ByteView) throws -> Int {
        try a.withUnsafeBytes { x in try b.withUnsafeBytes { y in try compareEncoded(UnsafeRawBufferPointer(rebasing: x[ra]), y) } }
    }

    func compareEncoded(_ x: UnsafeRawBufferPointer, _ y: UnsafeRawBufferPointer) throws -> Int {
        if Key.encodingIsOrdered { return compareBytes(x, y) }
        let a = try ByteView.withBytes(x) { try Key.decode($0, in: pool) }
        let b = try ByteView.withBytes(y) { try Key.decode($0, in: pool) }
        return Key.compareKeys(a, b)
    }

    /// Frees the out-of-line block a new leaf item made (a duplicate that lost).
    func freeBlock(of it: BItem, _ tx: Transaction) throws {
        guard it.entry.outOfLine else { return }
        try tx.free(PRawPointer(offset: it.view.load(UInt64.self, at: it.entry.valueOffset + 8)))
    }

    /// Packs `count` items into new leaves, full except that when what would be left for the
    /// last leaf is under a quarter, the last two share evenly; appends them to `leaves`. Links
    /// are patched by the caller.
    func packLeaves(_ tx: Transaction, count: Int, _ item: (Int) throws -> BItem,
                    into leaves: inout [PRawPointer], fresh: inout [Bool]) throws {
        var start = 0
        while start < count {
            let end = try packEnd(from: start, count: count, minimum: 1, lastKeeps: 1) { try item($0).size + 8 }
            let s = start
            leaves.append(try newNode(tx, leaf: true, link: .null, prev: .null, count: end - s) { try item(s + $0) })
            fresh.append(true)
            start = end
        }
    }

    /// Where a packed node that starts at `start` ends: as many items as fit (at least `minimum`
    /// bytes-wise), unless what remains after it would be under a quarter full (or fewer than
    /// `lastKeeps` items): then about half of what is left, so that the last two nodes share it.
    func packEnd(from start: Int, count: Int, minimum: Int, lastKeeps: Int, _ size: (Int) throws -> Int) throws -> Int {
        var end = start, used = 0
        while end < count, used + (try size(end)) <= BTree.capacity { used += try size(end); end += 1 }
        end = Swift.max(end, start + minimum)
        guard end < count else { return Swift.min(end, count) }
        var rest = 0
        for i in end..<count { rest += try size(i) }
        guard rest < BTree.minFill || count - end < lastKeeps else { return end }
        // Share what is left between this node and the last one.
        let total = used + rest
        var acc = 0
        end = start
        while end < count - lastKeeps, (acc + (try size(end))) * 2 <= total { acc += try size(end); end += 1 }
        return Swift.min(Swift.max(end, start + minimum), count - lastKeeps)
    }

    /// One internal level above `children` (in key order): packed nodes whose separators are the
    /// first keys of the children after each node's leftmost.
    func buildInternalLevel(_ tx: Transaction, _ r: BReader, children: [PRawPointer]) throws -> [PRawPointer] {
        // Each child's first key (the smallest key of its subtree), as a separator item.
        var seps: [BItem] = []
        seps.reserveCapacity(children.count)
        for c in children {
            var n = try r.node(c)
            var depth = 0
            while !n.isLeaf {
                depth += 1
                guard depth <= 64 else { throw n.bad(pool, "deeper than 64 levels") }
                n = try r.node(n.link)
            }
            guard n.count > 0 else { throw n.bad(pool, "an empty leaf") }
            seps.append(try innerItem(tx, key: n.key(try n.entry(0, pool)), child: c))
        }
        var out: [PRawPointer] = []
        var start = 0
        while start < children.count {
            // A node holds children start..<end: the first as its leftmost, the separators of the
            // others; at least one separator, and the next node keeps at least two children.
            let end = try packEnd(from: start, count: children.count, minimum: 2, lastKeeps: 2) { i in
                i == start ? 0 : seps[i].size + 8
            }
            let s = start
            out.append(try newNode(tx, leaf: false, link: children[s], prev: .null, count: end - s - 1) { seps[s + 1 + $0] })
            start = end
        }
        return out
    }

    /// Frees the internal nodes of the subtree at `p` (not its leaves).
    func freeInternal(_ p: PRawPointer, _ r: BReader, _ tx: Transaction, depth: Int, height: Int) throws {
        guard depth < height else { return }
        let n = try r.node(p)
        guard !n.isLeaf else { throw n.bad(pool, "a leaf above the leaves' depth") }
        if depth + 1 < height {
            for i in 0...n.count { try freeInternal(try n.child(at: i, pool), r, tx, depth: depth + 1, height: height) }
        }
        try tx.free(p)
    }
}
