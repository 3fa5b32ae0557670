#if canImport(Glibc)
import Glibc
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
    print(pad("workload", 20) + pad("system", 15) + lpad("ns/op", 10) + lpad("fences/op", 11) + lpad("lines/op", 10)
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
                  + lpad(r["fences_per_op"] ?? "", 11) + lpad(r["lines_per_op"] ?? "", 10)
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

/// Transaction workloads (tx-*); see the transactions issue.
func runTransactionWorkload(_ workload: String, system: String, durability: PoolOptions.Durability) throws {
    fail("transaction workloads are not implemented yet")
}
