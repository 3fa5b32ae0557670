// Seeded mutations of pool images: bit flips, random words and boundary values aimed at one
// region (headers, lane logs, unit table, run headers and bitmaps, container structures), with
// checksums re-sealed part of the time so that hostile values get past them; and whole-file
// damage (truncation, zeros, garbage, empty). The same (image, seed) always gives the same case.
import PersistentCollections
import PersistentHeap
@_spi(Core) import PersistentHeapCore
import PHeapTestSupport

struct Mutator {
    let base: BaseImage
    var rng: RepeatableRandomNumberGenerator
    /// What was done, for the report of a failing case.
    var log: [String] = []

    init(base: BaseImage, seed: UInt64) {
        self.base = base
        rng = RepeatableRandomNumberGenerator(seed: seed)
    }

    mutating func chance(_ percent: Int) -> Bool { Int.random(in: 0..<100, using: &rng) < percent }
    mutating func pick<T>(_ xs: [T]) -> T { xs[Int.random(in: 0..<xs.count, using: &rng)] }

    /// A value likely to break arithmetic or bounds: 0, ±1, powers of two at type edges, the pool
    /// size and heap boundaries ± a little, offsets of live blocks (pointer confusion), small counts.
    mutating func hostileValue(_ image: [UInt8]) -> UInt64 {
        let size = UInt64(image.count)
        let blocks = base.regions.filter { $0.kind == "block" || $0.kind == "large object" }
        let block = blocks.isEmpty ? 0 : UInt64(pick(blocks).offset)
        let candidates: [UInt64] = [
            0, 1, 2, 7, 8, 15, 16, 63, 64, 255, 256, 4000, 4095, 4096, 65535, 1 << 20,
            UInt64(UInt32.max), 1 << 31, 1 << 32, 1 << 46, (1 << 63) - 1, 1 << 63, UInt64.max, UInt64.max - 1,
            UInt64.max - 4095, size, size - 1, size + 1, size + 4096, size - 4096, size / 2,
            block, block + 8, block &- 8, block + 64, 0x3000, 0x2040,
        ]
        if chance(15) { return rng.next() }
        if chance(10) { return UInt64(Int.random(in: 0...300, using: &rng)) }
        return pick(candidates)
    }

    /// Applies 1–3 mutations (occasionally whole-file damage instead). Returns the new image.
    mutating func mutate() -> [UInt8] {
        var image = base.bytes
        if chance(4) { return wholeFile(image) }
        for _ in 0..<Int.random(in: 1...3, using: &rng) { mutateRegion(&image) }
        return image
    }

    private mutating func wholeFile(_ image: [UInt8]) -> [UInt8] {
        switch Int.random(in: 0..<6, using: &rng) {
        case 0:
            let n = Int.random(in: 0..<image.count, using: &rng)
            log.append("truncate to \(n) bytes")
            return Array(image[0..<n])
        case 1:
            log.append("all zeros")
            return [UInt8](repeating: 0, count: image.count)
        case 2:
            log.append("garbage")
            return (0..<image.count).map { _ in UInt8.random(in: 0...255, using: &rng) }
        case 3:
            log.append("empty file")
            return []
        case 4:
            let n = Int.random(in: 1...(1 << 16), using: &rng)
            log.append("truncate by \(n) bytes")
            return Array(image[0..<max(0, image.count - n)])
        default:
            log.append("garbage after the headers")
            var out = image
            for i in 0x2000..<min(out.count, 0x2000 + (64 << 10)) { out[i] = UInt8.random(in: 0...255, using: &rng) }
            return out
        }
    }

    private mutating func setWord(_ image: inout [UInt8], _ offset: Int, _ v: UInt64, width: Int = 8) {
        guard offset >= 0, offset + width <= image.count else { return }
        for i in 0..<width { image[offset + i] = UInt8(truncatingIfNeeded: v >> UInt64(8 * i)) }
    }

    private func word(_ image: [UInt8], _ offset: Int) -> UInt64 {
        guard offset >= 0, offset + 8 <= image.count else { return 0 }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(image[offset + i]) << UInt64(8 * i) }
        return v
    }

    /// One change inside one region.
    private mutating func mutateRegion(_ image: inout [UInt8]) {
        let weights: [(String, Int)] = [
            ("header", 10), ("backup header", 3), ("state page", 5), ("log record", 10), ("lane log", 4),
            ("extension slot", 4), ("unit table", 12), ("run header", 10), ("block", 34), ("large object", 8),
        ]
        var r = Int.random(in: 0..<weights.reduce(0) { $0 + $1.1 }, using: &rng)
        var kind = weights[0].0
        for (k, w) in weights { if r < w { kind = k; break }; r -= w }
        let candidates = base.regions.filter { $0.kind == kind }
        guard !candidates.isEmpty else { return }
        var region = pick(candidates)
        if (kind == "block" || kind == "large object") && chance(50) {
            // Weighted by size: B+ tree nodes and hash tables rather than the many short strings.
            var w = Int.random(in: 0..<candidates.reduce(0) { $0 + $1.count }, using: &rng)
            for c in candidates { if w < c.count { region = c; break }; w -= c.count }
        }
        switch kind {
        case "header", "backup header":
            let field = pick(PoolImage.headerFieldOffsets)
            let width = [HeaderWidth.u16, .u32, .u64].first { $0.fields.contains(field) }?.bytes ?? 8
            let v = chance(70) ? hostileValue(image) : word(image, region.offset + field) ^ (1 << UInt64(Int.random(in: 0..<(8 * width), using: &rng)))
            setWord(&image, region.offset + field, v, width: width)
            if kind == "header" && chance(30) { setWord(&image, 0x1000 + field, v, width: width) }
            let seal = chance(75)
            if seal { PoolImage.resealHeaders(&image) }
            log.append("\(kind) field +\(field) := 0x\(String(v, radix: 16))\(seal ? " (resealed)" : "")")
        case "log record", "lane log":
            let at = region.offset + 8 * Int.random(in: 0..<(min(region.count, 256) / 8), using: &rng)
            let v = chance(50) ? hostileValue(image) : word(image, at) ^ (1 << UInt64(Int.random(in: 0..<64, using: &rng)))
            setWord(&image, at, v)
            let seal = chance(70)
            if seal { PoolImage.resealLogs(&image) }
            log.append("\(kind) at \(at) := 0x\(String(v, radix: 16))\(seal ? " (resealed)" : "")")
        case "unit table":
            let entries = max(1, region.count / 8)
            let at = region.offset + 8 * Int.random(in: 0..<min(entries, 64), using: &rng)
            let v: UInt64
            if chance(40) {
                // A well-formed entry with a hostile length or class.
                let length = pick([0, 1, 15, 16, 17, 255, Int.random(in: 1...4096, using: &rng), 1 << 38, (1 << 39) - 1])
                v = PoolImage.unitEntry(kind: UInt8(Int.random(in: 0...4, using: &rng)), length: length, sizeClass: Int.random(in: 0...40, using: &rng))
            } else {
                v = chance(50) ? hostileValue(image) : word(image, at) ^ (1 << UInt64(Int.random(in: 0..<64, using: &rng)))
            }
            setWord(&image, at, v)
            log.append("unit table entry at \(at) := 0x\(String(v, radix: 16))")
        case "run header":
            let at = region.offset + 4 * Int.random(in: 0..<(min(region.count, 128) / 4), using: &rng)
            let v = chance(50) ? hostileValue(image) : word(image, at) ^ (1 << UInt64(Int.random(in: 0..<32, using: &rng)))
            setWord(&image, at, v, width: 4)
            let seal = at - region.offset < 60 && chance(60)
            if seal { PoolImage.resealRunHeader(&image, at: region.offset) }
            log.append("run header at \(at) := 0x\(String(v & 0xffff_ffff, radix: 16))\(seal ? " (resealed)" : "")")
        default:
            // Container structures and application data: headers and node fields first.
            let span = chance(60) ? min(region.count, 64) : min(region.count, 4096)
            let at = region.offset + 8 * Int.random(in: 0..<max(1, span / 8), using: &rng)
            let v: UInt64
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: v = word(image, at) ^ (1 << UInt64(Int.random(in: 0..<64, using: &rng)))
            case 1: v = word(image, at) ^ UInt64(Int.random(in: 1...255, using: &rng))  // low bits: counts, slots, kinds
            default: v = hostileValue(image)
            }
            setWord(&image, at, v)
            log.append("\(kind) at \(at) (+\(at - region.offset)) := 0x\(String(v, radix: 16))")
        }
    }
}

/// Widths of header fields.
enum HeaderWidth {
    case u16, u32, u64
    var fields: [Int] {
        switch self {
        case .u16: return [8]                   // major
        case .u32: return [152, 156, 176, 180]  // lane count, lane size, unit size, max units
        case .u64: return []
        }
    }
    var bytes: Int { self == .u16 ? 2 : (self == .u32 ? 4 : 8) }
}
