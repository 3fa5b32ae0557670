#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PHeapTestSupport
import Synchronization
import Testing
@_spi(Containers) @testable import PersistentHeap
@testable import PersistentCollections
@_spi(Allocator) @testable import PersistentHeapAllocator
@_spi(Core) @testable import PersistentHeapCore

struct MapRoot: BitwiseCopyable {
    var strings: PersistentSortedDictionary<String, String>.Ref
    var ints: PersistentSortedDictionary<Int, Int>.Ref
    var bytes: PersistentSortedDictionary<UInt64, String>.Ref
}

/// The B+ tree with inline entries: rebalancing removals, cursors, zero-copy reads, limits.
@Suite("Sorted map")
struct SortedMapTests {
    func pool(_ size: Int = 4 << 20) throws -> Pool {
        try Pool.createSimulated(size: size, layout: "map", options: PoolOptions(maxSize: 256 << 20))
    }

    /// The map's node count (every block of a node's size reachable from the header).
    static func nodes(_ m: PersistentSortedDictionary<some PersistentKey, some PersistentValue>) throws -> Int {
        let r = BReader(m.pool)
        let h = try m.header(r)
        guard !h.root.isNull else { return 0 }
        var count = 0
        var level = [h.root]
        while !level.isEmpty {
            count += level.count
            var next: [PRawPointer] = []
            for p in level {
                let n = try r.node(p)
                if !n.isLeaf { for i in 0...n.count { next.append(try n.child(at: i, m.pool)) } }
            }
            level = next
        }
        return count
    }

    @Test("random inserts, updates and removals against a model, deep-checked as it goes; removing everything frees every node",
          arguments: [21, 22, 23] as [UInt64])
    func modelWithRemovals(seed: UInt64) throws {
        let pool = try pool()
        let root = try pool.root(MapRoot.self)
        let m = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.strings))
        var model: [String: String] = [:]
        var rng = RepeatableRandomNumberGenerator(seed: seed)
        let objects0 = try pool.stats().objects
        for step in 0..<6000 {
            // Grow for a while, then shrink, then grow again: merges and borrows both happen.
            let phase = (step / 1500) % 2
            let insertShare = phase == 0 ? 7 : 3
            if Int.random(in: 0..<10, using: &rng) < insertShare || model.isEmpty {
                let k = "key/" + randomString(&rng, maxLength: 40)
                // Values from empty to long (out of line past ~500 bytes).
                let v = Int.random(in: 0..<20, using: &rng) == 0 ? String(repeating: "V", count: Int.random(in: 400...3000, using: &rng))
                                                                  : randomString(&rng, maxLength: 150)
                #expect(try m.updateValue(v, forKey: k) == model.updateValue(v, forKey: k))
            } else {
                let victim = Bool.random(using: &rng) ? model.keys.randomElement(using: &rng)! : "key/" + randomString(&rng, maxLength: 5)
                #expect(try m.removeValue(forKey: victim) == model.removeValue(forKey: victim))
            }
            if step % 250 == 0 {
                let problems = try m.validate()
                #expect(problems.isEmpty, "step \(step): \(problems.prefix(3))")
                #expect(try m.count == model.count)
            }
        }
        #expect(try m.scan().map(\.key) == model.keys.sorted(by: utf8Less))
        for k in model.keys.prefix(300) { #expect(try m[k] == model[k]) }
        expectConsistent(pool)
        // Remove everything in random order: the tree shrinks level by level and ends empty,
        // with every node and value block back in the heap.
        for k in model.keys.shuffled(using: &rng) {
            #expect(try m.removeValue(forKey: k) == model.removeValue(forKey: k))
        }
        #expect(try m.count == 0 && m.isEmpty)
        #expect(try pool.load(m.ref).root.isNull && pool.load(m.ref).height == 0)
        #expect(try pool.stats().objects == objects0, "no node or value block left behind")
        #expect(try m.validate().isEmpty)
        expectConsistent(pool)
    }

    @Test("integer keys are kept big-endian: byte order is numeric order, negative keys first")
    func integerKeys() throws {
        let pool = try pool()
        let m = try PersistentSortedDictionary<Int, Int>.open(pool, at: try pool.root(MapRoot.self).field(\.ints))
        var rng = RepeatableRandomNumberGenerator(seed: 3)
        var model: [Int: Int] = [:]
        for _ in 0..<30_000 {
            let k = Int.random(in: Int.min / 2...Int.max / 2, using: &rng) >> Int.random(in: 0...60, using: &rng)
            try m.updateValue(~k, forKey: k)
            model[k] = ~k
        }
        for k in [Int.min, -1, 0, 1, Int.max] { try m.updateValue(~k, forKey: k); model[k] = ~k }
        #expect(try m.scan().map(\.key) == model.keys.sorted())
        #expect(try m.scan(from: -5, to: 5).map(\.key) == model.keys.sorted().filter { $0 >= -5 && $0 < 5 })
        // The encoded key is the big-endian integer with the sign bit flipped.
        Int.withEncodedBytes(1) { b in #expect(Array(b) == [0x80, 0, 0, 0, 0, 0, 0, 1]) }
        Int.withEncodedBytes(-1) { b in #expect(Array(b) == [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) }
        var previous: [UInt8]? = nil
        try m.forEachEncoded { k, _ in
            let bytes = Array(k)
            if let p = previous { #expect(p.lexicographicallyPrecedes(bytes)) }
            previous = bytes
            return true
        }
        #expect(try m.validate().isEmpty)
    }

    @Test("zero-copy reads: withValue and forEachEncoded hand out the bytes in the pool")
    func zeroCopy() throws {
        let pool = try pool()
        let m = try PersistentSortedDictionary<String, String>.open(pool, at: try pool.root(MapRoot.self).field(\.strings))
        let long = String(repeating: "L", count: 5000)
        try m.updateValue("short value", forKey: "a")
        try m.updateValue(long, forKey: "b")
        try m.updateValue("", forKey: "c")
        #expect(try m.withValue(forKey: "a") { String(decoding: $0, as: UTF8.self) } == "short value")
        #expect(try m.withValue(forKey: "b") { $0.count } == 5000)
        #expect(try m.withValue(forKey: "c") { $0.count } == 0)
        #expect(try m.withValue(forKey: "zz") { $0.count } == nil)
        var seen: [(String, Int)] = []
        try m.forEachEncoded(from: "a", to: "c") { k, v in
            seen.append((String(decoding: k, as: UTF8.self), v.count))
            return true
        }
        #expect(seen.map(\.0) == ["a", "b"] && seen.map(\.1) == [11, 5000])
        // Inside a transaction the reads see its own writes.
        try pool.transaction { _ in
            try m.updateValue("changed", forKey: "a")
            #expect(try m.withValue(forKey: "a") { String(decoding: $0, as: UTF8.self) } == "changed")
            #expect(try m.value(forKey: "a") == "changed")
        }
        #expect(try m.value(forKey: "a") == "changed")
    }

    @Test("cursors: seek, next, previous, first, last across leaves; a change makes a cursor throw until it seeks again")
    func cursors() throws {
        let pool = try pool()
        let m = try PersistentSortedDictionary<Int, Int>.open(pool, at: try pool.root(MapRoot.self).field(\.ints))
        let keys = Array(stride(from: 0, to: 30_000, by: 3))
        for k in keys { try m.updateValue(k * 2, forKey: k) }
        var c = m.makeCursor()
        #expect(!c.isPositioned)
        #expect(try c.seek(to: 301))  // the first key ≥ 301
        #expect(try c.key == 303 && c.value == 606)
        #expect(try c.previous() && c.key == 300)
        #expect(try c.seek(to: 300, strictly: true) && c.key == 303)
        // Forwards through every leaf, then backwards.
        #expect(try c.first())
        var forward: [Int] = [try c.key]
        while try c.next() { forward.append(try c.key) }
        #expect(forward == keys)
        #expect(try c.last() && c.key == keys.last!)
        var backward: [Int] = [try c.key]
        while try c.previous() { backward.append(try c.key) }
        #expect(backward == keys.reversed())
        #expect(try !c.seek(to: 1_000_000), "nothing at or after the last key")
        // In place.
        #expect(try c.seek(to: 9) && c.withCurrent { k, v in k.count == 8 && v.count == 8 })
        // A change invalidates the cursor.
        try m.updateValue(0, forKey: 9)
        expectPoolError(.invalidArgument) { try c.next() }
        #expect(try c.seek(to: 9) && c.value == 0)
        // The iterator walks with a cursor.
        var it = m.makeIterator()
        var n = 0
        while let (k, _) = try it.next() { #expect(k == keys[n]); n += 1 }
        #expect(n == keys.count)
    }

    @Test("limits: keys up to 480 bytes, values of any size (out of line past the leaf's limit), size changes in both directions")
    func limits() throws {
        let pool = try pool()
        let m = try PersistentSortedDictionary<String, String>.open(pool, at: try pool.root(MapRoot.self).field(\.strings))
        let longest = String(repeating: "k", count: BTree.maxKeyBytes)
        try m.updateValue("v", forKey: longest)
        #expect(try m[longest] == "v")
        expectPoolError(.invalidArgument) { try m.updateValue("v", forKey: longest + "k") }
        expectPoolError(.invalidArgument) { _ = try m.value(forKey: longest + "k") }
        let objects = try pool.stats().objects
        // Inline → out of line → inline → out of line of another size: no block leaked.
        for v in ["small", String(repeating: "x", count: 100_000), "s", String(repeating: "y", count: 700), ""] {
            try m.updateValue(v, forKey: "key")
            #expect(try m["key"] == v)
        }
        #expect(try pool.stats().objects == objects, "the replaced out-of-line blocks were freed")
        #expect(try m.validate().isEmpty)
        try m.removeValue(forKey: "key")
        try m.removeValue(forKey: longest)
        #expect(try m.isEmpty)
        expectConsistent(pool)
    }

    @Test("the deep check finds damage the reads do not trip over: a broken back link, an overlap, a quarter-full bound, bad accounting")
    func validateFindsDamage() throws {
        let pool = try pool()
        let m = try PersistentSortedDictionary<Int, Int>.open(pool, at: try pool.root(MapRoot.self).field(\.ints))
        for k in 0..<2000 { try m.updateValue(k, forKey: k) }
        #expect(try m.validate().isEmpty)
        let r = BReader(pool)
        let first = try m.leftmostLeaf(r, try m.header(r))!
        let second = try r.node(first.link)
        func damage(_ at: Int, _ value: UInt64, _ expected: String) throws {
            let p = PPointer<UInt64>(offset: UInt64(at))
            let old = try pool.load(p)
            try pool.store(value, at: p)
            let problems = try m.validate()
            #expect(problems.contains { $0.contains(expected) }, "\(expected): \(problems)")
            try pool.store(old, at: p)
            #expect(try m.validate().isEmpty)
        }
        try damage(second.offset + 16, 0, "does not link back")
        // Entry 1's offset made equal to entry 0's: two entries at one place.
        let o0 = first.order(0), o1 = first.order(1)
        try damage(first.offset + 64 + 8, o1 & ~0xffff | o0 & 0xffff, "overlap")
        // Garbage that does not add up.
        let head = first.view.load(UInt64.self, at: 0)
        try damage(first.offset, head & ~(0xffff << 48) | 8 << 48, "garbage")
        // A leaf cut to one entry: below the quarter-full bound.
        try damage(first.offset, head & ~(0xffff << 16) | 1 << 16, "quarter-full")
        // Reads fail cleanly on a node whose count exceeds what fits.
        let p = PPointer<UInt64>(offset: UInt64(first.offset))
        try pool.store(head & ~(0xffff << 16) | 600 << 16, at: p)
        expectPoolError(.corrupted) { try m.scan() }
        #expect(try !m.validate().isEmpty)
        try pool.store(head, at: p)
        #expect(try m.scan().count == 2000)
    }

    @Test("a tree built by sequential inserts is compact, and shrinks back when emptied")
    func sequentialAndShrink() throws {
        let pool = try pool(16 << 20)
        let m = try PersistentSortedDictionary<UInt64, String>.open(pool, at: try pool.root(MapRoot.self).field(\.bytes))
        let value = String(repeating: "v", count: 100)
        for k in 0..<20_000 as Range<UInt64> { try m.updateValue(value, forKey: k) }
        let nodes = try Self.nodes(m)
        // 8-byte keys and 100-byte values: 120-byte entries and 8 order bytes, 31 per 4 KiB at most.
        #expect(nodes < 20_000 / 15, "\(nodes) nodes for 20,000 entries")
        #expect(try m.validate().isEmpty)
        for k in 0..<20_000 as Range<UInt64> where k % 10 != 0 { try m.removeValue(forKey: k) }
        #expect(try m.count == 2000)
        let after = try Self.nodes(m)
        #expect(after < nodes / 5, "removals merged the nodes: \(nodes) → \(after)")
        #expect(try m.validate().isEmpty)
        expectConsistent(pool)
    }

    @Test("bulk insert into an empty map: built bottom-up, packed, the last of equal keys wins",
          arguments: [31, 32] as [UInt64])
    func bulkIntoEmpty(seed: UInt64) throws {
        let pool = try pool(32 << 20)
        let m = try PersistentSortedDictionary<Int, Int>.open(pool, at: try pool.root(MapRoot.self).field(\.ints))
        var rng = RepeatableRandomNumberGenerator(seed: seed)
        var batch: [(key: Int, value: Int)] = []
        var model: [Int: Int] = [:]
        for i in 0..<40_000 {
            let k = Int.random(in: -30_000...30_000, using: &rng)  // many duplicates
            batch.append((k, i))
            model[k] = i
        }
        try m.insert(contentsOf: batch)
        #expect(try m.count == model.count)
        #expect(try m.scan().map(\.key) == model.keys.sorted())
        for (k, v) in model.prefix(500) { #expect(try m[k] == v) }
        // Packed leaves: 24-byte entries (header, key, value) and 8 order bytes, 126 per 4 KiB
        // leaf; two internal nodes above them.
        let nodes = try Self.nodes(m)
        #expect(nodes <= (model.count + 125) / 126 + 3, "\(nodes) nodes for \(model.count) entries")
        #expect(try m.validate().isEmpty)
        // An empty batch changes nothing.
        try m.insert(contentsOf: [])
        #expect(try m.count == model.count)
        expectConsistent(pool)
    }

    @Test("bulk insert merges into a populated map: new keys between old ones, old keys replaced, untouched leaves kept; destroy frees everything",
          arguments: [41, 42] as [UInt64])
    func bulkMerge(seed: UInt64) throws {
        let pool = try pool(32 << 20)
        let objects0 = try pool.stats().objects
        let root = try pool.root(MapRoot.self)
        let m = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.strings))
        var rng = RepeatableRandomNumberGenerator(seed: seed)
        var model: [String: String] = [:]
        for i in stride(from: 0, to: 6000, by: 2) {
            let k = "key/" + zeroPadded(i, 5)
            let v = randomString(&rng, maxLength: 60)
            try m.updateValue(v, forKey: k)
            model[k] = v
        }
        for round in 0..<6 {
            var batch: [(key: String, value: String)] = []
            // Round 0..2: scattered keys, some already present (replaced), some long values
            // (out of line); rounds 3..5: a narrow range, so most leaves are kept as they are.
            let range = round < 3 ? 0..<7000 : (round * 500)..<(round * 500 + 300)
            for _ in 0..<1500 {
                let k = "key/" + zeroPadded(Int.random(in: range, using: &rng), 5)
                let v = Int.random(in: 0..<50, using: &rng) == 0 ? String(repeating: "L", count: Int.random(in: 600...3000, using: &rng))
                                                                  : randomString(&rng, maxLength: 60)
                batch.append((k, v))
                model[k] = v
            }
            try m.insert(contentsOf: batch)
            let problems = try m.validate()
            #expect(problems.isEmpty, "round \(round): \(problems.prefix(3))")
            #expect(try m.count == model.count)
        }
        let all = try m.scan()
        #expect(all.map(\.key) == model.keys.sorted(by: utf8Less))
        #expect(all.allSatisfy { model[$0.key] == $0.value })
        // Single-entry changes work on a bulk-built tree: removals merge its packed leaves.
        for k in model.keys.shuffled(using: &rng).prefix(2000) {
            #expect(try m.removeValue(forKey: k) == model.removeValue(forKey: k))
        }
        #expect(try m.validate().isEmpty)
        expectConsistent(pool)
        try m.destroy(unlinking: root.field(\.strings))
        #expect(try pool.stats().objects == objects0 + 1, "every node and out-of-line value freed: only the root remains")
        expectConsistent(pool)
    }

    @Test("bulk insert of sorted batches appended after the last key (a load) touches one leaf per batch and stays compact")
    func bulkAppend() throws {
        let pool = try pool(32 << 20)
        let m = try PersistentSortedDictionary<UInt64, String>.open(pool, at: try pool.root(MapRoot.self).field(\.bytes))
        let value = String(repeating: "v", count: 100)
        for b in 0..<10 as Range<UInt64> {
            try m.insert(contentsOf: (b * 2000..<(b + 1) * 2000).map { (key: $0, value: value) })
            #expect(try m.validate().isEmpty)
        }
        #expect(try m.count == 20_000)
        // 120-byte entries and their order bytes: 31 per 4 KiB leaf when packed.
        let nodes = try Self.nodes(m)
        #expect(nodes < 20_000 / 28, "\(nodes) nodes for 20,000 entries")
        #expect(try m.scan(from: 1999, to: 2002).map(\.key) == [1999, 2000, 2001])
        expectConsistent(pool)
    }

    @Test("bulk insert is one transaction: a bad key or an aborted enclosing transaction leaves the map as it was")
    func bulkAtomic() throws {
        let pool = try pool(16 << 20)
        let m = try PersistentSortedDictionary<String, String>.open(pool, at: try pool.root(MapRoot.self).field(\.strings))
        for i in 0..<3000 { try m.updateValue("v\(i)", forKey: "k" + zeroPadded(i, 5)) }
        let before = try m.scan()
        let objects = try pool.stats().objects
        let good = (0..<2000).map { (key: "k" + zeroPadded($0 * 3, 5) + "x", value: "new") }
        expectPoolError(.invalidArgument) {
            try m.insert(contentsOf: good + [(key: String(repeating: "k", count: BTree.maxKeyBytes + 1), value: "v")])
        }
        struct Abort: Error {}
        #expect(throws: Abort.self) {
            try pool.transaction { _ in
                try m.insert(contentsOf: good)
                #expect(try m.count == 5000, "the transaction sees its own bulk insert")
                throw Abort()
            }
        }
        #expect(try m.scan().elementsEqual(before) { $0.key == $1.key && $0.value == $1.value })
        #expect(try pool.stats().objects == objects, "the new nodes of the aborted insert were freed")
        #expect(try m.validate().isEmpty)
        expectConsistent(pool)
    }
}
