import CPersistentHeap

/// Typed access to pool bytes by pool offset. All raw loads and stores of persistent metadata
/// go through here. Offsets must be inside the mapping; callers that handle untrusted offsets
/// check them first (`Heap.contains`, `RedoLog.validate`).
struct PoolBytes {
    let base: UnsafeMutableRawPointer

    @inline(__always) func pointer(_ offset: Int) -> UnsafeMutableRawPointer { base + offset }
    @inline(__always) func u64(_ offset: Int) -> UInt64 { (base + offset).load(as: UInt64.self) }
    @inline(__always) func u32(_ offset: Int) -> UInt32 { (base + offset).load(as: UInt32.self) }
    @inline(__always) func u16(_ offset: Int) -> UInt16 { (base + offset).load(as: UInt16.self) }
    @inline(__always) func setU64(_ offset: Int, _ v: UInt64) { (base + offset).storeBytes(of: v, as: UInt64.self) }
    @inline(__always) func setU32(_ offset: Int, _ v: UInt32) { (base + offset).storeBytes(of: v, as: UInt32.self) }
    @inline(__always) func setU16(_ offset: Int, _ v: UInt16) { (base + offset).storeBytes(of: v, as: UInt16.self) }
    @inline(__always) func words(_ offset: Int) -> UnsafeMutablePointer<UInt64> {
        (base + offset).assumingMemoryBound(to: UInt64.self)
    }
    /// Copies `source` to pool offset `offset`.
    func copy(_ source: [UInt8], to offset: Int) {
        source.withUnsafeBytes { src in
            if let from = src.baseAddress { (base + offset).copyMemory(from: from, byteCount: src.count) }
        }
    }
    /// The `count` bytes at pool offset `offset`.
    func read(_ offset: Int, count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: base + offset, count: count))
    }
    /// Atomic 8-byte store (release): a single-word commit point.
    @inline(__always) func atomicStore(_ offset: Int, _ v: UInt64) { ph_atomic_store_u64(words(offset), v) }
    @inline(__always) func atomicLoad(_ offset: Int) -> UInt64 { ph_atomic_load_u64(words(offset)) }
}

/// Volatile kinds of the extent starting at a unit (a superset of `UnitKind`).
enum VolatileKind: UInt8 {
    case none = 0
    case free = 1
    case used = 2
    case run = 3
    /// A run being turned back into a free extent: frees into it are refused.
    case retiring = 4
    /// A free extent reserved by a transaction: persistently its own FREE extent, volatilely
    /// out of every index until the transaction publishes or cancels it.
    case reserved = 5
}

/// Volatile information about the extent that starts at a unit (16 bytes per unit, in a lazily
/// committed anonymous mapping sized for the maximum pool). Valid only at extent starts; when
/// a start becomes interior (merge), its record is cleared.
///
///     0  kind       UInt8 (VolatileKind)
///     1  sizeClass  UInt8  (runs)
///     2  flags      UInt8  bit 0: the extent's storage was punched out of the file;
///                          bit 1: a run indexed from its FULL hint, header and bitmap not read yet;
///                          bit 2: the owning lane holds unpublished reservations in this run
///                                 (it must not go to another lane meanwhile)
///     4  length     UInt32 units
///     8  freeCount  Int32  free blocks (runs; atomic)
///     12 owner      Int32  lane + 1 owning the run, 0 = none (atomic)
struct UnitInfo {
    let p: UnsafeMutableRawPointer

    static let stride = 16
    static let punchedFlag: UInt8 = 1
    static let unloadedFlag: UInt8 = 2
    static let pinnedFlag: UInt8 = 4

    @inline(__always) var kind: VolatileKind {
        get { VolatileKind(rawValue: p.load(as: UInt8.self)) ?? .none }
        nonmutating set { p.storeBytes(of: newValue.rawValue, as: UInt8.self) }
    }
    @inline(__always) var sizeClass: Int {
        get { Int(p.load(fromByteOffset: 1, as: UInt8.self)) }
        nonmutating set { p.storeBytes(of: UInt8(newValue), toByteOffset: 1, as: UInt8.self) }
    }
    @inline(__always) var flags: UInt8 {
        get { p.load(fromByteOffset: 2, as: UInt8.self) }
        nonmutating set { p.storeBytes(of: newValue, toByteOffset: 2, as: UInt8.self) }
    }
    @inline(__always) var length: Int {
        get { Int(p.load(fromByteOffset: 4, as: UInt32.self)) }
        nonmutating set { p.storeBytes(of: UInt32(newValue), toByteOffset: 4, as: UInt32.self) }
    }
    @inline(__always) var freeCount: UnsafeMutablePointer<Int32> { (p + 8).assumingMemoryBound(to: Int32.self) }
    @inline(__always) var owner: UnsafeMutablePointer<Int32> { (p + 12).assumingMemoryBound(to: Int32.self) }

    /// Clears the record (the unit is no longer an extent start).
    @inline(__always) func clear() { p.initializeMemory(as: UInt64.self, repeating: 0, count: 2) }
}

/// Anonymous zero-filled memory for volatile per-unit arrays, reserved for the maximum pool
/// size and committed by the kernel page by page as it is touched.
final class VolatileArray: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let size: Int

    init(bytes: Int) throws(PoolError) {
        size = PoolMapping.roundUp(max(bytes, 1), to: VirtualMemory.pageSize)
        base = try VirtualMemory.reserve(size)
        try VirtualMemory.mapAnonymous(at: base, size: size)
    }

    deinit { VirtualMemory.release(base, size: size) }
}
