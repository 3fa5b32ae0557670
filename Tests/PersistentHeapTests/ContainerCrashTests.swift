#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PHeapTestSupport
import Synchronization
import Testing
@_spi(Containers) @testable import PersistentHeap
@testable import PersistentCollections
@_spi(Allocator) @testable import PersistentHeapAllocator
@_spi(Core) @testable import PersistentHeapCore

@Suite("Container crash consistency")
struct ContainerCrashTests {
    /// Models of the container after each completed operation, read by the fence hook.
    final class History<State: Sendable>: @unchecked Sendable {
        private let lock = Mutex<Void>(())
        private var states: [State]
        init(_ initial: State) { states = [initial] }
        func completed(_ s: State) { lock.withLock { _ in states.append(s) } }
        /// The last completed state and the one being made (if the operation is in flight).
        func candidates(inFlight: State?) -> [State] {
            lock.withLock { _ in [states.last!] + (inFlight.map { [$0] } ?? []) }
        }
    }

    /// After recovery: the container must equal one candidate; then destroying it must leave
    /// only the root (no leak), and the heap must be consistent throughout.
    static func verifyContainer<M: Equatable>(_ p: Pool, read: (Pool) throws -> M, candidates: [M],
                                             destroy: (Pool) throws -> Void) throws -> [String] {
        var out = try p.check().findings
        let m = try read(p)
        if !candidates.contains(m) { out.append("container matches neither the state before nor after the interrupted change") }
        try destroy(p)
        let report = try p.check()
        out += report.findings
        if report.stats.objects != 1 { out.append("leak: \(report.stats.objects - 1) blocks remain after destroying the container") }
        return out
    }

    @Test("simulated power failure at every fence: sorted map inserts, updates, bulk inserts, deletes, node splits, merges and borrows; the deep check holds in every image",
          arguments: crashSeeds(51, normal: 1, long: 5))
    func sortedMap(seed: UInt64) throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "crash", options: PoolOptions(maxSize: 8 << 20, laneCount: 2))
        let root = try pool.root(ContainerRoot.self)
        let map = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.sorted))
        var model: [String: String] = [:]
        let history = History(model)
        let inFlight = Mutex<[String: String]?>(nil)
        var rng = RepeatableRandomNumberGenerator(seed: seed)
        let read: @Sendable (Pool) throws -> [String: String] = { p in
            let m = try PersistentSortedDictionary<String, String>.open(p, at: try p.root(ContainerRoot.self).field(\.sorted))
            return Dictionary(uniqueKeysWithValues: try m.scan().map { ($0.key, $0.value) })
        }
        let destroy: @Sendable (Pool) throws -> Void = { p in
            try PersistentSortedDictionary<String, String>.open(p, at: try p.root(ContainerRoot.self).field(\.sorted))
                .destroy(unlinking: try p.root(ContainerRoot.self).field(\.sorted))
        }
        let ops = longTests ? 1500 : 260
        let (images, problems) = try crashAtEveryFence(pool, stride: 1, seedBase: seed << 32, verify: { p, _ in
            let tree = try PersistentSortedDictionary<String, String>.open(p, at: try p.root(ContainerRoot.self).field(\.sorted)).validate()
            return tree + (try Self.verifyContainer(p, read: read, candidates: history.candidates(inFlight: inFlight.withLock { $0 }), destroy: destroy))
        }) {
            for step in 0..<ops {
                var next = model
                // Grow for the first half (inserts, and now and then a bulk insert of 40 entries),
                // then mostly remove: leaves merge with and borrow from their siblings.
                let insertShare = step < ops / 2 ? 7 : 3
                if step % 37 == 5 {
                    var batch: [(key: String, value: String)] = []
                    for _ in 0..<40 {
                        let k = "k" + zeroPadded(Int.random(in: 0..<400, using: &rng), 3) + String(repeating: "b", count: Int.random(in: 0...20, using: &rng))
                        let v = randomString(&rng, maxLength: 50)
                        batch.append((k, v))
                        next[k] = v
                    }
                    inFlight.withLock { $0 = next }
                    try map.insert(contentsOf: batch)
                } else if Int.random(in: 0..<10, using: &rng) < insertShare || model.isEmpty {
                    // Keys of 4 to 30 bytes (some beyond the 16 inline), values up to 50: nodes split.
                    let k = "k" + zeroPadded(Int.random(in: 0..<400, using: &rng), 3) + String(repeating: "x", count: Int.random(in: 0...26, using: &rng))
                    let v = randomString(&rng, maxLength: 50)
                    next[k] = v
                    inFlight.withLock { $0 = next }
                    try map.updateValue(v, forKey: k)
                } else {
                    let k = model.keys.randomElement(using: &rng)!
                    next[k] = nil
                    inFlight.withLock { $0 = next }
                    try map.removeValue(forKey: k)
                }
                model = next
                history.completed(model)
                inFlight.withLock { $0 = nil }
            }
        }
        #expect(problems.isEmpty, "\(problems.count) bad crash images of \(images): \(problems.prefix(4))")
        print("sorted map: \(images) crash images checked")
    }

    @Test("simulated power failure at every fence: hash map inserts and removals through incremental resizes",
          arguments: crashSeeds(152, normal: 1, long: 5))
    func hashMap(seed: UInt64) throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "crash", options: PoolOptions(maxSize: 8 << 20, laneCount: 2))
        let root = try pool.root(ContainerRoot.self)
        let map = try PersistentDictionary<Int, Int>.open(pool, at: root.field(\.map))
        var model: [Int: Int] = [:]
        let history = History(model)
        let inFlight = Mutex<[Int: Int]?>(nil)
        var rng = RepeatableRandomNumberGenerator(seed: seed == 152 ? 52 : seed)
        let read: @Sendable (Pool) throws -> [Int: Int] = { p in
            let m = try PersistentDictionary<Int, Int>.open(p, at: try p.root(ContainerRoot.self).field(\.map))
            return Dictionary(uniqueKeysWithValues: try m.entries().map { ($0.key, $0.value) })
        }
        let destroy: @Sendable (Pool) throws -> Void = { p in
            try PersistentDictionary<Int, Int>.open(p, at: try p.root(ContainerRoot.self).field(\.map))
                .destroy(unlinking: try p.root(ContainerRoot.self).field(\.map))
        }
        let ops = longTests ? 2000 : 300
        let (images, problems) = try crashAtEveryFence(pool, seedBase: seed << 32, verify: { p, _ in
            try Self.verifyContainer(p, read: read, candidates: history.candidates(inFlight: inFlight.withLock { $0 }), destroy: destroy)
        }) {
            for step in 0..<ops {
                var next = model
                let k = Int.random(in: 0..<500, using: &rng)
                let insert = Int.random(in: 0..<10, using: &rng) < 8
                if insert { next[k] = step } else { next[k] = nil }
                inFlight.withLock { $0 = next }
                if insert { try map.updateValue(step, forKey: k) } else { try map.removeValue(forKey: k) }
                model = next
                history.completed(model)
                inFlight.withLock { $0 = nil }
            }
        }
        #expect(problems.isEmpty, "\(problems.count) bad crash images of \(images): \(problems.prefix(4))")
        print("hash map: \(images) crash images checked")
    }

    @Test("simulated power failure at every fence: array appends, inserts, removals and growth",
          arguments: crashSeeds(53, normal: 1, long: 5))
    func array(seed: UInt64) throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "crash", options: PoolOptions(maxSize: 8 << 20, laneCount: 2))
        let root = try pool.root(ContainerRoot.self)
        let a = try PersistentArray<Int>.open(pool, at: root.field(\.array))
        var model: [Int] = []
        let history = History(model)
        let inFlight = Mutex<[Int]?>(nil)
        var rng = RepeatableRandomNumberGenerator(seed: seed)
        let read: @Sendable (Pool) throws -> [Int] = { p in try PersistentArray<Int>.open(p, at: try p.root(ContainerRoot.self).field(\.array)).elements() }
        let destroy: @Sendable (Pool) throws -> Void = { p in
            try PersistentArray<Int>.open(p, at: try p.root(ContainerRoot.self).field(\.array)).destroy(unlinking: try p.root(ContainerRoot.self).field(\.array))
        }
        let ops = longTests ? 2000 : 300
        let (images, problems) = try crashAtEveryFence(pool, seedBase: seed << 32, verify: { p, _ in
            try Self.verifyContainer(p, read: read, candidates: history.candidates(inFlight: inFlight.withLock { $0 }), destroy: destroy)
        }) {
            for step in 0..<ops {
                var next = model
                switch Int.random(in: 0..<6, using: &rng) {
                case 0, 1, 2:
                    next.append(step); inFlight.withLock { $0 = next }; try a.append(step)
                case 3:
                    let i = Int.random(in: 0...model.count, using: &rng)
                    next.insert(-step, at: i); inFlight.withLock { $0 = next }; try a.insert(-step, at: i)
                default:
                    if model.isEmpty { continue }
                    let i = Int.random(in: 0..<model.count, using: &rng)
                    next.remove(at: i); inFlight.withLock { $0 = next }; try a.remove(at: i)
                }
                model = next
                history.completed(model)
                inFlight.withLock { $0 = nil }
            }
        }
        #expect(problems.isEmpty, "\(problems.count) bad crash images of \(images): \(problems.prefix(4))")
        print("array: \(images) crash images checked")
    }

    @Test("real kills: pheap kv load of a shuffled file is SIGKILLed midway; get, scan and check work and the data is a key-order prefix of the file (whole batches)")
    func killDuringLoad() throws {
        let d = ScratchDirectory("kvload")
        let tsv = d.file("data.tsv")
        let lines = 20_000
        var rng = RepeatableRandomNumberGenerator(seed: 61)
        // Lines in random order: the load sorts them (one run) and inserts sorted batches.
        var text = ""
        for i in (0..<lines).shuffled(using: &rng) { text += "key\(zeroPadded(i, 8))\tvalue of line \(i)\n" }
        FileBytes.write(tsv, Array(text.utf8))
        for round in 0..<(longTests ? 100 : 4) {
            let pool = d.file("kv-\(round).pool")
            let child = try ChildProcess(executable: siblingExecutable("pheap"), arguments: ["kv", pool, "load", tsv, "--batch", "16"])
            usleep(UInt32.random(in: 150_000...900_000, using: &rng))
            child.kill()
            _ = child.wait()
            guard access(pool, F_OK) == 0 else { continue }  // killed before the pool existed
            let (code, out, err) = try runProcess(siblingExecutable("pheap"), ["kv", pool, "scan"])
            #expect(code == 0, "scan failed: \(err)")
            let got = out.split(separator: "\n")
            for (i, line) in got.enumerated() {
                #expect(line == "key\(zeroPadded(i, 8))\tvalue of line \(i)", "round \(round): line \(i) is not line \(i) of the file")
                if line != "key\(zeroPadded(i, 8))\tvalue of line \(i)" { break }
            }
            #expect(got.count % 16 == 0 || got.count == lines, "round \(round): \(got.count) entries is not a whole number of transactions")
            let (checkCode, checkOut, _) = try runProcess(siblingExecutable("pheap"), ["check", pool])
            #expect(checkCode == 0, "\(checkOut)")
            if !got.isEmpty {
                let (getCode, value, _) = try runProcess(siblingExecutable("pheap"), ["kv", pool, "get", "key00000000"])
                #expect(getCode == 0 && value == "value of line 0\n")
            }
            print("kv load kill round \(round): \(got.count) of \(lines) entries survived, a key-order prefix")
        }
    }
}

/// `n` in decimal, left-padded with zeros to `width` digits.
func zeroPadded(_ n: Int, _ width: Int) -> String {
    let s = String(n)
    return String(repeating: "0", count: max(0, width - s.count)) + s
}
