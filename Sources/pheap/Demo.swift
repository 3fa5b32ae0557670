import ArgumentParser
import Foundation
import PersistentHeap

/// `pheap demo [PATH]`: the key-value store on a default pool file.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the demonstration: a durable key-value store in ./pheap-demo.pool (created on first run).")

    @Argument(help: "The pool file (created on first use).")
    var path = "pheap-demo.pool"

    func run() throws {
        let isNew = !FileManager.default.fileExists(atPath: path)
        do {
            let store = try KVStore(path: path, access: .write(create: true))
            guard let map = store.map else { throw CommandFailure(message: "\(path): the store has no map", code: 1) }
            print(isNew ? "created \(path)" : "opened \(path)\(store.pool.previousShutdownWasClean ? "" : " (the last session crashed: recovered)")")
            let runs = (Int(try map.value(forKey: "demo:runs") ?? "0") ?? 0) + 1
            try map.updateValue(String(runs), forKey: "demo:runs")
            if isNew {
                // A first fill: 10,000 entries in transactions of 100, then a few by hand.
                let started = Date()
                for batch in 0..<100 {
                    try store.pool.transaction { _ in
                        for i in 0..<100 {
                            let n = batch * 100 + i
                            try map.updateValue("value \(n * 7)", forKey: String(format: "item:%05d", n))
                        }
                    }
                }
                print(String(format: "loaded 10000 entries in %.2f s", Date().timeIntervalSince(started)))
                for (k, v) in [("fruit:apple", "red"), ("fruit:banana", "yellow"), ("fruit:cherry", "dark red"), ("greeting", "hello, persistent world")] {
                    try map.updateValue(v, forKey: k)
                }
            }
            print("run \(runs) of the demo on this pool")
            print("get greeting       → \(try map.value(forKey: "greeting") ?? "(missing)")")
            print("scan fruit: fruit; →")
            for (k, v) in try map.scan(from: "fruit:", to: "fruit;") { print("    \(k)\t\(v)") }
            print("count              → \(try map.count)")
            try store.pool.close()
        }
        // Reopen from the file: everything above is durable.
        let again = try KVStore(path: path, access: .read)
        print("reopened: item:04242 → \(try again.map?.value(forKey: "item:04242") ?? "(missing)"), \(try again.map?.count ?? 0) keys")
        try again.pool.close()
        print()
        try Info.parse([path]).run()
        print("""

            Try it: swift run pheap kv \(path) put KEY VALUE · get KEY · delete KEY · scan [FROM [TO]] · count
                    swift run pheap kv \(path) load FILE.tsv   (kill it midway, then get/scan/check)
                    swift run pheap check \(path)
            """)
    }
}
