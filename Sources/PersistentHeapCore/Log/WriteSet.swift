/// The volatile write set of a transaction: shadow copies of the persistent ranges it writes.
///
/// Ranges are kept sorted by pool offset and never overlap: covering a range that touches
/// existing ones merges them into one (so a range snapshotted twice is logged once). Shadow
/// bytes live in an arena of chunks that never move until `reset`, so a view handed out stays
/// valid until the transaction ends. Nothing outside the core sees a shadow's address: writes go
/// through `MutableByteView`, the log takes ranges whole (`RedoLog.appendWrite`).
///
///     invariant: ranges[i].offset + ranges[i].count < ranges[i + 1].offset
///
/// - Complexity: covering a range is O(log r + bytes copied) plus O(r) when ranges merge.
@_spi(Core) public struct WriteSet {
    /// A range of the pool and its shadow.
    @_spi(Core) public struct Range {
        @_spi(Core) public var offset: Int
        @_spi(Core) public var count: Int
        var shadow: UnsafeMutableRawPointer
        /// The shadow's first 8 bytes (a word write's new value).
        @_spi(Core) public var word: UInt64 { shadow.loadUnaligned(as: UInt64.self) }
    }

    @_spi(Core) public private(set) var ranges: [Range] = []
    private var chunks: [(base: UnsafeMutableRawPointer, size: Int)] = []
    private var chunkUsed = 0
    private static let chunkSize = 64 << 10

    @_spi(Core) public init() {}

    @inlinable @_spi(Core) public var isEmpty: Bool { ranges.isEmpty }

    /// Forgets every range, keeping the first chunk for the next transaction.
    @_spi(Core) public mutating func reset() {
        ranges.removeAll(keepingCapacity: true)
        if chunks.count > 1 {
            for c in chunks.dropFirst() { c.base.deallocate() }
            chunks.removeSubrange(1...)
        }
        chunkUsed = 0
    }

    /// Frees all memory.
    @_spi(Core) public mutating func deallocate() {
        for c in chunks { c.base.deallocate() }
        chunks.removeAll()
        ranges.removeAll()
    }

    private mutating func allocate(_ n: Int) -> UnsafeMutableRawPointer {
        let size = (n + 15) & ~15
        if let last = chunks.last, chunkUsed + size <= last.size {
            defer { chunkUsed += size }
            return last.base + chunkUsed
        }
        let chunk = max(WriteSet.chunkSize, size)
        let base = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 16)
        chunks.append((base, chunk))
        chunkUsed = size
        return base
    }

    /// Index of the first range that ends after `offset`.
    private func firstEnding(after offset: Int) -> Int {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].offset + ranges[mid].count <= offset { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Makes `[offset, offset+count)` part of the write set (copying the current bytes of
    /// `memory` for the parts not yet in it) and returns a view of its shadow.
    @_spi(Core) public mutating func cover(_ offset: Int, _ count: Int, memory: PoolBytes) -> MutableByteView {
        MutableByteView(base: coverShadow(offset, count, memory: memory.base), count: count)
    }

    private mutating func coverShadow(_ offset: Int, _ count: Int, memory: UnsafeRawPointer) -> UnsafeMutableRawPointer {
        let end = offset + count
        var i = firstEnding(after: offset)
        // Fast path: inside one existing range.
        if i < ranges.count && ranges[i].offset <= offset && end <= ranges[i].offset + ranges[i].count {
            return ranges[i].shadow + (offset - ranges[i].offset)
        }
        // Merge every range that overlaps or touches [offset, end).
        if i > 0 && ranges[i - 1].offset + ranges[i - 1].count == offset { i -= 1 }
        var j = i
        var lo = offset, hi = end
        while j < ranges.count && ranges[j].offset <= hi {
            lo = min(lo, ranges[j].offset)
            hi = max(hi, ranges[j].offset + ranges[j].count)
            j += 1
        }
        let shadow = allocate(hi - lo)
        shadow.copyMemory(from: memory + lo, byteCount: hi - lo)
        for k in i..<j {
            (shadow + (ranges[k].offset - lo)).copyMemory(from: ranges[k].shadow, byteCount: ranges[k].count)
        }
        let merged = Range(offset: lo, count: hi - lo, shadow: shadow)
        if i == j {
            ranges.insert(merged, at: i)
        } else {
            ranges[i] = merged
            if j > i + 1 { ranges.removeSubrange((i + 1)..<j) }
        }
        return shadow + (offset - lo)
    }

    /// The `T` at `offset` as the transaction sees it (its shadows over `memory`).
    @_spi(Core) public func load<T: BitwiseCopyable>(_: T.Type, at offset: Int, memory: PoolBytes) -> T {
        withUnsafeTemporaryAllocation(byteCount: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment) { buf in
            read(offset, MemoryLayout<T>.size, memory: memory.base, into: buf.baseAddress!)
            return buf.baseAddress!.load(as: T.self)
        }
    }

    /// Copies `[offset, offset+count)` as the transaction sees it (shadow over memory) to `out`.
    private func read(_ offset: Int, _ count: Int, memory: UnsafeRawPointer, into out: UnsafeMutableRawPointer) {
        out.copyMemory(from: memory + offset, byteCount: count)
        guard !ranges.isEmpty else { return }
        let end = offset + count
        var i = firstEnding(after: offset)
        while i < ranges.count && ranges[i].offset < end {
            let r = ranges[i]
            let lo = max(offset, r.offset), hi = min(end, r.offset + r.count)
            (out + (lo - offset)).copyMemory(from: r.shadow + (lo - r.offset), byteCount: hi - lo)
            i += 1
        }
    }

    /// A read-only view of `[offset, offset+count)` as the transaction sees it: the pool's bytes
    /// when no shadow overlaps them, else a composed copy in the arena (valid until the
    /// transaction ends). Either shows the transaction's writes made *before* this call only.
    @_spi(Core) public mutating func readView(_ offset: Int, _ count: Int, memory: PoolBytes) -> ByteView {
        guard overlaps(offset, count) else { return memory.view(at: offset, count: count) }
        let copy = allocate(count)
        read(offset, count, memory: memory.base, into: copy)
        return ByteView(base: copy, count: count)
    }

    /// `count` bytes of scratch memory in the arena (not part of the write set; zeroed), valid
    /// until the transaction ends: room to build a node's new image before copying it in.
    @_spi(Core) public mutating func scratch(_ count: Int) -> MutableByteView {
        let p = allocate(count)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: count)
        return MutableByteView(base: p, count: count)
    }

    /// Whether any range overlaps `[offset, offset+count)`.
    @_spi(Core) public func overlaps(_ offset: Int, _ count: Int) -> Bool {
        let i = firstEnding(after: offset)
        return i < ranges.count && ranges[i].offset < offset + count
    }
}
