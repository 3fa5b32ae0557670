// Reserve, fill, publish: allocations made durable together with pointer updates (PMDK's
// pmemobj_reserve / pmemobj_publish / pmemobj_cancel), on the allocator's one reservation
// protocol.
//
//   reserve    space chosen (volatile only): nothing persistent changes; the block is free space
//              until it is published, so it is filled in place without a log
//   fill       initialize(_:to:), withMutableView(of:) — plain stores, no flush
//   publish    one log record: every reserved block's contents, every slot update, the
//              blocks' allocation entries, every free — the same commit as a transaction
//              (docs/ARCHITECTURE.md §5.10); after a crash all of it happened or none of it
//   cancel     the space goes back, nothing was ever written durably
//
// A reservation belongs to the thread (lane) that made it; it is published or cancelled there.
// Reservations a thread still holds when it exits, or when the pool closes, are cancelled.

@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

/// Space reserved by ``Pool/reserve(bytes:alignment:zeroed:)``: not allocated yet, and not
/// durable, until ``Pool/publish(_:setting:freeing:)`` makes it allocated — atomically with
/// other reservations, pointer updates and frees — or ``Pool/cancel(_:)`` gives it back.
///
/// A reservation is a token: copying it does not copy the space. It is valid on the thread that
/// made it, until it is published or cancelled; using it afterwards (or from another thread)
/// throws `PoolError.Code.invalidArgument`.
public struct PReservation: Hashable, Sendable, CustomStringConvertible {
    /// Where the block will be: write its contents through ``Pool/initialize(_:to:atByteOffset:)``
    /// or ``Pool/withMutableView(of:_:)`` before publishing it.
    public let pointer: PRawPointer
    /// Usable bytes of the block (at least what was asked).
    public let usableSize: Int
    /// Identifies the reservation among those of its lane.
    let id: UInt64

    /// The block's pointer viewed as a pointer to `T`.
    public func pointer<T: BitwiseCopyable>(as type: T.Type) -> PPointer<T> { pointer.assumingType(T.self) }

    public var description: String { "PReservation(\(pointer), \(usableSize) bytes)" }
}

/// A pointer update that ``Pool/publish(_:setting:freeing:)`` makes together with the
/// publication: the 8-byte `slot` (in the heap, or the root) receives `value`.
public struct PSlotUpdate: Sendable {
    let slot: UInt64
    let value: UInt64

    /// Stores the typed pointer `value` into `slot`.
    public static func set<T>(_ slot: PPointer<PPointer<T>>, to value: PPointer<T>) -> PSlotUpdate {
        PSlotUpdate(slot: slot.offset, value: value.offset)
    }

    /// Stores the raw pointer `value` into `slot`.
    public static func set(_ slot: PPointer<PRawPointer>, to value: PRawPointer) -> PSlotUpdate {
        PSlotUpdate(slot: slot.offset, value: value.offset)
    }
}

/// A reservation a lane holds, between `reserve` and `publish` / `cancel`.
struct HeldReservation {
    let id: UInt64
    let reservation: Reservation
}

extension Pool {
    /// Reserves `bytes` bytes aligned to `alignment` (a power of two up to 4096), without
    /// allocating them: nothing persistent changes until ``publish(_:setting:freeing:)``.
    /// Fill the block in place (``initialize(_:to:atByteOffset:)``, ``withMutableView(of:_:)``)
    /// — no flush, no log — then publish it, or ``cancel(_:)`` it.
    ///
    /// - Parameters:
    ///   - n: the block's size in bytes (at least 1).
    ///   - alignment: a power of two up to 4096.
    ///   - zeroed: whether the block starts zeroed (true by default).
    /// - Throws: `outOfSpace` (nothing changed), `invalidArgument`, `readOnly`, `closed`.
    /// - Complexity: as ``allocate(bytes:alignment:zeroed:)``, without the fence.
    public func reserve(bytes n: Int, alignment: Int = 16, zeroed: Bool = true) throws(PoolError) -> PReservation {
        try checkWritable()
        try checkRequest(bytes: n, alignment: alignment)
        let lane = heap.currentLane()
        let state = transactionContext(lane).state
        let r = try heap.reserve(size: n, alignment: alignment, lane: lane, longLived: true)
        if zeroed { bytes.zero(r.offset, count: r.usableSize) }
        state[0].reservationSerial &+= 1
        let id = state[0].reservationSerial
        state[0].held.append(HeldReservation(id: id, reservation: r))
        return PReservation(pointer: PRawPointer(offset: UInt64(r.offset)), usableSize: r.usableSize, id: id)
    }

    /// Reserves room for `count` values of `T` (see ``reserve(bytes:alignment:zeroed:)``).
    public func reserve<T: BitwiseCopyable>(_ type: T.Type, count: Int = 1, zeroed: Bool = true) throws(PoolError) -> PReservation {
        try reserve(bytes: try byteCount(T.self, count), alignment: MemoryLayout<T>.alignment, zeroed: zeroed)
    }

    /// Writes `value` into the reserved block at `offset` bytes from its start (in place, not
    /// durable until the block is published).
    /// - Throws: `invalidArgument` when the reservation is not held by this thread, or the value
    ///   does not fit inside the block aligned; `closed`.
    public func initialize<T: BitwiseCopyable>(_ r: PReservation, to value: T, atByteOffset offset: Int = 0) throws(PoolError) {
        let o = try heldRange(r, offset: offset, count: MemoryLayout<T>.size)
        guard o % MemoryLayout<T>.alignment == 0 else {
            throw PoolError(.invalidArgument, "byte offset \(offset) is not aligned to \(MemoryLayout<T>.alignment) for \(T.self)", path: path)
        }
        bytes.store(value, at: o)
    }

    /// Lets `body` fill the reserved block through a view of all its usable bytes (in place,
    /// not durable until the block is published).
    /// - Warning: Do not keep the view past `body`.
    public func withMutableView<R>(of r: PReservation, _ body: (MutableByteView) throws -> R) throws -> R {
        let o = try heldRange(r, offset: 0, count: r.usableSize)
        return try body(bytes.mutableView(at: o, count: r.usableSize))
    }

    /// Makes the reserved blocks allocated, stores each update's pointer in its slot, and frees
    /// each block of `frees`, **atomically**: after a crash, either all of it happened or none.
    /// The blocks' contents as filled are durable with them. Durable when it returns.
    ///
    /// ```swift
    /// let r = try pool.reserve(Node.self)
    /// try pool.initialize(r, to: Node(value: 42, next: oldHead))
    /// try pool.publish([r], setting: [.set(list.field(\.head), to: r.pointer(as: Node.self))])
    /// ```
    ///
    /// Called inside a transaction of this thread, the publication joins it: it takes effect
    /// when the transaction commits, and is cancelled if it aborts.
    ///
    /// - Throws: `invalidArgument` when a reservation is not held by this thread (already
    ///   published or cancelled, or made elsewhere) or listed twice; `invalidPointer` for a slot
    ///   that is not an 8-byte location in the heap or the root slot; `invalidFree` for a block
    ///   of `frees` that is not a live allocation. Nothing changes when it throws: the
    ///   reservations stay held (cancel them, or publish again).
    /// - Complexity: one redo-log commit — as a transaction of the same size.
    public func publish(_ reservations: [PReservation], setting updates: [PSlotUpdate] = [],
                        freeing frees: [PRawPointer] = []) throws {
        try checkWritable()
        let lane = heap.currentLane()
        let state = transactionContext(lane).state
        // Validate everything before anything moves: a failed publish leaves the reservations held.
        var indexes: [Int] = []
        indexes.reserveCapacity(reservations.count)
        for r in reservations {
            guard let i = state[0].held.firstIndex(where: { $0.id == r.id && $0.reservation.offset == Int(r.pointer.offset) }) else {
                throw notHeld(r)
            }
            guard !indexes.contains(i) else { throw PoolError(.invalidArgument, "\(r) is listed twice", path: path) }
            indexes.append(i)
        }
        for u in updates {
            let o = Int(truncatingIfNeeded: u.slot)
            do throws(PoolError) { try heap.validateSlot(o) } catch { throw PoolError(error.code, error.message, path: path) }
            for i in indexes {
                let b = state[0].held[i].reservation
                if o >= b.offset && o < b.offset + b.usableSize {
                    throw PoolError(.invalidArgument, "slot 0x\(String(u.slot, radix: 16)) lies inside a block being published: initialize it instead", path: path)
                }
            }
        }
        try transaction { tx in
            // What can fail comes first: until the reservations are adopted, an error leaves
            // them held (the transaction aborts, or dooms the one this publication joined).
            for p in frees { try tx.free(p) }
            for u in updates { try tx.write(PRawPointer(offset: u.value), to: PPointer<PRawPointer>(offset: u.slot)) }
            // Adopted by the transaction: published at its commit, cancelled if it aborts.
            let ctx = tx.context.state
            for i in indexes.sorted(by: >) {
                let b = ctx[0].held.remove(at: i).reservation
                ctx[0].reservations.append(b)
                ctx[0].addFresh(FreshBlock(offset: b.offset, count: b.usableSize, zeroed: false, written: true))
            }
        }
    }

    /// Gives back a reservation: the space is free again; nothing durable ever changed.
    /// - Throws: `invalidArgument` when the reservation is not held by this thread.
    public func cancel(_ r: PReservation) throws(PoolError) {
        try checkOpen()
        let state = transactionContext(heap.currentLane()).state
        guard let i = state[0].held.firstIndex(where: { $0.id == r.id && $0.reservation.offset == Int(r.pointer.offset) }) else {
            throw notHeld(r)
        }
        heap.cancel(state[0].held.remove(at: i).reservation)
    }

    /// Reservations the calling thread holds in this pool (not yet published or cancelled).
    public var heldReservations: Int {
        guard !isClosed else { return 0 }
        return txStates[heap.currentLane()]?[0].held.count ?? 0
    }

    /// Cancels every reservation `lane` holds (its thread exits, or the pool closes).
    static func cancelHeld(lane: Int, states: FixedArray<FixedArray<TransactionState>?>, heap: Heap) {
        guard let state = states[lane], !state[0].held.isEmpty else { return }
        for h in state[0].held { heap.cancel(h.reservation) }
        state[0].held.removeAll()
    }

    /// The pool offset of `count` bytes at `offset` in the held reservation `r`, validated.
    private func heldRange(_ r: PReservation, offset: Int, count: Int) throws(PoolError) -> Int {
        try checkWritable()
        let lane = heap.currentLane()
        guard let state = txStates[lane],
              let h = state[0].held.first(where: { $0.id == r.id && $0.reservation.offset == Int(r.pointer.offset) }) else {
            throw notHeld(r)
        }
        guard offset >= 0, count >= 0, offset <= h.reservation.usableSize - count else {
            throw PoolError(.invalidArgument, "\(count) bytes at byte offset \(offset) do not fit in \(r)", path: path)
        }
        return h.reservation.offset + offset
    }

    private func notHeld(_ r: PReservation) -> PoolError {
        PoolError(.invalidArgument, "\(r) is not held by this thread: it was published or cancelled, or made by another thread", path: path)
    }
}
