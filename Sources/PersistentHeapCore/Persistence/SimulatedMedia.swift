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
    @_spi(Core) public struct Line: Sendable { var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) }

    private struct State: @unchecked Sendable {
        @_spi(Core) public var durable: UnsafeMutableRawPointer
        @_spi(Core) public var size: Int
        @_spi(Core) public var pending: [Int: Line] = [:]
        @_spi(Core) public var fences = 0
        /// Set when the pool's memory is unmapped (close): the durable image is all there is.
        @_spi(Core) public var detached = false
        /// Bytes mapped at `durable` when it is a copy-on-write mapping of a snapshot (munmap
        /// it), 0 when it is a heap allocation (deallocate it).
        @_spi(Core) public var mappedBytes = 0
        /// The durable image kept in an in-memory file once ``snapshot()`` was called: each
        /// fence writes the lines it made durable into it too (an incremental copy).
        var live: DurableSnapshot?
        /// Lines its fences made durable since the media was made from a snapshot (tracked only
        /// then): with the snapshot, they describe the durable image without copying it.
        var changedSinceSnapshot: Set<Int>?

        /// Releases the durable image's storage.
        func releaseDurable() {
            if mappedBytes > 0 { munmap(durable, mappedBytes) } else { durable.deallocate() }
        }
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

    /// Media over the pool's memory whose durable image is a copy-on-write mapping of
    /// `snapshot` (`size` bytes) with `writes` applied: no copy of the whole image.
    @_spi(Core) public init(mapping: PoolMapping, size: Int, snapshot: DurableSnapshot, writes: [LineWrite]) throws(PoolError) {
        current = mapping.base
        let length = PoolMapping.roundUp(max(size, 1), to: VirtualMemory.pageSize)
        let d = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, snapshot.fd, 0)
        guard let d, d != MAP_FAILED else { throw PoolError.syscall("mmap (crash image)", errno: currentErrno, path: nil) }
        for w in writes where (w.line << 6) < size { (d + (w.line << 6)).storeBytes(of: w.contents, as: Line.self) }
        var st = State(durable: d, size: size)
        st.mappedBytes = length
        st.changedSinceSnapshot = []
        state = Locked(st)
    }

    deinit {
        state.withLock { $0.releaseDurable() }
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
            if s.changedSinceSnapshot != nil { s.changedSinceSnapshot!.formUnion(s.pending.keys) }
            if let live = s.live, live.size == s.size {
                for (line, _) in s.pending { live.write(UnsafeRawPointer(s.durable + (line << 6)), count: 64, at: line << 6) }
            } else {
                s.live = nil
            }
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
            s.releaseDurable()
            s.mappedBytes = 0
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

    /// The lines a crash now could change: every line that is dirty (its memory differs from the
    /// durable image) or pending (flushed, not yet fenced), with its durable, flushed and
    /// current contents — one scan of the pool, from which any number of crash images follow.
    @_spi(Core) public func candidates() -> [CandidateLine] {
        state.withLock { s in
            var out: [CandidateLine] = []
            guard !s.detached else { return out }
            // Media made from a snapshot: memory and durable image are copy-on-write mappings of
            // one file, so a line can differ only in a page one of them has written. Scan those
            // pages (from /proc/self/pagemap) rather than the whole pool.
            var lines: [Int] = []
            if s.changedSinceSnapshot != nil, let a = PageMap.writtenPages(current, s.size), let b = PageMap.writtenPages(s.durable, s.size) {
                let perPage = VirtualMemory.pageSize >> 6
                var pages = Set(a)
                pages.formUnion(b)
                for line in s.pending.keys { pages.insert(line / perPage) }
                for page in pages.sorted() {
                    for line in (page * perPage)..<min((page + 1) * perPage, s.size >> 6) { lines.append(line) }
                }
            } else {
                lines = Array(0..<(s.size >> 6))
            }
            for line in lines {
                let off = line << 6
                let pending = s.pending[line]
                guard pending != nil || memcmp(current + off, s.durable + off, 64) != 0 else { continue }
                var now = Line(words: (0, 0, 0, 0, 0, 0, 0, 0))
                withUnsafeMutableBytes(of: &now) { ph_copy_line($0.baseAddress, current + off) }
                out.append(CandidateLine(line: line, durable: (s.durable + off).loadUnaligned(as: Line.self),
                                         flushed: pending, current: now))
            }
            return out
        }
    }

    /// The durable image now, in an anonymous in-memory file: the base that copy-on-write crash
    /// images map (`Pool.openSimulated(snapshot:writes:…)`).
    ///
    /// The same file is kept and brought up to date by every later fence (only the lines it makes
    /// durable are written), so a snapshot per fence costs what the fence changed. Images mapped
    /// from it must therefore be closed before the next fence of this media; to keep one longer,
    /// take ``DurableSnapshot/copy()``.
    @_spi(Core) public func snapshot() throws(PoolError) -> DurableSnapshot {
        try state.withLock { s throws(PoolError) in
            if let live = s.live, live.size == s.size { return live }
            let made = try DurableSnapshot(bytes: UnsafeRawPointer(s.durable), count: s.size)
            s.live = made
            return made
        }
    }

    /// For media made from a snapshot: the lines its fences made durable since, with their
    /// durable contents — with the snapshot and its writes, the durable image now. Nil for other
    /// media.
    @_spi(Core) public func durableChanges() -> [LineWrite]? {
        state.withLock { s in
            s.changedSinceSnapshot.map { lines in
                lines.sorted().filter { ($0 << 6) + 64 <= s.size }.map { LineWrite(line: $0, contents: (s.durable + ($0 << 6)).loadUnaligned(as: Line.self)) }
            }
        }
    }

    /// Number of lines flushed but not yet fenced.
    public var pendingLineCount: Int { state.withLock { $0.pending.count } }
}

/// Which pages of a private mapping a process has written (Linux `/proc/self/pagemap`: present and
/// not a file page — an anonymous copy made on write). Nil where pagemap is not readable.
enum PageMap {
    private static let fd: Int32 = {
        #if os(Linux)
        return open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        #else
        return -1
        #endif
    }()

    /// Indexes (from `base`) of the written pages among the `size` bytes at `base`.
    static func writtenPages(_ base: UnsafeRawPointer, _ size: Int) -> [Int]? {
        guard fd >= 0 else { return nil }
        let page = VirtualMemory.pageSize
        let first = UInt(bitPattern: base) / UInt(page)
        let count = (size + page - 1) / page
        var entries = [UInt64](repeating: 0, count: count)
        let want = count * 8
        let n = entries.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, want, off_t(first * 8)) }
        guard n == want else { return nil }
        var out: [Int] = []
        for (i, e) in entries.enumerated() where e & (1 << 63) != 0 && e & (1 << 61) == 0 { out.append(i) }
        return out
    }
}

/// A cache line a crash could change, as ``SimulatedMedia/candidates()`` found it.
@_spi(Core) public struct CandidateLine: Sendable {
    /// The line's index (pool offset / 64).
    @_spi(Core) public let line: Int
    /// Its contents in the durable image (what a crash that loses it leaves).
    @_spi(Core) public let durable: SimulatedMedia.Line
    /// Its contents when it was last flushed, if that write-back is still pending.
    @_spi(Core) public let flushed: SimulatedMedia.Line?
    /// Its contents in memory now (what a cache eviction would write).
    @_spi(Core) public let current: SimulatedMedia.Line
}

/// A cache line's contents to write over a snapshot: one difference of a crash image.
@_spi(Core) public struct LineWrite: Sendable {
    @_spi(Core) public var line: Int
    @_spi(Core) public var contents: SimulatedMedia.Line
    @_spi(Core) public init(line: Int, contents: SimulatedMedia.Line) {
        self.line = line
        self.contents = contents
    }
}

extension SimulatedMedia.Line {
    /// Word `i` (0–7) of the line.
    @_spi(Core) public func word(_ i: Int) -> UInt64 {
        withUnsafeBytes(of: self) { $0.load(fromByteOffset: i << 3, as: UInt64.self) }
    }

    /// The line with word `i` replaced by `value`.
    @_spi(Core) public func replacing(word i: Int, with value: UInt64) -> SimulatedMedia.Line {
        var copy = self
        withUnsafeMutableBytes(of: &copy) { $0.storeBytes(of: value, toByteOffset: i << 3, as: UInt64.self) }
        return copy
    }

    /// Whether two lines hold the same bytes.
    @_spi(Core) public func same(as other: SimulatedMedia.Line) -> Bool {
        (0..<8).allSatisfy { word($0) == other.word($0) }
    }
}

/// A durable image kept in an anonymous in-memory file, mapped copy-on-write by every crash
/// image made from it (so an image costs page faults on the pages recovery touches, not a copy
/// of the pool). Closed when the last reference goes.
@_spi(Core) public final class DurableSnapshot: @unchecked Sendable {
    /// The file's descriptor.
    @_spi(Core) public let fd: Int32
    /// The image's size in bytes.
    @_spi(Core) public let size: Int

    /// A snapshot of `count` bytes at `bytes`.
    @_spi(Core) public init(bytes: UnsafeRawPointer, count: Int) throws(PoolError) {
        let fd = ph_anonymous_file()
        guard fd >= 0 else { throw PoolError.syscall("memfd_create", errno: currentErrno, path: nil) }
        self.fd = fd
        size = count
        var done = 0
        while done < count {
            let n = pwrite(fd, bytes + done, count - done, off_t(done))
            if n < 0 {
                if currentErrno == EINTR { continue }
                let e = currentErrno
                _ = close(fd)
                throw PoolError.syscall("pwrite (crash image snapshot)", errno: e, path: nil)
            }
            done += n
        }
    }

    /// Writes `count` bytes at `offset` of the file (a fence bringing the live snapshot up to date).
    func write(_ bytes: UnsafeRawPointer, count: Int, at offset: Int) {
        var done = 0
        while done < count {
            let n = pwrite(fd, bytes + done, count - done, off_t(offset + done))
            if n < 0 && currentErrno == EINTR { continue }
            // An in-memory file does not fail to write within its size; stop rather than spin.
            if n <= 0 { return }
            done += n
        }
    }

    /// An independent copy (a snapshot that later fences do not change).
    @_spi(Core) public func copy() throws(PoolError) -> DurableSnapshot {
        try DurableSnapshot.of(image: try bytes(applying: []))
    }

    /// A snapshot of `image`.
    @_spi(Core) public static func of(image: [UInt8]) throws(PoolError) -> DurableSnapshot {
        try typedThrows { try image.withUnsafeBytes { try DurableSnapshot(bytes: $0.baseAddress!, count: $0.count) } }
    }

    /// `count` bytes at `offset` of the image with `writes` applied (the whole image by default:
    /// for saving a failing image to a file).
    @_spi(Core) public func bytes(applying writes: [LineWrite], offset: Int = 0, count: Int? = nil) throws(PoolError) -> [UInt8] {
        let count = min(count ?? size, max(0, size - offset))
        var out = [UInt8](repeating: 0, count: count)
        guard count > 0 else { return out }
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, count, off_t(offset)) }
        guard n == count else { throw PoolError.syscall("pread (crash image snapshot)", errno: currentErrno, path: nil) }
        for w in writes {
            for i in 0..<64 where (w.line << 6) + i >= offset && (w.line << 6) + i < offset + count {
                out[(w.line << 6) + i - offset] = withUnsafeBytes(of: w.contents) { $0[i] }
            }
        }
        return out
    }

    deinit { _ = close(fd) }
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
