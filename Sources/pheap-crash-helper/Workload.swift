import PersistentHeap
import PHeapTestSupport

/// Runs the linked allocator workload on the pool at `path` (created on first use), printing
/// "OP n <what>" after each durable operation, until killed or `operations` are done.
func runWorkload(path: String, seed: UInt64, operations: Int) throws {
    let pool = try openOrCreate(path, layout: "crash-workload", size: 2 << 20)
    let root = try LinkWorkload.setUp(pool, slots: 64)
    var w = LinkWorkload(seed: seed)
    say("READY \(pool.previousShutdownWasClean)")
    var n = 0
    while n < operations {
        let what = try w.step(pool, root: root)
        n += 1
        say("OP \(n) \(what)")
    }
    try pool.close()
    say("DONE")
}
