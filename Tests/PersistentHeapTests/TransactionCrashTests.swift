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

/// The root of the transaction crash workloads.
struct TxRoot: BitwiseCopyable {
    var accounts: PPointer<Int>      // `accountCount` balances
    var transfers: Int               // committed transfers
    var list: PPointer<ListNode>     // a list rebuilt in transactions
    var listCount: Int
    var listSum: Int
    var big: PPointer<UInt64>        // a large array rewritten whole (log extension)
    var bigGeneration: UInt64
}

struct ListNode: BitwiseCopyable {
    var value: Int
    var next: PPointer<ListNode>
}

let accountCount = 16
let bigWords = 40_000  // 320 KB: far beyond a lane's log

@Suite("Transaction crash consistency")
struct TransactionCrashTests {
    /// Balances after each committed transfer (index = number of transfers), shared with the hook.
    final class Model: @unchecked Sendable {
        let lock = Mutex<Void>(())
        var states: [[Int]] = []
        var committed = 0
        var listLengths: [Int] = [0]      // after each committed list transaction
        var bigGenerations: [UInt64] = [0]
        func snapshot() -> ([[Int]], Int) { lock.withLock { _ in (states, committed) } }
    }

    static func verify(_ p: Pool, _ model: Model) throws -> [String] {
        var out = try p.check().findings
        let root = try p.root(TxRoot.self)
        let r = try p.load(root)
        let (states, committed) = model.snapshot()
        // (a) transfers: the balances are exactly the state after r.transfers transfers,
        //     and that is the last completed transfer or the one in flight.
        if !r.accounts.isNull {
            let balances = try (0..<accountCount).map { try p.load(r.accounts.advanced(by: $0)) }
            if balances.reduce(0, +) != accountCount * 1000 { out.append("sum \(balances.reduce(0, +)) is not \(accountCount * 1000)") }
            if r.transfers < committed || r.transfers > committed + 1 {
                out.append("\(r.transfers) transfers on the media, \(committed) completed")
            } else if r.transfers < states.count && balances != states[r.transfers] {
                out.append("balances are not those after transfer \(r.transfers)")
            }
        }
        // (b) the list: count and sum fields agree with the nodes; every node allocated.
        var n = 0, sum = 0, node = r.list
        while !node.isNull && n <= 100_000 {
            guard p.isAllocated(node) else { out.append("list node \(node) is free"); break }
            let v = try p.load(node)
            n += 1; sum += v.value; node = v.next
        }
        if n != r.listCount || sum != r.listSum { out.append("list has \(n) nodes summing \(sum); root says \(r.listCount), \(r.listSum)") }
        // (d) the big array: one generation everywhere.
        if !r.big.isNull {
            for k in stride(from: 0, to: bigWords, by: 1000) {
                let w = try p.load(r.big.advanced(by: k))
                if w != r.bigGeneration &* 1_000_003 &+ UInt64(k) { out.append("big array word \(k) is from another generation"); break }
            }
        }
        // No leak: root, accounts, big array, list nodes.
        let expected = 1 + (r.accounts.isNull ? 0 : 1) + (r.big.isNull ? 0 : 1) + n
        let objects = try p.stats().objects
        if objects != expected { out.append("leak: \(objects) objects, \(expected) reachable") }
        return out
    }

    @Test("simulated power failure at every fence of transactional workloads: transfers, list rebuilds, nested and aborted transactions, large transactions",
          arguments: crashSeeds(31, normal: 2, long: 18))
    func transactional(seed: UInt64) throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "crash",
                                            options: PoolOptions(maxSize: 8 << 20, growthStep: 512 << 10, laneCount: 2))
        let root = try pool.root(TxRoot.self)
        let model = Model()
        var balances = [Int](repeating: 1000, count: accountCount)
        model.states = [balances]
        try pool.transaction { tx in
            let accounts = try tx.allocate(Int.self, count: accountCount, zeroed: false)
            for k in 0..<accountCount { try tx.write(1000, to: accounts.advanced(by: k)) }
            try tx.write(accounts, to: root.field(\.accounts))
        }
        var rng = RepeatableRandomNumberGenerator(seed: seed)
        let steps = longTests ? 600 : 90
        let (images, problems) = try crashAtEveryFence(pool, seedBase: seed << 40, verify: { p, _ in try Self.verify(p, model) }) {
            for step in 0..<steps {
                switch Int.random(in: 0..<10, using: &rng) {
                case 0..<4:
                    // A transfer; every third one is split into nested transactions.
                    let from = Int.random(in: 0..<accountCount, using: &rng)
                    let to = (from + Int.random(in: 1..<accountCount, using: &rng)) % accountCount
                    let amount = Int.random(in: 1...200, using: &rng)
                    let accounts = try pool.load(root).accounts
                    try pool.transaction { tx in
                        try tx.update(accounts.advanced(by: from)) { $0 -= amount }
                        if step % 3 == 0 {
                            try pool.transaction { inner in try inner.update(accounts.advanced(by: to)) { $0 += amount } }
                        } else {
                            try tx.update(accounts.advanced(by: to)) { $0 += amount }
                        }
                        try tx.update(root.field(\.transfers)) { $0 += 1 }
                    }
                    balances[from] -= amount
                    balances[to] += amount
                    model.lock.withLock { _ in model.states.append(balances); model.committed += 1 }
                case 4:
                    // An aborted transfer (thrown after writing, also from a nested transaction).
                    let accounts = try pool.load(root).accounts
                    _ = try? pool.transaction { tx in
                        try tx.update(accounts) { $0 -= 500 }
                        try pool.transaction { _ in throw TestFailure(tag: step) }
                    }
                case 5..<8:
                    // Rebuild the list: push up to three nodes, pop up to two (freeing them).
                    let pushes = Int.random(in: 0...3, using: &rng), pops = Int.random(in: 0...2, using: &rng)
                    try pool.transaction { tx in
                        var count = try tx.read(root.field(\.listCount)), sum = try tx.read(root.field(\.listSum))
                        for _ in 0..<pushes {
                            let v = Int.random(in: 1...1000, using: &rng)
                            let head = try tx.read(root.field(\.list))
                            _ = try tx.allocate(ListNode(value: v, next: head), linkedInto: root.field(\.list))
                            count += 1; sum += v
                        }
                        for _ in 0..<pops {
                            let head = try tx.read(root.field(\.list))
                            if head.isNull { break }
                            let node = try tx.read(head)
                            try tx.write(node.next, to: root.field(\.list))
                            try tx.free(head)
                            count -= 1; sum -= node.value
                        }
                        try tx.write(count, to: root.field(\.listCount))
                        try tx.write(sum, to: root.field(\.listSum))
                    }
                default:
                    // A large transaction: rewrite the whole big array (allocated on first use).
                    try pool.transaction { tx in
                        var big = try tx.read(root.field(\.big))
                        if big.isNull {
                            big = try tx.allocate(UInt64.self, count: bigWords, zeroed: false)
                            try tx.write(big, to: root.field(\.big))
                        }
                        let g = try tx.read(root.field(\.bigGeneration)) + 1
                        try tx.withMutableBytes(of: big.raw, count: bigWords * 8) { buf in
                            let w = buf.bindMemory(to: UInt64.self)
                            for k in 0..<bigWords { w[k] = g &* 1_000_003 &+ UInt64(k) }
                        }
                        try tx.write(g, to: root.field(\.bigGeneration))
                    }
                }
            }
        }
        #expect(problems.isEmpty, "\(problems.count) bad crash images of \(images): \(problems.prefix(4))")
        #expect(try Self.verify(pool, model).isEmpty)
        print("transactional workload seed \(seed): \(images) crash images checked")
    }

    @Test("a committed value survives a crash image taken right after commit returns; an abort leaves the durable image untouched")
    func commitIsDurable() throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "crash")
        let root = try pool.root(TxRoot.self)
        for k in 1...20 {
            try pool.transaction { tx in try tx.write(k, to: root.field(\.transfers)) }
            for p in [0.0, 1.0] {
                let img = pool.simulatedMedia!.crashImage(seed: UInt64(k), evictionProbability: p)
                let again = try Pool.openSimulated(image: img, layout: "crash")
                #expect(try again.load(try again.root(TxRoot.self)).transfers == k)
            }
        }
        let durable = pool.simulatedMedia!.durableImage()
        _ = try? pool.transaction { tx in
            try tx.write(999, to: root.field(\.transfers))
            throw TestFailure(tag: 0)
        }
        #expect(pool.simulatedMedia!.durableImage() == durable)
        #expect(try pool.load(root).transfers == 20)
    }

    @Test("real kills: a process running a stream of transfers is SIGKILLed; the sum holds and every acknowledged transfer survives")
    func realKills() throws {
        let d = ScratchDirectory("txkills")
        var rng = RepeatableRandomNumberGenerator(seed: 5)
        let rounds = longTests ? 400 : 10
        var lastSeen = [0, 0]
        let shm = "/dev/shm/pheap-txkill-\(getpid()).pool"
        defer { unlink(shm) }
        for round in 0..<rounds {
            // Alternate the disk (msync domain) and tmpfs with the flush domain forced.
            let onTmpfs = round % 2 == 1
            let path = onTmpfs ? shm : d.file("bank.pool")
            let child = try ChildProcess(executable: siblingExecutable("pheap-crash-helper"), arguments: ["transfers", path, "\(round)"],
                                         environment: onTmpfs ? ["PHEAP_FORCE_PMEM": "1"] : [:])
            _ = try child.waitForLine { $0.hasPrefix("READY") }
            var acked = 0
            for _ in 0..<Int.random(in: 1...80, using: &rng) {
                let line = try child.waitForLine { $0.hasPrefix("TX") }
                acked = Int(line.split(separator: " ")[1])!
            }
            usleep(UInt32.random(in: 0...300, using: &rng))
            child.kill()
            #expect(child.wasKilled())
            // Every acknowledgement printed before the kill.
            while let line = try child.readLine(timeout: 5) {
                if line.hasPrefix("TX"), let n = Int(line.split(separator: " ")[1]) { acked = n }
            }
            let pool = try Pool.open(path: path, layout: "crash-bank")
            let bank = try pool.load(try pool.root(Bank.self))
            let sum = try (0..<bank.count).reduce(0) { $0 + (try pool.load(bank.accounts.advanced(by: $1))).balance }
            #expect(sum == bank.count * 1000, "round \(round): the sum is \(sum)")
            // The acknowledged transfers, and at most the one in flight.
            #expect(bank.transfers == acked || bank.transfers == acked + 1,
                    "round \(round): \(acked) transfers acknowledged, \(bank.transfers) found")
            #expect(bank.transfers >= lastSeen[round % 2])
            lastSeen[round % 2] = bank.transfers
            expectConsistent(pool)
            try pool.close()
        }
        print("transaction kills: \(rounds) kills, \(lastSeen[0] + lastSeen[1]) transfers, sum intact and every acknowledged transfer present after each")
    }
}
