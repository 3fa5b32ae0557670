#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

/// The mutable state of a lane's transactions. It lives out of line (a core `FixedArray` of
/// one element, ``TransactionContext``): mutating struct properties of a class through the class
/// would pay Swift's dynamic exclusivity checks on every call (measured: ~700 instructions per
/// transaction), and a class per transaction a reference count.
struct TransactionState {
    /// Incremented at each outermost begin: a `Transaction` from an earlier one is stale.
    var generation: UInt64 = 0
    var active = false
    var depth = 0
    var thread = pthread_t()
    var writeSet = WriteSet()
    /// Blocks allocated by this transaction (the allocator's reservations), published at commit.
    var reservations: [Reservation] = []
    /// Blocks to free at commit, and their offsets (duplicate detection).
    var frees: [FreeTarget] = []
    var freeOffsets: [Int] = []
    /// Blocks allocated by this transaction, sorted by offset. Writes into them go in place (the
    /// block is invisible until commit); at commit their contents reach the media with the record
    /// (see `Pool.commitTransaction`).
    var fresh: [FreshBlock] = []
    /// The error of a nested transaction that failed: the outermost one must abort.
    var doom: (any Error)?
    /// Reservations made with `Pool.reserve` and not yet published or cancelled (kept across
    /// transactions), and the last id handed out.
    var held: [HeldReservation] = []
    var reservationSerial: UInt64 = 0

    var hasWork: Bool { !writeSet.isEmpty || !reservations.isEmpty || !frees.isEmpty }

    /// Index in `fresh` of the block containing `[offset, offset+count)`, if any.
    @inline(__always)
    func freshIndex(_ offset: Int, _ count: Int) -> Int? {
        guard !fresh.isEmpty else { return nil }
        var lo = 0, hi = fresh.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if fresh[mid].offset + fresh[mid].count <= offset { lo = mid + 1 } else { hi = mid }
        }
        guard lo < fresh.count, fresh[lo].offset <= offset, offset + count <= fresh[lo].offset + fresh[lo].count else { return nil }
        return lo
    }

    mutating func addFresh(_ b: FreshBlock) {
        var lo = 0, hi = fresh.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if fresh[mid].offset < b.offset { lo = mid + 1 } else { hi = mid }
        }
        fresh.insert(b, at: lo)
    }

    /// Ends the transaction, keeping capacity; touches only what was used.
    mutating func reset() {
        if !writeSet.isEmpty { writeSet.reset() }
        if !reservations.isEmpty { reservations.removeAll(keepingCapacity: true) }
        if !frees.isEmpty {
            frees.removeAll(keepingCapacity: true)
            freeOffsets.removeAll(keepingCapacity: true)
        }
        if !fresh.isEmpty { fresh.removeAll(keepingCapacity: true) }
        if doom != nil { doom = nil }
        depth = 0
        active = false
    }
}

/// A block allocated by a transaction (usable bytes): whether it was allocated zeroed, and
/// whether it was written (or initialised) since.
struct FreshBlock {
    let offset: Int
    let count: Int
    let zeroed: Bool
    var written: Bool
}

/// The per-lane transaction states of a pool (each created on first use), freed with the pool.
final class TransactionStates: @unchecked Sendable {
    let states: FixedArray<FixedArray<TransactionState>?>

    init(count: Int) { states = .allocate(count: count, repeating: nil) }

    deinit {
        for lane in 0..<states.count { if let state = states[lane] { TransactionContext.release(state) } }
        states.deallocate()
    }
}

/// A lane's transaction context: the lane and its state, reused from one transaction to the
/// next. A plain pair (no object): beginning a transaction takes no reference count.
struct TransactionContext {
    let lane: Int
    /// One element: the lane's state.
    let state: FixedArray<TransactionState>

    /// A fresh state for a lane; released by ``release(_:)`` when the pool goes away.
    static func make(lane: Int) -> TransactionContext {
        TransactionContext(lane: lane, state: .allocate(count: 1, repeating: TransactionState()))
    }

    static func release(_ state: FixedArray<TransactionState>) {
        state[0].writeSet.deallocate()
        state.deallocate()
    }
}
