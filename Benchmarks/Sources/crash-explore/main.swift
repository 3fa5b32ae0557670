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
        var p = try pool.load(try pool.root(Root.self)).head
        var expected = -1, n = 0
        while !p.isNull {
            let node = try pool.load(p)
            if expected >= 0 && node.value != expected - 1 { throw Bad() }
            expected = node.value
            p = node.next
            n += 1
        }
    }
    print("\(name): \(report.images) images (\(report.recoveryImages) during recovery), \(report.fences) fences, "
          + String(format: "%.2f s, %.0f images/s", report.seconds, report.imagesPerSecond))
}
