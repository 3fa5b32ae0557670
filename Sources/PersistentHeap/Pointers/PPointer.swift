@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

/// A typed persistent pointer: an 8-byte offset from the start of the pool, 0 meaning null.
///
/// Because it is an offset, a `PPointer` stays valid when the pool is mapped at another
/// address (another process, another run). It can be stored inside persistent objects.
///
/// Only `BitwiseCopyable` types can be the pointee, so the compiler keeps class references,
/// `String`s and `Array`s — pointers into process memory — out of the pool. (Raw pointers
/// are bitwise-copyable too: never store them in a pool,
/// their addresses mean nothing after the process ends.)
///
/// Dereference through the pool: ``Pool/load(_:)``, ``Pool/store(_:at:)``,
/// ``Pool/withMutable(_:_:)`` (checked), or ``Pool/unsafeAddress(of:)->UnsafeMutablePointer<T>`` (unchecked fast path).

@frozen
public struct PPointer<Pointee: BitwiseCopyable>: BitwiseCopyable, Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Byte offset from the start of the pool; 0 is null.
    public var offset: UInt64

    /// A pointer to the given pool offset.
    @inlinable public init(offset: UInt64) { self.offset = offset }

    /// The null pointer.
    @inlinable public static var null: PPointer { PPointer(offset: 0) }

    /// Whether this is the null pointer.
    @inlinable public var isNull: Bool { offset == 0 }

    /// The pointer `n` elements further (`n × MemoryLayout<Pointee>.stride` bytes).
    ///
    /// Wrapping arithmetic, like C pointer arithmetic: the result is only validated when it is
    /// dereferenced (``Pool/load(_:)`` and friends throw `invalidPointer` for an offset outside
    /// the heap), so an offset read from a damaged pool cannot trap here.
    @inlinable public func advanced(by n: Int) -> PPointer {
        PPointer(offset: offset &+ UInt64(bitPattern: Int64(n &* MemoryLayout<Pointee>.stride)))
    }

    /// A pointer to a stored property of the pointee, e.g. `node.field(\.next)`: the slot to pass
    /// to allocate-and-link operations. Traps for a key path that is not a stored property.
    ///
    /// Wrapping arithmetic, as in ``advanced(by:)``: `self` may have been read from a damaged
    /// pool (any offset), and the result is validated only when it is dereferenced.
    @inlinable public func field<Field: BitwiseCopyable>(_ path: WritableKeyPath<Pointee, Field>) -> PPointer<Field> {
        guard let o = MemoryLayout<Pointee>.offset(of: path) else {
            // The caller's contract (a key path written in code), never a persisted value.
            preconditionFailure("field(_:) needs a key path to a stored property")
        }
        return PPointer<Field>(offset: offset &+ UInt64(truncatingIfNeeded: o))
    }

    /// The same offset viewed as another type.
    @inlinable public func cast<T: BitwiseCopyable>(to type: T.Type) -> PPointer<T> { PPointer<T>(offset: offset) }

    /// The untyped pointer.
    @inlinable public var raw: PRawPointer { PRawPointer(offset: offset) }

    @inlinable public static func < (a: PPointer, b: PPointer) -> Bool { a.offset < b.offset }

    public var description: String { isNull ? "PPointer<\(Pointee.self)>(null)" : "PPointer<\(Pointee.self)>(0x\(String(offset, radix: 16)))" }
}

/// An untyped persistent pointer: an offset from the start of the pool, 0 meaning null.
@frozen
public struct PRawPointer: BitwiseCopyable, Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Byte offset from the start of the pool; 0 is null.
    public var offset: UInt64

    /// A pointer to the given pool offset.
    @inlinable public init(offset: UInt64) { self.offset = offset }
    /// The null pointer (offset 0).
    @inlinable public static var null: PRawPointer { PRawPointer(offset: 0) }
    /// Whether this is the null pointer.
    @inlinable public var isNull: Bool { offset == 0 }

    /// The pointer `n` bytes further (wrapping; validated when dereferenced, see
    /// ``PPointer/advanced(by:)``).
    @inlinable public func advanced(by n: Int) -> PRawPointer { PRawPointer(offset: offset &+ UInt64(bitPattern: Int64(n))) }

    /// This offset viewed as a pointer to `T`.
    @inlinable public func assumingType<T: BitwiseCopyable>(_ type: T.Type) -> PPointer<T> { PPointer<T>(offset: offset) }

    @inlinable public static func < (a: PRawPointer, b: PRawPointer) -> Bool { a.offset < b.offset }

    public var description: String { isNull ? "PRawPointer(null)" : "PRawPointer(0x\(String(offset, radix: 16)))" }
}
