// The PersistentHeap, SQLite (GRDB) and Swift Dictionary side of Benchmarks/compare-kv, with the
// same workload and JSON lines as kv/lmdb_bench.c:
//
//   kv-compare SYSTEM DIR STORAGE N LOOKUPS SCANS
//   SYSTEM: pheap | sqlite | sqlite-normal | dictionary
//
// N durable inserts of 16-byte keys and 100-byte values (one transaction each), LOOKUPS random
// point lookups, SCANS range scans of 100 keys. `pheap` uses the msync domain on disk and the
// cache-line flush domain (forced) on tmpfs; `sqlite` is WAL with synchronous=FULL (durable
// commits); `sqlite-normal` WAL with synchronous=NORMAL (commits not synced: NOT durable, shown
// for reference); `dictionary` is an in-memory Swift Dictionary (lookups only). Every line
// carries the durability setting as read back from the system (`config`).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GRDB
import PersistentCollections
import PersistentHeap

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

func mix(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

func key(_ i: Int) -> String {
    let h = String(mix(UInt64(i)), radix: 16)
    return String(repeating: "0", count: 16 - h.count) + h
}

/// `key(i)` made the way lmdb_bench.c makes it for each lookup (16 hex digits formatted into a
/// fresh buffer): no read of a prebuilt key array, whose random accesses would add a cache miss
/// per lookup that LMDB's side does not pay.
func freshKey(_ i: Int) -> String {
    let h = mix(UInt64(i))
    return String(unsafeUninitializedCapacity: 16) { buf in
        for k in 0..<16 {
            let d = UInt8(truncatingIfNeeded: h >> UInt64(60 - 4 * k)) & 15
            buf[k] = d < 10 ? 48 + d : 87 + d
        }
        return 16
    }
}

/// The first byte of `value(i)`, computed (as lmdb_bench.c checks it).
func firstValueByte(_ i: Int) -> UInt8 { UInt8(97 + (i &* 31) % 26) }

func value(_ i: Int) -> String {
    String(decoding: (0..<100).map { UInt8(97 + (i &* 31 &+ $0) % 26) }, as: UTF8.self)
}

/// The durability configuration of the system being measured, as read back from it.
nonisolated(unsafe) var config = ""

func emit(_ bench: String, _ system: String, _ storage: String, n: Int, seconds: Double, extra: String = "") {
    var s = "{\"bench\":\"\(bench)\",\"system\":\"\(system)\",\"storage\":\"\(storage)\",\"n\":\(n),\"ops_per_s\":\(Int(Double(n) / seconds))"
    if bench == "lookup" { s += ",\"ns_per_op\":\(Int(seconds * 1e9 / Double(n)))" }
    print(s + extra + ",\"config\":\"\(config)\"}")
}

struct KVRoot: BitwiseCopyable { var map: PersistentSortedDictionary<String, String>.Ref }

let a = CommandLine.arguments
guard a.count == 7, let n = Int(a[4]), let lookups = Int(a[5]), let scans = Int(a[6]) else {
    print("usage: kv-compare pheap|sqlite|dictionary DIR STORAGE N LOOKUPS SCANS")
    exit(2)
}
let system = a[1], dir = a[2], storage = a[3]
/// The random index sequence (a class: GRDB's closures run outside the main actor).
final class Indexes: @unchecked Sendable {
    var r: UInt64 = 7  // reset to 7 to replay the same sequence
    let n: Int
    init(_ n: Int) { self.n = n }
    func next() -> Int { r = mix(r); return Int(r % UInt64(n)) }
}
let indexes = Indexes(n)
func nextIndex() -> Int { indexes.next() }

for i in [0, 1, 99, 123_456] where freshKey(i) != key(i) || firstValueByte(i) != value(i).utf8.first {
    print("kv-compare: freshKey/firstValueByte disagree with key/value at \(i)")
    exit(1)
}

do {
    switch system {
    case "pheap":
        let path = "\(dir)/kv.pool"
        unlink(path)
        let pool = try Pool.create(path: path, size: 64 << 20, layout: "kv-bench",
                                   options: PoolOptions(durability: storage == "tmpfs" ? .cacheLineFlush : .msync,
                                                        maxSize: 16 << 30, growthStep: 256 << 20))
        let map = try PersistentSortedDictionary<String, String>.open(pool, at: try pool.root(KVRoot.self).field(\.map))
        config = "domain=\(pool.persistence.domain.rawValue)"
        let keys = (0..<n).map(key), values = (0..<n).map(value)
        var t = now()
        let before = PersistenceCounters.current
        for i in 0..<n { try map.updateValue(values[i], forKey: keys[i]) }
        let c = PersistenceCounters.current.since(before)
        emit("insert", "pheap", storage, n: n, seconds: now() - t,
             extra: ",\"fences_per_insert\":\(Double(c.operationFences) / Double(n)),\"checkpoint_fences_per_insert\":\(Double(c.checkpointFences) / Double(n)),\"msyncs_per_insert\":\(Double(c.msyncCalls) / Double(n))")
        t = now()
        for _ in 0..<lookups {
            let j = nextIndex()
            guard try map.value(forKey: freshKey(j))?.utf8.first == firstValueByte(j) else { throw PoolError(.corrupted, "wrong value") }
        }
        emit("lookup", "pheap", storage, n: lookups, seconds: now() - t)
        // Zero-copy: the value's bytes where they lie in the pool (as LMDB's mdb_get gives them).
        indexes.r = 7
        t = now()
        for _ in 0..<lookups {
            let j = nextIndex()
            guard try map.withValue(forKey: freshKey(j), { $0.first }) == firstValueByte(j) else { throw PoolError(.corrupted, "wrong value") }
        }
        emit("lookup-zc", "pheap", storage, n: lookups, seconds: now() - t)
        var seen = 0
        t = now()
        for _ in 0..<scans {
            try map.forEach(from: freshKey(nextIndex())) { _, _ in seen += 1; return seen % 100 != 0 }
            seen = (seen + 99) / 100 * 100
        }
        emit("scan100", "pheap", storage, n: scans, seconds: now() - t)
        var bytes = 0
        t = now()
        for _ in 0..<scans {
            var n = 0
            try map.forEachEncoded(from: freshKey(nextIndex())) { k, v in bytes &+= k.count &+ v.count; n += 1; return n < 100 }
        }
        emit("scan100-zc", "pheap", storage, n: scans, seconds: now() - t, extra: ",\"bytes_seen\":\(bytes)")
        let stats = try pool.stats()
        let used = stats.poolSize - stats.freeBytes  // headers, lanes, tables, nodes, blocks in use
        try pool.close()
        var st = stat()
        stat(path, &st)
        emit("size", "pheap", storage, n: n, seconds: 1,
             extra: ",\"bytes_per_entry\":\(Double(used) / Double(n)),\"used_bytes\":\(used),\"file_bytes\":\(st.st_size)")
        unlink(path)

    case "sqlite", "sqlite-normal":
        let path = "\(dir)/kv.sqlite"
        for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
        let db = try DatabasePool(path: path)  // WAL mode
        // GRDB's DatabasePool sets synchronous=NORMAL when it turns WAL on, after any
        // prepareDatabase hook: set the level on the open writer connection, and read it back.
        let wanted = system == "sqlite" ? "FULL" : "NORMAL"
        let (mode, level) = try db.writeWithoutTransaction { db -> (String, Int) in
            try db.execute(sql: "PRAGMA synchronous = \(wanted)")
            return (try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "?", try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1)
        }
        let levelName = [0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"][level] ?? "\(level)"
        config = "journal_mode=\(mode) synchronous=\(levelName)(\(level))"
        guard levelName == wanted else { throw PoolError(.invalidArgument, "SQLite reports synchronous=\(levelName), not \(wanted)") }
        try db.write { db in try db.execute(sql: "CREATE TABLE kv(k TEXT PRIMARY KEY NOT NULL, v TEXT NOT NULL) WITHOUT ROWID") }
        let keys = (0..<n).map(key), values = (0..<n).map(value)
        let t = now()
        for i in 0..<n {
            try db.write { db in
                try db.cachedStatement(sql: "INSERT INTO kv(k, v) VALUES (?, ?)").execute(arguments: [keys[i], values[i]])
            }
        }
        emit("insert", system, storage, n: n, seconds: now() - t)
        try db.read { db in
            let get = try db.cachedStatement(sql: "SELECT v FROM kv WHERE k = ?")
            var t = now()
            for _ in 0..<lookups {
                let j = indexes.next()
                guard try String.fetchOne(get, arguments: [freshKey(j)])?.utf8.first == firstValueByte(j) else { throw PoolError(.corrupted, "wrong value") }
            }
            emit("lookup", system, storage, n: lookups, seconds: now() - t)
            let scan = try db.cachedStatement(sql: "SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT 100")
            t = now()
            var seen = 0
            for _ in 0..<scans {
                let rows = try Row.fetchCursor(scan, arguments: [freshKey(indexes.next())])
                while try rows.next() != nil { seen += 1 }
            }
            emit("scan100", system, storage, n: scans, seconds: now() - t)
        }
        for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }

    case "dictionary":
        config = "in memory"
        let keys = (0..<n).map(key), values = (0..<n).map(value)
        var d: [String: String] = [:]
        var t = now()
        for i in 0..<n { d[keys[i]] = values[i] }
        emit("insert", "dictionary", "memory", n: n, seconds: now() - t)
        t = now()
        for _ in 0..<lookups {
            let j = nextIndex()
            guard d[freshKey(j)]?.utf8.first == firstValueByte(j) else { throw PoolError(.corrupted, "wrong value") }
        }
        emit("lookup", "dictionary", "memory", n: lookups, seconds: now() - t)

    default:
        print("unknown system \(system)")
        exit(2)
    }
} catch {
    print("kv-compare: \(error)")
    exit(1)
}
