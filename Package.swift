// swift-tools-version: 6.0
import PackageDescription

// Layers (docs/ARCHITECTURE.md §1 draws them):
//
//   CPersistentHeap          C: flush/fence instructions, CPUID, CRC-32C, atomics, the TLS record
//   PersistentHeapCore       on-media format, system calls, persistence and simulated media,
//                            PoolBytes and the other audited memory types, redo log, errors —
//                            the only module that imports the C shim or touches raw pointers
//   PersistentHeapAllocator  the heap: runs, extents, binary heaps, lanes, reservations,
//                            recovery, check (package API only)
//   PersistentHeap           Pool, pointers, transactions, PMutex (the product)
//   PersistentCollections    containers, built on PersistentHeap's public API (a product)
//   PersistentHeapMetrics    the apple/swift-metrics bridge (a product; the core does not depend on it)
let package = Package(
    name: "PersistentHeap",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PersistentHeap", targets: ["PersistentHeap"]),
        .library(name: "PersistentCollections", targets: ["PersistentCollections"]),
        .library(name: "PersistentHeapMetrics", targets: ["PersistentHeapMetrics"]),
        .library(name: "PersistentHeapTesting", targets: ["PersistentHeapTesting"]),
        .executable(name: "pheap", targets: ["pheap"]),
        .executable(name: "todo", targets: ["todo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .target(name: "CPersistentHeap"),
        .target(name: "PersistentHeapCore", dependencies: ["CPersistentHeap"]),
        .target(name: "PersistentHeapAllocator", dependencies: ["PersistentHeapCore"]),
        .target(name: "PersistentHeap", dependencies: [
            "PersistentHeapCore", "PersistentHeapAllocator", .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "PersistentCollections", dependencies: ["PersistentHeap"]),
        // Crash testing as a product: explore crash images of a user's workload (issue #13).
        .target(name: "PersistentHeapTesting", dependencies: ["PersistentHeap", "PersistentHeapCore"]),
        // The swift-metrics bridge, a product of its own: the core keeps no metrics dependency.
        .target(name: "PersistentHeapMetrics", dependencies: [
            "PersistentHeap", .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        .executableTarget(
            name: "pheap",
            dependencies: [
                "PersistentHeap", "PersistentCollections",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The README's complete example (a to-do list), also the compile test of error-handling shapes.
        .executableTarget(name: "todo", dependencies: ["PersistentHeap", "PersistentCollections"], path: "Examples/todo"),
        // A helper process for crash tests: runs a workload on a pool file and is killed.
        .executableTarget(name: "pheap-crash-helper", dependencies: ["PersistentHeap", "PHeapTestSupport"]),
        // The mutation fuzzer over real pool images (each case in a child process; CI runs it).
        .executableTarget(name: "pheap-fuzz", dependencies: ["PersistentHeap", "PersistentHeapCore", "PersistentCollections", "PHeapTestSupport"]),
        // Shared by the tests, the crash helper and the benchmarks: temporary pools,
        // a seeded random generator, process spawning.
        .target(name: "PHeapTestSupport", dependencies: ["PersistentHeap"]),
        .testTarget(
            name: "PersistentHeapTests",
            dependencies: ["PersistentHeap", "PersistentHeapCore", "PersistentHeapAllocator", "PersistentCollections",
                           "PHeapTestSupport", "pheap-crash-helper", "pheap", "pheap-fuzz", "todo", "PersistentHeapMetrics", "PersistentHeapTesting",
                           .product(name: "InMemoryLogging", package: "swift-log"),
                           .product(name: "MetricsTestKit", package: "swift-metrics")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
