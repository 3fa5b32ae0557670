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

struct Bank: BitwiseCopyable {
    var accounts: PPointer<Account>
    var count: Int
    var transfers: Int
}

struct TestFailure: Error, Equatable { let tag: Int }

/// A value handed to another thread on purpose (to prove misuse is refused).
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

@Suite("Transactions")
struct TransactionTests {
    func pool(_ size: Int = 2 << 20) throws -> Pool {
        try Pool.createSimulated(size: size, layout: "tx", options: PoolOptions(maxSize: 64 << 20))
    }

    @Test("commit: all changes take effect; reads see the transaction's own writes")
    func commit() throws {
        let pool = try pool()
        let a = try pool.allocate(Account.self, count: 2, zeroed: true)
        let b = a.advanced(by: 1)
        let sum = try pool.transaction { tx -> Int in
            try tx.write(Account(id: 1, balance: 100, next: .null), to: a)
            try tx.update(b) { $0.id = 2; $0.balance = 50 }
            try tx.update(a.field(\.balance)) { $0 -= 30 }
            try tx.update(b.field(\.balance)) { $0 += 30 }
            #expect(try tx.read(a).balance == 70)
            #expect(pool.unsafeAddress(of: a).pointee.balance == 0, "memory is untouched before commit")
            return try tx.read(a).balance + tx.read(b).balance
        }
        #expect(sum == 150)
        #expect(try pool.load(a) == Account(id: 1, balance: 70, next: .null))
        #expect(try pool.load(b).balance == 80)
        #expect(!pool.inTransaction)
    }

    @Test("a thrown error aborts: nothing changes, in memory or on the media, and the error is rethrown")
    func abort() throws {
        let pool = try pool()
        let a = try pool.allocate(Account.self, zeroed: true)
        try pool.store(Account(id: 1, balance: 10, next: .null), at: a)
        let fences = pool.simulatedMedia!.fenceCount
        var newBlock = PPointer<Account>.null
        #expect(throws: TestFailure(tag: 7)) {
            try pool.transaction { tx in
                try tx.update(a.field(\.balance)) { $0 = 999 }
                newBlock = try tx.allocate(Account(id: 9, balance: 9, next: .null), linkedInto: a.field(\.next))
                throw TestFailure(tag: 7)
            }
        }
        #expect(try pool.load(a) == Account(id: 1, balance: 10, next: .null))
        #expect(!pool.isAllocated(newBlock), "the transaction's allocation was released")
        #expect(pool.simulatedMedia!.fenceCount == fences, "an abort spends no fence")
        #expect(try pool.check().isConsistent)
        #expect(try pool.allocate(Account.self) == newBlock, "the released block is reused")
    }

    @Test("nesting: inner transactions join the outer one; an inner error aborts the whole even if caught")
    func nesting() throws {
        let pool = try pool()
        let a = try pool.allocate(Int.self, count: 2, zeroed: true)
        try pool.transaction { tx in
            try tx.write(1, to: a)
            try pool.transaction { inner in
                try inner.write(2, to: a.advanced(by: 1))
                #expect(try inner.read(a) == 1)
            }
        }
        #expect(try pool.load(a) == 1 && pool.load(a.advanced(by: 1)) == 2)
        #expect(throws: TestFailure(tag: 1)) {
            try pool.transaction { tx in
                try tx.write(10, to: a)
                do {
                    try pool.transaction { inner in
                        try inner.write(20, to: a.advanced(by: 1))
                        throw TestFailure(tag: 1)
                    }
                } catch {
                    // Swallowed by the outer body: the transaction is still doomed.
                }
            }
        }
        #expect(try pool.load(a) == 1 && pool.load(a.advanced(by: 1)) == 2)
    }

    @Test("misuse: a transaction used after it ended, from another thread, or bypassed by a direct write")
    func misuse() throws {
        let pool = try pool()
        let a = try pool.allocate(Int.self, zeroed: true)
        var escaped: Transaction?
        try pool.transaction { tx in escaped = tx }
        expectPoolError(.transactionMisuse) { try escaped!.write(1, to: a) }
        try pool.transaction { _ in
            expectPoolError(.transactionMisuse) { try escaped!.read(a) }  // an older transaction
        }
        let result = Mutex<PoolError.Code?>(nil)
        try pool.transaction { tx in
            let box = UncheckedSendable(tx)
            let t = Thread {
                do { try box.value.write(5, to: a) } catch let e as PoolError { result.withLock { $0 = e.code } } catch {}
            }
            t.start()
            t.join()
            expectPoolError(.transactionMisuse) { try pool.store(3, at: a) }
        }
        #expect(result.withLock { $0 } == .transactionMisuse)
        #expect(try pool.load(a) == 0)
    }

    @Test("allocate, link and free inside transactions; free of a block allocated in the same transaction")
    func allocation() throws {
        let pool = try pool()
        struct List: BitwiseCopyable { var head: PPointer<Account> }
        let root = try pool.root(List.self)
        // Build a list of 50 in one transaction.
        try pool.transaction { tx in
            for i in 0..<50 {
                let head = try tx.read(root.field(\.head))
                _ = try tx.allocate(Account(id: i, balance: i * 10, next: head), linkedInto: root.field(\.head))
            }
            let temp = try tx.allocate(bytes: 100_000)  // large, then given back
            try tx.free(temp)
        }
        var n = 0, p = try pool.load(root).head
        while !p.isNull { n += 1; p = try pool.load(p).next }
        #expect(n == 50)
        // Pop ten with frees inside a transaction.
        try pool.transaction { tx in
            for _ in 0..<10 {
                let head = try tx.read(root.field(\.head))
                try tx.write(try tx.read(head).next, to: root.field(\.head))
                try tx.free(head)
            }
        }
        let report = try pool.check()
        #expect(report.isConsistent, "\(report.findings)")
        #expect(report.stats.objects == 41)
        // Double free in one transaction, and freeing something not allocated.
        let head = try pool.load(root).head
        #expect(throws: PoolError.self) {
            try pool.transaction { tx in try tx.free(head); try tx.free(head) }
        }
        #expect(pool.isAllocated(head))
        #expect(throws: PoolError.self) {
            try pool.transaction { tx in try tx.free(PRawPointer(offset: head.offset + 8)) }
        }
        // free(linkedFrom:) inside a transaction.
        try pool.transaction { tx in try tx.free(linkedFrom: root.field(\.head)) }
        #expect(!pool.isAllocated(head))
        #expect(try pool.load(root).head.isNull)
    }

    @Test("many blocks in one transaction: past the lane's short reservation list, all distinct and published; an abort gives all back")
    func manyReservations() throws {
        let pool = try pool(8 << 20)
        // 1,500 blocks of one class span more than LaneReservations.fewLimit bitmap words, and
        // more than Heap.fewReservations reservations: the dictionary and the sorted publish.
        var offsets: [UInt64] = []
        try pool.transaction { tx in
            for i in 0..<1500 { offsets.append(try tx.allocate(bytes: i % 3 == 0 ? 48 : 64).offset) }
        }
        #expect(Set(offsets).count == 1500)
        #expect(offsets.allSatisfy { pool.isAllocated(PRawPointer(offset: $0)) })
        var report = try pool.check()
        #expect(report.isConsistent, "\(report.findings)")
        #expect(report.stats.objects == 1500)
        // An aborted one of the same size publishes nothing and leaves nothing reserved.
        #expect(throws: TestFailure.self) {
            try pool.transaction { tx in
                for _ in 0..<1500 { _ = try tx.allocate(bytes: 64) }
                throw TestFailure(tag: 1)
            }
        }
        report = try pool.check()
        #expect(report.stats.objects == 1500)
        // The space it held is handed out again, by a plain allocation and by a transaction.
        let plain = try pool.allocate(bytes: 64)
        #expect(!offsets.contains(plain.offset))
        var again: [UInt64] = []
        try pool.transaction { tx in for _ in 0..<20 { again.append(try tx.allocate(bytes: 64).offset) } }
        #expect(Set(again + offsets + [plain.offset]).count == 1521)
        report = try pool.check()
        #expect(report.isConsistent, "\(report.findings)")
        #expect(report.stats.objects == 1521)
    }

    @Test("out of space in the middle of a transaction aborts it cleanly")
    func outOfSpace() throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "tx", options: PoolOptions(maxSize: 1 << 20, growthStep: 0))
        let a = try pool.allocate(Int.self, zeroed: true)
        let before = try pool.stats()
        do {
            try pool.transaction { tx in
                try tx.write(42, to: a)
                for _ in 0..<10_000 { _ = try tx.allocate(bytes: 5000) }
            }
            Issue.record("expected outOfSpace")
        } catch let e as PoolError {
            #expect(e.code == .outOfSpace)
        }
        #expect(try pool.load(a) == 0)
        let after = try pool.stats()
        #expect(after.objects == before.objects)
        #expect(try pool.check().isConsistent)
        // And the pool still works.
        try pool.transaction { tx in try tx.write(1, to: a); _ = try tx.allocate(bytes: 5000) }
        #expect(try pool.load(a) == 1)
    }

    @Test("a large transaction extends its log beyond the lane; the extension is kept for the next one and freed at close")
    func largeTransaction() throws {
        let d = ScratchDirectory("tx", memory: true)
        let path = d.file("large.pool")
        let pool = try Pool.create(path: path, size: 8 << 20, layout: "tx", options: PoolOptions(durability: .cacheLineFlush))
        let big = try pool.allocate(UInt64.self, count: 200_000, zeroed: true)  // 1.6 MB
        func fill(_ salt: UInt64) throws -> PersistenceCounters {
            let before = PersistenceCounters.current
            try pool.transaction { tx in
                try tx.withMutableView(of: big.raw, count: 200_000 * 8) { v in
                    for i in 0..<200_000 { v.store(UInt64(i) &* 2654435761 &+ salt, at: i * 8) }
                }
            }
            return PersistenceCounters.current.since(before)
        }
        // The first large transaction links an extension block (one record: one fence) and then
        // commits its own record (one fence); the second reuses the block: one fence. (The
        // block's link retires the live records first: a checkpoint, counted apart.)
        let first = try fill(0), second = try fill(1)
        #expect(first.operationFences == 2, "\(first)")
        #expect(second.operationFences == 1, "\(second)")
        for i in stride(from: 0, to: 200_000, by: 997) { #expect(try pool.load(big.advanced(by: i)) == UInt64(i) &* 2654435761 &+ 1) }
        let report = try pool.check()
        #expect(report.isConsistent, "\(report.findings)")
        #expect(report.stats.objects == 1, "the extension block is not an object")
        #expect(report.stats.logExtensions == 1 && report.stats.logExtensionBytes >= 200_000 * 8, "\(report.stats)")
        try pool.close()
        let again = try Pool.open(path: path, layout: "tx")
        let stats = try again.stats()
        #expect(stats.logExtensions == 0 && stats.objects == 1, "close() freed the extension block: \(stats)")
        #expect(try again.load(big.advanced(by: 199_999)) == 199_999 &* 2654435761 &+ 1)
        try again.close()
    }

    @Test("a crash right after a large transaction recovers its writes and frees the extension block")
    func largeTransactionCrash() throws {
        let pool = try pool(8 << 20)
        let big = try pool.allocate(UInt64.self, count: 200_000, zeroed: true)
        try pool.transaction { tx in
            try tx.withMutableView(of: big.raw, count: 200_000 * 8) { v in
                for i in 0..<200_000 { v.store(UInt64(i) &* 2654435761, at: i * 8) }
            }
        }
        let again = try Pool.openSimulated(image: pool.simulatedMedia!.crashImage(seed: 1, evictionProbability: 0), layout: "tx")
        #expect(try again.load(big.advanced(by: 199_999)) == 199_999 &* 2654435761)
        let report = try again.check()
        #expect(report.isConsistent, "\(report.findings)")
        #expect(report.stats.logExtensions == 0 && report.stats.objects == 1, "\(report.stats)")
    }

    @Test("snapshots: a range added twice is logged once; a batch of ranges costs one fence")
    func snapshots() throws {
        let d = ScratchDirectory("tx", memory: true)
        let pool = try Pool.create(path: d.file("s.pool"), size: 4 << 20, layout: "s", options: PoolOptions(durability: .cacheLineFlush))
        let fields = try pool.allocate(UInt64.self, count: 16 * 8, zeroed: true)
        try pool.transaction { tx in try tx.write(1, to: fields) }  // warm up the lane
        let before = PersistenceCounters.current
        try pool.transaction { tx in
            try tx.snapshot((0..<16).map { (fields.advanced(by: $0 * 8).raw, 8) })
            for k in 0..<16 { try tx.update(fields.advanced(by: k * 8)) { $0 += UInt64(k) } }
            try tx.snapshot(fields.raw, count: 8)  // again: no second copy
        }
        let delta = PersistenceCounters.current.since(before)
        #expect(delta.operationFences == 1, "\(delta)")
        #expect(try pool.load(fields.advanced(by: 15 * 8)) == 15)
        #expect(try pool.load(fields) == 1)
        let empty = PersistenceCounters.current
        try pool.transaction { _ in }
        #expect(PersistenceCounters.current.since(empty).fences == 0, "an empty transaction spends nothing")
        try pool.close()
    }

    @Test("a persistent mutex held when the process crashed is free after reopening")
    func mutexReset() throws {
        struct Guarded: BitwiseCopyable { var lock: PMutex; var value: Int }
        let pool = try pool()
        let g = try pool.root(Guarded.self)
        try pool.lock(g.field(\.lock))
        #expect(try !pool.tryLock(g.field(\.lock)))
        let crashed = pool.simulatedMedia!.crashImage(seed: 0, evictionProbability: 1)  // lock word on the media
        let again = try Pool.openSimulated(image: crashed, layout: "tx")
        let g2 = try again.root(Guarded.self)
        #expect(try again.tryLock(g2.field(\.lock)), "the crashed session's lock is stale")
        try again.unlock(g2.field(\.lock))
        // Two threads incrementing under the mutex.
        let threads = (0..<2).map { _ in
            Thread {
                for _ in 0..<2000 {
                    try! again.withLock(g2.field(\.lock)) {
                        try again.transaction { tx in try tx.update(g2.field(\.value)) { $0 += 1 } }
                    }
                }
            }
        }
        threads.forEach { $0.start() }
        threads.forEach { $0.join() }
        #expect(try again.load(g2).value == 4000)
    }
}
