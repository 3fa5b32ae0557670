#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CPersistentHeap

/// A fixed-size array of `T` in memory it does not own: the volatile tables of the allocator and
/// the transactions (per lane, per class, per unit), indexed without bounds checks or reference
/// counting on the hot path.
///
/// **Invariants:** every index is in `0..<count` (asserted in debug builds; in release the
/// owner's geometry guarantees it: units below the maximum unit count, lanes below the lane count,
/// classes below the class count); the memory lives until its owner frees it — `deallocate()` for
/// arrays made by `allocate`, the owning `MappedMemory` for arrays in anonymous mappings — and no
/// element is used after that.
@_spi(Core) public struct FixedArray<T>: @unchecked Sendable {
    @usableFromInline let base: UnsafeMutablePointer<T>
    /// The number of elements.
    @_spi(Core) public let count: Int

    @usableFromInline init(base: UnsafeMutablePointer<T>, count: Int) {
        self.base = base
        self.count = count
    }

    /// An array of `count` copies of `value` on the process heap; free it with `deallocate()`.
    @_spi(Core) public static func allocate(count: Int, repeating value: T) -> FixedArray {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
        p.initialize(repeating: value, count: count)
        return FixedArray(base: p, count: count)
    }

    /// An array of `elements` (copied) on the process heap; free it with `deallocate()`.
    @_spi(Core) public static func allocate(copying elements: [T]) -> FixedArray {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(elements.count, 1))
        p.initialize(from: elements, count: elements.count)
        return FixedArray(base: p, count: elements.count)
    }

    /// An array of `count` elements, element `i` made by `make(i)`; free it with `deallocate()`.
    @_spi(Core) public static func allocate(count: Int, _ make: (Int) -> T) -> FixedArray {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
        for i in 0..<count { (p + i).initialize(to: make(i)) }
        return FixedArray(base: p, count: count)
    }

    /// A new array of `newCount` elements holding the first `kept` elements of this one (the
    /// rest `filler`); this array is freed and must not be used again (a growable buffer's step).
    @_spi(Core) public func reallocated(count newCount: Int, keeping kept: Int, filler: T) -> FixedArray where T: BitwiseCopyable {
        precondition(kept >= 0 && kept <= count && kept <= newCount, "reallocated: keeping \(kept) of \(count) in \(newCount)")
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(newCount, 1))
        p.initialize(from: base, count: kept)
        (p + kept).initialize(repeating: filler, count: newCount - kept)
        base.deallocate()
        return FixedArray(base: p, count: newCount)
    }

    /// An array over `count` elements of zero-filled memory owned by `memory` (core-only).
    init(mapped memory: MappedMemory, count: Int) where T: BitwiseCopyable {
        self.init(base: memory.base.bindMemory(to: T.self, capacity: count), count: count)
    }

    /// Deinitializes the elements and frees the memory (arrays made by `allocate` only).
    @_spi(Core) public func deallocate() {
        base.deinitialize(count: count)
        base.deallocate()
    }

    /// Element `i`, read and changed in place.
    @inlinable @inline(__always)
    @_spi(Core) public subscript(i: Int) -> T {
        unsafeAddress {
            assert(i >= 0 && i < count, "FixedArray index \(i) out of 0..<\(count)")
            return UnsafePointer(base + i)
        }
        nonmutating unsafeMutableAddress {
            assert(i >= 0 && i < count, "FixedArray index \(i) out of 0..<\(count)")
            return base + i
        }
    }

    /// The address of element `i` (core-only: for C calls on it).
    @inlinable @inline(__always) func address(_ i: Int) -> UnsafeMutablePointer<T> { base + i }
}

extension FixedArray where T == Int32 {
    /// Atomic load of element `i` (sequentially consistent).
    @inlinable @inline(__always) @_spi(Core) public func atomicLoad(_ i: Int) -> Int32 { ph_load_seq_cst_i32(address(i)) }
    /// Atomic store to element `i` (sequentially consistent).
    @inlinable @inline(__always) @_spi(Core) public func atomicStore(_ i: Int, _ v: Int32) { ph_store_seq_cst_i32(address(i), v) }
    /// Atomic add to element `i` (sequentially consistent); returns the previous value.
    @inlinable @inline(__always) @discardableResult
    @_spi(Core) public func atomicAdd(_ i: Int, _ v: Int32) -> Int32 { ph_fetch_add_seq_cst_i32(address(i), v) }
}

extension FixedArray where T == UInt64 {
    /// Atomic load of element `i`.
    @inlinable @inline(__always) @_spi(Core) public func atomicLoad(_ i: Int, _ order: LoadOrder) -> UInt64 {
        switch order {
        case .relaxed: return ph_load_relaxed_u64(address(i))
        case .acquiring: return ph_load_acquire_u64(address(i))
        case .sequentiallyConsistent: return ph_load_seq_cst_u64(address(i))
        }
    }

    /// Atomic store to element `i`.
    @inlinable @inline(__always) @_spi(Core) public func atomicStore(_ i: Int, _ v: UInt64, _ order: StoreOrder) {
        switch order {
        case .relaxed: ph_store_relaxed_u64(address(i), v)
        case .releasing: ph_store_release_u64(address(i), v)
        }
    }

    /// Sequentially consistent store to element `i`: ordered before every later load of the
    /// thread (a store→load handshake).
    @inlinable @inline(__always) @_spi(Core) public func sequentiallyConsistentStore(_ i: Int, _ v: UInt64) {
        ph_store_seq_cst_u64(address(i), v)
    }
}

/// Zero-filled anonymous memory, reserved for a maximum size and committed by the kernel page by
/// page as it is touched: the per-unit volatile tables, sized for the maximum pool.
@_spi(Core) public final class MappedMemory: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let size: Int

    /// `bytes` bytes (rounded up to a page).
    @_spi(Core) public init(bytes: Int) throws(PoolError) {
        size = PoolMapping.roundUp(max(bytes, 1), to: VirtualMemory.pageSize)
        base = try VirtualMemory.reserve(size)
        try VirtualMemory.mapAnonymous(at: base, size: size)
    }

    /// The memory as `count` elements of `T` (valid while this object lives).
    @_spi(Core) public func array<T: BitwiseCopyable>(of _: T.Type, count: Int) -> FixedArray<T> {
        precondition(count * MemoryLayout<T>.stride <= size)
        return FixedArray(mapped: self, count: count)
    }

    deinit { VirtualMemory.release(base, size: size) }
}

/// Test-and-test-and-set spin locks, one per cache line: for short critical sections that make
/// no system call (the allocator's class and extent indexes).
@_spi(Core) public struct SpinLocks: @unchecked Sendable {
    @usableFromInline static let stride = 16  // Int32s: 64 bytes, one line per lock
    @usableFromInline let words: FixedArray<Int32>

    /// `count` unlocked locks; free them with `deallocate()`.
    @_spi(Core) public init(count: Int) { words = .allocate(count: count * SpinLocks.stride, repeating: 0) }
    @_spi(Core) public func deallocate() { words.deallocate() }

    @inlinable @inline(__always) @_spi(Core) public func lock(_ i: Int) { ph_spin_lock(words.address(i * SpinLocks.stride)) }
    @inlinable @inline(__always) @_spi(Core) public func unlock(_ i: Int) { ph_spin_unlock(words.address(i * SpinLocks.stride)) }
}
