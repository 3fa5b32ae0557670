#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The address range of an open pool.
///
/// A virtual range as large as the pool's maximum size is reserved once (no access, no
/// backing); the file is mapped at its start. Growing maps the new part of the file right
/// after the old one with `MAP_FIXED`, so the base address never changes while the pool is
/// open, and pointers derived from it stay valid. Only bytes inside the file are ever mapped:
/// nothing past the end of the file can be touched (no SIGBUS from a short file).
///
/// A simulated pool is backed by anonymous memory in the same kind of reservation.
@_spi(Core) public final class PoolMapping: @unchecked Sendable {
    /// Start of the reservation and of the pool.
    @_spi(Core) public let base: UnsafeMutableRawPointer
    /// Access to the mapped bytes by pool offset.
    @_spi(Core) public var bytes: PoolBytes { PoolBytes(base: base) }
    /// Bytes of address space reserved.
    @_spi(Core) public let reserved: Int
    /// Bytes currently mapped (the pool size).
    private(set) var mappedSize: Int
    /// The pool file, or nil for a simulated pool.
    @_spi(Core) public let file: FileDescriptor?
    @_spi(Core) public let writable: Bool
    /// Whether the kernel accepted `MAP_SYNC` (the file is on a DAX file system).
    @_spi(Core) public let mapSync: Bool
    private var released = false

    /// Maps `size` bytes of `file` into a fresh reservation of `reserve` bytes.
    @_spi(Core) public init(file: FileDescriptor, size: Int, reserve: Int, writable: Bool, trySync: Bool) throws(PoolError) {
        let reserved = PoolMapping.roundUp(max(reserve, size), to: VirtualMemory.pageSize)
        base = try VirtualMemory.reserve(reserved)
        self.reserved = reserved
        self.file = file
        self.writable = writable
        do {
            let m = try VirtualMemory.mapFile(file, at: base, length: size, offset: 0, writable: writable, trySync: trySync)
            mapSync = m.mapSync
        } catch {
            VirtualMemory.release(base, size: reserved)
            throw error
        }
        mappedSize = size
    }

    /// Anonymous (simulated) memory of `size` bytes, initialised from `image` when given.
    @_spi(Core) public convenience init(anonymousSize size: Int, reserve: Int, image: [UInt8]?) throws(PoolError) {
        try self.init(anonymousSize: size, reserve: reserve)
        if let image { bytes.copy(Array(image.prefix(size)), to: 0) }
    }

    private init(anonymousSize size: Int, reserve: Int) throws(PoolError) {
        let reserved = PoolMapping.roundUp(max(reserve, size), to: VirtualMemory.pageSize)
        base = try VirtualMemory.reserve(reserved)
        self.reserved = reserved
        file = nil
        writable = true
        mapSync = false
        do {
            try VirtualMemory.mapAnonymous(at: base, size: PoolMapping.roundUp(size, to: VirtualMemory.pageSize))
        } catch {
            VirtualMemory.release(base, size: reserved)
            throw error
        }
        mappedSize = size
    }

    /// Simulated memory of `size` bytes: a copy-on-write mapping of `snapshot` with `writes`
    /// applied (pages are copied only when written).
    @_spi(Core) public convenience init(size: Int, reserve: Int, snapshot: DurableSnapshot, writes: [LineWrite]) throws(PoolError) {
        try self.init(anonymousSize: size, reserve: reserve)
        let length = PoolMapping.roundUp(min(size, snapshot.size), to: VirtualMemory.pageSize)
        let p = mmap(base, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, snapshot.fd, 0)
        if p == MAP_FAILED { throw PoolError.syscall("mmap (crash image)", errno: currentErrno, path: nil) }
        for w in writes where (w.line << 6) + 64 <= size { (base + (w.line << 6)).storeBytes(of: w.contents, as: SimulatedMedia.Line.self) }
    }

    /// Extends the file (and reserves its blocks) and maps the new bytes in place.
    @_spi(Core) public func grow(to newSize: Int) throws(PoolError) {
        // Invariant of `Pool.grow`, which bounds the size by the validated header.
        precondition(newSize > mappedSize && newSize <= reserved)
        let old = mappedSize
        if let file {
            let st = try file.stat()
            if Int(st.st_size) < newSize { try file.truncate(to: newSize) }
            try file.allocateSpace(offset: old, length: newSize - old)
            // The new part starts at a page boundary because pool sizes are unit multiples.
            _ = try VirtualMemory.mapFile(file, at: base + old, length: newSize - old, offset: old,
                                          writable: writable, trySync: mapSync)
        } else {
            let from = PoolMapping.roundUp(old, to: VirtualMemory.pageSize)
            let to = PoolMapping.roundUp(newSize, to: VirtualMemory.pageSize)
            if to > from { try VirtualMemory.mapAnonymous(at: base + from, size: to - from) }
        }
        mappedSize = newSize
    }

    /// Unmaps the tail past `newSize` and truncates the file to `newSize`.
    @_spi(Core) public func shrink(to newSize: Int) throws(PoolError) {
        // Invariant of `Heap.shrinkTail`.
        precondition(newSize < mappedSize)
        let old = mappedSize
        mappedSize = newSize
        VirtualMemory.unmapToReservation(base + newSize, size: old - newSize)
        if let file { try file.truncate(to: newSize) }
    }

    /// Unmaps everything and closes the file. Idempotent.
    @_spi(Core) public func release() {
        guard !released else { return }
        released = true
        VirtualMemory.release(base, size: reserved)
        file?.close()
    }

    deinit { release() }

    @_spi(Core) public static func roundUp(_ x: Int, to a: Int) -> Int { (x + a - 1) / a * a }
}
