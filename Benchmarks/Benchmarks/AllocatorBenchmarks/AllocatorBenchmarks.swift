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

private struct BenchRoot: BitwiseCopyable {
    var slot: PRawPointer
    var fields: PPointer<UInt64>
    var map: PersistentSortedDictionary<Int, Int>.Ref
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
