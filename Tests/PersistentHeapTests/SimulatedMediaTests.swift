import PHeapTestSupport
import Synchronization
import Testing
@_spi(Containers) @testable import PersistentHeap
@testable import PersistentCollections
@_spi(Allocator) @testable import PersistentHeapAllocator
@_spi(Core) @testable import PersistentHeapCore

@Suite("Simulated power failure")
struct SimulatedMediaTests {
    /// A pool with a durable, zeroed 512-byte object (8 lines).
    func setUp() throws -> (Pool, PPointer<UInt64>) {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "sim")
        let p = try pool.allocate(UInt64.self, count: 64, zeroed: true)
        return (pool, p)
    }

    func words(in image: [UInt8], at p: PPointer<UInt64>) throws -> [UInt64] {
        let reopened = try Pool.openSimulated(image: image, layout: "sim")
        return try (0..<64).map { try reopened.load(p.advanced(by: $0)) }
    }

    @Test("unflushed stores are lost when no line is evicted")
    func unflushedLost() throws {
        let (pool, p) = try setUp()
        for k in 0..<64 { pool.unsafeAddress(of: p)[k] = 0xAB }
        for seed in 0..<16 as Range<UInt64> {
            let w = try words(in: pool.simulatedMedia!.crashImage(seed: seed, evictionProbability: 0), at: p)
            #expect(w.allSatisfy { $0 == 0 }, "seed \(seed)")
        }
        // ...and all present when every dirty line is evicted.
        let w = try words(in: pool.simulatedMedia!.crashImage(seed: 1, evictionProbability: 1), at: p)
        #expect(w.allSatisfy { $0 == 0xAB })
    }

    @Test("flushed and fenced stores always survive")
    func persistedSurvives() throws {
        let (pool, p) = try setUp()
        for k in 0..<64 { pool.unsafeAddress(of: p)[k] = UInt64(k) + 1 }
        try pool.persist(p, count: 64)
        for seed in 0..<8 as Range<UInt64> {
            for prob in [0.0, 0.5, 1.0] {
                let w = try words(in: pool.simulatedMedia!.crashImage(seed: seed, evictionProbability: prob), at: p)
                #expect(w == (0..<64).map { UInt64($0) + 1 }, "seed \(seed) p \(prob)")
            }
        }
    }

    @Test("flushed-but-not-fenced and dirty lines survive in some crash images and not in others")
    func pendingAndDirtyVary() throws {
        let (pool, p) = try setUp()
        let a = pool.unsafeAddress(of: p)
        for k in 0..<8 { a[k] = 0x11 }           // line 0: flushed, no fence
        pool.persistence.flush(a, count: 64)
        for k in 8..<16 { a[k] = 0x22 }          // line 1: dirty, never flushed
        #expect(pool.simulatedMedia!.pendingLineCount >= 1)
        var pendingSeen = Set<Bool>(), dirtySeen = Set<Bool>()
        for seed in 0..<64 as Range<UInt64> {
            let w = try words(in: pool.simulatedMedia!.crashImage(seed: seed, evictionProbability: 0.3), at: p)
            pendingSeen.insert(w[0] == 0x11)
            dirtySeen.insert(w[8] == 0x22)
            // A line is written back whole: never half of it.
            #expect(Set(w[0..<8]).count == 1)
            #expect(Set(w[8..<16]).count == 1)
        }
        #expect(pendingSeen == [true, false])
        #expect(dirtySeen == [true, false])
        // After the fence, the pending line is durable in every image; the dirty one still is not.
        pool.persistence.drain()
        let w = try words(in: pool.simulatedMedia!.crashImage(seed: 3, evictionProbability: 0), at: p)
        #expect(w[0] == 0x11)
        #expect(w[8] == 0)
    }

    @Test("fences are counted and the fence hook runs before each fence takes effect")
    func fenceHook() throws {
        let (pool, p) = try setUp()
        let media = pool.simulatedMedia!
        let seen = Mutex<[(Int, UInt64)]>([])
        let addr = UInt(bitPattern: pool.unsafeAddress(of: p))
        media.onFence = { m, n in
            // At this fence, the value being fenced is not in the durable image yet.
            let img = m.durableImage()
            let off = Int(addr - UInt(bitPattern: pool.baseAddress))
            let v = img.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: off, as: UInt64.self) }
            seen.withLock { $0.append((n, v)) }
        }
        let before = media.fenceCount
        for k in 1...3 as ClosedRange<UInt64> { try pool.store(k, at: p) }
        media.onFence = nil
        #expect(media.fenceCount == before + 3)
        let s = seen.withLock { $0 }
        #expect(s.map(\.0) == [before + 1, before + 2, before + 3])
        #expect(s.map(\.1) == [0, 1, 2])
    }

    @Test("crash images are reproducible for a seed")
    func reproducible() throws {
        let (pool, p) = try setUp()
        for k in 0..<64 { pool.unsafeAddress(of: p)[k] = UInt64(k) }
        pool.persistence.flush(pool.unsafeAddress(of: p), count: 256)
        let m = pool.simulatedMedia!
        #expect(m.crashImage(seed: 9, evictionProbability: 0.5) == m.crashImage(seed: 9, evictionProbability: 0.5))
    }
}
