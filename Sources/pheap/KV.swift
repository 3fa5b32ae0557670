import ArgumentParser
import Foundation
import PersistentHeap

/// The root of a key-value pool.
struct KVRoot: BitwiseCopyable {
    var map: PersistentSortedDictionary<String, String>.Ref
}

/// The key-value store of `pheap kv`: a PersistentSortedDictionary<String, String> in a pool
/// created on first use.
struct KVStore {
    static let layout = "pheap-kv"
    let pool: Pool
    let map: PersistentSortedDictionary<String, String>

    /// Opens the pool at `path`, creating it (64 MiB, growing up to 16 GiB) if missing.
    /// Opens read-only when asked, unless the last writer crashed mid-change: then read-write,
    /// so that recovery runs before anything is read.
    static func openPool(_ path: String, readOnly: Bool) throws -> Pool {
        guard readOnly else { return try Pool.open(path: path, layout: layout) }
        do {
            return try Pool.open(path: path, layout: layout, options: PoolOptions(readOnly: true))
        } catch where error.code == .readOnly {
            return try Pool.open(path: path, layout: layout)
        }
    }

    init(path: String, readOnly requested: Bool = false) throws {
        var readOnly = requested
        if FileManager.default.fileExists(atPath: path) {
            pool = try KVStore.openPool(path, readOnly: readOnly)
            readOnly = pool.isReadOnly
        } else {
            if readOnly { throw CommandFailure(message: "\(path): no such pool file", code: 1) }
            pool = try Pool.create(path: path, size: 64 << 20, layout: KVStore.layout,
                                   options: PoolOptions(maxSize: 16 << 30, growthStep: 64 << 20))
        }
        if readOnly {
            guard let root = pool.rootPointer else { throw CommandFailure(message: "\(path): empty pool", code: 1) }
            map = PersistentSortedDictionary(pool, ref: try pool.load(root.assumingType(KVRoot.self)).map)
        } else {
            map = try PersistentSortedDictionary<String, String>.open(pool, at: try pool.root(KVRoot.self).field(\.map))
        }
    }
}

/// `pheap kv PATH put KEY VALUE | get KEY | delete KEY | scan [FROM [TO]] | count | load FILE`
struct KV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "A durable key-value store of strings, in a pool created on first use.",
        discussion: """
            Actions:
              put KEY VALUE      set KEY (durable when the command returns)
              get KEY            print the value of KEY (exit 1 if absent)
              delete KEY         remove KEY
              scan [FROM [TO]]   print KEY<TAB>VALUE lines with FROM ≤ KEY < TO, in order
              count              print the number of keys
              load FILE          bulk-load KEY<TAB>VALUE lines (transactions of --batch lines;
                                 after a crash the store holds a prefix of the file)
            Keys are ordered by their UTF-8 bytes.
            """)

    @Argument(help: "The pool file (created on first use).")
    var path: String

    @Argument(help: "put, get, delete, scan, count or load.")
    var action: String

    @Argument(help: "The action's arguments.")
    var arguments: [String] = []

    @Option(help: "load: lines per transaction.")
    var batch = 64

    func validate() throws {
        let counts: [String: ClosedRange<Int>] = ["put": 2...2, "get": 1...1, "delete": 1...1, "scan": 0...2, "count": 0...0, "load": 1...1]
        guard let allowed = counts[action] else {
            throw ValidationError("unknown action '\(action)': use put, get, delete, scan, count or load")
        }
        guard allowed.contains(arguments.count) else {
            throw ValidationError("'\(action)' takes \(allowed.lowerBound == allowed.upperBound ? "\(allowed.lowerBound)" : "\(allowed.lowerBound) to \(allowed.upperBound)") argument(s), got \(arguments.count)")
        }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
    }

    func run() throws {
        let readOnly = ["get", "scan", "count"].contains(action) && FileManager.default.fileExists(atPath: path)
        let store = try KVStore(path: path, readOnly: readOnly)
        defer { try? store.pool.close() }
        let map = store.map
        switch action {
        case "put":
            try map.updateValue(arguments[1], forKey: arguments[0])
        case "get":
            guard let v = try map.value(forKey: arguments[0]) else {
                throw CommandFailure(message: "\(arguments[0]): not found", code: 1)
            }
            print(v)
        case "delete":
            if try map.removeValue(forKey: arguments[0]) == nil {
                throw CommandFailure(message: "\(arguments[0]): not found", code: 1)
            }
        case "scan":
            let out = FileHandle.standardOutput
            var buffer = ""
            try map.forEach(from: arguments.first, to: arguments.count > 1 ? arguments[1] : nil) { k, v in
                buffer += "\(k)\t\(v)\n"
                if buffer.utf8.count > 1 << 16 { out.write(Data(buffer.utf8)); buffer = "" }
                return true
            }
            out.write(Data(buffer.utf8))
        case "count":
            print(map.count)
        case "load":
            try load(file: arguments[0], into: store)
        default:
            break
        }
    }

    private func load(file: String, into store: KVStore) throws {
        guard let handle = FileHandle(forReadingAtPath: file) else {
            throw CommandFailure(message: "\(file): cannot read", code: 1)
        }
        defer { try? handle.close() }
        let started = Date()
        var loaded = 0, lineNumber = 0
        var pending: [(String, String)] = []
        var lastReport = started
        func flush() throws {
            guard !pending.isEmpty else { return }
            let items = pending
            try store.pool.transaction { _ in
                for (k, v) in items { try store.map.updateValue(v, forKey: k) }
            }
            loaded += items.count
            pending.removeAll(keepingCapacity: true)
            let now = Date()
            if now.timeIntervalSince(lastReport) >= 1 {
                lastReport = now
                let rate = Double(loaded) / now.timeIntervalSince(started)
                FileHandle.standardError.write(Data(String(format: "\rloaded %d entries (%.0f/s)", loaded, rate).utf8))
            }
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
            if pending.count >= batch { try flush() }
        }
        // Lines are cut out of each chunk by index; only the unfinished last line is carried
        // over (removing every line from the front of the buffer made loading quadratic).
        var carry = Data()
        while true {
            let chunk = handle.readData(ofLength: 1 << 20)
            if chunk.isEmpty { break }
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
