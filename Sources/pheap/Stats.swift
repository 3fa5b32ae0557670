import ArgumentParser
import Foundation
import PersistentHeap

/// `pheap stats PATH [--json] [--svg FILE] [--width N] [--rows N] [--no-map]`
struct Stats: ParsableCommand, PoolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show allocation statistics and a map of the pool.",
        discussion: """
            Prints bytes allocated and free, objects per size class and fragmentation, then \
            draws the pool as a map: one cell per equal slice of the file, showing what \
            holds most of it (# metadata, . free, O large object, ░▒▓█ runs of small \
            blocks by fill). The map fits the terminal's width and is coloured only on a \
            terminal; --svg writes it as an SVG picture. --json prints the statistics only.
            """)

    @OptionGroup var pool: PoolPath
    var poolPath: String { pool.path }

    @Option(help: "Layout name to open the pool with (default: the one in its header).")
    var layout: String?

    @Flag(help: "Print one JSON object (the statistics; no map).")
    var json = false

    @Option(help: "Also write the map as an SVG picture to this file.")
    var svg: String?

    @Option(help: "Width of the map in characters (default: the terminal's, else 80).")
    var width: Int?

    @Option(help: "Rows of the map.")
    var rows = 8

    @Flag(help: "Do not draw the map.")
    var noMap = false

    func validate() throws {
        if let width, width < 20 { throw ValidationError("--width must be at least 20") }
        guard (1...200).contains(rows) else { throw ValidationError("--rows must be between 1 and 200") }
    }

    func run() throws {
        let layout = try self.layout ?? PoolInfo.read(path: pool.path).layout
        let p = try Pool.open(path: pool.path, layout: layout, options: PoolOptions(readOnly: true))
        defer { try? p.close() }
        let s = try p.stats()
        if json { try printJSON(s); return }
        let map = (noMap && svg == nil) ? nil : try p.heapMap()
        print(Stats.summary(s))
        if let map, !noMap {
            print("")
            let terminal = isatty(STDOUT_FILENO) == 1
            // The width less the row labels, rounded down to a power of two (round cell sizes).
            let room = (width ?? Stats.terminalWidth() ?? 80) - 12
            let columns = 1 << (Int.bitWidth - 1 - room.leadingZeroBitCount)
            print(map.text(columns: columns, rows: rows,
                           colour: terminal && ProcessInfo.processInfo.environment["NO_COLOR"] == nil), terminator: "")
        }
        if let svg, let map {
            do {
                try map.svg(columns: 64, rows: rows).write(toFile: svg, atomically: true, encoding: .utf8)
            } catch {
                throw CommandFailure(message: "\(svg): cannot write the SVG map (\(error.localizedDescription))", code: 1)
            }
            if !noMap { print("map written to \(svg)") }
        }
    }

    /// The statistics as aligned lines, sizes in IEC units.
    static func summary(_ s: PoolStats) -> String {
        let rows: [(String, String)] = [
            ("pool size", humanBytes(s.poolSize)),
            ("heap size", humanBytes(s.heapSize)),
            ("allocated", "\(humanBytes(s.allocatedBytes)) in \(s.objects) objects (\(s.largeObjects) large)"),
            ("free", "\(humanBytes(s.freeBytes)) (\(humanBytes(s.freeExtentBytes)) in \(s.freeExtents) free extents)"),
            ("largest free extent", humanBytes(s.largestFreeExtent)),
            ("fragmentation", String(format: "%.3f", s.fragmentation)),
            ("runs", "\(s.runs) (overhead \(humanBytes(s.runOverheadBytes)))"),
            ("unit tables", humanBytes(s.unitTableBytes)),
        ]
        let w = rows.map(\.0.count).max()! + 1
        var out = rows.map { $0.0 + ":" + String(repeating: " ", count: w - $0.0.count + 1) + $0.1 }.joined(separator: "\n")
        if !s.sizeClasses.isEmpty {
            func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
            out += "\n\n" + [pad("block size", 10), pad("runs", 6), pad("objects", 9), pad("free blocks", 11)].joined(separator: " ")
            for c in s.sizeClasses {
                out += "\n" + [pad(humanBytes(c.blockSize), 10), pad("\(c.runs)", 6), pad("\(c.objects)", 9),
                               pad("\(c.freeBlocks)", 11)].joined(separator: " ")
            }
        }
        return out
    }

    /// The terminal's width in columns: `COLUMNS`, else the window size of stdout, else nil.
    static func terminalWidth() -> Int? {
        if let c = ProcessInfo.processInfo.environment["COLUMNS"], let n = Int(c), n >= 20 { return n }
        var ws = winsize()
        if isatty(STDOUT_FILENO) == 1, ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &ws) == 0, ws.ws_col >= 20 { return Int(ws.ws_col) }
        return nil
    }
}
