import Foundation
import PHeapTestSupport
@_spi(Core) import PersistentHeapCore
import PersistentHeap
import Testing

/// The picture of the heap (`Pool.heapMap()`, `pheap stats`).
@Suite("heap map")
struct HeapMapTests {
    let dir = ScratchDirectory("heap-map")

    @Test("cells take the kind covering most of their bytes, runs drawn by fill")
    func cellsOfAHandMadeMap() {
        // 16 KiB in 8 cells of 2 KiB.
        let k = 1024
        let map = HeapMap(poolSize: 16 * k, extents: [
            HeapExtent(kind: .metadata, offset: 0, length: 3 * k, fill: 0),         // cell 0, half of 1
            HeapExtent(kind: .run, offset: 3 * k, length: 2 * k, fill: 0.2),        // half of 1, half of 2
            HeapExtent(kind: .run, offset: 5 * k, length: 3 * k, fill: 0.9),        // half of 2, cell 3
            HeapExtent(kind: .object, offset: 8 * k, length: 2 * k, fill: 1),       // cell 4
            HeapExtent(kind: .free, offset: 10 * k, length: 5 * k, fill: 0),        // cells 5, 6, half of 7
            HeapExtent(kind: .run, offset: 15 * k, length: 1 * k, fill: 0.6),       // half of 7
        ])
        let cells = map.cells(8)
        #expect(cells.map(\.kind) == [.metadata, .metadata, .run, .run, .object, .free, .free, .run])
        #expect(abs(cells[2].fill - 0.55) < 1e-9)   // 1 KiB at 0.2 and 1 KiB at 0.9
        #expect(String(cells.map(\.symbol)) == "##▓█O..▓")
        #expect(map.text(columns: 4, rows: 2) == """
            16.0 KiB in 8 cells of 2.0 KiB
                   0 B  ##▓█
               8.0 KiB  O..▓
            \(HeapMap.legend)

            """)
    }

    @Test("a known pool draws the expected picture")
    func knownPool() throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "map", options: PoolOptions(laneCount: 2))
        // A full run of 64-byte blocks, half a run of 1 KiB blocks, and a 256 KiB object.
        var small: [PRawPointer] = []
        for _ in 0..<1000 { small.append(try pool.allocate(bytes: 64)) }
        var medium: [PRawPointer] = []
        for _ in 0..<40 { medium.append(try pool.allocate(bytes: 1024)) }
        for p in medium.suffix(20) { try pool.free(p) }
        let big = try pool.allocate(bytes: 256 << 10)
        let map = try pool.heapMap()
        #expect(map.poolSize == pool.info.size)
        // The extents tile the pool.
        var end = 0
        for x in map.extents {
            #expect(x.offset == end)
            end = x.offset + x.length
        }
        #expect(end == map.poolSize)
        let picture = map.text(columns: 32, rows: 4)
        #expect(picture == """
            1.0 MiB in 128 cells of 8.0 KiB
                   0 B  \(expectedRows[0])
             256.0 KiB  \(expectedRows[1])
             512.0 KiB  \(expectedRows[2])
             768.0 KiB  \(expectedRows[3])
            \(HeapMap.legend)

            """, "\(picture)")
        // Freeing the object turns its cells free.
        try pool.free(big)
        let after = try pool.heapMap().text(columns: 32, rows: 4)
        #expect(!after.replacingOccurrences(of: HeapMap.legend, with: "").contains("O"), "\(after)")
        try pool.close()
        #expect(throws: PoolError.self) { try pool.heapMap() }
    }

    /// The picture of `knownPool`, row by row (checked by eye once: metadata, the two runs, the
    /// object, free space; it changes only with the allocator's placement policy).
    let expectedRows = ["###████████▒▒▒▒▒▒▒▒OOOOOOOOOOOOO", "OOOOOOOOOOOOOOOOOOO.............",
                        "................................", "................................"]

    @Test("pheap stats draws the map (no colour off a terminal), writes SVG, keeps --json as it was")
    func statsCommand() throws {
        let path = dir.file("stats.pool")
        let pool = try Pool.create(path: path, size: 4 << 20, layout: "stats")
        for _ in 0..<100 { _ = try pool.allocate(bytes: 100) }
        _ = try pool.allocate(bytes: 1 << 20)
        try pool.close()
        let pheap = siblingExecutable("pheap")
        let svg = dir.file("map.svg")
        let (code, out, err) = try runProcess(pheap, ["stats", path, "--width", "44", "--rows", "2", "--svg", svg])
        #expect(code == 0, "\(err)")
        #expect(out.contains("largest free extent:  "))
        #expect(out.contains("4.0 MiB in 64 cells of 64.0 KiB"))
        #expect(out.contains(HeapMap.legend))
        #expect(!out.contains("\u{1B}["), "colour codes off a terminal")
        let mapLines = out.split(separator: "\n").filter { $0.hasSuffix(String(repeating: ".", count: 8)) || $0.contains("O") }
        #expect(mapLines.contains { $0.contains("O") }, "the 1 MiB object is drawn: \(out)")
        let svgText = try String(contentsOfFile: svg, encoding: .utf8)
        #expect(svgText.hasPrefix("<svg") && svgText.hasSuffix("</svg>\n"))
        #expect(svgText.components(separatedBy: "<rect").count - 1 == 64 * 2 + 7)   // cells and legend
        #expect(svgText.contains("#2563eb"))                                       // the object's colour

        let (jcode, json, _) = try runProcess(pheap, ["stats", path, "--json"])
        #expect(jcode == 0)
        let decoded = try JSONDecoder().decode(PoolStats.self, from: Data(json.utf8))
        #expect(decoded.largeObjects == 1 && decoded.objects == 101)
    }
}
