// The geometry of a pool, in one place: where the heap starts, how it is cut into segments,
// where each unit's table entry lives, and which sizes a header may describe. `Pool.create`
// plans a new pool with it and `PoolHeader.inconsistency` checks a header read from a file
// against the same rules.
//
// The heap (units of 4 KiB, numbered from 0 at `heapOffset`) is a sequence of **segments** that
// double in span, each carrying the unit-table entries of its own units in its first units:
//
//     segment 0   units [0, S)          span S     table: max(1, S/512) units
//     segment 1   units [S, 2S)         span S
//     segment 2   units [2S, 4S)        span 2S
//     segment k   units [2^(k-1)·S, 2^k·S)
//
// S = 2^shift is chosen at create (the smallest power of two holding the initial heap, at least
// 64 units) and never changes. A segment's table holds one 8-byte entry per unit of its span,
// so the tables take 1/512 of every whole segment; the last segment's table is at most the size
// of all segments before it / 512. Metadata therefore stays proportional to the **current**
// size (≤ 0.4 % plus the lanes), whatever the maximum: a segment's table is written when growth
// first reaches it. Unit → segment is O(1) (one leading-zero count); extents never cross a
// segment boundary (each segment begins with its table extent), so a large object is at most
// one segment's span — which doubles as the pool grows.

/// The segments of a heap whose segment 0 spans `2^shift` units.
@frozen @_spi(Core) public struct SegmentGeometry: Equatable, Sendable {
    /// log2 of segment 0's span in units.
    @_spi(Core) public let shift: Int

    /// Smallest and largest `shift` a header may hold (unit indexes are 32-bit).
    @_spi(Core) public static let shiftRange = 6...32
    /// Table entries per unit.
    @_spi(Core) public static let entriesPerUnit = Format.unitSize / 8

    @inlinable @_spi(Core) public init(shift: Int) { self.shift = shift }

    /// The geometry for a new heap of `units` units: segment 0 holds all of it.
    @_spi(Core) public static func forInitialUnits(_ units: Int) -> SegmentGeometry {
        var s = SegmentGeometry.shiftRange.lowerBound
        while (1 << s) < units && s < SegmentGeometry.shiftRange.upperBound { s += 1 }
        return SegmentGeometry(shift: s)
    }

    /// The segment holding unit `u` (u ≥ 0).
    @inlinable @inline(__always) @_spi(Core) public func segment(of u: Int) -> Int {
        Int.bitWidth - (u >> shift).leadingZeroBitCount
    }
    /// First unit of segment `k`.
    @inlinable @inline(__always) @_spi(Core) public func start(_ k: Int) -> Int { k == 0 ? 0 : 1 << (shift + k - 1) }
    /// One past the last unit of segment `k`.
    @inlinable @inline(__always) @_spi(Core) public func end(_ k: Int) -> Int { 1 << (shift + k) }
    /// Units of segment `k`'s table.
    @inlinable @inline(__always) @_spi(Core) public func tableUnits(_ k: Int) -> Int {
        max(1, (end(k) - start(k)) / SegmentGeometry.entriesPerUnit)
    }
    /// First unit of segment `k` after its table.
    @inlinable @inline(__always) @_spi(Core) public func dataStart(_ k: Int) -> Int { start(k) + tableUnits(k) }

    /// Byte offset, from the heap's start, of unit `u`'s table entry.
    @inlinable @inline(__always) @_spi(Core) public func entryOffset(_ u: Int) -> Int {
        let s = start(segment(of: u))
        return s << Format.unitShift + (u - s) << 3
    }

    /// Whether a heap of `units` units ends soundly: after at least one data unit of its last
    /// segment (never inside or right after a table).
    @_spi(Core) public func isValidEnd(_ units: Int) -> Bool {
        guard units >= 1 else { return false }
        return units > dataStart(segment(of: units - 1))
    }

    /// Units of every table in a heap of `units` units.
    @_spi(Core) public func tableUnits(inHeapOf units: Int) -> Int {
        guard units >= 1 else { return 0 }
        var total = 0
        for k in 0...segment(of: units - 1) { total += tableUnits(k) }
        return total
    }

    /// The smallest heap end at or after `old` units that holds `n` contiguous free units in one
    /// segment, given that the heap's last `tailFree` units (ending at `old`) are free.
    /// `Int.max` for a request no heap of 2^32 units can hold.
    @_spi(Core) public func endHolding(_ n: Int, old: Int, tailFree: Int) -> Int {
        guard n >= 0 && n <= 1 << 32 && old >= 0 && old <= 1 << 32 else { return Int.max }
        var k = segment(of: max(old - 1, 0))
        var from = old - tailFree  // where a free run at the end of the heap starts
        if old == end(k) { k += 1; from = dataStart(k) }  // the last segment is full: start a new one
        while true {
            if from + n <= end(k) { return from + n }
            k += 1
            from = dataStart(k)
        }
    }

    /// Where growth should end: at least `target` units, at least `old + step` units when the
    /// limit allows, never past `limit`, and at a sound end (rounded down to a segment start
    /// when a step would end in a table, but never below `target`). Nil when `target > limit`.
    @_spi(Core) public func growthEnd(target: Int, old: Int, stepUnits: Int, limit: Int) -> Int? {
        guard target <= limit else { return nil }
        var e = min(limit, max(target, old + stepUnits))
        if !isValidEnd(e) {
            let k = segment(of: e - 1)
            e = start(k) >= target && start(k) > old ? start(k) : dataStart(k) + 1
        }
        return e <= limit && e > old && e >= target && isValidEnd(e) ? e : nil
    }
}

/// The whole-pool rules: where the heap starts, the largest pool, a new pool's plan.
@_spi(Core) public enum PoolGeometry {
    /// Largest pool (and maximum size) a header may describe: 16 TiB (2^32 units). Every offset
    /// and size in a header is checked against it before any arithmetic.
    @_spi(Core) public static let sizeLimit: UInt64 = 1 << 44

    /// Where the heap starts in a pool of `lanes` lanes.
    @_spi(Core) public static func heapOffset(lanes: Int) -> Int {
        let end = Format.laneRegionOffset + lanes * Format.laneSize
        return (end + Format.page - 1) / Format.page * Format.page
    }

    /// The geometry of a new pool.
    @_spi(Core) public struct Plan: Equatable, Sendable {
        @_spi(Core) public let heapOffset: Int
        /// Heap units at creation.
        @_spi(Core) public let units: Int
        /// Units the maximum size allows (the volatile indexes are sized for them).
        @_spi(Core) public let maxUnits: Int
        @_spi(Core) public let segments: SegmentGeometry
        @_spi(Core) public var poolSize: Int { heapOffset + units << Format.unitShift }
        @_spi(Core) public var maxSize: Int { heapOffset + maxUnits << Format.unitShift }
    }

    /// Plans a pool of `size` bytes growing to at most `maxSize` with `lanes` lanes. Throws
    /// `tooSmall` or `invalidArgument` (the message says which rule).
    @_spi(Core) public static func plan(size: Int, maxSize: Int, lanes: Int, path: String?) throws(PoolError) -> Plan {
        guard size >= Format.minimumPoolSize else {
            throw PoolError(.tooSmall, "pool size \(size) is below the minimum of \(Format.minimumPoolSize) bytes", path: path)
        }
        guard size <= Int(sizeLimit) else { throw PoolError(.invalidArgument, "pool size \(size) exceeds 16 TiB", path: path) }
        guard maxSize <= Int(sizeLimit) else {
            throw PoolError(.invalidArgument, "maximum size \(maxSize) exceeds 16 TiB (this format's 2^32 units of 4 KiB)", path: path)
        }
        guard lanes >= 1 && lanes <= 4096 else { throw PoolError(.invalidArgument, "lane count \(lanes) is outside 1...4096", path: path) }
        let heapOffset = heapOffset(lanes: lanes)
        guard size > heapOffset else {
            throw PoolError(.tooSmall, "pool size \(size) leaves no room for the heap after \(heapOffset) bytes of headers and lanes", path: path)
        }
        let units = (size - heapOffset) >> Format.unitShift
        let segments = SegmentGeometry.forInitialUnits(units)
        guard units >= segments.tableUnits(0) + 16 else {
            throw PoolError(.tooSmall, "pool size \(size) leaves fewer than 16 heap units after its metadata", path: path)
        }
        let maxUnits = min(Int(UInt32.max), max(units, (max(maxSize, size) - heapOffset) >> Format.unitShift))
        return Plan(heapOffset: heapOffset, units: units, maxUnits: maxUnits, segments: segments)
    }
}
