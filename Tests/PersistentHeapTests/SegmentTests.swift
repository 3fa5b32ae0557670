#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PHeapTestSupport
import Testing
@_spi(Containers) @testable import PersistentHeap
@_spi(Allocator) @testable import PersistentHeapAllocator
@_spi(Core) @testable import PersistentHeapCore

/// Metadata that grows with the pool: the heap's segments, each carrying its own unit table.
@Suite("Segments")
struct SegmentTests {
    let dir = ScratchDirectory("segments")

    @Test("segment geometry: unit → segment is O(1) and consistent with the segment bounds")
    func geometry() {
        for shift in [6, 9, 14] {
            let g = SegmentGeometry(shift: shift)
            #expect(g.start(0) == 0 && g.end(0) == 1 << shift && g.start(1) == 1 << shift && g.end(1) == 2 << shift)
            var previousEnd = 0
            for k in 0..<12 {
                #expect(g.start(k) == previousEnd, "segments tile the heap")
                previousEnd = g.end(k)
                for u in [g.start(k), g.start(k) + 1, g.end(k) - 1] where u < g.end(k) {
                    #expect(g.segment(of: u) == k, "unit \(u), shift \(shift)")
                }
                // The table holds an entry for every unit of the segment, inside the segment.
                #expect(g.tableUnits(k) * SegmentGeometry.entriesPerUnit >= g.end(k) - g.start(k))
                #expect(g.entryOffset(g.end(k) - 1) + 8 <= g.dataStart(k) << Format.unitShift)
                #expect(g.entryOffset(g.start(k)) == g.start(k) << Format.unitShift)
                #expect(!g.isValidEnd(g.dataStart(k)) && g.isValidEnd(g.dataStart(k) + 1) && g.isValidEnd(g.end(k)))
            }
        }
        let g = SegmentGeometry(shift: 6)  // segment 0: 64 units, table 1 unit
        // A request that fits the free tail of the last segment ends inside it …
        #expect(g.endHolding(10, old: 40, tailFree: 5) == 45)
        // … one that does not starts after the next segment's table …
        #expect(g.endHolding(30, old: 60, tailFree: 0) == 64 + 1 + 30)
        // … and one larger than the next segment's span skips to a segment that can hold it.
        #expect(g.endHolding(100, old: 60, tailFree: 0) == 128 + 1 + 100)
        #expect(g.endHolding(10, old: 64, tailFree: 3) == 64 + 1 + 10, "a full last segment: the tail cannot grow")
        // Growth never ends inside a table, never below the target, never past the limit.
        #expect(g.growthEnd(target: 70, old: 60, stepUnits: 4, limit: 1000) == 70)
        #expect(g.growthEnd(target: 62, old: 60, stepUnits: 5, limit: 1000) == 64, "rounded down to the segment's end")
        #expect(g.growthEnd(target: 66, old: 64, stepUnits: 1, limit: 1000) == 66)
        #expect(g.growthEnd(target: 66, old: 60, stepUnits: 100, limit: 1000) == 160)
        #expect(g.growthEnd(target: 70, old: 60, stepUnits: 4, limit: 69) == nil)
        #expect(g.growthEnd(target: 64, old: 64, stepUnits: 1, limit: 1000) == 66, "a new segment gets a data unit")
    }

    @Test("a 64 MiB pool with a 1 TiB maximum: metadata ≤ 1 %, grown in place past 4 GiB, reopened and checked")
    func growPastFourGiB() throws {
        let path = dir.file("big.pool")
        let pool = try Pool.create(path: path, size: 64 << 20, layout: "big", options: PoolOptions(maxSize: 1 << 40))
        #expect(pool.maxSize >= 1 << 40 - (1 << 20))
        let small = pool.info
        #expect(Double(small.metadataBytes) <= 0.01 * Double(small.size), "\(small.metadataBytes) bytes of metadata in \(small.size)")
        // Grow by allocating 48 MiB objects (not zeroed: nothing is written but a tag at each end)
        // until the pool is past 4 GiB.
        var all: [PRawPointer] = []
        while pool.size <= 4 << 30 + 64 << 20 {
            let p = try pool.allocate(bytes: 48 << 20)
            let tag = UInt64(all.count) &* 0x9E37_79B9_7F4A_7C15
            try pool.store(tag, at: p.assumingType(UInt64.self))
            try pool.store(~tag, at: p.advanced(by: (48 << 20) - 8).assumingType(UInt64.self))
            all.append(p)
        }
        #expect(all.contains { $0.offset > 4 << 30 }, "objects live above 4 GiB")
        // Keep every 8th and the highest; free the rest (freed extents are punched out of the
        // file, so it becomes sparse).
        var kept: [(Int, PRawPointer)] = []
        for (i, p) in all.enumerated() {
            if i % 8 == 0 || i == all.count - 1 { kept.append((i, p)) } else { try pool.free(p) }
        }
        let n = all.count
        let big = pool.info
        #expect(big.size > 4 << 30)
        #expect(big.segments >= 8, "\(big.segments) segments")
        #expect(Double(big.metadataBytes) <= 0.01 * Double(big.size), "\(big.metadataBytes) bytes of metadata in \(big.size)")
        let report = try pool.check()
        #expect(report.isConsistent, "\(report.findings.prefix(3))")
        #expect(report.stats.unitTableBytes + big.heapOffset == big.metadataBytes)
        try pool.close()

        var st = stat()
        #expect(stat(path, &st) == 0)
        let fileBytes = Int(st.st_blocks) * 512
        let percent = 100 * Double(big.metadataBytes) / Double(big.size)
        print("grown to \(big.size >> 20) MiB in \(n) allocations: \(big.segments) segments, metadata \(big.metadataBytes >> 10) KiB"
              + " (\(percent) %), file blocks \(fileBytes >> 20) MiB")
        #expect(fileBytes < big.size / 2, "freed extents were punched: the file is sparse")

        let again = try Pool.open(path: path, layout: "big")
        #expect(again.size == big.size)
        #expect(try again.check().isConsistent)
        for (i, p) in kept {
            let tag = UInt64(i) &* 0x9E37_79B9_7F4A_7C15
            #expect(try again.load(p.assumingType(UInt64.self)) == tag)
            #expect(try again.load(p.advanced(by: (48 << 20) - 8).assumingType(UInt64.self)) == ~tag)
        }
        // Free everything: shrink gives the emptied segments back, tables included.
        for (_, p) in kept { try again.free(p) }
        let released = try again.shrink()
        #expect(released > 4 << 30)
        #expect(again.info.segments <= 2, "\(again.info.segments) segments after shrink")
        #expect(try again.check().isConsistent)
        try again.close()
    }

    @Test("an object larger than segment 0 grows the pool into a segment that can hold it; a crash image of it opens")
    func objectLargerThanFirstSegment() throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "seg", options: PoolOptions(maxSize: 64 << 20, laneCount: 2))
        let before = pool.size
        let p = try pool.allocate(bytes: 3 << 20, zeroed: true)
        #expect(pool.size > before + 3 << 20)
        try pool.store(UInt64(42), at: p.assumingType(UInt64.self))
        try pool.persist(p, count: 8)
        #expect(try pool.check().isConsistent)
        let image = pool.simulatedMedia!.durableImage()
        let reopened = try Pool.openSimulated(image: image, layout: "seg")
        #expect(try reopened.load(p.assumingType(UInt64.self)) == 42)
        #expect(try reopened.check().isConsistent)
        #expect(reopened.info.segments == pool.info.segments)
        // A pointer into a segment's table is refused like one outside the heap.
        let heap = pool.heap
        let k = heap.segments.segment(of: heap.units - 1)
        let table = PPointer<UInt64>(offset: UInt64(heap.unitOffset(heap.segments.start(k)) + 64))
        #expect(throws: PoolError.self) { try pool.store(UInt64(1), at: table) }
        #expect(throws: PoolError.self) { try pool.load(table) }
    }

    @Test("damage to the segment structure is refused at open and named by check")
    func damagedSegments() throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "seg", options: PoolOptions(maxSize: 64 << 20, laneCount: 2))
        _ = try pool.allocate(bytes: 3 << 20)
        let heap = pool.heap
        let image = pool.simulatedMedia!.durableImage()
        let k = heap.segments.segment(of: heap.units - 1)
        #expect(k >= 2)
        func damaged(_ unit: Int, _ entry: UnitEntry) -> [UInt8] {
            var copy = image
            copy.withUnsafeMutableBytes { $0.storeBytes(of: entry.raw, toByteOffset: heap.tableEntryOffset(unit), as: UInt64.self) }
            return copy
        }
        let s = heap.segments.start(k)
        // A segment start without its table; a table of the wrong size; a free extent across
        // the end of segment 0 (covering segment 1's table).
        for (what, image) in [
            ("no table", damaged(s, UnitEntry(kind: .free, length: min(heap.segments.end(k), heap.units) - s))),
            ("short table", damaged(s, UnitEntry(kind: .table, length: 1))),
            ("across a segment end", damaged(heap.segments.dataStart(0), UnitEntry(kind: .free, length: heap.segments.end(1) - heap.segments.dataStart(0)))),
        ] {
            let e = expectPoolError(.corrupted) { () throws -> Pool in try Pool.openSimulated(image: image, layout: "seg") }
            #expect(e?.message.contains("segment") == true, "\(what): \(e?.message ?? "")")
        }
        // check() of the live pool names the same damage.
        heap.bytes.setU64(heap.tableEntryOffset(s), UnitEntry(kind: .table, length: 1).raw)
        #expect(try pool.check().findings.contains { $0.contains("segment \(k)") })
    }
}
