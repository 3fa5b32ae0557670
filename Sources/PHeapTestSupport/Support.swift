// Shared by the tests, the crash helper and the benchmarks.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(Glibc)
private func systemKill(_ pid: pid_t, _ signal: Int32) -> Int32 { Glibc.kill(pid, signal) }
#elseif canImport(Darwin)
private func systemKill(_ pid: pid_t, _ signal: Int32) -> Int32 { Darwin.kill(pid, signal) }
#endif
import PersistentHeap
import Synchronization

/// A seeded, repeatable generator (xoshiro256**): the same seed gives the same sequence on
/// every run and machine, so a failing seed can be replayed.
public struct RepeatableRandomNumberGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func mix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (mix(), mix(), mix(), mix())
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }
}

/// A directory for test files, removed (with its contents) when the value is dropped.
/// `memory: true` puts it on tmpfs (`/dev/shm`), else on the disk (`/tmp`).
public final class ScratchDirectory: @unchecked Sendable {
    public let path: String
    private static let counter = Atomic<Int>(0)

    public init(_ name: String = "pheap", memory: Bool = false) {
        let n = ScratchDirectory.counter.add(1, ordering: .relaxed).oldValue
        let base = memory && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
        path = "\(base)/\(name)-\(getpid())-\(n)-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(path, 0o755)
    }

    /// A path inside the directory.
    public func file(_ name: String) -> String { "\(path)/\(name)" }

    deinit { ScratchDirectory.remove(path) }

    static func remove(_ path: String) {
        guard let dir = opendir(path) else { unlink(path); return }
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name == "." || name == ".." { continue }
            let child = "\(path)/\(name)"
            var st = stat()
            if lstat(child, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR {
                chmod(child, 0o755)
                remove(child)
            } else {
                unlink(child)
            }
        }
        closedir(dir)
        rmdir(path)
    }
}

/// Reads and writes whole files (for damaging pools in tests).
public enum FileBytes {
    public static func read(_ path: String) -> [UInt8]? {
        guard let f = fopen(path, "rb") else { return nil }
        defer { fclose(f) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }

    @discardableResult
    public static func write(_ path: String, _ bytes: [UInt8]) -> Bool {
        guard let f = fopen(path, "wb") else { return false }
        defer { fclose(f) }
        return fwrite(bytes, 1, bytes.count, f) == bytes.count
    }

    /// Overwrites `bytes` at `offset` in place.
    @discardableResult
    public static func patch(_ path: String, at offset: Int, _ bytes: [UInt8]) -> Bool {
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return pwrite(fd, bytes, bytes.count, off_t(offset)) == bytes.count
    }
}

/// A child process started with `posix_spawn` (no fork), whose standard output is read line by
/// line. Used by crash tests: start a workload, wait for a line, kill it with SIGKILL.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    private let stdoutFD: Int32
    private var buffer: [UInt8] = []
    private var reaped: Int32?

    /// Starts `executable` with `arguments` (argv[0] is added). Its standard error goes to
    /// `stderrPath` when given (e.g. `/dev/null`), else to this process's.
    public init(executable: String, arguments: [String], environment: [String: String] = [:], stderrPath: String? = nil) throws {
        // One spawn at a time, pipe ends close-on-exec: a child spawned concurrently by another
        // thread must not inherit this pipe's write end (it would hold the pipe open past our
        // child's exit). dup2 onto fd 1 clears the flag in the child.
        let (rc, child, readEnd) = ChildProcess.spawnLock.withLock { _ -> (Int32, pid_t, Int32) in
            var pipeFDs: [Int32] = [0, 0]
            guard pipe(&pipeFDs) == 0 else { return (errno, 0, -1) }
            _ = fcntl(pipeFDs[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(pipeFDs[1], F_SETFD, FD_CLOEXEC)
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
            if let stderrPath { posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
            let (rc, child) = spawn(executable, arguments, environment, &actions)
            close(pipeFDs[1])
            if rc != 0 { close(pipeFDs[0]) }
            return (rc, child, pipeFDs[0])
        }
        guard rc == 0 else { throw ChildError.spawn("posix_spawn \(executable): \(rc)") }
        pid = child
        stdoutFD = readEnd
    }

    private static let spawnLock = Mutex<Void>(())

    public enum ChildError: Error, CustomStringConvertible {
        case spawn(String), timeout(String), exited(String)
        public var description: String {
            switch self { case .spawn(let s), .timeout(let s), .exited(let s): return s }
        }
    }

    /// The next line of standard output, waiting up to `timeout` seconds; nil at end of output.
    public func readLine(timeout: Double = 30) throws -> String? {
        let deadline = monotonicSeconds() + timeout
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            let left = deadline - monotonicSeconds()
            if left <= 0 { throw ChildError.timeout("no line from child \(pid) within \(timeout) s") }
            var p = pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(min(left, 1) * 1000))
            if r <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(stdoutFD, &chunk, chunk.count)
            if n <= 0 {
                if buffer.isEmpty { return nil }
                let line = String(decoding: buffer, as: UTF8.self)
                buffer.removeAll()
                return line
            }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// Reads lines until one satisfies `predicate`; returns it.
    public func waitForLine(timeout: Double = 30, where predicate: (String) -> Bool) throws -> String {
        let deadline = monotonicSeconds() + timeout
        while true {
            guard let line = try readLine(timeout: max(0.01, deadline - monotonicSeconds())) else {
                throw ChildError.exited("child \(pid) ended its output before the expected line (status \(wait()))")
            }
            if predicate(line) { return line }
        }
    }

    /// Sends `signal` (SIGKILL by default).
    public func kill(_ signal: Int32 = SIGKILL) { _ = systemKill(pid, signal) }

    /// Waits for the child to end and returns its raw wait status.
    @discardableResult
    public func wait() -> Int32 {
        if let reaped { return reaped }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        reaped = status
        return status
    }

    /// Whether the child ended because of `signal`.
    public func wasKilled(by signal: Int32 = SIGKILL) -> Bool {
        WaitStatus(wait()).signal == signal
    }

    /// The exit code if the child exited normally.
    public var exitCode: Int32? { WaitStatus(wait()).exitCode }

    deinit {
        if reaped == nil { kill(); wait() }
        close(stdoutFD)
    }
}

/// Seconds on the monotonic clock.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The path of an executable product built beside the running binary (tests run from
/// `.build/<config>/`, next to `pheap` and `pheap-crash-helper`).
public func siblingExecutable(_ name: String) -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    var dir = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "."
    // The Swift Testing / XCTest runner binary may sit inside a `.xctest` bundle.
    while let slash = dir.lastIndex(of: "/") {
        dir = String(dir[..<slash])
        if access("\(dir)/\(name)", X_OK) == 0 { return "\(dir)/\(name)" }
        if dir.isEmpty { break }
    }
    return name
}

/// Runs `executable` to completion and returns (exit code, standard output, standard error).
public func runProcess(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (Int32, String, String) {
    let dir = ScratchDirectory("run")
    let out = dir.file("out"), err = dir.file("err")
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let (rc, pid) = spawn(executable, arguments, environment, &actions)
    guard rc == 0 else { throw ChildProcess.ChildError.spawn("posix_spawn \(executable): \(rc)") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let o = String(decoding: FileBytes.read(out) ?? [], as: UTF8.self)
    let e = String(decoding: FileBytes.read(err) ?? [], as: UTF8.self)
    let w = WaitStatus(status)
    return (w.exitCode ?? -(w.signal ?? 0), o, e)
}

/// A `waitpid` status decoded (the `WIFEXITED`/`WTERMSIG` macros Swift does not import).
public struct WaitStatus {
    public let raw: Int32
    public init(_ raw: Int32) { self.raw = raw }
    /// The exit code, if the process exited normally.
    public var exitCode: Int32? { raw & 0x7f == 0 ? (raw >> 8) & 0xff : nil }
    /// The signal that ended the process, if one did.
    public var signal: Int32? {
        let s = raw & 0x7f
        return s != 0 && s != 0x7f ? s : nil
    }
}

/// `posix_spawn` of `executable` with `arguments` (argv[0] is added), this process's
/// environment with `overrides` applied, and `actions`. Returns its result and the child's pid.
func spawn(_ executable: String, _ arguments: [String], _ overrides: [String: String],
           _ actions: inout posix_spawn_file_actions_t) -> (rc: Int32, pid: pid_t) {
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    let envp = environmentBlock(overrides)
    defer { envp.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, nil, argv, envp)
    return (rc, pid)
}

/// This process's environment with `overrides` applied, as a NULL-terminated `strdup`'d block
/// for `posix_spawn` (the caller frees each entry).
private func environmentBlock(_ overrides: [String: String]) -> [UnsafeMutablePointer<CChar>?] {
    var env = [String]()
    var i = 0
    while let e = environ[i] { env.append(String(cString: e)); i += 1 }
    for (k, v) in overrides { env.removeAll { $0.hasPrefix("\(k)=") }; env.append("\(k)=\(v)") }
    return env.map { strdup($0) } + [nil]
}
