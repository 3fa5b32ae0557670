import PersistentHeap
import PHeapTestSupport

/// Runs the linked allocator workload on the pool at `path` (created on first use), printing
/// "OP n slot i id k <what>" after each durable operation (the acknowledgement: slot i now holds
/// object k, 0 = empty), until killed or `operations` are done.
func runWorkload(path: String, seed: UInt64, operations: Int) throws {
    let pool = try openOrCreate(path, layout: "crash-workload", size: 2 << 20)
    let root = try LinkWorkload.setUp(pool, slots: 64)
    var w = LinkWorkload(seed: seed)
    say("READY \(pool.previousShutdownWasClean)")
    var n = 0
    while n < operations {
        let step = try w.step(pool, root: root)
        n += 1
        say("OP \(n) \(step)")
    }
    try pool.close()
    say("DONE")
}

/// The root of the transfers workload (the test reads it as `Bank`).
struct BankRoot: BitwiseCopyable {
    var accounts: PPointer<BankAccount>
    var count: Int
    var transfers: Int
}

struct BankAccount: BitwiseCopyable {
    var id: Int
    var balance: Int
    var next: PPointer<BankAccount>
}

/// Random transfers between 32 accounts, one transaction each, printing "TX n" after each commit.
func runTransfers(path: String, seed: UInt64) throws {
    let pool = try openOrCreate(path, layout: "crash-bank", size: 1 << 20)
    let root = try pool.root(BankRoot.self)
    if try pool.load(root).accounts.isNull {
        try pool.transaction { tx in
            let accounts = try tx.allocate(BankAccount.self, count: 32, zeroed: false)
            for k in 0..<32 { try tx.write(BankAccount(id: k, balance: 1000, next: .null), to: accounts.advanced(by: k)) }
            try tx.write(accounts, to: root.field(\.accounts))
            try tx.write(32, to: root.field(\.count))
        }
    }
    var rng = RepeatableRandomNumberGenerator(seed: seed)
    say("READY")
    while true {
        let r = try pool.load(root)
        let from = Int.random(in: 0..<r.count, using: &rng)
        let to = (from + Int.random(in: 1..<r.count, using: &rng)) % r.count
        let amount = Int.random(in: 1...100, using: &rng)
        let n = try pool.transaction { tx -> Int in
            try tx.update(r.accounts.advanced(by: from).field(\.balance)) { $0 -= amount }
            try tx.update(r.accounts.advanced(by: to).field(\.balance)) { $0 += amount }
            return try tx.update(root.field(\.transfers)) { $0 += 1; return $0 }
        }
        say("TX \(n)")
    }
}
