@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator
import Logging

/// Options for creating and opening pools.
///
/// ```swift
/// let options = PoolOptions(maxSize: 1 << 30, logger: Logger(label: "app.pool"))
/// let pool = try Pool.openOrCreate(path: "app.pool", size: 64 << 20, layout: "app", options: options)
/// ```

public struct PoolOptions: Sendable {
    /// How stores are made durable.
    public enum Durability: String, Sendable, CaseIterable {
        /// Cache-line flushes on a DAX mapping (`MAP_SYNC` accepted) or when the environment
        /// variable `PHEAP_FORCE_PMEM=1` is set; `msync` otherwise.
        case automatic
        /// Always cache-line flushes (`clwb`/`clflushopt`/`clflush` + `sfence`).
        case cacheLineFlush
        /// Fences only: for platforms whose CPU caches are in the persistence domain (eADR).
        /// On other hardware this is not crash-safe.
        case fenceOnly
        /// Always `msync(MS_SYNC)`.
        case msync
    }

    /// How stores are made durable (file pools; simulated pools always simulate).
    public var durability: Durability = .automatic
    /// Open without write access. Shares the pool with other read-only openers.
    public var readOnly = false
    /// `create` only: the size the pool may grow to. Default: 16 × the initial size, at most
    /// 64 GiB (never less than the initial size). The unit table is sized for it: 8 bytes per
    /// 4 KiB of maximum size, a sparse file region until used.
    public var maxSize: Int?
    /// `create` only: bytes added each time the pool grows. Default: the initial size.
    /// 0 disables growth.
    public var growthStep: Int?
    /// `create` only: number of lanes (threads that can use the pool at once without waiting).
    /// Default: one per 256 KiB of initial size, between 2 and 64.
    public var laneCount: Int?

    /// Where the pool reports its rare events (apple/swift-log), or nil for none (the default).
    ///
    /// Never on a hot path — only at open, growth, shrink and close:
    /// - `warning` "pool was not closed cleanly (a crash or a kill): recovery ran";
    /// - `warning` "a damaged header copy was rewritten from the other copy";
    /// - `notice` "recovery replayed N log record(s)";
    /// - `info` "pool grown" (`pheap.from`, `pheap.to` in bytes), "pool shrunk" (`pheap.to`);
    /// - `debug` "pool opened" (domain, size, read-only), "pool closed".
    ///
    /// Every event carries `pheap.pool`, the pool's path.
    public var logger: Logger?

    /// Options with the given values; every one has a default (see the properties).
    public init(durability: Durability = .automatic, readOnly: Bool = false, maxSize: Int? = nil,
                growthStep: Int? = nil, laneCount: Int? = nil, logger: Logger? = nil) {
        self.logger = logger
        self.durability = durability
        self.readOnly = readOnly
        self.maxSize = maxSize
        self.growthStep = growthStep
        self.laneCount = laneCount
    }
}
