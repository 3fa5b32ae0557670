import CoreMetrics
import PersistentHeap

/// Exports a pool's figures to apple/swift-metrics: its size, the bytes allocated and free, and
/// the persistence counters (fences, flushed lines, msyncs, checkpoints) of the work you measure.
///
/// The core library has no metrics dependency; this small module bridges it. Nothing here runs on
/// the pool's hot paths: gauges are recorded when you call ``recordPoolState()`` (for example
/// from a timer), and counters when a ``measure(_:)`` body returns.
///
/// ```swift
/// let metrics = PoolMetrics(pool, dimensions: [("pool", "orders")])
/// try metrics.measure { try orders.updateValue(order, forKey: id) }   // fences, flushes, …
/// try metrics.recordPoolState()                                     // size, allocated, free
/// ```
///
/// Metric labels (with ``label`` as prefix, `pheap` by default):
/// - gauges `pheap_pool_size_bytes`, `pheap_allocated_bytes`, `pheap_free_bytes`,
///   `pheap_objects`, `pheap_largest_free_extent_bytes`, `pheap_fragmentation_ratio`;
/// - counters `pheap_fences_total`, `pheap_checkpoint_fences_total`, `pheap_flushed_lines_total`,
///   `pheap_msync_calls_total`, `pheap_checkpoints_total`, `pheap_operations_total`.
public struct PoolMetrics: Sendable {
    /// The pool whose figures are exported.
    public let pool: Pool
    /// The prefix of every metric's label.
    public let label: String

    let poolSize, allocated, free, objects, largestFree, fragmentation: Gauge
    let fences, checkpointFences, flushedLines, msyncCalls, checkpoints, operations: Counter

    /// Creates the pool's metrics in `factory` (default: the bootstrapped `MetricsSystem`).
    ///
    /// - Parameters:
    ///   - pool: the pool whose figures are exported.
    ///   - label: the prefix of every label (`pheap` gives `pheap_fences_total`).
    ///   - dimensions: added to every metric, e.g. `[("pool", "orders")]`.
    ///   - factory: the metrics backend (default: the one `MetricsSystem.bootstrap` installed).
    public init(_ pool: Pool, label: String = "pheap", dimensions: [(String, String)] = [],
                factory: any MetricsFactory = MetricsSystem.factory) {
        self.pool = pool
        self.label = label
        func gauge(_ name: String) -> Gauge { Gauge(label: "\(label)_\(name)", dimensions: dimensions, factory: factory) }
        func counter(_ name: String) -> Counter { Counter(label: "\(label)_\(name)", dimensions: dimensions, factory: factory) }
        poolSize = gauge("pool_size_bytes")
        allocated = gauge("allocated_bytes")
        free = gauge("free_bytes")
        objects = gauge("objects")
        largestFree = gauge("largest_free_extent_bytes")
        fragmentation = gauge("fragmentation_ratio")
        fences = counter("fences_total")
        checkpointFences = counter("checkpoint_fences_total")
        flushedLines = counter("flushed_lines_total")
        msyncCalls = counter("msync_calls_total")
        checkpoints = counter("checkpoints_total")
        operations = counter("operations_total")
    }

    /// Records the pool's current size, bytes allocated and free, live objects, largest free
    /// extent and fragmentation as gauges.
    ///
    /// Cost: one `Pool.stats()` — a walk of the heap's metadata (unit tables and run headers,
    /// not the objects), proportional to the pool's size; call it from a timer, not per operation.
    public func recordPoolState() throws(PoolError) {
        let s = try pool.stats()
        poolSize.record(s.poolSize)
        allocated.record(s.allocatedBytes)
        free.record(s.freeBytes)
        objects.record(s.objects)
        largestFree.record(s.largestFreeExtent)
        fragmentation.record(s.fragmentation)
    }

    /// Runs `body` and adds the persistence work it did on this thread — fences (and how many of
    /// them were checkpoints'), flushed lines, msyncs, checkpoints — to the counters, and one to
    /// `operations_total`. The counters are the calling thread's (`PersistenceCounters`), so
    /// work `body` hands to other threads is not counted.
    @discardableResult
    public func measure<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let before = PersistenceCounters.current
        defer { record(PersistenceCounters.current.since(before)) }
        return try body()
    }

    /// Adds a difference of `PersistenceCounters` (taken with `since(_:)`) to the counters and
    /// counts one operation.
    public func record(_ delta: PersistenceCounters) {
        fences.increment(by: Int64(clamping: delta.fences))
        checkpointFences.increment(by: Int64(clamping: delta.checkpointFences))
        flushedLines.increment(by: Int64(clamping: delta.flushedLines))
        msyncCalls.increment(by: Int64(clamping: delta.msyncCalls))
        checkpoints.increment(by: Int64(clamping: delta.checkpoints))
        operations.increment()
    }
}
