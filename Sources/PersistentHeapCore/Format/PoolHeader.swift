/// The pool header (superblock), decoded. Two identical copies live in the file (primary at
/// 0x0000, backup at 0x1000), each protected by a CRC-32C; see `Layout.swift` for the bytes.
@_spi(Core) public struct PoolHeader: Equatable, Sendable {
    @_spi(Core) public var major: UInt16 = Format.major
    @_spi(Core) public var minor: UInt16 = Format.minor
    @_spi(Core) public var uuid: [UInt8]             // 16 bytes
    @_spi(Core) public var layout: String
    @_spi(Core) public var createdNanos: Int64
    @_spi(Core) public var poolSize: UInt64
    @_spi(Core) public var maxSize: UInt64
    @_spi(Core) public var growStep: UInt64
    @_spi(Core) public var compatFlags: UInt64 = 0
    @_spi(Core) public var incompatFlags: UInt64 = 0
    @_spi(Core) public var laneOffset: UInt64
    @_spi(Core) public var laneCount: UInt32
    @_spi(Core) public var laneSize: UInt32 = UInt32(Format.laneSize)
    @_spi(Core) public var segmentShift: UInt32
    @_spi(Core) public var heapOffset: UInt64
    @_spi(Core) public var unitSize: UInt32 = UInt32(Format.unitSize)
    @_spi(Core) public var maxUnits: UInt32

    @_spi(Core) public init(major: UInt16 = Format.major, minor: UInt16 = Format.minor, uuid: [UInt8], layout: String, createdNanos: Int64,
                 poolSize: UInt64, maxSize: UInt64, growStep: UInt64, compatFlags: UInt64 = 0, incompatFlags: UInt64 = 0,
                 laneOffset: UInt64, laneCount: UInt32, laneSize: UInt32 = UInt32(Format.laneSize), segmentShift: UInt32,
                 heapOffset: UInt64, unitSize: UInt32 = UInt32(Format.unitSize), maxUnits: UInt32) {
        self.major = major
        self.minor = minor
        self.uuid = uuid
        self.layout = layout
        self.createdNanos = createdNanos
        self.poolSize = poolSize
        self.maxSize = maxSize
        self.growStep = growStep
        self.compatFlags = compatFlags
        self.incompatFlags = incompatFlags
        self.laneOffset = laneOffset
        self.laneCount = laneCount
        self.laneSize = laneSize
        self.segmentShift = segmentShift
        self.heapOffset = heapOffset
        self.unitSize = unitSize
        self.maxUnits = maxUnits
    }

    /// Number of heap units in use (from `poolSize`).
    @_spi(Core) public var units: Int { Int((poolSize - heapOffset) >> UInt64(Format.unitShift)) }

    /// Encodes into a 256-byte header with its checksum.
    @_spi(Core) public func encode() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: Format.headerSize)
        b.withUnsafeMutableBytes { p in
            p.storeBytes(of: Format.magic, toByteOffset: HeaderField.magic, as: UInt64.self)
            p.storeBytes(of: major, toByteOffset: HeaderField.major, as: UInt16.self)
            p.storeBytes(of: minor, toByteOffset: HeaderField.minor, as: UInt16.self)
            p.storeBytes(of: UInt32(Format.headerSize), toByteOffset: HeaderField.headerSize, as: UInt32.self)
            for i in 0..<16 { p[HeaderField.uuid + i] = uuid[i] }
            let name = Array(layout.utf8.prefix(Format.layoutNameMax))
            for (i, c) in name.enumerated() { p[HeaderField.layout + i] = c }
            p.storeBytes(of: createdNanos, toByteOffset: HeaderField.created, as: Int64.self)
            p.storeBytes(of: poolSize, toByteOffset: HeaderField.poolSize, as: UInt64.self)
            p.storeBytes(of: maxSize, toByteOffset: HeaderField.maxSize, as: UInt64.self)
            p.storeBytes(of: growStep, toByteOffset: HeaderField.growStep, as: UInt64.self)
            p.storeBytes(of: compatFlags, toByteOffset: HeaderField.compatFlags, as: UInt64.self)
            p.storeBytes(of: incompatFlags, toByteOffset: HeaderField.incompatFlags, as: UInt64.self)
            p.storeBytes(of: laneOffset, toByteOffset: HeaderField.laneOffset, as: UInt64.self)
            p.storeBytes(of: laneCount, toByteOffset: HeaderField.laneCount, as: UInt32.self)
            p.storeBytes(of: laneSize, toByteOffset: HeaderField.laneSize, as: UInt32.self)
            p.storeBytes(of: segmentShift, toByteOffset: HeaderField.segmentShift, as: UInt32.self)
            p.storeBytes(of: heapOffset, toByteOffset: HeaderField.heapOffset, as: UInt64.self)
            p.storeBytes(of: unitSize, toByteOffset: HeaderField.unitSize, as: UInt32.self)
            p.storeBytes(of: maxUnits, toByteOffset: HeaderField.maxUnits, as: UInt32.self)
            let crc = Checksum.crc32c(UnsafeRawBufferPointer(rebasing: p[0..<HeaderField.checksum]))
            p.storeBytes(of: crc, toByteOffset: HeaderField.checksum, as: UInt32.self)
        }
        return b
    }

    /// Why a header copy was rejected.
    @_spi(Core) public enum DecodeFailure: Error, Equatable, Sendable {
        case badMagic
        case badChecksum
        case versionTooNew(UInt16, UInt16)
        case versionTooOld(UInt16, UInt16)
        case unsupportedFeature(UInt64)
        case inconsistent(String)
    }

    /// Decodes and validates one header copy. Validation covers everything later code relies
    /// on to stay inside the file: region offsets ordered and aligned, sizes consistent.
    @_spi(Core) public static func decode(_ bytes: UnsafeRawBufferPointer) -> Result<PoolHeader, DecodeFailure> {
        guard bytes.count >= Format.headerSize else { return .failure(.badMagic) }
        func u64(_ o: Int) -> UInt64 { bytes.loadUnaligned(fromByteOffset: o, as: UInt64.self) }
        func u32(_ o: Int) -> UInt32 { bytes.loadUnaligned(fromByteOffset: o, as: UInt32.self) }
        func u16(_ o: Int) -> UInt16 { bytes.loadUnaligned(fromByteOffset: o, as: UInt16.self) }
        guard u64(HeaderField.magic) == Format.magic else { return .failure(.badMagic) }
        let crc = Checksum.crc32c(UnsafeRawBufferPointer(rebasing: bytes[0..<HeaderField.checksum]))
        guard crc == u32(HeaderField.checksum) else { return .failure(.badChecksum) }
        let major = u16(HeaderField.major), minor = u16(HeaderField.minor)
        guard major <= Format.major else { return .failure(.versionTooNew(major, minor)) }
        guard major == Format.major else { return .failure(.versionTooOld(major, minor)) }
        let incompat = u64(HeaderField.incompatFlags)
        guard incompat & ~Format.knownIncompatFlags == 0 else { return .failure(.unsupportedFeature(incompat)) }
        let nameBytes = (0..<Format.layoutNameMax).map { bytes[HeaderField.layout + $0] }.prefix { $0 != 0 }
        guard let layout = String(validating: Array(nameBytes), as: UTF8.self) else {
            return .failure(.inconsistent("layout name is not UTF-8"))
        }
        let h = PoolHeader(
            major: major, minor: minor,
            uuid: (0..<16).map { bytes[HeaderField.uuid + $0] },
            layout: layout,
            createdNanos: bytes.loadUnaligned(fromByteOffset: HeaderField.created, as: Int64.self),
            poolSize: u64(HeaderField.poolSize), maxSize: u64(HeaderField.maxSize),
            growStep: u64(HeaderField.growStep),
            compatFlags: u64(HeaderField.compatFlags), incompatFlags: incompat,
            laneOffset: u64(HeaderField.laneOffset), laneCount: u32(HeaderField.laneCount),
            laneSize: u32(HeaderField.laneSize), segmentShift: u32(HeaderField.segmentShift),
            heapOffset: u64(HeaderField.heapOffset), unitSize: u32(HeaderField.unitSize),
            maxUnits: u32(HeaderField.maxUnits))
        if let problem = h.inconsistency() { return .failure(.inconsistent(problem)) }
        return .success(h)
    }

    /// Describes the first impossible value, or nil when the geometry is sound. Each check only
    /// does arithmetic on values already bounded by an earlier one (a hostile header with a
    /// valid checksum must be refused, not trap).
    @_spi(Core) public func inconsistency() -> String? {
        let unit = UInt64(Format.unitSize)
        let limit = PoolGeometry.sizeLimit
        if unitSize != UInt32(Format.unitSize) { return "unit size \(unitSize) is not \(Format.unitSize)" }
        if laneSize != UInt32(Format.laneSize) { return "lane size \(laneSize) is not \(Format.laneSize)" }
        if laneOffset != UInt64(Format.laneRegionOffset) { return "lane region at \(laneOffset)" }
        if laneCount < 1 || laneCount > 4096 { return "lane count \(laneCount) out of range" }
        for (name, v) in [("heap offset", heapOffset), ("pool size", poolSize), ("maximum size", maxSize), ("growth step", growStep)]
            where v > limit {
            return "\(name) \(v) exceeds 16 TiB"
        }
        if heapOffset != UInt64(PoolGeometry.heapOffset(lanes: Int(laneCount))) { return "heap offset \(heapOffset)" }
        if !SegmentGeometry.shiftRange.contains(Int(segmentShift)) { return "segment shift \(segmentShift)" }
        if poolSize < heapOffset + unit || (poolSize - heapOffset) % unit != 0 { return "pool size \(poolSize)" }
        if !SegmentGeometry(shift: Int(segmentShift)).isValidEnd(units) { return "pool size \(poolSize) ends inside a segment's unit table" }
        if maxSize < poolSize { return "maximum size \(maxSize) below pool size \(poolSize)" }
        if UInt64(units) > UInt64(maxUnits) || (maxSize - heapOffset) / unit > UInt64(maxUnits) {
            return "maximum size \(maxSize) exceeds the \(maxUnits) units recorded"
        }
        return nil
    }
}
