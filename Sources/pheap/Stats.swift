import ArgumentParser
import Foundation
import PersistentHeap

/// `pheap stats PATH [--json]`
struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show allocation statistics: bytes allocated and free, objects per size class, fragmentation.")

    @OptionGroup var pool: PoolPath

    @Option(help: "Layout name to open the pool with (default: the one in its header).")
    var layout: String?

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        let layout = try self.layout ?? PoolInfo.read(path: pool.path).layout
        let p = try Pool.open(path: pool.path, layout: layout, options: PoolOptions(readOnly: true))
        let s = try p.stats()
        try p.close()
        if json { try printJSON(s); return }
        print("""
            pool size:          \(s.poolSize) (\(humanBytes(s.poolSize)))
            heap size:          \(s.heapSize) (\(humanBytes(s.heapSize)))
            allocated:          \(s.allocatedBytes) bytes in \(s.objects) objects (\(s.largeObjects) large)
            free:               \(s.freeBytes) bytes (\(s.freeExtentBytes) in \(s.freeExtents) free extents)
            largest free extent: \(s.largestFreeExtent) bytes
            fragmentation:      \(String(format: "%.3f", s.fragmentation))
            runs:               \(s.runs) (overhead \(s.runOverheadBytes) bytes)
            unit tables:        \(s.unitTableBytes) bytes
            """)
        if !s.sizeClasses.isEmpty {
            print("size class   runs   objects   free blocks")
            for c in s.sizeClasses {
                print(String(format: "%10d %6d %9d %13d", c.blockSize, c.runs, c.objects, c.freeBlocks))
            }
        }
    }
}
