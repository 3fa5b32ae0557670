// pheap-fuzz: a mutation fuzzer over real pool images. Each case is one damaged pool file, run in
// its own child process with a timeout and classified: ok, refused at open, damage reported by
// the checks, missed by the checks, broken by changes — or crash / hang, the failures it hunts.
//
//   pheap-fuzz run [--cases N] [--seed S] [--jobs J] [--timeout SECONDS] [--save DIR]
//       N cases (default 5,000; 200,000 with PHEAP_LONG_TESTS=1); crashing and hanging cases
//       are saved in DIR (default .build/fuzz-failures) in the corpus format. Exit status 1 if
//       any case crashed, hung, or was missed or broken (see Outcome).
//   pheap-fuzz replay FILE_OR_DIR...
//       runs every saved case (the corpus, Tests/FuzzCorpus); exit status 1 on a crash or hang.
//   pheap-fuzz case POOL      (internal) one case, in the child
//   pheap-fuzz save-images DIR  writes the base images (seeds for libFuzzer, inspection)
//   pheap-fuzz save-seeds DIR   writes seed inputs for the libFuzzer targets (Fuzz/libfuzzer)
//   pheap-fuzz seed-corpus DIR  writes the damage signatures of the reliability issue as cases
//   pheap-fuzz craft OUT BASE OFFSET VALUE [reseal-logs|reseal-headers]   rebuilds a reported case
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import PersistentCollections
import PersistentHeap
@_spi(Core) import PersistentHeapCore
import PHeapTestSupport
import Synchronization

func say(_ s: String) {
    let b = Array((s + "\n").utf8)
    _ = b.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

func fail(_ s: String) -> Never {
    let b = Array(("pheap-fuzz: " + s + "\n").utf8)
    _ = b.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

/// The result of running one case in a child.
enum Verdict: Equatable {
    case outcome(Outcome)
    case crash(Int32)     // the signal
    case hang
    case unexpected(Int32) // another exit status (the child failed in an unplanned way)
}

/// Runs `pheap-fuzz case PATH` in a child with a timeout.
func runChild(_ path: String, timeout: Double, note: inout String) -> Verdict {
    let errPath = path + ".err"
    do {
        let child = try ChildProcess(executable: siblingExecutable("pheap-fuzz"), arguments: ["case", path],
                                     environment: ["SWIFT_BACKTRACE": "enable=no"], stderrPath: errPath)
        let deadline = monotonicSeconds() + timeout
        do {
            while let line = try child.readLine(timeout: max(0.01, deadline - monotonicSeconds())) { note = line }
        } catch {
            child.kill()
            child.wait()
            return .hang
        }
        if let code = child.exitCode {
            if let o = Outcome(rawValue: code) { return .outcome(o) }
            return .unexpected(code)
        }
        let status = child.wait()
        if let err = FileBytes.read(errPath), !err.isEmpty {
            note = String(decoding: err.prefix(400), as: UTF8.self).split(separator: "\n").first.map(String.init) ?? note
        }
        return .crash(status & 0x7f)
    } catch {
        fail("cannot spawn a case: \(error)")
    }
}

struct Options {
    var cases = ProcessInfoLite.longTests ? 200_000 : 5_000
    var seed: UInt64 = 1
    var jobs = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    var timeout = 20.0
    var save = ".build/fuzz-failures"
}

enum ProcessInfoLite {
    static var longTests: Bool { getenv("PHEAP_LONG_TESTS").map { String(cString: $0) == "1" } ?? false }
}

func parse(_ args: ArraySlice<String>) -> Options {
    var o = Options()
    var i = args.startIndex
    func value() -> String {
        i += 1
        guard i < args.endIndex else { fail("\(args[i - 1]) needs a value") }
        return args[i]
    }
    while i < args.endIndex {
        switch args[i] {
        case "--cases":
            guard let n = Int(value()) else { fail("--cases takes a number") }
            o.cases = n
        case "--seed":
            guard let n = UInt64(value()) else { fail("--seed takes a number") }
            o.seed = n
        case "--jobs":
            guard let n = Int(value()) else { fail("--jobs takes a number") }
            o.jobs = max(1, n)
        case "--timeout":
            guard let n = Double(value()) else { fail("--timeout takes seconds") }
            o.timeout = n
        case "--save": o.save = value()
        default: fail("unknown option \(args[i])")
        }
        i += 1
    }
    return o
}

/// Counts of a run, per verdict.
final class Tally: @unchecked Sendable {
    private let lock = Mutex<([String: Int], [String])>(([:], []))
    func add(_ key: String, failure: String? = nil) {
        lock.withLock { s in
            s.0[key, default: 0] += 1
            if let failure, s.1.count < 20 { s.1.append(failure) }
        }
    }
    var counts: [String: Int] { lock.withLock { $0.0 } }
    var failures: [String] { lock.withLock { $0.1 } }
}

func key(_ v: Verdict) -> String {
    switch v {
    case .outcome(let o): return o.label
    case .crash: return "crash"
    case .hang: return "hang"
    case .unexpected(let c): return "exit \(c)"
    }
}

func summary(_ t: Tally, cases: Int, seconds: Double) -> (String, Bool) {
    let c = t.counts
    let order = Outcome.allCases.map(\.label) + ["crash", "hang"]
    var parts = order.map { "\(c[$0] ?? 0) \($0)" }
    for (k, v) in c where !order.contains(k) { parts.append("\(v) \(k)") }
    // Crashes and hangs are what the fuzzer hunts; a pool the checks call consistent that then
    // fails (missed) or breaks (broke) is a hole in the deep check: both fail the run too.
    var bad = (c["crash"] ?? 0) + (c["hang"] ?? 0) + (c[Outcome.missed.label] ?? 0) + (c[Outcome.broke.label] ?? 0)
    for (k, v) in c where k.hasPrefix("exit ") { bad += v }
    let rate = Double(cases) / max(seconds, 1e-9)
    let head = "fuzz: \(cases) cases in \(fixed(seconds, 1)) s (\(Int(rate))/s): "
    return (head + parts.joined(separator: ", "), bad == 0)
}

/// `x` with `digits` decimals (no Foundation in this tool).
func fixed(_ x: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let n = Int((x * scale).rounded())
    let whole = n / Int(scale), frac = abs(n % Int(scale))
    let f = String(frac)
    return digits == 0 ? "\(whole)" : "\(whole)." + String(repeating: "0", count: digits - f.count) + f
}

func workDirectory() -> String {
    let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    let dir = "\(base)/pheap-fuzz-\(getpid())"
    mkdir(dir, 0o755)
    return dir
}

func removeDirectory(_ dir: String) {
    guard let d = opendir(dir) else { return }
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { unlink("\(dir)/\(name)") }
    }
    closedir(d)
    rmdir(dir)
}

func run(_ o: Options) -> Int32 {
    let images: [BaseImage]
    do { images = try BaseImages.make() } catch { fail("cannot build the base images: \(error)") }
    let work = workDirectory()
    defer { removeDirectory(work) }
    mkdir(o.save, 0o755)
    let tally = Tally()
    let next = Atomic<Int>(0)
    let started = monotonicSeconds()
    say("fuzz: \(o.cases) cases over \(images.count) base images (\(images.map(\.name).joined(separator: ", "))), \(o.jobs) jobs, seed \(o.seed)")
    DispatchQueue.concurrentPerform(iterations: o.jobs) { job in
        let path = "\(work)/case-\(job).pool"
        while true {
            let i = next.add(1, ordering: .relaxed).oldValue
            if i >= o.cases { break }
            let base = images[i % images.count]
            let seed = o.seed &* 1_000_003 &+ UInt64(i)
            var m = Mutator(base: base, seed: seed)
            let bytes = m.mutate()
            guard FileBytes.write(path, bytes) else { fail("cannot write \(path)") }
            var note = ""
            let v = runChild(path, timeout: o.timeout, note: &note)
            let k = key(v)
            switch v {
            case .crash, .hang, .unexpected:
                let name = "\(base.name)-seed\(o.seed)-case\(i)"
                let what = "\(k): \(name): \(m.log.joined(separator: "; ")) — \(note)"
                CorpusFile.write("\(o.save)/\(name).pheapcase", bytes: bytes, note: what)
                tally.add(k, failure: what)
            case .outcome(.missed), .outcome(.broke):
                tally.add(k, failure: "\(k): \(base.name) case \(i): \(m.log.joined(separator: "; ")) — \(note)")
            default:
                tally.add(k)
            }
            if (i + 1) % 1000 == 0 && i + 1 < o.cases {
                let (s, _) = summary(tally, cases: i + 1, seconds: monotonicSeconds() - started)
                say("progress: " + s)
            }
        }
    }
    let (s, ok) = summary(tally, cases: o.cases, seconds: monotonicSeconds() - started)
    for f in tally.failures { say("  \(f)") }
    say(s)
    if !ok { say("fuzz: failing cases saved in \(o.save) (add them to Tests/FuzzCorpus once fixed)") }
    return ok ? 0 : 1
}

func replay(_ paths: [String], timeout: Double) -> Int32 {
    var files: [String] = []
    for p in paths {
        if let d = opendir(p) {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name.hasSuffix(".pheapcase") { files.append("\(p)/\(name)") }
            }
            closedir(d)
        } else {
            files.append(p)
        }
    }
    files.sort()
    let work = workDirectory()
    defer { removeDirectory(work) }
    let tally = Tally()
    let started = monotonicSeconds()
    for f in files {
        guard let bytes = CorpusFile.read(f) else { fail("\(f): not a corpus file") }
        let path = "\(work)/replay.pool"
        guard FileBytes.write(path, bytes) else { fail("cannot write \(path)") }
        var note = ""
        let v = runChild(path, timeout: timeout, note: &note)
        switch v {
        case .crash, .hang, .unexpected: tally.add(key(v), failure: "\(key(v)): \(f) — \(note)")
        default: tally.add(key(v))
        }
    }
    let (s, ok) = summary(tally, cases: files.count, seconds: monotonicSeconds() - started)
    for f in tally.failures { say("  \(f)") }
    say("replay of the corpus: " + s)
    return ok ? 0 : 1
}

let args = CommandLine.arguments
guard args.count >= 2 else { fail("usage: pheap-fuzz run [--cases N] [--seed S] [--jobs J] | replay DIR | case POOL | save-images DIR") }
switch args[1] {
case "case":
    guard args.count == 3 else { fail("case POOL") }
    exit(runCase(path: args[2]).rawValue)
case "run":
    exit(run(parse(args.dropFirst(2))))
case "replay":
    guard args.count >= 3 else { fail("replay FILE_OR_DIR...") }
    exit(replay(Array(args.dropFirst(2)), timeout: 30))
case "save-images":
    guard args.count == 3 else { fail("save-images DIR") }
    do {
        mkdir(args[2], 0o755)
        for image in try BaseImages.make() { _ = FileBytes.write("\(args[2])/\(image.name).pool", image.bytes) }
    } catch {
        fail("\(error)")
    }
case "seed-corpus":
    guard args.count == 3 else { fail("seed-corpus DIR") }
    do { try Corpus.seed(into: args[2]) } catch { fail("\(error)") }
case "save-seeds":
    guard args.count == 3 else { fail("save-seeds DIR") }
    do { try Corpus.saveSeeds(into: args[2]) } catch { fail("\(error)") }
case "craft":
    do { try Corpus.craft(Array(args.dropFirst(2))) } catch { fail("\(error)") }
default:
    fail("unknown command \(args[1])")
}
