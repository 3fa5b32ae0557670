import ArgumentParser
import PersistentHeap

/// `pheap check PATH [--json]`
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a pool's whole heap for consistency.",
        discussion: """
            Opens the pool (running recovery, unless --read-only) and walks all heap metadata: \
            unit table, run headers and bitmaps, free-space indexes, logs, root. \
            Exit status 0 when consistent, 2 with the findings listed.
            """)

    @OptionGroup var pool: PoolPath

    @Option(help: "Layout name to open the pool with (default: the one in its header).")
    var layout: String?

    @Flag(help: "Do not modify the pool: no recovery (fails if an interrupted operation must be finished).")
    var readOnly = false

    @Flag(help: "Print one JSON object: {consistent, findings, stats}.")
    var json = false

    struct Output: Encodable {
        let consistent: Bool
        let findings: [String]
        let stats: PoolStats
    }

    func run() throws {
        let layout = try self.layout ?? PoolInfo.read(path: pool.path).layout
        let p = try Pool.open(path: pool.path, layout: layout, options: PoolOptions(readOnly: readOnly))
        let report = try p.check()
        try p.close()
        if json {
            try printJSON(Output(consistent: report.isConsistent, findings: report.findings, stats: report.stats))
        } else if report.isConsistent {
            let s = report.stats
            print("\(pool.path): consistent (\(s.objects) objects, \(humanBytes(s.allocatedBytes)) allocated, \(humanBytes(s.freeBytes)) free)")
        } else {
            print("\(pool.path): \(report.findings.count) problem(s):")
            for f in report.findings { print("  - \(f)") }
        }
        if !report.isConsistent { throw ExitCode(2) }
    }
}
