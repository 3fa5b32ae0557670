/// How a crash image is made from the state at a fence (docs: "Prove your persistent structure
/// survives any crash").
///
/// At fence *k*, the durable state is what fence *k − 1* made durable, plus any part of the
/// stores made since: a flushed line may or may not have been written back, and a cache may
/// write back any dirty line, flushed or not, at any time.
public enum CrashMode: String, Sendable, CaseIterable, Codable {
    /// The pure fence points: the state just before fence *k* completes (nothing written since
    /// fence *k − 1* survived) and just after it (every flushed line survived, nothing else).
    case fence
    /// Seeded random subsets of the dirty and flushed lines: each line survives whole, with its
    /// flushed or its current contents, or is lost.
    case evictions
    /// 8-byte tearing: each word of each dirty or flushed line independently survives (flushed or
    /// current contents) or is lost — x86 and ARM guarantee only 8-byte atomicity for
    /// persistence, so a 16-byte update can tear.
    case torn
    /// Every subset of the dirty and flushed lines (each survives with its current contents or
    /// is lost), at fences with at most ``CrashTest/exhaustiveLineLimit`` such lines.
    case exhaustive
}

/// Where a crash image came from: enough to make exactly the same image again.
///
/// Its text form (``description``) is what `PHEAP_CRASH_REPLAY` takes to replay it:
/// `seed=3,fence=12,mode=torn,image=2` (with `,recovery=F,rimage=I` for a crash during the
/// recovery of that image).
public struct CrashPoint: Sendable, Hashable, CustomStringConvertible {
    /// The seed of the run (the workload's run number; it seeds every random choice).
    public var seed: UInt64
    /// The fence the crash happened at (1-based; the crash is before it completes).
    public var fence: Int
    /// How the image was made.
    public var mode: CrashMode
    /// Which image of that fence and mode (0-based).
    public var image: Int
    /// For a crash during recovery: the recovery's fence and the image made there.
    public var recovery: (fence: Int, image: Int)?

    /// A point.
    public init(seed: UInt64, fence: Int, mode: CrashMode, image: Int, recovery: (fence: Int, image: Int)? = nil) {
        self.seed = seed
        self.fence = fence
        self.mode = mode
        self.image = image
        self.recovery = recovery
    }

    /// Parses the text form (`seed=3,fence=12,mode=torn,image=2[,recovery=1,rimage=0]`).
    public init?(_ text: String) {
        var fields: [String: String] = [:]
        for part in text.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2 else { return nil }
            fields[kv[0]] = kv[1]
        }
        guard let s = fields["seed"].flatMap(UInt64.init), let f = fields["fence"].flatMap(Int.init),
              let m = fields["mode"].flatMap(CrashMode.init(rawValue:)), let i = fields["image"].flatMap(Int.init) else { return nil }
        self.init(seed: s, fence: f, mode: m, image: i)
        if let rf = fields["recovery"].flatMap(Int.init), let ri = fields["rimage"].flatMap(Int.init) { recovery = (rf, ri) }
    }

    /// `seed=3,fence=12,mode=torn,image=2` (and `,recovery=F,rimage=I`).
    public var description: String {
        var s = "seed=\(seed),fence=\(fence),mode=\(mode.rawValue),image=\(image)"
        if let recovery { s += ",recovery=\(recovery.fence),rimage=\(recovery.image)" }
        return s
    }

    /// Equal points: same seed, fence, mode, image and recovery point.
    public static func == (a: CrashPoint, b: CrashPoint) -> Bool { a.description == b.description }
    /// Hashes the text form.
    public func hash(into hasher: inout Hasher) { hasher.combine(description) }
}

import Foundation
