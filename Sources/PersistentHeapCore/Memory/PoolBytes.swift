#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CPersistentHeap

/// Typed access to a pool's mapping by pool offset: the one door through which the allocator,
/// recovery, transactions and the pool reach persistent memory.
///
/// **Invariant (the caller's):** every offset lies inside the mapping, with its whole access
/// (`0 ≤ offset`, `offset + size ≤ mapped size`), and atomic accesses are 8-byte aligned.
/// Offsets computed from validated geometry (a header that passed `PoolHeader.inconsistency`, a
/// unit below the heap's unit count, a block of a validated run) satisfy it by construction;
/// offsets read from the pool are validated first (`Heap.inHeap`, `RedoLog.scan`,
/// `Pool.checkedAddress`). The mapping never moves while the pool is open.
///
/// Atomics name their memory ordering at each use.
@_spi(Core) public struct PoolBytes: @unchecked Sendable {
    /// Start of the mapping (core-only: no other module sees an address).
    @usableFromInline let base: UnsafeMutableRawPointer

    @usableFromInline init(base: UnsafeMutableRawPointer) { self.base = base }

    /// The address of pool offset `offset` (core-only).
    @inlinable @inline(__always) func pointer(_ offset: Int) -> UnsafeMutableRawPointer { base + offset }

    // MARK: Plain loads and stores

    @inlinable @inline(__always) @_spi(Core) public func u64(_ offset: Int) -> UInt64 { (base + offset).load(as: UInt64.self) }
    @inlinable @inline(__always) @_spi(Core) public func u32(_ offset: Int) -> UInt32 { (base + offset).load(as: UInt32.self) }
    @inlinable @inline(__always) @_spi(Core) public func u16(_ offset: Int) -> UInt16 { (base + offset).load(as: UInt16.self) }
    @inlinable @inline(__always) @_spi(Core) public func u8(_ offset: Int) -> UInt8 { (base + offset).load(as: UInt8.self) }
    @inlinable @inline(__always) @_spi(Core) public func setU64(_ offset: Int, _ v: UInt64) { (base + offset).storeBytes(of: v, as: UInt64.self) }
    @inlinable @inline(__always) @_spi(Core) public func setU32(_ offset: Int, _ v: UInt32) { (base + offset).storeBytes(of: v, as: UInt32.self) }
    @inlinable @inline(__always) @_spi(Core) public func setU16(_ offset: Int, _ v: UInt16) { (base + offset).storeBytes(of: v, as: UInt16.self) }

    /// The `T` at `offset` (no alignment needed).
    @inlinable @inline(__always) @_spi(Core) public func load<T: BitwiseCopyable>(_: T.Type, at offset: Int) -> T {
        (base + offset).loadUnaligned(as: T.self)
    }

    /// Stores `value` at `offset` (no alignment needed).
    @inlinable @inline(__always) @_spi(Core) public func store<T: BitwiseCopyable>(_ value: T, at offset: Int) {
        (base + offset).storeBytes(of: value, as: T.self)
    }

    // MARK: Byte ranges

    /// Copies `source` to `offset`.
    @_spi(Core) public func copy(_ source: [UInt8], to offset: Int) {
        source.withUnsafeBytes { src in
            if let from = src.baseAddress { (base + offset).copyMemory(from: from, byteCount: src.count) }
        }
    }

    /// The `count` bytes at `offset`.
    @_spi(Core) public func read(_ offset: Int, count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: base + offset, count: count))
    }

    /// Copies `count` bytes from `source` to `destination` inside the pool (the ranges may overlap).
    @inlinable @inline(__always) @_spi(Core) public func move(from source: Int, to destination: Int, count: Int) {
        guard count > 0 else { return }
        memmove(base + destination, base + source, count)
    }

    /// Sets `count` bytes at `offset` to zero.
    @inlinable @inline(__always) @_spi(Core) public func zero(_ offset: Int, count: Int) {
        guard count > 0 else { return }
        (base + offset).initializeMemory(as: UInt8.self, repeating: 0, count: count)
    }

    /// Whether the `count` bytes at `a` and `b` are equal.
    @_spi(Core) public func equal(_ a: Int, _ b: Int, count: Int) -> Bool {
        count <= 0 || memcmp(base + a, base + b, count) == 0
    }

    /// CRC-32C of `count` bytes at `offset`, continuing `crc` (start with 0).
    @inlinable @inline(__always) @_spi(Core) public func crc32c(_ offset: Int, count: Int, continuing crc: UInt32 = 0) -> UInt32 {
        Checksum.crc32c(base + offset, count: count, continuing: crc)
    }

    // MARK: Atomics (8-byte aligned offsets)

    @inlinable @inline(__always) func word(_ offset: Int) -> UnsafeMutablePointer<UInt64> {
        (base + offset).assumingMemoryBound(to: UInt64.self)
    }

    /// Atomic 8-byte load.
    @inlinable @inline(__always) @_spi(Core) public func atomicLoad(_ offset: Int, _ order: LoadOrder) -> UInt64 {
        switch order {
        case .relaxed: return ph_load_relaxed_u64(word(offset))
        case .acquiring: return ph_load_acquire_u64(word(offset))
        case .sequentiallyConsistent: return ph_load_seq_cst_u64(word(offset))
        }
    }

    /// Atomic 8-byte store.
    @inlinable @inline(__always) @_spi(Core) public func atomicStore(_ offset: Int, _ v: UInt64, _ order: StoreOrder) {
        switch order {
        case .relaxed: ph_store_relaxed_u64(word(offset), v)
        case .releasing: ph_store_release_u64(word(offset), v)
        }
    }

    /// Atomically ORs `bits` into the word; returns its previous value.
    @inlinable @inline(__always) @discardableResult
    @_spi(Core) public func atomicOr(_ offset: Int, _ bits: UInt64, _ order: UpdateOrder) -> UInt64 {
        switch order {
        case .acquiringAndReleasing: return ph_fetch_or_acq_rel_u64(word(offset), bits)
        case .sequentiallyConsistent: return ph_fetch_or_seq_cst_u64(word(offset), bits)
        }
    }

    /// Atomically ANDs `bits` into the word; returns its previous value.
    @inlinable @inline(__always) @discardableResult
    @_spi(Core) public func atomicAnd(_ offset: Int, _ bits: UInt64, _ order: UpdateOrder) -> UInt64 {
        switch order {
        case .acquiringAndReleasing: return ph_fetch_and_acq_rel_u64(word(offset), bits)
        case .sequentiallyConsistent: return ph_fetch_and_seq_cst_u64(word(offset), bits)
        }
    }

    /// Atomically replaces the word with `desired` if it holds `expected` (sequentially consistent).
    @inlinable @inline(__always) @_spi(Core) public func compareExchange(_ offset: Int, expected: UInt64, desired: UInt64) -> Bool {
        ph_compare_exchange_seq_cst_u64(word(offset), expected, desired) != 0
    }
}

/// Memory orderings of atomic loads, stores and read-modify-writes (named at each use).
@_spi(Core) public enum LoadOrder: Sendable { case relaxed, acquiring, sequentiallyConsistent }
@_spi(Core) public enum StoreOrder: Sendable { case relaxed, releasing }
@_spi(Core) public enum UpdateOrder: Sendable { case acquiringAndReleasing, sequentiallyConsistent }
