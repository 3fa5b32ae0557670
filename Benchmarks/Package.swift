// swift-tools-version: 6.1
import PackageDescription

// Benchmarks live in their own package so the library's users never build them.
//   swift package benchmark          ordo-one/benchmark suites (time percentiles, mallocs per op)
//   ./compare-kv [--json]            the key-value store vs SQLite (GRDB) and LMDB
//   ./compare [--json]               PersistentHeap vs PMDK libpmemobj vs glibc, side by side
// A path dependency is identified by its directory name, which depends on where the
// repository was cloned: derive it.
let root = String(Context.packageDirectory.split(separator: "/").dropLast().last ?? "main").lowercased()

let package = Package(
    name: "PersistentHeapBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "../"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    ],
    targets: [
        // The PersistentHeap side of ./compare (same workloads and JSON as pmdk/pmdk_bench.c).
        .executableTarget(
            name: "pheap-compare",
            dependencies: [.product(name: "PersistentHeap", package: root)],
            path: "Sources/pheap-compare"
        ),
        // The PersistentHeap, SQLite (GRDB) and Swift Dictionary side of ./compare-kv.
        .executableTarget(
            name: "kv-compare",
            dependencies: [
                .product(name: "PersistentHeap", package: root),
                .product(name: "PersistentCollections", package: root),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Sources/kv-compare"
        ),
        // Crash-image exploration speed (PersistentHeapTesting), issue #13.
        .executableTarget(
            name: "crash-explore",
            dependencies: [
                .product(name: "PersistentHeap", package: root),
                .product(name: "PersistentHeapTesting", package: root),
            ],
            path: "Sources/crash-explore"
        ),
        // The README's "what it costs" table (./cost-table builds it debug and release).
        .executableTarget(
            name: "cost-table",
            dependencies: [
                .product(name: "PersistentHeap", package: root),
                .product(name: "PersistentCollections", package: root),
            ],
            path: "Sources/cost-table"
        ),
        .executableTarget(
            name: "AllocatorBenchmarks",
            dependencies: [
                .product(name: "PersistentHeap", package: root),
                .product(name: "PersistentCollections", package: root),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/AllocatorBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
