#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PHeapTestSupport
import Testing
import PersistentHeap
import PersistentCollections

/// `pheap` against every kind of bad input: a missing file, a directory, an empty file,
/// garbage, a pool of another layout, a read-only file, a pool held by another process. Each
/// failure must be one line on stderr (`pheap: …`) and a non-zero exit status — never a
/// backtrace, never a pool created by a read command.
@Suite("pheap command line")
struct CLITests {
    let dir = ScratchDirectory("cli")

    struct Result {
        let code: Int32
        let out: String
        let err: String
    }

    func pheap(_ args: String...) throws -> Result { try pheap(args) }

    func pheap(_ args: [String]) throws -> Result {
        let (code, out, err) = try runProcess(siblingExecutable("pheap"), args, environment: ["SWIFT_BACKTRACE": "enable=no"])
        return Result(code: code, out: out, err: err)
    }

    /// Expects a clean failure: non-zero exit, exactly one `pheap: ` line on stderr, nothing on stdout.
    func expectCleanFailure(_ r: Result, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let lines = r.err.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(r.code != 0, "\(what): exit status \(r.code)", sourceLocation: sourceLocation)
        #expect(r.code > 0, "\(what): killed by signal \(-r.code)", sourceLocation: sourceLocation)
        #expect(lines.count == 1 && lines[0].hasPrefix("pheap: "), "\(what): stderr was \(r.err.prefix(600))", sourceLocation: sourceLocation)
        #expect(r.out.isEmpty, "\(what): stdout was \(r.out.prefix(200))", sourceLocation: sourceLocation)
        #expect(!r.err.contains("Fatal error") && !r.err.contains("backtrace"), "\(what)", sourceLocation: sourceLocation)
    }

    /// The kinds of bad file, by name: (path, what to expect from a read command).
    func badFiles() throws -> [(String, String)] {
        let empty = dir.file("empty.pool")
        #expect(FileBytes.write(empty, []))
        let garbage = dir.file("garbage.pool")
        var rng = RepeatableRandomNumberGenerator(seed: 5)
        #expect(FileBytes.write(garbage, (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &rng) }))
        let other = dir.file("other.pool")
        try Pool.create(path: other, size: 1 << 20, layout: "something-else").close()
        let subdir = dir.file("a-directory")
        mkdir(subdir, 0o755)
        return [(dir.file("missing.pool"), "missing"), (subdir, "directory"), (empty, "empty"), (garbage, "garbage")]
    }

    @Test("info, check, stats, kv and demo fail in one line on missing, directory, empty and garbage files")
    func badFilesEverywhere() throws {
        for (path, what) in try badFiles() {
            expectCleanFailure(try pheap("info", path), "info \(what)")
            expectCleanFailure(try pheap("check", path), "check \(what)")
            expectCleanFailure(try pheap("check", path, "--deep"), "check --deep \(what)")
            expectCleanFailure(try pheap("stats", path), "stats \(what)")
            for kv in [["get", "k"], ["scan"], ["count"], ["delete", "k"], ["load", dir.path]] + (what == "missing" ? [] : [["put", "k", "v"]]) {
                expectCleanFailure(try pheap(["kv", path] + kv), "kv \(kv[0]) \(what)")
            }
            if what != "missing" { expectCleanFailure(try pheap("demo", path), "demo \(what)") }
            if what != "missing" { expectCleanFailure(try pheap("create", path, "--size", "1MiB", "--layout", "x"), "create over \(what)") }
        }
        #expect(access(dir.file("missing.pool"), F_OK) != 0, "no read command, nor a failed one, created the missing pool")
    }

    @Test("kv read commands never create a pool; --create does; put creates")
    func kvCreation() throws {
        let path = dir.file("kv.pool")
        for cmd in [["get", "k"], ["scan"], ["count"], ["delete", "k"]] {
            expectCleanFailure(try pheap(["kv", path] + cmd), "kv \(cmd[0]) on a missing pool")
            #expect(access(path, F_OK) != 0, "kv \(cmd[0]) created \(path)")
        }
        let count = try pheap("kv", path, "count", "--create")
        #expect(count.code == 0 && count.out == "0\n", "\(count.err)")
        #expect(try pheap("kv", path, "put", "a", "1").code == 0)
        let get = try pheap("kv", path, "get", "a")
        #expect(get.code == 0 && get.out == "1\n")
        let absent = try pheap("kv", path, "get", "zz")
        expectCleanFailure(absent, "get of an absent key")
    }

    @Test("kv load: runs sorted by UTF-8 key, batches merged into existing entries, the last line of a key wins across runs and batches",
          arguments: [(1, 1), (3, 2), (7, 100), (1_000, 4)])
    func kvLoad(run: Int, batch: Int) throws {
        let path = dir.file("load-\(run)-\(batch).pool")
        #expect(try pheap("kv", path, "put", "m", "before").code == 0)
        #expect(try pheap("kv", path, "put", "zz", "kept").code == 0)
        var rng = RepeatableRandomNumberGenerator(seed: UInt64(run * 31 + batch))
        var model = ["m": "before", "zz": "kept"]
        var text = ""
        for line in 0..<60 {
            // Duplicates, a key already in the store, non-ASCII keys (UTF-8 order, not Swift's).
            let key = ["b", "a", "m", "é", "e", "ab", "b\(line % 4)", "Ω\(line % 3)"].randomElement(using: &rng)!
            text += "\(key)\tv\(line)\n"
            model[key] = "v\(line)"
        }
        #expect(FileBytes.write(dir.file("load-\(run)-\(batch).tsv"), Array(text.utf8)))
        let r = try pheap("kv", path, "load", dir.file("load-\(run)-\(batch).tsv"), "--run", "\(run)", "--batch", "\(batch)")
        #expect(r.code == 0, "\(r.err)")
        let scan = try pheap("kv", path, "scan")
        let expected = model.keys.sorted(by: utf8Less).map { "\($0)\t\(model[$0]!)" }
        #expect(scan.out.split(separator: "\n").map(String.init) == expected)
        #expect(try pheap("check", path, "--deep").code == 0)
        expectCleanFailure(try pheap("kv", path, "load", dir.file("load-\(run)-\(batch).tsv"), "--run", "0"), "--run 0")
    }

    @Test("a pool of another layout, a read-only file, a pool in use: one-line errors; reads of a read-only file work")
    func layoutPermissionsAndBusy() throws {
        let other = dir.file("other.pool")
        try Pool.create(path: other, size: 1 << 20, layout: "something-else").close()
        for kv in [["get", "k"], ["scan"], ["count"], ["put", "k", "v"], ["delete", "k"]] {
            expectCleanFailure(try pheap(["kv", other] + kv), "kv \(kv[0]) on another layout")
        }
        expectCleanFailure(try pheap("check", other, "--deep"), "check --deep of another layout")
        #expect(try pheap("check", other).code == 0, "check of any layout works")

        // Read-only file.
        let ro = dir.file("ro.pool")
        #expect(try pheap("kv", ro, "put", "k", "v").code == 0)
        chmod(ro, 0o444)
        defer { chmod(ro, 0o644) }
        if getuid() != 0 {  // root ignores file permissions
            expectCleanFailure(try pheap("kv", ro, "put", "k2", "v"), "kv put on a read-only file")
            expectCleanFailure(try pheap("check", ro), "check (read-write) of a read-only file")
        }
        #expect(try pheap("kv", ro, "get", "k").out == "v\n", "reads of a read-only file work")
        #expect(try pheap("check", ro, "--read-only", "--deep").code == 0)
        #expect(try pheap("info", ro).code == 0)

        // In use by another process.
        let busy = dir.file("busy.pool")
        #expect(try pheap("kv", busy, "put", "k", "v").code == 0)
        let holder = try ChildProcess(executable: siblingExecutable("pheap-crash-helper"), arguments: ["hold", busy, "pheap-kv"])
        _ = try holder.waitForLine { $0.hasPrefix("READY") }
        for kv in [["get", "k"], ["put", "k", "w"], ["count"], ["load", ro]] {
            expectCleanFailure(try pheap(["kv", busy] + kv), "kv \(kv[0]) on a pool in use")
        }
        expectCleanFailure(try pheap("check", busy), "check of a pool in use")
        expectCleanFailure(try pheap("stats", busy), "stats of a pool in use")
        let info = try pheap("info", busy)
        #expect(info.code == 0, "info works on a pool in use")
        #expect(info.out.contains("state:       in use by another process (open for writing)"), "\(info.out)")
        #expect(try pheap("info", busy, "--json").out.contains("\"inUse\":true"))
        // A read-only check of a pool being written says why it cannot be done.
        let roBusy = try pheap("check", busy, "--read-only")
        expectCleanFailure(roBusy, "read-only check of a pool in use")
        #expect(roBusy.err.contains("in use by another process") && roBusy.err.contains("check after it closes"), "\(roBusy.err)")
        holder.kill()
        holder.wait()
        // Killed: the same file is now "not closed cleanly", and no longer in use.
        let crashed = try pheap("info", busy)
        #expect(crashed.out.contains("state:       not closed cleanly (crashed or killed)"), "\(crashed.out)")
        #expect(try pheap("info", busy, "--json").out.contains("\"inUse\":false"))
        #expect(try pheap("check", busy).code == 0)
        #expect(try pheap("info", busy).out.contains("state:       clean (closed)"))
    }

    @Test("bad arguments: one line pointing at the subcommand's help")
    func badArguments() throws {
        let path = dir.file("args.pool")
        let r1 = try pheap("kv", path, "frobnicate")
        expectCleanFailure(r1, "unknown kv action")
        #expect(r1.err.contains("pheap kv --help"), "\(r1.err)")
        let r2 = try pheap("create", path, "--size", "lots", "--layout", "x")
        expectCleanFailure(r2, "bad size")
        #expect(r2.err.contains("pheap create --help"), "\(r2.err)")
        expectCleanFailure(try pheap("kv", path, "load"), "load without a file")
        let tsv = dir.file("bad.tsv")
        #expect(FileBytes.write(tsv, Array("no tab here\n".utf8)))
        expectCleanFailure(try pheap("kv", path, "load", tsv), "a malformed TSV line")
        expectCleanFailure(try pheap("kv", path, "load", dir.file("nope.tsv")), "a missing TSV file")
        expectCleanFailure(try pheap("frobnicate"), "unknown subcommand")

        // Sizes: units as documented, clear errors for negative, zero and inconsistent ones.
        for (args, message) in [(["--size", "-5MiB"], "a size cannot be negative"),
                                (["--size", "0"], "a size must be greater than zero"),
                                (["--size", "1MiB", "--max-size", "512KiB"], "--max-size 512.0 KiB is below --size 1.0 MiB"),
                                (["--size", "1MiB", "--growth-step", "-1"], "a size cannot be negative")] {
            let r = try pheap(["create", path, "--layout", "x"] + args)
            expectCleanFailure(r, "create \(args)")
            #expect(r.err.contains(message) && r.err.contains("(see 'pheap create --help')"), "\(r.err)")
        }
        let units = dir.file("units.pool")
        let decimal = try pheap("create", units, "--size", "2MB", "--layout", "x", "--max-size", "1GiB")
        #expect(decimal.code == 0, "\(decimal.err)")
        #expect(try PoolInfo.read(path: units).size == 2_000_000 / 4096 * 4096)
        #expect(try PoolInfo.read(path: units).maxSize == 1 << 30)
        #expect(try pheap("create", "--help").out.contains("KB/MB/GB/TB = powers of 1000"))
    }

    @Test("--help works for every subcommand, exits 0, and keeps lines within 80 columns")
    func help() throws {
        for sub in ["", "create", "info", "check", "stats", "kv", "demo"] {
            let r = try pheap(sub.isEmpty ? ["--help"] : [sub, "--help"])
            #expect(r.code == 0, "\(sub) --help: \(r.err)")
            #expect(r.out.hasPrefix("OVERVIEW: "), "\(sub) --help: \(r.out.prefix(200))")
            #expect(r.err.isEmpty)
            // (ArgumentParser's generated USAGE line is one line whatever its length.)
            for line in r.out.split(separator: "\n") where !line.hasPrefix("USAGE: ") {
                #expect(line.count <= 80, "\(sub) --help: \(line)")
            }
        }
        // The kv actions table is not wrapped mid-line.
        let kv = try pheap("kv", "--help").out
        #expect(kv.contains("  load FILE         bulk-load KEY<TAB>VALUE lines: runs of --run lines\n"), "\(kv)")
    }

    @Test("errors from inside the heap carry the pool's path like every other error")
    func errorFormat() throws {
        let path = dir.file("format.pool")
        try Pool.create(path: path, size: 1 << 20, layout: "x").close()
        let pool = try Pool.open(path: path, layout: "x")
        let p = try pool.allocate(bytes: 64)
        try pool.free(p)
        let e = #expect(throws: PoolError.self) { try pool.free(p) }
        #expect(e?.code == .invalidFree)
        #expect(e?.path == path)
        #expect(e?.description.hasPrefix("\(path): ") == true, "\(String(describing: e))")
        try pool.close()
    }
}
