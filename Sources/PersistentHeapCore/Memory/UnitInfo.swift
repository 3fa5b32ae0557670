import CPersistentHeap

/// The allocator's volatile record of the extent that starts at a unit (16 bytes per unit, in
/// `MappedMemory` sized for the maximum pool). Its meaning is the allocator's (`VolatileKind`,
/// flags); its bytes and atomics are here, in the core.
///
///     0  kind       UInt8   (the allocator's VolatileKind; atomic, relaxed)
///     1  sizeClass  UInt8   (runs)
///     2  flags      UInt8   (atomic, relaxed: set by one lane's thread, read by others)
///     4  length     UInt32  units
///     8  freeCount  Int32   free blocks (runs; atomic, sequentially consistent)
///     12 owner      Int32   lane + 1 owning the run, 0 = none (atomic, sequentially consistent)
///
/// **Invariant:** `p` points at a record of a `UnitInfoTable` that is alive (the heap owns it for
/// the pool's lifetime). `kind`, `sizeClass` and `length` change only under the allocator's locks
/// and are read without them only for extents that cannot change meanwhile (a live block's run).
@_spi(Core) public struct UnitInfo {
    @usableFromInline let p: UnsafeMutableRawPointer

    @usableFromInline init(p: UnsafeMutableRawPointer) { self.p = p }

    @_spi(Core) public static let stride = 16

    /// The kind byte (relaxed atomic loads and stores: written under one of the allocator's locks,
    /// read under another — a neighbour's merge reads the kind at an extent's edge).
    @inlinable @inline(__always) @_spi(Core) public var kindRaw: UInt8 {
        get { ph_load_relaxed_u8(p.assumingMemoryBound(to: UInt8.self)) }
        nonmutating set { ph_store_relaxed_u8(p.assumingMemoryBound(to: UInt8.self), newValue) }
    }
    @inlinable @inline(__always) @_spi(Core) public var sizeClass: Int {
        get { Int(p.load(fromByteOffset: 1, as: UInt8.self)) }
        nonmutating set { p.storeBytes(of: UInt8(truncatingIfNeeded: newValue), toByteOffset: 1, as: UInt8.self) }
    }
    /// The flags byte (relaxed atomic loads and stores).
    @inlinable @inline(__always) @_spi(Core) public var flags: UInt8 {
        get { ph_load_relaxed_u8((p + 2).assumingMemoryBound(to: UInt8.self)) }
        nonmutating set { ph_store_relaxed_u8((p + 2).assumingMemoryBound(to: UInt8.self), newValue) }
    }
    @inlinable @inline(__always) @_spi(Core) public var length: Int {
        get { Int(p.load(fromByteOffset: 4, as: UInt32.self)) }
        nonmutating set { p.storeBytes(of: UInt32(truncatingIfNeeded: newValue), toByteOffset: 4, as: UInt32.self) }
    }

    @inlinable @inline(__always) var freeCountWord: UnsafeMutablePointer<Int32> { (p + 8).assumingMemoryBound(to: Int32.self) }
    @inlinable @inline(__always) var ownerWord: UnsafeMutablePointer<Int32> { (p + 12).assumingMemoryBound(to: Int32.self) }

    /// Free blocks (sequentially consistent: the FULL-hint protocol pairs it with the table entry).
    @inlinable @inline(__always) @_spi(Core) public var freeCount: Int32 { ph_load_seq_cst_i32(freeCountWord) }
    @inlinable @inline(__always) @_spi(Core) public func storeFreeCount(_ v: Int32) { ph_store_seq_cst_i32(freeCountWord, v) }
    /// Adds `v` to the free count (sequentially consistent); returns the previous value.
    @inlinable @inline(__always) @discardableResult
    @_spi(Core) public func addFreeCount(_ v: Int32) -> Int32 { ph_fetch_add_seq_cst_i32(freeCountWord, v) }

    /// The owning lane + 1, 0 for none (sequentially consistent).
    @inlinable @inline(__always) @_spi(Core) public var owner: Int32 { ph_load_seq_cst_i32(ownerWord) }
    @inlinable @inline(__always) @_spi(Core) public func storeOwner(_ v: Int32) { ph_store_seq_cst_i32(ownerWord, v) }

    /// Clears the record (the unit is no longer an extent start).
    @inlinable @inline(__always) @_spi(Core) public func clear() { p.initializeMemory(as: UInt64.self, repeating: 0, count: 2) }
}

/// The `UnitInfo` records of every unit, in `MappedMemory` (committed as units are touched).
@_spi(Core) public struct UnitInfoTable: @unchecked Sendable {
    @usableFromInline let base: UnsafeMutableRawPointer
    private let owner: MappedMemory

    /// Records for `units` units.
    @_spi(Core) public init(units: Int) throws(PoolError) {
        owner = try MappedMemory(bytes: units * UnitInfo.stride)
        base = owner.base
    }

    /// The record of unit `u` (`u` below the table's unit count).
    @inlinable @inline(__always) @_spi(Core) public subscript(u: Int) -> UnitInfo { UnitInfo(p: base + u * UnitInfo.stride) }
}
