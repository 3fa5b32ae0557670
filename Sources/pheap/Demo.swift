import ArgumentParser
import Foundation
import PersistentHeap

/// The root of the demo pool: a run counter and a persistent linked list of visits.
struct DemoRoot: BitwiseCopyable {
    var runs: Int
    var visits: PPointer<Visit>
}

/// One element of the demo's persistent list.
struct Visit: BitwiseCopyable {
    var run: Int
    var time: Double
    var next: PPointer<Visit>
}

/// `pheap demo [PATH]`: create a pool (first run), write the root, reopen, print `pheap info`.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the demonstration: create or open a pool, update its root, reopen it, show its info.")

    @Argument(help: "The pool file (created on first use).")
    var path = "pheap-demo.pool"

    func run() throws {
        let layout = "pheap-demo"
        let pool: Pool
        if FileManager.default.fileExists(atPath: path) {
            pool = try Pool.open(path: path, layout: layout)
            print("opened \(path)\(pool.previousShutdownWasClean ? "" : " (previous session crashed: recovered)")")
        } else {
            pool = try Pool.create(path: path, size: 8 << 20, layout: layout)
            print("created \(path)")
        }
        let root = try pool.root(DemoRoot.self)
        let run = try pool.load(root).runs + 1
        // Prepend a visit to the persistent list and link it into the root atomically.
        let head = try pool.load(root).visits
        _ = try pool.allocate(Visit(run: run, time: Date().timeIntervalSince1970, next: head), linkedInto: root.field(\.visits))
        try pool.store(run, at: root.field(\.runs))
        try pool.close()

        // Reopen and read everything back from the file.
        let again = try Pool.open(path: path, layout: layout)
        let r = try again.root(DemoRoot.self)
        var count = 0
        var p = try again.load(r).visits
        while !p.isNull { count += 1; p = try again.load(p).next }
        print("run \(try again.load(r).runs): the pool remembers \(count) visit(s); root object at \(r)")
        try again.close()
        print()
        try Info.parse([path]).run()
    }
}
