import ArgumentParser
import PersistentHeap

/// `pheap create PATH --size SIZE --layout NAME`
struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a pool file.")

    @OptionGroup var pool: PoolPath

    @Option(help: "Initial size, e.g. 64MiB or 1GiB (at least 256KiB).")
    var size: ByteSize

    @Option(help: "Layout name the application will open the pool with (at most 64 bytes).")
    var layout: String

    @Option(help: "Size the pool may grow to (default: 16 × size, at most 64GiB).")
    var maxSize: ByteSize?

    @Option(help: "Bytes added per growth (default: size; 0 disables growth).")
    var growthStep: ByteSize?

    @Option(help: "Number of lanes: threads that can allocate at once without waiting.")
    var lanes: Int?

    func run() throws {
        let options = PoolOptions(maxSize: maxSize?.bytes, growthStep: growthStep?.bytes, laneCount: lanes)
        let p = try Pool.create(path: pool.path, size: size.bytes, layout: layout, options: options)
        let info = p.info
        try p.close()
        print("created \(pool.path): layout \"\(info.layout)\", \(humanBytes(info.size)) (max \(humanBytes(info.maxSize))), uuid \(info.uuid)")
    }
}
