import PersistentHeap

extension PersistentSortedDictionary {
    /// Walks the whole tree: every node is a live allocation of a node's size, reached once, of a
    /// known kind at the right depth (every leaf at the header's height); its entries lie in its
    /// entry area without overlapping, their bytes and the garbage account for the whole area,
    /// order prefixes match their keys; keys strictly increase and stay inside the range the
    /// parent's separators give the subtree; internal nodes hold at least one separator; every
    /// node but the root is at least a quarter full; the leaf chain links the leaves in key order,
    /// forwards and backwards; out-of-line values are live blocks of their length; the header's
    /// count equals the entries; and what values own (nested containers) is checked.
    /// Records what it finds in `check` (shared with enclosing containers); ``validate()`` returns it.
    public func validate(into check: inout ContainerCheck) {
        guard check.firstVisit(ref.raw, "B+ tree header"),
              check.checkBlock(ref.raw, bytes: MemoryLayout<Header>.size, "B+ tree header") else { return }
        check.catching("B+ tree at \(ref.offset)") { check in
            let r = BReader(pool)
            let h = try header(r)
            guard !h.root.isNull else {
                if h.count != 0 { check.note("B+ tree at \(ref.offset): empty tree with count \(h.count)") }
                return
            }
            var walk = TreeWalk()
            try validateNode(h.root, depth: 1, height: h.height, low: nil, high: nil, r, &walk, &check)
            if walk.entries != h.count { check.note("B+ tree at \(ref.offset): \(walk.entries) entries reachable, header says \(h.count)") }
            if let last = walk.lastLeaf, try !r.node(last).link.isNull {
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

    /// Orders two encoded keys as the map does.
    func compareStored(_ a: ByteView, _ b: ByteView) throws -> Int {
        if Key.encodingIsOrdered { return a.withUnsafeBytes { x in b.withUnsafeBytes { y in compareBytes(x, y) } } }
        return Key.compareKeys(try Key.decode(a, in: pool), try Key.decode(b, in: pool))
    }

    private func validateNode(_ p: PRawPointer, depth: Int, height: Int, low: ByteView?, high: ByteView?,
                              _ r: BReader, _ walk: inout TreeWalk, _ check: inout ContainerCheck) throws {
        let at = p.offset
        guard depth <= 64, check.firstVisit(p, "B+ tree node"),
              check.checkBlock(p, bytes: BTree.nodeSize, "B+ tree node") else { return }
        let n = try r.node(p)
        if n.isLeaf != (depth == height) {
            check.note("B+ tree node at \(at): a \(n.isLeaf ? "leaf" : "internal node") at depth \(depth) of a tree of height \(height)")
            return
        }
        if !n.isLeaf && n.count == 0 { check.note("B+ tree node at \(at): internal node without separators"); return }
        if !n.isLeaf && !n.prev.isNull { check.note("B+ tree node at \(at): an internal node with a previous-leaf link") }
        // Entries: inside the area, not overlapping, accounting with the garbage for all of it.
        var spans: [(Int, Int)] = []
        var live = 0
        for i in 0..<n.count {
            let e = try n.entry(i, pool)
            spans.append((e.offset, e.offset + e.size))
            live += e.size
            if e.offset + e.size > BTree.nodeSize { check.note("B+ tree node at \(at): entry \(i) runs past the node"); return }
        }
        spans.sort { $0.0 < $1.0 }
        for j in 1..<Swift.max(1, spans.count) where spans[j].0 < spans[j - 1].1 {
            check.note("B+ tree node at \(at): entries overlap at +\(spans[j].0)")
            return
        }
        if depth > 1 && live + 8 * n.count < BTree.minFill {
            check.note("B+ tree node at \(at): \(live + 8 * n.count) bytes used, below the quarter-full bound \(BTree.minFill)")
        }
        if live + n.garbage != BTree.nodeSize - n.dataStart {
            check.note("B+ tree node at \(at): \(live) bytes of entries and \(n.garbage) of garbage, the entry area has \(BTree.nodeSize - n.dataStart)")
        }
        // Keys: prefixes, order, the subtree's bounds.
        var previous: ByteView? = low
        var previousIsLow = low != nil
        for i in 0..<n.count {
            let e = try n.entry(i, pool)
            let k = n.key(e)
            if Key.encodingIsOrdered, n.order(i) >> 16 != BTree.prefix(n.view, at: e.keyOffset, length: e.keyLength) {
                check.note("B+ tree node at \(at): the order prefix of entry \(i) does not match its key")
            }
            if let previous {
                // Keys strictly increase; the first key of a subtree may equal its low bound.
                let c = try compareStored(k, previous)
                if c < 0 || (c == 0 && !previousIsLow) { check.note("B+ tree node at \(at): keys out of order at entry \(i)") }
            }
            if let high, try compareStored(k, high) >= 0 { check.note("B+ tree node at \(at): key \(i) is not below the subtree's upper bound") }
            previous = k
            previousIsLow = false
            if n.isLeaf {
                if e.outOfLine {
                    let block = PRawPointer(offset: n.view.load(UInt64.self, at: e.valueOffset + 8))
                    let length = n.view.load(UInt64.self, at: e.valueOffset)
                    if check.firstVisit(block, "B+ tree value block"), length <= UInt64(pool.size),
                       check.checkBlock(block, bytes: 8 + Int(length), "B+ tree value block") {
                        _ = try r.outOfLineValue(n, e)
                    }
                }
                Value.validateEncoded(try r.value(n, e), in: &check)
            }
        }
        if n.isLeaf {
            walk.entries += n.count
            if let last = walk.lastLeaf {
                if try r.node(last).link != p { check.note("B+ tree leaf at \(at) is not linked from the leaf before it") }
                if n.prev != last { check.note("B+ tree leaf at \(at) does not link back to the leaf before it") }
            } else if !n.prev.isNull {
                check.note("B+ tree leaf at \(at): the first leaf has a previous-leaf link")
            }
            walk.lastLeaf = p
            return
        }
        // Children: the leftmost below the first separator, child i between separators i-1 and i.
        for i in 0...n.count {
            let child = try n.child(at: i, pool)
            let lo = i == 0 ? low : n.key(try n.entry(i - 1, pool))
            let hi = i < n.count ? n.key(try n.entry(i, pool)) : high
            try validateNode(child, depth: depth + 1, height: height, low: lo, high: hi, r, &walk, &check)
            guard check.problemCount < check.limit else { return }
        }
    }
}
