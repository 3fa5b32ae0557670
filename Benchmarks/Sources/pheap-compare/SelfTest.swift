#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PersistentHeap

/// Exercises the public API in this fully optimized, cross-module build — the configuration
/// users get, which `swift test` (built with -enable-testing) does not reach. A Swift 6.3.1
/// miscompile of typed throws showed up only here. Returns whether every check passed.
func selfTest() -> Bool {
    var failures = 0
    func check(_ ok: Bool, _ what: String) {
        if !ok { failures += 1; print("selftest: FAILED \(what)") }
    }
    struct Node: BitwiseCopyable { var value: Int; var next: PPointer<Node> }
    struct Root: BitwiseCopyable { var head: PPointer<Node>; var count: Int; var raw: PRawPointer }
    do {
        let pool = try Pool.createSimulated(size: 4 << 20, layout: "selftest")
        let root = try pool.root(Root.self)
        try pool.store(7, at: root.field(\.count))
        check(try pool.load(root.field(\.count)) == 7, "load after store")
        try pool.withMutable(root.field(\.count)) { $0 += 1 }
        check(pool[root.field(\.count)] == 8, "subscript after withMutable")
        for i in 0..<100 {
            let head = try pool.load(root.field(\.head))
            _ = try pool.allocate(Node(value: i, next: head), linkedInto: root.field(\.head))
        }
        var n = 0, p = try pool.load(root.field(\.head))
        while !p.isNull { n += 1; p = try pool.load(p).next }
        check(n == 100, "100 linked nodes (got \(n))")
        let big = try pool.allocate(bytes: 100_000, linkedInto: root.field(\.raw))
        check(try pool.usableSize(of: big) >= 100_000, "large usable size")
        try pool.free(linkedFrom: root.field(\.raw))
        check(!pool.isAllocated(big), "free-and-unlink")
        let arr = try pool.reallocate(linkedFrom: root.field(\.raw).cast(to: PPointer<Int>.self), count: 10)
        try pool.store(42, at: arr.advanced(by: 9))
        let arr2 = try pool.reallocate(linkedFrom: root.field(\.raw).cast(to: PPointer<Int>.self), count: 5000)
        check(try pool.load(arr2.advanced(by: 9)) == 42, "reallocate keeps contents")
        // Errors must come out intact.
        do { _ = try pool.load(PPointer<Int>.null); check(false, "null load throws") } catch {
            check(error.code == .invalidPointer && !error.message.isEmpty, "null load error (\(error.code), '\(error.message)')")
        }
        do { try pool.free(PRawPointer(offset: 12)); check(false, "bad free throws") } catch {
            check(error.code == .invalidFree && !error.message.isEmpty, "bad free error")
        }
        do { _ = try pool.allocate(bytes: 0); check(false, "zero-size throws") } catch {
            check(error.code == .invalidArgument, "zero-size error")
        }
        let report = try pool.check()
        check(report.isConsistent, "check: \(report.findings)")
        let image = pool.simulatedMedia!.crashImage(seed: 1, evictionProbability: 0.5)
        let again = try Pool.openSimulated(image: image, layout: "selftest")
        check(try again.load(try again.root(Root.self).field(\.count)) == 8, "reopen keeps the root")
        check(try again.check().isConsistent, "reopened check")
        do { _ = try Pool.openSimulated(image: image, layout: "other"); check(false, "layout mismatch throws") } catch {
            check(error.code == .layoutMismatch && error.message.contains("selftest"), "layout mismatch error")
        }
    } catch {
        check(false, "unexpected error: \(error)")
    }
    print(failures == 0 ? "selftest: all checks passed" : "selftest: \(failures) failure(s)")
    return failures == 0
}
