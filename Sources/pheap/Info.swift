import ArgumentParser
import Foundation
import PersistentHeap

/// `pheap info PATH [--json]`
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a pool's header: layout, version, size, UUID, persistence domain, clean/dirty state, root.",
        discussion: "Reads the file without locking or modifying it, so it works on a pool in use or left dirty by a crash.")

    @OptionGroup var pool: PoolPath

    @Flag(help: "Print one JSON object (keys include layout, version, size, uuid, domain, state).")
    var json = false

    func run() throws {
        let info = try PoolInfo.read(path: pool.path)
        if json { try printJSON(info); return }
        print("""
            pool:        \(pool.path)
            layout:      \(info.layout)
            version:     \(info.version)
            size:        \(info.size) (\(humanBytes(info.size)))
            max size:    \(info.maxSize) (\(humanBytes(info.maxSize)))
            growth step: \(info.growthStep == 0 ? "none (fixed size)" : humanBytes(info.growthStep))
            uuid:        \(info.uuid)
            domain:      \(info.domain)
            state:       \(info.state)
            root:        \(info.rootOffset == 0 ? "none" : "0x" + String(info.rootOffset, radix: 16))
            lanes:       \(info.lanes)
            segments:    \(info.segments) (metadata \(humanBytes(info.metadataBytes)))
            created:     \(Date(timeIntervalSince1970: info.created))
            """)
    }
}
