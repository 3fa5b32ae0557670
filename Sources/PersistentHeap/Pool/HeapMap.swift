@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

/// A picture of a pool's address space: what each region holds — metadata, free space, large
/// objects, runs of small blocks by how full they are. `pheap stats` draws it in the terminal
/// and as SVG.
///
/// ```swift
/// print(try pool.heapMap().text(columns: 64, rows: 8))
/// ```
public struct HeapMap: Sendable, Equatable {
    /// The pool's size in bytes (the map covers [0, poolSize)).
    public let poolSize: Int
    /// The extents in address order, covering the pool.
    public let extents: [HeapExtent]

    /// A map of `extents` in a pool of `poolSize` bytes.
    public init(poolSize: Int, extents: [HeapExtent]) {
        self.poolSize = poolSize
        self.extents = extents
    }

    /// One cell of a drawn map: the kind that covers most of its bytes, and the byte-weighted
    /// fill of the runs in it.
    public struct Cell: Sendable, Equatable {
        /// The kind covering most of the cell's bytes.
        public var kind: HeapExtent.Kind
        /// For a run cell: the allocated share of its runs' blocks, weighted by bytes.
        public var fill: Double

        /// The cell's character: `#` metadata, `.` free, `O` large object, and for runs
        /// `░▒▓█` by fill (up to 25 %, 50 %, 75 %, above).
        public var symbol: Character {
            switch kind {
            case .metadata: return "#"
            case .free: return "."
            case .object: return "O"
            case .run: return fill <= 0.25 ? "░" : fill <= 0.5 ? "▒" : fill <= 0.75 ? "▓" : "█"
            }
        }

        /// ANSI colour code for terminals.
        var ansi: String {
            switch kind {
            case .metadata: return "90"
            case .free: return "2"
            case .object: return "34"
            case .run: return fill <= 0.5 ? "32" : fill <= 0.75 ? "33" : "31"
            }
        }

        /// SVG fill colour.
        var colour: String {
            switch kind {
            case .metadata: return "#6b7280"
            case .free: return "#f3f4f6"
            case .object: return "#2563eb"
            case .run: return fill <= 0.25 ? "#bbf7d0" : fill <= 0.5 ? "#4ade80" : fill <= 0.75 ? "#f59e0b" : "#dc2626"
            }
        }
    }

    /// The map cut into `count` cells of equal byte ranges (the last one takes the remainder).
    public func cells(_ count: Int) -> [Cell] {
        let n = max(1, count)
        var result: [Cell] = []
        result.reserveCapacity(n)
        var e = 0
        for i in 0..<n {
            let lo = poolSize * i / n, hi = max(lo + 1, poolSize * (i + 1) / n)
            var bytes = [HeapExtent.Kind: Int]()
            var runFill = 0.0
            while e < extents.count && extents[e].offset + extents[e].length <= lo { e += 1 }
            var k = e
            while k < extents.count && extents[k].offset < hi {
                let x = extents[k]
                let overlap = min(hi, x.offset + x.length) - max(lo, x.offset)
                if overlap > 0 {
                    bytes[x.kind, default: 0] += overlap
                    if x.kind == .run { runFill += x.fill * Double(overlap) }
                }
                k += 1
            }
            // The kind with the most bytes; ties go to the first of metadata, object, run, free.
            var best = HeapExtent.Kind.free, bestBytes = -1
            for kind in [HeapExtent.Kind.metadata, .object, .run, .free] where (bytes[kind] ?? 0) > bestBytes {
                best = kind
                bestBytes = bytes[kind] ?? 0
            }
            let runBytes = bytes[.run] ?? 0
            result.append(Cell(kind: best, fill: runBytes > 0 ? runFill / Double(runBytes) : 0))
        }
        return result
    }

    /// The legend of the text picture.
    public static let legend = "# metadata  . free  O large object  ░▒▓█ runs of small blocks, ≤25% ≤50% ≤75% >75% full"

    /// The map as text: `rows` lines of `columns` cells, each line starting with the offset of
    /// its first byte, then the legend. `colour` adds ANSI colours (for a terminal).
    public func text(columns: Int, rows: Int, colour: Bool = false) -> String {
        let columns = max(1, columns), rows = max(1, rows)
        let cells = self.cells(columns * rows)
        let cellBytes = poolSize / (columns * rows)
        var out = "\(HeapMap.human(poolSize)) in \(columns * rows) cells of \(HeapMap.human(cellBytes))\n"
        for r in 0..<rows {
            let label = HeapMap.human(poolSize * (r * columns) / (columns * rows))
            out += String(repeating: " ", count: max(0, 10 - label.count)) + label + "  "
            for c in cells[(r * columns)..<((r + 1) * columns)] {
                if colour {
                    out += "\u{1B}[\(c.ansi)m\(c.symbol)\u{1B}[0m"
                } else {
                    out.append(c.symbol)
                }
            }
            out += "\n"
        }
        return out + HeapMap.legend + "\n"
    }

    /// The map as an SVG document: `rows` × `columns` squares of `cell` pixels with row labels,
    /// a title and a legend.
    public func svg(columns: Int, rows: Int, cell: Int = 10) -> String {
        let columns = max(1, columns), rows = max(1, rows)
        let cells = self.cells(columns * rows)
        let left = 80, top = 30
        let width = left + columns * cell + 10, height = top + rows * cell + 60
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" font-family="monospace" font-size="11">
            <title>PersistentHeap pool map: \(HeapMap.human(poolSize))</title>
            <text x="4" y="16">pool of \(HeapMap.human(poolSize)): \(columns * rows) cells of \(HeapMap.human(poolSize / (columns * rows)))</text>

            """
        for r in 0..<rows {
            let y = top + r * cell
            out += "<text x=\"4\" y=\"\(y + cell - 1)\">\(HeapMap.human(poolSize * (r * columns) / (columns * rows)))</text>\n"
            for c in 0..<columns {
                let x = cells[r * columns + c]
                out += "<rect x=\"\(left + c * cell)\" y=\"\(y)\" width=\"\(cell)\" height=\"\(cell)\" fill=\"\(x.colour)\" stroke=\"#ffffff\" stroke-width=\"0.5\"/>\n"
            }
        }
        let legend: [(String, Cell)] = [("metadata", Cell(kind: .metadata, fill: 0)), ("free", Cell(kind: .free, fill: 0)),
                                        ("large object", Cell(kind: .object, fill: 1)), ("run ≤25%", Cell(kind: .run, fill: 0.2)),
                                        ("≤50%", Cell(kind: .run, fill: 0.5)), ("≤75%", Cell(kind: .run, fill: 0.7)),
                                        (">75% full", Cell(kind: .run, fill: 1))]
        var x = 4
        let y = top + rows * cell + 20
        for (name, c) in legend {
            out += "<rect x=\"\(x)\" y=\"\(y - 9)\" width=\"10\" height=\"10\" fill=\"\(c.colour)\" stroke=\"#9ca3af\" stroke-width=\"0.5\"/>"
            out += "<text x=\"\(x + 14)\" y=\"\(y)\">\(name)</text>\n"
            x += 14 + name.count * 7 + 12
        }
        return out + "</svg>\n"
    }

    /// `1.5 MiB`-style (IEC) rendering of a byte count.
    public static func human(_ n: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var v = Double(n), i = 0
        while abs(v) >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        if i == 0 { return "\(n) B" }
        let tenths = Int((v * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[i])"
    }
}

extension Pool {
    /// The map of this pool's address space (see ``HeapMap``). Walks the unit table and each
    /// run's bitmap with the allocator's locks held: call it while the pool is quiet (it is
    /// consistent, but blocks allocation while it runs).
    public func heapMap() throws(PoolError) -> HeapMap {
        try checkOpen()
        do {
            return HeapMap(poolSize: heap.poolEnd, extents: try heap.extentMap())
        } catch {
            throw PoolError(error.code, error.message, path: path, errno: error.errno)
        }
    }
}
