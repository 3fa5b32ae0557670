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
import PersistentHeapTesting

/// `PHEAP_LONG_TESTS=1` runs longer workloads, more seeds and more kills.
let longTests = getenv("PHEAP_LONG_TESTS").map { String(cString: $0) == "1" } ?? false

/// Counts crash images checked by all tests (reported at the end of each test).
let crashImagesChecked = Atomic<Int>(0)

/// Seeds of a crash workload: `normal` of them on every run; in the long mode (≥ 1,000,000 crash
/// images and ≥ 1,000 real kills across the suite, see README) `long` of them.
func crashSeeds(_ first: UInt64, normal: Int, long: Int) -> [UInt64] {
    (0..<UInt64(longTests ? long : normal)).map { first + $0 }
}

/// Runs `workload` on `pool` (a simulated pool) under the public crash explorer
/// (`PersistentHeapTesting.CrashTest`): at every `stride`-th fence it opens crash images — the
/// two pure fence points, seeded line evictions and 8-byte tearing (2 of each; 4 in the long
/// mode) — each with recovery run, and collects what `verify` reports. Returns (images checked,
/// problems): the first failing image, shrunk, with its replay line.
func crashAtEveryFence(_ pool: Pool, stride: Int = 1, seedBase: UInt64 = 0,
                       verify: @escaping @Sendable (Pool, Int) throws -> [String],
                       workload: () throws -> Void) throws -> (Int, [String]) {
    var test = CrashTest(layout: pool.layout, poolSize: pool.size)
    test.modes = [.fence, .evictions, .torn]
    test.randomImages = longTests ? 4 : 2
    test.crashesRecovery = false
    test.fenceStride = stride
    test.printsReport = false
    do {
        let report = try test.explore(pool, seed: seedBase, during: workload) { p, point in
            let found = try verify(p, point.fence)
            if !found.isEmpty { throw Problems(found: found) }
        }
        crashImagesChecked.add(report.images, ordering: .relaxed)
        return (report.images, [])
    } catch let failure as CrashTestFailure {
        return (0, ["\(failure)"])
    }
}

/// What a crash test's verify found (the failure's message).
struct Problems: Error, CustomStringConvertible {
    let found: [String]
    var description: String { found.prefix(3).joined(separator: "; ") }
}

@Suite("Crash consistency")
struct CrashTests {
    @Test("simulated power failure at every fence: linked workload (allocate-and-link, free-and-unlink, reallocate, replace, growth); every acknowledged operation survives",
          arguments: crashSeeds(11, normal: 3, long: 26))
    func linkedWorkload(seed: UInt64) throws {
        let pool = try Pool.createSimulated(size: 512 << 10, layout: "crash",
                                            options: PoolOptions(maxSize: 4 << 20, growthStep: 256 << 10, laneCount: 2))
        let root = try LinkWorkload.setUp(pool, slots: 32)
        var w = LinkWorkload(seed: seed, slots: 32, maxSize: 60_000)
        let ops = longTests ? 1500 : 220
        // Acknowledged state: after a crash at any fence, every slot holds what the last
        // operation that returned left there — except the slot of the operation in flight.
        let acked = Mutex<[UInt64]>(try LinkWorkload.slotIDs(pool))
        let (images, problems) = try crashAtEveryFence(pool, seedBase: seed << 32, verify: { p, _ in
            var out = try LinkWorkload.verify(p)
            let now = try LinkWorkload.slotIDs(p), expected = acked.withLock { $0 }
            let differing = now.indices.filter { now[$0] != expected[$0] }
            if differing.count > 1 { out.append("slots \(differing) differ from their acknowledged state") }
            return out
        }) {
            for _ in 0..<ops {
                let step = try w.step(pool, root: root)
                acked.withLock { $0[step.slot] = step.id }
            }
        }
        #expect(pool.size > 512 << 10, "the workload made the pool grow")
        #expect(problems.isEmpty, "\(problems.count) bad crash images of \(images): \(problems.prefix(5))")
        print("linked workload seed \(seed): \(images) crash images checked, \(problems.count) problems")
    }

    @Test("simulated power failure at every fence: linked workload of mostly large objects (extent splits and merges)")
    func linkedLargeWorkload() throws {
        let pool = try Pool.createSimulated(size: 512 << 10, layout: "crash",
                                            options: PoolOptions(maxSize: 8 << 20, growthStep: 512 << 10, laneCount: 2))
        let root = try LinkWorkload.setUp(pool, slots: 12)
        var w = LinkWorkload(seed: 41, slots: 12, maxSize: 90_000, largePercent: 60)
        let ops = longTests ? 800 : 120
        let (images, problems) = try crashAtEveryFence(pool, seedBase: 41 << 32, verify: { p, _ in try LinkWorkload.verify(p) }) {
            for _ in 0..<ops { try w.step(pool, root: root) }
        }
        #expect(problems.isEmpty, "\(problems.count) bad crash images of \(images): \(problems.prefix(5))")
        // Uninitialised large allocate-and-link / free-and-unlink: only the log line and the
        // split's entries are in flight, so every combination of them reaches the media.
        let raw = try pool.allocate(PRawPointer.self, count: 8, zeroed: true)
        var rng = RepeatableRandomNumberGenerator(seed: 42)
        let (images2, problems2) = try crashAtEveryFence(pool, seedBase: 42 << 32, verify: { p, _ in
            var out = try p.check().findings
            for k in 0..<8 {
                let x = try p.load(raw.advanced(by: k))
                if !x.isNull && !p.isAllocated(x) { out.append("slot \(k) points at free \(x)") }
            }
            return out
        }) {
            for _ in 0..<(longTests ? 400 : 80) {
                let slot = raw.advanced(by: Int.random(in: 0..<8, using: &rng))
                if try pool.load(slot).isNull {
                    _ = try pool.allocate(bytes: Int.random(in: 16385...120_000, using: &rng), zeroed: false, linkedInto: slot)
                } else {
                    try pool.free(linkedFrom: slot)
                }
            }
        }
        #expect(problems2.isEmpty, "\(problems2.count) bad crash images of \(images2): \(problems2.prefix(5))")
        print("linked large workload: \(images + images2) crash images checked")
    }

    @Test("simulated power failure at every fence: plain allocate / free; completed operations survive", arguments: crashSeeds(21, normal: 2, long: 22))
    func plainWorkload(seed: UInt64) throws {
        let pool = try Pool.createSimulated(size: 512 << 10, layout: "crash",
                                            options: PoolOptions(maxSize: 8 << 20, growthStep: 256 << 10, laneCount: 2))
        // The model as of the last completed operation, read by the fence hook.
        // `inFlight`: the block being freed; `allocating`: an allocation is in flight (its block,
        // unknown until it returns, may be one the model lists as freed).
        struct Model: Sendable { var live: Set<UInt64> = []; var freed: Set<UInt64> = []; var inFlight: UInt64 = 0; var allocating = false }
        let model = Mutex(Model())
        var rng = RepeatableRandomNumberGenerator(seed: seed)
        var order: [PRawPointer] = []
        let ops = longTests ? 2000 : 400
        let (images, problems) = try crashAtEveryFence(pool, seedBase: seed << 32, verify: { p, _ in
            var out = try p.check().findings
            let m = model.withLock { $0 }
            for o in m.live where o != m.inFlight && !p.isAllocated(PRawPointer(offset: o)) { out.append("completed allocation \(o) lost") }
            let undone = m.freed.filter { $0 != m.inFlight && p.isAllocated(PRawPointer(offset: $0)) }
            if undone.count > (m.allocating ? 1 : 0) { out.append("completed frees undone: \(undone.sorted())") }
            let objects = try p.stats().objects
            if abs(objects - m.live.count) > 1 { out.append("\(objects) objects allocated, model has \(m.live.count) ± 1") }
            return out
        }) {
            for _ in 0..<ops {
                if order.isEmpty || Int.random(in: 0..<100, using: &rng) < 55 {
                    let n = Int.random(in: 0..<10, using: &rng) < 8 ? Int.random(in: 1...600, using: &rng) : Int.random(in: 1...40_000, using: &rng)
                    model.withLock { $0.allocating = true }
                    let p = try pool.allocate(bytes: n)
                    model.withLock { $0.live.insert(p.offset); $0.freed.remove(p.offset); $0.allocating = false }
                    order.append(p)
                } else {
                    order.swapAt(Int.random(in: 0..<order.count, using: &rng), order.count - 1)
                    let p = order.removeLast()
                    model.withLock { $0.inFlight = p.offset }
                    try pool.free(p)
                    model.withLock { $0.live.remove(p.offset); $0.freed.insert(p.offset); $0.inFlight = 0 }
                }
            }
            // Shrink at the end: the tail goes back, under the same crash scrutiny.
            for p in order {
                model.withLock { $0.inFlight = p.offset }
                try pool.free(p)
                model.withLock { $0.live.remove(p.offset); $0.freed.insert(p.offset); $0.inFlight = 0 }
            }
            try pool.shrink()
        }
        #expect(problems.isEmpty, "\(problems.count) bad crash images of \(images): \(problems.prefix(5))")
        print("plain workload seed \(seed): \(images) crash images checked")
    }

    @Test("a crash during recovery: recovery is idempotent")
    func crashDuringRecovery() throws {
        let pool = try Pool.createSimulated(size: 512 << 10, layout: "crash", options: PoolOptions(laneCount: 2))
        let root = try LinkWorkload.setUp(pool, slots: 16)
        var w = LinkWorkload(seed: 77, slots: 16)
        for _ in 0..<20 { try w.step(pool, root: root) }
        // Collect images taken mid-operation (between fence 1 and 2 of linked operations, among others).
        let midImages = Mutex<[[UInt8]]>([])
        pool.simulatedMedia!.onFence = { m, n in
            if n % 2 == 0 { midImages.withLock { $0.append(m.crashImage(seed: UInt64(n), evictionProbability: 0.5)) } }
        }
        for _ in 0..<30 { try w.step(pool, root: root) }
        pool.simulatedMedia!.onFence = nil
        var checked = 0
        for image in midImages.withLock({ $0 }) {
            // Open it, crashing at every fence of recovery itself; each of those must open cleanly.
            let nested = Mutex<[[UInt8]]>([])
            let recovering = try SimulatedRecovery.open(image: image) { m, n in
                for p in [0.0, 0.5, 1.0] { nested.withLock { $0.append(m.crashImage(seed: UInt64(n) * 7, evictionProbability: p)) } }
            }
            #expect(try LinkWorkload.verify(recovering).isEmpty)
            for inner in nested.withLock({ $0 }) {
                let p = try Pool.openSimulated(image: inner, layout: "crash")
                let found = try LinkWorkload.verify(p)
                #expect(found.isEmpty, "\(found)")
                checked += 1
            }
        }
        crashImagesChecked.add(checked, ordering: .relaxed)
        #expect(checked > 0)
        print("crash during recovery: \(checked) crash images checked")
    }

    @Test("real kills: a process running the linked workload on a file is SIGKILLed at random moments")
    func realKills() throws {
        let d = ScratchDirectory("kills")
        let rounds = longTests ? 500 : 16
        var rng = RepeatableRandomNumberGenerator(seed: 99)
        var totalOps = 0, lostAcknowledged = 0
        for round in 0..<rounds {
            // Alternate the disk (msync domain) and tmpfs with the flush domain forced.
            let onTmpfs = round % 2 == 1
            let path = onTmpfs ? "/dev/shm/pheap-kill-\(getpid()).pool" : d.file("kill.pool")
            // The slots' state before this round (the pool persists across rounds; the last
            // round closed it cleanly).
            var acked: [UInt64] = []
            if access(path, F_OK) == 0 {
                let before = try Pool.open(path: path, layout: "crash-workload", options: PoolOptions(readOnly: true))
                acked = try LinkWorkload.slotIDs(before)
                try before.close()
            }
            let child = try ChildProcess(executable: siblingExecutable("pheap-crash-helper"),
                                         arguments: ["workload", path, "\(round + 1000)"],
                                         environment: onTmpfs ? ["PHEAP_FORCE_PMEM": "1"] : [:])
            _ = try child.waitForLine { $0.hasPrefix("READY") }
            let target = Int.random(in: 1...120, using: &rng)
            var n = 0
            // "OP n slot i id k ...": slot i holds object k, acknowledged.
            func acknowledge(_ line: String) {
                let f = line.split(separator: " ")
                guard f.count >= 6, let i = Int(f[3]), let id = UInt64(f[5]) else { return }
                while acked.count <= i { acked.append(0) }
                acked[i] = id
                n += 1
            }
            while n < target { acknowledge(try child.waitForLine { $0.hasPrefix("OP") }) }
            // Kill at a random instant inside the next operations, not only between them.
            usleep(UInt32.random(in: 0...400, using: &rng))
            child.kill()
            #expect(child.wasKilled())
            // Every acknowledgement the child printed before it died.
            while let line = try child.readLine(timeout: 5) { if line.hasPrefix("OP") { acknowledge(line) } }
            totalOps += n
            let pool = try Pool.open(path: path, layout: "crash-workload")
            #expect(!pool.previousShutdownWasClean)
            let problems = try LinkWorkload.verify(pool)
            #expect(problems.isEmpty, "round \(round): \(problems.prefix(5))")
            // Every acknowledged operation survived: each slot holds what its last acknowledged
            // operation left, except the one slot the operation in flight was changing.
            let now = try LinkWorkload.slotIDs(pool)
            let differing = now.indices.filter { $0 < acked.count ? now[$0] != acked[$0] : now[$0] != 0 }
            #expect(differing.count <= 1, "round \(round): slots \(differing) differ from their acknowledged state")
            lostAcknowledged += max(0, differing.count - 1)
            try pool.close()
            if onTmpfs && round == rounds - 1 { unlink(path) }
        }
        unlink("/dev/shm/pheap-kill-\(getpid()).pool")
        print("real kills: \(rounds) kills after \(totalOps) acknowledged operations, every reopen consistent, \(lostAcknowledged) acknowledged operations lost")
    }
}

/// Opens an image as a simulated pool with a fence hook active during recovery.
enum SimulatedRecovery {
    static func open(image: [UInt8], hook: @escaping @Sendable (SimulatedMedia, Int) -> Void) throws -> Pool {
        try Pool.openSimulated(image: image, layout: "crash", onFence: hook)
    }
}
