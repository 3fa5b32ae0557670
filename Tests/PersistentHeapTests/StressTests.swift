#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import PHeapTestSupport
import Synchronization
import Testing
@_spi(Containers) @testable import PersistentHeap
@testable import PersistentCollections
@_spi(Allocator) @testable import PersistentHeapAllocator
@_spi(Core) @testable import PersistentHeapCore

/// Four threads on one pool, each doing a different kind of work at once: the allocator's linked
/// operations, transactions that move money (isolated by a persistent mutex), and two writers of
/// one sorted map (serialised by another). `.ci/run` runs this suite under ThreadSanitizer.
@Suite("Stress")
struct StressTests {
    struct Root: BitwiseCopyable {
        var slots: PPointer<PRawPointer>
        var accounts: PPointer<Int>
        var bankLock: PMutex
        var mapLock: PMutex
        var map: PersistentSortedDictionary<Int, Int>.Ref
    }

    static let seconds = longTests ? 10.0 : 1.5

    @Test("4 threads: allocate/free/link, transactions under a PMutex, two container writers under a PMutex; then check and invariants")
    func fourThreads() throws {
        let pool = try Pool.createSimulated(size: 8 << 20, layout: "stress", options: PoolOptions(maxSize: 64 << 20, laneCount: 4))
        let root = try pool.root(Root.self)
        _ = try pool.allocate(PRawPointer.self, count: 64, linkedInto: root.field(\.slots))
        try pool.transaction { tx in
            let a = try tx.allocate(Int.self, count: 16)
            for i in 0..<16 { try tx.write(100, to: a.advanced(by: i)) }
            try tx.write(a, to: root.field(\.accounts))
        }
        _ = try PersistentSortedDictionary<Int, Int>.open(pool, at: root.field(\.map))
        let deadline = monotonicSeconds() + Self.seconds
        let errors = Locked<[String]>([])  // (a pthread lock: visible to ThreadSanitizer)
        let operations = Atomic<Int>(0)
        let inserted = Locked<Set<Int>>([])
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            var rng = RepeatableRandomNumberGenerator(seed: UInt64(worker) + 1)
            do {
                let r = try pool.load(root)
                while monotonicSeconds() < deadline {
                    switch worker {
                    case 0:
                        let slot = r.slots.advanced(by: Int.random(in: 0..<64, using: &rng))
                        if try pool.load(slot).isNull {
                            _ = try pool.allocate(bytes: Int.random(in: 8...600, using: &rng), linkedInto: slot)
                        } else if Bool.random(using: &rng) {
                            try pool.free(linkedFrom: slot)
                        } else {
                            _ = try pool.reallocate(linkedFrom: slot.cast(to: PPointer<UInt64>.self), count: Int.random(in: 1...200, using: &rng))
                        }
                    case 1:
                        let from = Int.random(in: 0..<16, using: &rng), to = Int.random(in: 0..<16, using: &rng)
                        try pool.withLock(root.field(\.bankLock)) {
                            try pool.transaction { tx in
                                try tx.update(r.accounts.advanced(by: from)) { $0 -= 3 }
                                try tx.update(r.accounts.advanced(by: to)) { $0 += 3 }
                                let scratch = try tx.allocate(bytes: 64)
                                try tx.free(scratch)
                            }
                        }
                    default:
                        let key = worker * 1_000_000 + Int.random(in: 0..<5000, using: &rng)
                        try pool.withLock(root.field(\.mapLock)) {
                            let m = PersistentSortedDictionary<Int, Int>(pool, ref: r.map)
                            if Int.random(in: 0..<4, using: &rng) == 0 {
                                if try m.removeValue(forKey: key) != nil { inserted.withLock { _ = $0.remove(key) } }
                            } else {
                                try m.updateValue(key * 2, forKey: key)
                                inserted.withLock { _ = $0.insert(key) }
                            }
                        }
                    }
                    operations.add(1, ordering: .relaxed)
                }
            } catch {
                errors.withLock { $0.append("worker \(worker): \(error)") }
            }
        }
        #expect(errors.withLock { $0 }.isEmpty, "\(errors.withLock { $0 })")
        #expect(operations.load(ordering: .relaxed) > 100)
        let report = try pool.check()
        #expect(report.isConsistent, "\(report.findings.prefix(5))")
        let r = try pool.load(root)
        var sum = 0
        for i in 0..<16 { sum += try pool.load(r.accounts.advanced(by: i)) }
        #expect(sum == 1600, "money is conserved")
        let m = PersistentSortedDictionary<Int, Int>(pool, ref: r.map)
        #expect(try m.validate().isEmpty)
        #expect(Set(try m.scan().map(\.key)) == inserted.withLock { $0 })
        print("stress: \(operations.load(ordering: .relaxed)) operations on 4 threads in \(Self.seconds) s")
    }
}
