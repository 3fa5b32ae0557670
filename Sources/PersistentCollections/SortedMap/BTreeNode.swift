// The B+ tree's node format and the validated reads every operation makes.
//
// A node is one 4 KiB block: a header line, an *order* array sorted by key, and the entries
// themselves — keys and values inline, packed from the end of the node downwards (a slotted
// page, as in LMDB). A search scans the order array's key prefixes (one cache line holds eight)
// and reads an entry only where prefixes tie.
//
//     0    kind       UInt8    1 leaf, 2 internal
//     1    reserved   UInt8    0
//     2    count      UInt16   entries
//     4    dataStart  UInt16   the lowest entry byte: entries live in [dataStart, 4096)
//     6    garbage    UInt16   bytes of dead entries in [dataStart, 4096) (removed, replaced)
//     8    link       UInt64   leaf: the next leaf; internal: the leftmost child
//     16   prev       UInt64   leaf: the previous leaf (0 for the first); internal: 0
//     24   reserved   40 bytes of 0
//     64   order      [UInt64 × count]  in key order: key prefix (48 bits) << 16 | entry offset
//     ...  free space
//     entry (at an 8-aligned offset ≥ dataStart):
//          0  keyLength  UInt16
//          2  info       UInt16   bit 15: the value lives out of line; bits 0..<15: inline value bytes
//          4  key        keyLength bytes
//             value      inline: its bytes; out of line: length UInt64, block PRawPointer (the
//                        block holds the length again, then the bytes); internal: child PRawPointer
//          padded to 8 bytes
//
// Every field read from a node is untrusted (the pool may be damaged): the kind, count,
// dataStart and garbage are checked when the node is read; every entry offset and length when
// the entry is read — before any arithmetic on them.

@_spi(Containers) import PersistentHeap

/// Node geometry and limits.
enum BTree {
    static let nodeSize = 4096
    static let headerSize = 64
    /// The most entries a node can hold (8 order bytes + 8 entry bytes each at least).
    static let maxCount = (nodeSize - headerSize) / 16
    /// Keys longer than this are refused (LMDB's default limit is 511 bytes).
    static let maxKeyBytes = 480
    /// A leaf entry (header, key, value) of at most this many bytes keeps its value inline;
    /// a larger value goes to a block of its own (16 bytes inline).
    static let maxInlineEntry = 512
    static let outOfLineFlag: UInt16 = 0x8000
    static let outOfLineBytes = 16
    /// Bytes of a node brought in at once when it is read (header and order array lines).
    static let prefetchBytes = 512
    /// Bytes a node offers to entries and their order slots.
    static let capacity = nodeSize - headerSize
    /// Below this many used bytes (order slots and live entries), a node other than the root is
    /// merged with a sibling or takes entries from it.
    static let minFill = capacity / 4

    /// Bytes an entry takes in a node (header, key and value, padded to 8).
    @inline(__always)
    static func entrySize(keyBytes k: Int, valueBytes v: Int) -> Int { (4 + k + v + 7) & ~7 }

    /// The 48-bit order prefix of encoded key bytes: the first 6 bytes, big-endian, zero padded.
    @inline(__always)
    static func prefix(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var p: UInt64 = 0
        for i in 0..<6 { p = p << 8 | UInt64(i < bytes.count ? bytes[i] : 0) }
        return p
    }

    /// The same for key bytes inside a view.
    @inline(__always)
    static func prefix(_ view: ByteView, at offset: Int, length: Int) -> UInt64 {
        var p: UInt64 = 0
        for i in 0..<6 { p = p << 8 | UInt64(i < length ? view.load(UInt8.self, at: offset + i) : 0) }
        return p
    }
}

/// One entry of a node, validated: its offset, key and value placement inside the node.
struct BEntry {
    /// Offset of the entry in its node.
    let offset: Int
    let keyLength: Int
    /// Bytes of the value part in the node (inline bytes, 16 for out of line, 8 for a child).
    let valueLength: Int
    let outOfLine: Bool

    @inline(__always) var keyOffset: Int { offset + 4 }
    @inline(__always) var valueOffset: Int { offset + 4 + keyLength }
    @inline(__always) var size: Int { BTree.entrySize(keyBytes: keyLength, valueBytes: valueLength) }
}

/// A node read from the pool (as the caller sees it: directly, or through its transaction),
/// with its header validated. Never read again through the same `BNode` after it was changed.
struct BNode {
    let offset: Int
    let view: ByteView
    let isLeaf: Bool
    let count: Int
    let dataStart: Int
    let garbage: Int

    var pointer: PRawPointer { PRawPointer(offset: UInt64(offset)) }
    var link: PRawPointer { PRawPointer(offset: view.load(UInt64.self, at: 8)) }
    var prev: PRawPointer { PRawPointer(offset: view.load(UInt64.self, at: 16)) }
    /// Bytes free between the order array and the entries.
    var freeBytes: Int { dataStart - BTree.headerSize - 8 * count }
    /// Bytes in use: order slots and live entries.
    var usedBytes: Int { 8 * count + (BTree.nodeSize - dataStart - garbage) }

    /// Order entry `i` (`i < count`).
    @inline(__always) func order(_ i: Int) -> UInt64 { view.load(UInt64.self, at: BTree.headerSize + 8 * i) }

    /// Entry `i` in key order, validated: inside the node's entry area, its lengths bounded.
    @inline(__always)
    func entry(_ i: Int, _ pool: Pool) throws -> BEntry {
        let o = Int(order(i) & 0xffff)
        guard o >= dataStart, o & 7 == 0, o <= BTree.nodeSize - 4 else { throw bad(pool, "entry \(i) at +\(o) lies outside the entry area") }
        let k = Int(view.load(UInt16.self, at: o))
        let info = view.load(UInt16.self, at: o + 2)
        let ool = info & BTree.outOfLineFlag != 0
        let v = isLeaf ? (ool ? BTree.outOfLineBytes : Int(info & 0x7fff)) : 8
        guard k <= BTree.maxKeyBytes, 4 + k + v <= BTree.nodeSize - o, isLeaf || info == 8 else {
            throw bad(pool, "entry \(i) at +\(o) claims a \(k)-byte key and a \(v)-byte value")
        }
        return BEntry(offset: o, keyLength: k, valueLength: v, outOfLine: ool)
    }

    /// The key bytes of `e`.
    @inline(__always) func key(_ e: BEntry) -> ByteView { view.slice(at: e.keyOffset, count: e.keyLength) }

    /// The child of internal entry `e`.
    @inline(__always) func child(_ e: BEntry) -> PRawPointer { PRawPointer(offset: view.load(UInt64.self, at: e.valueOffset)) }

    /// Child `i` of an internal node: 0 is the leftmost (`link`), `i` the child of entry `i - 1`.
    func child(at i: Int, _ pool: Pool) throws -> PRawPointer { i == 0 ? link : child(try entry(i - 1, pool)) }

    func bad(_ pool: Pool, _ problem: String) -> PoolError { corrupted(pool, "B+ tree node", at: offset, problem) }
}

/// How a sorted map reads its nodes: through the calling thread's transaction when one is
/// running (so that it sees its own writes), directly otherwise.
struct BReader {
    let pool: Pool
    let tx: Transaction?

    init(_ pool: Pool) { self.pool = pool; tx = pool.currentTransaction }
    init(_ pool: Pool, _ tx: Transaction) { self.pool = pool; self.tx = tx }

    /// A validated view of `count` bytes at `p`: inside the heap, 8-byte aligned.
    @inline(__always)
    func view(_ p: PRawPointer, count: Int, _ what: @autoclosure () -> String) throws -> ByteView {
        do {
            if let tx { return try tx.readView(of: p, count: count) }
            return try pool.readView(p, count: count)
        } catch {
            if error.code == .closed || error.code == .transactionMisuse { throw error }
            throw corrupted(pool, what(), at: Int(truncatingIfNeeded: p.offset), "\(count) bytes do not lie inside the heap")
        }
    }

    /// The node at `p`, its header validated.
    @inline(__always)
    func node(_ p: PRawPointer) throws -> BNode {
        guard !p.isNull else { throw PoolError(.corrupted, "a B+ tree node pointer is null", path: pool.path) }
        let v = try view(p, count: BTree.nodeSize, "B+ tree node")
        // The header and the start of the order array (56 slots): their misses overlap instead
        // of following one another down the binary search.
        v.prefetch(0, count: BTree.prefetchBytes)
        let head = v.load(UInt64.self, at: 0)
        let kind = UInt8(truncatingIfNeeded: head), count = Int(UInt16(truncatingIfNeeded: head >> 16))
        let dataStart = Int(UInt16(truncatingIfNeeded: head >> 32)), garbage = Int(UInt16(truncatingIfNeeded: head >> 48))
        let o = Int(truncatingIfNeeded: p.offset)
        guard kind == 1 || kind == 2 else { throw corrupted(pool, "B+ tree node", at: o, "unknown kind \(kind)") }
        guard count <= BTree.maxCount, dataStart >= BTree.headerSize + 8 * count, dataStart <= BTree.nodeSize,
              garbage <= BTree.nodeSize - dataStart else {
            throw corrupted(pool, "B+ tree node", at: o, "count \(count), data start \(dataStart), garbage \(garbage) are impossible")
        }
        return BNode(offset: o, view: v, isLeaf: kind == 1, count: count, dataStart: dataStart, garbage: garbage)
    }

    /// The bytes of an out-of-line value: a live-looking block holding `length`, then the bytes.
    func outOfLineValue(_ n: BNode, _ e: BEntry) throws -> ByteView {
        let length = n.view.load(UInt64.self, at: e.valueOffset)
        let block = PRawPointer(offset: n.view.load(UInt64.self, at: e.valueOffset + 8))
        guard length <= UInt64(pool.size), length > 0 else {
            throw corrupted(pool, "B+ tree node", at: n.offset, "an out-of-line value claims \(length) bytes")
        }
        let v = try view(block, count: 8 + Int(length), "B+ tree value block")
        guard v.load(UInt64.self, at: 0) == length else {
            throw corrupted(pool, "B+ tree value block", at: Int(truncatingIfNeeded: block.offset), "its length disagrees with its entry's")
        }
        return v.slice(at: 8, count: Int(length))
    }

    /// The value bytes of leaf entry `e` (inline, or its block's).
    @inline(__always)
    func value(_ n: BNode, _ e: BEntry) throws -> ByteView {
        e.outOfLine ? try outOfLineValue(n, e) : n.view.slice(at: e.valueOffset, count: e.valueLength)
    }
}
