// The pool's unchecked and address-handing accessors: one of the two files of this module that
// give out addresses (Transaction+Unsafe.swift is the other). Everything here is for code that
// measured the checked accessors (Pool+Access.swift) to be too slow, or that calls C.

@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

extension Pool {
    /// Calls `body` with the address of `count` elements at `p` (validated: inside the heap,
    /// aligned). Stores through it are not durable until persisted (``persist(_:count:)-(PRawPointer,_)``).
    /// - Throws: `readOnly` on a read-only pool (its mapping cannot be written: use
    ///   ``withUnsafePointer(to:count:_:)`` to read), `invalidPointer`, `invalidArgument`, `closed`.
    /// - Warning: Do not let the pointer escape `body`, nor use it after ``close()``.
    public func withUnsafeMutablePointer<T, R>(to p: PPointer<T>, count: Int = 1,
                                               _ body: (UnsafeMutablePointer<T>) throws -> R) throws -> R {
        try checkWritable()
        return try body(bytes.unsafePointer(to: T.self, at: try checkedOffset(p, count: count)))
    }

    /// Calls `body` with the read-only address of `count` elements at `p` (validated: inside
    /// the heap, aligned). Works on read-only pools.
    /// - Warning: Do not let the pointer escape `body`, nor use it after ``close()``.
    public func withUnsafePointer<T, R>(to p: PPointer<T>, count: Int = 1,
                                        _ body: (UnsafePointer<T>) throws -> R) throws -> R {
        try body(UnsafePointer(bytes.unsafePointer(to: T.self, at: try checkedOffset(p, count: count))))
    }

    /// The address of `p` in this process, unchecked: the fast path for hot code.
    /// - Warning: No validation at all. The address is valid until ``close()`` (the mapping
    ///   never moves while the pool is open, including when it grows).
    @inline(__always)
    public func unsafeAddress<T>(of p: PPointer<T>) -> UnsafeMutablePointer<T> {
        bytes.unsafePointer(to: T.self, at: Int(truncatingIfNeeded: p.offset))
    }

    /// The address of the raw pointer `p`, unchecked (see ``unsafeAddress(of:)-(PPointer<T>)``).
    @inline(__always)
    public func unsafeAddress(of p: PRawPointer) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bytes.unsafePointer(to: UInt8.self, at: Int(truncatingIfNeeded: p.offset)))
    }

    /// The base address of the mapping: it does not change while the pool is open.
    public var baseAddress: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bytes.unsafePointer(to: UInt8.self, at: 0)) }

    /// Allocates `count` values of `T`, lets `initialize` fill them (they start zeroed), and
    /// stores the new pointer in `slot`, atomically.
    /// - Warning: Do not let the buffer escape `initialize`.
    public func allocate<T: BitwiseCopyable>(_ type: T.Type, count: Int = 1, linkedInto slot: PPointer<PPointer<T>>,
                                             initialize: (UnsafeMutableBufferPointer<T>) -> Void = { _ in }) throws(PoolError) -> PPointer<T> {
        try checkWritable()
        let size = try byteCount(T.self, count)
        try checkRequest(bytes: size, alignment: MemoryLayout<T>.alignment)
        let target = try userSlot(slot)
        let x = try withoutActuallyEscaping(initialize) { (initialize) throws(PoolError) -> Int in
            try allocateLinked(size: size, alignment: MemoryLayout<T>.alignment, slot: target, zeroed: true) { [bytes] o, _ in
                initialize(UnsafeMutableBufferPointer(start: bytes.unsafePointer(to: T.self, at: o), count: count))
            }
        }
        return PPointer(offset: UInt64(x))
    }
}
