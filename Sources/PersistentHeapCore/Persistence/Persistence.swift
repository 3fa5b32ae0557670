#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CPersistentHeap

/// How stores to a pool become durable. Chosen once when a pool is opened.
public enum PersistenceDomain: String, Sendable, CaseIterable {
    /// Persistent memory (a DAX mapping, or forced with `PHEAP_FORCE_PMEM=1`): each flushed
    /// cache line is written back with `clwb` (else `clflushopt`, else `clflush`), then `sfence`.
    case cacheLineFlush = "flush"
    /// Platforms whose caches are inside the persistence domain (eADR): `sfence` only.
    case fenceOnly = "fence"
    /// Ordinary memory-mapped files: flushed ranges are collected per thread and the covering
    /// pages are written with one `msync(MS_SYNC)` at each drain.
    case msync = "msync"
    /// Tests: the pool lives in process memory and a ``SimulatedMedia`` keeps the durable image,
    /// so crashes can be simulated at any fence.
    case simulated = "simulated"
}

/// The persistence layer: every durable update of a pool goes through `flush`, `drain` and
/// `persist` of its `Persistence`.
///
/// - `flush(range)` starts writing back the cache lines (or pages) covering the range;
/// - `drain()` waits until everything this thread flushed is durable, and orders it before any
///   later store of this thread;
/// - `persist(range)` is `flush` then `drain`.
///
/// Per-thread counters (``PersistenceCounters``) record flushed lines, fences and `msync` calls.
public final class Persistence: @unchecked Sendable {
    /// The domain in use.
    public let domain: PersistenceDomain
    /// The write-back instruction used by ``PersistenceDomain/cacheLineFlush`` ("clwb", "clflushopt", "clflush").
    public let flushInstruction: String

    @usableFromInline let flushLines: @convention(c) (UnsafeRawPointer?, Int) -> Void
    /// The simulated media, in the simulated domain.
    @_spi(Core) public let media: SimulatedMedia?
    /// Base of the mapping (for the simulated domain's line indexes).
    @_spi(Core) public let base: UnsafeMutableRawPointer
    /// The pool file's descriptor (-1 for a simulated pool): macOS's msync domain follows each
    /// `msync` with `F_FULLFSYNC` on it.
    @usableFromInline let fileDescriptor: Int32

    @_spi(Core) public init(domain: PersistenceDomain, mapping: PoolMapping, media: SimulatedMedia?) {
        self.domain = domain
        self.base = mapping.base
        self.media = media
        self.fileDescriptor = mapping.file?.raw ?? -1
        let features = ph_cpu_features()
        // On aarch64 the shim's "clwb" is DC CVAP and its "clflushopt" DC CVAC (untested here:
        // compiled for aarch64 in CI, never run; docs/ARCHITECTURE.md §9).
        #if arch(arm64)
        let names = ("dc cvap", "dc cvac", "dc cvac")
        #else
        let names = ("clwb", "clflushopt", "clflush")
        #endif
        if features & UInt32(PH_CPU_CLWB) != 0 {
            flushLines = ph_flush_clwb
            flushInstruction = names.0
        } else if features & UInt32(PH_CPU_CLFLUSHOPT) != 0 {
            flushLines = ph_flush_clflushopt
            flushInstruction = names.1
        } else {
            flushLines = ph_flush_clflush
            flushInstruction = names.2
        }
    }

    /// Starts writing back the cache lines covering `[address, address+count)`.
    /// Not durable until the next ``drain()`` of this thread.
    @inlinable @inline(__always)
    public func flush(_ address: UnsafeRawPointer, count: Int) {
        guard count > 0 else { return }
        let state = ph_tls()!
        let first = UInt(bitPattern: address) & ~63
        let lines = (UInt(bitPattern: address) + UInt(count) - first + 63) / 64
        state.pointee.flushed_lines &+= UInt64(lines)
        switch domain {
        case .cacheLineFlush:
            flushLines(address, count)
        case .fenceOnly:
            break
        case .msync:
            noteMsyncRange(address, count, state)
        case .simulated:
            simulatedFlush(address, count)
        }
    }

    /// The simulated domain's flush (out of line: tests only).
    @usableFromInline func simulatedFlush(_ address: UnsafeRawPointer, _ count: Int) {
        media?.flush(offset: address - UnsafeRawPointer(base), count: count)
    }

    /// The simulated domain's fence (out of line: tests only).
    @usableFromInline func simulatedDrain() {
        media?.drain()
    }

    /// Waits until every range this thread flushed is durable, and orders those writes before
    /// this thread's later stores.
    @inlinable @inline(__always)
    public func drain() {
        let state = ph_tls()!
        state.pointee.fences &+= 1
        switch domain {
        case .cacheLineFlush, .fenceOnly:
            ph_sfence()
        case .msync:
            msyncPending(state)
        case .simulated:
            simulatedDrain()
        }
    }

    /// Counts a checkpoint of this thread and its fences (already counted as fences).
    @_spi(Core) public func countCheckpoint(fences: Int) {
        let state = ph_tls()!
        state.pointee.checkpoints &+= 1
        state.pointee.checkpoint_fences &+= UInt64(fences)
    }

    /// ``flush(_:count:)`` then ``drain()``.
    @inlinable @inline(__always)
    public func persist(_ address: UnsafeRawPointer, count: Int) {
        flush(address, count: count)
        drain()
    }

    // MARK: By pool offset (what the allocator and the pool use: no addresses outside the core)

    /// ``flush(_:count:)`` of `count` bytes at pool offset `offset`.
    @inlinable @inline(__always) @_spi(Core) public func flush(offset: Int, count: Int) { flush(base + offset, count: count) }

    /// ``persist(_:count:)`` of `count` bytes at pool offset `offset`.
    @inlinable @inline(__always) @_spi(Core) public func persist(offset: Int, count: Int) { persist(base + offset, count: count) }

    /// Writes the 64-byte line at `dst` (64-aligned) from `words` and starts writing it back.
    /// Durable after the next drain.
    ///
    /// Ordinary stores and a flush (format 2 measured non-temporal stores here: no gain once the
    /// line was stored to again; see docs/ARCHITECTURE.md §3).
    @inlinable @inline(__always)
    @_spi(Core) public func writeLine(_ dst: UnsafeMutableRawPointer, _ words: UnsafePointer<UInt64>) {
        dst.copyMemory(from: words, byteCount: 64)
        flush(dst, count: 64)
    }

    // MARK: msync domain

    @usableFromInline func noteMsyncRange(_ address: UnsafeRawPointer, _ count: Int, _ state: UnsafeMutablePointer<ph_thread_state>) {
        let lo = UInt(bitPattern: address)
        let hi = lo + UInt(count)
        let owner = UInt64(UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque()))
        if state.pointee.msync_hi != 0 && state.pointee.msync_owner != owner {
            // The thread's pending range belongs to another pool: write it back first.
            let plo = state.pointee.msync_lo, phi = state.pointee.msync_hi
            state.pointee.msync_lo = 0
            state.pointee.msync_hi = 0
            state.pointee.msyncs &+= 1
            _ = VirtualMemory.sync(UnsafeRawPointer(bitPattern: plo)!, length: Int(phi - plo))
        }
        state.pointee.msync_owner = owner
        if state.pointee.msync_hi == 0 {
            state.pointee.msync_lo = lo
            state.pointee.msync_hi = hi
        } else {
            state.pointee.msync_lo = min(state.pointee.msync_lo, lo)
            state.pointee.msync_hi = max(state.pointee.msync_hi, hi)
        }
    }

    @usableFromInline func msyncPending(_ state: UnsafeMutablePointer<ph_thread_state>) {
        guard state.pointee.msync_hi != 0 else { return }
        let lo = state.pointee.msync_lo, hi = state.pointee.msync_hi
        state.pointee.msync_lo = 0
        state.pointee.msync_hi = 0
        state.pointee.msyncs &+= 1
        let err = VirtualMemory.sync(UnsafeRawPointer(bitPattern: lo)!, length: Int(hi - lo))
        // msync of a live shared mapping only fails on I/O errors (EIO) or a vanished mapping;
        // durability cannot be promised then, and continuing would silently lose data. (A device
        // error, not a persisted value: the one trap the untrusted-input rules keep on purpose.)
        precondition(err == 0 || err == ENOMEM, "msync failed with errno \(err): the pool cannot be made durable")
        #if canImport(Darwin)
        // msync reaches the drive's cache on macOS, not its media (untested here, see above).
        if fileDescriptor >= 0 {
            let full = ph_full_sync(fileDescriptor)
            precondition(full == 0, "fcntl(F_FULLFSYNC) failed with errno \(full): the pool cannot be made durable")
        }
        #endif
    }
}

/// Per-thread counts of persistence work, summed over all pools this thread used.
/// Benchmarks take a snapshot before and after and divide by the operation count.
public struct PersistenceCounters: Sendable, Equatable {
    /// Cache lines flushed (in the msync domain: 64-byte lines of the flushed ranges).
    public var flushedLines: UInt64
    /// Drains (fences), checkpoints' included.
    public var fences: UInt64
    /// `msync` system calls.
    public var msyncCalls: UInt64
    /// Checkpoints run (each writes back the lines log records changed, then retires them).
    public var checkpoints: UInt64
    /// Of ``fences``, those made by checkpoints (two each): `fences - checkpointFences` is what
    /// the operations themselves paid.
    public var checkpointFences: UInt64

    /// Counters with the given values (zero by default).
    public init(flushedLines: UInt64 = 0, fences: UInt64 = 0, msyncCalls: UInt64 = 0, checkpoints: UInt64 = 0, checkpointFences: UInt64 = 0) {
        self.flushedLines = flushedLines
        self.fences = fences
        self.msyncCalls = msyncCalls
        self.checkpoints = checkpoints
        self.checkpointFences = checkpointFences
    }

    /// The counters of the calling thread.
    public static var current: PersistenceCounters {
        let s = ph_tls()!
        return PersistenceCounters(flushedLines: s.pointee.flushed_lines, fences: s.pointee.fences, msyncCalls: s.pointee.msyncs,
                                   checkpoints: s.pointee.checkpoints, checkpointFences: s.pointee.checkpoint_fences)
    }

    /// Fences the operations paid, checkpoints' excluded.
    public var operationFences: UInt64 { fences &- checkpointFences }

    /// `self - other`, field by field.
    public func since(_ earlier: PersistenceCounters) -> PersistenceCounters {
        PersistenceCounters(flushedLines: flushedLines &- earlier.flushedLines,
                            fences: fences &- earlier.fences,
                            msyncCalls: msyncCalls &- earlier.msyncCalls,
                            checkpoints: checkpoints &- earlier.checkpoints,
                            checkpointFences: checkpointFences &- earlier.checkpointFences)
    }
}
