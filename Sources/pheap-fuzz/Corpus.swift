// The corpus CI replays every run (Tests/FuzzCorpus): cases that crashed the process once, each
// kept so that the class of bug stays fixed. `seed-corpus` plants the damage signatures of the
// reliability issue through the API (each trapped or lost data before it was fixed); `craft`
// rebuilds a case the fuzzer found from the mutation it reported.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PersistentCollections
import PersistentHeap
@_spi(Core) import PersistentHeapCore
import PHeapTestSupport

enum Corpus {
    /// A named damage planted in the clean base image (an open simulated pool of it).
    struct Damage: Sendable {
        let name: String
        let note: String
        let plant: @Sendable (Pool, PPointer<FuzzRoot>) throws -> Void
    }

    static func write(_ pool: Pool, at offset: UInt64, _ value: UInt64) throws {
        try pool.withUnsafeMutablePointer(to: PPointer<UInt64>(offset: offset)) { $0.pointee = value }
        try pool.persist(PPointer<UInt64>(offset: offset))
    }

    static func read(_ pool: Pool, at offset: UInt64) throws -> UInt64 { try pool.load(PPointer<UInt64>(offset: offset)) }

    /// The first leaf of the sorted map (node kind: the first byte; 2 = internal, link at +8).
    static func firstLeaf(_ pool: Pool, _ root: PPointer<FuzzRoot>) throws -> UInt64 {
        var node = try pool.load(try pool.load(root).sorted).root.offset
        while try read(pool, at: node) & 0xff == 2 { node = try read(pool, at: node + 8) }
        return node
    }

    /// The block of the first out-of-line value of the sorted map (a value too long for its leaf).
    static func longString(_ pool: Pool, _ root: PPointer<FuzzRoot>) throws -> UInt64 {
        // Walk the raw leaves: order words (offset in the low 16 bits), entries (key length,
        // info with bit 15 for out of line, key, then length and block).
        var leaf = try firstLeaf(pool, root)
        var leaves = 0
        while leaf != 0 && leaves < 10_000 {
            let count = Int((try read(pool, at: leaf) >> 16) & 0xffff)
            for i in 0..<min(count, 504) {
                let o = try read(pool, at: leaf + 64 + UInt64(i * 8)) & 0xffff
                let head = try pool.load(PPointer<UInt32>(offset: leaf + o))
                let keyLength = UInt64(head & 0xffff)
                if head >> 16 & 0x8000 != 0 {
                    // The block pointer follows the length, unaligned: byte by byte.
                    let at = leaf + o + 4 + keyLength + 8
                    return try (0..<8).reduce(UInt64(0)) { v, b in v | UInt64(try pool.load(PPointer<UInt8>(offset: at + UInt64(b)))) << UInt64(8 * b) }
                }
            }
            leaf = try read(pool, at: leaf + 8)
            leaves += 1
        }
        throw PoolError(.invalidArgument, "no out-of-line value in the sorted map")
    }

    static let damages: [Damage] = [
        Damage(name: "sorted-entry-offset-out-of-range", note: "a B+ tree order entry's offset 0xffff (read past the node, past the mapping)") { p, r in
            let leaf = try firstLeaf(p, r); try write(p, at: leaf + 64, try read(p, at: leaf + 64) | 0xffff)
        },
        Damage(name: "sorted-count-out-of-range", note: "a B+ tree node count of 4000") { p, r in
            let leaf = try firstLeaf(p, r); try write(p, at: leaf, try read(p, at: leaf) & ~(0xffff << 16) | 4000 << 16)
        },
        Damage(name: "sorted-unknown-kind", note: "a B+ tree node kind 7") { p, r in
            let leaf = try firstLeaf(p, r); try write(p, at: leaf, try read(p, at: leaf) & ~0xff | 7)
        },
        Damage(name: "sorted-header-count-max", note: "a B+ tree header count of Int.max (overflow in insert)") { p, r in
            try p.store(Int.max, at: try p.load(r).sorted.field(\.count))
        },
        Damage(name: "sorted-node-pointer-2^63", note: "a leaf link of 2^63 (not enough bits in node(_:_:))") { p, r in
            try write(p, at: try firstLeaf(p, r) + 8, 1 << 63)
        },
        Damage(name: "hash-old-capacity-min", note: "a hash map old capacity of Int.min (negative value in find)") { p, r in
            try p.store(Int.min, at: try p.load(r).hash.field(\.oldCapacity))
        },
        Damage(name: "hash-used-max", note: "a hash map used count of Int.max (overflow in makeRoom)") { p, r in
            try p.store(Int.max, at: try p.load(r).hash.field(\.used))
        },
        Damage(name: "array-capacity-max", note: "an array capacity of Int.max (overflow growing it)") { p, r in
            try p.store(Int.max, at: try p.load(r).array.field(\.capacity))
        },
        Damage(name: "string-count-2^63", note: "an out-of-line value block claiming 2^63 bytes (trapping Int conversion)") { p, r in
            try write(p, at: try longString(p, r), 1 << 63)
        },
        Damage(name: "string-count-zero", note: "found by pheap-fuzz (seed 1, case 696): a long value whose block holds 0 bytes crashed the deep check") { p, r in
            try write(p, at: try longString(p, r), 0)
        },
        Damage(name: "extension-slot-live-object", note: "a lane's extension slot naming a live large object (open freed it)") { _, _ in },
        Damage(name: "extension-slot-2^63", note: "a lane's extension slot of 2^63 (open trapped)") { _, _ in
            // Written below, outside the heap (the API cannot reach the lanes): see `rawDamages`.
        },
        Damage(name: "root-slot-garbage", note: "the root slot pointing into the middle of a block") { _, _ in },
    ]

    /// Damages written into the image bytes directly (places the API refuses to touch: the lanes,
    /// the state page).
    static func rawDamage(_ name: String, _ image: inout [UInt8], big: UInt64) {
        func set(_ at: Int, _ v: UInt64) { for i in 0..<8 { image[at + i] = UInt8(truncatingIfNeeded: v >> UInt64(8 * i)) } }
        switch name {
        case "extension-slot-2^63": set(Format.laneRegionOffset + LaneLayout.extensionSlot, 1 << 63)
        case "extension-slot-live-object": set(Format.laneRegionOffset + Format.laneSize + LaneLayout.extensionSlot, big)
        case "root-slot-garbage": set(0x2040, big + 24)
        default: break
        }
    }

    /// Header values that pass the checksum (re-sealed).
    static let headerDamages: [(String, Int, UInt64, String)] = [
        ("header-growth-step-2^63", 120, 1 << 63, "a growth step of 2^63 with a valid checksum (trap in Pool.grow)"),
        ("header-growth-step-2^63-4096", 120, (1 << 63) - 4096, "a growth step of 2^63 − 4096 with a valid checksum"),
        ("header-table-offset-max", 160, UInt64.max - 4095, "a unit table offset near 2^64 with a valid checksum (overflow in the geometry check)"),
    ]

    static func seed(into dir: String) throws {
        mkdir(dir, 0o755)
        let images = try BaseImages.make()
        guard let clean = images.first(where: { $0.name == "clean" }) else { return }
        var count = 0
        for d in damages {
            let pool = try Pool.openSimulated(image: clean.bytes, layout: fuzzLayout)
            let root = try pool.root(FuzzRoot.self)
            let big = try pool.load(root).big.offset
            try d.plant(pool, root)
            let media = pool.simulatedMedia!
            try pool.close()
            var image = media.durableImage()
            rawDamage(d.name, &image, big: big)
            CorpusFile.write("\(dir)/\(d.name).pheapcase", bytes: image, note: "seed-corpus: \(d.note)")
            count += 1
        }
        for (name, field, value, note) in headerDamages {
            var image = clean.bytes
            for base in [0, 0x1000] { for i in 0..<8 { image[base + field + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * i)) } }
            PoolImage.resealHeaders(&image)
            CorpusFile.write("\(dir)/\(name).pheapcase", bytes: image, note: "seed-corpus: \(note)")
            count += 1
        }
        say("seed-corpus: \(count) cases written to \(dir)")
    }

    /// Seeds for the libFuzzer targets (Fuzz/libfuzzer): both header copies of every base image,
    /// every lane of the crash images (committed logs), the first leaf of the sorted map with the
    /// tree header's count and height in front.
    static func saveSeeds(into dir: String) throws {
        for d in ["", "/header", "/redolog", "/btree"] { mkdir(dir + d, 0o755) }
        let images = try BaseImages.make()
        for image in images {
            let b = image.bytes
            _ = FileBytes.write("\(dir)/header/\(image.name).bin", Array(b[0..<256]) + Array(b[0x1000..<0x1100]))
            for lane in 0..<2 {
                let at = 0x3000 + lane * 2048
                let log = Array(b[at..<(at + 2048)])
                if log.contains(where: { $0 != 0 }) { _ = FileBytes.write("\(dir)/redolog/\(image.name)-lane\(lane).bin", log) }
            }
        }
        if let clean = images.first(where: { $0.name == "clean" }) {
            let pool = try Pool.openSimulated(image: clean.bytes, layout: fuzzLayout)
            let root = try pool.root(FuzzRoot.self)
            let leaf = Int(try firstLeaf(pool, root))
            var seed: [UInt8] = []
            for v in [1, 1] as [UInt64] { for i in 0..<8 { seed.append(UInt8(truncatingIfNeeded: v >> UInt64(8 * i))) } }
            seed += clean.bytes[leaf..<(leaf + 3448)]
            _ = FileBytes.write("\(dir)/btree/first-leaf.bin", seed)
            try pool.close()
        }
        say("save-seeds: written to \(dir)")
    }

    /// `craft OUT BASE OFFSET VALUE [reseal-logs|reseal-headers]`: one 8-byte change to a base image.
    static func craft(_ args: [String]) throws {
        guard args.count >= 4, let offset = Int(args[2]), let value = UInt64(args[3].hasPrefix("0x") ? String(args[3].dropFirst(2)) : args[3], radix: args[3].hasPrefix("0x") ? 16 : 10) else {
            fail("craft OUT BASE OFFSET VALUE [reseal-logs|reseal-headers]")
        }
        guard let base = try BaseImages.make().first(where: { $0.name == args[1] }) else { fail("no base image \(args[1])") }
        var image = base.bytes
        for i in 0..<8 { image[offset + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * i)) }
        if args.contains("reseal-logs") { PoolImage.resealLogs(&image) }
        if args.contains("reseal-headers") { PoolImage.resealHeaders(&image) }
        CorpusFile.write(args[0], bytes: image, note: "craft: \(args.joined(separator: " "))")
    }
}
