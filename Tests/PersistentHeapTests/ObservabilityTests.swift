import InMemoryLogging
import Logging
import MetricsTestKit
import PHeapTestSupport
import PersistentCollections
@_spi(Core) import PersistentHeapCore
import PersistentHeap
import PersistentHeapMetrics
import Testing

/// The optional logger (apple/swift-log) and the metrics bridge (apple/swift-metrics), each
/// checked with its in-memory backend.
@Suite("logging and metrics")
struct ObservabilityTests {
    let dir = ScratchDirectory("observability")

    /// A logger that keeps its entries, at `level` and above.
    func memoryLogger(_ level: Logger.Level = .trace) -> (Logger, InMemoryLogHandler) {
        var handler = InMemoryLogHandler()
        handler.logLevel = level
        return (Logger(label: "pheap-test") { _ in handler }, handler)
    }

    @Test("a crash is reported at the next open: unclean shutdown and the records replayed")
    func crashIsLogged() throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "log")
        let root = try pool.root(PPointer<Int>.self)
        for i in 0..<5 { _ = try pool.allocate(i, linkedInto: root) }   // records, not checkpointed
        let image = pool.simulatedMedia!.crashImage(seed: 1, evictionProbability: 0)
        try pool.close()

        let (logger, handler) = memoryLogger()
        let again = try Pool.openSimulated(image: image, layout: "log", options: PoolOptions(logger: logger))
        #expect(!again.previousShutdownWasClean)
        #expect(again.recoveredOperations > 0)
        let entries = handler.entries
        let unclean = entries.first { $0.message.description.contains("not closed cleanly") }
        #expect(unclean?.level == .warning)
        #expect(unclean?.metadata["pheap.replayed"]?.description == "\(again.recoveredOperations)")
        let replay = entries.first { $0.message.description.contains("recovery replayed") }
        #expect(replay?.level == .notice)
        #expect(replay?.message.description == "recovery replayed \(again.recoveredOperations) log record(s)")
        try again.close()
        #expect(handler.entries.last?.message.description == "pool closed")

        // A clean reopen reports none of it (only debug events). After close the crash image is
        // the durable image (the memory is unmapped: nothing else to read).
        let clean = pool.simulatedMedia!.crashImage(seed: 1, evictionProbability: 1)
        #expect(clean == pool.simulatedMedia!.durableImage())
        let (quiet, quietHandler) = memoryLogger(.info)
        try Pool.openSimulated(image: clean, layout: "log", options: PoolOptions(logger: quiet)).close()
        #expect(quietHandler.entries.isEmpty, "\(quietHandler.entries)")
    }

    @Test("growth, shrink and a header repaired from its backup are logged with the pool's path")
    func growShrinkRepair() throws {
        let path = dir.file("grow.pool")
        let (logger, handler) = memoryLogger(.info)
        let options = PoolOptions(maxSize: 16 << 20, growthStep: 1 << 20, logger: logger)
        let pool = try Pool.create(path: path, size: 1 << 20, layout: "log", options: options)
        var blocks: [PRawPointer] = []
        for _ in 0..<6 { blocks.append(try pool.allocate(bytes: 256 << 10)) }     // 1.5 MiB: grows
        let grown = handler.entries.filter { $0.message.description == "pool grown" }
        #expect(!grown.isEmpty)
        #expect(grown.first?.metadata["pheap.pool"]?.description == path)
        #expect(grown.first?.metadata["pheap.to"]?.description == "\(pool.info.size)" || grown.count > 1)
        for b in blocks { try pool.free(b) }
        let released = try pool.shrink()
        #expect(released > 0)
        #expect(handler.entries.contains { $0.message.description == "pool shrunk" && $0.metadata["pheap.to"]?.description == "\(pool.info.size)" })
        try pool.close()

        FileBytes.patch(path, at: Format.primaryHeaderOffset + HeaderField.poolSize, [0xde, 0xad])
        let (repairLogger, repairHandler) = memoryLogger(.info)
        let repaired = try Pool.open(path: path, layout: "log", options: PoolOptions(logger: repairLogger))
        #expect(repaired.repairedHeader)
        #expect(repairHandler.entries.map(\.message.description) == ["a damaged header copy was rewritten from the other copy"])
        #expect(repairHandler.entries.first?.level == .warning)
        try repaired.close()
    }

    @Test("the metrics bridge exports pool state gauges and the persistence counters of measured work")
    func metricsBridge() throws {
        let metrics = TestMetrics()
        let pool = try Pool.createSimulated(size: 4 << 20, layout: "metrics")
        let bridge = PoolMetrics(pool, dimensions: [("pool", "test")], factory: metrics)
        let root = try pool.root(PPointer<Int>.self)
        for i in 0..<10 { try bridge.measure { _ = try pool.allocate(i, linkedInto: root) } }
        let fences = try metrics.expectCounter("pheap_fences_total", [("pool", "test")])
        // Each allocate-and-link pays one fence, plus the occasional checkpoint's.
        let checkpointFences = try metrics.expectCounter("pheap_checkpoint_fences_total", [("pool", "test")])
        #expect(fences.totalValue - checkpointFences.totalValue == 10)
        #expect(try metrics.expectCounter("pheap_operations_total", [("pool", "test")]).totalValue == 10)
        #expect(try metrics.expectCounter("pheap_flushed_lines_total", [("pool", "test")]).totalValue >= 10)

        try bridge.recordPoolState()
        let stats = try pool.stats()
        #expect(try metrics.expectGauge("pheap_pool_size_bytes", [("pool", "test")]).lastValue == Double(stats.poolSize))
        #expect(try metrics.expectGauge("pheap_allocated_bytes", [("pool", "test")]).lastValue == Double(stats.allocatedBytes))
        #expect(try metrics.expectGauge("pheap_free_bytes", [("pool", "test")]).lastValue == Double(stats.freeBytes))
        #expect(try metrics.expectGauge("pheap_objects", [("pool", "test")]).lastValue == Double(stats.objects))
        #expect(stats.objects == 11)   // ten nodes and the root
        try pool.close()
        #expect(throws: PoolError.self) { try bridge.recordPoolState() }   // closed: a clear error
    }
}
