// The base images the fuzzer mutates: real pools built through the public API, holding every
// kind of structure (a linked list, a sorted map of strings with splits, a hash map in the middle
// of an incremental resize, an array, a dictionary of arrays, a large object), closed cleanly or
// caught mid-operation by a simulated crash (so that lane logs hold committed records for
// recovery to replay).
import PersistentCollections
import PersistentHeap
@_spi(Core) import PersistentHeapCore

/// The layout every fuzz pool is created with.
let fuzzLayout = "pheap-fuzz"

/// The root of a fuzz pool.
struct FuzzRoot: BitwiseCopyable {
    var list: PPointer<ListNode>
    var sorted: PersistentSortedDictionary<String, String>.Ref
    var hash: PersistentDictionary<Int, Int>.Ref
    var array: PersistentArray<Int>.Ref
    var nested: PersistentDictionary<Int, PersistentArray<Int>.Ref>.Ref
    var big: PRawPointer
}

/// A node of the linked list (the application's own raw structure).
struct ListNode: BitwiseCopyable {
    var value: Int
    var next: PPointer<ListNode>
}

/// Keys and values of the sorted map: short (inline) and long (out-of-line) strings.
func sortedKey(_ i: Int) -> String { "key:\(10_000 + i)" + (i % 3 == 0 ? String(repeating: "k", count: 20) : "") }
func sortedValue(_ i: Int) -> String {
    // Some values too long for a leaf: kept out of line, in blocks of their own.
    "value \(i)" + (i % 2 == 0 ? String(repeating: "v", count: 30) : "") + (i % 7 == 0 ? String(repeating: "w", count: 600) : "")
}

/// Containers of a fuzz pool, opened.
struct FuzzContainers {
    let sorted: PersistentSortedDictionary<String, String>
    let hash: PersistentDictionary<Int, Int>
    let array: PersistentArray<Int>
    let nested: PersistentDictionary<Int, PersistentArray<Int>.Ref>

    init(_ pool: Pool, _ root: PPointer<FuzzRoot>) throws {
        sorted = try .open(pool, at: root.field(\.sorted))
        hash = try .open(pool, at: root.field(\.hash))
        array = try .open(pool, at: root.field(\.array))
        nested = try .open(pool, at: root.field(\.nested))
    }
}

/// A base image and the map of its regions.
struct BaseImage {
    let name: String
    let bytes: [UInt8]
    let regions: [PoolRegion]
}

enum BaseImages {
    static let poolSize = 1 << 20
    static let options = PoolOptions(maxSize: 8 << 20, growthStep: 1 << 20, laneCount: 2)

    /// Fills a pool: the full data set (one transaction per group, as an application would).
    static func populate(_ pool: Pool) throws {
        let root = try pool.root(FuzzRoot.self)
        let c = try FuzzContainers(pool, root)
        for i in 0..<20 {
            let head = try pool.load(root.field(\.list))
            _ = try pool.allocate(ListNode(value: i, next: head), linkedInto: root.field(\.list))
        }
        _ = try pool.allocate(bytes: 20 << 10, linkedInto: root.field(\.big))
        for batch in 0..<6 {
            try pool.transaction { _ in
                for i in (batch * 50)..<(batch * 50 + 50) { try c.sorted.updateValue(sortedValue(i), forKey: sortedKey(i)) }
            }
        }
        // The hash map stops in the middle of a resize: 12 entries fill 16 buckets to 3/4, the
        // 13th starts a table of 32 and migrates 16 old buckets per change — so stop right after.
        for i in 0..<13 { try c.hash.updateValue(i * i, forKey: i) }
        try c.array.append(contentsOf: 0..<100)
        for k in 0..<4 {
            try pool.transaction { tx in
                let a = try PersistentArray<Int>.create(in: tx)
                try a.append(contentsOf: (0..<(k * 3)).map { $0 * k })
                try c.nested.updateValue(a.ref, forKey: k)
            }
        }
        for i in (0..<300).filter({ $0 % 7 == 3 }) { try c.sorted.removeValue(forKey: sortedKey(i)) }
    }

    /// The durable images of a simulated pool just before each of the first `limit` fences of
    /// `operation` (at fence k: everything before it durable), and right after it (its record
    /// durable and live, its effects not yet written back in place).
    static func crashImages(_ pool: Pool, limit: Int = 6, _ operation: () throws -> Void) throws -> [[UInt8]] {
        guard let media = pool.simulatedMedia else { return [] }
        let start = media.fenceCount
        nonisolated(unsafe) var images: [[UInt8]] = []
        media.onFence = { m, n in if n > start && n <= start + limit { images.append(m.durableImage()) } }
        try operation()
        media.onFence = nil
        images.append(media.durableImage())
        return images
    }

    /// Builds every base image.
    static func make() throws -> [BaseImage] {
        var out: [(String, [UInt8])] = []
        // 1. Closed cleanly.
        let clean = try Pool.createSimulated(size: poolSize, layout: fuzzLayout, options: options)
        try populate(clean)
        let media = clean.simulatedMedia!
        try clean.close()
        out.append(("clean", media.durableImage()))
        // 2-4. Crashes: inside and after a sorted-map insert with a split, an allocate-and-link,
        // a large transaction (its record continued in the lane's extension block); every image
        // also holds the live records of the population.
        let crash = try Pool.createSimulated(size: poolSize, layout: fuzzLayout, options: options)
        try populate(crash)
        let root = try crash.root(FuzzRoot.self)
        let c = try FuzzContainers(crash, root)
        for (k, img) in try crashImages(crash, { try c.sorted.updateValue("new", forKey: sortedKey(1000)) }).enumerated() {
            out.append(("crash-tx-\(k + 1)", img))
        }
        for (k, img) in try crashImages(crash, {
            let head = try crash.load(root.field(\.list))
            _ = try crash.allocate(ListNode(value: 99, next: head), linkedInto: root.field(\.list))
        }).enumerated() { out.append(("crash-linked-\(k + 1)", img)) }
        for (k, img) in try crashImages(crash, {
            try crash.transaction { _ in for i in 300..<420 { try c.sorted.updateValue(sortedValue(i), forKey: sortedKey(i)) } }
        }).enumerated() { out.append(("crash-large-tx-\(k + 1)", img)) }
        try crash.close()
        return try out.map { name, bytes in
            let p = try Pool.openSimulated(image: bytes, layout: fuzzLayout)
            defer { try? p.close() }
            return BaseImage(name: name, bytes: bytes, regions: try p.regions())
        }
    }
}
