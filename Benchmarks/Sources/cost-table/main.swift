// The README's "what it costs" table: per-operation times of the common operations, on the
// forced flush domain (tmpfs + clwb/sfence, what a DAX file gets) and on an ordinary file
// (msync), in whatever build this binary is (Benchmarks/cost-table runs it debug and release).
//
//   cost-table --flush-dir /dev/shm --file-dir /var/tmp [--ops N]
//
// Prints one line per (operation, domain): median time per operation of 5 repetitions; fences per
// operation, of which checkpoints' ("of cp"), and msyncs, as the pool's persistence counters
// count them; and the domain as the pool reports it.
import Foundation
import PersistentCollections
import PersistentHeap

struct Node: BitwiseCopyable { var value: Int; var next: PPointer<Node> }
struct Root: BitwiseCopyable {
    var head: PPointer<Node>
    var fields: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int)
    var map: PersistentSortedDictionary<String, String>.Ref
}

var flushDir = "/dev/shm", fileDir = "/var/tmp", ops = 2000
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--flush-dir": flushDir = args.popFirst() ?? flushDir
    case "--file-dir": fileDir = args.popFirst() ?? fileDir
    case "--ops": ops = Int(args.popFirst() ?? "") ?? ops
    default: FileHandle.standardError.write(Data("cost-table: unknown argument \(a)\n".utf8)); exit(2)
    }
}

#if DEBUG
let build = "debug"
#else
let build = "release"
#endif

func now() -> Double { var t = timespec(); clock_gettime(CLOCK_MONOTONIC, &t); return Double(t.tv_sec) * 1e9 + Double(t.tv_nsec) }

/// Runs `op` `n` times on a fresh pool in `dir` with `durability`, 5 repetitions; returns the
/// median ns/op, fences/op and msyncs/op, and the pool's domain.
func measure(_ name: String, dir: String, durability: PoolOptions.Durability, n: Int,
             _ op: (Pool, PPointer<Root>, PersistentSortedDictionary<String, String>, Int) throws -> Void) throws {
    var times: [Double] = []
    var fences = 0.0, checkpointFences = 0.0, msyncs = 0.0, domain = ""
    for rep in 0..<5 {
        let path = "\(dir)/cost-\(getpid())-\(rep).pool"
        unlink(path)
        let pool = try Pool.create(path: path, size: 64 << 20, layout: "cost", options: PoolOptions(durability: durability, maxSize: 1 << 30))
        let root = try pool.root(Root.self)
        let map = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.map))
        domain = pool.persistence.domain.rawValue
        let before = PersistenceCounters.current
        let t0 = now()
        for i in 0..<n { try op(pool, root, map, rep * n + i) }
        times.append((now() - t0) / Double(n))
        let d = PersistenceCounters.current.since(before)
        fences = Double(d.fences) / Double(n)
        checkpointFences = Double(d.checkpointFences) / Double(n)
        msyncs = Double(d.msyncCalls) / Double(n)
        try pool.close()
        unlink(path)
    }
    times.sort()
    let t = times[2]
    let shown = t >= 100_000 ? String(format: "%.0f µs", t / 1000) : t >= 1000 ? String(format: "%.1f µs", t / 1000) : String(format: "%.0f ns", t)
    print(row(name, domain, build, shown, String(format: "%.2f", fences), String(format: "%.2f", checkpointFences),
              String(format: "%.2f", msyncs)))
}

/// One table line: the first three columns left-aligned, the others right-aligned.
func row(_ a: String, _ b: String, _ c: String, _ d: String, _ e: String, _ cp: String, _ f: String) -> String {
    func left(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
    func right(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
    return left(a, 40) + left(b, 8) + left(c, 8) + right(d, 10) + right(e, 8) + right(cp, 8) + right(f, 8)
}

print(row("operation", "domain", "build", "per op", "fences", "of cp", "msyncs"))
for (dir, durability, n) in [(flushDir, PoolOptions.Durability.cacheLineFlush, ops), (fileDir, .msync, max(50, ops / 20))] {
    try measure("allocate-and-link 64 B", dir: dir, durability: durability, n: n) { pool, root, _, i in
        _ = try pool.allocate(Node(value: i, next: try pool.load(root).head), linkedInto: root.field(\.head))
    }
    try measure("store + persist 8 B (no log)", dir: dir, durability: durability, n: n) { pool, root, _, i in
        try pool.store(i, at: root.field(\.fields.0))
    }
    try measure("transaction: 1 field", dir: dir, durability: durability, n: n) { pool, root, _, i in
        try pool.transaction { tx in try tx.write(i, to: root.field(\.fields.0)) }
    }
    try measure("transaction: 16 updates", dir: dir, durability: durability, n: n) { pool, root, _, i in
        try pool.transaction { tx in try tx.update(root.field(\.fields)) { f in f.0 = i; f.15 = i; f.7 = i } ; for _ in 0..<15 { try tx.update(root.field(\.fields.3)) { $0 &+= 1 } } }
    }
    try measure("transaction: 100 map inserts (per tx)", dir: dir, durability: durability, n: max(5, n / 20)) { pool, _, map, i in
        try pool.transaction { _ in for k in 0..<100 { try map.updateValue("value \(k)", forKey: "key\(i * 100 + k)") } }
    }
    try measure("sorted map insert (own tx)", dir: dir, durability: durability, n: n) { _, _, map, i in
        try map.updateValue("value \(i)", forKey: "key\(i &* 7919 % 1_000_003)")
    }
    try measure("sorted map lookup", dir: dir, durability: durability, n: n) { _, _, map, i in
        if i % 1000 == 0 { try map.updateValue("v", forKey: "k\(i)") }
        _ = try map.value(forKey: "k\(i - i % 1000)")
    }
}
