import PersistentHeap

/// A hash map in a pool: open addressing with linear probing and incremental resize.
///
/// Keys are ``PersistentKey`` types (hashed with ``PersistentKey/persistentHash(_:)``, the same in
/// every process), values ``PersistentValue`` types — including other containers' `Ref`s, so a
/// dictionary of arrays works. Every change is a failure-atomic transaction (joining the
/// caller's if one is running).
///
/// Growing never stops the world: when the table is ¾ full a table twice as large is allocated,
/// and each later change moves up to 16 entries from the old table, which is freed once empty;
/// lookups consult both meanwhile.
///
/// Reads throw (`PoolError.Code.corrupted` for a damaged pool, never a crash), so the map is
/// not a Swift `Sequence`: iterate with ``forEach(_:)``, an ``Iterator`` or ``entries()`` (a copy).
///
/// Thread safety: concurrent reads are safe; changes must not race with other users of the map
/// (guard it with a `PMutex`).
public struct PersistentDictionary<Key: PersistentKey, Value: PersistentValue>: PersistentContainer {
    /// The persistent header.
    @frozen
    public struct Header: BitwiseCopyable {
        /// The bucket table.
        public var table: PRawPointer
        /// Buckets in `table` (a power of two).
        public var capacity: Int
        /// Entries in the map.
        public var count: Int
        /// Full and tombstone buckets of `table`.
        public var used: Int
        /// The table being migrated away from, or null.
        public var old: PRawPointer
        /// Buckets in `old`.
        public var oldCapacity: Int
        /// Buckets of `old` already migrated (those below this index are ignored).
        public var moved: Int
    }

    /// A bucket: `tag` is 0 (empty), 1 (tombstone) or the key's hash with the top bit set.
    struct Bucket: BitwiseCopyable {
        var tag: UInt64
        var key: Key.Stored
        var value: Value.Stored
    }

    /// A persistent reference to a map (8 bytes; null = none).
    public typealias Ref = PPointer<Header>

    /// The pool holding the map.
    public let pool: Pool
    /// Where the header is.
    public let ref: Ref

    static var stride: Int { MemoryLayout<Bucket>.stride }
    static var migrationStep: Int { 16 }

    /// A handle on the map whose header is at `ref`.
    public init(_ pool: Pool, ref: Ref) {
        self.pool = pool
        self.ref = ref
    }

    @inline(__always) static func tag(_ hash: UInt64) -> UInt64 { hash | 1 << 63 }

    func bucket(_ table: PRawPointer, _ i: Int) -> PPointer<Bucket> {
        PPointer(offset: table.offset &+ UInt64(i * Self.stride))
    }

    /// The header, validated: power-of-two capacities whose tables fit in the pool, a table
    /// pointer exactly when there is a capacity, `moved ≤ oldCapacity`, `used ≤ capacity`, and a
    /// count no larger than the buckets that can hold entries.
    func header(_ r: ContainerReader) throws -> Header {
        let h = try r.load(ref)
        let maxBuckets = pool.size / Self.stride
        func table(_ capacity: Int, _ p: PRawPointer) -> Bool {
            capacity >= 0 && capacity <= maxBuckets && capacity & (capacity &- 1) == 0 && p.isNull == (capacity == 0)
        }
        guard table(h.capacity, h.table), table(h.oldCapacity, h.old), h.moved >= 0, h.moved <= h.oldCapacity,
              h.used >= 0, h.used <= h.capacity, h.count >= 0, h.count <= h.capacity + (h.oldCapacity - h.moved) else {
            throw corrupted(pool, "dictionary header", at: Int(truncatingIfNeeded: ref.offset),
                            "capacity \(h.capacity), count \(h.count), used \(h.used), old capacity \(h.oldCapacity), moved \(h.moved)")
        }
        return h
    }

    /// Where `key` is: (in the old table?, index), or nil. Each probe sequence is bounded by its
    /// table's capacity.
    func find(_ key: Key, _ hash: UInt64, _ h: Header, _ r: ContainerReader) throws -> (old: Bool, index: Int)? {
        let t = Self.tag(hash)
        if h.capacity > 0 {
            var i = Int(truncatingIfNeeded: hash & UInt64(h.capacity - 1))
            for _ in 0..<h.capacity {
                let tag = try r.load(bucket(h.table, i).field(\.tag))
                if tag == 0 { break }
                if tag == t, try Key.compare(key, try r.load(bucket(h.table, i).field(\.key)), in: pool) == 0 { return (false, i) }
                i = (i + 1) & (h.capacity - 1)
            }
        }
        if h.oldCapacity > 0 {
            var i = Int(truncatingIfNeeded: hash & UInt64(h.oldCapacity - 1))
            for _ in 0..<h.oldCapacity {
                let tag = try r.load(bucket(h.old, i).field(\.tag))
                if tag == 0 { break }
                if i >= h.moved, tag == t, try Key.compare(key, try r.load(bucket(h.old, i).field(\.key)), in: pool) == 0 { return (true, i) }
                i = (i + 1) & (h.oldCapacity - 1)
            }
        }
        return nil
    }

    // MARK: Reading

    /// The number of entries.
    public var count: Int {
        get throws { try header(ContainerReader(pool)).count }
    }

    /// Whether the map is empty.
    public var isEmpty: Bool {
        get throws { try count == 0 }
    }

    /// The value for `key`, or nil.
    /// - Complexity: O(1) expected.
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func value(forKey key: Key) throws -> Value? {
        let r = ContainerReader(pool)
        let h = try header(r)
        guard let (old, i) = try find(key, Key.persistentHash(key), h, r) else { return nil }
        return try Value.load(try r.load(bucket(old ? h.old : h.table, i).field(\.value)), from: pool)
    }

    /// The value for `key`, or nil (see ``value(forKey:)``).
    public subscript(key: Key) -> Value? {
        get throws { try value(forKey: key) }
    }

    /// Calls `body` with every (key, value), in no particular order; stops at the first error
    /// (from `body` or a damaged map) and rethrows it. Do not change the map inside `body`.
    public func forEach(_ body: (Key, Value) throws -> Void) throws {
        var it = makeIterator()
        while let (k, v) = try it.next() { try body(k, v) }
    }

    /// Every (key, value), in no particular order (a copy).
    public func entries() throws -> [(key: Key, value: Value)] {
        var out: [(key: Key, value: Value)] = []
        try forEach { out.append(($0, $1)) }
        return out
    }

    /// An iterator over the entries whose `next()` throws for a damaged map. The map must not
    /// change while it is used.
    public struct Iterator {
        let map: PersistentDictionary
        var inOld = false
        var index = 0
        var started = false
        var h: Header? = nil

        /// The next (key, value), or nil after the last.
        public mutating func next() throws -> (key: Key, value: Value)? {
            let r = ContainerReader(map.pool)
            if h == nil { h = try map.header(r) }
            guard let h else { return nil }
            while true {
                if !inOld {
                    if index >= h.capacity { inOld = true; index = h.moved; continue }
                } else if index >= h.oldCapacity {
                    return nil
                }
                let b = try r.load(map.bucket(inOld ? h.old : h.table, index))
                index += 1
                if b.tag > 1 { return (try Key.load(b.key, from: map.pool), try Value.load(b.value, from: map.pool)) }
            }
        }
    }

    /// An iterator over the entries: `var it = map.makeIterator(); while let (k, v) = try it.next() { … }`.
    public func makeIterator() -> Iterator { Iterator(map: self) }

    // MARK: Deep check

    /// Walks the whole map: the header, both tables (live allocations large enough for their
    /// capacities), every bucket (a tag that matches its key's hash, reachable from its home
    /// bucket without crossing an empty one, no key twice), the counts, and what each key and
    /// value owns (strings, nested containers).
    /// Records what it finds in `check` (shared with enclosing containers); ``validate()`` returns it.
    public func validate(into check: inout ContainerCheck) {
        guard check.firstVisit(ref.raw, "dictionary header"),
              check.checkBlock(ref.raw, bytes: MemoryLayout<Header>.size, "dictionary header") else { return }
        check.catching("dictionary at \(ref.offset)") { check in
            let r = ContainerReader(pool)
            let h = try header(r)
            var full = 0, used = 0
            var hashes: [UInt64: [(old: Bool, index: Int)]] = [:]
            func table(_ p: PRawPointer, _ capacity: Int, from: Int, old: Bool, _ check: inout ContainerCheck) throws {
                guard capacity > 0 else { return }
                let name = old ? "dictionary old table" : "dictionary table"
                guard check.firstVisit(p, name), check.checkBlock(p, bytes: capacity * Self.stride, name) else { return }
                for i in 0..<capacity {
                    let b = try r.load(bucket(p, i))
                    if b.tag == 0 { continue }
                    if !old { used += 1 }
                    guard b.tag > 1, i >= from else { continue }
                    full += 1
                    let hash = try Key.persistentHash(stored: b.key, in: pool)
                    if Self.tag(hash) != b.tag { check.note("\(name) bucket \(i): tag does not match its key's hash"); continue }
                    // Reachable by a probe from its home bucket: no empty bucket in between.
                    var j = Int(truncatingIfNeeded: hash & UInt64(capacity - 1)), reachable = true
                    while j != i {
                        if try r.load(bucket(p, j).field(\.tag)) == 0 { reachable = false; break }
                        j = (j + 1) & (capacity - 1)
                    }
                    if !reachable { check.note("\(name) bucket \(i): not reachable from its home bucket") }
                    hashes[hash, default: []].append((old, i))
                    Key.validate(b.key, in: &check)
                    Value.validate(b.value, in: &check)
                }
            }
            try table(h.table, h.capacity, from: 0, old: false, &check)
            try table(h.old, h.oldCapacity, from: h.moved, old: true, &check)
            if used != h.used { check.note("dictionary at \(ref.offset): \(used) used buckets, header says \(h.used)") }
            if full != h.count { check.note("dictionary at \(ref.offset): \(full) entries, header says \(h.count)") }
            // No key twice (in either table).
            for (_, places) in hashes where places.count > 1 {
                for a in 0..<places.count {
                    for b in (a + 1)..<places.count {
                        let ka = try r.load(bucket(places[a].old ? h.old : h.table, places[a].index).field(\.key))
                        let k = try Key.load(ka, from: pool)
                        let kb = try r.load(bucket(places[b].old ? h.old : h.table, places[b].index).field(\.key))
                        if try Key.compare(k, kb, in: pool) == 0 { check.note("dictionary at \(ref.offset): a key is stored twice") }
                    }
                }
            }
        }
    }

    // MARK: Changing

    /// Puts `b` into the first empty or tombstone bucket of its probe sequence in `table`.
    private func place(_ tx: Transaction, _ r: ContainerReader, _ b: Bucket, _ h: inout Header) throws {
        var i = Int(truncatingIfNeeded: b.tag & UInt64(h.capacity - 1))
        for _ in 0..<h.capacity {
            let tag = try r.load(bucket(h.table, i).field(\.tag))
            if tag <= 1 {
                if tag == 0 { h.used += 1 }
                try tx.write(b, to: bucket(h.table, i))
                return
            }
            i = (i + 1) & (h.capacity - 1)
        }
        throw corrupted(pool, "dictionary table", at: Int(truncatingIfNeeded: h.table.offset), "no free bucket although the header counts \(h.used) of \(h.capacity) used")
    }

    /// Moves up to `limit` buckets from the old table; frees it when done.
    private func migrate(_ tx: Transaction, _ r: ContainerReader, _ h: inout Header, limit: Int) throws {
        guard !h.old.isNull else { return }
        let end = Swift.min(h.oldCapacity, h.moved + limit)
        for i in h.moved..<end {
            let b = try r.load(bucket(h.old, i))
            if b.tag > 1 { try place(tx, r, b, &h) }
        }
        h.moved = end
        if h.moved == h.oldCapacity {
            try tx.free(h.old)
            h.old = .null
            h.oldCapacity = 0
            h.moved = 0
        }
    }

    /// Starts a resize when one more entry would pass ¾ load (finishing a running one first).
    private func makeRoom(_ tx: Transaction, _ r: ContainerReader, _ h: inout Header) throws {
        guard (h.used + 1) * 4 > h.capacity * 3 else { return }
        if !h.old.isNull { try migrate(tx, r, &h, limit: .max) }
        guard (h.used + 1) * 4 > h.capacity * 3 else { return }
        var capacity = 16
        while capacity < (h.count + 1) * 2 { capacity *= 2 }
        let table = try tx.allocate(bytes: capacity * Self.stride, alignment: 8, zeroed: true)
        if h.capacity > 0 {
            h.old = h.table
            h.oldCapacity = h.capacity
            h.moved = 0
        }
        h.table = table
        h.capacity = capacity
        h.used = 0
    }

    /// Sets the value for `key`; returns the previous value, if any. One transaction.
    /// - Complexity: O(1) expected (plus up to 16 migrated entries while resizing).
    @discardableResult
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func updateValue(_ value: Value, forKey key: Key) throws -> Value? {
        try pool.transaction { tx -> Value? in
            let r = ContainerReader(pool, tx)
            var h = try header(r)
            try migrate(tx, r, &h, limit: Self.migrationStep)
            let hash = Key.persistentHash(key)
            var previous: Value?
            if let (old, i) = try find(key, hash, h, r) {
                let p = bucket(old ? h.old : h.table, i)
                let b = try r.load(p)
                previous = try Value.load(b.value, from: pool)
                try Value.release(b.value, in: tx)
                let stored = try Value.store(value, in: tx)
                if old {
                    // Move it to the new table now (the old bucket becomes a tombstone).
                    try tx.write(1, to: p.field(\.tag))
                    try makeRoom(tx, r, &h)
                    try place(tx, r, Bucket(tag: b.tag, key: b.key, value: stored), &h)
                } else {
                    try tx.write(stored, to: p.field(\.value))
                }
            } else {
                try makeRoom(tx, r, &h)
                try place(tx, r, Bucket(tag: Self.tag(hash), key: try Key.store(key, in: tx), value: try Value.store(value, in: tx)), &h)
                h.count += 1
            }
            try tx.write(h, to: ref)
            return previous
        }
    }

    /// Removes `key`; returns its value, if it had one. One transaction.
    @discardableResult
    @_specialize(where Key == String, Value == String)
    @_specialize(where Key == Int, Value == Int)
    public func removeValue(forKey key: Key) throws -> Value? {
        try pool.transaction { tx -> Value? in
            let r = ContainerReader(pool, tx)
            var h = try header(r)
            try migrate(tx, r, &h, limit: Self.migrationStep)
            guard let (old, i) = try find(key, Key.persistentHash(key), h, r) else {
                try tx.write(h, to: ref)
                return nil
            }
            let p = bucket(old ? h.old : h.table, i)
            let b = try r.load(p)
            let previous = try Value.load(b.value, from: pool)
            guard h.count > 0 else { throw corrupted(pool, "dictionary header", at: Int(truncatingIfNeeded: ref.offset), "count 0 but an entry was found") }
            try Key.release(b.key, in: tx)
            try Value.release(b.value, in: tx)
            try tx.write(1, to: p.field(\.tag))
            h.count -= 1
            try tx.write(h, to: ref)
            return previous
        }
    }

    /// Frees every entry, both tables and the header; if `slot` is given, sets it to null in the
    /// same transaction. The handle must not be used afterwards.
    public func destroy(unlinking slot: PPointer<Ref>? = nil) throws {
        try pool.transaction { tx in
            let r = ContainerReader(pool, tx)
            let h = try header(r)
            func release(_ table: PRawPointer, _ capacity: Int, from: Int) throws {
                for i in from..<capacity {
                    let b = try r.load(bucket(table, i))
                    if b.tag > 1 { try Key.release(b.key, in: tx); try Value.release(b.value, in: tx) }
                }
                try tx.free(table)
            }
            if h.capacity > 0 { try release(h.table, h.capacity, from: 0) }
            if !h.old.isNull { try release(h.old, h.oldCapacity, from: h.moved) }
            try tx.free(ref)
            if let slot { try tx.write(.null, to: slot) }
        }
    }
}

extension PersistentDictionary.Header: PersistentValue, ContainerHeader {
    static func validateContainer(at ref: PRawPointer, in check: inout ContainerCheck) {
        PersistentDictionary(check.pool, ref: ref.assumingType(Self.self)).validate(into: &check)
    }
}
