import PHeapTestSupport
import Testing
import PersistentHeap
import PersistentCollections

// The README's first example, verbatim apart from the path and printing: it must compile and run.
struct Node: BitwiseCopyable { var value: Int; var next: PPointer<Node> }
struct Root: BitwiseCopyable { var head: PPointer<Node>; var count: Int }

@Test("the README example runs as written, twice in a row")
func readmeExample() throws {
    let dir = ScratchDirectory("readme")
    let path = dir.file("list.pool")
    var printed: [[Int]] = []
    for _ in 0..<2 {
        // Creates list.pool on the first run, opens it (running recovery) on the next ones.
        let pool = try Pool.openOrCreate(path: path, size: 64 << 20, layout: "list")
        let root = try pool.root(Root.self)                 // created zeroed on first use

        // Allocate a node and link it as the new head — atomically: after a crash, either the
        // node exists and `head` points at it, or neither happened.
        let r = try pool.load(root)
        _ = try pool.allocate(Node(value: r.count, next: r.head), linkedInto: root.field(\.head))
        try pool.withMutable(root.field(\.count)) { $0 += 1 }   // stored and made durable

        var p = try pool.load(root).head
        var values: [Int] = []
        while !p.isNull { values.append(try pool.load(p).value); p = try pool.load(p).next }
        printed.append(values)                              // run 1: 0; run 2: 1 0; …
        try pool.close()
    }
    #expect(printed == [[0], [1, 0]])
    let again = try Pool.open(path: path, layout: "list")
    let root = try again.root(Root.self)
    try again.free(linkedFrom: root.field(\.head))          // free + unlink, atomically
    #expect(try again.load(root).head.isNull)
    #expect(try again.check().isConsistent)
    try again.close()
}

// The README's container examples, as written (printing aside).
struct UsersRoot: BitwiseCopyable {
    var users: PersistentSortedDictionary<String, String>.Ref   // 8 bytes each: references
    var scores: PersistentDictionary<Int, PersistentArray<Int>.Ref>.Ref
}

@Test("the README container examples run as written")
func readmeContainers() throws {
    let pool = try Pool.createSimulated(size: 4 << 20, layout: "users")
    let root = try pool.root(UsersRoot.self)
    let users = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.users))
    try users.updateValue("Ada", forKey: "user:1")              // one atomic, durable change
    var scanned: [String] = []
    for (key, name) in try users.scan(from: "user:", to: "user;") { scanned.append("\(key) \(name)") }
    #expect(scanned == ["user:1 Ada"])

    let scores = try PersistentDictionary<Int, PersistentArray<Int>.Ref>.open(pool, at: root.field(\.scores))
    try pool.transaction { tx in                               // several changes, atomically
        let list = try PersistentArray<Int>.create(in: tx)
        try list.append(contentsOf: [90, 75])
        try scores.updateValue(list.ref, forKey: 1)
    }
    #expect(try scores[1].map { try PersistentArray<Int>(pool, ref: $0).elements() } == [90, 75])

    let length = try users.withValue(forKey: "user:1") { bytes in bytes.count }
    #expect(length == 3)
    var seen: [(String, Int)] = []
    try users.forEachEncoded(from: "user:", to: "user;") { key, value in
        seen.append((String(decoding: key, as: UTF8.self), value.count))
        return true                                             // false stops the scan
    }
    #expect(seen.map(\.0) == ["user:1"] && seen.map(\.1) == [3])
    try users.insert(contentsOf: [(key: "user:2", value: "Grace"), (key: "user:3", value: "Edsger")])
    var c = users.makeCursor()                                  // seek ≥ key, next, previous, first, last
    var keys: [String] = []
    if try c.seek(to: "user:") { repeat { keys.append(try c.key) } while try c.next() }
    #expect(keys == ["user:1", "user:2", "user:3"])
}
