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

/// Fields the overtaking workload writes both through records and with plain stores.
struct Fields: BitwiseCopyable {
    var a: Int
    var b: Int
    var slot: PRawPointer
    var spare: PRawPointer
}

/// The one-fence protocol (docs/ARCHITECTURE.md §5.6): one fence per durable operation, records
/// applied without a flush, checkpoints, and the rule for writes that are not records.
@Suite("Log records")
struct LogRecordTests {
    /// Counters spent by `body` on this thread.
    func spent(_ body: () throws -> Void) rethrows -> PersistenceCounters {
        let before = PersistenceCounters.current
        try body()
        return PersistenceCounters.current.since(before)
    }

    @Test("fences per transaction commit: 1 for 8 B, 64 B, 4 KiB and 64 KiB of writes; 0 for an aborted or empty one")
    func transactionFences() throws {
        let d = ScratchDirectory("records", memory: true)
        let pool = try Pool.create(path: d.file("tx.pool"), size: 16 << 20, layout: "f", options: PoolOptions(durability: .cacheLineFlush))
        let data = try pool.allocate(UInt8.self, count: 64 << 10, zeroed: true)
        for size in [8, 64, 4 << 10, 64 << 10] {
            // A first one links the lane's extension block for the large sizes (one record of its
            // own); then every commit is one record.
            func commit(_ salt: UInt8) throws {
                try pool.transaction { tx in
                    try tx.withMutableView(of: data.raw, count: size) { v in
                        for i in stride(from: 0, to: size, by: 8) { v.store(UInt64(i) &+ UInt64(salt), at: i) }
                    }
                }
            }
            try commit(0)
            let rounds = 20
            let c = try spent { for k in 1...rounds { try commit(UInt8(k)) } }
            #expect(c.operationFences == UInt64(rounds), "\(size) B: \(c)")
            print("transaction of \(size) B: \(Double(c.operationFences) / Double(rounds)) fences per commit + \(Double(c.checkpointFences) / Double(rounds)) checkpoint fences (\(c.checkpoints) checkpoints in \(rounds) commits)")
            #expect(try pool.load(data.advanced(by: size - 8).cast(to: UInt64.self)) == UInt64(size - 8) &+ UInt64(rounds))
        }
        struct Abort: Error {}
        let aborted = spent { _ = try? pool.transaction { tx in try tx.write(7, to: data.cast(to: Int.self)); throw Abort() } }
        #expect(aborted.fences == 0, "\(aborted)")
        let empty = try spent { try pool.transaction { _ in } }
        #expect(empty.fences == 0, "\(empty)")
        expectConsistent(pool)
        try pool.close()
    }

    @Test("a lane's log fills, a checkpoint retires it (two fences), and the lane starts over")
    func checkpoints() throws {
        let d = ScratchDirectory("records", memory: true)
        let pool = try Pool.create(path: d.file("cp.pool"), size: 4 << 20, layout: "cp", options: PoolOptions(durability: .cacheLineFlush))
        let root = try pool.root(PRawPointer.self)
        _ = try pool.allocate(bytes: 64) // the lane's run exists
        let n = 1000
        let c = try spent {
            for _ in 0..<n {
                _ = try pool.allocate(bytes: 64, zeroed: false, linkedInto: root)
                try pool.free(linkedFrom: root)
            }
        }
        // 2n one-line records in a lane of 63 lines: a checkpoint per ~63 records.
        #expect(c.operationFences == UInt64(2 * n), "\(c)")
        #expect(c.checkpoints >= UInt64(2 * n / 63) && c.checkpoints <= UInt64(2 * n / 60 + 1), "\(c)")
        #expect(c.checkpointFences == 2 * c.checkpoints)
        print("link + unlink: \(Double(c.fences) / Double(n)) fences per pair, of which \(Double(c.checkpointFences) / Double(n)) checkpoint fences")
        // An explicit checkpoint retires everything: two fences, then nothing left to replay.
        _ = try pool.allocate(bytes: 64, linkedInto: root)
        let cp = try spent { try pool.checkpoint() }
        #expect(cp.fences == 2 && cp.checkpoints == 1, "\(cp)")
        #expect(pool.heap.retiredSeq == pool.heap.logSequence.load(ordering: .relaxed) - 1)
        let idle = try spent { try pool.checkpoint() }
        #expect(idle.fences == 0, "nothing to retire: no fence (\(idle))")
        expectConsistent(pool)
        try pool.close()
        let again = try Pool.open(path: d.file("cp.pool"), layout: "cp")
        #expect(again.previousShutdownWasClean && again.recoveredOperations == 0)
        try again.close()
    }

    @Test("after a crash with every lane's log full: recovery replays every record in seq order, quickly")
    func fullRings() throws {
        // A lane for each of the 8 threads, one for this one.
        let pool = try Pool.createSimulated(size: 8 << 20, layout: "full", options: PoolOptions(laneCount: 9))
        let slots = try pool.allocate(PRawPointer.self, count: 8 * 64, zeroed: true)
        try pool.checkpoint()
        // 8 threads, one per lane, each filling its log with linked operations just short of a
        // checkpoint (62 one-line records).
        let checkpoints = Atomic<Int>(0)
        let done = Atomic<Int>(0)
        let threads = (0..<8).map { t in
            Thread {
                let before = PersistenceCounters.current
                for k in 0..<31 {
                    let slot = slots.advanced(by: t * 64 + k)
                    _ = try? pool.allocate(bytes: 48, zeroed: false, linkedInto: slot)
                    _ = try? pool.allocate(bytes: 48, zeroed: false, linkedInto: slots.advanced(by: t * 64 + 32 + k))
                }
                checkpoints.add(Int(PersistenceCounters.current.since(before).checkpoints), ordering: .relaxed)
                // Keep the lane until every thread is done: a lane given back at exit would be
                // taken, already full, by a thread starting late.
                done.add(1, ordering: .acquiringAndReleasing)
                while done.load(ordering: .acquiring) < 8 { sched_yield() }
            }
        }
        for t in threads { t.start() }
        for t in threads { t.join() }
        #expect(checkpoints.load(ordering: .relaxed) == 0, "the logs filled without a checkpoint")
        let image = try #require(pool.simulatedMedia?.durableImage())
        let start = monotonicSeconds()
        let recovered = try Pool.openSimulated(image: image, layout: "full")
        let ms = (monotonicSeconds() - start) * 1000
        #expect(recovered.recoveredOperations >= 8 * 62, "records replayed: \(recovered.recoveredOperations)")
        for i in 0..<(8 * 64) where i % 32 != 31 {
            #expect(!(try recovered.load(slots.advanced(by: i))).isNull, "slot \(i) lost")
        }
        expectConsistent(recovered)
        print("open after a crash with 8 full lanes: \(recovered.recoveredOperations) records replayed in \(Double(Int(ms * 100)) / 100) ms (simulated media, debug build)")
    }

    @Test("writes that are not records are never overtaken by replay: crash at every fence of link, plain store, transaction, plain store on the same bytes")
    func unloggedWritesNotOvertaken() throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "crash", options: PoolOptions(maxSize: 8 << 20, laneCount: 2))
        let root = try pool.root(Fields.self)
        // Every value written is larger than the one before: after a crash, each field must hold
        // the value of the last write that returned, or of the write in flight — never older.
        struct Ack: Sendable {
            var a = 0, b = 0, slot: UInt64 = 0
            var inFlight: (a: Int?, b: Int?, slot: UInt64?) = (nil, nil, nil)
            /// A link in flight: the slot may hold any new block.
            var linking = false
        }
        let ack = Mutex(Ack())
        let (images, problems) = try crashAtEveryFence(pool, seedBase: 91 << 32, verify: { p, _ in
            var out = try p.check().findings
            let r = try p.load(try p.root(Fields.self))
            let k = ack.withLock { $0 }
            if r.a != k.a && r.a != k.inFlight.a { out.append("a = \(r.a): acknowledged \(k.a), in flight \(String(describing: k.inFlight.a))") }
            if r.b != k.b && r.b != k.inFlight.b { out.append("b = \(r.b): acknowledged \(k.b), in flight \(String(describing: k.inFlight.b))") }
            if r.slot.offset != k.slot && r.slot.offset != k.inFlight.slot && !(k.linking && !r.slot.isNull) {
                out.append("slot = \(r.slot): acknowledged \(k.slot)")
            }
            return out
        }) {
            var v = 0
            for round in 0..<40 {
                // a: a transaction's record, then a plain store of the same field, then a record.
                v += 1
                ack.withLock { $0.inFlight.a = v }
                try pool.transaction { tx in try tx.write(v, to: root.field(\.a)) }
                ack.withLock { $0.a = v }
                v += 1
                ack.withLock { $0.inFlight.a = v }
                try pool.store(v, at: root.field(\.a))
                ack.withLock { $0.a = v }
                // b: plain first, then in a transaction, then plain again (withMutable).
                v += 1
                ack.withLock { $0.inFlight.b = v }
                try pool.store(v, at: root.field(\.b))
                ack.withLock { $0.b = v }
                v += 1
                ack.withLock { $0.inFlight.b = v }
                try pool.transaction { tx in try tx.write(v, to: root.field(\.b)) }
                ack.withLock { $0.b = v }
                v += 1
                ack.withLock { $0.inFlight.b = v }
                try pool.withMutable(root.field(\.b)) { $0 = v }
                ack.withLock { $0.b = v }
                // slot: allocate-and-link writes it in a record, then a plain store nulls it (the
                // block is leaked on purpose: check() does not look for leaks), then a free of a
                // block the plain store did not touch.
                ack.withLock { $0.linking = true }
                let x = try pool.allocate(bytes: 64 + round, zeroed: round % 2 == 0, linkedInto: root.field(\.slot))
                ack.withLock { $0.slot = x.offset; $0.linking = false; $0.inFlight.slot = 0 }
                try pool.store(.null, at: root.field(\.slot))
                ack.withLock { $0.slot = 0; $0.inFlight.slot = nil }
                try pool.free(x)
            }
        }
        #expect(problems.isEmpty, "\(problems.count) bad crash images of \(images): \(problems.prefix(5))")
        print("unlogged writes: \(images) crash images checked")
    }

    @Test("two lanes change the same bitmap word (allocate on one, free on the other, allocate again): crash at every fence, replay in seq order")
    func twoLanesSameWord() throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "crash", options: PoolOptions(laneCount: 2))
        let slots = try pool.allocate(PRawPointer.self, count: 8, zeroed: true)
        try pool.store(slots.raw, at: try pool.root(PRawPointer.self))
        // Slot k holds block ids through its first word; the state after every acknowledged
        // step is known, the step in flight is the only one allowed to differ.
        let acked = Mutex<[UInt64]>(Array(repeating: 0, count: 8))
        let turn = Atomic<Int>(0)
        let failure = Mutex<String?>(nil)
        let (images, problems) = try crashAtEveryFence(pool, seedBase: 92 << 32, verify: { p, _ in
            var out = try p.check().findings
            let table = PPointer<PRawPointer>(offset: try p.load(try p.root(PRawPointer.self)).offset)
            var reachable = 2  // the root and the table
            let expected = acked.withLock { $0 }
            var differing = 0
            for k in 0..<8 {
                let x = try p.load(table.advanced(by: k))
                let id = x.isNull ? 0 : try p.load(x.assumingType(UInt64.self))
                if !x.isNull {
                    reachable += 1
                    if !p.isAllocated(x) { out.append("slot \(k) points at free \(x)") }
                }
                if id != expected[k] { differing += 1 }
            }
            if differing > 1 { out.append("\(differing) slots differ from their acknowledged state") }
            let objects = try p.stats().objects
            if objects != reachable { out.append("\(objects) objects, \(reachable) reachable") }
            return out
        }) {
            // Thread A (lane 0) allocates into even steps' slots; thread B (lane 1) frees them;
            // strictly alternating, so every block reuses the bit the other lane just cleared.
            @Sendable func run(_ me: Int) {
                var id: UInt64 = UInt64(me) << 32
                for step in 0..<120 {
                    while turn.load(ordering: .acquiring) != 2 * step + me { sched_yield() }
                    let k = step % 8
                    let slot = slots.advanced(by: k)
                    do {
                        if me == 0 {
                            id += 1
                            let value = id
                            _ = try pool.allocate(UInt64.self, count: 1, linkedInto: slot.cast(to: PPointer<UInt64>.self)) { $0[0] = value }
                            acked.withLock { $0[k] = value }
                        } else {
                            try pool.free(linkedFrom: slot)
                            acked.withLock { $0[k] = 0 }
                        }
                    } catch {
                        failure.withLock { $0 = "\(error)" }
                    }
                    turn.store(2 * step + me + 1, ordering: .releasing)
                }
            }
            let b = Thread { run(1) }
            b.start()
            run(0)
            b.join()
        }
        #expect(failure.withLock { $0 } == nil)
        #expect(problems.isEmpty, "\(problems.count) bad crash images of \(images): \(problems.prefix(5))")
        print("two lanes, one bitmap word: \(images) crash images checked")
    }
}
