#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CPersistentHeap

/// A record in a lane's log: several 8-byte words and byte ranges that change atomically, made
/// durable by **one fence**.
///
/// Protocol (docs/ARCHITECTURE.md §5.6):
///
///     1. write the entries and the header {seq, bytes, crc}; flush the record's lines
///     2. fence                                   ← the commit point: the record is durable
///     3. apply the entries in place, without flushing them
///
/// The applied lines are written back later, by a **checkpoint** (the allocator's): it flushes
/// every line the records it retires touched, fences, and raises the state page's `retired`
/// sequence number. Until then recovery replays the record — so a record must be valid on its
/// own: its validity is its checksum and its place in its lane, never the contents of memory
/// outside it (new objects' contents are in the record, or were made durable by an earlier
/// fence). A record is immutable from its fence until its lane starts over after a checkpoint.
///
/// The payload is a sequence of entries: in the lane's log after the header, continued (after an
/// `extend` entry) in the lane's extension block for records larger than the lane. The checksum
/// covers (seq, bytes) and every payload byte in order.
@_spi(Core) public struct LogRecord {
    @_spi(Core) public let bytes: PoolBytes
    /// Pool offset of the record's header (a cache line in a lane's log).
    @_spi(Core) public let at: Int
    /// Payload bytes the lane's log can hold from this record on.
    @_spi(Core) public let inlineCapacity: Int
    /// Payload bytes used in the lane's log.
    @usableFromInline var inlineUsed = 0
    /// The continuation in the lane's extension block (pool offset, capacity, bytes used), once
    /// `extend` was called. Never used by allocator operations (no allocation on the hot path).
    @usableFromInline var ext: (offset: Int, capacity: Int, used: Int)?
    /// A one-line record is built here and written as a whole line (``Persistence/writeLine``);
    /// larger records are written in place.
    @usableFromInline var stage: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    @usableFromInline let staged: Bool

    /// A record at pool offset `at` (a cache line) with `inlineCapacity` payload bytes before the
    /// end of its lane's log. `oneLine`: at most three 16-byte entries (built in registers).
    @_spi(Core) public init(bytes: PoolBytes, at: Int, inlineCapacity: Int, oneLine: Bool) {
        self.bytes = bytes
        self.at = at
        self.inlineCapacity = inlineCapacity
        staged = oneLine && inlineCapacity >= LogRecord.lineEntries * 16
    }

    /// Entries a one-line record holds.
    @_spi(Core) public static let lineEntries = 3

    /// Total payload bytes.
    @_spi(Core) public var payloadBytes: Int { inlineUsed + (ext?.used ?? 0) }

    /// Whether the payload continues in the extension block.
    @_spi(Core) public var isExtended: Bool { ext != nil }

    /// Room left where the next entry goes.
    @inlinable @_spi(Core) public var remaining: Int {
        if let ext { return ext.capacity - ext.used }
        return (staged ? LogRecord.lineEntries * 16 : inlineCapacity) - inlineUsed
    }

    /// Bytes of the lane's log the record takes (whole cache lines).
    @_spi(Core) public var inlineLength: Int { (LogField.payload + inlineUsed + 63) & ~63 }

    /// Bytes of the extension block the record takes (whole cache lines).
    @_spi(Core) public var extensionLength: Int { ((ext?.used ?? 0) + 63) & ~63 }

    @inlinable @inline(__always)
    mutating func reserve(_ n: Int) -> Int {
        // Building a record in this process: callers size it first (`recordBytes`, the entry
        // counts of allocator operations). Records read from a pool never come here.
        precondition(remaining >= n, "log record overflow")
        if let e = ext {
            ext = (e.offset, e.capacity, e.used + n)
            return e.offset + e.used
        }
        let o = at + LogField.payload + inlineUsed
        inlineUsed += n
        return o
    }

    /// Appends an 8-byte operation (16 bytes).
    @inlinable @inline(__always)
    @_spi(Core) public mutating func append(_ op: LogOp, offset: Int, operand: UInt64) {
        let o = reserve(16)
        let w0 = UInt64(op.rawValue) << 56 | UInt64(offset)
        if staged {
            let i = (o - at) >> 3
            withUnsafeMutableBytes(of: &stage) {
                $0.storeBytes(of: w0, toByteOffset: i << 3, as: UInt64.self)
                $0.storeBytes(of: operand, toByteOffset: (i + 1) << 3, as: UInt64.self)
            }
        } else {
            bytes.setU64(o, w0)
            bytes.setU64(o + 8, operand)
        }
    }

    /// Bytes a byte-range entry of `count` bytes takes.
    @_spi(Core) public static func bytesEntrySize(_ count: Int) -> Int { 16 + (count + 7) & ~7 }

    /// Appends a write of `count` bytes from `source` (process memory) to pool offset `offset`.
    @_spi(Core) public mutating func appendBytes(offset: Int, from source: UnsafeRawPointer, count: Int) {
        precondition(!staged, "byte writes need a multi-line record")
        let o = reserve(LogRecord.bytesEntrySize(count))
        bytes.setU64(o, UInt64(LogOp.writeBytes.rawValue) << 56 | UInt64(offset))
        bytes.setU64(o + 8, UInt64(count))
        bytes.pointer(o + 16).copyMemory(from: source, byteCount: count)
        let pad = (8 - count & 7) & 7
        if pad != 0 { bytes.pointer(o + 16 + count).initializeMemory(as: UInt8.self, repeating: 0, count: pad) }
    }

    /// Appends a write of the `count` bytes now at pool offset `offset` to that same place: a new
    /// object's contents, or a range an application persists, carried by the record.
    @_spi(Core) public mutating func appendCopy(offset: Int, count: Int) {
        appendBytes(offset: offset, from: bytes.pointer(offset), count: count)
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

    /// Bytes the entry of a transaction's range takes.
    @_spi(Core) public static func writeEntrySize(_ r: WriteSet.Range) -> Int {
        r.count == 8 && r.offset & 7 == 0 ? 16 : bytesEntrySize(r.count)
    }

    /// Continues the payload in the lane's extension block: `capacity` bytes at pool offset
    /// `offset` (needs 16 bytes of room for the jump).
    @_spi(Core) public mutating func extend(to offset: Int, capacity: Int) {
        precondition(!staged && ext == nil, "a record extends once, from a multi-line record")
        append(.extend, offset: offset, operand: UInt64(capacity))
        ext = (offset, capacity, 0)
    }

    /// Step 1: writes the header with `seq` and the checksum, and flushes the record's lines.
    /// The fence that follows (the caller's) is the commit point.
    @_spi(Core) public mutating func seal(seq: UInt64, persistence: Persistence) {
        if staged {
            // Header and up to three entries, written as one line. The checksum input is
            // (seq, bytes as UInt64, payload): the line's first 16 + n bytes with the bytes
            // word's high half (the checksum's place) still zero.
            stage.0 = seq
            stage.1 = UInt64(inlineUsed)
            let crc = withUnsafeBytes(of: &stage) { Checksum.crc32c($0.baseAddress!, count: LogField.payload + inlineUsed) }
            stage.1 |= UInt64(crc) << 32
            withUnsafePointer(to: &stage) { p in
                p.withMemoryRebound(to: UInt64.self, capacity: 8) { persistence.writeLine(bytes.pointer(at), $0) }
            }
            return
        }
        var crc = LogRecord.headerCRC(seq: seq, total: payloadBytes)
        crc = Checksum.crc32c(bytes.pointer(at + LogField.payload), count: inlineUsed, continuing: crc)
        if let ext, ext.used > 0 {
            crc = Checksum.crc32c(bytes.pointer(ext.offset), count: ext.used, continuing: crc)
            persistence.flush(bytes.pointer(ext.offset), count: ext.used)
        }
        bytes.setU64(at + LogField.seq, seq)
        bytes.setU32(at + LogField.bytes, UInt32(payloadBytes))
        bytes.setU32(at + LogField.checksum, crc)
        persistence.flush(bytes.pointer(at), count: LogField.payload + inlineUsed)
    }

    /// Step 3: applies the entries in place **without flushing** (a checkpoint writes them back),
    /// calling `touched(offset, count)` for every range an entry changed.
    @inlinable @inline(__always)
    @_spi(Core) public func apply(_ touched: (Int, Int) -> Void) {
        if staged {
            // From the staged copy: no re-read of the line just written.
            var s = stage
            withUnsafeBytes(of: &s) { w in
                var i = LogField.payload
                while i < LogField.payload + inlineUsed {
                    let w0 = w.load(fromByteOffset: i, as: UInt64.self)
                    // Entries staged by this process: always a known op.
                    if let op = LogOp(rawValue: UInt8(w0 >> 56)) {
                        let e = Entry(op: op, offset: Int(w0 & LogRecord.offsetMask),
                                      operand: w.load(fromByteOffset: i + 8, as: UInt64.self), at: at + i)
                        LogRecord.perform(e, bytes: bytes)
                        if let n = e.targetBytes { touched(e.offset, n) }
                    }
                    i += 16
                }
            }
        } else {
            LogRecord.forEachEntry(bytes: bytes, at: at, total: payloadBytes) { e in
                LogRecord.perform(e, bytes: bytes)
                if let n = e.targetBytes { touched(e.offset, n) }
            }
        }
    }

    @_spi(Core) public static func headerCRC(seq: UInt64, total: Int) -> UInt32 {
        var h = (seq, UInt64(UInt32(truncatingIfNeeded: total)))
        return withUnsafeBytes(of: &h) { Checksum.crc32c($0.baseAddress!, count: 16) }
    }

    @usableFromInline static let offsetMask: UInt64 = 0x00ff_ffff_ffff_ffff

    // MARK: Reading records (recovery, check)

    /// One decoded entry. `at` is the pool offset of the entry itself.
    @_spi(Core) public struct Entry {
        @_spi(Core) public let op: LogOp
        @_spi(Core) public let offset: Int
        @_spi(Core) public let operand: UInt64
        @_spi(Core) public let at: Int
        @usableFromInline init(op: LogOp, offset: Int, operand: UInt64, at: Int) {
            self.op = op
            self.offset = offset
            self.operand = operand
            self.at = at
        }
        /// Total bytes of the entry.
        @inlinable @_spi(Core) public var size: Int { op == .writeBytes ? LogRecord.bytesEntrySize(Int(operand)) : 16 }
        /// Pool offset of the data of a byte write.
        @inlinable @_spi(Core) public var dataOffset: Int { at + 16 }
        /// Bytes the entry changes at `offset` (nil for `extend`).
        @inlinable @_spi(Core) public var targetBytes: Int? {
            switch op {
            case .write8, .or64, .andNot64: return 8
            case .writeBytes, .zero: return Int(operand)
            case .extend: return nil
            }
        }
    }

    /// Performs one entry (no flush).
    @inlinable @inline(__always)
    @_spi(Core) public static func perform(_ e: Entry, bytes: PoolBytes) {
        switch e.op {
        case .write8:
            bytes.atomicStore(e.offset, e.operand, .releasing)
        case .or64:
            bytes.atomicOr(e.offset, e.operand, .acquiringAndReleasing)
        case .andNot64:
            bytes.atomicAnd(e.offset, ~e.operand, .acquiringAndReleasing)
        case .writeBytes:
            bytes.move(from: e.dataOffset, to: e.offset, count: Int(e.operand))
        case .zero:
            bytes.zero(e.offset, count: Int(e.operand))
        case .extend:
            break
        }
    }

    /// Walks the entries of a record of `total` payload bytes at `at` (extension jumps are
    /// followed and not reported). For a record that passed ``validate(bytes:at:inlineLimit:retired:allowed:)``
    /// (or one this process wrote) only; stops at an unknown op rather than trusting it.
    @inlinable
    @_spi(Core) public static func forEachEntry(bytes: PoolBytes, at: Int, total: Int, _ body: (Entry) -> Void) {
        var o = at + LogField.payload
        var consumed = 0
        while consumed < total {
            let w0 = bytes.u64(o)
            guard let op = LogOp(rawValue: UInt8(w0 >> 56)) else { return }
            let e = Entry(op: op, offset: Int(w0 & offsetMask), operand: bytes.u64(o + 8), at: o)
            consumed += e.size
            if e.op == .extend { o = e.offset; continue }
            body(e)
            o += e.size
        }
    }

    /// A live record found in a lane.
    @_spi(Core) public struct Found: Sendable {
        @_spi(Core) public let at: Int
        @_spi(Core) public let seq: UInt64
        @_spi(Core) public let total: Int
        /// Bytes of the lane's log it takes (whole lines): where the next record starts.
        @_spi(Core) public let inlineLength: Int
    }

    /// Largest payload a record may claim.
    @_spi(Core) public static let maxTotal = 1 << 30

    /// The structure of a record read from a lane: what ``validate(bytes:at:inlineLimit:retired:allowed:)``
    /// checks, and what a fuzzer re-seals.
    @_spi(Core) public struct Scan {
        @_spi(Core) public let seq: UInt64
        @_spi(Core) public let total: Int
        /// The checksum the record's bytes call for.
        @_spi(Core) public let crc: UInt32
        /// A target outside the writable regions (the record is valid only if none).
        @_spi(Core) public let badTarget: String?
        /// Bytes of the lane's log it takes (whole lines).
        @_spi(Core) public let inlineLength: Int
    }

    /// Walks the record at `at`: nil when there is none (seq 0) or its structure does not hold
    /// (lengths, segment bounds, known ops). `inlineLimit` is the end of the lane's log. Never
    /// reads outside the lane's log and `allowed`: every length read is bounded before it is used.
    @_spi(Core) public static func scan(bytes: PoolBytes, at: Int, inlineLimit: Int, allowed: WritableRegions) -> Scan? {
        guard at + LogField.payload <= inlineLimit else { return nil }
        let seq = bytes.u64(at + LogField.seq)
        guard seq != 0 else { return nil }
        let total = Int(bytes.u32(at + LogField.bytes))
        guard total > 0, total <= maxTotal else { return nil }
        var crc = headerCRC(seq: seq, total: total)
        var segmentEnd = inlineLimit
        var o = at + LogField.payload
        var inlineEnd = -1
        var consumed = 0
        var badTarget: String?
        while consumed < total {
            guard o + 16 <= segmentEnd, consumed + 16 <= total else { return nil }
            let w0 = bytes.u64(o), operand = bytes.u64(o + 8)
            guard let op = LogOp(rawValue: UInt8(w0 >> 56)) else { return nil }
            let offset = Int(w0 & offsetMask)
            var size = 16
            switch op {
            case .writeBytes:
                guard operand <= UInt64(total) else { return nil }
                size = bytesEntrySize(Int(operand))
                guard o + size <= segmentEnd, consumed + size <= total else { return nil }
                if !allowed.contains(offset, count: Int(operand)) { badTarget = "a byte write to offset \(offset)" }
            case .zero:
                guard operand <= UInt64(maxTotal) else { return nil }
                if !allowed.contains(offset, count: Int(operand)) { badTarget = "a zeroed range at offset \(offset)" }
            case .extend:
                // Once, from the lane's log, to a heap range outside it.
                guard inlineEnd < 0, operand >= 16, operand <= UInt64(maxTotal), offset % 8 == 0,
                      allowed.contains(offset, count: Int(operand)) else { return nil }
            default:
                if offset % 8 != 0 || !allowed.contains(offset, count: 8) { badTarget = "a word write to offset \(offset)" }
            }
            crc = Checksum.crc32c(bytes.pointer(o), count: size, continuing: crc)
            consumed += size
            if op == .extend {
                inlineEnd = o + size
                o = offset
                segmentEnd = offset + Int(operand)
            } else {
                o += size
            }
        }
        let end = inlineEnd >= 0 ? inlineEnd : o
        return Scan(seq: seq, total: total, crc: crc, badTarget: badTarget, inlineLength: (end - at + 63) & ~63)
    }

    /// Reads the record at `at`. Nil when there is none, or it is torn (its structure or checksum
    /// does not hold: its fence never completed). Throws `corrupted` when the checksum holds, the
    /// record is live (seq > `retired`) and an entry targets bytes outside `allowed` (the
    /// writable regions) or is misaligned. (A retired record may target bytes the pool no longer
    /// has: it was written back before a shrink.)
    @_spi(Core) public static func validate(bytes: PoolBytes, at: Int, inlineLimit: Int, retired: UInt64,
                                            allowed: WritableRegions) throws(PoolError) -> Found? {
        guard let s = scan(bytes: bytes, at: at, inlineLimit: inlineLimit, allowed: allowed),
              s.crc == bytes.u32(at + LogField.checksum) else { return nil }
        if let badTarget = s.badTarget, s.seq > retired {
            throw PoolError(.corrupted, "the log record at offset \(at) holds \(badTarget), outside the pool's writable regions")
        }
        return Found(at: at, seq: s.seq, total: s.total, inlineLength: s.inlineLength)
    }

    /// Calls `body` with every record of the lane log `[start, limit)` in order, as long as each
    /// is valid and its sequence number is higher than the one before: the records of the
    /// lane's current pass, retired ones included (the caller compares with `retired`). Stops at
    /// the first torn record, or at a stale one of an earlier pass (a lower sequence number).
    @_spi(Core) public static func forEachRecord(bytes: PoolBytes, start: Int, limit: Int, retired: UInt64, allowed: WritableRegions,
                                                _ body: (Found) throws(PoolError) -> Void) throws(PoolError) {
        var o = start
        var last: UInt64 = 0
        while o < limit {
            guard let f = try validate(bytes: bytes, at: o, inlineLimit: limit, retired: retired, allowed: allowed), f.seq > last else { return }
            try body(f)
            last = f.seq
            o += f.inlineLength
        }
    }
}

/// The byte ranges log records may target (validated before any replay).
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
        guard n >= 0, offset >= 0, n <= Int.max - offset else { return false }
        if ranges.contains(where: { $0.lowerBound <= offset && offset + n <= $0.upperBound }) { return true }
        let rel = offset - laneOffset
        return n == 8 && rel >= 0 && rel < laneCount * Format.laneSize && rel % Format.laneSize == LaneLayout.extensionSlot
    }
}
