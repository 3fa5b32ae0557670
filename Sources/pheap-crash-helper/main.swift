// A helper process for crash tests: it runs a workload on a pool file, reports progress on
// standard output (unbuffered, one line per durable step), and is killed by the test.
//
//   pheap-crash-helper hold PATH LAYOUT          open the pool, print READY, wait forever
//   pheap-crash-helper counter PATH              loop: root.count += 1, persist, print "PERSISTED n"
//   pheap-crash-helper workload PATH SEED [OPS]  random allocate/free/link workload (see Workload.swift)
//   pheap-crash-helper transfers PATH SEED       transactions between accounts, "TX n" after each
//   pheap-crash-helper slots PATH                open (recovering) the workload's pool, print "SLOT i id" per slot
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PersistentHeap
import PHeapTestSupport

func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

func die(_ message: String) -> Never {
    let bytes = Array(("pheap-crash-helper: " + message + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

/// The root of the counter workload.
struct CounterRoot: BitwiseCopyable {
    var count: Int
    var check: Int  // always count * 7: a torn update would break it
}

func openOrCreate(_ path: String, layout: String, size: Int = 4 << 20) throws -> Pool {
    if access(path, F_OK) == 0 { return try Pool.open(path: path, layout: layout) }
    return try Pool.create(path: path, size: size, layout: layout)
}

let args = CommandLine.arguments
guard args.count >= 3 else { die("usage: pheap-crash-helper hold|counter|workload PATH ...") }
do {
    switch args[1] {
    case "hold":
        let pool = try Pool.open(path: args[2], layout: args.count > 3 ? args[3] : "")
        say("READY \(pool.previousShutdownWasClean)")
        while true { sleep(60) }
    case "counter":
        let pool = try openOrCreate(args[2], layout: "crash-counter")
        let root = try pool.root(CounterRoot.self)
        var n = try pool.load(root).count
        say("START \(n)")
        while true {
            n += 1
            // One 8-byte word per store: each store is atomic; `check` trails `count`.
            try pool.store(n, at: root.field(\.count))
            try pool.store(n * 7, at: root.field(\.check))
            say("PERSISTED \(n)")
        }
    case "slots":
        let pool = try Pool.open(path: args[2], layout: "crash-workload")
        for (i, id) in try LinkWorkload.slotIDs(pool).enumerated() { say("SLOT \(i) \(id)") }
        say("RECOVERED \(pool.recoveredOperations)")
        try pool.close()
    case "transfers":
        try runTransfers(path: args[2], seed: args.count > 3 ? UInt64(args[3]) ?? 1 : 1)
    case "workload":
        guard args.count >= 4, let seed = UInt64(args[3]) else { die("workload PATH SEED [OPS]") }
        let ops = args.count > 4 ? Int(args[4]) ?? Int.max : Int.max
        try runWorkload(path: args[2], seed: seed, operations: ops)
    default:
        die("unknown command \(args[1])")
    }
} catch {
    die("\(error)")
}
