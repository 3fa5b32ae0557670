/// A binary min-heap of unit indexes (so: ordered by address), with position tracking so any
/// element can be removed in O(log n) — needed when a freed extent merges with a neighbour
/// that sits somewhere inside a heap.
///
/// Positions live in a map shared by all heaps of one kind (`positions[unit]` = index + 1,
/// 0 = in no heap): a unit is in at most one heap at a time. The caller serialises access
/// (each heap is guarded by its owner's lock).
///
///     invariant: for every i > 0, storage[(i - 1) / 2] < storage[i]
///     invariant: positions[storage[i]] == i + 1 for every i < count
///
/// - Complexity: `insert`, `remove`, `popMin` O(log n); `min` O(1).
@_spi(Core) import PersistentHeapCore

struct UnitHeap {
    /// `storage[0..<count]` is the heap; the rest is spare capacity (a `FixedArray` — no
    /// uniqueness or bounds checks on the O(log n) paths; indexes are below `count` by the
    /// invariants above).
    private var storage: FixedArray<UInt32>
    private(set) var count = 0

    init(capacity: Int = 16) { storage = .allocate(count: Swift.max(capacity, 4), repeating: 0) }

    /// Frees the storage. The heap must not be used afterwards.
    func deallocate() { storage.deallocate() }

    var isEmpty: Bool { count == 0 }

    /// The lowest unit, if any.
    var min: UInt32? { count > 0 ? storage[0] : nil }

    /// Element at heap index `i` (for invariant checks and iteration).
    subscript(i: Int) -> UInt32 {
        // Invariant of the caller's loop (`0..<count`); no persisted value reaches it.
        precondition(i >= 0 && i < count)
        return storage[i]
    }

    private mutating func append(_ unit: UInt32) {
        if count == storage.count { storage = storage.reallocated(count: storage.count * 2, keeping: count, filler: 0) }
        storage[count] = unit
        count += 1
    }

    /// Inserts `unit`, which must be in no heap.
    mutating func insert(_ unit: UInt32, positions: FixedArray<Int32>) {
        assert(positions[Int(unit)] == 0, "unit \(unit) is already in a heap")
        append(unit)
        positions[Int(unit)] = Int32(count)
        siftUp(count - 1, positions)
    }

    /// Removes `unit`, which must be in this heap.
    mutating func remove(_ unit: UInt32, positions: FixedArray<Int32>) {
        let i = Int(positions[Int(unit)]) - 1
        // Invariant of the volatile indexes (built by `Heap.load` from validated entries).
        precondition(i >= 0 && i < count && storage[i] == unit, "unit \(unit) is not in this heap")
        positions[Int(unit)] = 0
        count -= 1
        let last = storage[count]
        if i == count { return }
        // Invariant: slot i is a hole; fill it with the last element and restore order.
        storage[i] = last
        positions[Int(last)] = Int32(i + 1)
        if i > 0 && storage[(i - 1) / 2] > last { siftUp(i, positions) } else { siftDown(i, positions) }
    }

    /// Removes and returns the lowest unit.
    mutating func popMin(positions: FixedArray<Int32>) -> UInt32? {
        guard let m = min else { return nil }
        remove(m, positions: positions)
        return m
    }

    /// Checks both invariants; returns a description of the first violation.
    func invariantViolation(positions: FixedArray<Int32>) -> String? {
        for i in 0..<count {
            if i > 0 && storage[(i - 1) / 2] >= storage[i] { return "heap order broken at index \(i)" }
            if positions[Int(storage[i])] != Int32(i + 1) { return "position of unit \(storage[i]) is stale" }
        }
        return nil
    }

    private mutating func siftUp(_ start: Int, _ positions: FixedArray<Int32>) {
        var i = start
        let x = storage[i]
        while i > 0 {
            let parent = (i - 1) / 2
            let p = storage[parent]
            if p <= x { break }
            storage[i] = p
            positions[Int(p)] = Int32(i + 1)
            i = parent
        }
        storage[i] = x
        positions[Int(x)] = Int32(i + 1)
    }

    private mutating func siftDown(_ start: Int, _ positions: FixedArray<Int32>) {
        var i = start
        let x = storage[i]
        while true {
            let l = 2 * i + 1
            if l >= count { break }
            var c = l
            if l + 1 < count && storage[l + 1] < storage[l] { c = l + 1 }
            let child = storage[c]
            if x <= child { break }
            storage[i] = child
            positions[Int(child)] = Int32(i + 1)
            i = c
        }
        storage[i] = x
        positions[Int(x)] = Int32(i + 1)
    }
}
