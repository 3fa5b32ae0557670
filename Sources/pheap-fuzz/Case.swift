// One fuzz case, run in a child process: open the (damaged) pool, run the allocator's check and
// every container's deep check, walk everything through the public API, change every container,
// check again. The exit status says what happened; a crash or a hang is what the parent looks for.
import PersistentCollections
import PersistentHeap
@_spi(Core) import PersistentHeapCore

/// How a case ended (the child's exit status).
enum Outcome: Int32, CaseIterable {
    /// Opened; the checks found nothing; every read and change worked.
    case ok = 0
    /// `open` refused the file with a `PoolError`.
    case refused = 10
    /// The allocator check or a container's deep check reported the damage (later errors are expected).
    case detected = 11
    /// The checks found nothing, yet a container operation threw `corrupted`/`invalidPointer`/
    /// `invalidFree`: damage the deep check missed.
    case missed = 12
    /// The checks found nothing, the changes worked, and the check afterwards found problems.
    case broke = 13

    var label: String {
        switch self {
        case .ok: return "ok"
        case .refused: return "refused at open"
        case .detected: return "damage reported by check"
        case .missed: return "missed by the checks"
        case .broke: return "broken by changes"
        }
    }
}

/// A read-only pass: open without recovery, check, and read every container. Only a crash or a
/// hang matters here (every error is a clean refusal); the read-write pass classifies the case.
func readOnlyPass(path: String) {
    guard let pool = try? Pool.open(path: path, layout: fuzzLayout, options: PoolOptions(readOnly: true)) else { return }
    defer { try? pool.close() }
    _ = try? pool.check()
    guard let raw = pool.rootPointer, (try? pool.usableSize(of: raw)) ?? 0 >= MemoryLayout<FuzzRoot>.size,
          let r = try? pool.load(raw.assumingType(FuzzRoot.self)) else { return }
    let sorted = PersistentSortedDictionary<String, String>(pool, ref: r.sorted)
    let hash = PersistentDictionary<Int, Int>(pool, ref: r.hash)
    let array = PersistentArray<Int>(pool, ref: r.array)
    let nested = PersistentDictionary<Int, PersistentArray<Int>.Ref>(pool, ref: r.nested)
    _ = try? sorted.validate()
    _ = try? hash.validate()
    _ = try? array.validate()
    _ = try? nested.validate()
    _ = try? sorted.scan()
    for i in stride(from: 0, to: 420, by: 11) { _ = try? sorted.value(forKey: sortedKey(i)) }
    _ = try? hash.entries()
    _ = try? array.elements()
    try? nested.forEach { _, ref in _ = try PersistentArray<Int>(pool, ref: ref).elements() }
    // Writes are refused, never attempted on the mapping.
    _ = try? sorted.updateValue("x", forKey: "y")
}

/// Runs the case in `path`; prints a one-line note for `missed` and `broke`.
func runCase(path: String) -> Outcome {
    readOnlyPass(path: path)
    let pool: Pool
    do { pool = try Pool.open(path: path, layout: fuzzLayout) } catch { return .refused }
    defer { try? pool.close() }
    var detected = false
    do { detected = !(try pool.check().isConsistent) } catch { detected = true }
    guard let rawRoot = pool.rootPointer else { return detected ? .detected : .ok }
    guard (try? pool.usableSize(of: rawRoot)) ?? 0 >= MemoryLayout<FuzzRoot>.size else { return .detected }
    let root = rawRoot.assumingType(FuzzRoot.self)

    // The application's own list: its walk is the application's to validate (errors are fine).
    var steps = 0
    var node = (try? pool.load(root.field(\.list))) ?? .null
    while !node.isNull && steps < 1000, let n = try? pool.load(node) { node = n.next; steps += 1 }

    func serious(_ error: any Error) -> Bool {
        guard let e = error as? PoolError else { return true }
        return e.code == .corrupted || e.code == .invalidPointer || e.code == .invalidFree
    }
    // Opening the containers reads their references from the root (the application's own
    // structure): a bad reference is refused with an error, which is the application's check.
    let c: FuzzContainers
    do { c = try FuzzContainers(pool, root) } catch { return serious(error) ? .detected : (detected ? .detected : .ok) }
    var note = ""
    do {
        var problems = try c.sorted.validate() + c.hash.validate() + c.array.validate() + c.nested.validate()
        problems += try pool.check().findings
        if !problems.isEmpty { detected = true }
        // Reads.
        _ = try c.sorted.count
        _ = try c.sorted.scan()
        _ = try c.sorted.scan(from: sortedKey(100), limit: 40)
        for i in stride(from: 0, to: 420, by: 7) { _ = try c.sorted.value(forKey: sortedKey(i)) }
        var it = c.sorted.makeIterator()
        while try it.next() != nil {}
        _ = try c.hash.entries()
        for i in 0..<20 { _ = try c.hash.value(forKey: i) }
        _ = try c.array.elements()
        if try c.array.count > 5 { _ = try c.array[5] }
        try c.nested.forEach { _, ref in _ = try PersistentArray<Int>(pool, ref: ref).elements() }
        // Changes.
        for i in 0..<30 { try c.sorted.updateValue(sortedValue(i + 7), forKey: sortedKey(i * 11)) }
        for i in 0..<10 { _ = try c.sorted.removeValue(forKey: sortedKey(i * 13)) }
        for i in 0..<40 { try c.hash.updateValue(-i, forKey: i * 3) }
        for i in 0..<5 { _ = try c.hash.removeValue(forKey: i) }
        try c.array.append(contentsOf: 0..<20)
        _ = try c.array.removeLast()
        try c.array.insert(7, at: 3)
        try pool.transaction { tx in
            let a = try PersistentArray<Int>.create(in: tx)
            try a.append(1)
            try c.nested.updateValue(a.ref, forKey: 100)
        }
        let head = try pool.load(root.field(\.list))
        _ = try pool.allocate(ListNode(value: -1, next: head), linkedInto: root.field(\.list))
        if !detected {
            let after = try pool.check().findings + c.sorted.validate() + c.hash.validate() + c.array.validate() + c.nested.validate()
            if !after.isEmpty {
                print("BROKE: \(after.prefix(3).joined(separator: " | "))")
                return .broke
            }
        }
    } catch {
        if detected || !serious(error) { return detected ? .detected : .ok }
        note = "\(error)"
        print("MISSED: \(note)")
        return .missed
    }
    return detected ? .detected : .ok
}
