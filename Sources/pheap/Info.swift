import ArgumentParser
import Foundation
import PersistentHeap

/// `pheap info PATH [--json]`
struct Info: ParsableCommand, PoolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a pool's header: layout, version, size, UUID, persistence domain, clean/dirty state, root.",
        discussion: "Reads the file without locking or modifying it, so it works on a pool in use or left dirty by a crash.")

    @OptionGroup var pool: PoolPath
    var poolPath: String { pool.path }

    @Flag(help: "Print one JSON object (keys include layout, version, size, uuid, domain, state, inUse).")
    var json = false

    func run() throws {
        let info = try PoolInfo.read(path: pool.path)
        if json { try printJSON(info); return }
        print("""
            pool:        \(pool.path)
            layout:      \(info.layout)
            version:     \(info.version)
            size:        \(humanBytes(info.size)) (\(info.size) bytes)
            max size:    \(humanBytes(info.maxSize)) (\(info.maxSize) bytes)
            growth step: \(info.growthStep == 0 ? "none (fixed size)" : humanBytes(info.growthStep))
            uuid:        \(info.uuid)
            domain:      \(info.domain)
            state:       \(info.stateDescription)
            root:        \(info.rootOffset == 0 ? "none" : "0x" + String(info.rootOffset, radix: 16))
            lanes:       \(info.lanes)
            segments:    \(info.segments) (metadata \(humanBytes(info.metadataBytes)))
            created:     \(Date(timeIntervalSince1970: info.created))
            """)
    }
}
