#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PHeapTestSupport
import Testing
@_spi(Containers) @testable import PersistentHeap
@testable import PersistentCollections
@_spi(Allocator) @testable import PersistentHeapAllocator
@_spi(Core) @testable import PersistentHeapCore

/// Every value read from a pool is untrusted input: each test here plants one of the hostile
/// values the reliability issue found (each trapped or lost data before) and expects a clean
/// `PoolError`, an unchanged file, and — where the damage is in a container — a finding of the
/// deep check.
@Suite("Hostile input")
struct HostileInputTests {
    let dir = ScratchDirectory("hostile")

    struct Root: BitwiseCopyable {
        var head: PPointer<UInt64>
        var big: PRawPointer
        var sorted: PersistentSortedDictionary<String, String>.Ref
        var hash: PersistentDictionary<Int, Int>.Ref
        var array: PersistentArray<Int>.Ref
        var strings: PersistentDictionary<Int, String>.Ref
    }

    func simulated() throws -> Pool {
        try Pool.createSimulated(size: 4 << 20, layout: "hostile", options: PoolOptions(maxSize: 32 << 20))
    }

    @Test("pointer and count arguments at the extremes throw instead of trapping")
    func extremes() throws {
        let pool = try simulated()
        let root = try pool.root(Root.self)
        #expect(!pool.contains(PPointer<UInt64>(offset: 1 << 63)))
        #expect(!pool.contains(PPointer<UInt64>(offset: .max)))
        #expect(!pool.isAllocated(PRawPointer(offset: 1 << 63)))
        let p = try pool.allocate(UInt64.self, count: 4)
        expectPoolError(.invalidArgument) { try pool.persist(p, count: .max) }
        expectPoolError(.invalidArgument) { try pool.persist(p, count: .min) }
        expectPoolError(.invalidArgument) { try pool.persist(p.raw, count: -1) }
        expectPoolError(.invalidPointer) { try pool.persist(p.raw, count: .max) }
        expectPoolError(.invalidPointer) { try pool.load(PPointer<UInt64>(offset: .max)) }
        expectPoolError(.invalidPointer) { try pool.load(PPointer<UInt64>(offset: 1 << 63).advanced(by: 3)) }
        expectPoolError(.invalidArgument) { try pool.withUnsafePointer(to: p, count: -5) { _ in } }
        #expect(PPointer<UInt64>(offset: .max).advanced(by: 1).offset == 7, "wrapping, validated at dereference")
        // A pointer read from a damaged pool may hold any offset: taking a field of it wraps too.
        let damaged = PPointer<Root>(offset: .max)
        #expect(damaged.field(\.big).offset == UInt64(MemoryLayout<Root>.offset(of: \Root.big)!) &- 1)
        expectPoolError(.invalidPointer) { try pool.load(damaged.field(\.big)) }
        _ = root
        #expect(try pool.check().isConsistent)
    }

    @Test("linked operations on a slot holding garbage, and slots outside objects, are refused and change nothing")
    func garbageSlots() throws {
        let pool = try simulated()
        let root = try pool.root(Root.self)
        func live() throws -> [Int] { let s = try pool.stats(); return [s.objects, s.allocatedBytes, s.largeObjects] }
        let before = try live()
        for garbage: UInt64 in [1 << 63, .max, 0xdead_beef, UInt64(pool.size) + 4096] {
            try pool.store(PPointer<UInt64>(offset: garbage), at: root.field(\.head))
            expectPoolError(.invalidFree) { try pool.free(linkedFrom: root.field(\.head)) }
            expectPoolError(.invalidFree) { try pool.reallocate(linkedFrom: root.field(\.head), count: 10) }
            #expect(try pool.load(root.field(\.head)).offset == garbage, "the slot is untouched")
        }
        // An interior pointer of a live object is not a live allocation either.
        let obj = try pool.allocate(UInt64.self, count: 8)
        try pool.store(obj.advanced(by: 1), at: root.field(\.head))
        expectPoolError(.invalidFree) { try pool.free(linkedFrom: root.field(\.head)) }
        try pool.store(.null, at: root.field(\.head))
        try pool.free(obj)
        #expect(try live() == before)

        // Slots in the headers, the state page (other than the root slot), the lanes, a run's
        // bitmap: refused before anything is allocated.
        let runBlock = try pool.allocate(UInt64.self)
        let heapOffset = UInt64(pool.heap.heapOffset)
        let runStart = heapOffset + (runBlock.offset - heapOffset) / 4096 * 4096
        for slot: UInt64 in [8, 0x1008, 0x2000, 0x2008, UInt64(pool.heap.extensionSlot(0)), 0x3000, runStart + 64, runStart, 1 << 63] {
            expectPoolError(.invalidPointer) { try pool.allocate(UInt64(7), linkedInto: PPointer<PPointer<UInt64>>(offset: slot)) }
            expectPoolError(.invalidPointer) { try pool.free(linkedFrom: PPointer<PPointer<UInt64>>(offset: slot)) }
        }
        try pool.free(runBlock)
        #expect(try live() == before, "nothing was allocated by the refused calls")
        #expect(try pool.check().isConsistent)
    }

    @Test("close() inside a transaction is refused; a transaction used after close throws")
    func closeAndTransactions() throws {
        let pool = try simulated()
        let root = try pool.root(Root.self)
        nonisolated(unsafe) var escaped: Transaction?
        try pool.transaction { tx in
            expectPoolError(.transactionMisuse) { try pool.close() }
            #expect(!pool.isClosed)
            try tx.write(PPointer<UInt64>(offset: 0), to: root.field(\.head))
            escaped = tx
        }
        try pool.close()
        let tx = try #require(escaped)
        expectPoolError(.closed) { try tx.write(PPointer<UInt64>(offset: 0), to: root.field(\.head)) }
        expectPoolError(.closed) { try tx.read(root.field(\.head)) }
        expectPoolError(.closed) { try tx.allocate(bytes: 64) }
    }

    @Test("raw mutable access to a read-only pool is refused up front; reads work")
    func readOnlyRawAccess() throws {
        let path = dir.file("ro.pool")
        let pool = try Pool.create(path: path, size: 1 << 20, layout: "ro")
        let root = try pool.root(Root.self)
        try pool.close()
        let ro = try Pool.open(path: path, layout: "ro", options: PoolOptions(readOnly: true))
        expectPoolError(.readOnly) { try ro.withUnsafeMutablePointer(to: root.field(\.head)) { $0.pointee = .null } }
        #expect(try ro.withUnsafePointer(to: root.field(\.head)) { $0.pointee } == .null)
        try ro.close()
    }

    @Test("header fields that pass the checksum but hold hostile values are refused at open")
    func hostileHeaderValues() throws {
        let path = dir.file("hdr.pool")
        try Pool.create(path: path, size: 1 << 20, layout: "hdr").close()
        let original = try #require(FileBytes.read(path))
        let header = try original.withUnsafeBytes { try PoolHeader.decode(UnsafeRawBufferPointer(rebasing: $0[0..<256])).get() }
        let mutations: [(String, (inout PoolHeader) -> Void)] = [
            ("growth step 2^63", { $0.growStep = 1 << 63 }),
            ("growth step 2^63 - 4096", { $0.growStep = (1 << 63) - 4096 }),
            ("segment shift 63", { $0.segmentShift = 63 }),
            ("segment shift 0", { $0.segmentShift = 0 }),
            ("max units 1", { $0.maxUnits = 1 }),
            ("heap offset 2^63", { $0.heapOffset = 1 << 63 }),
            ("pool size 2^64 - 4096", { $0.poolSize = UInt64.max - 4095 }),
            ("max size 2^63", { $0.maxSize = 1 << 63 }),
        ]
        for (what, mutate) in mutations {
            var h = header
            mutate(&h)
            var bytes = original
            let encoded = h.encode()
            bytes.replaceSubrange(0..<256, with: encoded)
            bytes.replaceSubrange(0x1000..<0x1100, with: encoded)
            #expect(FileBytes.write(path, bytes))
            let e = expectPoolError(.corruptedHeader) { try Pool.open(path: path, layout: "hdr") }
            #expect(e != nil, "\(what)")
            let unchanged = FileBytes.read(path) == bytes
            #expect(unchanged, "\(what): a failed open changes nothing")
        }
        // A huge growth step written by create itself is refused there.
        expectPoolError(.invalidArgument) {
            try Pool.create(path: dir.file("huge.pool"), size: 1 << 20, layout: "x", options: PoolOptions(growthStep: 1 << 62))
        }
        expectPoolError(.invalidArgument) {
            try Pool.create(path: dir.file("huge2.pool"), size: 1 << 20, layout: "x", options: PoolOptions(maxSize: 32 << 40))
        }
    }

    @Test("a stray value in a lane's extension slot is neither trusted nor freed: the live object it names survives")
    func strayExtensionSlot() throws {
        let path = dir.file("ext.pool")
        let pool = try Pool.create(path: path, size: 2 << 20, layout: "ext")
        let root = try pool.root(Root.self)
        let big = try pool.allocate(bytes: 64 << 10, linkedInto: root.field(\.big))
        try pool.withUnsafeMutablePointer(to: big.assumingType(UInt64.self), count: 8) { $0[7] = 0xfeed }
        try pool.persist(big, count: 64)
        let slot = pool.heap.extensionSlot(1)
        try pool.close()
        for stray: UInt64 in [big.offset, 1 << 63, .max, big.offset + 8] {
            #expect(FileBytes.patch(path, at: slot, withUnsafeBytes(of: stray) { Array($0) }))
            let p = try Pool.open(path: path, layout: "ext")
            #expect(p.isAllocated(big), "stray \(stray): the live object was not freed")
            #expect(try p.load(big.assumingType(UInt64.self).advanced(by: 7)) == 0xfeed)
            let report = try p.check()
            #expect(report.findings.contains { $0.contains("not a log extension block") }, "\(report.findings)")
            try p.close()
        }
    }

    @Test("a failed open leaves the file byte for byte as it was, even when recovery had logs to replay")
    func failedOpenChangesNothing() throws {
        // A crash image with a live allocate-and-link record (the root slot and a bitmap word to
        // be written by replay), then a malformed unit-table entry elsewhere.
        let sim = try Pool.createSimulated(size: 1 << 20, layout: "undo", options: PoolOptions(laneCount: 2))
        let root = try sim.root(Root.self)
        _ = try sim.allocate(bytes: 40 << 10, linkedInto: root.field(\.big))
        try sim.free(try sim.allocate(UInt64.self))  // the 16-byte class has a run: the linked op below needs no new one
        let media = try #require(sim.simulatedMedia)
        try sim.checkpoint()
        // Durable, not yet written back in place: the record is live in the durable image.
        _ = try sim.allocate(UInt64(5), linkedInto: root.field(\.head))
        var bytes = media.durableImage()
        let path = dir.file("undo.pool")
        // Sanity: the image recovers fine as it is, and recovery does replay something.
        #expect(FileBytes.write(path, bytes))
        let ok = try Pool.open(path: path, layout: "undo")
        #expect(ok.recoveredOperations == 1)
        #expect(try ok.check().isConsistent)
        try ok.close()
        // Now with a malformed table entry at the last extent (not one the log touches).
        var u = 0, last = 0
        while u < sim.heap.units { last = u; u += sim.heap.tableEntry(u).length }
        let entry = sim.heap.tableEntryOffset(last)
        bytes.replaceSubrange(entry..<(entry + 8), with: [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(FileBytes.write(path, bytes))
        expectPoolError(.corrupted) { try Pool.open(path: path, layout: "undo") }
        let unchanged = FileBytes.read(path) == bytes
        #expect(unchanged, "the replay was undone: the file is unchanged")
        try sim.close()
    }

    // MARK: Containers

    /// A pool holding one of each container, with a few hundred entries (B+ tree splits).
    func containers() throws -> (Pool, PPointer<Root>) {
        let pool = try simulated()
        let root = try pool.root(Root.self)
        let sorted = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.sorted))
        let hash = try PersistentDictionary<Int, Int>.open(pool, at: root.field(\.hash))
        let array = try PersistentArray<Int>.open(pool, at: root.field(\.array))
        let strings = try PersistentDictionary<Int, String>.open(pool, at: root.field(\.strings))
        try pool.transaction { _ in
            for i in 0..<600 {
                try sorted.updateValue("value \(i) " + String(repeating: "v", count: i % 40), forKey: "key:\(1000 + i)" + String(repeating: "k", count: i % 25))
                try hash.updateValue(i * i, forKey: i)
                try array.append(i)
                if i < 50 { try strings.updateValue(String(repeating: "s\(i)", count: 9), forKey: i) }
            }
        }
        #expect(try sorted.validate().isEmpty && hash.validate().isEmpty && array.validate().isEmpty && strings.validate().isEmpty)
        return (pool, root)
    }

    /// Runs every read (and a write) of the sorted map; returns whether each threw `corrupted`
    /// rather than trapping (true when at least one did).
    func walkSorted(_ m: PersistentSortedDictionary<String, String>) -> Bool {
        var threw = false
        func attempt(_ body: () throws -> Void) {
            do { try body() } catch let e as PoolError { if e.code == .corrupted { threw = true } } catch {}
        }
        attempt { _ = try m.count }
        attempt { _ = try m.scan() }
        attempt { _ = try m.scan(from: "key:1300", limit: 50) }
        attempt { for i in 0..<600 { _ = try m.value(forKey: "key:\(1000 + i)" + String(repeating: "k", count: i % 25)) } }
        attempt { var it = m.makeIterator(); while try it.next() != nil {} }
        attempt { try m.updateValue("new", forKey: "key:1333x") }
        attempt { _ = try m.removeValue(forKey: "key:1001k") }
        return threw
    }

    @Test("B+ tree damage — slot, count, kind, child pointer, height — throws corrupted and the deep check names it")
    func damagedTree() throws {
        typealias Map = PersistentSortedDictionary<String, String>
        let damages: [(String, (Pool, Map, Int) -> Void)] = [
            ("a slot byte out of range", { p, m, leaf in p.bytes.setU64(leaf + 64, p.bytes.u64(leaf + 64) | 0xff) }),
            ("a count above the capacity", { p, _, node in p.bytes.setU32(node + 4, 4000) }),
            ("an unknown node kind", { p, _, node in p.bytes.setU32(node, 7) }),
            ("a leaf link to the middle of nowhere", { p, _, leaf in p.bytes.setU64(leaf + 8, 1 << 63) }),
            ("a duplicate slot", { p, _, leaf in p.bytes.setU64(leaf + 72, p.bytes.u64(leaf + 72) & ~0xff | p.bytes.u64(leaf + 64) & 0xff) }),
        ]
        for (what, damage) in damages {
            let (pool, root) = try containers()
            let m = try Map.open(pool, at: root.field(\.sorted))
            let h = try pool.load(try pool.load(root).sorted)
            // The first leaf: follow the leftmost links.
            var node = Int(h.root.offset)
            while pool.bytes.u32(node) == 2 { node = Int(pool.bytes.u64(node + 8)) }
            damage(pool, m, node)
            let problems = try m.validate()
            #expect(!problems.isEmpty, "\(what): the deep check sees it")
            _ = walkSorted(m)  // must not trap; which calls throw depends on the damage
        }
        // The tree's header: a hostile count and height.
        for (count, height) in [(Int.max, 2), (-1, 2), (10, 1000), (10, 0)] {
            let (pool, root) = try containers()
            let ref = try pool.load(root).sorted
            try pool.store(count, at: ref.field(\.count))
            try pool.store(height, at: ref.field(\.height))
            let m = try Map.open(pool, at: root.field(\.sorted))
            #expect(walkSorted(m), "count \(count), height \(height): reads throw corrupted")
            #expect(!(try m.validate().isEmpty))
        }
    }

    @Test("hash map damage — capacities, counts, tags, a full table — throws corrupted; the rest of the pool stays usable")
    func damagedHashMap() throws {
        typealias Map = PersistentDictionary<Int, Int>
        let headers: [(String, (inout Map.Header) -> Void)] = [
            ("negative old capacity", { $0.oldCapacity = .min }),
            ("huge capacity", { $0.capacity = 1 << 62 }),
            ("used beyond capacity", { $0.used = .max }),
            ("count beyond capacity", { $0.count = .max - 1 }),
            ("moved beyond old capacity", { $0.moved = 99 }),
            ("non-power-of-two capacity", { $0.capacity = 1000 }),
        ]
        for (what, mutate) in headers {
            let (pool, root) = try containers()
            let ref = try pool.load(root).hash
            var h = try pool.load(ref)
            mutate(&h)
            try pool.store(h, at: ref)
            let m = try Map.open(pool, at: root.field(\.hash))
            expectPoolError(.corrupted) { try m.value(forKey: 5) }
            expectPoolError(.corrupted) { try m.updateValue(1, forKey: 100_000) }
            expectPoolError(.corrupted) { try m.entries() }
            #expect(!(try m.validate().isEmpty), "\(what)")
            // Other containers are unaffected.
            #expect(try PersistentArray<Int>.open(pool, at: root.field(\.array)).count == 600)
        }
        // Every bucket full with hostile tags: inserting must not loop forever.
        let (pool, root) = try containers()
        let ref = try pool.load(root).hash
        let h = try pool.load(ref)
        for i in 0..<h.capacity { pool.bytes.setU64(Int(h.table.offset) + i * MemoryLayout<Map.Bucket>.stride, 1 << 63 | UInt64(i)) }
        let m = try Map.open(pool, at: root.field(\.hash))
        expectPoolError(.corrupted) { try m.updateValue(1, forKey: 123_456) }
        #expect(!(try m.validate().isEmpty))
    }

    @Test("array and string damage throws corrupted; a damaged value does not stop other lookups")
    func damagedArrayAndStrings() throws {
        let (pool, root) = try containers()
        let array = try PersistentArray<Int>.open(pool, at: root.field(\.array))
        let ref = try pool.load(root).array
        try pool.store(Int.max, at: ref.field(\.capacity))
        expectPoolError(.corrupted) { try array.count }
        expectPoolError(.corrupted) { try array.append(1) }
        #expect(!(try array.validate().isEmpty))
        try pool.store(600, at: ref.field(\.capacity))
        try pool.store(700, at: ref.field(\.count))
        expectPoolError(.corrupted) { try array[650] }

        // A string whose byte count is 2^63 (reads throw), and one whose block was freed (its
        // bytes are still there, so reads work; only the deep check, which asks the allocator,
        // can tell).
        let strings = try PersistentDictionary<Int, String>.open(pool, at: root.field(\.strings))
        let h = try pool.load(try pool.load(root).strings)
        typealias Bucket = PersistentDictionary<Int, String>.Bucket
        var damaged: [Int] = []
        for i in 0..<h.capacity {
            let b = try pool.load(PPointer<Bucket>(offset: h.table.offset + UInt64(i * MemoryLayout<Bucket>.stride)))
            guard b.tag > 1, b.value.count > 16 else { continue }
            if damaged.isEmpty {
                try pool.store(UInt64(1) << 63, at: b.value.overflow.storage.assumingType(UInt64.self))
            } else {
                try pool.free(b.value.overflow.storage)
            }
            damaged.append(b.key)
            if damaged.count == 2 { break }
        }
        #expect(damaged.count == 2)
        expectPoolError(.corrupted) { try strings.value(forKey: damaged[0]) }
        let problems = try strings.validate()
        #expect(problems.count >= 2, "\(problems)")
        for k in 0..<50 where !damaged.contains(k) {
            #expect(try strings.value(forKey: k) == String(repeating: "s\(k)", count: 9), "undamaged entries stay readable")
        }
    }
}
