#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PersistentHeap
import Synchronization

/// A joinable pthread running a closure (threads in main.swift cannot be closures: they would
/// be main-actor isolated).
final class BenchThread: @unchecked Sendable {
    private var handle = pthread_t()
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    func start() { pthread_create(&handle, nil, benchThreadEntry, Unmanaged.passRetained(self).toOpaque()) }
    func join() { pthread_join(handle, nil) }
}

func benchThreadEntry(_ arg: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    Unmanaged<BenchThread>.fromOpaque(arg!).takeRetainedValue().body()
    return nil
}

/// State shared by the threads of the two-thread workload.
final class SharedSlots: Sendable {
    let go = Atomic<Int32>(0)
    let results = Mutex<[Double]>([0, 0])
}

/// Renders the JSON lines in `path` as a table: one row per workload and system, with the
/// speed-up of PersistentHeap over PMDK and its ratio to glibc.
func renderTable(path: String) {
    guard let f = fopen(path, "r") else { fail("cannot read \(path)") }
    defer { fclose(f) }
    var rows: [[String: String]] = []
    var line: UnsafeMutablePointer<CChar>?
    var cap = 0
    while getline(&line, &cap, f) > 0 {
        var row: [String: String] = [:]
        let s = String(cString: line!).trimmingCharacters(in: [" ", "\n", "{", "}"])
        for field in s.split(separator: ",") {
            let kv = field.split(separator: ":", maxSplits: 1).map { String($0).trimmingCharacters(in: ["\"", " "]) }
            if kv.count == 2 { row[kv[0]] = kv[1] }
        }
        if row["workload"] != nil { rows.append(row) }
    }
    free(line)
    func num(_ r: [String: String], _ k: String) -> Double? { r[k].flatMap(Double.init) }
    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
    func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
    print(pad("workload", 20) + pad("system", 15) + lpad("ns/op", 10) + lpad("fences/op", 11) + lpad("(cp)", 8) + lpad("lines/op", 10)
          + lpad("B/object", 10) + lpad("open ms", 9) + lpad("vs pmdk", 9) + lpad("vs glibc", 10))
    var seen: [String] = []
    for r in rows where !seen.contains(r["workload"]!) { seen.append(r["workload"]!) }
    for w in seen {
        let group = rows.filter { $0["workload"] == w }
        let pmdk = group.first { $0["system"] == "pmdk" }.flatMap { num($0, "ns_per_op") }
        let glibc = group.first { $0["system"] == "glibc" }.flatMap { num($0, "ns_per_op") }
        for r in group {
            let ns = num(r, "ns_per_op") ?? 0
            var ratio = "", slower = ""
            // "vs pmdk": how many times faster than PMDK; "vs glibc": how many times slower.
            if let pmdk, r["system"] != "pmdk", r["system"] != "glibc", ns > 0 { ratio = fmt(pmdk / ns, 2) + "x" }
            if let glibc, r["system"] != "glibc", glibc > 0 { slower = fmt(ns / glibc, 2) + "x" }
            print(pad(w, 20) + pad(r["system"] ?? "", 15) + lpad(fmt(ns, 1), 10)
                  + lpad(r["fences_per_op"] ?? "", 11) + lpad(r["checkpoint_fences_per_op"] ?? "", 8) + lpad(r["lines_per_op"] ?? "", 10)
                  + lpad(r["bytes_per_object"] ?? "", 10) + lpad(r["open_ms"] ?? "", 9) + lpad(ratio, 9) + lpad(slower, 10))
        }
    }
}

extension String {
    func trimmingCharacters(in set: Set<Character>) -> String {
        var s = Substring(self)
        while let c = s.first, set.contains(c) { s = s.dropFirst() }
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}

/// Transaction workloads, the same as pmdk_bench.c's:
///   tx-write64          snapshot and write 64 bytes
///   tx-alloc-link-free  allocate 64 B, link it into the root, free the one it replaces
///   tx-empty            a transaction that does nothing
///   tx-16fields         update 16 fields of 8 bytes, one per cache line
func runTransactionWorkload(_ workload: String, system: String, durability: PoolOptions.Durability) throws {
    struct TxRoot: BitwiseCopyable { var slot: PRawPointer; var fields: PPointer<UInt64> }
    let path = "\(dir)/pheap-tx.pool"
    unlink(path)
    let pool = try Pool.create(path: path, size: 64 << 20, layout: "bench", options: PoolOptions(durability: durability, maxSize: 64 << 20))
    let root = try pool.root(TxRoot.self)
    let fields = try pool.allocate(UInt64.self, count: 16 * 8, zeroed: true)
    try pool.store(fields, at: root.field(\.fields))
    let slot = root.field(\.slot).cast(to: PPointer<UInt64>.self)
    var i: UInt64 = 0
    // Chosen once: a string switch per iteration would be measured too.
    let kind = ["tx-write64": 0, "tx-alloc-link-free": 1, "tx-empty": 2, "tx-16fields": 3][workload] ?? -1
    if kind < 0 { fail("unknown workload \(workload)") }
    func once() throws {
        i &+= 1
        let k = i
        switch kind {
        case 0:
            try pool.transaction { tx in
                try tx.withMutableBytes(of: fields.raw, count: 64) { buf in
                    for w in 0..<8 { buf.storeBytes(of: k &+ UInt64(w), toByteOffset: w * 8, as: UInt64.self) }
                }
            }
        case 1:
            try pool.transaction { tx in
                let old = try tx.read(slot)
                let fresh = try tx.allocate(UInt64.self, count: 8, zeroed: false)
                try tx.write(fresh, to: slot)
                if !old.isNull { try tx.free(old) }
            }
        case 2:
            try pool.transaction { _ in }
        case 3:
            try pool.transaction { tx in
                for f in 0..<16 { try tx.update(fields.advanced(by: f * 8)) { $0 = k &+ UInt64(f) } }
            }
        default:
            break
        }
    }
    let n = workload == "tx-empty" ? 1_000_000 : 100_000
    for _ in 0..<(n / 10) { try once() }
    var samples: [Double] = [], fences = 0.0, lines = 0.0, checkpointFences = 0.0
    for _ in 0..<reps {
        let (ns, c) = try measure(ops: n) { for _ in 0..<n { try once() } }
        samples.append(ns)
        fences += Double(c.fences)
        lines += Double(c.flushedLines)
        checkpointFences += Double(c.checkpointFences)
    }
    emit(workload, system, ns: median(samples), fences: fences / Double(n * reps), lines: lines / Double(n * reps),
         checkpointFences: checkpointFences / Double(n * reps))
    try pool.close()
    unlink(path)
}
