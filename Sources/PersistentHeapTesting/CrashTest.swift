import Foundation
@_spi(Core) import PersistentHeapCore
@_spi(Testing) import PersistentHeap
import Synchronization

/// Proves a persistent structure crash-consistent from a unit test: runs a workload against a
/// simulated pool and, at every fence, opens crash images of that moment — running the pool's
/// recovery and yours — and checks your invariant on each.
///
/// ```swift
/// let report = try CrashTest(layout: "todo", poolSize: 8 << 20).explore(seeds: 8) { pool in
///     try addThreeItemsAndRemoveOne(pool)          // the workload
/// } verify: { pool, point in                       // called on each reopened crash image
///     try #require(todoListIsWellFormed(pool))     // the invariant
/// }
/// print(report)                                    // images, fences, time
/// ```
///
/// **The model.** At fence *k* the durable state is what fence *k − 1* left, plus any part of
/// the stores made since: a flushed line may or may not have been written back, and a cache may
/// write back any dirty line at any time. The explorer takes, at each fence, the images of each
/// ``CrashMode`` in ``modes``: the pure fence points, seeded random subsets of lines, 8-byte
/// tearing, and (for fences with few changed lines) every subset. With ``crashesRecovery``, each
/// pure-fence image is also crashed at every fence of its own recovery and reopened again.
///
/// **Failures** are reproducible: the explorer stops a run at its first failing image (so the
/// earliest failing fence of that seed), shrinks it to the fewest surviving lines or words that
/// still fail, saves the image as a pool file (`pheap check` and `Pool.open` accept it), and
/// throws a ``CrashTestFailure`` that prints the fence, seed, mode and the one line that replays
/// exactly that image: `PHEAP_CRASH_REPLAY='seed=…,fence=…,mode=…,image=…' swift test --filter …`.
///
/// **What it cannot see.** Stores count only as the simulated media sees them: a store that
/// never goes through the pool's `persist`/`store`/`withMutable`, a transaction or the
/// persistence layer's flush is found only as a dirty line at the next flush or fence of the
/// pool — if no fence follows it, no image includes it.
///
/// The workload and `verify` run on the calling thread (verify is called from inside the fence
/// of the workload's thread, one image at a time), so Swift Testing's `#expect`/`#require` and
/// XCTest's assertions work in them.
public struct CrashTest: Sendable {
    /// The layout name of the pool the workload runs on (and images are opened with).
    public var layout: String
    /// The simulated pool's initial size in bytes.
    public var poolSize: Int
    /// Options of the simulated pool (durability is always simulated).
    public var options: PoolOptions
    /// The image kinds explored at each fence. Default: fence points, evictions, torn words and
    /// exhaustive subsets of small fences.
    public var modes: [CrashMode] = CrashMode.allCases
    /// Random images per fence for ``CrashMode/evictions`` and ``CrashMode/torn`` (each).
    public var randomImages = 3
    /// ``CrashMode/exhaustive`` explores fences with at most this many changed lines (2^n images).
    public var exhaustiveLineLimit = 6
    /// Whether pure-fence images are also crashed at every fence of their recovery.
    public var crashesRecovery = true
    /// Explore only every `fenceStride`-th fence (1: all).
    public var fenceStride = 1
    /// Where a failing image is saved (default: `PHEAP_CRASH_DIR`, else the temporary directory).
    public var imageDirectory: String?
    /// Whether `explore` prints its report (one line) when it ends.
    public var printsReport = true
    /// Explore only this image (default: the `PHEAP_CRASH_REPLAY` environment variable's point,
    /// if set): a failure's report names it.
    public var replay: CrashPoint?

    /// A crash test of pools with `layout`, `poolSize` bytes, `options`.
    public init(layout: String, poolSize: Int = 8 << 20, options: PoolOptions = PoolOptions()) {
        self.layout = layout
        self.poolSize = poolSize
        self.options = options
    }

    /// Runs `workload` `seeds` times, each on a fresh simulated pool, and checks `verify` on the
    /// crash images of every fence.
    ///
    /// - Parameters:
    ///   - seeds: runs of the workload; each seeds the random images of its run differently.
    ///   - workload: what to crash: your code, run against the pool.
    ///   - verify: your invariant, called on each crash image after it was opened (the pool's
    ///     recovery ran) and after `recover` ran on it. Throw (or `#require`) to report a failure.
    ///   - recover: your own open-time recovery, if your structure has one: run on each image
    ///     before `verify` — and crashed too, with ``crashesRecovery``.
    /// - Returns: what was explored (images, fences, seconds).
    /// - Throws: ``CrashTestFailure`` when an image fails (or cannot be opened); errors the
    ///   workload throws.
    @discardableResult
    public func explore(seeds: Int = 1, _ workload: (Pool) throws -> Void,
                        verify: @escaping (Pool, CrashPoint) throws -> Void,
                        recover: ((Pool) throws -> Void)? = nil) throws -> CrashTestReport {
        let replay = self.replay ?? ProcessInfo.processInfo.environment["PHEAP_CRASH_REPLAY"].flatMap(CrashPoint.init)
        let explorer = Explorer(test: self, verify: verify, recover: recover, replay: replay)
        let started = Date()
        for seed in 0..<UInt64(max(1, seeds)) {
            if let replay, replay.seed != seed { continue }
            try explorer.run(seed: seed, workload)
        }
        let report = explorer.report(seconds: Date().timeIntervalSince(started))
        if let failure = try explorer.firstFailure() { throw failure }
        return report
    }
}

extension CrashTest {
    /// Explores the crash images of a simulated pool you prepared, during `workload` only:
    /// every fence `workload` causes on `pool` gets its images, checked by `verify` (and
    /// `recover`). For tests that set a pool up before the part worth crashing. The pool stays
    /// open; its layout must be ``layout``.
    ///
    /// - Parameters:
    ///   - pool: a pool from `Pool.createSimulated` or `Pool.openSimulated`.
    ///   - seed: seeds the random images (the run number in reports and replays).
    ///   - workload: what to crash; only its fences get images.
    ///   - verify: your invariant, on each crash image after recovery (and `recover`).
    ///   - recover: your own open-time recovery, run on each image before `verify`.
    /// - Throws: ``CrashTestFailure`` for the first failing image (shrunk, saved); `invalidArgument`
    ///   for a pool that is not simulated; errors the workload throws.
    @discardableResult
    public func explore(_ pool: Pool, seed: UInt64 = 0, during workload: () throws -> Void,
                        verify: @escaping (Pool, CrashPoint) throws -> Void,
                        recover: ((Pool) throws -> Void)? = nil) throws -> CrashTestReport {
        guard let media = pool.simulatedMedia else {
            throw PoolError(.invalidArgument, "crash tests need a simulated pool (Pool.createSimulated)")
        }
        let replay = self.replay ?? ProcessInfo.processInfo.environment["PHEAP_CRASH_REPLAY"].flatMap(CrashPoint.init)
        let explorer = Explorer(test: self, verify: verify, recover: recover, replay: replay)
        let started = Date()
        if replay == nil || replay?.seed == seed {
            try explorer.run(media: media, seed: seed, workload)
        }
        let report = explorer.report(seconds: Date().timeIntervalSince(started))
        if let failure = try explorer.firstFailure() { throw failure }
        return report
    }
}

/// What a crash test explored.
public struct CrashTestReport: Sendable, CustomStringConvertible {
    /// The layout of the pools.
    public var layout: String
    /// Runs of the workload.
    public var seeds: Int
    /// Fences at which images were taken (over all runs).
    public var fences: Int
    /// Crash images opened and checked (recovery crashes included).
    public var images: Int
    /// Of those, images made during the recovery of another image.
    public var recoveryImages: Int
    /// Wall-clock seconds, workload included.
    public var seconds: Double

    /// Images per second.
    public var imagesPerSecond: Double { seconds > 0 ? Double(images) / seconds : 0 }

    /// `crash test "todo": 12,345 images (1,200 during recovery) at 400 fences of 8 runs in 2.1 s (5,879 images/s)`.
    public var description: String {
        "crash test \"\(layout)\": \(images) images (\(recoveryImages) during recovery) at \(fences) fences of \(seeds) runs in "
            + String(format: "%.2f s (%.0f images/s)", seconds, imagesPerSecond)
    }
}

/// A crash image on which the invariant failed (or which could not be opened).
public struct CrashTestFailure: Error, CustomStringConvertible {
    /// Where the image came from.
    public var point: CrashPoint
    /// What failed: the error `verify` or `recover` threw, or the open's.
    public var message: String
    /// What of the stores since the previous fence survived in the shrunk image.
    public var survivors: String
    /// The failing image, saved as a pool file, if it could be written.
    public var imagePath: String?

    /// The report: fence, seed, mode, what survived, the saved image and how to replay it.
    public var description: String {
        var s = "crash image failed at fence \(point.fence) (seed \(point.seed), mode \(point.mode.rawValue), image \(point.image)"
        if let r = point.recovery { s += ", crashed during its recovery at fence \(r.fence), image \(r.image)" }
        s += "): \(message)\n  survived since the previous fence (shrunk): \(survivors)"
        if let imagePath { s += "\n  image saved: \(imagePath) (pheap check \(imagePath))" }
        s += "\n  replay: PHEAP_CRASH_REPLAY='\(point)' swift test --filter <this test>"
        return s
    }
}
