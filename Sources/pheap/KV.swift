import ArgumentParser
import Foundation
import PersistentCollections
import PersistentHeap

/// The root of a key-value pool.
struct KVRoot: BitwiseCopyable {
    var map: PersistentSortedDictionary<String, String>.Ref
}

/// The key-value store of `pheap kv`: a PersistentSortedDictionary<String, String> in a pool.
struct KVStore {
    static let layout = "pheap-kv"
    let pool: Pool
    /// The map, or nil in a read-only store whose pool has no map yet (it reads as empty).
    let map: PersistentSortedDictionary<String, String>?

    /// How a command uses the store.
    enum Access {
        /// Reads only: the pool must exist; it is opened read-only (read-write only when the last
        /// writer crashed mid-change, so that recovery runs before anything is read).
        case read
        /// Changes: the pool must exist unless `create` (then a 64 MiB pool growing up to
        /// 16 GiB is created on first use).
        case write(create: Bool)
    }

    /// Opens `path` read-only, or read-write when an interrupted operation must be recovered.
    /// (Written without `catch … where`: that shape, inside an initializer, crashes
    /// swift-frontend 6.3.1 with typed throws.)
    static func openForReading(_ path: String) throws -> Pool {
        do {
            return try Pool.open(path: path, layout: layout, options: PoolOptions(readOnly: true))
        } catch {
            guard error.code == .readOnly else { throw error }
            return try Pool.open(path: path, layout: layout)
        }
    }

    /// Opens the pool at `path` for `access`.
    init(path: String, access: Access) throws {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        if exists && isDirectory.boolValue { throw CommandFailure(message: "\(path): is a directory, not a pool file", code: 1) }
        switch access {
        case .read:
            guard exists else {
                throw CommandFailure(message: "\(path): no such pool file (put, load or --create make one)", code: 1)
            }
            pool = try KVStore.openForReading(path)
        case .write(let create):
            if exists {
                pool = try Pool.open(path: path, layout: KVStore.layout)
            } else if create {
                pool = try Pool.create(path: path, size: 64 << 20, layout: KVStore.layout,
                                       options: PoolOptions(maxSize: 16 << 30, growthStep: 64 << 20))
            } else {
                throw CommandFailure(message: "\(path): no such pool file", code: 1)
            }
        }
        var reading = pool.isReadOnly
        if case .read = access { reading = true }  // also after a read-write open for recovery: create nothing
        do {
            if reading {
                if let root = pool.rootPointer {
                    let ref = try pool.load(root.assumingType(KVRoot.self)).map
                    map = ref.isNull ? nil : PersistentSortedDictionary(pool, ref: ref)
                } else {
                    map = nil
                }
            } else {
                map = try PersistentSortedDictionary<String, String>.open(pool, at: try pool.root(KVRoot.self).field(\.map))
            }
        } catch {
            try? pool.close()
            throw error
        }
    }
}

/// `pheap kv PATH put KEY VALUE | get KEY | delete KEY | scan [FROM [TO]] | count | load FILE`
struct KV: ParsableCommand, PoolCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "A durable key-value store of strings, in a pool created on first use.",
        discussion: """
            Actions:
              put KEY VALUE     set KEY (durable when the command returns)
              get KEY           print the value of KEY (exit 1 if absent)
              delete KEY        remove KEY
              scan [FROM [TO]]  print KEY<TAB>VALUE lines, FROM <= KEY < TO, in order
              count             print the number of keys
              load FILE         bulk-load KEY<TAB>VALUE lines: runs of --run lines
                                are sorted by key (a later line wins over an earlier
                                one with the same key) and inserted in transactions
                                of --batch entries, merged into the map's leaves;
                                after a crash the store holds the runs before the
                                one in progress and a key-order prefix of that one
            Keys are ordered by their UTF-8 bytes. Build with -c release for speed
            (about 3x a debug build's load rate).
            """)

    @Argument(help: "The pool file (put and load create it when missing).")
    var path: String
    var poolPath: String { path }

    @Argument(help: "put, get, delete, scan, count or load.")
    var action: String

    @Argument(help: "The action's arguments.")
    var arguments: [String] = []

    @Option(help: "load: entries per transaction (each batch is merged in bulk).")
    var batch = 20_000

    @Option(name: .customLong("run"), help: "load: lines sorted together before they are inserted (bounds the memory the load uses: ~200 bytes per 100-byte line).")
    var runLines = 1_000_000

    @Flag(help: "Create the pool if it does not exist (put and load always do).")
    var create = false

    func validate() throws {
        let counts: [String: ClosedRange<Int>] = ["put": 2...2, "get": 1...1, "delete": 1...1, "scan": 0...2, "count": 0...0, "load": 1...1]
        guard let allowed = counts[action] else {
            throw ValidationError("unknown action '\(action)': use put, get, delete, scan, count or load")
        }
        guard allowed.contains(arguments.count) else {
            throw ValidationError("'\(action)' takes \(allowed.lowerBound == allowed.upperBound ? "\(allowed.lowerBound)" : "\(allowed.lowerBound) to \(allowed.upperBound)") argument(s), got \(arguments.count)")
        }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard runLines >= 1 else { throw ValidationError("--run must be at least 1") }
    }

    func run() throws {
        let access: KVStore.Access
        switch action {
        case "get", "scan", "count": access = create ? .write(create: true) : .read
        case "delete": access = .write(create: create)
        default: access = .write(create: true)
        }
        // A bad input file is refused before the pool is opened (or created).
        let input = action == "load" ? try KV.openInput(arguments[0]) : nil
        defer { try? input?.close() }
        let store = try KVStore(path: path, access: access)
        defer { try? store.pool.close() }
        switch action {
        case "put":
            try store.map?.updateValue(arguments[1], forKey: arguments[0])
        case "get":
            guard let v = try store.map?.value(forKey: arguments[0]) else {
                throw CommandFailure(message: "\(arguments[0]): not found", code: 1)
            }
            print(v)
        case "delete":
            if try store.map?.removeValue(forKey: arguments[0]) == nil {
                throw CommandFailure(message: "\(arguments[0]): not found", code: 1)
            }
        case "scan":
            let out = FileHandle.standardOutput
            var buffer = ""
            try store.map?.forEach(from: arguments.first, to: arguments.count > 1 ? arguments[1] : nil) { k, v in
                buffer += "\(k)\t\(v)\n"
                if buffer.utf8.count > 1 << 16 { out.write(Data(buffer.utf8)); buffer = "" }
                return true
            }
            out.write(Data(buffer.utf8))
        case "count":
            print(try store.map?.count ?? 0)
        case "load":
            if let input { try load(file: arguments[0], from: input, into: store) }
        default:
            break
        }
    }

    /// Opens the TSV file to load, or fails in one line (missing, a directory, unreadable).
    static func openInput(_ file: String) throws -> FileHandle {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) else {
            throw CommandFailure(message: "\(file): no such file", code: 1)
        }
        guard !isDirectory.boolValue else { throw CommandFailure(message: "\(file): is a directory, not a TSV file", code: 1) }
        guard let handle = FileHandle(forReadingAtPath: file) else {
            throw CommandFailure(message: "\(file): cannot read (permission denied?)", code: 1)
        }
        return handle
    }

    private func load(file: String, from handle: FileHandle, into store: KVStore) throws {
        guard let map = store.map else { throw CommandFailure(message: "\(path): the store has no map", code: 1) }
        let started = Date()
        var loaded = 0, lineNumber = 0
        var pending: [(key: String, value: String)] = []
        var lastReport = started
        // A run: sorted by key (UTF-8 bytes; equal keys in line order, so the later line is
        // inserted later and wins), then inserted in batches. Consecutive batches of a sorted run
        // cover disjoint key ranges, so each rebuilds only the leaves of its range (on an empty
        // map: appends packed leaves) instead of every leaf the scattered keys of a file-order
        // batch would fall into. One transaction per batch.
        func flush() throws {
            guard !pending.isEmpty else { return }
            let items = pending  // a constant: the comparator reads it without exclusivity checks
            // Sorted by the keys' first 8 bytes as an integer; the whole keys only on a tie.
            var order = items.indices.map { i in (prefix: utf8Prefix(items[i].key), index: i) }
            order.sort { a, b in
                if a.prefix != b.prefix { return a.prefix < b.prefix }
                let c = compareUTF8(items[a.index].key, items[b.index].key)
                return c < 0 || (c == 0 && a.index < b.index)
            }
            var start = 0
            while start < order.count {
                let end = min(order.count, start + batch)
                try map.insert(contentsOf: order[start..<end].lazy.map { items[$0.index] })
                loaded += end - start
                start = end
                let now = Date()
                if now.timeIntervalSince(lastReport) >= 1 {
                    lastReport = now
                    let rate = Double(loaded) / now.timeIntervalSince(started)
                    FileHandle.standardError.write(Data(String(format: "\rloaded %d entries (%.0f/s)", loaded, rate).utf8))
                }
            }
            pending.removeAll(keepingCapacity: true)
        }
        // One line: KEY<TAB>VALUE (blank lines are skipped).
        func take(_ bytes: Data) throws {
            lineNumber += 1
            if bytes.isEmpty { return }
            let parts = String(decoding: bytes, as: UTF8.self).split(separator: "\t", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw CommandFailure(message: "\(file):\(lineNumber): expected KEY<TAB>VALUE", code: 1)
            }
            pending.append((String(parts[0]), String(parts[1])))
            if pending.count >= runLines { try flush() }
        }
        // Lines are cut out of each chunk by index; only the unfinished last line is carried
        // over (removing every line from the front of the buffer made loading quadratic).
        var carry = Data()
        while true {
            let chunk: Data
            do {
                guard let c = try handle.read(upToCount: 1 << 20), !c.isEmpty else { break }
                chunk = c
            } catch {
                throw CommandFailure(message: "\(file): cannot read: \(error.localizedDescription)", code: 1)
            }
            carry.append(chunk)
            var start = carry.startIndex
            while let nl = carry[start...].firstIndex(of: 10) {
                try take(carry[start..<nl])
                start = nl + 1
            }
            carry = Data(carry[start...])
        }
        if !carry.isEmpty { try take(carry) }
        try flush()
        let seconds = Date().timeIntervalSince(started)
        FileHandle.standardError.write(Data(String(format: "\rloaded %d entries in %.1f s (%.0f/s)\n", loaded, seconds, Double(loaded) / max(seconds, 1e-9)).utf8))
    }
}

/// The order of two strings' UTF-8 bytes (the sorted map's key order): negative, zero or positive.
func compareUTF8(_ a: String, _ b: String) -> Int {
    var a = a, b = b
    return a.withUTF8 { x in
        b.withUTF8 { y in
            let n = min(x.count, y.count)
            if n > 0, let xa = x.baseAddress, let ya = y.baseAddress {
                let c = memcmp(xa, ya, n)
                if c != 0 { return Int(c) }
            }
            return x.count - y.count
        }
    }
}

/// The first 8 UTF-8 bytes of `s`, big-endian, zero-padded: integer order is byte order (a tie
/// needs the whole strings).
func utf8Prefix(_ s: String) -> UInt64 {
    var p: UInt64 = 0, n = 0
    for b in s.utf8 {
        p = p << 8 | UInt64(b)
        n += 1
        if n == 8 { break }
    }
    return p << UInt64(8 * (8 - n))
}
