#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PHeapTestSupport
import Synchronization
import Testing
@_spi(Containers) @testable import PersistentHeap
@_spi(Allocator) @testable import PersistentHeapAllocator
@_spi(Core) @testable import PersistentHeapCore

/// A node of the singly linked lists these tests publish.
struct PubNode: BitwiseCopyable, Equatable {
    var value: Int
    var next: PPointer<PubNode>
}

struct PubRoot: BitwiseCopyable {
    var head: PPointer<PubNode>
    var spare: PPointer<PubNode>
}

@Suite("Reserve and publish")
struct ReservationTests {
    func pool() throws -> Pool {
        try Pool.createSimulated(size: 2 << 20, layout: "reserve", options: PoolOptions(maxSize: 32 << 20))
    }

    /// The values of the list at `root.head`, following `next` (bounded).
    static func list(_ pool: Pool, _ root: PPointer<PubRoot>) throws -> [Int] {
        var out: [Int] = []
        var p = try pool.load(root).head
        while !p.isNull && out.count < 10_000 {
            let n = try pool.load(p)
            out.append(n.value)
            p = n.next
        }
        return out
    }

    @Test("reserve, fill, publish: blocks allocated and linked together; durable in one commit")
    func publishLinks() throws {
        let pool = try pool()
        let root = try pool.root(PubRoot.self)
        let free0 = try pool.stats().freeBytes
        let a = try pool.reserve(PubNode.self)
        let b = try pool.reserve(PubNode.self)
        #expect(!pool.isAllocated(a.pointer), "a reservation is not an allocation")
        #expect(pool.heldReservations == 2)
        try pool.initialize(b, to: PubNode(value: 2, next: .null))
        try pool.initialize(a, to: PubNode(value: 1, next: b.pointer(as: PubNode.self)))
        let before = PersistenceCounters.current
        try pool.publish([a, b], setting: [.set(root.field(\.head), to: a.pointer(as: PubNode.self))])
        let spent = PersistenceCounters.current.since(before)
        #expect(spent.operationFences == 1, "one log record: one fence (\(spent))")
        #expect(pool.isAllocated(a.pointer) && pool.isAllocated(b.pointer))
        #expect(try Self.list(pool, root) == [1, 2])
        #expect(pool.heldReservations == 0)
        #expect(try pool.stats().freeBytes < free0)
        // The durable image holds all of it.
        let reopened = try Pool.openSimulated(image: pool.simulatedMedia!.durableImage(), layout: "reserve")
        #expect(try Self.list(reopened, reopened.root(PubRoot.self)) == [1, 2])
        #expect(try reopened.check().isConsistent)
    }

    @Test("publish frees atomically with the updates; cancel gives the space back with no fence")
    func freeAndCancel() throws {
        let pool = try pool()
        let root = try pool.root(PubRoot.self)
        let old = try pool.allocate(PubNode(value: 7, next: .null), linkedInto: root.field(\.head))
        let r = try pool.reserve(PubNode.self)
        try pool.initialize(r, to: PubNode(value: 8, next: .null))
        try pool.publish([r], setting: [.set(root.field(\.head), to: r.pointer(as: PubNode.self))], freeing: [old.raw])
        #expect(!pool.isAllocated(old))
        #expect(try Self.list(pool, root) == [8])

        let c = try pool.reserve(bytes: 100_000)
        let fences = pool.simulatedMedia!.fenceCount
        try pool.cancel(c)
        #expect(pool.simulatedMedia!.fenceCount == fences, "cancelling writes nothing")
        #expect(!pool.isAllocated(c.pointer))
        #expect(try pool.check().isConsistent)
        // The cancelled space is handed out again.
        let again = try pool.allocate(bytes: 100_000)
        #expect(again == c.pointer)
    }

    @Test("misuse: published twice, cancelled twice, listed twice, bad slot, bad free, other thread, closed")
    func misuse() throws {
        let pool = try pool()
        let root = try pool.root(PubRoot.self)
        let r = try pool.reserve(PubNode.self)
        #expect(throws: PoolError.self) { try pool.publish([r, r]) }
        #expect(throws: PoolError.self) { try pool.initialize(r, to: 1, atByteOffset: r.usableSize - 4) }
        #expect(throws: PoolError.self) { try pool.initialize(r, to: UInt32(1), atByteOffset: 2) }
        // A slot outside the heap, a slot inside the block itself, a free of garbage: refused,
        // and the reservation stays held.
        #expect(throws: PoolError.self) {
            try pool.publish([r], setting: [.set(PPointer<PRawPointer>(offset: 8), to: r.pointer)])
        }
        #expect(throws: PoolError.self) {
            try pool.publish([r], setting: [.set(r.pointer.assumingType(PRawPointer.self), to: r.pointer)])
        }
        #expect(throws: PoolError.self) { try pool.publish([r], freeing: [PRawPointer(offset: 12345)]) }
        #expect(pool.heldReservations == 1)
        #expect(!pool.isAllocated(r.pointer))

        // Another thread does not hold it.
        let token = UncheckedSendable((pool, r))
        let otherThread = Mutex<String?>(nil)
        let t = Thread { do { try token.value.0.publish([token.value.1]) } catch { otherThread.withLock { $0 = "\(error)" } } }
        t.start()
        t.join()
        #expect(otherThread.withLock { $0 }?.contains("not held by this thread") == true)

        try pool.publish([r], setting: [.set(root.field(\.spare).cast(to: PRawPointer.self), to: r.pointer)])
        #expect(throws: PoolError.self) { try pool.publish([r]) }
        #expect(throws: PoolError.self) { try pool.cancel(r) }
        #expect(throws: PoolError.self) { try pool.initialize(r, to: 1) }

        let s = try pool.reserve(bytes: 64)
        try pool.cancel(s)
        #expect(throws: PoolError.self) { try pool.cancel(s) }
        try pool.close()
        #expect(throws: PoolError.self) { _ = try pool.reserve(bytes: 64) }
        #expect(throws: PoolError.self) { try pool.publish([s]) }
    }

    @Test("inside a transaction: the publication joins it — committed with it, cancelled by its abort")
    func joinsTransaction() throws {
        let pool = try pool()
        let root = try pool.root(PubRoot.self)
        let a = try pool.reserve(PubNode.self)
        try pool.initialize(a, to: PubNode(value: 5, next: .null))
        struct Abort: Error {}
        #expect(throws: Abort.self) {
            try pool.transaction { tx in
                try pool.publish([a], setting: [.set(root.field(\.head), to: a.pointer(as: PubNode.self))])
                throw Abort()
            }
        }
        #expect(!pool.isAllocated(a.pointer) && pool.heldReservations == 0, "the abort cancelled it")
        #expect(try pool.load(root).head.isNull)

        let b = try pool.reserve(PubNode.self)
        try pool.initialize(b, to: PubNode(value: 6, next: .null))
        try pool.transaction { tx in
            try tx.write(41, to: root.field(\.spare).cast(to: Int.self))
            try pool.publish([b], setting: [.set(root.field(\.head), to: b.pointer(as: PubNode.self))])
        }
        #expect(pool.isAllocated(b.pointer))
        #expect(try Self.list(pool, root) == [6])
        #expect(try pool.load(root.field(\.spare).cast(to: Int.self)) == 41)
    }

    @Test("held reservations are cancelled when the pool closes and when their thread exits; a read-only pool refuses them")
    func cleanup() throws {
        let dir = ScratchDirectory()
        let path = dir.file("held.pool")
        let pool = try Pool.create(path: path, size: 4 << 20, layout: "reserve")
        let held = try pool.reserve(bytes: 300_000)
        let kept = try pool.allocate(bytes: 64)
        let fromThread = Mutex<PRawPointer>(.null)
        let t = Thread {
            if let r = try? pool.reserve(bytes: 300_000) { fromThread.withLock { $0 = r.pointer } }
        }
        t.start()
        t.join()
        // The exited thread's lane gave its reservation back: the space is allocatable.
        let reused = try pool.allocate(bytes: 300_000)
        #expect(reused == fromThread.withLock { $0 })
        try pool.close()
        let reopened = try Pool.open(path: path, layout: "reserve")
        #expect(!reopened.isAllocated(held.pointer))
        #expect(reopened.isAllocated(kept))
        #expect(try reopened.check().isConsistent)
        try reopened.close()
        let readOnly = try Pool.open(path: path, layout: "reserve", options: PoolOptions(readOnly: true))
        #expect(throws: PoolError.self) { _ = try readOnly.reserve(bytes: 64) }
        try readOnly.close()
    }

    @Test("many reservations in one publication (the log continues in the lane's extension block)")
    func many() throws {
        let pool = try pool()
        let root = try pool.root(PubRoot.self)
        var rs: [PReservation] = []
        var next = PPointer<PubNode>.null
        for i in 0..<300 {
            let r = try pool.reserve(PubNode.self)
            try pool.initialize(r, to: PubNode(value: 300 - i, next: next))
            next = r.pointer(as: PubNode.self)
            rs.append(r)
        }
        try pool.publish(rs, setting: [.set(root.field(\.head), to: next)])
        #expect(try Self.list(pool, root) == Array(1...300))
        #expect(try pool.check().isConsistent)
    }

    @Test("simulated power failure at every fence of publications: all of one or none of it")
    func crashAtEveryFence() throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "crash", options: PoolOptions(maxSize: 8 << 20, laneCount: 2))
        let root = try pool.root(PubRoot.self)
        // The model: the list grows by pushing two nodes at a time (and sometimes a large block
        // hung off `spare`, freed by the next publication): every crash image must hold a list
        // of even length, with consecutive values, and no leak.
        let (images, problems) = try PersistentHeapTests.crashAtEveryFence(pool, seedBase: 77 << 32, verify: { p, _ in
            var out = try p.check().findings
            let r = try p.root(PubRoot.self)
            let values = try Self.list(p, r)
            if values.count % 2 != 0 { out.append("odd list length \(values.count)") }
            if values != Array(values.indices.map { values.count - $0 }) { out.append("list \(values.prefix(6))") }
            let spare = try p.load(r).spare
            let live = values.count * 16 + (spare.isNull ? 0 : (try p.usableSize(of: spare)))
            // Two 16-byte nodes per step and the root: what is allocated is exactly that.
            let allocated = try p.stats().allocatedBytes - (try p.usableSize(of: r))
            if allocated != live { out.append("allocated \(allocated) bytes, reachable \(live)") }
            return out
        }) {
            var count = 0
            for step in 0..<60 {
                let a = try pool.reserve(PubNode.self)
                let b = try pool.reserve(PubNode.self)
                let head = try pool.load(root).head
                try pool.initialize(b, to: PubNode(value: count + 1, next: head))
                try pool.initialize(a, to: PubNode(value: count + 2, next: b.pointer(as: PubNode.self)))
                var updates: [PSlotUpdate] = [.set(root.field(\.head), to: a.pointer(as: PubNode.self))]
                var frees: [PRawPointer] = []
                var reservations = [a, b]
                let spare = try pool.load(root).spare
                if !spare.isNull { frees.append(spare.raw); updates.append(.set(root.field(\.spare), to: .null)) }
                if step % 3 == 0 {
                    let big = try pool.reserve(bytes: 40_000, zeroed: false)
                    reservations.append(big)
                    updates = updates.filter { $0.slot != root.field(\.spare).offset }
                    updates.append(.set(root.field(\.spare), to: big.pointer(as: PubNode.self)))
                }
                if step % 7 == 5 {
                    // A cancelled attempt changes nothing.
                    let c = try pool.reserve(PubNode.self)
                    try pool.cancel(c)
                }
                try pool.publish(reservations, setting: updates, freeing: frees)
                count += 2
            }
        }
        #expect(problems.isEmpty, "\(problems.count) bad crash images of \(images): \(problems.prefix(5))")
        print("publication workload: \(images) crash images checked")
    }
}
