// Crash-image exploration speed (issue #13): PersistentHeapTesting's CrashTest on an 8 MiB
// simulated pool with a 1,000-fence workload (1,000 allocate-and-link operations building a
// list), verifying each image by walking the list. Prints images, fences, seconds and
// images/s, per mode set.
//
//   crash-explore [--ops N] [--pool-mib M]
import Foundation
import PersistentHeap
import PersistentHeapTesting

struct Node: BitwiseCopyable { var value: Int; var next: PPointer<Node> }
struct Root: BitwiseCopyable { var head: PPointer<Node>; var count: Int }

var ops = 1000, poolMiB = 8
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--ops": ops = Int(args.popFirst() ?? "") ?? ops
    case "--pool-mib": poolMiB = Int(args.popFirst() ?? "") ?? poolMiB
    default: FileHandle.standardError.write(Data("crash-explore: unknown argument \(a)\n".utf8)); exit(2)
    }
}

struct Bad: Error {}

/// The list invariant: values decrease by one from the head.
func verifyList(_ pool: Pool) throws {
    var p = try pool.load(try pool.root(Root.self)).head
    var expected = -1
    while !p.isNull {
        let node = try pool.load(p)
        if expected >= 0 && node.value != expected - 1 { throw Bad() }
        expected = node.value
        p = node.next
    }
}

// The copying path for comparison (what the project's tests did before PersistentHeapTesting):
// at each fence, two images (eviction probability 0 and 1), each copied whole out of the media
// (`crashImage`) and copied again into a new simulated pool (`openSimulated(image:)`).
do {
    let pool = try Pool.createSimulated(size: poolMiB << 20, layout: "bench")
    let root = try pool.root(Root.self)
    final class Count: @unchecked Sendable { var images = 0 }
    let count = Count()
    let started = Date()
    pool.simulatedMedia!.onFence = { m, fence in
        for p in [0.0, 1.0] {
            guard let image = try? Pool.openSimulated(image: m.crashImage(seed: UInt64(fence), evictionProbability: p), layout: "bench") else { continue }
            try? verifyList(image)
            try? image.close()
            count.images += 1
        }
    }
    for i in 0..<ops {
        _ = try pool.allocate(Node(value: i, next: try pool.load(root).head), linkedInto: root.field(\.head))
    }
    pool.simulatedMedia!.onFence = nil
    let seconds = Date().timeIntervalSince(started)
    print("copying images (before): \(count.images) images, " + String(format: "%.2f s, %.0f images/s", seconds, Double(count.images) / seconds))
    try pool.close()
}

for (name, modes, recovery) in [("all modes, recovery crashed", CrashMode.allCases, true),
                                ("all modes", CrashMode.allCases, false),
                                ("fence points only", [CrashMode.fence], false)] {
    var test = CrashTest(layout: "bench", poolSize: poolMiB << 20)
    test.modes = modes
    test.crashesRecovery = recovery
    let report = try test.explore(seeds: 1) { pool in
        let root = try pool.root(Root.self)
        for i in 0..<ops {
            _ = try pool.allocate(Node(value: i, next: try pool.load(root).head), linkedInto: root.field(\.head))
        }
    } verify: { pool, _ in
        try verifyList(pool)
    }
    print("\(name): \(report.images) images (\(report.recoveryImages) during recovery), \(report.fences) fences, "
          + String(format: "%.2f s, %.0f images/s", report.seconds, report.imagesPerSecond))
}
