// Package-only hooks for the tools of this package that attack pools on purpose (the mutation
// fuzzer, tests): where each structure lives in a pool file, and how to re-seal the checksums of
// an image after changing it, so that hostile values get past the CRCs and reach the code that
// must validate them. Not public API.

/// A region of a pool file: what it holds, where, how many bytes.
@_spi(Core) public struct PoolRegion: Sendable, Equatable {
    @_spi(Core) public let kind: String
    @_spi(Core) public let offset: Int
    @_spi(Core) public let count: Int
    @_spi(Core) public init(kind: String, offset: Int, count: Int) {
        self.kind = kind
        self.offset = offset
        self.count = count
    }
}

/// Operations on pool images (byte arrays holding a whole pool file) for tools that damage
/// pools on purpose.
@_spi(Core) public enum PoolImage {
    /// CRC-32C, as the pool format uses it.
    @_spi(Core) public static func crc32c(_ bytes: UnsafeRawBufferPointer) -> UInt32 { Checksum.crc32c(bytes) }

    /// Recomputes the checksum of both header copies (whatever their fields hold).
    @_spi(Core) public static func resealHeaders(_ image: inout [UInt8]) {
        for at in [Format.primaryHeaderOffset, Format.backupHeaderOffset] where image.count >= at + Format.headerSize {
            image.withUnsafeMutableBytes { b in
                let crc = Checksum.crc32c(UnsafeRawBufferPointer(rebasing: b[at..<(at + HeaderField.checksum)]))
                b.storeBytes(of: crc, toByteOffset: at + HeaderField.checksum, as: UInt32.self)
            }
        }
    }

    /// Recomputes the checksum of every log record whose structure still parses, lane by lane
    /// from the start of each lane's log (so that a record with hostile entries is taken as
    /// committed and replayed).
    @_spi(Core) public static func resealLogs(_ image: inout [UInt8]) {
        guard image.count >= Format.headerSize else { return }
        let lanes = Int(min(4096, image.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: HeaderField.laneCount, as: UInt32.self) }))
        image.withUnsafeMutableBytes { b in
            guard let base = b.baseAddress else { return }
            let bytes = PoolBytes(base: base)
            let allowed = WritableRegions(ranges: [0..<b.count], laneOffset: Format.laneRegionOffset, laneCount: lanes)
            for lane in 0..<lanes {
                let lane0 = Format.laneRegionOffset + lane * Format.laneSize
                let limit = lane0 + Format.laneSize
                guard limit <= b.count else { continue }
                var at = lane0 + LaneLayout.log
                while at < limit, let s = LogRecord.scan(bytes: bytes, at: at, inlineLimit: limit, allowed: allowed) {
                    bytes.setU32(at + LogField.checksum, s.crc)
                    at += s.inlineLength
                }
            }
        }
    }

    /// Recomputes the checksum of the run header at `offset`.
    @_spi(Core) public static func resealRunHeader(_ image: inout [UInt8], at offset: Int) {
        guard offset >= 0, offset + RunField.bitmap <= image.count else { return }
        image.withUnsafeMutableBytes { b in
            let crc = Checksum.crc32c(UnsafeRawBufferPointer(rebasing: b[offset..<(offset + RunField.checksum)]))
            b.storeBytes(of: crc, toByteOffset: offset + RunField.checksum, as: UInt32.self)
        }
    }

    /// A well-formed unit-table entry (valid check byte) of raw kind `kind` (1 free, 2 used,
    /// 3 run), so that a fuzzer can plant plausible entries with hostile lengths or classes.
    @_spi(Core) public static func unitEntry(kind: UInt8, length: Int, sizeClass: Int) -> UInt64 {
        let low = UInt64(kind) | UInt64(sizeClass & 0xff) << 8 | (UInt64(truncatingIfNeeded: length) & 0x7f_ffff_ffff) << 16
        return low | UInt64(UnitEntry.check(low)) << 56
    }

    /// Offsets of the fields of a header copy that describe its geometry (for targeted mutation).
    @_spi(Core) public static let headerFieldOffsets: [Int] = [
        HeaderField.poolSize, HeaderField.maxSize, HeaderField.growStep, HeaderField.laneOffset, HeaderField.laneCount,
        HeaderField.laneSize, HeaderField.segmentShift, HeaderField.heapOffset, HeaderField.unitSize, HeaderField.maxUnits,
        HeaderField.compatFlags, HeaderField.incompatFlags, HeaderField.major,
    ]
}
