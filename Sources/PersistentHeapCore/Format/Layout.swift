// The on-media format of a pool, in one place. Every persistent structure is described here
// with sized integer types at fixed little-endian offsets; docs/ARCHITECTURE.md draws the same
// format byte by byte. Persistent structures never hold absolute addresses: only offsets from
// the start of the pool file.
//
//   0x0000  primary header (one page; 256 bytes used, CRC-32C)
//   0x1000  backup header (identical copy)
//   0x2000  state page: shutdown state, session counter, root slot
//   0x3000  lanes: laneCount × laneSize (per-thread logs of records)
//   heap    heap units of 4 KiB, in segments that double in span (`Segments.swift`); each
//           segment starts with the unit table of its own units (one 8-byte entry per unit),
//           then free extents, large objects and runs of small blocks

/// Format constants.
@_spi(Core) public enum Format {
    /// "PHEAPOOL" as a little-endian UInt64.
    @_spi(Core) public static let magic: UInt64 = 0x4C4F_4F50_4145_4850
    /// Incompatible changes bump the major version; a pool with a newer major is refused.
    /// Version 2: the unit table lives in per-segment pieces (version 1 reserved one table for
    /// the maximum size before the heap). Version 3: each lane is a log of records applied
    /// without a flush and retired by checkpoints (`StateField.retired`); version-2 lanes held
    /// three fixed logs. An older pool is refused with `versionTooOld`.
    @_spi(Core) public static let major: UInt16 = 3
    /// Compatible additions bump the minor version; any minor of a known major opens.
    @_spi(Core) public static let minor: UInt16 = 0

    @_spi(Core) public static let page = 4096
    @_spi(Core) public static let primaryHeaderOffset = 0
    @_spi(Core) public static let backupHeaderOffset = 0x1000
    @_spi(Core) public static let statePageOffset = 0x2000
    @_spi(Core) public static let laneRegionOffset = 0x3000

    /// Bytes of a header covered by the checksum, plus the checksum itself.
    @_spi(Core) public static let headerSize = 256
    @_spi(Core) public static let layoutNameMax = 64

    /// Heap unit size: the granularity of extents, growth, shrink and hole punching.
    @_spi(Core) public static let unitSize = 4096
    @_spi(Core) public static let unitShift = 12

    /// Bytes per lane (a header line, then the lane's log of records).
    @_spi(Core) public static let laneSize = 4096

    /// Smallest pool accepted by `create`.
    @_spi(Core) public static let minimumPoolSize = 256 << 10

    /// Incompatible feature flags this version understands (none yet).
    @_spi(Core) public static let knownIncompatFlags: UInt64 = 0
}

/// Byte offsets of the pool header fields (both copies).
@_spi(Core) public enum HeaderField {
    @_spi(Core) public static let magic = 0           // UInt64
    @_spi(Core) public static let major = 8           // UInt16
    @_spi(Core) public static let minor = 10          // UInt16
    @_spi(Core) public static let headerSize = 12     // UInt32
    @_spi(Core) public static let uuid = 16           // 16 bytes
    @_spi(Core) public static let layout = 32         // 64 bytes, UTF-8, zero padded
    @_spi(Core) public static let created = 96        // Int64, nanoseconds since 1970
    @_spi(Core) public static let poolSize = 104      // UInt64, bytes of the pool in use (≤ file size)
    @_spi(Core) public static let maxSize = 112       // UInt64, growth limit
    @_spi(Core) public static let growStep = 120      // UInt64, bytes added per growth (0: no growth)
    @_spi(Core) public static let compatFlags = 128   // UInt64
    @_spi(Core) public static let incompatFlags = 136 // UInt64
    @_spi(Core) public static let laneOffset = 144    // UInt64
    @_spi(Core) public static let laneCount = 152     // UInt32
    @_spi(Core) public static let laneSize = 156      // UInt32
    @_spi(Core) public static let segmentShift = 160  // UInt32, log2 of segment 0's span in units
    // 164..<168 reserved, zero
    @_spi(Core) public static let heapOffset = 168    // UInt64
    @_spi(Core) public static let unitSize = 176      // UInt32
    @_spi(Core) public static let maxUnits = 180      // UInt32, units the maximum size allows
    // 184..<252 reserved, zero
    @_spi(Core) public static let checksum = 252      // UInt32, CRC-32C of bytes 0..<252
}

/// Byte offsets in the state page (absolute: statePageOffset + field). Not checksummed: each
/// field is a single 8-byte word updated atomically and validated on use.
@_spi(Core) public enum StateField {
    /// `ShutdownState.clean` after `close()`, `.dirty` while open for writing.
    @_spi(Core) public static let shutdown = Format.statePageOffset + 0
    /// Incremented at every read-write open; persistent mutexes compare against it.
    @_spi(Core) public static let session = Format.statePageOffset + 8
    /// Every log record with a sequence number at most this one is retired: its effects are
    /// durable in place, and recovery ignores it (written by checkpoints).
    @_spi(Core) public static let retired = Format.statePageOffset + 16
    /// The root slot: offset of the root object, 0 when none.
    @_spi(Core) public static let rootSlot = Format.statePageOffset + 64
}

/// The state page's words, decoded from its bytes (read with `pread`, not mapped).
@_spi(Core) public struct StatePage {
    /// Bytes that hold every field.
    @_spi(Core) public static let size = StateField.rootSlot + 8 - Format.statePageOffset
    @_spi(Core) public let shutdown: UInt64
    @_spi(Core) public let session: UInt64
    @_spi(Core) public let retired: UInt64
    @_spi(Core) public let root: UInt64

    @_spi(Core) public init(_ bytes: [UInt8]) {
        func word(_ field: Int) -> UInt64 {
            let at = field - Format.statePageOffset
            guard at + 8 <= bytes.count else { return 0 }
            return (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << UInt64(8 * $1) }
        }
        shutdown = word(StateField.shutdown)
        session = word(StateField.session)
        retired = word(StateField.retired)
        root = word(StateField.rootSlot)
    }
}

/// Values of the shutdown-state word.
@_spi(Core) public enum ShutdownState {
    @_spi(Core) public static let clean: UInt64 = 0x4E41_454C_43   // "CLEAN"
    @_spi(Core) public static let dirty: UInt64 = 0x59_5452_4944   // "DIRTY"
}

/// A unit-table entry (8 bytes, one per heap unit). Only the entry of an extent's first unit is
/// meaningful; entries of interior units are ignored (they may hold stale values).
///
///     bits  0..<8   kind (UnitKind)
///     bits  8..<16  size class (runs)
///     bits 16..<55  length of the extent in units
///     bit  55       FULL hint (runs): the run had no free block when a lane last gave it up.
///                   Advisory, outside the check byte: set and cleared without a fence of its
///                   own. At open, runs hinted full are indexed without reading their pages.
///     bits 56..<64  check byte over bits 0..<55 (detects garbage in a walked entry)
@_spi(Core) public struct UnitEntry: Equatable, Sendable {
    @_spi(Core) public var raw: UInt64

    @_spi(Core) public static let fullHint: UInt64 = 1 << 55
    private static let checkedBits: UInt64 = 0x007f_ffff_ffff_ffff

    @_spi(Core) public init(raw: UInt64) { self.raw = raw }

    @_spi(Core) public init(kind: UnitKind, length: Int, sizeClass: Int = 0) {
        let low = UInt64(kind.rawValue) | UInt64(sizeClass & 0xff) << 8 | (UInt64(length) & 0x7f_ffff_ffff) << 16
        raw = low | UInt64(UnitEntry.check(low)) << 56
    }

    @_spi(Core) public static func check(_ low: UInt64) -> UInt8 {
        UInt8(truncatingIfNeeded: (low &* 0x9E37_79B9_7F4A_7C15) >> 56) ^ 0xA5
    }

    @_spi(Core) public var kind: UnitKind? { UnitKind(rawValue: UInt8(truncatingIfNeeded: raw)) }
    @_spi(Core) public var sizeClass: Int { Int((raw >> 8) & 0xff) }
    @_spi(Core) public var length: Int { Int((raw >> 16) & 0x7f_ffff_ffff) }
    @_spi(Core) public var isHintedFull: Bool { raw & UnitEntry.fullHint != 0 }
    @_spi(Core) public var isWellFormed: Bool {
        kind != nil && kind != UnitKind.none && length > 0 && UInt8(raw >> 56) == UnitEntry.check(raw & UnitEntry.checkedBits)
    }
}

/// What an extent of units holds.
@_spi(Core) public enum UnitKind: UInt8, Sendable {
    case none = 0   // interior of an extent, or never written
    case free = 1   // free extent
    case used = 2   // one large object starting at the extent's first byte
    case run = 3    // a run of small blocks of one size class
    case table = 4  // a segment's unit table (exactly at the segment's start)
}

/// The header at the start of every run (64 bytes), followed by the allocation bitmap
/// (1 = allocated; bits past `blockCount` are set) and, at `dataOffset`, the blocks.
/// Immutable while the run exists; the bitmap is the only mutable part.
@_spi(Core) public enum RunField {
    @_spi(Core) public static let magic = 0        // UInt32 "PRUN"
    @_spi(Core) public static let sizeClass = 4    // UInt16
    @_spi(Core) public static let units = 6        // UInt16
    @_spi(Core) public static let blockSize = 8    // UInt32
    @_spi(Core) public static let blockCount = 12  // UInt32
    @_spi(Core) public static let dataOffset = 16  // UInt32
    @_spi(Core) public static let bitmapWords = 20 // UInt32
    // 24..<60 reserved, zero
    @_spi(Core) public static let checksum = 60    // UInt32, CRC-32C of bytes 0..<60
    @_spi(Core) public static let bitmap = 64
    @_spi(Core) public static let magicValue: UInt32 = 0x4E55_5250 // "PRUN"
}

/// A lane: a header line, then the lane's log — records appended one after another, each
/// starting on a cache line, from `log` to the end of the lane; the lane starts again at `log`
/// once a checkpoint retired all its records. A record too large for the lane continues in the
/// lane's extension block (linked from the header line), itself used as a second log.
///
///     0    extension slot    UInt64: the lane's log extension block, or 0
///     8    reserved          (56 bytes, zero)
///     64   log               records (laneSize - 64 bytes)
@_spi(Core) public enum LaneLayout {
    @_spi(Core) public static let extensionSlot = 0
    @_spi(Core) public static let log = 64
    @_spi(Core) public static let logSize = Format.laneSize - 64
    /// Records start on cache lines.
    @_spi(Core) public static let recordAlignment = 64
}

/// A log record: a 16-byte header, then entries; for a record too large for its lane, an
/// `extend` entry right after the header moves the payload to the lane's extension block.
///
///     0   seq       UInt64  order of commit across lanes (1, 2, …); a record is live while
///                           seq > the state page's `retired`
///     8   bytes     UInt32  payload bytes (inline + extension)
///     12  checksum  UInt32  CRC-32C of seq and bytes (as two UInt64), then the whole payload
///     16  payload   entries, 8-byte aligned
///
/// Entry word 0: op (bits 56..<64) | pool offset (bits 0..<56); word 1: operand.
@_spi(Core) public enum LogField {
    @_spi(Core) public static let seq = 0
    @_spi(Core) public static let bytes = 8
    @_spi(Core) public static let checksum = 12
    @_spi(Core) public static let payload = 16
}

/// Redo-log operations.
@_spi(Core) public enum LogOp: UInt8, Sendable {
    /// Store the 8-byte operand at the offset.
    case write8 = 1
    /// OR the operand into the 8-byte word at the offset (setting allocation bits).
    case or64 = 2
    /// Clear the operand's bits in the 8-byte word at the offset (clearing allocation bits).
    case andNot64 = 3
    /// Copy `operand` bytes that follow the entry (padded to 8) to the offset.
    case writeBytes = 4
    /// The payload continues in the lane's extension block at the offset, for `operand` bytes.
    case extend = 5
    // 6 was `verify` in format 2 (a CRC over data flushed under the log's fence); format 3
    // records never depend on memory outside themselves.
    /// Zero `operand` bytes at the offset (a new block handed out zeroed).
    case zero = 7
}

/// A lane's log extension block (a heap allocation, linked from the lane's extension slot):
/// 16-byte header, then a log of record continuations.
///
///     0  capacity  UInt64  payload capacity of this block
///     8  magic     UInt64  "PHLOGEXT" xor the pool offset of the slot it is linked from: only a
///                          block carrying it is freed by recovery (never a stray value's target)
@_spi(Core) public enum LogExtensionField {
    @_spi(Core) public static let capacity = 0
    @_spi(Core) public static let magic = 8
    @_spi(Core) public static let header = 16
    @_spi(Core) public static let magicValue: UInt64 = 0x5458_4547_4F4C_4850 // "PHLOGEXT"
    @_spi(Core) public static func magic(slot: Int) -> UInt64 { magicValue ^ UInt64(truncatingIfNeeded: slot) }
}
