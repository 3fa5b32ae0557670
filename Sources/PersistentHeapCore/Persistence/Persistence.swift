#if canImport(Glibc)
import Glibc
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
///
/// ### Deferred lines
/// A few protocols (log retirement, see docs/ARCHITECTURE.md) write a line, flush it and return
/// without a fence. Such a line is registered with ``deferLine(_:slot:)``; every `drain()` of
/// every thread flushes all registered lines again before its fence, so the deferred store is
/// durable no later than any store that becomes durable after it.
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

    // Deferred lines: one slot per lane; a bit per slot says "flush me before your fence".
    private let deferredSlots: Int
    @usableFromInline let deferredWords: Int
    @usableFromInline let deferredMask: UnsafeMutablePointer<UInt64>
    @usableFromInline let deferredAddress: UnsafeMutablePointer<UInt64>

    @_spi(Core) public init(domain: PersistenceDomain, mapping: PoolMapping, media: SimulatedMedia?, deferredSlots: Int) {
        self.domain = domain
        self.base = mapping.base
        self.media = media
        let features = ph_cpu_features()
        if features & UInt32(PH_CPU_CLWB) != 0 {
            flushLines = ph_flush_clwb
            flushInstruction = "clwb"
        } else if features & UInt32(PH_CPU_CLFLUSHOPT) != 0 {
            flushLines = ph_flush_clflushopt
            flushInstruction = "clflushopt"
        } else {
            flushLines = ph_flush_clflush
            flushInstruction = "clflush"
        }
        self.deferredSlots = max(deferredSlots, 1)
        let words = (self.deferredSlots + 63) / 64
        deferredWords = words
        deferredMask = .allocate(capacity: words)
        deferredMask.initialize(repeating: 0, count: words)
        deferredAddress = .allocate(capacity: self.deferredSlots)
        deferredAddress.initialize(repeating: 0, count: self.deferredSlots)
    }

    deinit {
        deferredMask.deallocate()
        deferredAddress.deallocate()
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

    /// Waits until every range this thread flushed is durable (and every deferred line of any
    /// thread), and orders those writes before this thread's later stores.
    @inlinable @inline(__always)
    public func drain() {
        drain(except: -1)
    }

    @inlinable @inline(__always)
    func drain(except own: Int) {
        reflushDeferred(except: own)
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

    /// ``drain()`` for the thread holding lane `slot`. The lane's own deferred line was flushed
    /// by this thread, so this thread's fence covers it: it is not flushed again (flushing a
    /// line still being written back stalls), and it is forgotten once the fence completed —
    /// not before, so another thread draining meanwhile still flushes it.
    @inlinable @inline(__always)
    @_spi(Core) public func drain(clearing slot: Int) {
        drain(except: slot)
        clearDeferred(slot: slot)
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

    /// ``deferLine(_:slot:)`` of the line at pool offset `offset`.
    @inlinable @inline(__always) @_spi(Core) public func deferLine(offset: Int, slot: Int) { deferLine(base + offset, slot: slot) }

    /// Writes the 64-byte line at `dst` (64-aligned) from `words` and starts writing it back.
    /// Durable after the next drain.
    ///
    /// Measured on this project's machine (tmpfs, clwb): a whole-line non-temporal write saves
    /// the read miss on a line an earlier flush evicted, but the log line is stored to again at
    /// retirement, and streaming it then costs more than it saves; a streamed retirement could
    /// not be flushed by other threads. So: ordinary stores and a flush.
    @inlinable @inline(__always)
    @_spi(Core) public func writeLine(_ dst: UnsafeMutableRawPointer, _ words: UnsafePointer<UInt64>) {
        dst.copyMemory(from: words, byteCount: 64)
        flush(dst, count: 64)
    }

    // MARK: Deferred lines

    /// Flushes the line at `address` (already written) without a fence and registers it in
    /// `slot`, so that every later `drain()` of any thread flushes it again first.
    @inlinable @inline(__always)
    @_spi(Core) public func deferLine(_ address: UnsafeRawPointer, slot: Int) {
        flush(address, count: 8)
        ph_store_release_u64(deferredAddress + slot, UInt64(UInt(bitPattern: address)))
        _ = ph_fetch_or_acq_rel_u64(deferredMask + (slot >> 6), 1 << UInt64(slot & 63))
    }

    /// Forgets the deferred line of `slot`: call after a `drain()` of the owning thread.
    @inlinable @inline(__always)
    @_spi(Core) public func clearDeferred(slot: Int) {
        let word = deferredMask + (slot >> 6)
        let bit: UInt64 = 1 << UInt64(slot & 63)
        if ph_load_relaxed_u64(word) & bit != 0 { _ = ph_fetch_and_acq_rel_u64(word, ~bit) }
    }

    @inlinable @inline(__always)
    func reflushDeferred(except own: Int) {
        // Fast path: no lane has a deferred line (one word for up to 64 lanes).
        if deferredWords == 1 {
            var bits = ph_load_relaxed_u64(deferredMask)
            if own >= 0 { bits &= ~(1 << UInt64(own & 63)) }
            if bits == 0 { return }
        }
        reflushDeferredSlow(except: own)
    }

    @inline(never) @usableFromInline
    func reflushDeferredSlow(except own: Int) {
        for w in 0..<deferredWords {
            var bits = ph_load_acquire_u64(deferredMask + w)
            if own >> 6 == w { bits &= ~(1 << UInt64(own & 63)) }
            while bits != 0 {
                let b = bits.trailingZeroBitCount
                bits &= bits &- 1
                let a = ph_load_acquire_u64(deferredAddress + (w << 6 | b))
                if a != 0 { flush(UnsafeRawPointer(bitPattern: UInt(a))!, count: 8) }
            }
        }
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
    }
}

/// Per-thread counts of persistence work, summed over all pools this thread used.
/// Benchmarks take a snapshot before and after and divide by the operation count.
public struct PersistenceCounters: Sendable, Equatable {
    /// Cache lines flushed (in the msync domain: 64-byte lines of the flushed ranges).
    public var flushedLines: UInt64
    /// Drains (fences).
    public var fences: UInt64
    /// `msync` system calls.
    public var msyncCalls: UInt64

    /// Counters with the given values (zero by default).
    public init(flushedLines: UInt64 = 0, fences: UInt64 = 0, msyncCalls: UInt64 = 0) {
        self.flushedLines = flushedLines
        self.fences = fences
        self.msyncCalls = msyncCalls
    }

    /// The counters of the calling thread.
    public static var current: PersistenceCounters {
        let s = ph_tls()!
        return PersistenceCounters(flushedLines: s.pointee.flushed_lines, fences: s.pointee.fences, msyncCalls: s.pointee.msyncs)
    }

    /// `self - other`, field by field.
    public func since(_ earlier: PersistenceCounters) -> PersistenceCounters {
        PersistenceCounters(flushedLines: flushedLines &- earlier.flushedLines,
                            fences: fences &- earlier.fences,
                            msyncCalls: msyncCalls &- earlier.msyncCalls)
    }
}
