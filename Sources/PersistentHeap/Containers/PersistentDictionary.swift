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
/// Thread safety: concurrent reads are safe; changes must not race with other users of the map
/// (guard it with a ``PMutex``).
public struct PersistentDictionary<Key: PersistentKey, Value: PersistentValue>: Sequence {
    /// The persistent header.
    @frozen
    public struct Header: BitwiseCopyable {
        public var table: PRawPointer
        public var capacity: Int
        public var count: Int
        /// Full and tombstone buckets of `table`.
        public var used: Int
        /// The table being migrated away from, or null.
        public var old: PRawPointer
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

    /// The map `slot` refers to, created (empty) and linked into `slot` atomically if null.
    public static func open(_ pool: Pool, at slot: PPointer<Ref>) throws -> Self {
        Self(pool, ref: try pool.openContainerHeader(Header.self, at: slot))
    }

    /// A new empty map allocated in `tx` (link its ``ref`` somewhere in the same transaction).
    public static func create(in tx: Transaction) throws -> Self {
        Self(tx.pool, ref: try tx.allocate(Header.self, zeroed: true))
    }

    @inline(__always) static func tag(_ hash: UInt64) -> UInt64 { hash | 1 << 63 }

    func bucket(_ table: PRawPointer, _ i: Int) -> PPointer<Bucket> {
        PPointer(offset: table.offset + UInt64(i * Self.stride))
    }

    func header(_ r: ContainerReader) throws -> Header {
        let h = try r.load(ref)
        guard h.capacity >= 0, h.capacity & (h.capacity &- 1) == 0, h.oldCapacity & (h.oldCapacity &- 1) == 0,
              h.count >= 0, h.moved >= 0, h.moved <= h.oldCapacity, h.capacity == 0 || !h.table.isNull else {
            throw PoolError(.corrupted, "dictionary header at \(ref) is inconsistent", path: pool.path)
        }
        return h
    }

    /// Where `key` is: (in the old table?, index), or nil.
    func find(_ key: Key, _ hash: UInt64, _ h: Header, _ r: ContainerReader) throws -> (old: Bool, index: Int)? {
        let t = Self.tag(hash)
        if h.capacity > 0 {
            var i = Int(hash & UInt64(h.capacity - 1))
            for _ in 0..<h.capacity {
                let tag = try r.load(bucket(h.table, i).field(\.tag))
                if tag == 0 { break }
                if tag == t, try Key.compare(key, try r.load(bucket(h.table, i).field(\.key)), in: pool) == 0 { return (false, i) }
                i = (i + 1) & (h.capacity - 1)
            }
        }
        if !h.old.isNull {
            var i = Int(hash & UInt64(h.oldCapacity - 1))
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
        do { return try header(ContainerReader(pool)).count } catch { containerFailure(error) }
    }

    /// Whether the map is empty.
    public var isEmpty: Bool { count == 0 }

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

    /// The value for `key`, or nil (traps if the pool is damaged; see ``value(forKey:)``).
    public subscript(key: Key) -> Value? {
        do { return try value(forKey: key) } catch { containerFailure(error) }
    }

    /// Every (key, value), in no particular order.
    public func entries() throws -> [(key: Key, value: Value)] {
        let r = ContainerReader(pool)
        let h = try header(r)
        var out: [(key: Key, value: Value)] = []
        func collect(_ table: PRawPointer, _ capacity: Int, from: Int) throws {
            for i in from..<capacity {
                let b = try r.load(bucket(table, i))
                if b.tag > 1 { out.append((try Key.load(b.key, from: pool), try Value.load(b.value, from: pool))) }
            }
        }
        if h.capacity > 0 { try collect(h.table, h.capacity, from: 0) }
        if !h.old.isNull { try collect(h.old, h.oldCapacity, from: h.moved) }
        return out
    }

    public func makeIterator() -> Array<(key: Key, value: Value)>.Iterator {
        do { return try entries().makeIterator() } catch { containerFailure(error) }
    }

    // MARK: Changing

    /// Puts `b` into the first empty or tombstone bucket of its probe sequence in `table`.
    private func place(_ tx: Transaction, _ r: ContainerReader, _ b: Bucket, _ h: inout Header) throws {
        var i = Int(b.tag & UInt64(h.capacity - 1))
        while true {
            let tag = try r.load(bucket(h.table, i).field(\.tag))
            if tag <= 1 {
                if tag == 0 { h.used += 1 }
                try tx.write(b, to: bucket(h.table, i))
                return
            }
            i = (i + 1) & (h.capacity - 1)
        }
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

extension PersistentDictionary.Header: PersistentValue {}
