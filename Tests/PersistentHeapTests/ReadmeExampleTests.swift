import PHeapTestSupport
import Testing
import PersistentHeap
import PersistentCollections

// The README's first example, verbatim apart from the path: it must compile and run.
struct Node: BitwiseCopyable { var value: Int; var next: PPointer<Node> }
struct Root: BitwiseCopyable { var head: PPointer<Node>; var count: Int }

@Test("the README example runs as written")
func readmeExample() throws {
    let dir = ScratchDirectory("readme")
    let path = dir.file("list.pool")
    let pool = try Pool.create(path: path, size: 64 << 20, layout: "list")
    let root = try pool.root(Root.self)                 // created zeroed on first use

    // Allocate a node and link it as the new head — atomically: after a crash, either the
    // node exists and `head` points at it, or neither happened.
    let head = try pool.load(root).head
    _ = try pool.allocate(Node(value: 42, next: head), linkedInto: root.field(\.head))
    try pool.withMutable(root.field(\.count)) { $0 += 1 }   // stored and persisted
    try pool.close()

    let again = try Pool.open(path: path, layout: "list")
    var p = try again.load(try again.root(Root.self)).head
    var values: [Int] = []
    while !p.isNull { values.append(try again.load(p).value); p = try again.load(p).next }
    try again.free(linkedFrom: try again.root(Root.self).field(\.head))  // free + unlink, atomically
    #expect(values == [42])
    #expect(try again.load(try again.root(Root.self)).head.isNull)
    #expect(try again.check().isConsistent)
    try again.close()
}
