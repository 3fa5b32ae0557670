import Foundation
@_spi(Core) import PersistentHeapCore
@_spi(Testing) import PersistentHeap

/// The explorer of one ``CrashTest/explore(seeds:_:verify:recover:)`` call. Fence hooks may come
/// from any thread of the workload: `lock` makes them take turns (a fence waits while its images
/// are checked, as a crash test should).
final class Explorer: @unchecked Sendable {
    let test: CrashTest
    let verify: (Pool, CrashPoint) throws -> Void
    let recover: ((Pool) throws -> Void)?
    let replay: CrashPoint?
    private let lock = NSLock()

    private var fences = 0
    private var images = 0
    private var recoveryImages = 0
    private var seedsRun = 0
    /// The first failing image, with what it takes to make it again (for shrinking).
    private var failed: (point: CrashPoint, state: FenceState?, pieces: [Piece], message: String)?

    init(test: CrashTest, verify: @escaping (Pool, CrashPoint) throws -> Void, recover: ((Pool) throws -> Void)?, replay: CrashPoint?) {
        self.test = test
        self.verify = verify
        self.recover = recover
        self.replay = replay
    }

    /// One run of the workload on a fresh pool, images at its fences.
    func run(seed: UInt64, _ workload: (Pool) throws -> Void) throws {
        guard failed == nil else { return }
        seedsRun += 1
        let pool = try Pool.createSimulated(size: test.poolSize, layout: test.layout, options: test.options)
        let media = pool.simulatedMedia!
        media.onFence = { [self] m, fence in self.atFence(m, fence, seed: seed) }
        defer {
            media.onFence = nil
            try? pool.close()
        }
        try workload(pool)
    }

    /// The images of `media`'s fences during `workload` (a pool the caller made and keeps).
    func run(media: SimulatedMedia, seed: UInt64, _ workload: () throws -> Void) throws {
        seedsRun += 1
        let previous = media.onFence
        media.onFence = { [self] m, fence in self.atFence(m, fence, seed: seed) }
        defer { media.onFence = previous }
        try workload()
    }

    private func atFence(_ media: SimulatedMedia, _ fence: Int, seed: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        guard failed == nil, fence % max(1, test.fenceStride) == 0 else { return }
        if let replay, replay.fence != fence { return }
        fences += 1
        let state: FenceState
        do {
            state = FenceState(snapshot: try media.snapshot(), candidates: media.candidates())
        } catch {
            failed = (CrashPoint(seed: seed, fence: fence, mode: .fence, image: 0), nil, [], "the crash image could not be made: \(error)")
            return
        }
        for mode in test.modes {
            for (i, pieces) in state.images(mode, seed: seed, fence: fence, randomImages: test.randomImages,
                                            exhaustiveLimit: test.exhaustiveLineLimit).enumerated() {
                if let replay, replay.mode != mode || replay.image != i { continue }
                let point = CrashPoint(seed: seed, fence: fence, mode: mode, image: i)
                if replay?.recovery == nil, let message = check(state, pieces, point) {
                    fail(point, state, pieces, message)
                    return
                }
                if test.crashesRecovery && (mode == .fence || replay?.recovery != nil) {
                    if let (p, s, pc, message) = crashRecovery(of: state, pieces, point) {
                        fail(p, s, pc, message)
                        return
                    }
                }
            }
        }
    }

    /// Opens the image of `pieces`, runs `recover` and `verify`; the failure's text, or nil.
    private func check(_ state: FenceState, _ pieces: [Piece], _ point: CrashPoint,
                       onFence: (@Sendable (SimulatedMedia, Int) -> Void)? = nil) -> String? {
        images += 1
        if point.recovery != nil { recoveryImages += 1 }
        do {
            let pool = try Pool.openSimulated(snapshot: state.snapshot, writes: state.writes(pieces), layout: test.layout,
                                              options: test.options, onFence: onFence)
            defer { try? pool.close() }
            try recover?(pool)
            pool.simulatedMedia?.onFence = nil
            try verify(pool, point)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Opens the image of `pieces` and crashes it at every fence of its recovery (the pool's and
    /// `recover`'s): each such image is opened, recovered and verified. The first failure, or nil.
    private func crashRecovery(of state: FenceState, _ pieces: [Piece], _ point: CrashPoint)
        -> (CrashPoint, FenceState, [Piece], String)? {
        let parentWrites = state.writes(pieces)
        let found = LockedBox<(CrashPoint, FenceState, [Piece], String)?>(nil)
        let hook: @Sendable (SimulatedMedia, Int) -> Void = { [self] media, rfence in
            guard found.value == nil, let changes = media.durableChanges() else { return }
            if let r = replay?.recovery, r.fence != rfence { return }
            var nested = FenceState(snapshot: state.snapshot, candidates: media.candidates())
            nested.baseWrites = parentWrites + changes
            var images = nested.images(.fence, seed: point.seed, fence: rfence, randomImages: 0, exhaustiveLimit: 0)
            images += nested.images(.evictions, seed: point.seed &+ UInt64(point.fence), fence: rfence, randomImages: 1, exhaustiveLimit: 0)
            for (i, p) in images.enumerated() {
                if let r = replay?.recovery, r.image != i { continue }
                var at = point
                at.recovery = (rfence, i)
                if let message = check(nested, p, at) {
                    found.value = (at, nested, p, message)
                    return
                }
            }
        }
        // The outer image itself: its failure (if any) is reported by `check` at its own point.
        images -= 1
        _ = check(state, pieces, point, onFence: hook)
        return found.value
    }

    private func fail(_ point: CrashPoint, _ state: FenceState, _ pieces: [Piece], _ message: String) {
        // The live snapshot changes with later fences: keep a copy.
        let kept = (try? state.snapshot.copy()).map { FenceState(snapshot: $0, candidates: state.candidates, baseWrites: state.baseWrites) } ?? state
        failed = (point, kept, pieces, message)
    }

    func report(seconds: Double) -> CrashTestReport {
        let r = CrashTestReport(layout: test.layout, seeds: seedsRun, fences: fences, images: images,
                                recoveryImages: recoveryImages, seconds: seconds)
        if test.printsReport { print(r) }
        return r
    }

    /// The first failure, shrunk (fewest surviving pieces that still fail) and saved as a pool
    /// file; nil when every image passed.
    func firstFailure() throws -> CrashTestFailure? {
        guard let (point, fenceState, pieces, message) = failed else { return nil }
        guard let state = fenceState else { return CrashTestFailure(point: point, message: message, survivors: "unknown", imagePath: nil) }
        var kept = pieces
        var lastMessage = message
        var i = kept.count - 1
        while i >= 0 {
            var fewer = kept
            fewer.remove(at: i)
            if let m = check(state, fewer, point) {
                kept = fewer
                lastMessage = m
            }
            i -= 1
        }
        var path: String? = nil
        let dir = test.imageDirectory ?? ProcessInfo.processInfo.environment["PHEAP_CRASH_DIR"] ?? NSTemporaryDirectory()
        let file = (dir as NSString).appendingPathComponent(
            "pheap-crash-\(test.layout)-\(point.description.replacingOccurrences(of: ",", with: "-").replacingOccurrences(of: "=", with: "")).pool")
        if let bytes = try? state.snapshot.bytes(applying: state.writes(kept)), FileManager.default.createFile(atPath: file, contents: Data(bytes)) {
            path = file
        }
        return CrashTestFailure(point: point, message: lastMessage, survivors: state.describe(kept), imagePath: path)
    }
}

/// A value behind a lock, for the recovery hook (a `@Sendable` closure).
final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}
