import PHeapTestSupport
import Testing
@_spi(Containers) @testable import PersistentHeap
@testable import PersistentCollections
@_spi(Allocator) @testable import PersistentHeapAllocator
@_spi(Core) @testable import PersistentHeapCore

struct ContainerRoot: BitwiseCopyable {
    var array: PersistentArray<Int>.Ref
    var map: PersistentDictionary<Int, Int>.Ref
    var strings: PersistentDictionary<String, String>.Ref
    var sorted: PersistentSortedDictionary<String, String>.Ref
    var sortedInts: PersistentSortedDictionary<Int, Int>.Ref
    var nested: PersistentDictionary<Int, PersistentArray<Int>.Ref>.Ref
    var stringArray: PersistentArray<String>.Ref
}

/// UTF-8 byte order, the order of persistent sorted maps.
func utf8Less(_ a: String, _ b: String) -> Bool { Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8)) }

func randomString(_ rng: inout RepeatableRandomNumberGenerator, maxLength: Int = 40) -> String {
    let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789éß")
    return String((0..<Int.random(in: 0...maxLength, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
}

@Suite("Containers")
struct ContainerTests {
    func pool() throws -> Pool {
        try Pool.createSimulated(size: 4 << 20, layout: "containers", options: PoolOptions(maxSize: 128 << 20))
    }

    @Test("PersistentArray against Array", arguments: [1, 2] as [UInt64])
    func array(seed: UInt64) throws {
        let pool = try pool()
        let root = try pool.root(ContainerRoot.self)
        let a = try PersistentArray<Int>.open(pool, at: root.field(\.array))
        var model: [Int] = []
        var rng = RepeatableRandomNumberGenerator(seed: seed)
        for step in 0..<2000 {
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<4:
                let v = Int.random(in: 0..<1_000_000, using: &rng)
                try a.append(v); model.append(v)
            case 4:
                let i = Int.random(in: 0...model.count, using: &rng), v = step
                try a.insert(v, at: i); model.insert(v, at: i)
            case 5 where !model.isEmpty:
                let i = Int.random(in: 0..<model.count, using: &rng)
                #expect(try a.remove(at: i) == model.remove(at: i))
            case 6 where !model.isEmpty:
                let i = Int.random(in: 0..<model.count, using: &rng)
                try a.set(-step, at: i); model[i] = -step
            case 7 where !model.isEmpty:
                #expect(try a.removeLast() == model.removeLast())
            case 8:
                let more = (0..<Int.random(in: 0..<20, using: &rng)).map { $0 * step }
                try a.append(contentsOf: more); model.append(contentsOf: more)
            default:
                if Int.random(in: 0..<50, using: &rng) == 0 { try a.removeAll(keepingCapacity: Bool.random(using: &rng)); model.removeAll() }
            }
            if step % 250 == 0 { #expect(try a.elements() == model) }
        }
        #expect(try a.elements() == model)
        #expect(try a.count == model.count)
        var iterated: [Int] = []
        var it = a.makeIterator()
        while let x = try it.next() { iterated.append(x) }
        #expect(iterated == model)
        if !model.isEmpty { #expect(try a[model.count - 1] == model[model.count - 1]) }
        #expect(try a.validate().isEmpty)
        let again = try Pool.openSimulated(image: pool.simulatedMedia!.durableImage(), layout: "containers")
        #expect(try PersistentArray<Int>.open(again, at: try again.root(ContainerRoot.self).field(\.array)).elements() == model)
        try a.destroy(unlinking: root.field(\.array))
        let report = try pool.check()
        #expect(report.isConsistent, "\(report.findings)")
        #expect(report.stats.objects == 1, "only the root remains")
    }

    @Test("PersistentArray of strings: each element owns its out-of-line bytes; remove, set, removeAll and destroy free them")
    func arrayOfStrings() throws {
        let pool = try pool()
        let root = try pool.root(ContainerRoot.self)
        let objects0 = try pool.stats().objects
        let a = try PersistentArray<String>.open(pool, at: root.field(\.stringArray))
        var model: [String] = []
        var rng = RepeatableRandomNumberGenerator(seed: 9)
        for step in 0..<1500 {
            // Short strings (inline in their slot) and long ones (a block of their own).
            let v = Int.random(in: 0..<4, using: &rng) == 0 ? String(repeating: "long", count: Int.random(in: 10...400, using: &rng)) + "\(step)"
                                                             : randomString(&rng, maxLength: 12)
            switch Int.random(in: 0..<8, using: &rng) {
            case 0..<4: try a.append(v); model.append(v)
            case 4: let i = Int.random(in: 0...model.count, using: &rng); try a.insert(v, at: i); model.insert(v, at: i)
            case 5 where !model.isEmpty:
                let i = Int.random(in: 0..<model.count, using: &rng)
                #expect(try a.remove(at: i) == model.remove(at: i))
            case 6 where !model.isEmpty:
                let i = Int.random(in: 0..<model.count, using: &rng)
                try a.set(v, at: i); model[i] = v
            case 7 where !model.isEmpty:
                let i = Int.random(in: 0..<model.count, using: &rng)
                try a.update(at: i) { $0 += "!" }; model[i] += "!"
            default: break
            }
        }
        #expect(try a.elements() == model)
        #expect(try a.validate().isEmpty)
        expectConsistent(pool)
        try a.removeAll(keepingCapacity: true)
        #expect(try a.isEmpty)
        let afterRemoveAll = try pool.stats().objects
        #expect(afterRemoveAll == objects0 + 2, "only the array's header and element storage remain: every string's block was freed")
        try a.append(contentsOf: model.prefix(100))
        #expect(try a.elements() == Array(model.prefix(100)))
        try a.destroy(unlinking: root.field(\.stringArray))
        #expect(try pool.stats().objects == objects0, "destroy freed the storage and every string")
        expectConsistent(pool)
    }

    @Test("PersistentDictionary against Dictionary, through several incremental resizes")
    func dictionary() throws {
        let pool = try pool()
        let root = try pool.root(ContainerRoot.self)
        let d = try PersistentDictionary<Int, Int>.open(pool, at: root.field(\.map))
        let s = try PersistentDictionary<String, String>.open(pool, at: root.field(\.strings))
        var model: [Int: Int] = [:], smodel: [String: String] = [:]
        var rng = RepeatableRandomNumberGenerator(seed: 3)
        for step in 0..<5000 {
            let k = Int.random(in: 0..<3000, using: &rng)
            if Int.random(in: 0..<10, using: &rng) < 7 {
                #expect(try d.updateValue(step, forKey: k) == model.updateValue(step, forKey: k))
                let sk = "key-\(k)-" + String(repeating: "x", count: k % 30), sv = randomString(&rng)
                #expect(try s.updateValue(sv, forKey: sk) == smodel.updateValue(sv, forKey: sk))
            } else {
                #expect(try d.removeValue(forKey: k) == model.removeValue(forKey: k))
                let sk = "key-\(k)-" + String(repeating: "x", count: k % 30)
                #expect(try s.removeValue(forKey: sk) == smodel.removeValue(forKey: sk))
            }
            if step % 500 == 0 {
                #expect(Dictionary(uniqueKeysWithValues: try d.entries().map { ($0.key, $0.value) }) == model)
            }
        }
        #expect(try d.count == model.count && s.count == smodel.count)
        for (k, v) in model { #expect(try d[k] == v) }
        for (k, v) in smodel { #expect(try s[k] == v) }
        #expect(try d.validate().isEmpty)
        #expect(try s.validate().isEmpty)
        #expect(Dictionary(uniqueKeysWithValues: try s.entries().map { ($0.key, $0.value) }) == smodel)
        #expect(try pool.check().isConsistent)
        try d.destroy(unlinking: root.field(\.map))
        try s.destroy(unlinking: root.field(\.strings))
        #expect(try pool.stats().objects == 1)
    }

    @Test("PersistentSortedDictionary against a sorted model: order, range scans, splits, removals", arguments: [5, 6] as [UInt64])
    func sorted(seed: UInt64) throws {
        let pool = try pool()
        let root = try pool.root(ContainerRoot.self)
        let m = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.sorted))
        var model: [String: String] = [:]
        var rng = RepeatableRandomNumberGenerator(seed: seed)
        for step in 0..<4000 {
            let k = randomString(&rng, maxLength: 24)
            if Int.random(in: 0..<10, using: &rng) < 7 || model.isEmpty {
                let v = randomString(&rng, maxLength: 60)
                #expect(try m.updateValue(v, forKey: k) == model.updateValue(v, forKey: k))
            } else {
                let victim = Bool.random(using: &rng) ? model.keys.randomElement(using: &rng)! : k
                #expect(try m.removeValue(forKey: victim) == model.removeValue(forKey: victim))
            }
            if step % 800 == 0 { #expect(try m.validate().isEmpty) }
        }
        let keys = model.keys.sorted(by: utf8Less)
        #expect(try m.scan().map(\.key) == keys)
        var iterated: [String] = []
        var it = m.makeIterator()
        while let (k, _) = try it.next() { iterated.append(k) }
        #expect(iterated == keys)
        #expect(try m.count == model.count)
        for k in keys.prefix(200) { #expect(try m[k] == model[k]) }
        #expect(try m["not-there-" + String(repeating: "z", count: 30)] == nil)
        // Range scans.
        for _ in 0..<50 {
            let a = randomString(&rng, maxLength: 3), b = randomString(&rng, maxLength: 3)
            let (lo, hi) = utf8Less(a, b) ? (a, b) : (b, a)
            let expected = keys.filter { !utf8Less($0, lo) && utf8Less($0, hi) }
            #expect(try m.scan(from: lo, to: hi).map(\.key) == expected)
            #expect(try m.scan(from: lo, limit: 5).map(\.key) == Array(keys.filter { !utf8Less($0, lo) }.prefix(5)))
        }
        #expect(try m.validate().isEmpty)
        #expect(try pool.check().isConsistent)
        try m.destroy(unlinking: root.field(\.sorted))
        #expect(try pool.stats().objects == 1, "every node, key and value was freed")
    }

    @Test("integer-keyed sorted map: many splits, ordered iteration")
    func sortedInts() throws {
        let pool = try pool()
        let root = try pool.root(ContainerRoot.self)
        let m = try PersistentSortedDictionary<Int, Int>.open(pool, at: root.field(\.sortedInts))
        var rng = RepeatableRandomNumberGenerator(seed: 9)
        var model: [Int: Int] = [:]
        for _ in 0..<20_000 {
            let k = Int.random(in: -50_000...50_000, using: &rng)
            try m.updateValue(k * 3, forKey: k)
            model[k] = k * 3
        }
        #expect(try m.scan().map(\.key) == model.keys.sorted())
        #expect(try m.scan(from: -10, to: 10).map(\.value) == model.keys.sorted().filter { $0 >= -10 && $0 < 10 }.map { $0 * 3 })
        #expect(try m.validate().isEmpty)
    }

    @Test("containers inside containers, and inside a user's transaction (joined; an abort undoes them)")
    func nestingAndTransactions() throws {
        let pool = try pool()
        let root = try pool.root(ContainerRoot.self)
        let d = try PersistentDictionary<Int, PersistentArray<Int>.Ref>.open(pool, at: root.field(\.nested))
        for k in 0..<10 {
            try pool.transaction { tx in
                let a = try PersistentArray<Int>.create(in: tx)
                for i in 0..<k { try a.append(i * k) }
                try d.updateValue(a.ref, forKey: k)
            }
        }
        for k in 0..<10 { #expect(try PersistentArray<Int>(pool, ref: try #require(try d[k])).elements() == (0..<k).map { $0 * k }) }
        #expect(try d.validate().isEmpty, "the deep check walks the nested arrays too")
        // A user transaction that changes two containers and then fails: neither changes.
        let s = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.sorted))
        try s.updateValue("v", forKey: "keep")
        #expect(throws: TestFailure(tag: 3)) {
            try pool.transaction { _ in
                try s.updateValue("lost", forKey: "temp")
                try PersistentArray<Int>(pool, ref: try #require(try d[3])).append(99)
                #expect(try s["temp"] == "lost", "reads inside the transaction see its writes")
                throw TestFailure(tag: 3)
            }
        }
        #expect(try s["temp"] == nil && s.count == 1)
        #expect(try PersistentArray<Int>(pool, ref: try #require(try d[3])).count == 3)
        #expect(try pool.check().isConsistent)
        // Freeing: inner arrays first, then the dictionary.
        try d.forEach { _, ref in try PersistentArray<Int>(pool, ref: ref).destroy() }
        try d.destroy(unlinking: root.field(\.nested))
        try s.destroy(unlinking: root.field(\.sorted))
        #expect(try pool.stats().objects == 1)
    }

    @Test("PersistentString round trips, including empty and non-ASCII strings")
    func strings() throws {
        let pool = try pool()
        for text in ["", "a", "hello, world", String(repeating: "é", count: 1000), "🧪 emoji ✓"] {
            let p = try pool.transaction { tx in try PersistentString.make(text, in: tx) }
            #expect(try p.string(in: pool) == text)
            #expect(try p.utf8Count(in: pool) == text.utf8.count)
            try pool.transaction { tx in try p.free(in: tx) }
        }
        #expect(try pool.stats().objects == 0)
    }
}
