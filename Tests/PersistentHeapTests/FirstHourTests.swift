#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PHeapTestSupport
import PersistentHeap
import Testing

/// What a newcomer meets first: `Pool.openOrCreate`, the errors around it, and the README's
/// complete example (`Examples/todo`) run twice in a row.
@Suite("first hour")
struct FirstHourTests {
    let dir = ScratchDirectory("first-hour")

    @Test("openOrCreate creates on the first call and opens on the next, keeping the data")
    func createsThenOpens() throws {
        let path = dir.file("app.pool")
        let pool = try Pool.openOrCreate(path: path, size: 1 << 20, layout: "app")
        try pool.withMutable(try pool.root(Int.self)) { $0 = 42 }
        try pool.close()
        let again = try Pool.openOrCreate(path: path, size: 1 << 20, layout: "app")
        #expect(try again.load(try again.root(Int.self)) == 42)
        #expect(again.previousShutdownWasClean)
        try again.close()
    }

    @Test("openOrCreate never replaces or creates what it should not")
    func refusals() throws {
        // A missing directory is named as such, and not created.
        let deep = dir.file("no/such/dir/app.pool")
        let e1 = #expect(throws: PoolError.self) { try Pool.openOrCreate(path: deep, size: 1 << 20, layout: "app") }
        #expect(e1?.code == .fileNotFound)
        #expect(e1?.message.contains("the directory \(dir.file("no/such/dir")) does not exist") == true, "\(String(describing: e1))")
        #expect(access(dir.file("no"), F_OK) != 0)
        // A file that is not a pool is refused, not overwritten.
        let text = dir.file("notes.txt")
        #expect(FileBytes.write(text, Array("my notes".utf8)))
        let e2 = #expect(throws: PoolError.self) { try Pool.openOrCreate(path: text, size: 1 << 20, layout: "app") }
        #expect(e2?.code == .tooSmall || e2?.code == .notAPool)
        #expect(FileBytes.read(text) == Array("my notes".utf8))
        // Another layout is refused.
        let other = dir.file("other.pool")
        try Pool.create(path: other, size: 1 << 20, layout: "other").close()
        #expect(throws: PoolError.self) { try Pool.openOrCreate(path: other, size: 1 << 20, layout: "app") }
        // Read-only opens never create.
        let ro = dir.file("ro.pool")
        let e3 = #expect(throws: PoolError.self) {
            try Pool.openOrCreate(path: ro, size: 1 << 20, layout: "app", options: PoolOptions(readOnly: true))
        }
        #expect(e3?.code == .fileNotFound)
        #expect(access(ro, F_OK) != 0)
        // The pool in use elsewhere is busy, not re-created.
        let busy = dir.file("busy.pool")
        let held = try Pool.openOrCreate(path: busy, size: 1 << 20, layout: "app")
        let e4 = #expect(throws: PoolError.self) { try Pool.openOrCreate(path: busy, size: 1 << 20, layout: "app") }
        #expect(e4?.code == .poolBusy)
        try held.close()
    }

    @Test("the README's to-do example runs twice in a row and keeps its items")
    func todoExample() throws {
        let env = ["TODO_POOL": dir.file("todo.pool"), "SWIFT_BACKTRACE": "enable=no"]
        let todo = siblingExecutable("todo")
        let (c1, out1, err1) = try runProcess(todo, ["add", "buy milk"], environment: env)
        #expect(c1 == 0, "\(err1)")
        #expect(out1.contains("1. [ ] buy milk"))
        let (c2, _, _) = try runProcess(todo, ["add", "call Ada"], environment: env)
        let (c3, _, _) = try runProcess(todo, ["done", "1"], environment: env)
        let before = try objects(env["TODO_POOL"]!)
        let (c4, out4, _) = try runProcess(todo, ["remove", "2"], environment: env)
        #expect([c2, c3, c4] == [0, 0, 0])
        #expect(out4.contains("1. [x] buy milk") && !out4.contains("call Ada"))
        #expect(out4.contains("1 item(s), 2 added"))
        // The removed item's string was freed with it (in the same transaction).
        #expect(try objects(env["TODO_POOL"]!) == before - 1)
    }

    /// The live objects of a consistent pool.
    func objects(_ path: String) throws -> Int {
        let pool = try Pool.open(path: path, layout: "todo")
        defer { try? pool.close() }
        let report = try pool.check()
        #expect(report.isConsistent, "\(report.findings)")
        return report.stats.objects
    }
}
