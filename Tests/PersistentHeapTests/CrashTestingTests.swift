import Foundation
import PHeapTestSupport
import PersistentHeap
import PersistentHeapTesting
import Testing
import XCTest

// The public crash-testing module proves its power on planted bugs: a tutorial structure written
// with raw stores, flushes and fences, in a correct version and in five broken ones — each broken
// one must be caught, the correct one must pass.

/// A tutorial structure: an append-only log of checked entries. The count has a cache line of its
/// own (so flushing it cannot flush an entry by accident); entries follow, four per line.
struct TutorialLog: BitwiseCopyable {
    var count: Int
    var pad: (Int, Int, Int, Int, Int, Int, Int)
    var entries: (Entry, Entry, Entry, Entry, Entry, Entry, Entry, Entry)
}

/// An entry: a value and its complement — torn if they disagree.
struct Entry: BitwiseCopyable { var value: UInt64; var check: UInt64 }

enum Bug: String, CaseIterable {
    case none, missingFlush, missingFence, wrongOrder, tornUpdate
}

/// Appends `value` to the log at `root`, with `bug` planted. Stores are raw (through the
/// pointer); durability goes through the pool's `persist` (flush + fence), except the planted
/// missing fence, which flushes through the persistence layer and never fences.
func append(_ value: UInt64, to root: PPointer<TutorialLog>, in pool: Pool, bug: Bug) throws {
    let i = try pool.load(root).count
    let entry = PRawPointer(offset: root.offset + UInt64(64 + 16 * i))
    let count = root.field(\.count)
    func writeEntry() throws {
        try pool.withUnsafeMutablePointer(to: entry.assumingType(Entry.self)) { $0.pointee = Entry(value: value, check: ~value) }
    }
    func writeCount() throws { try pool.withUnsafeMutablePointer(to: count) { $0.pointee = i + 1 } }
    switch bug {
    case .none, .tornUpdate:
        try writeEntry(); try pool.persist(entry, count: 16)      // the entry, durable
        try writeCount(); try pool.persist(count)                  // then the count
    case .missingFlush:
        try writeEntry()                                           // never flushed
        try writeCount(); try pool.persist(count)
    case .missingFence:
        try writeEntry()
        try pool.withUnsafePointer(to: entry.assumingType(Entry.self)) { pool.persistence.flush($0, count: 16) }  // no fence
        try writeCount(); try pool.persist(count)
    case .wrongOrder:
        try writeCount(); try pool.persist(count)                  // the count first
        try writeEntry(); try pool.persist(entry, count: 16)
    }
}

/// Rewrites entry 0 in place (value and check together): 16 bytes that must not tear.
func rewriteFirst(_ value: UInt64, root: PPointer<TutorialLog>, in pool: Pool, bug: Bug) throws {
    if bug == .tornUpdate {
        let entry = root.field(\.entries.0)
        try pool.withUnsafeMutablePointer(to: entry) { $0.pointee = Entry(value: value, check: ~value) }
        try pool.persist(entry)                                    // one flush: two 8-byte words
    } else {
        try pool.transaction { tx in                               // atomic, whatever its size
            try tx.update(root) { $0.entries.0 = Entry(value: value, check: ~value) }
        }
    }
}

/// The invariant: every counted entry is whole (check == ~value) and holds what was appended.
func logIsWellFormed(_ pool: Pool) throws -> Bool {
    let log = try pool.load(try pool.root(TutorialLog.self))
    guard (0...8).contains(log.count) else { return false }
    return try pool.withUnsafePointer(to: try pool.root(TutorialLog.self)) { p in
        (0..<log.count).allSatisfy { i in
            let e = UnsafeRawPointer(p).advanced(by: 64 + 16 * i).load(as: Entry.self)
            return e.check == ~e.value && (i == 0 ? [10, 99].contains(e.value) : e.value == UInt64(i + 1) * 10)
        }
    }
}

/// Thrown by verify when the invariant fails.
struct Broken: Error, CustomStringConvertible { let description: String }

@Suite("crash testing (PersistentHeapTesting)")
struct CrashTestingTests {
    let dir = ScratchDirectory("crash-testing")

    func run(_ bug: Bug, modes: [CrashMode] = CrashMode.allCases) throws -> CrashTestReport {
        var test = CrashTest(layout: "tutorial", poolSize: 1 << 20)
        test.modes = modes
        test.imageDirectory = dir.path
        return try test.explore(seeds: 2) { pool in
            let root = try pool.root(TutorialLog.self)
            try pool.checkpoint()   // the root's creation record retired: raw stores follow
            for k in 1...4 { try append(UInt64(k) * 10, to: root, in: pool, bug: bug) }
            try rewriteFirst(99, root: root, in: pool, bug: bug)
        } verify: { pool, point in
            guard try logIsWellFormed(pool) else { throw Broken(description: "the log is not well formed at \(point)") }
        }
    }

    @Test("the correct structure passes every image of every mode")
    func correctPasses() throws {
        let report = try run(.none)
        #expect(report.images > 100, "\(report)")
        #expect(report.recoveryImages > 0)
        #expect(report.fences > 10)
    }

    @Test("each planted bug is caught", arguments: [Bug.missingFlush, .missingFence, .wrongOrder, .tornUpdate])
    func plantedBugs(_ bug: Bug) throws {
        let error = #expect(throws: CrashTestFailure.self) { try run(bug) }
        let failure = try #require(error)
        #expect(failure.message.contains("not well formed"), "\(failure)")
        #expect(failure.description.contains("replay: PHEAP_CRASH_REPLAY='seed="))
        // The saved image is a pool file that opens (recovery runs) and shows the same damage.
        let path = try #require(failure.imagePath)
        let pool = try Pool.open(path: path, layout: "tutorial")
        #expect(try !logIsWellFormed(pool))
        try pool.close()
        #expect(try PoolInfo.read(path: path).layout == "tutorial")
    }

    @Test("a torn 16-byte update is caught only by 8-byte tearing")
    func tearingNeedsWords() throws {
        // Line-granular images never split the 16 bytes (one line): the bug hides...
        _ = try run(.tornUpdate, modes: [.fence, .evictions, .exhaustive])
        // ...and word-granular images find it, shrunk to the one word that survived.
        let failure = try #require(#expect(throws: CrashTestFailure.self) { try run(.tornUpdate, modes: [.torn]) })
        #expect(failure.point.mode == .torn)
        #expect(failure.survivors.hasPrefix("word at offset"), "\(failure.survivors)")
        #expect(!failure.survivors.contains(", "), "shrunk to one word: \(failure.survivors)")
    }

    @Test("a missing fence is found by the subsets of the lines flushed at one fence")
    func missingFenceIsASubset() throws {
        _ = try run(.missingFence, modes: [.fence])   // pure fence points: both lines or neither
        let failure = try #require(#expect(throws: CrashTestFailure.self) { try run(.missingFence, modes: [.exhaustive]) })
        #expect(failure.point.mode == .exhaustive)
        #expect(failure.survivors.hasPrefix("line at offset"), "\(failure.survivors)")
    }

    @Test("a failure replays exactly: the same point, the same image, the same verdict")
    func replay() throws {
        let failure = try #require(#expect(throws: CrashTestFailure.self) { try run(.wrongOrder) })
        let point = try #require(CrashPoint(failure.point.description))
        #expect(point == failure.point)
        var test = CrashTest(layout: "tutorial", poolSize: 1 << 20)
        test.replay = point
        test.imageDirectory = dir.path
        let seen = LockedPoints()
        let again = #expect(throws: CrashTestFailure.self) {
            try test.explore(seeds: 2) { pool in
                let root = try pool.root(TutorialLog.self)
                try pool.checkpoint()
                for k in 1...4 { try append(UInt64(k) * 10, to: root, in: pool, bug: .wrongOrder) }
            } verify: { pool, at in
                seen.add(at)
                guard try logIsWellFormed(pool) else { throw Broken(description: "the log is not well formed at \(at)") }
            }
        }
        #expect(again?.point == point)
        #expect(seen.all.allSatisfy { $0 == point } && !seen.all.isEmpty, "only the replayed image is opened: \(seen.all)")
    }

    // A structure with its own open-time recovery: an intent (a delta to add) and a total.
    struct Counter: BitwiseCopyable { var intent: Int; var pad: (Int, Int, Int, Int, Int, Int, Int); var total: Int }

    @Test("a recovery that is not idempotent is caught by crashing it", arguments: [false, true])
    func recoveryIdempotence(_ buggy: Bool) throws {
        var test = CrashTest(layout: "counter", poolSize: 1 << 20)
        test.imageDirectory = dir.path
        let explore = {
            try test.explore(seeds: 1) { pool in
                let root = try pool.root(Counter.self)
                try pool.store(5, at: root.field(\.intent))                  // intent, durable
                try pool.transaction { tx in                                  // apply it atomically
                    try tx.update(root) { $0.total += $0.intent; $0.intent = 0 }
                }
            } verify: { pool, _ in
                let c = try pool.load(try pool.root(Counter.self))
                guard c.intent == 0, c.total == 0 || c.total == 5 else { throw Broken(description: "intent \(c.intent), total \(c.total)") }
            } recover: { pool in
                let root = try pool.root(Counter.self)
                guard try pool.load(root).intent != 0 else { return }
                if buggy {
                    // Two steps: a crash between them adds the intent again at the next open.
                    try pool.withMutable(root) { $0.total += $0.intent }
                    try pool.store(0, at: root.field(\.intent))
                } else {
                    try pool.transaction { tx in try tx.update(root) { $0.total += $0.intent; $0.intent = 0 } }
                }
            }
        }
        if buggy {
            let failure = try #require(#expect(throws: CrashTestFailure.self) { try explore() })
            #expect(failure.point.recovery != nil, "found while crashing recovery: \(failure)")
            #expect(failure.message.contains("total 10"), "\(failure)")
        } else {
            let report = try explore()
            #expect(report.recoveryImages > 0)
        }
    }
}

/// Points seen by a verify closure.
final class LockedPoints: @unchecked Sendable {
    private let lock = NSLock()
    private var points: [CrashPoint] = []
    func add(_ p: CrashPoint) { lock.lock(); points.append(p); lock.unlock() }
    var all: [CrashPoint] { lock.lock(); defer { lock.unlock() }; return points }
}

/// The explorer from XCTest: assertions inside `verify` work, and a failure is a thrown error.
final class CrashTestingXCTests: XCTestCase {
    func testExploreFromXCTest() throws {
        var test = CrashTest(layout: "xctest", poolSize: 1 << 20)
        test.printsReport = false
        let report = try test.explore(seeds: 2) { pool in
            let root = try pool.root(Int.self)
            for i in 1...5 { try pool.store(i, at: root) }
        } verify: { pool, point in
            let v = try pool.load(try pool.root(Int.self))
            XCTAssert((0...5).contains(v), "value \(v) at \(point)")
        }
        XCTAssertGreaterThan(report.images, 10)
        XCTAssertEqual(report.seeds, 2)

        var broken = CrashTest(layout: "xctest", poolSize: 1 << 20)
        broken.printsReport = false
        broken.imageDirectory = NSTemporaryDirectory()
        XCTAssertThrowsError(try broken.explore { pool in
            let root = try pool.root(Int.self)
            try pool.store(7, at: root)
        } verify: { pool, _ in
            let v = try pool.load(try pool.root(Int.self))
            if v == 7 { throw Broken(description: "saw 7") }      // a planted failing invariant
        }) { error in
            XCTAssertTrue(error is CrashTestFailure, "\(error)")
            // The saved image is a pool `pheap check` accepts (the heap itself is consistent).
            guard let path = (error as? CrashTestFailure)?.imagePath else { return XCTFail("no image saved") }
            let result = try? runProcess(siblingExecutable("pheap"), ["check", path])
            XCTAssertEqual(result?.0, 0, "\(String(describing: result))")
            XCTAssertTrue(result?.1.contains("consistent") == true)
        }
    }
}
