// libFuzzer entry point, compiled together with the library's sources into one module (so the
// decoders are reachable without making them public). Fuzz/libfuzzer/run builds and runs it.
// PHEAP_FUZZ_TARGET selects the decoder:
//   header   PoolHeader.decode + HeaderSelection.select on two 256-byte header copies
//   redolog  LogRecord.forEachRecord (and a replay walk) of a lane log filled from the input, in a
//            64 KiB buffer laid out like a pool's first pages
//   btree    a B+ tree node (and its header's count and height) filled from the input, then the
//            deep check, a lookup and a scan through the public API
#if canImport(Glibc)
import Glibc
#endif

/// Writes a line to standard error.
func complain(_ s: String) {
    let b = Array((s + "\n").utf8)
    _ = b.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

enum FuzzTarget: String {
    case header, redolog, btree
    static let current: FuzzTarget = {
        guard let v = getenv("PHEAP_FUZZ_TARGET"), let t = FuzzTarget(rawValue: String(cString: v)) else {
            complain("set PHEAP_FUZZ_TARGET to header, redolog or btree")
            exit(2)
        }
        return t
    }()
}

// MARK: header

func fuzzHeader(_ input: UnsafeRawBufferPointer) {
    var primary = [UInt8](repeating: 0, count: Format.headerSize)
    var backup = [UInt8](repeating: 0, count: Format.headerSize)
    for i in 0..<min(input.count, 2 * Format.headerSize) {
        if i < Format.headerSize { primary[i] = input[i] } else { backup[i - Format.headerSize] = input[i] }
    }
    primary.withUnsafeBytes { p in
        backup.withUnsafeBytes { b in
            if case .success(let h) = PoolHeader.decode(p) { _ = h.units; _ = h.encode() }
            _ = try? HeaderSelection.select(primary: p, backup: input.count > Format.headerSize ? b : nil, path: nil)
        }
    }
}

// MARK: redo log

/// A 64 KiB buffer laid out like the start of a pool: the lanes at 0x3000, writable from 0x2000.
nonisolated(unsafe) let logBuffer = UnsafeMutableRawPointer.allocate(byteCount: 64 << 10, alignment: 64)

func fuzzRedoLog(_ input: UnsafeRawBufferPointer) {
    let base = logBuffer
    base.initializeMemory(as: UInt8.self, repeating: 0, count: 64 << 10)
    let lane = Format.laneRegionOffset
    // The input fills one lane (4 KiB: its log of records) and, past it, data a record may
    // extend into.
    let n = min(input.count, (64 << 10) - lane)
    if n > 0 { (base + lane).copyMemory(from: input.baseAddress!, byteCount: n) }
    let bytes = PoolBytes(base: base)
    let allowed = WritableRegions(ranges: [Format.statePageOffset..<(64 << 10)], laneOffset: lane, laneCount: 1)
    let start = lane + LaneLayout.log
    try? LogRecord.forEachRecord(bytes: bytes, start: start, limit: start + LaneLayout.logSize, retired: 0, allowed: allowed) { found in
        // A replay walk, as recovery makes (without writing).
        LogRecord.forEachEntry(bytes: bytes, at: found.at, total: found.total) { e in _ = e.targetBytes }
    }
}

// MARK: B+ tree node

struct TreeRoot: BitwiseCopyable { var map: PersistentSortedDictionary<String, String>.Ref }

/// One simulated pool for every input: a map whose header and single node the input overwrites.
struct TreeFixture: @unchecked Sendable {
    let pool: Pool
    let map: PersistentSortedDictionary<String, String>
    let node: PRawPointer
    let nodeBytes: Int

    static let shared: TreeFixture = {
        do {
            let pool = try Pool.createSimulated(size: 1 << 20, layout: "libfuzzer")
            let root = try pool.root(TreeRoot.self)
            let map = try PersistentSortedDictionary<String, String>.open(pool, at: root.field(\.map))
            for i in 0..<20 { try map.updateValue("value \(i) " + String(repeating: "v", count: i), forKey: "key:\(i)") }
            let header = try pool.load(map.ref)
            return TreeFixture(pool: pool, map: map, node: header.root, nodeBytes: BTree.nodeSize)
        } catch {
            complain("fixture: \(error)")
            exit(2)
        }
    }()
}

func fuzzTree(_ input: UnsafeRawBufferPointer) {
    let f = TreeFixture.shared
    let p = f.pool
    // Header: count and height from the first 16 bytes; the node from the rest.
    var words = (0, 0)
    withUnsafeMutableBytes(of: &words) { w in for i in 0..<min(16, input.count) { w[i] = input[i] } }
    let node = p.bytes.pointer(Int(f.node.offset))
    node.initializeMemory(as: UInt8.self, repeating: 0, count: f.nodeBytes)
    if input.count > 16 { node.copyMemory(from: input.baseAddress! + 16, byteCount: min(input.count - 16, f.nodeBytes)) }
    p.bytes.setU64(Int(f.map.ref.offset) + 8, UInt64(bitPattern: Int64(words.0)))
    p.bytes.setU64(Int(f.map.ref.offset) + 16, UInt64(bitPattern: Int64(words.1)))
    _ = try? f.map.validate()
    _ = try? f.map.count
    _ = try? f.map.value(forKey: "key:7")
    _ = try? f.map.scan(limit: 64)
    var it = f.map.makeIterator()
    var n = 0
    while n < 300, (try? it.next()) != nil { n += 1 }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    switch FuzzTarget.current {
    case .header: fuzzHeader(input)
    case .redolog: fuzzRedoLog(input)
    case .btree: fuzzTree(input)
    }
    return 0
}
