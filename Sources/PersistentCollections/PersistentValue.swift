import PersistentHeap
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A type whose values can be kept in persistent containers.
///
/// A value is kept as its `Stored` form, a `BitwiseCopyable` value inside the container's
/// persistent memory. `BitwiseCopyable` types store themselves (declare the conformance with an
/// empty extension: `extension MyStruct: PersistentValue {}`); `String` stores a
/// ``PersistentString``, allocated and freed with the container's entries.
public protocol PersistentValue {
    /// The form kept in persistent memory.
    associatedtype Stored: BitwiseCopyable
    /// The stored form of `value`, allocating what it owns through `tx`.
    static func store(_ value: Self, in tx: Transaction) throws -> Stored
    /// The value back from its stored form.
    static func load(_ stored: Stored, from pool: Pool) throws -> Self
    /// Frees what a stored form owns (nothing for bitwise-copyable values).
    static func release(_ stored: Stored, in tx: Transaction) throws
    /// The deep check of a stored form read from the pool: records in `check` every problem with
    /// what it owns (a string's block and bytes, a nested container). Default: nothing to check
    /// (a bitwise-copyable value owns nothing; its bytes are the application's to validate).
    static func validate(_ stored: Stored, in check: inout ContainerCheck)

    /// Calls `body` with the bytes a sorted map keeps for `value` — inline in a leaf, or in a
    /// block of their own when long (``PersistentSortedDictionary``). Default for bitwise-copyable
    /// values: their bytes; `String`: its UTF-8.
    static func withEncodedBytes<R>(_ value: Self, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
    /// The value back from the bytes `withEncodedBytes` gave (read from a pool: untrusted —
    /// throw `PoolError.Code.corrupted` for bytes that cannot be one).
    static func decode(_ bytes: ByteView, in pool: Pool) throws -> Self
    /// The deep check of encoded bytes read from a sorted map: records in `check` what is wrong
    /// with them or with what they refer to (a nested container). Default: that they decode.
    static func validateEncoded(_ bytes: ByteView, in check: inout ContainerCheck)
}

extension PersistentValue {
    public static func validate(_ stored: Stored, in check: inout ContainerCheck) {}
    public static func validateEncoded(_ bytes: ByteView, in check: inout ContainerCheck) {
        do { _ = try decode(bytes, in: check.pool) } catch { check.note("a stored \(Self.self): \(error)") }
    }
}

extension PersistentValue where Self: BitwiseCopyable {
    /// The value's bytes.
    @inlinable
    public static func withEncodedBytes<R>(_ value: Self, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(of: value, body)
    }
    /// The value loaded from exactly its size in bytes.
    @inlinable
    public static func decode(_ bytes: ByteView, in pool: Pool) throws -> Self {
        guard bytes.count == MemoryLayout<Self>.size else {
            throw PoolError(.corrupted, "a stored \(Self.self) is \(bytes.count) bytes, not \(MemoryLayout<Self>.size)", path: pool.path)
        }
        return bytes.load(Self.self, at: 0)
    }
}

/// A type that can be a key of a persistent map: ordered (sorted maps) and hashed with a
/// hash that is the same in every process (hash maps).
public protocol PersistentKey: PersistentValue {
    /// Orders `key` against a stored key: negative, zero or positive.
    static func compare(_ key: Self, _ stored: Stored, in pool: Pool) throws -> Int
    /// A hash of `key` that does not change between runs (Swift's `Hasher` is seeded per
    /// process, so it cannot be kept in a persistent table).
    static func persistentHash(_ key: Self) -> UInt64
    /// The hash of a stored key (equal to `persistentHash` of the key it stores).
    static func persistentHash(stored: Stored, in pool: Pool) throws -> UInt64
    /// Calls `body` with a comparator of `key` against stored keys (as `compare`), letting a key
    /// prepare itself once for many comparisons (a string fetches its UTF-8 once).
    static func withComparator<R>(_ key: Self, in pool: Pool, _ body: ((Stored) throws -> Int) throws -> R) throws -> R
    /// A 56-bit prefix of the key whose unsigned order agrees with the key order wherever two
    /// prefixes differ (equal prefixes say nothing). Sorted maps keep it beside each entry so a
    /// search scans a compact array. Default: 0 (always compare in full).
    static func orderPrefix(_ key: Self) -> UInt64
    /// The same for a stored key.
    static func orderPrefix(stored: Stored) -> UInt64

    /// Whether the unsigned byte order of ``PersistentValue/withEncodedBytes(_:_:)`` is the key
    /// order: a sorted map then compares encoded keys as bytes (integers, `String`). Otherwise it
    /// decodes each stored key and compares with ``compareKeys(_:_:)``. Default: false.
    static var encodingIsOrdered: Bool { get }
    /// Orders two keys: negative, zero or positive. Default for `Comparable` keys: `<`;
    /// otherwise the byte order of their encodings.
    static func compareKeys(_ a: Self, _ b: Self) -> Int
}

extension PersistentKey {
    public static func withComparator<R>(_ key: Self, in pool: Pool, _ body: ((Stored) throws -> Int) throws -> R) throws -> R {
        try body { try compare(key, $0, in: pool) }
    }
    /// No order prefix by default (0): keys are compared in full.
    public static func orderPrefix(_ key: Self) -> UInt64 { 0 }
    /// No order prefix by default (0): keys are compared in full.
    public static func orderPrefix(stored: Stored) -> UInt64 { 0 }
    /// By default a key's encoded bytes are not in its order.
    public static var encodingIsOrdered: Bool { false }
    public static func compareKeys(_ a: Self, _ b: Self) -> Int {
        withEncodedBytes(a) { x in withEncodedBytes(b) { y in compareBytes(x, y) } }
    }
}

extension PersistentKey where Self: Comparable {
    public static func compareKeys(_ a: Self, _ b: Self) -> Int { a < b ? -1 : (a == b ? 0 : 1) }
}

/// Orders byte strings: unsigned bytes, then length (a shorter prefix first).
@inlinable
public func compareBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
    let n = Swift.min(a.count, b.count)
    if n > 0 {
        let r = memcmp(a.baseAddress!, b.baseAddress!, n)
        if r != 0 { return Int(r) }
    }
    return a.count < b.count ? -1 : (a.count == b.count ? 0 : 1)
}

extension PersistentKey where Self: FixedWidthInteger & BitwiseCopyable, Stored == Self {
    /// The top 56 bits of the value widened to 64 bits, sign bit flipped for signed types
    /// (an order-preserving transform).
    /// The first 7 bytes of the big-endian, sign-flipped encoding: equal-ordered with the key.
    @inlinable public static func orderPrefix(_ key: Self) -> UInt64 {
        let wide = Self.isSigned ? UInt64(bitPattern: Int64(truncatingIfNeeded: key)) ^ (1 << 63) : UInt64(truncatingIfNeeded: key)
        return wide >> 8
    }
    /// The order prefix of a stored key (the key itself).
    @inlinable public static func orderPrefix(stored: Self) -> UInt64 { orderPrefix(stored) }

    /// Integers are encoded big-endian (signed ones with the sign bit flipped): their unsigned
    /// byte order is their numeric order, so a sorted map compares them as bytes.
    @inlinable public static var encodingIsOrdered: Bool { true }
    /// Calls `body` with the key's big-endian, sign-flipped bytes.
    @inlinable
    public static func withEncodedBytes<R>(_ value: Self, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let flipped = isSigned ? value ^ (Self(1) << (Self.bitWidth - 1)) : value
        return try withUnsafeBytes(of: flipped.bigEndian, body)
    }
    /// The key back from its encoded bytes (exactly its size, else `corrupted`).
    @inlinable
    public static func decode(_ bytes: ByteView, in pool: Pool) throws -> Self {
        guard bytes.count == MemoryLayout<Self>.size else {
            throw PoolError(.corrupted, "a stored \(Self.self) key is \(bytes.count) bytes, not \(MemoryLayout<Self>.size)", path: pool.path)
        }
        let v = Self(bigEndian: bytes.load(Self.self, at: 0))
        return isSigned ? v ^ (Self(1) << (Self.bitWidth - 1)) : v
    }
}

extension PersistentValue where Self: BitwiseCopyable, Stored == Self {
    /// A bitwise value is its own stored form.
    @inlinable public static func store(_ value: Self, in tx: Transaction) throws -> Self { value }
    /// A bitwise value is its own stored form.
    @inlinable public static func load(_ stored: Self, from pool: Pool) throws -> Self { stored }
    /// A bitwise value owns nothing to free.
    @inlinable public static func release(_ stored: Self, in tx: Transaction) throws {}
}

/// FNV-1a over bytes, finished with a 64-bit mix: the persistent hash of bitwise keys.
@inlinable
public func persistentHashBytes(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    h ^= h >> 33
    h = h &* 0xff51_afd7_ed55_8ccd
    return h ^ (h >> 33)
}

extension PersistentKey where Self: BitwiseCopyable & Comparable, Stored == Self {
    /// -1, 0 or 1 as `key` is below, equal to or above `stored` (numeric order).
    @inlinable public static func compare(_ key: Self, _ stored: Self, in pool: Pool) throws -> Int {
        key < stored ? -1 : (key == stored ? 0 : 1)
    }
    @inlinable public static func persistentHash(_ key: Self) -> UInt64 {
        withUnsafeBytes(of: key) { persistentHashBytes($0) }
    }
    /// The persistent hash of a stored key (the key itself).
    @inlinable public static func persistentHash(stored: Self, in pool: Pool) throws -> UInt64 {
        persistentHash(stored)
    }
}

extension Int: PersistentKey {}
extension Int64: PersistentKey {}
extension Int32: PersistentKey {}
extension Int16: PersistentKey {}
extension Int8: PersistentKey {}
extension UInt: PersistentKey {}
extension UInt64: PersistentKey {}
extension UInt32: PersistentKey {}
extension UInt16: PersistentKey {}
extension UInt8: PersistentKey {}
extension Double: PersistentValue {}
extension Float: PersistentValue {}
extension Bool: PersistentValue {}
extension PRawPointer: PersistentValue {}
extension PPointer: PersistentValue {
    /// A `Ref` to another container (a dictionary of arrays) is checked as that container; other
    /// pointers are the application's.
    public static func validate(_ stored: PPointer, in check: inout ContainerCheck) {
        guard !stored.isNull, let header = Pointee.self as? any ContainerHeader.Type else { return }
        header.validateContainer(at: stored.raw, in: &check)
    }
    public static func validateEncoded(_ bytes: ByteView, in check: inout ContainerCheck) {
        do { validate(try decode(bytes, in: check.pool), in: &check) } catch { check.note("a stored pointer: \(error)") }
    }
}
