// The transaction's address-handing accessors: the second of the two files of this module that
// give out addresses (Pool+Unsafe.swift is the other). The same operations exist safely, through
// bounds-checked views: ``Transaction/withMutableView(of:count:_:)`` and
// ``Transaction/allocate(bytes:alignment:writing:)``.

@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

extension Transaction {
    /// Snapshots `count` bytes at `p` and lets `body` change them; the bytes are written at commit.
    /// - Warning: Do not let the buffer escape `body`.
    public func withMutableBytes<R>(of p: PRawPointer, count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        let ctx = try live()
        let o = try range(p.offset, count)
        return try target(ctx, o, count).withUnsafeMutableBytes(body)
    }

    /// Allocates `bytes` bytes and lets `initialize` write their contents in place (see
    /// ``allocate(bytes:alignment:writing:)``).
    /// - Warning: Do not let the buffer escape `initialize`.
    public func allocate(bytes n: Int, alignment: Int = 16,
                         initializingWith initialize: (UnsafeMutableRawBufferPointer) throws -> Void) throws -> PRawPointer {
        try allocate(bytes: n, alignment: alignment) { (view: MutableByteView) in try view.withUnsafeMutableBytes(initialize) }
    }
}
