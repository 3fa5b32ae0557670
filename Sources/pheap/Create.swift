import ArgumentParser
import PersistentHeap

/// `pheap create PATH --size SIZE --layout NAME`
struct Create: ParsableCommand, PoolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a pool file.",
        discussion: "Sizes: a number with an optional unit: \(ByteSize.syntax).")

    @OptionGroup var pool: PoolPath
    var poolPath: String { pool.path }

    @Option(parsing: .unconditional, help: "Initial size, e.g. 64MiB or 1GiB (at least 256KiB).",
            transform: { try ByteSize.parse($0) })
    var size: ByteSize

    @Option(help: "Layout name the application will open the pool with (at most 64 bytes).")
    var layout: String

    @Option(parsing: .unconditional, help: "Size the pool may grow to (default: 16 × size, at most 16TiB; not below --size).",
            transform: { try ByteSize.parse($0) })
    var maxSize: ByteSize?

    @Option(parsing: .unconditional, help: "Bytes added per growth (default: size; 0 disables growth).",
            transform: { try ByteSize.parse($0, allowZero: true) })
    var growthStep: ByteSize?

    @Option(help: "Number of lanes: threads that can allocate at once without waiting.")
    var lanes: Int?

    func validate() throws {
        if let maxSize, maxSize.bytes < size.bytes {
            throw ValidationError("--max-size \(humanBytes(maxSize.bytes)) is below --size \(humanBytes(size.bytes))")
        }
        if let lanes, lanes < 1 { throw ValidationError("--lanes must be at least 1") }
    }

    func run() throws {
        let options = PoolOptions(maxSize: maxSize?.bytes, growthStep: growthStep?.bytes, laneCount: lanes)
        let p = try Pool.create(path: pool.path, size: size.bytes, layout: layout, options: options)
        let info = p.info
        try p.close()
        print("created \(pool.path): layout \"\(info.layout)\", \(humanBytes(info.size)) (max \(humanBytes(info.maxSize))), uuid \(info.uuid)")
    }
}
