// The PersistentHeap side of Benchmarks/compare: the same workloads and JSON lines as
// pmdk/pmdk_bench.c.
//
//   pheap-compare WORKLOAD pheap|pheap-noflush POOLDIR [--reps N]
//   pheap-compare table FILE        render JSON lines as a table with ratios
//
// `pheap` uses the cache-line flush domain (clwb + sfence); `pheap-noflush` the fence-only
// domain, measuring the software path alone.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PersistentHeap
import Synchronization

func nowNS() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) * 1e9 + Double(t.tv_nsec)
}

func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func fail(_ message: String) -> Never {
    let b = Array("pheap-compare: \(message)\n".utf8)
    _ = b.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(1)
}

/// One result line. `fences` counts every fence, checkpoints' included; `checkpointFences` is
/// the checkpoints' share (amortized over the operations).
func emit(_ workload: String, _ system: String, ns: Double, fences: Double, lines: Double, checkpointFences: Double = 0,
          bytesPerObject: Double? = nil, openMS: Double? = nil, extra: String = "") {
    var s = "{\"workload\":\"\(workload)\",\"system\":\"\(system)\",\"ns_per_op\":\(fmt(ns, 1)),"
    s += "\"fences_per_op\":\(fmt(fences, 2)),\"lines_per_op\":\(fmt(lines, 2)),\"checkpoint_fences_per_op\":\(fmt(checkpointFences, 3))"
    s += extra
    if let bytesPerObject { s += ",\"bytes_per_object\":\(fmt(bytesPerObject, 1))" }
    if let openMS { s += ",\"open_ms\":\(fmt(openMS, 3))" }
    print(s + "}")
}

func fmt(_ x: Double, _ digits: Int) -> String {
    var buf = [CChar](repeating: 0, count: 64)
    let n = withVaList([x]) { vsnprintf(&buf, 64, "%.\(digits)f", $0) }
    return String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Runs `body` (which performs `ops` operations) and returns (ns per op, counters delta).
func measure(ops: Int, _ body: () throws -> Void) rethrows -> (Double, PersistenceCounters) {
    let c0 = PersistenceCounters.current
    let t = nowNS()
    try body()
    let ns = (nowNS() - t) / Double(ops)
    return (ns, PersistenceCounters.current.since(c0))
}

struct Root: BitwiseCopyable {
    var slot: PRawPointer
    var array: PPointer<PRawPointer>
    var count: Int
}

let args = CommandLine.arguments
if args.count >= 2 && args[1] == "selftest" {
    exit(selfTest() ? 0 : 1)
}
if args.count >= 3 && args[1] == "table" {
    renderTable(path: args[2])
    exit(0)
}
guard args.count >= 4 else { fail("usage: pheap-compare WORKLOAD pheap|pheap-noflush POOLDIR [--reps N]") }
let workload = args[1], system = args[2], dir = args[3]
let reps = args.count > 5 && args[4] == "--reps" ? Int(args[5]) ?? 5 : 5
let durability: PoolOptions.Durability = system == "pheap-noflush" ? .fenceOnly : .cacheLineFlush

func createPool(_ name: String, size: Int) throws -> Pool {
    let path = "\(dir)/\(name)"
    unlink(path)
    return try Pool.create(path: path, size: size, layout: "bench", options: PoolOptions(durability: durability, maxSize: size))
}

do {
    switch workload {
    case "pair64", "pair256", "pair4k":
        let size = workload == "pair64" ? 64 : workload == "pair256" ? 256 : 4096
        let pool = try createPool("pheap-pair.pool", size: 64 << 20)
        let n = 1_000_000
        for _ in 0..<(n / 10) { try pool.free(try pool.allocate(bytes: size)) }
        var samples: [Double] = [], total = PersistenceCounters(flushedLines: 0, fences: 0, msyncCalls: 0)
        for _ in 0..<reps {
            let (ns, c) = try measure(ops: n) {
                for _ in 0..<n { try pool.free(try pool.allocate(bytes: size)) }
            }
            samples.append(ns)
            total.fences += c.fences
            total.flushedLines += c.flushedLines
            total.checkpointFences += c.checkpointFences
        }
        let ops = Double(n * reps)
        emit(workload, system, ns: median(samples), fences: Double(total.fences) / ops, lines: Double(total.flushedLines) / ops,
             checkpointFences: Double(total.checkpointFences) / ops)
        try pool.close()
        unlink("\(dir)/pheap-pair.pool")

    case "link64":
        let pool = try createPool("pheap-link.pool", size: 64 << 20)
        let slot = try pool.root(Root.self).field(\.slot)
        let n = 300_000
        for _ in 0..<(n / 10) { _ = try pool.allocate(bytes: 64, linkedInto: slot); try pool.free(linkedFrom: slot) }
        var samples: [Double] = [], fences = 0.0, lines = 0.0, checkpointFences = 0.0
        for _ in 0..<reps {
            let (ns, c) = try measure(ops: n) {
                for _ in 0..<n {
                    _ = try pool.allocate(bytes: 64, zeroed: false, linkedInto: slot)
                    try pool.free(linkedFrom: slot)
                }
            }
            samples.append(ns)
            fences += Double(c.fences)
            lines += Double(c.flushedLines)
            checkpointFences += Double(c.checkpointFences)
        }
        emit(workload, system, ns: median(samples), fences: fences / Double(n * reps), lines: lines / Double(n * reps),
             checkpointFences: checkpointFences / Double(n * reps))
        try pool.close()
        unlink("\(dir)/pheap-link.pool")

    case "random":
        var samples: [Double] = [], fences = 0.0, lines = 0.0, checkpointFences = 0.0
        let liveTarget = 100_000, n = 1_000_000
        for _ in 0..<reps {
            let pool = try createPool("pheap-random.pool", size: 1 << 30)
            var rng = SplitMix(state: 12345)
            var live: [PRawPointer] = []
            live.reserveCapacity(liveTarget * 2)
            while live.count < liveTarget { live.append(try pool.allocate(bytes: 16 + Int(rng.next() % 4081))) }
            let (ns, c) = try measure(ops: n) {
                for _ in 0..<n {
                    if rng.next() & 1 == 1 && !live.isEmpty {
                        let k = Int(rng.next() % UInt64(live.count))
                        try pool.free(live[k])
                        live[k] = live[live.count - 1]
                        live.removeLast()
                    } else {
                        live.append(try pool.allocate(bytes: 16 + Int(rng.next() % 4081)))
                    }
                }
            }
            samples.append(ns)
            fences += Double(c.fences)
            lines += Double(c.flushedLines)
            checkpointFences += Double(c.checkpointFences)
            try pool.close()
            unlink("\(dir)/pheap-random.pool")
        }
        emit(workload, system, ns: median(samples), fences: fences / Double(n * reps), lines: lines / Double(n * reps),
             checkpointFences: checkpointFences / Double(n * reps))

    case "fill1m":
        let pool = try createPool("pheap-fill.pool", size: 1 << 30)
        let root = try pool.root(Root.self)
        let n = 1_000_000
        let array = try pool.allocate(PRawPointer.self, count: n, linkedInto: root.field(\.array))
        let before = try pool.stats()
        let (ns, c) = try measure(ops: n) {
            for i in 0..<n { _ = try pool.allocate(bytes: 64, zeroed: false, linkedInto: array.advanced(by: i)) }
        }
        let after = try pool.stats()
        try pool.store(n, at: root.field(\.count))
        let used = Double((after.heapSize - after.freeBytes) - (before.heapSize - before.freeBytes))
        try pool.close()
        emit(workload, system, ns: ns, fences: Double(c.fences) / Double(n), lines: Double(c.flushedLines) / Double(n),
             checkpointFences: Double(c.checkpointFences) / Double(n), bytesPerObject: used / Double(n))

    case "reopen1m":
        let path = "\(dir)/pheap-fill.pool"
        let t = nowNS()
        let pool = try Pool.open(path: path, layout: "bench", options: PoolOptions(durability: durability))
        let first = try pool.allocate(bytes: 64)
        let ms = (nowNS() - t) / 1e6
        let count = try pool.load(try pool.root(Root.self).field(\.count))
        guard count == 1_000_000 else { fail("the fill1m pool holds \(count) objects") }
        try pool.free(first)
        try pool.close()
        unlink(path)
        emit("fill1m", system, ns: ms * 1e6, fences: 0, lines: 0, openMS: ms)

    case "crashfull":
        // Every lane's log filled (62 linked operations per lane, from one thread per lane),
        // then the process ends without closing the pool: what a crash leaves to recover.
        let lanes = 16
        let path = "\(dir)/pheap-crashfull.pool"
        unlink(path)
        let pool = try Pool.create(path: path, size: 64 << 20, layout: "bench",
                                   options: PoolOptions(durability: durability, laneCount: lanes + 1))
        let table = try pool.allocate(PRawPointer.self, count: lanes * 62, linkedInto: try pool.root(Root.self).field(\.array))
        try pool.checkpoint()
        let done = Atomic<Int>(0)
        let threads = (0..<lanes).map { t in
            BenchThread {
                for k in 0..<62 { _ = try! pool.allocate(bytes: 64, zeroed: false, linkedInto: table.advanced(by: t * 62 + k)) }
                done.add(1, ordering: .acquiringAndReleasing)
                while done.load(ordering: .acquiring) < lanes { sched_yield() }
            }
        }
        threads.forEach { $0.start() }
        threads.forEach { $0.join() }
        _exit(0)

    case "recoverfull":
        let path = "\(dir)/pheap-crashfull.pool"
        let t = nowNS()
        let pool = try Pool.open(path: path, layout: "bench", options: PoolOptions(durability: durability))
        let ms = (nowNS() - t) / 1e6
        let replayed = pool.recoveredOperations
        guard replayed >= 16 * 62 else { fail("recovery replayed \(replayed) records, expected at least \(16 * 62)") }
        try pool.close()
        unlink(path)
        emit("recover-full", system, ns: ms * 1e6, fences: 0, lines: 0, openMS: ms, extra: ",\"records_replayed\":\(replayed)")

    case "pair64-2t":
        let pool = try createPool("pheap-2t.pool", size: 128 << 20)
        let n = 1_000_000
        var samples: [Double] = []
        for _ in 0..<reps {
            let shared = SharedSlots()
            let threads = (0..<2).map { k in
                BenchThread {
                    while shared.go.load(ordering: .acquiring) == 0 {}
                    let t = nowNS()
                    for _ in 0..<n { try! pool.free(try! pool.allocate(bytes: 64)) }
                    shared.results.withLock { $0[k] = (nowNS() - t) / Double(n) }
                }
            }
            threads.forEach { $0.start() }
            shared.go.store(1, ordering: .releasing)
            threads.forEach { $0.join() }
            samples.append(shared.results.withLock { ($0[0] + $0[1]) / 2 })
        }
        let (_, c) = try measure(ops: 10_000) { for _ in 0..<10_000 { try pool.free(try pool.allocate(bytes: 64)) } }
        emit(workload, system, ns: median(samples), fences: Double(c.fences) / 1e4, lines: Double(c.flushedLines) / 1e4,
             checkpointFences: Double(c.checkpointFences) / 1e4)
        try pool.close()
        unlink("\(dir)/pheap-2t.pool")

    default:
        if workload.hasPrefix("tx-") {
            try runTransactionWorkload(workload, system: system, durability: durability)
        } else {
            fail("unknown workload \(workload)")
        }
    }
} catch {
    fail("\(workload): \(error)")
}

/// SplitMix64, the same sequence as pmdk_bench.c's rnd().
struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

