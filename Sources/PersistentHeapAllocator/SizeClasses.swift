/// Size classes of small blocks and the geometry of their runs.
///
/// Classes step by 16 bytes up to 128, then by a quarter of the power of two (≤ 25% rounding
/// waste) up to 16 KiB. A run of a class is a whole number of units (at least 16 units, 64 KiB,
/// and at least 16 blocks), beginning with a 64-byte header and the allocation bitmap; blocks
/// start at `dataOffset`, aligned to the largest power of two dividing the block size (≤ 4 KiB),
/// so a block of a size that is a multiple of N is N-aligned. Requests above 16 KiB, or aligned
/// beyond what a class gives, are served as extents of whole units.
@_spi(Core) import PersistentHeapCore

struct SizeClass {
    let blockSize: Int
    /// ⌈2³² / blockSize⌉: `(x * reciprocal) >> 32 == x / blockSize` for every x < 2¹⁸ (runs are
    /// at most 256 KiB and blocks at most 16 KiB), so lookups avoid a division.
    let reciprocal: UInt64
    let units: Int
    let blockCount: Int
    let dataOffset: Int
    let bitmapWords: Int
    /// Natural alignment of blocks of this class.
    let alignment: Int
}

enum SizeClasses {
    /// Largest request served from runs.
    static let maxSmallSize = 16384

    static let sizes: [Int] = {
        var s = stride(from: 16, through: 128, by: 16).map { $0 }
        var base = 128
        while base < maxSmallSize {
            for q in 1...4 { s.append(base + base / 4 * q) }
            base *= 2
        }
        return s
    }()

    static let all: [SizeClass] = sizes.map(geometry(for:))

    static var count: Int { sizes.count }

    /// Class index for each request size rounded up to 16 bytes: `lookup[(size + 15) / 16]`.
    static let lookup: [UInt8] = {
        var t = [UInt8](repeating: 0, count: maxSmallSize / 16 + 1)
        var c = 0
        for i in 0..<t.count {
            while sizes[c] < i * 16 { c += 1 }
            t[i] = UInt8(c)
        }
        return t
    }()

    static func geometry(for blockSize: Int) -> SizeClass {
        let alignment = min(blockSize & -blockSize, Format.unitSize)
        let units = max(16, (16 * blockSize + Format.unitSize - 1) / Format.unitSize)
        let runBytes = units * Format.unitSize
        // Start from an upper bound on the block count and shrink until header+bitmap fit.
        var blocks = runBytes / blockSize
        while true {
            let words = (blocks + 63) / 64
            let data = (RunField.bitmap + words * 8 + alignment - 1) / alignment * alignment
            if data + blocks * blockSize <= runBytes {
                return SizeClass(blockSize: blockSize, reciprocal: ((1 << 32) + UInt64(blockSize) - 1) / UInt64(blockSize),
                                 units: units, blockCount: blocks, dataOffset: data, bitmapWords: words, alignment: alignment)
            }
            blocks -= 1
        }
    }
}
