// ordo-one/benchmark suites: what one operation costs in wall-clock time and in mallocs (counted
// by the MallocInterposer trait), with percentiles and baselines:
//
//   cd Benchmarks && swift package benchmark                       # run all, print the table
//   swift package benchmark baseline update main                   # record a baseline …
//   swift package benchmark baseline compare main                  # … and compare against it
//
// The side-by-side comparison with PMDK and glibc is `./compare`; these suites guard the
// properties the hot paths promise — in particular, no heap allocation per operation.
// Pools live on /dev/shm with the cache-line flush domain (real clwb + sfence), as in ./compare.
#if canImport(Glibc)
import Glibc
#endif
import Benchmark
import PersistentCollections
import PersistentHeap
import Synchronization

private struct BenchRoot: BitwiseCopyable {
    var slot: PRawPointer
    var fields: PPointer<UInt64>
    var map: PersistentSortedDictionary<Int, Int>.Ref
    var strings: PersistentSortedDictionary<String, String>.Ref
}

/// A map of `n` Int keys (scattered order) filled in bulk.
private func filledMap(_ pool: Pool, _ root: PPointer<BenchRoot>, _ n: Int) throws -> PersistentSortedDictionary<Int, Int> {
    let map = try PersistentSortedDictionary<Int, Int>.open(pool, at: root.field(\.map))
    var k = 0
    for _ in 0..<(n / 10_000) {
        try map.insert(contentsOf: (0..<10_000).map { _ in k &+= 0x9E37_79B9; return (key: k % 1_000_000_007, value: k) })
    }
    return map
}

/// A fresh pool for one benchmark, removed when the benchmark is done.
private func withPool(_ name: String, _ body: (Pool, PPointer<BenchRoot>) throws -> Void) throws {
    let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    let path = "\(dir)/pheap-ordo-\(getpid())-\(name).pool"
    unlink(path)
    defer { unlink(path) }
    let pool = try Pool.create(path: path, size: 64 << 20, layout: "bench",
                               options: PoolOptions(durability: dir == "/dev/shm" ? .cacheLineFlush : .automatic))
    defer { try? pool.close() }
    try body(pool, try pool.root(BenchRoot.self))
}

/// Pools built once per benchmark and reused by all its samples (ordo calls a benchmark's closure
/// once per sample: a map filled inside it would be rebuilt for every sample). Each file is
/// unlinked as soon as it is created; the mapping keeps the pool alive until the process ends.
private let sharedPools = Mutex<[String: Pool]>([:])

private func sharedPool(_ name: String, build: (Pool, PPointer<BenchRoot>) throws -> Void) throws -> (Pool, PPointer<BenchRoot>) {
    if let pool = sharedPools.withLock({ $0[name] }) { return (pool, try pool.root(BenchRoot.self)) }
    let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    let path = "\(dir)/pheap-ordo-\(getpid())-\(name).pool"
    unlink(path)
    let pool = try Pool.create(path: path, size: 64 << 20, layout: "bench",
                               options: PoolOptions(durability: dir == "/dev/shm" ? .cacheLineFlush : .automatic))
    unlink(path)
    let root = try pool.root(BenchRoot.self)
    try build(pool, root)
    sharedPools.withLock { $0[name] = pool }
    return (pool, root)
}

private let metrics: [BenchmarkMetric] = [.wallClock, .throughput, .mallocCountTotal]

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: metrics, warmupIterations: 1_000, scalingFactor: .kilo,
                                           maxDuration: .seconds(2))

    Benchmark("allocate+free 64 B") { benchmark in
        try withPool("pair64") { pool, _ in
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { try pool.free(try pool.allocate(bytes: 64)) }
            benchmark.stopMeasurement()
        }
    }

    Benchmark("allocate+free 4 KiB") { benchmark in
        try withPool("pair4k") { pool, _ in
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { try pool.free(try pool.allocate(bytes: 4096)) }
            benchmark.stopMeasurement()
        }
    }

    Benchmark("allocate-and-link + free-and-unlink 64 B") { benchmark in
        try withPool("link64") { pool, root in
            let slot = root.field(\.slot)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                _ = try pool.allocate(bytes: 64, zeroed: false, linkedInto: slot)
                try pool.free(linkedFrom: slot)
            }
            benchmark.stopMeasurement()
        }
    }

    Benchmark("transaction: empty") { benchmark in
        try withPool("tx-empty") { pool, _ in
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { try pool.transaction { _ in } }
            benchmark.stopMeasurement()
        }
    }

    Benchmark("transaction: write 64 B") { benchmark in
        try withPool("tx-write64") { pool, _ in
            let fields = try pool.allocate(UInt64.self, count: 8, zeroed: true)
            var k: UInt64 = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                k &+= 1
                try pool.transaction { tx in
                    try tx.withMutableBytes(of: fields.raw, count: 64) { buf in
                        for w in 0..<8 { buf.storeBytes(of: k &+ UInt64(w), toByteOffset: w * 8, as: UInt64.self) }
                    }
                }
            }
            benchmark.stopMeasurement()
        }
    }

    Benchmark("sorted dictionary: lookup Int→Int (100k keys)") { benchmark in
        let (pool, root) = try sharedPool("lookup") { pool, root in _ = try filledMap(pool, root, 100_000) }
        do {
            let map = try PersistentSortedDictionary<Int, Int>.open(pool, at: root.field(\.map))
            var k = 0, found = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                k &+= 0x9E37_79B9
                if try map.value(forKey: k % 1_000_000_007) != nil { found += 1 }
            }
            benchmark.stopMeasurement()
            blackHole(found)
        }
    }

    Benchmark("sorted dictionary: zero-copy lookup String→String") { benchmark in
        let keys = (0..<20_000).map { i -> String in
            let h = String(UInt64(truncatingIfNeeded: i &* 0x9E37_79B9), radix: 16)
            return String(repeating: "0", count: 16 - h.count) + h
        }
        let (pool, root) = try sharedPool("lookup-str") { pool, root in
            try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.strings))
                .insert(contentsOf: keys.map { (key: $0, value: String(repeating: "v", count: 100)) })
        }
        do {
            let map = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.strings))
            var i = 0, bytes = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                i = (i &+ 7919) % keys.count
                bytes &+= try map.withValue(forKey: keys[i]) { $0.count } ?? 0
            }
            benchmark.stopMeasurement()
            blackHole(bytes)
        }
    }

    Benchmark("sorted dictionary: scan 100 entries in place") { benchmark in
        let (pool, root) = try sharedPool("scan") { pool, root in _ = try filledMap(pool, root, 100_000) }
        do {
            let map = try PersistentSortedDictionary<Int, Int>.open(pool, at: root.field(\.map))
            var k = 0, seen = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                k &+= 0x9E37_79B9
                var n = 0
                try map.forEachEncoded(from: k % 1_000_000_007) { _, v in seen &+= v.count; n += 1; return n < 100 }
            }
            benchmark.stopMeasurement()
            blackHole(seen)
        }
    }

    Benchmark("sorted dictionary: remove + insert Int→Int") { benchmark in
        let (pool, root) = try sharedPool("remove") { pool, root in _ = try filledMap(pool, root, 100_000) }
        do {
            let map = try PersistentSortedDictionary<Int, Int>.open(pool, at: root.field(\.map))
            var k = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                k &+= 0x9E37_79B9
                let key = k % 1_000_000_007
                if try map.removeValue(forKey: key) == nil { try map.updateValue(key, forKey: key) }
            }
            benchmark.stopMeasurement()
        }
    }

    Benchmark("sorted dictionary: insert Int→Int") { benchmark in
        try withPool("map") { pool, root in
            let map = try PersistentSortedDictionary<Int, Int>.open(pool, at: root.field(\.map))
            var k = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                k &+= 0x9E37_79B9   // distinct keys in scattered order
                try map.updateValue(k, forKey: k)
            }
            benchmark.stopMeasurement()
        }
    }
}
