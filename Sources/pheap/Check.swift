import ArgumentParser
import PersistentCollections
import PersistentHeap

/// `pheap check PATH [--json]`
struct Check: ParsableCommand, PoolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a pool's whole heap for consistency.",
        discussion: """
            Opens the pool (running recovery, unless --read-only) and walks all heap metadata: \
            unit table, run headers and bitmaps, free-space indexes, logs, root. With --deep, also \
            walks the containers of a pheap-kv pool: every B+ tree node, entry and string, each \
            pointer checked to be a live allocation of the right size. \
            Exit status 0 when consistent, 2 with the findings listed.
            """)

    @OptionGroup var pool: PoolPath
    var poolPath: String { pool.path }

    @Option(help: "Layout name to open the pool with (default: the one in its header).")
    var layout: String?

    @Flag(help: "Do not modify the pool: no recovery (fails if an interrupted operation must be finished).")
    var readOnly = false

    @Flag(help: "Also check the containers (pheap-kv pools: the key-value map).")
    var deep = false

    @Flag(help: "Print one JSON object: {consistent, findings, stats}.")
    var json = false

    struct Output: Encodable {
        let consistent: Bool
        let findings: [String]
        let stats: PoolStats
    }

    /// Opens the pool; a pool another process writes gets a statement of why it cannot be
    /// checked. (A `let` assigned in `do` with a `catch … where` crashes swift-frontend 6.3.1
    /// here: "Found ownership error?!" — hence a function that returns.)
    func open(layout: String) throws -> Pool {
        do {
            return try Pool.open(path: pool.path, layout: layout, options: PoolOptions(readOnly: readOnly))
        } catch {
            guard error.code == .poolBusy else { throw error }
            // A copy of a pool being written is not a consistent image (its pages are read at
            // different moments): no snapshot check is offered.
            throw CommandFailure(message: "\(pool.path): in use by another process (open for writing); "
                + "a check needs a consistent image, which a running writer does not leave on disk: "
                + "check after it closes the pool (or after a crash: recovery runs first)", code: 1)
        }
    }

    func run() throws {
        let layout = try self.layout ?? PoolInfo.read(path: pool.path).layout
        if deep && layout != KVStore.layout {
            throw CommandFailure(message: "\(pool.path): --deep knows the containers of \(KVStore.layout) pools only; this pool has layout \"\(layout)\"", code: 1)
        }
        let p = try open(layout: layout)
        defer { try? p.close() }
        let report = try p.check()
        var findings = report.findings
        if deep {
            // The map's deep check, on a heap the allocator check found sound (a damaged heap
            // makes the container walk meaningless).
            if !report.isConsistent {
                findings.append("containers not checked: the heap itself has the problems above")
            } else if let root = p.rootPointer {
                let ref = try p.load(root.assumingType(KVRoot.self)).map
                if !ref.isNull { findings += try PersistentSortedDictionary<String, String>(p, ref: ref).validate().map { "map: \($0)" } }
            }
        }
        if json {
            try printJSON(Output(consistent: findings.isEmpty, findings: findings, stats: report.stats))
        } else if findings.isEmpty {
            let s = report.stats
            print("\(pool.path): consistent\(deep ? " (heap and containers)" : "") (\(s.objects) objects, \(humanBytes(s.allocatedBytes)) allocated, \(humanBytes(s.freeBytes)) free)")
        } else {
            print("\(pool.path): \(findings.count) problem(s):")
            for f in findings { print("  - \(f)") }
        }
        if !findings.isEmpty { throw ExitCode(2) }
    }
}
