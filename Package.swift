// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "PersistentHeap",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PersistentHeap", targets: ["PersistentHeap"]),
        .executable(name: "pheap", targets: ["pheap"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // Cache-line flush and fence instructions, CPUID, CRC-32C, atomics on mapped
        // memory, and the thread-local slot: what Swift cannot express directly.
        .target(name: "CPersistentHeap"),
        .target(name: "PersistentHeap", dependencies: ["CPersistentHeap"]),
        .executableTarget(
            name: "pheap",
            dependencies: [
                "PersistentHeap",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // A helper process for crash tests: runs a workload on a pool file and is killed.
        .executableTarget(name: "pheap-crash-helper", dependencies: ["PersistentHeap", "PHeapTestSupport"]),
        // The mutation fuzzer over real pool images (each case in a child process; CI runs it).
        .executableTarget(name: "pheap-fuzz", dependencies: ["PersistentHeap", "PHeapTestSupport"]),
        // Shared by the tests, the crash helper and the benchmarks: temporary pools,
        // a seeded random generator, process spawning.
        .target(name: "PHeapTestSupport", dependencies: ["PersistentHeap", "CPersistentHeap"]),
        .testTarget(
            name: "PersistentHeapTests",
            dependencies: ["PersistentHeap", "PHeapTestSupport", "pheap-crash-helper", "pheap", "pheap-fuzz"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
