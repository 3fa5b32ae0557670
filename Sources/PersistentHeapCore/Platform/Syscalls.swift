// Every system call PersistentHeap makes goes through this file (the swift-system style):
// EINTR is retried, failures become `PoolError` with the errno and the pool path.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CPersistentHeap

// The C library by its module name (Glibc on Linux, Darwin on macOS), for the calls whose
// names a method here shadows.
#if canImport(Glibc)
@_spi(Core) public typealias FileStatus = Glibc.stat
@inline(__always) private func systemOpen(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 { Glibc.open(path, flags, mode) }
@inline(__always) private func systemClose(_ fd: Int32) -> Int32 { Glibc.close(fd) }
/// The current `errno`.
@inline(__always) @_spi(Core) public var currentErrno: Int32 { Glibc.errno }
#elseif canImport(Darwin)
@_spi(Core) public typealias FileStatus = Darwin.stat
@inline(__always) private func systemOpen(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 { Darwin.open(path, flags, mode) }
@inline(__always) private func systemClose(_ fd: Int32) -> Int32 { Darwin.close(fd) }
/// The current `errno`.
@inline(__always) @_spi(Core) public var currentErrno: Int32 { Darwin.errno }
#endif

/// A raw file descriptor with the operations a pool needs. Not reference counted:
/// its owner (the `Pool`, or the open that fails) closes it exactly once.
@_spi(Core) public struct FileDescriptor: Sendable {
    @_spi(Core) public let raw: Int32
    @_spi(Core) public let path: String

    /// Opens `path`. The corresponding C function is `open(2)`.
    @_spi(Core) public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(PoolError) -> FileDescriptor {
        while true {
            let fd = systemOpen(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return FileDescriptor(raw: fd, path: path) }
            let e = currentErrno
            if e == EINTR { continue }
            throw PoolError.syscall("open", errno: e, path: path)
        }
    }

    /// Closes the descriptor (`close(2)`); errors are ignored (the descriptor is gone either way).
    @_spi(Core) public func close() { _ = systemClose(raw) }

    /// File status (`fstat(2)`).
    @_spi(Core) public func stat() throws(PoolError) -> FileStatus {
        var st = FileStatus()
        if fstat(raw, &st) != 0 { throw PoolError.syscall("fstat", errno: currentErrno, path: path) }
        return st
    }

    /// Sets the file length (`ftruncate(2)`).
    @_spi(Core) public func truncate(to size: Int) throws(PoolError) {
        while ftruncate(raw, off_t(size)) != 0 {
            let e = currentErrno
            if e == EINTR { continue }
            throw PoolError.syscall("ftruncate", errno: e, path: path)
        }
    }

    /// Reserves blocks for [offset, offset+length) so later stores through a mapping cannot
    /// fault with SIGBUS for lack of space (`posix_fallocate(3)`; `F_PREALLOCATE` on macOS).
    @_spi(Core) public func allocateSpace(offset: Int, length: Int) throws(PoolError) {
        guard length > 0 else { return }
        let r = ph_preallocate(raw, Int64(offset), Int64(length))
        if r == 0 { return }
        // File systems without fallocate support: the space is allocated lazily; accept.
        if r == EOPNOTSUPP || r == ENOSYS { return }
        throw PoolError.syscall("posix_fallocate", errno: r, path: path)
    }

    /// Releases the storage of [offset, offset+length) without changing the file size
    /// (`fallocate(2)` with `FALLOC_FL_PUNCH_HOLE`). Returns false where unsupported.
    @discardableResult
    @_spi(Core) public func punchHole(offset: Int, length: Int) -> Bool {
        guard length > 0 else { return true }
        while true {
            if ph_fallocate(raw, ph_falloc_punch_hole(), Int64(offset), Int64(length)) == 0 { return true }
            if currentErrno == EINTR { continue }
            return false
        }
    }

    /// Reads exactly `count` bytes at `offset` (`pread(2)`); returns the bytes read (fewer at EOF).
    @_spi(Core) public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(PoolError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(raw, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                let e = currentErrno
                if e == EINTR { continue }
                throw PoolError.syscall("pread", errno: e, path: path)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads up to `count` bytes at `offset` (fewer at the end of the file).
    @_spi(Core) public func read(count: Int, at offset: Int) throws(PoolError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        let n = try typedThrows { try buffer.withUnsafeMutableBytes { try read(into: $0, at: offset) } }
        return Array(buffer.prefix(n))
    }

    /// Flushes file data and metadata to the device (`fsync(2)`; on macOS also
    /// `F_FULLFSYNC`, since `fsync` there stops at the drive's cache).
    @_spi(Core) public func sync() throws(PoolError) {
        while fsync(raw) != 0 {
            let e = currentErrno
            if e == EINTR { continue }
            throw PoolError.syscall("fsync", errno: e, path: path)
        }
        let e = ph_full_sync(raw)
        if e != 0 { throw PoolError.syscall("fcntl(F_FULLFSYNC)", errno: e, path: path) }
    }

    /// Takes an advisory lock without waiting (`flock(2)`): exclusive for writers, shared for
    /// readers. Locks are per open file description, so a second open in the same process
    /// conflicts too. Throws `poolBusy` when held elsewhere.
    @_spi(Core) public func lock(exclusive: Bool) throws(PoolError) {
        var waits = 0
        while flock(raw, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            let e = currentErrno
            if e == EINTR { continue }
            // A child being spawned by another thread of this process holds a copy of every
            // descriptor (and so of a pool's lock) from its fork until its exec closes them:
            // a lock just released can look held for that long. Wait a little (≤ ~20 ms)
            // before calling the pool busy.
            if e == EWOULDBLOCK && waits < 20 {
                waits += 1
                usleep(1000)
                continue
            }
            if e == EWOULDBLOCK {
                throw PoolError(.poolBusy, exclusive
                    ? "the pool is open elsewhere (another process, or this one)"
                    : "the pool is open for writing elsewhere", path: path, errno: e)
            }
            throw PoolError.syscall("flock", errno: e, path: path)
        }
    }
}

/// Address-space operations (`mmap(2)`, `munmap(2)`, `msync(2)`, `mprotect(2)`).
@_spi(Core) public enum VirtualMemory {
    /// Reserves `size` bytes of address space with no access and no backing.
    @_spi(Core) public static func reserve(_ size: Int) throws(PoolError) -> UnsafeMutableRawPointer {
        let p = mmap(nil, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        if p == MAP_FAILED || p == nil {
            throw PoolError.syscall("mmap (reserve \(size) bytes)", errno: currentErrno, path: nil)
        }
        return p!
    }

    /// Maps anonymous zero-filled read-write memory over [address, address+size) of a reservation.
    @_spi(Core) public static func mapAnonymous(at address: UnsafeMutableRawPointer, size: Int) throws(PoolError) {
        let p = mmap(address, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0)
        if p == MAP_FAILED { throw PoolError.syscall("mmap (anonymous)", errno: currentErrno, path: nil) }
    }

    /// Result of mapping a file: whether the kernel accepted `MAP_SYNC` (a DAX file).
    @_spi(Core) public struct FileMapping { let mapSync: Bool }

    /// Maps `length` bytes of `fd` from file offset `offset` at `address` (inside a reservation).
    /// Tries `MAP_SHARED_VALIDATE|MAP_SYNC` first when `trySync`; falls back to `MAP_SHARED`
    /// on `EOPNOTSUPP`/`EINVAL` (no DAX: tmpfs, ext4 without dax).
    @_spi(Core) public static func mapFile(_ fd: FileDescriptor, at address: UnsafeMutableRawPointer, length: Int, offset: Int,
                        writable: Bool, trySync: Bool) throws(PoolError) -> FileMapping {
        let prot = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        if trySync && writable {
            let p = mmap(address, length, prot, ph_map_shared_validate() | ph_map_sync() | MAP_FIXED, fd.raw, off_t(offset))
            if p != MAP_FAILED { return FileMapping(mapSync: true) }
            let e = currentErrno
            if e != EOPNOTSUPP && e != EINVAL { throw PoolError.syscall("mmap", errno: e, path: fd.path) }
        }
        let p = mmap(address, length, prot, MAP_SHARED | MAP_FIXED, fd.raw, off_t(offset))
        if p == MAP_FAILED { throw PoolError.syscall("mmap", errno: currentErrno, path: fd.path) }
        return FileMapping(mapSync: false)
    }

    /// Returns [address, address+size) to the no-access reservation state.
    @_spi(Core) public static func unmapToReservation(_ address: UnsafeMutableRawPointer, size: Int) {
        guard size > 0 else { return }
        _ = mmap(address, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0)
    }

    /// Releases a reservation entirely.
    @_spi(Core) public static func release(_ address: UnsafeMutableRawPointer, size: Int) {
        _ = munmap(address, size)
    }

    /// Synchronously writes back the pages covering [address, address+length) (`msync(MS_SYNC)`).
    /// `address` is rounded down to a page boundary.
    @_spi(Core) public static func sync(_ address: UnsafeRawPointer, length: Int) -> Int32 {
        let page = UInt(pageSize)
        let a = UInt(bitPattern: address) & ~(page - 1)
        let end = UInt(bitPattern: address) + UInt(length)
        while msync(UnsafeMutableRawPointer(bitPattern: a), Int(end - a), MS_SYNC) != 0 {
            let e = currentErrno
            if e == EINTR { continue }
            return e
        }
        return 0
    }

    /// The system page size.
    @_spi(Core) public static let pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))
}
