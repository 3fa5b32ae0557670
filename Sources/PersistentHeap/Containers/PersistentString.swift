#if canImport(Glibc)
import Glibc
#endif

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
            let p = try tx.allocate(bytes: 8 + utf8.count, alignment: 8) { buf in
                buf.storeBytes(of: UInt64(utf8.count), as: UInt64.self)
                UnsafeMutableRawBufferPointer(rebasing: buf[8...]).copyMemory(from: UnsafeRawBufferPointer(utf8))
            }
            return PersistentString(storage: p)
        }
    }

    /// Calls `body` with the string's UTF-8 bytes (validated to lie in the pool).
    /// - Warning: Do not let the buffer escape `body`.
    public func withUTF8<R>(in pool: Pool, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard !storage.isNull else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        let count = Int(try pool.load(storage.assumingType(UInt64.self)))
        guard count >= 0, count <= pool.size else {
            throw PoolError(.corrupted, "string at \(storage) claims \(count) bytes", path: pool.path)
        }
        return try pool.withUnsafeMutablePointer(to: storage.advanced(by: 8).assumingType(UInt8.self), count: count) {
            try body(UnsafeRawBufferPointer(start: $0, count: count))
        }
    }

    /// The string's contents.
    public func string(in pool: Pool) throws -> String {
        try withUTF8(in: pool) { String(decoding: $0, as: UTF8.self) }
    }

    /// The number of UTF-8 bytes.
    public func utf8Count(in pool: Pool) throws -> Int {
        storage.isNull ? 0 : Int(try pool.load(storage.assumingType(UInt64.self)))
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
        if stored.count > 16 { return try stored.overflow.string(in: pool) }
        var prefix = stored.prefix
        return withUnsafeBytes(of: &prefix) { String(decoding: $0.prefix(Int(stored.count)), as: UTF8.self) }
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
            let byPrefix = withUnsafeBytes(of: &prefix) { p -> Int in
                let n = Swift.min(k.count, 16, Int(stored.count))
                if n > 0 {
                    let r = memcmp(k.baseAddress!, p.baseAddress!, n)
                    if r != 0 { return Int(r) }
                }
                return 0
            }
            if byPrefix != 0 { return byPrefix }
            if k.count <= 16 || stored.count <= 16 {
                return k.count < Int(stored.count) ? -1 : (k.count == Int(stored.count) ? 0 : 1)
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
        if stored.count > 16 { return try stored.overflow.withUTF8(in: pool) { persistentHashBytes($0) } }
        var prefix = stored.prefix
        return withUnsafeBytes(of: &prefix) { persistentHashBytes(UnsafeRawBufferPointer(rebasing: $0.prefix(Int(stored.count)))) }
    }
}
