#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CPersistentHeap

/// A read-only window onto `count` bytes of a pool (or of a transaction's copy of them), with
/// bounds-checked typed loads: how containers and transactions read structures without holding
/// an address.
///
/// A view is valid only inside the call that hands it out (a transaction body, an initializer,
/// a container operation): do not keep it. Every access is checked against `count` — an offset
/// outside the view traps, as an out-of-bounds `Array` index does (views are made over ranges
/// already validated, so only a bug in the code using the view can get there).
public struct ByteView: @unchecked Sendable {
    @usableFromInline let base: UnsafeRawPointer
    /// The number of bytes in the view.
    public let count: Int

    @usableFromInline init(base: UnsafeRawPointer, count: Int) {
        self.base = base
        self.count = count
    }

    @inlinable @inline(__always) func check(_ offset: Int, _ size: Int) {
        precondition(offset >= 0 && size >= 0 && offset <= count - size, "offset \(offset) (\(size) bytes) outside a view of \(count) bytes")
    }

    /// Asks the CPU to bring the cache lines of `[offset, offset + count)` in (a hint: the
    /// loads that follow find them on their way, not one after the other). Clamped to the view.
    @inline(__always)
    public func prefetch(_ offset: Int, count: Int) {
        let start = max(0, offset), end = min(self.count, offset &+ max(0, count))
        var o = start
        while o < end {
            ph_prefetch(base + o)
            o &+= 64
        }
    }

    /// The `T` at `offset` (no alignment needed).
    @inlinable @inline(__always)
    public func load<T: BitwiseCopyable>(_: T.Type, at offset: Int) -> T {
        check(offset, MemoryLayout<T>.size)
        return (base + offset).loadUnaligned(as: T.self)
    }

    /// The `T` at `offset` (no alignment needed), or nil when `[offset, offset + size of T)`
    /// is not inside the view: one check, for readers that turn a bad offset into an error.
    @inlinable @inline(__always)
    public func loadIfInside<T: BitwiseCopyable>(_: T.Type, at offset: Int) -> T? {
        guard offset >= 0, MemoryLayout<T>.size <= count, offset <= count - MemoryLayout<T>.size else { return nil }
        return (base + offset).loadUnaligned(as: T.self)
    }

    /// Whether the `bytes` equal the view's bytes at `offset` (`offset + bytes.count ≤ count`).
    @inlinable
    public func equals(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int) -> Bool {
        check(offset, bytes.count)
        return bytes.isEmpty || memcmp(base + offset, bytes.baseAddress!, bytes.count) == 0
    }

    /// Orders the view's `length` bytes at `offset` against `bytes`, as unsigned bytes then by
    /// length (the order of sorted maps of strings): negative, zero or positive.
    @inlinable
    public func compare(at offset: Int, length: Int, with bytes: UnsafeBufferPointer<UInt8>) -> Int {
        check(offset, length)
        let n = Swift.min(length, bytes.count)
        if n > 0 {
            let r = memcmp(base + offset, bytes.baseAddress!, n)
            if r != 0 { return Int(r) }
        }
        return length < bytes.count ? -1 : (length == bytes.count ? 0 : 1)
    }

    /// Orders the view's `length` bytes at `offset` against `bytes` (unsigned bytes, then
    /// length): negative, zero or positive.
    @inlinable
    public func compare(at offset: Int, length: Int, with bytes: UnsafeRawBufferPointer) -> Int {
        compare(at: offset, length: length, with: bytes.assumingMemoryBound(to: UInt8.self))
    }

    /// The view of `count` bytes from `offset` (inside this one).
    @inlinable @inline(__always)
    public func slice(at offset: Int, count n: Int) -> ByteView {
        check(offset, n)
        return ByteView(base: base + offset, count: n)
    }

    /// The view of `count` bytes from `offset`, or nil when they are not inside this one.
    @inlinable @inline(__always)
    public func sliceIfInside(at offset: Int, count n: Int) -> ByteView? {
        guard offset >= 0, n >= 0, offset <= count, n <= count - offset else { return nil }
        return ByteView(base: base + offset, count: n)
    }

    /// Calls `body` with a view of `bytes` (process memory: an encoded key being compared with
    /// the keys of a node, say).
    @inlinable
    public static func withBytes<R, E: Error>(_ bytes: UnsafeRawBufferPointer, _ body: (ByteView) throws(E) -> R) throws(E) -> R {
        try body(ByteView(base: bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 8)!, count: bytes.count))
    }

    /// An array of the view's bytes.
    public var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: base, count: count)) }

    /// A `String` of the `length` bytes at `offset`, decoded as UTF-8 (invalid bytes repaired).
    public func string(at offset: Int, length: Int) -> String {
        check(offset, length)
        return String(decoding: UnsafeRawBufferPointer(start: base + offset, count: length), as: UTF8.self)
    }

    /// Whether the `length` bytes at `offset` are valid UTF-8.
    public func isValidUTF8(at offset: Int, length: Int) -> Bool {
        check(offset, length)
        return String(validating: UnsafeRawBufferPointer(start: base + offset, count: length), as: UTF8.self) != nil
    }

    /// Calls `body` with the view's bytes.
    /// - Warning: Do not let the buffer escape `body`.
    @inlinable
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }
}

/// A writable window onto `count` bytes of a pool or of a transaction's shadow copy, with
/// bounds-checked typed stores (see ``ByteView`` for the lifetime and checking rules).
public struct MutableByteView: @unchecked Sendable {
    @usableFromInline let base: UnsafeMutableRawPointer
    /// The number of bytes in the view.
    public let count: Int

    @usableFromInline init(base: UnsafeMutableRawPointer, count: Int) {
        self.base = base
        self.count = count
    }

    /// The same bytes, read-only.
    @inlinable public var readOnly: ByteView { ByteView(base: base, count: count) }

    @inlinable @inline(__always) func check(_ offset: Int, _ size: Int) { readOnly.check(offset, size) }

    /// The `T` at `offset` (no alignment needed).
    @inlinable @inline(__always)
    public func load<T: BitwiseCopyable>(_: T.Type, at offset: Int) -> T { readOnly.load(T.self, at: offset) }

    /// Stores `value` at `offset` (no alignment needed).
    @inlinable @inline(__always)
    public func store<T: BitwiseCopyable>(_ value: T, at offset: Int) {
        check(offset, MemoryLayout<T>.size)
        (base + offset).storeBytes(of: value, as: T.self)
    }

    /// Copies `count` bytes from `source` to `destination` within the view (the ranges may overlap).
    @inlinable
    public func move(from source: Int, to destination: Int, count n: Int) {
        check(source, n)
        check(destination, n)
        if n > 0 { memmove(base + destination, base + source, n) }
    }

    /// Copies `bytes` to `offset`.
    @inlinable
    public func copy(_ bytes: UnsafeBufferPointer<UInt8>, to offset: Int) {
        check(offset, bytes.count)
        if let b = bytes.baseAddress { (base + offset).copyMemory(from: b, byteCount: bytes.count) }
    }

    /// Copies `bytes` to `offset`.
    @inlinable
    public func copy(_ bytes: UnsafeRawBufferPointer, to offset: Int) {
        check(offset, bytes.count)
        if let b = bytes.baseAddress, bytes.count > 0 { (base + offset).copyMemory(from: b, byteCount: bytes.count) }
    }

    /// Copies `count` bytes of `view` from `sourceOffset` to `offset`.
    @inlinable
    public func copy(from view: ByteView, at sourceOffset: Int, count n: Int, to offset: Int) {
        view.check(sourceOffset, n)
        check(offset, n)
        if n > 0 { memmove(base + offset, view.base + sourceOffset, n) }
    }

    /// Sets `count` bytes at `offset` to zero.
    @inlinable
    public func zero(at offset: Int, count n: Int) {
        check(offset, n)
        if n > 0 { (base + offset).initializeMemory(as: UInt8.self, repeating: 0, count: n) }
    }

    /// A view of `count` bytes from `offset` (inside this one).
    @inlinable
    public func slice(at offset: Int, count n: Int) -> MutableByteView {
        check(offset, n)
        return MutableByteView(base: base + offset, count: n)
    }

    /// Calls `body` with the view's bytes.
    /// - Warning: Do not let the buffer escape `body`.
    @inlinable
    public func withUnsafeMutableBytes<R, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: base, count: count))
    }
}

extension PoolBytes {
    /// A read-only view of `count` bytes at `offset` (a range the caller validated).
    @inlinable @inline(__always) @_spi(Core) public func view(at offset: Int, count: Int) -> ByteView { ByteView(base: base + offset, count: count) }
    /// A writable view of `count` bytes at `offset` (a range the caller validated).
    @inlinable @inline(__always) @_spi(Core) public func mutableView(at offset: Int, count: Int) -> MutableByteView {
        MutableByteView(base: base + offset, count: count)
    }
    /// The typed address of `offset`, for the public unchecked accessors only (Pool+Unsafe.swift,
    /// Transaction+Unsafe.swift): nothing else outside the core holds an address.
    @inlinable @inline(__always) @_spi(Core) public func unsafePointer<T>(to _: T.Type, at offset: Int) -> UnsafeMutablePointer<T> {
        (base + offset).assumingMemoryBound(to: T.self)
    }
}
