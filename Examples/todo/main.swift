// A to-do list that survives crashes: the README's complete example, built with the package
// (so it is also the compile test of the error-handling shapes users write at top level).
//
//   swift run todo add "buy milk"     # TODO_POOL=path to choose the file (default ./todo.pool)
//   swift run todo list
//   swift run todo done 1
//   swift run todo remove 1
import Foundation
import PersistentCollections
import PersistentHeap

/// One item: a string and a flag. `PersistentString` is 8 bytes (a pointer to its UTF-8 block),
/// so `Item` is `BitwiseCopyable` and can live in a `PersistentArray`.
struct Item: BitwiseCopyable, PersistentValue {
    var title: PersistentString
    var done: Bool
}

/// The pool's root object: a container reference and a counter.
struct Root: BitwiseCopyable {
    var items: PersistentArray<Item>.Ref
    var added: Int
}

// A path computed at run time; `openOrCreate` creates the pool on the first run and opens it
// (with the layout check and crash recovery) on every later one.
let path = ProcessInfo.processInfo.environment["TODO_POOL"] ?? "todo.pool"
let pool = try Pool.openOrCreate(path: path, size: 8 << 20, layout: "todo")
defer { try? pool.close() }

let root = try pool.root(Root.self)                                   // zeroed on first use
let items = try PersistentArray<Item>.open(pool, at: root.field(\.items))

/// Closes the pool (a clean shutdown) and exits.
func finish(_ message: String, status: Int32) -> Never {
    print(message)
    try? pool.close()
    exit(status)
}

let args = Array(CommandLine.arguments.dropFirst())
switch (args.first, args.count) {
case ("add", 2):
    // The string's block, the array's new element and the counter: all or nothing.
    try pool.transaction { tx in
        let title = try PersistentString.make(args[1], in: tx)
        try items.append(Item(title: title, done: false))
        try tx.update(root.field(\.added)) { $0 += 1 }
    }
case ("done", 2):
    guard let n = Int(args[1]), n >= 1, n <= (try items.count) else { finish("no item \(args[1])", status: 1) }
    try items.update(at: n - 1) { $0.done = true }
case ("remove", 2):
    guard let n = Int(args[1]), n >= 1, n <= (try items.count) else { finish("no item \(args[1])", status: 1) }
    // Removing an element does not free what it points to: free the string in the same
    // transaction, so a crash can neither leak it nor leave a dangling pointer.
    try pool.transaction { tx in
        let item = try items.remove(at: n - 1)
        try item.title.free(in: tx)
    }
case (nil, _), ("list", 1):
    break
default:
    finish("usage: todo [list | add TEXT | done N | remove N]", status: 2)
}
var it = items.makeIterator()
var n = 0
while let item = try it.next() {
    n += 1
    print("\(n). [\(item.done ? "x" : " ")] \(try item.title.string(in: pool))")
}
print("\(n) item(s), \(try pool.load(root).added) added since the pool was created (\(path))")

// The error-handling shapes users write, compiled here with the package (swift-frontend 6.3.1
// crashes on one of them at top level — see ErrorShapes.swift). At top level, `catch … where`
// followed by a plain `catch` compiles:
let missing: Pool?
do {
    missing = try Pool.open(path: path + ".missing", layout: "todo")
} catch where error.code == .fileNotFound {
    missing = nil
} catch {
    throw error
}
try missing?.close()
try ErrorShapes.check(path: path)
