#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(Containers) import PersistentHeap

/// An immutable UTF-8 string in a pool: 8 bytes, a pointer to a block holding the byte count and
/// the bytes. Convert with ``make(_:in:)`` and ``string(in:)``; the empty string needs no block.
///
///     block:  0  count  UInt64
///             8  bytes  UTF-8
@frozen
public struct PersistentString: BitwiseCopyable, Sendable, Equatable {
    /// The block, or null for the empty string.
    public var storage: PRawPointer

    /// The empty string.
    public init() { storage = .null }

    init(storage: PRawPointer) { self.storage = storage }

    /// Stores `string` in a new block allocated through `tx` (freed if `tx` aborts).
    public static func make(_ string: String, in tx: Transaction) throws -> PersistentString {
        var s = string
        return try s.withUTF8 { utf8 -> PersistentString in
            guard utf8.count > 0 else { return PersistentString() }
            let p = try tx.allocate(bytes: 8 + utf8.count, alignment: 8) { (view: MutableByteView) in
                view.store(UInt64(utf8.count), at: 0)
                view.copy(utf8, to: 8)
            }
            return PersistentString(storage: p)
        }
    }

    /// The byte count stored in the block, checked: it must fit in the pool.
    func checkedCount(in pool: Pool) throws -> Int {
        let raw = try pool.load(storage.assumingType(UInt64.self))
        guard raw <= UInt64(pool.size) else {
            throw corrupted(pool, "string", at: Int(truncatingIfNeeded: storage.offset), "claims \(raw) bytes")
        }
        return Int(raw)
    }

    /// Calls `body` with the string's UTF-8 bytes (validated to lie in the heap).
    /// - Warning: Do not let the buffer escape `body`.
    public func withUTF8<R>(in pool: Pool, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard !storage.isNull else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        let count = try checkedCount(in: pool)
        let view = try pool.readView(storage, count: 8 + count)
        return try view.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[8...])) }
    }

    /// The string's contents (invalid UTF-8 from a damaged pool is repaired with U+FFFD; the
    /// deep check reports it).
    public func string(in pool: Pool) throws -> String {
        try withUTF8(in: pool) { String(decoding: $0, as: UTF8.self) }
    }

    /// The number of UTF-8 bytes.
    public func utf8Count(in pool: Pool) throws -> Int {
        storage.isNull ? 0 : try checkedCount(in: pool)
    }

    /// Frees the block through `tx`.
    public func free(in tx: Transaction) throws {
        if !storage.isNull { try tx.free(storage) }
    }
}

/// The stored form of a `String` (key or value): up to 16 UTF-8 bytes inline (compared without touching
/// any other memory), the whole string out of line only when longer.
@frozen
public struct StringKey: BitwiseCopyable, Sendable {
    /// The first 16 UTF-8 bytes, zero padded.
    public var prefix: (UInt64, UInt64)
    /// The UTF-8 byte count.
    public var count: UInt64
    /// The whole string when `count > 16`, else empty.
    public var overflow: PersistentString
}

extension StringKey {
    /// The error for a long string whose block disagrees with the key's byte count.
    func mismatch(_ pool: Pool, _ actual: Int) -> PoolError {
        corrupted(pool, "string", at: Int(truncatingIfNeeded: overflow.storage.offset), "holds \(actual) bytes, its key says \(count)")
    }
}

extension String {
    /// Compares UTF-8 byte sequences (the order of sorted persistent maps).
    static func compareUTF8(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
        let n = Swift.min(a.count, b.count)
        if n > 0 {
            let r = memcmp(a.baseAddress!, b.baseAddress!, n)
            if r != 0 { return Int(r) }
        }
        return a.count < b.count ? -1 : (a.count == b.count ? 0 : 1)
    }
}

/// Strings in persistent containers: up to 16 UTF-8 bytes inline, longer ones in a
/// ``PersistentString``. As keys they are ordered by their UTF-8 bytes (not by Unicode
/// collation) and hashed from them.
extension String: PersistentKey {
    /// A string is kept as its UTF-8 bytes, ordered as bytes.
    public static var encodingIsOrdered: Bool { true }
    public static func withEncodedBytes<R>(_ value: String, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var s = value
        return try s.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
    }
    /// The string of those bytes (invalid UTF-8 repaired with U+FFFD: the deep check reports it).
    public static func decode(_ bytes: ByteView, in pool: Pool) throws -> String {
        bytes.string(at: 0, length: bytes.count)
    }
    public static func compareKeys(_ a: String, _ b: String) -> Int {
        withEncodedBytes(a) { x in withEncodedBytes(b) { y in compareBytes(x, y) } }
    }
    /// A string kept as bytes must be valid UTF-8.
    public static func validateEncoded(_ bytes: ByteView, in check: inout ContainerCheck) {
        if !bytes.isValidUTF8(at: 0, length: bytes.count) { check.note("a stored string of \(bytes.count) bytes is not valid UTF-8") }
    }

    public static func store(_ value: String, in tx: Transaction) throws -> StringKey {
        var s = value
        return try s.withUTF8 { utf8 -> StringKey in
            var key = StringKey(prefix: (0, 0), count: UInt64(utf8.count), overflow: PersistentString())
            withUnsafeMutableBytes(of: &key.prefix) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(utf8).prefix(16))) }
            if utf8.count > 16 { key.overflow = try PersistentString.make(value, in: tx) }
            return key
        }
    }

    public static func load(_ stored: StringKey, from pool: Pool) throws -> String {
        if stored.count > 16 {
            return try stored.overflow.withUTF8(in: pool) { utf8 in
                guard utf8.count == stored.count else { throw stored.mismatch(pool, utf8.count) }
                return String(decoding: utf8, as: UTF8.self)
            }
        }
        var prefix = stored.prefix
        return withUnsafeBytes(of: &prefix) { String(decoding: $0.prefix(Int(stored.count)), as: UTF8.self) }
    }

    /// Checks a stored string: an inline one has no out-of-line block and zero padding; a long
    /// one a live block of exactly its byte count whose first 16 bytes are the inline prefix.
    public static func validate(_ stored: StringKey, in check: inout ContainerCheck) {
        var prefix = stored.prefix
        if stored.count <= 16 {
            let n = Int(stored.count)
            let padded = withUnsafeBytes(of: &prefix) { $0[n...].allSatisfy { $0 == 0 } }
            let valid = withUnsafeBytes(of: &prefix) { String(validating: $0.prefix(n), as: UTF8.self) != nil }
            if !padded || !stored.overflow.storage.isNull || !valid {
                check.note("inline string of \(n) bytes is malformed (padding, UTF-8 or a stray out-of-line block)")
            }
            return
        }
        guard stored.count <= UInt64(check.pool.size) else { check.note("string claims \(stored.count) bytes"); return }
        check.checkString(stored.overflow, "string block")
        do {
            try stored.overflow.withUTF8(in: check.pool) { utf8 in
                let same = utf8.count >= 16 && withUnsafeBytes(of: &prefix) { p in utf8.prefix(16).elementsEqual(p) }
                if utf8.count != stored.count || !same {
                    check.note("string at \(stored.overflow.storage.offset): its \(utf8.count) bytes disagree with the key's count \(stored.count) or prefix")
                }
            }
        } catch {
            check.note("string at \(stored.overflow.storage.offset): \(error)")
        }
    }

    public static func release(_ stored: StringKey, in tx: Transaction) throws {
        if stored.count > 16 { try stored.overflow.free(in: tx) }
    }

    public static func compare(_ key: String, _ stored: StringKey, in pool: Pool) throws -> Int {
        var s = key
        return try s.withUTF8 { try compareUTF8(UnsafeRawBufferPointer($0), stored, in: pool) }
    }

    public static func withComparator<R>(_ key: String, in pool: Pool, _ body: ((StringKey) throws -> Int) throws -> R) throws -> R {
        var s = key
        return try s.withUTF8 { utf8 in
            let k = UnsafeRawBufferPointer(utf8)
            return try body { try compareUTF8(k, $0, in: pool) }
        }
    }

    /// Orders the UTF-8 bytes `k` against a stored key.
    static func compareUTF8(_ k: UnsafeRawBufferPointer, _ stored: StringKey, in pool: Pool) throws -> Int {
        do {
            var prefix = stored.prefix
            let storedCount = Int(truncatingIfNeeded: Swift.min(stored.count, 1 << 62))
            let byPrefix = withUnsafeBytes(of: &prefix) { p -> Int in
                let n = Swift.min(k.count, 16, storedCount)
                if n > 0 {
                    let r = memcmp(k.baseAddress!, p.baseAddress!, n)
                    if r != 0 { return Int(r) }
                }
                return 0
            }
            if byPrefix != 0 { return byPrefix }
            if k.count <= 16 || storedCount <= 16 {
                return k.count < storedCount ? -1 : (k.count == storedCount ? 0 : 1)
            }
            return try stored.overflow.withUTF8(in: pool) { compareUTF8(k, $0) }
        }
    }

    /// The first 7 UTF-8 bytes, big-endian (zero padded).
    public static func orderPrefix(_ key: String) -> UInt64 {
        var s = key
        return s.withUTF8 { utf8 in
            var p: UInt64 = 0
            for i in 0..<7 { p = p << 8 | UInt64(i < utf8.count ? utf8[i] : 0) }
            return p
        }
    }

    public static func orderPrefix(stored: StringKey) -> UInt64 {
        var prefix = stored.prefix
        return withUnsafeBytes(of: &prefix) { b in
            var p: UInt64 = 0
            for i in 0..<7 { p = p << 8 | UInt64(b[i]) }
            return p
        }
    }

    public static func persistentHash(_ key: String) -> UInt64 {
        var s = key
        return s.withUTF8 { persistentHashBytes(UnsafeRawBufferPointer($0)) }
    }

    public static func persistentHash(stored: StringKey, in pool: Pool) throws -> UInt64 {
        if stored.count > 16 {
            return try stored.overflow.withUTF8(in: pool) { utf8 in
                guard utf8.count == stored.count else { throw stored.mismatch(pool, utf8.count) }
                return persistentHashBytes(utf8)
            }
        }
        var prefix = stored.prefix
        return withUnsafeBytes(of: &prefix) { persistentHashBytes(UnsafeRawBufferPointer(rebasing: $0.prefix(Int(stored.count)))) }
    }
}
