import CPersistentHeap

/// Which bytes live log records wrote: for each pool cache line (by hash), the highest sequence
/// number of a record that changed it.
///
/// Records are applied without a flush and replayed by recovery until a checkpoint retires them.
/// A write that is *not* a record — an application's `store`/`persist`, a new block's contents
/// flushed before its record — must never be overtaken by the replay of an older record that
/// wrote the same bytes (docs/ARCHITECTURE.md §5.6, "unlogged writes"). Before such a write is
/// made durable, its range is looked up here: if a line was changed by a record newer than the
/// last checkpoint (`latest(...) > retired`), the write goes into a record of its own (or a
/// checkpoint runs first).
///
/// **Invariants.** A slot only grows (atomic maximum), so a lookup never misses a newer record;
/// collisions only make lookups pessimistic (a needless record, never a missed one). Ranges of
/// more than `wideLines` lines are noted once in `wide`, which every lookup includes. No slot is
/// ever cleared: a record is "retired" by comparison with the retired sequence number.
@_spi(Core) public final class WriteFilter: @unchecked Sendable {
    @usableFromInline static let slotBits = 12
    @usableFromInline static let wideLines = 256
    @usableFromInline let slots: FixedArray<UInt64>
    /// [0]: the newest record of a range too wide to note line by line; [1]: the newest noted at all.
    @usableFromInline let summary: FixedArray<UInt64>

    @_spi(Core) public init() {
        slots = .allocate(count: 1 << WriteFilter.slotBits, repeating: 0)
        summary = .allocate(count: 2, repeating: 0)
    }

    deinit {
        slots.deallocate()
        summary.deallocate()
    }

    @inlinable @inline(__always)
    static func slot(_ line: Int) -> Int {
        Int(truncatingIfNeeded: (UInt64(bitPattern: Int64(line)) &* 0x9E37_79B9_7F4A_7C15) >> UInt64(64 - slotBits))
    }

    /// Raises word `i` of `array` to `seq` (atomic maximum).
    @inlinable @inline(__always)
    static func raise(_ array: FixedArray<UInt64>, _ i: Int, to seq: UInt64) {
        let p = array.address(i)
        var v = ph_load_relaxed_u64(p)
        while v < seq {
            if ph_compare_exchange_seq_cst_u64(p, v, seq) != 0 { return }
            v = ph_load_relaxed_u64(p)
        }
    }

    /// Notes that the record `seq` wrote `[offset, offset+count)`. The caller then notes the
    /// record itself once (``noteRecord(seq:)``).
    @inlinable @inline(__always)
    @_spi(Core) public func note(_ offset: Int, _ count: Int, seq: UInt64) {
        guard count > 0 else { return }
        let first = offset >> 6
        if count <= 8 && offset & 63 <= 56 {
            // One word in one line: the common case.
            WriteFilter.raise(slots, WriteFilter.slot(first), to: seq)
            return
        }
        let last = (offset + count - 1) >> 6
        if last - first >= WriteFilter.wideLines {
            WriteFilter.raise(summary, 0, to: seq)
        } else {
            var line = first
            while line <= last {
                WriteFilter.raise(slots, WriteFilter.slot(line), to: seq)
                line += 1
            }
        }
    }

    /// Notes that the record `seq` wrote something (after its ranges: ``note(_:_:seq:)``).
    @inlinable @inline(__always)
    @_spi(Core) public func noteRecord(seq: UInt64) {
        WriteFilter.raise(summary, 1, to: seq)
    }

    /// The highest sequence number noted for any range (0: none): when it is not above the
    /// retired one, no live record wrote anything and no lookup is needed.
    @inlinable @inline(__always)
    @_spi(Core) public var newest: UInt64 { ph_load_acquire_u64(summary.address(1)) }

    /// The highest sequence number of a record that may have written `[offset, offset+count)`
    /// (0: none).
    @inlinable @inline(__always)
    @_spi(Core) public func latest(_ offset: Int, _ count: Int) -> UInt64 {
        guard count > 0 else { return 0 }
        if count <= 8 && offset & 63 <= 56 {
            // One word in one line (a bitmap word, a table entry): two loads.
            return max(ph_load_acquire_u64(summary.address(0)),
                       ph_load_acquire_u64(slots.address(WriteFilter.slot(offset >> 6))))
        }
        return latestOfLines(offset, count)
    }

    @inlinable
    func latestOfLines(_ offset: Int, _ count: Int) -> UInt64 {
        let first = offset >> 6, last = (offset + count - 1) >> 6
        if last - first >= WriteFilter.wideLines { return ph_load_acquire_u64(summary.address(1)) }
        var m = ph_load_acquire_u64(summary.address(0))
        for line in first...last { m = max(m, ph_load_acquire_u64(slots.address(WriteFilter.slot(line)))) }
        return m
    }
}
