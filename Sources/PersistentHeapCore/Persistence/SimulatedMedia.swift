#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CPersistentHeap

/// The media of a pool in the simulated domain: the pool's bytes live in process memory and
/// this object keeps a separate **durable image** — what would survive a power failure now.
///
/// The model, per 64-byte cache line:
/// - `flush` records the line's current contents as *pending* (write-back started);
/// - `drain` (a fence) makes every pending line durable;
/// - a **crash image** is the durable image plus, for each line that is *dirty* (its current
///   contents differ from the durable ones) or *pending*, a random choice: with the eviction
///   probability the current contents (a cache may write back any line at any time); otherwise,
///   for a pending line, the contents recorded at flush time or the old durable contents with
///   equal chance; otherwise the old durable contents. Choices are seeded and reproducible.
///
/// ``fenceCount`` counts drains, and ``onFence`` runs at each drain *before* it takes effect,
/// so a test can take crash images at fence k for every k of a workload.
public final class SimulatedMedia: @unchecked Sendable {
    /// A cache line's contents.
    @_spi(Core) public struct Line { var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) }

    private struct State: @unchecked Sendable {
        @_spi(Core) public var durable: UnsafeMutableRawPointer
        @_spi(Core) public var size: Int
        @_spi(Core) public var pending: [Int: Line] = [:]
        @_spi(Core) public var fences = 0
        /// Set when the pool's memory is unmapped (close): the durable image is all there is.
        @_spi(Core) public var detached = false
    }

    private let current: UnsafeMutableRawPointer
    private let state: Locked<State>
    private let hook = Locked<(@Sendable (SimulatedMedia, Int) -> Void)?>(nil)

    /// Creates media over the pool's memory (`size` bytes of `mapping`) whose durable image starts
    /// as a copy of `durableImage` (or of the memory when nil).
    @_spi(Core) public init(mapping: PoolMapping, size: Int, durableImage: [UInt8]? = nil) {
        current = mapping.base
        let d = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 64)
        if let durableImage {
            durableImage.withUnsafeBytes { src in
                d.copyMemory(from: src.baseAddress!, byteCount: min(size, src.count))
            }
        } else {
            d.copyMemory(from: current, byteCount: size)
        }
        state = Locked(State(durable: d, size: size))
    }

    deinit {
        state.withLock { $0.durable.deallocate() }
    }

    /// The number of fences (drains) so far.
    public var fenceCount: Int { state.withLock { $0.fences } }

    /// The current size of the media in bytes.
    public var size: Int { state.withLock { $0.size } }

    /// Called at every fence, before the fence makes pending lines durable, with the number of
    /// that fence (1-based). Take crash images from inside to crash "at" that fence.
    public var onFence: (@Sendable (SimulatedMedia, Int) -> Void)? {
        get { hook.withLock { $0 } }
        set { hook.withLock { $0 = newValue } }
    }

    @_spi(Core) public func flush(offset: Int, count: Int) {
        let first = offset >> 6, last = (offset + count - 1) >> 6
        state.withLock { s in
            for line in first...last where line << 6 < s.size {
                // A snapshot of the whole line, which other threads may be writing (their own
                // words of it) right now — as a cache writes back a line (see ph_copy_line).
                var contents = Line(words: (0, 0, 0, 0, 0, 0, 0, 0))
                withUnsafeMutableBytes(of: &contents) { ph_copy_line($0.baseAddress, current + (line << 6)) }
                s.pending[line] = contents
            }
        }
    }

    @_spi(Core) public func drain() {
        let n = state.withLock { s -> Int in s.fences += 1; return s.fences }
        if let h = hook.withLock({ $0 }) { h(self, n) }
        state.withLock { s in
            for (line, contents) in s.pending { (s.durable + (line << 6)).storeBytes(of: contents, as: Line.self) }
            s.pending.removeAll(keepingCapacity: true)
        }
    }

    /// Grows the media (the pool grew); new bytes are durable zeros.
    @_spi(Core) public func grow(to newSize: Int) {
        state.withLock { s in
            guard newSize > s.size else { return }
            let d = UnsafeMutableRawPointer.allocate(byteCount: newSize, alignment: 64)
            d.copyMemory(from: s.durable, byteCount: s.size)
            (d + s.size).initializeMemory(as: UInt8.self, repeating: 0, count: newSize - s.size)
            s.durable.deallocate()
            s.durable = d
            s.size = newSize
        }
    }

    /// The pool closed and its memory is about to be unmapped: from now on a crash image is the
    /// durable image (reading the unmapped memory would fault).
    @_spi(Core) public func detach() {
        state.withLock { $0.detached = true }
    }

    /// Shrinks the media (the pool gave back its tail).
    @_spi(Core) public func shrink(to newSize: Int) {
        state.withLock { s in
            guard newSize < s.size else { return }
            s.size = newSize
            s.pending = s.pending.filter { $0.key << 6 < newSize }
        }
    }

    /// What would be on the media after a power failure now. See the type's documentation for
    /// the model; `evictionProbability` is the chance that a dirty or pending line reaches the
    /// media with its current contents.
    public func crashImage(seed: UInt64, evictionProbability: Double) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        let threshold = UInt64(max(0, min(1, evictionProbability)) * Double(UInt64.max >> 11)) << 11
        return state.withLock { s in
            var image = [UInt8](unsafeUninitializedCapacity: s.size) { buf, n in
                buf.baseAddress!.update(from: s.durable.assumingMemoryBound(to: UInt8.self), count: s.size)
                n = s.size
            }
            if s.detached { return image }
            image.withUnsafeMutableBytes { img in
                let out = img.baseAddress!
                for line in 0..<(s.size >> 6) {
                    let off = line << 6
                    let pending = s.pending[line]
                    let dirty = memcmp(current + off, s.durable + off, 64) != 0
                    guard dirty || pending != nil else { continue }
                    if evictionProbability > 0 && rng.next() < threshold {
                        (out + off).copyMemory(from: current + off, byteCount: 64)
                    } else if let pending, rng.next() & 1 == 1 {
                        (out + off).storeBytes(of: pending, as: Line.self)
                    }
                }
            }
            return image
        }
    }

    /// The durable image alone (what survives if no dirty or pending line reaches the media).
    public func durableImage() -> [UInt8] {
        state.withLock { s in
            [UInt8](UnsafeRawBufferPointer(start: s.durable, count: s.size))
        }
    }

    /// Number of lines flushed but not yet fenced.
    public var pendingLineCount: Int { state.withLock { $0.pending.count } }
}

/// A small, fast, seeded generator (SplitMix64) for reproducible simulations.
@_spi(Core) public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    @_spi(Core) public init(seed: UInt64) { state = seed }
    @_spi(Core) public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
