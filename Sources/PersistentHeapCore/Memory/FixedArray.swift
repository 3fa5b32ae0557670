#if canImport(Glibc)
import Glibc
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
package struct FixedArray<T>: @unchecked Sendable {
    private let base: UnsafeMutablePointer<T>
    /// The number of elements.
    package let count: Int

    private init(base: UnsafeMutablePointer<T>, count: Int) {
        self.base = base
        self.count = count
    }

    /// An array of `count` copies of `value` on the process heap; free it with `deallocate()`.
    package static func allocate(count: Int, repeating value: T) -> FixedArray {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
        p.initialize(repeating: value, count: count)
        return FixedArray(base: p, count: count)
    }

    /// An array of `elements` (copied) on the process heap; free it with `deallocate()`.
    package static func allocate(copying elements: [T]) -> FixedArray {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(elements.count, 1))
        p.initialize(from: elements, count: elements.count)
        return FixedArray(base: p, count: elements.count)
    }

    /// An array over `count` elements of zero-filled memory owned by `memory` (core-only).
    init(mapped memory: MappedMemory, count: Int) where T: BitwiseCopyable {
        self.init(base: memory.base.bindMemory(to: T.self, capacity: count), count: count)
    }

    /// Deinitializes the elements and frees the memory (arrays made by `allocate` only).
    package func deallocate() {
        base.deinitialize(count: count)
        base.deallocate()
    }

    /// Element `i`, read and changed in place.
    @inline(__always)
    package subscript(i: Int) -> T {
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
    @inline(__always) func address(_ i: Int) -> UnsafeMutablePointer<T> { base + i }
}

extension FixedArray where T == Int32 {
    /// Atomic load of element `i` (sequentially consistent).
    @inline(__always) package func atomicLoad(_ i: Int) -> Int32 { ph_load_seq_cst_i32(address(i)) }
    /// Atomic store to element `i` (sequentially consistent).
    @inline(__always) package func atomicStore(_ i: Int, _ v: Int32) { ph_store_seq_cst_i32(address(i), v) }
    /// Atomic add to element `i` (sequentially consistent); returns the previous value.
    @inline(__always) @discardableResult
    package func atomicAdd(_ i: Int, _ v: Int32) -> Int32 { ph_fetch_add_seq_cst_i32(address(i), v) }
}

/// Zero-filled anonymous memory, reserved for a maximum size and committed by the kernel page by
/// page as it is touched: the per-unit volatile tables, sized for the maximum pool.
package final class MappedMemory: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let size: Int

    /// `bytes` bytes (rounded up to a page).
    package init(bytes: Int) throws(PoolError) {
        size = PoolMapping.roundUp(max(bytes, 1), to: VirtualMemory.pageSize)
        base = try VirtualMemory.reserve(size)
        try VirtualMemory.mapAnonymous(at: base, size: size)
    }

    /// The memory as `count` elements of `T` (valid while this object lives).
    package func array<T: BitwiseCopyable>(of _: T.Type, count: Int) -> FixedArray<T> {
        precondition(count * MemoryLayout<T>.stride <= size)
        return FixedArray(mapped: self, count: count)
    }

    deinit { VirtualMemory.release(base, size: size) }
}

/// Test-and-test-and-set spin locks, one per cache line: for short critical sections that make
/// no system call (the allocator's class and extent indexes).
package struct SpinLocks: @unchecked Sendable {
    private static let stride = 16  // Int32s: 64 bytes, one line per lock
    private let words: FixedArray<Int32>

    /// `count` unlocked locks; free them with `deallocate()`.
    package init(count: Int) { words = .allocate(count: count * SpinLocks.stride, repeating: 0) }
    package func deallocate() { words.deallocate() }

    @inline(__always) package func lock(_ i: Int) { ph_spin_lock(words.address(i * SpinLocks.stride)) }
    @inline(__always) package func unlock(_ i: Int) { ph_spin_unlock(words.address(i * SpinLocks.stride)) }
}
