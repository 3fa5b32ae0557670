#if canImport(Glibc)
import Glibc
#endif
import CPersistentHeap

/// A lane's redo log: how several 8-byte words (and byte ranges) change atomically.
///
/// Protocol (docs/ARCHITECTURE.md, "Redo log"):
///
///     1. write entries + header {seq, bytes, crc}; flush      ──┐ fence 1: the log is durable;
///                                                               │ a torn log fails its CRC
///     2. apply the entries in place; flush the targets        ──┐ fence 2: the change is durable
///     3. store seq = 0 (retire); flush; **no fence**             the next drain of any thread
///                                                                makes the retirement durable
///
/// Recovery replays every valid log in `seq` order, then retires them all. Replaying a log whose
/// retirement was lost re-applies its (absolute, or bit-set/bit-clear) effects: that can only
/// undo changes made after it whose fence had not completed — changes never promised durable.
///
/// The payload is a sequence of entries in segments: segment 0 is the lane's inline space;
/// an `extend` entry continues the payload in an extension block. The checksum covers
/// (seq, bytes) and every payload byte in order.
@_spi(Core) public struct RedoLog {
    @_spi(Core) public let bytes: PoolBytes
    /// Pool offset of the log header.
    @_spi(Core) public let logOffset: Int
    /// Bytes of payload the log holds inline (its size minus the header).
    @_spi(Core) public let inlineCapacity: Int
    /// Payload bytes used in the lane's inline space.
    @usableFromInline var inlineUsed = 0
    /// Extension segments in order: pool offset of the payload area, capacity, bytes used.
    /// Empty for every allocator operation (no allocation on the hot path).
    @usableFromInline var extensions: [(offset: Int, capacity: Int, used: Int)]? = nil
    /// A one-line log is built here and written as a whole line (``Persistence/writeLine``);
    /// larger logs are written in place.
    @usableFromInline var stage: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    @usableFromInline let staged: Bool

    /// A log at pool offset `at` of `size` bytes (header included).
    @_spi(Core) public init(bytes: PoolBytes, at: Int, size: Int) {
        self.bytes = bytes
        self.logOffset = at
        inlineCapacity = size - LogField.payload
        staged = size == 64
    }

    /// Total payload bytes.
    @_spi(Core) public var payloadBytes: Int { extensions?.reduce(inlineUsed) { $0 + $1.used } ?? inlineUsed }

    /// Whether the payload already continues in an extension.
    @_spi(Core) public var isExtended: Bool { extensions != nil }

    /// Room left in the current segment.
    @inlinable @_spi(Core) public var remaining: Int {
        if let last = extensions?.last { return last.capacity - last.used }
        return inlineCapacity - inlineUsed
    }

    @inlinable @inline(__always)
    mutating func reserve(_ n: Int) -> Int {
        // Building a log in this process: callers size it first (`logBytes`, the fast-log
        // entry counts). Logs read from a pool never come here (`scan` bounds those).
        precondition(remaining >= n, "redo log overflow")
        guard extensions != nil else {
            let at = logOffset + LogField.payload + inlineUsed
            inlineUsed += n
            return at
        }
        let i = extensions!.count - 1
        let at = extensions![i].offset + extensions![i].used
        extensions![i].used += n
        return at
    }

    /// Appends an 8-byte operation (needs 16 bytes of room).
    @inlinable @inline(__always)
    @_spi(Core) public mutating func append(_ op: LogOp, offset: Int, operand: UInt64) {
        let at = reserve(16)
        let w0 = UInt64(op.rawValue) << 56 | UInt64(offset)
        if staged {
            let i = (at - logOffset) >> 3
            withUnsafeMutableBytes(of: &stage) { $0.storeBytes(of: w0, toByteOffset: i << 3, as: UInt64.self)
                $0.storeBytes(of: operand, toByteOffset: (i + 1) << 3, as: UInt64.self) }
        } else {
            bytes.setU64(at, w0)
            bytes.setU64(at + 8, operand)
        }
    }

    /// Bytes a byte-range entry of `count` bytes takes.
    @_spi(Core) public static func bytesEntrySize(_ count: Int) -> Int { 16 + (count + 7) & ~7 }

    /// Appends a write of `count` bytes from `source` to pool offset `offset` (main log only).
    @_spi(Core) public mutating func appendBytes(offset: Int, from source: UnsafeRawPointer, count: Int) {
        precondition(!staged, "byte writes need the main log")
        let at = reserve(RedoLog.bytesEntrySize(count))
        bytes.setU64(at, UInt64(LogOp.writeBytes.rawValue) << 56 | UInt64(offset))
        bytes.setU64(at + 8, UInt64(count))
        bytes.pointer(at + 16).copyMemory(from: source, byteCount: count)
        let pad = (8 - count & 7) & 7
        if pad != 0 { bytes.pointer(at + 16 + count).initializeMemory(as: UInt8.self, repeating: 0, count: pad) }
    }

    /// Appends the write of a transaction's range: a word write for an aligned 8-byte range, a
    /// byte write otherwise.
    @_spi(Core) public mutating func appendWrite(_ r: WriteSet.Range) {
        if r.count == 8 && r.offset & 7 == 0 {
            append(.write8, offset: r.offset, operand: r.word)
        } else {
            appendBytes(offset: r.offset, from: r.shadow, count: r.count)
        }
    }

    /// Bytes the log entry of a transaction's range takes.
    @_spi(Core) public static func writeEntrySize(_ r: WriteSet.Range) -> Int {
        r.count == 8 && r.offset & 7 == 0 ? 16 : bytesEntrySize(r.count)
    }

    /// Makes the log valid only if `count` bytes at pool offset `offset` hold what they hold now
    /// (see ``LogOp/verify``).
    @_spi(Core) public mutating func appendVerify(offset: Int, count: Int) {
        precondition(count < 1 << 32)
        let crc = Checksum.crc32c(bytes.pointer(offset), count: count)
        append(.verify, offset: offset, operand: UInt64(count) << 32 | UInt64(crc))
    }

    /// Continues the payload in an extension whose payload area is `capacity` bytes at pool
    /// offset `offset` (needs 16 bytes of room for the jump).
    @_spi(Core) public mutating func extend(to offset: Int, capacity: Int) {
        precondition(!staged, "extensions need the main log")
        append(.extend, offset: offset, operand: UInt64(capacity))
        extensions = (extensions ?? []) + [(offset, capacity, 0)]
    }

    /// Step 1: writes the header with `seq` and the checksum, flushes everything, fences.
    @_spi(Core) public mutating func commit(seq: UInt64, persistence: Persistence, lane slot: Int) {
        if staged {
            // Header and up to three entries, written as one line.
            // The checksum input is (seq, bytes as UInt64, payload): the first 16 + n bytes of
            // the line with the bytes word's high half (the checksum's place) still zero.
            stage.0 = seq
            stage.1 = UInt64(inlineUsed)
            let crc = withUnsafeBytes(of: &stage) { Checksum.crc32c($0.baseAddress!, count: LogField.payload + inlineUsed) }
            stage.1 |= UInt64(crc) << 32
            withUnsafePointer(to: &stage) { p in
                p.withMemoryRebound(to: UInt64.self, capacity: 8) { persistence.writeLine(bytes.pointer(logOffset), $0) }
            }
            persistence.drain(clearing: slot)
            return
        }
        let total = payloadBytes
        var crc = RedoLog.headerCRC(seq: seq, total: total)
        crc = Checksum.crc32c(bytes.pointer(logOffset + LogField.payload), count: inlineUsed, continuing: crc)
        for s in extensions ?? [] where s.used > 0 {
            crc = Checksum.crc32c(bytes.pointer(s.offset), count: s.used, continuing: crc)
            persistence.flush(bytes.pointer(s.offset), count: s.used)
        }
        bytes.setU64(logOffset + LogField.seq, seq)
        bytes.setU32(logOffset + LogField.bytes, UInt32(total))
        bytes.setU32(logOffset + LogField.checksum, crc)
        // Header and inline payload share lines: one flush call covers both.
        persistence.flush(bytes.pointer(logOffset), count: LogField.payload + inlineUsed)
        persistence.drain(clearing: slot)
    }

    /// Step 2: applies the entries in place, flushes the targets and fences.
    @_spi(Core) public func apply(persistence: Persistence, lane slot: Int) {
        if staged {
            // From the staged copy: the streamed line is not in the cache.
            var s = stage
            withUnsafeBytes(of: &s) { w in
                var i = LogField.payload
                while i < LogField.payload + inlineUsed {
                    let w0 = w.load(fromByteOffset: i, as: UInt64.self)
                    // Entries staged by this process: always a known op.
                    if let op = LogOp(rawValue: UInt8(w0 >> 56)) {
                        let e = Entry(op: op, offset: Int(w0 & 0x00ff_ffff_ffff_ffff),
                                      operand: w.load(fromByteOffset: i + 8, as: UInt64.self), at: logOffset + i)
                        RedoLog.perform(e, bytes: bytes, persistence: persistence)
                    }
                    i += 16
                }
            }
        } else {
            RedoLog.forEachEntry(bytes: bytes, logOffset: logOffset, total: payloadBytes) { entry in
                RedoLog.perform(entry, bytes: bytes, persistence: persistence)
            }
        }
        persistence.drain(clearing: slot)
    }

    /// Step 3: retires the log without a fence (see the type's documentation). `slot` is the
    /// lane: its next drain covers the retirement, and other threads' drains flush it again.
    @_spi(Core) public func retire(persistence: Persistence, slot: Int) {
        bytes.atomicStore(logOffset + LogField.seq, 0, .releasing)
        persistence.deferLine(offset: logOffset, slot: slot)
    }

    @_spi(Core) public static func headerCRC(seq: UInt64, total: Int) -> UInt32 {
        var h = (seq, UInt64(UInt32(truncatingIfNeeded: total)))
        return withUnsafeBytes(of: &h) { Checksum.crc32c($0.baseAddress!, count: 16) }
    }

    // MARK: Reading logs (recovery, check)

    /// One decoded entry. `at` is the pool offset of the entry itself.
    @_spi(Core) public struct Entry {
        @_spi(Core) public let op: LogOp
        @_spi(Core) public let offset: Int
        @_spi(Core) public let operand: UInt64
        @_spi(Core) public let at: Int
        /// Total bytes of the entry.
        @_spi(Core) public var size: Int { op == .writeBytes ? RedoLog.bytesEntrySize(Int(operand)) : 16 }
        /// Pool offset of the data of a byte write.
        @_spi(Core) public var dataOffset: Int { at + 16 }
        /// Bytes the entry changes at `offset` (nil for entries without an effect).
        @_spi(Core) public var targetBytes: Int? {
            switch op {
            case .write8, .or64, .andNot64: return 8
            case .writeBytes: return Int(operand)
            case .extend, .verify: return nil
            }
        }
    }

    /// Performs one entry and flushes what it touched.
    @inline(__always)
    @_spi(Core) public static func perform(_ e: Entry, bytes: PoolBytes, persistence: Persistence) {
        switch e.op {
        case .write8:
            bytes.atomicStore(e.offset, e.operand, .releasing)
            persistence.flush(bytes.pointer(e.offset), count: 8)
        case .or64:
            bytes.atomicOr(e.offset, e.operand, .acquiringAndReleasing)
            persistence.flush(bytes.pointer(e.offset), count: 8)
        case .andNot64:
            bytes.atomicAnd(e.offset, ~e.operand, .acquiringAndReleasing)
            persistence.flush(bytes.pointer(e.offset), count: 8)
        case .writeBytes:
            bytes.pointer(e.offset).copyMemory(from: bytes.pointer(e.dataOffset), byteCount: Int(e.operand))
            persistence.flush(bytes.pointer(e.offset), count: Int(e.operand))
        case .extend, .verify:
            break
        }
    }

    /// Whether an entry's effect is already in place.
    @_spi(Core) public static func isApplied(_ e: Entry, bytes: PoolBytes) -> Bool {
        switch e.op {
        case .write8: return bytes.u64(e.offset) == e.operand
        case .or64: return bytes.u64(e.offset) & e.operand == e.operand
        case .andNot64: return bytes.u64(e.offset) & e.operand == 0
        case .writeBytes: return memcmp(bytes.pointer(e.offset), bytes.pointer(e.dataOffset), Int(e.operand)) == 0
        case .extend, .verify: return true
        }
    }

    /// Walks the entries of a log of `total` payload bytes (extension jumps are followed and
    /// not reported). For a log that passed ``validate(bytes:logOffset:size:allowed:)`` (or one this
    /// process wrote) only; stops at an unknown op rather than trusting it.
    @_spi(Core) public static func forEachEntry(bytes: PoolBytes, logOffset: Int, total: Int, _ body: (Entry) -> Void) {
        var at = logOffset + LogField.payload
        var consumed = 0
        while consumed < total {
            let w0 = bytes.u64(at)
            guard let op = LogOp(rawValue: UInt8(w0 >> 56)) else { return }
            let e = Entry(op: op, offset: Int(w0 & 0x00ff_ffff_ffff_ffff), operand: bytes.u64(at + 8), at: at)
            consumed += e.size
            if e.op == .extend { at = e.offset; continue }
            body(e)
            at += e.size
        }
    }

    /// A valid log found in a lane.
    @_spi(Core) public struct Found {
        @_spi(Core) public let logOffset: Int
        @_spi(Core) public let seq: UInt64
        @_spi(Core) public let total: Int
    }

    /// Largest payload a log may claim.
    @_spi(Core) public static let maxTotal = 1 << 30

    /// The structure of a log read from a lane: what ``validate(bytes:logOffset:size:allowed:)``
    /// checks, and what a fuzzer re-seals.
    @_spi(Core) public struct Scan {
        @_spi(Core) public let seq: UInt64
        @_spi(Core) public let total: Int
        /// The checksum the log's bytes call for.
        @_spi(Core) public let crc: UInt32
        /// A target outside the writable regions (the log is valid only if none).
        @_spi(Core) public let badTarget: String?
        @_spi(Core) public let verifications: [(offset: Int, count: Int, crc: UInt32)]
    }

    /// Walks the log at `logOffset`: nil when the lane is empty or the log's structure
    /// does not hold (lengths, segment bounds, known ops). Never reads outside `allowed` and the
    /// lane: every length read from the log is bounded before it is used.
    @_spi(Core) public static func scan(bytes: PoolBytes, logOffset: Int, size: Int, allowed: WritableRegions) -> Scan? {
        let seq = bytes.u64(logOffset + LogField.seq)
        guard seq != 0 else { return nil }
        let total = Int(bytes.u32(logOffset + LogField.bytes))
        guard total > 0, total <= maxTotal else { return nil }
        func inside(_ lo: Int, _ n: Int) -> Bool {
            allowed.contains(lo, count: n)
        }
        var crc = headerCRC(seq: seq, total: total)
        var segmentEnd = logOffset + size
        var at = logOffset + LogField.payload
        var consumed = 0
        var badTarget: String?
        var verifications: [(offset: Int, count: Int, crc: UInt32)] = []
        while consumed < total {
            guard at + 16 <= segmentEnd, consumed + 16 <= total else { return nil }
            let w0 = bytes.u64(at), operand = bytes.u64(at + 8)
            guard let op = LogOp(rawValue: UInt8(w0 >> 56)) else { return nil }
            let offset = Int(w0 & 0x00ff_ffff_ffff_ffff)
            var size = 16
            switch op {
            case .writeBytes:
                guard operand <= UInt64(total) else { return nil }
                size = bytesEntrySize(Int(operand))
                guard at + size <= segmentEnd, consumed + size <= total else { return nil }
                if !inside(offset, Int(operand)) { badTarget = "a byte write to offset \(offset)" }
            case .verify:
                let n = Int(operand >> 32)
                if !inside(offset, n) { badTarget = "a verified range at offset \(offset)" } else {
                    verifications.append((offset, n, UInt32(truncatingIfNeeded: operand)))
                }
            case .extend:
                guard operand >= 16, operand <= UInt64(maxTotal), offset % 8 == 0, inside(offset, Int(operand)) else { return nil }
            default:
                if offset % 8 != 0 || !inside(offset, 8) { badTarget = "a word write to offset \(offset)" }
            }
            crc = Checksum.crc32c(bytes.pointer(at), count: size, continuing: crc)
            consumed += size
            if op == .extend {
                at = offset
                segmentEnd = offset + Int(operand)
            } else {
                at += size
            }
        }
        return Scan(seq: seq, total: total, crc: crc, badTarget: badTarget, verifications: verifications)
    }

    /// Reads the log at `logOffset`. Returns nil when the lane is empty or the log is
    /// torn (its structure or checksum does not hold: its fence never completed). Throws
    /// `corrupted` when the checksum holds but an entry targets bytes outside `allowed`
    /// (the writable regions) or is misaligned. Never reads outside `allowed` and the lane.
    @_spi(Core) public static func validate(bytes: PoolBytes, logOffset: Int, size: Int, allowed: WritableRegions) throws(PoolError) -> Found? {
        guard let s = scan(bytes: bytes, logOffset: logOffset, size: size, allowed: allowed),
              s.crc == bytes.u32(logOffset + LogField.checksum) else { return nil }
        // Data flushed under the same fence as the log must have reached the media too.
        for v in s.verifications where Checksum.crc32c(bytes.pointer(v.offset), count: v.count) != v.crc { return nil }
        if let badTarget = s.badTarget {
            throw PoolError(.corrupted, "the redo log at offset \(logOffset) holds \(badTarget), outside the pool's writable regions")
        }
        return Found(logOffset: logOffset, seq: s.seq, total: s.total)
    }
}

/// The byte ranges redo-log entries may target (validated before any replay).
@_spi(Core) public struct WritableRegions {
    let ranges: [Range<Int>]
    let laneOffset: Int
    let laneCount: Int

    @_spi(Core) public init(ranges: [Range<Int>], laneOffset: Int, laneCount: Int) {
        self.ranges = ranges
        self.laneOffset = laneOffset
        self.laneCount = laneCount
    }

    @_spi(Core) public func contains(_ offset: Int, count n: Int) -> Bool {
        guard n >= 0 else { return false }
        if ranges.contains(where: { $0.lowerBound <= offset && offset + n <= $0.upperBound }) { return true }
        let rel = offset - laneOffset
        return n == 8 && rel >= 0 && rel < laneCount * Format.laneSize && rel % Format.laneSize == LaneLayout.extensionSlot
    }
}
