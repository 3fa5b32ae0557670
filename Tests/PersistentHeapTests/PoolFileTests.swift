#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PHeapTestSupport
import Testing
@_spi(Containers) @testable import PersistentHeap
@testable import PersistentCollections
@_spi(Allocator) @testable import PersistentHeapAllocator
@_spi(Core) @testable import PersistentHeapCore

struct Account: BitwiseCopyable, Equatable {
    var id: Int
    var balance: Int
    var next: PPointer<Account>
}

/// Expects `pool.check()` to find nothing, and shows what it found otherwise.
func expectConsistent(_ pool: Pool, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        let findings = try pool.check().findings
        #expect(findings.isEmpty, "\(findings)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("check() threw \(error)", sourceLocation: sourceLocation)
    }
}

/// Expects `body` to throw a `PoolError` with `code`; returns it.
@discardableResult
func expectPoolError<R>(_ code: PoolError.Code, sourceLocation: SourceLocation = #_sourceLocation,
                        _ body: () throws -> R) -> PoolError? {
    do {
        _ = try body()
        Issue.record("expected \(code), but the call succeeded", sourceLocation: sourceLocation)
    } catch let e as PoolError {
        #expect(e.code == code, "got \(e)", sourceLocation: sourceLocation)
        #expect(!e.message.isEmpty, sourceLocation: sourceLocation)
        return e
    } catch {
        Issue.record("expected PoolError \(code), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

@Suite("Pool files")
struct PoolFileTests {
    let dir = ScratchDirectory("pool-files")

    @Test("create → write root → close → open → read, on disk (msync) and tmpfs")
    func roundTrip() throws {
        for memory in [false, true] {
            let d = ScratchDirectory("roundtrip", memory: memory)
            let path = d.file("a.pool")
            let pool = try Pool.create(path: path, size: 1 << 20, layout: "bank")
            #expect(pool.previousShutdownWasClean)
            #expect(pool.persistence.domain == .msync)
            let root = try pool.root(Account.self)
            #expect(try pool.load(root) == Account(id: 0, balance: 0, next: .null))
            try pool.store(Account(id: 7, balance: 1000, next: .null), at: root)
            let uuid = pool.uuid
            try pool.close()

            let again = try Pool.open(path: path, layout: "bank")
            #expect(again.previousShutdownWasClean)
            #expect(again.uuid == uuid)
            let r = try again.root(Account.self)
            #expect(r == root)
            #expect(try again.load(r) == Account(id: 7, balance: 1000, next: .null))
            #expect(again.info.state == "dirty")  // open for writing right now
            try again.close()
            #expect(try PoolInfo.read(path: path).state == "clean")
        }
    }

    @Test("create refuses bad arguments and existing files")
    func createErrors() throws {
        let path = dir.file("c.pool")
        expectPoolError(.tooSmall) { try Pool.create(path: path, size: 4096, layout: "x") }
        expectPoolError(.invalidArgument) { try Pool.create(path: path, size: 1 << 20, layout: String(repeating: "x", count: 65)) }
        expectPoolError(.invalidArgument) { try Pool.create(path: path, size: 1 << 20, layout: "a\0b") }
        #expect(access(path, F_OK) != 0, "a failed create leaves no file")
        try Pool.create(path: path, size: 1 << 20, layout: String(repeating: "é", count: 32)).close() // 64 bytes
        expectPoolError(.alreadyExists) { try Pool.create(path: path, size: 1 << 20, layout: "x") }
        expectPoolError(.fileNotFound) { try Pool.create(path: dir.file("missing/dir/x.pool"), size: 1 << 20, layout: "x") }
    }

    @Test("every kind of bad file gets a typed error and is left untouched")
    func badFiles() throws {
        let good = dir.file("good.pool")
        try Pool.create(path: good, size: 1 << 20, layout: "app").close()
        let goodBytes = FileBytes.read(good)!

        expectPoolError(.fileNotFound) { try Pool.open(path: dir.file("nope.pool"), layout: "app") }
        expectPoolError(.isDirectory) { try Pool.open(path: dir.path, layout: "app") }
        expectPoolError(.isDirectory) { try Pool.open(path: dir.path, layout: "app", options: PoolOptions(readOnly: true)) }

        let empty = dir.file("empty.pool")
        FileBytes.write(empty, [])
        expectPoolError(.tooSmall) { try Pool.open(path: empty, layout: "app") }

        let tiny = dir.file("tiny.pool")
        FileBytes.write(tiny, Array(goodBytes.prefix(100)))
        expectPoolError(.tooSmall) { try Pool.open(path: tiny, layout: "app") }

        // Truncated: headers intact, size field larger than the file.
        let truncated = dir.file("truncated.pool")
        FileBytes.write(truncated, Array(goodBytes.prefix(goodBytes.count / 2)))
        expectPoolError(.truncated) { try Pool.open(path: truncated, layout: "app") }
        expectPoolError(.truncated) { try PoolInfo.read(path: truncated) }

        var rng = RepeatableRandomNumberGenerator(seed: 42)
        let garbage = dir.file("garbage.pool")
        FileBytes.write(garbage, (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        expectPoolError(.notAPool) { try Pool.open(path: garbage, layout: "app") }

        let zeros = dir.file("zeros.pool")
        FileBytes.write(zeros, [UInt8](repeating: 0, count: 1 << 20))
        expectPoolError(.notAPool) { try Pool.open(path: zeros, layout: "app") }

        let e = expectPoolError(.layoutMismatch) { try Pool.open(path: good, layout: "other") }
        #expect(e?.message.contains("app") == true)
        #expect(e?.path == good)
        #expect(FileBytes.read(good)! == goodBytes, "failed opens must not modify the pool")
        #expect(try PoolInfo.read(path: good).state == "clean")
    }

    @Test("header corruption: a damaged primary is repaired from the backup and vice versa")
    func headerRepair() throws {
        for damaged in [Format.primaryHeaderOffset, Format.backupHeaderOffset] {
            let path = dir.file("repair-\(damaged).pool")
            let pool = try Pool.create(path: path, size: 1 << 20, layout: "app")
            try pool.store(99, at: try pool.root(Int.self))
            try pool.close()
            FileBytes.patch(path, at: damaged + HeaderField.poolSize, [0xde, 0xad])  // checksum now fails
            let p = try Pool.open(path: path, layout: "app")
            #expect(p.repairedHeader)
            #expect(try p.load(try p.root(Int.self)) == 99)
            try p.close()
            let bytes = FileBytes.read(path)!
            #expect(bytes[0..<Format.headerSize] == bytes[Format.backupHeaderOffset..<(Format.backupHeaderOffset + Format.headerSize)])
            let q = try Pool.open(path: path, layout: "app")
            #expect(!q.repairedHeader)
            try q.close()
        }
        // Both copies damaged.
        let path = dir.file("both.pool")
        try Pool.create(path: path, size: 1 << 20, layout: "app").close()
        FileBytes.patch(path, at: HeaderField.poolSize, [1])
        FileBytes.patch(path, at: Format.backupHeaderOffset + HeaderField.layout, [0x41])
        expectPoolError(.corruptedHeader) { try Pool.open(path: path, layout: "app") }
        // A header whose checksum holds but whose geometry is impossible.
        let liar = dir.file("liar.pool")
        try Pool.create(path: liar, size: 1 << 20, layout: "app").close()
        var bytes = FileBytes.read(liar)!
        var h = bytes.withUnsafeBytes { PoolHeader.decode(UnsafeRawBufferPointer(rebasing: $0[0..<256])) }
        guard case .success(var header) = h else { Issue.record("decode failed"); return }
        header.poolSize += 123  // not a whole number of units
        let enc = header.encode()
        bytes.replaceSubrange(0..<256, with: enc)
        bytes.replaceSubrange(Format.backupHeaderOffset..<(Format.backupHeaderOffset + 256), with: enc)
        FileBytes.write(liar, bytes)
        h = bytes.withUnsafeBytes { PoolHeader.decode(UnsafeRawBufferPointer(rebasing: $0[0..<256])) }
        #expect(h == .failure(.inconsistent("pool size \(header.poolSize)")))
        expectPoolError(.corruptedHeader) { try Pool.open(path: liar, layout: "app") }
    }

    @Test("versions: a newer major is refused, any minor of our major opens, unknown incompatible features are refused")
    func versions() throws {
        let path = dir.file("v.pool")
        try Pool.create(path: path, size: 1 << 20, layout: "app").close()
        let original = FileBytes.read(path)!
        guard case .success(let fresh) = original.withUnsafeBytes({ PoolHeader.decode(UnsafeRawBufferPointer(rebasing: $0[0..<256])) }) else {
            Issue.record("decode failed"); return
        }
        func rewrite(_ path: String, _ change: (inout PoolHeader) -> Void) {
            var bytes = FileBytes.read(path)!
            var header = fresh
            change(&header)
            let enc = header.encode()
            bytes.replaceSubrange(0..<256, with: enc)
            bytes.replaceSubrange(Format.backupHeaderOffset..<(Format.backupHeaderOffset + 256), with: enc)
            FileBytes.write(path, bytes)
        }
        rewrite(path) { $0.minor = 9 }
        let p = try Pool.open(path: path, layout: "app")
        #expect(p.info.version == "\(Format.major).9")
        try p.close()
        rewrite(path) { $0.minor = 0 }
        try Pool.open(path: path, layout: "app").close()
        rewrite(path) { $0.major = Format.major + 1 }
        expectPoolError(.versionTooNew) { try Pool.open(path: path, layout: "app") }
        expectPoolError(.versionTooNew) { try PoolInfo.read(path: path) }
        // Format 1 (one unit table for the maximum size) is refused with its own error.
        rewrite(path) { $0.major = 1 }
        expectPoolError(.versionTooOld) { try Pool.open(path: path, layout: "app") }
        expectPoolError(.versionTooOld) { try PoolInfo.read(path: path) }
        rewrite(path) { $0.incompatFlags = 1 << 40 }
        expectPoolError(.unsupportedFeature) { try Pool.open(path: path, layout: "app") }
    }

    @Test("exclusive access within one process: a second writer gets poolBusy; readers share")
    func busyInProcess() throws {
        let path = dir.file("busy.pool")
        let pool = try Pool.create(path: path, size: 1 << 20, layout: "app")
        expectPoolError(.poolBusy) { try Pool.open(path: path, layout: "app") }
        expectPoolError(.poolBusy) { try Pool.open(path: path, layout: "app", options: PoolOptions(readOnly: true)) }
        try pool.close()
        let r1 = try Pool.open(path: path, layout: "app", options: PoolOptions(readOnly: true))
        let r2 = try Pool.open(path: path, layout: "app", options: PoolOptions(readOnly: true))
        expectPoolError(.poolBusy) { try Pool.open(path: path, layout: "app") }
        expectPoolError(.readOnly) { try r1.allocate(bytes: 8) }
        expectPoolError(.readOnly) { try r1.root(Int.self) }
        try r1.close()
        try r2.close()
        try Pool.open(path: path, layout: "app").close()
    }

    @Test("exclusive access across processes: a pool held by another process is poolBusy")
    func busyAcrossProcesses() throws {
        let path = dir.file("busy2.pool")
        try Pool.create(path: path, size: 1 << 20, layout: "app").close()
        let child = try ChildProcess(executable: siblingExecutable("pheap-crash-helper"), arguments: ["hold", path, "app"])
        _ = try child.waitForLine { $0.hasPrefix("READY") }
        expectPoolError(.poolBusy) { try Pool.open(path: path, layout: "app") }
        expectPoolError(.poolBusy) { try Pool.open(path: path, layout: "app", options: PoolOptions(readOnly: true)) }
        #expect(try PoolInfo.read(path: path).state == "dirty")  // info works on a pool in use
        child.kill()
        #expect(child.wasKilled())
        let p = try Pool.open(path: path, layout: "app")
        #expect(!p.previousShutdownWasClean, "the holder was killed without close()")
        try p.close()
        let q = try Pool.open(path: path, layout: "app")
        #expect(q.previousShutdownWasClean)
        try q.close()
    }

    @Test("permission denied: read-write open of a read-only file fails; read-only open works")
    func permissions() throws {
        let path = dir.file("ro.pool")
        try Pool.create(path: path, size: 1 << 20, layout: "app").close()
        chmod(path, 0o444)
        defer { chmod(path, 0o644) }
        let ro = try Pool.open(path: path, layout: "app", options: PoolOptions(readOnly: true))
        try ro.close()
        if geteuid() != 0 {
            expectPoolError(.permissionDenied) { try Pool.open(path: path, layout: "app") }
        } else {
            // Root bypasses file permissions: run the CLI as `nobody` to exercise the same path.
            let (code, out, err) = try runProcess("/usr/bin/setpriv",
                ["--reuid=65534", "--regid=65534", "--clear-groups", siblingExecutable("pheap"), "check", path])
            #expect(code == 1, "stdout: \(out) stderr: \(err)")
            #expect(err.contains("permission denied"))
            #expect(err.split(separator: "\n").count == 1)
        }
    }

    @Test("unsafe shutdown is detected: a pool dropped without close() reports it")
    func uncleanShutdown() throws {
        // A simulated pool's durable image taken while open is what a crash leaves.
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "app")
        try pool.store(5, at: try pool.root(Int.self))
        let image = pool.simulatedMedia!.durableImage()
        try pool.close()
        let clean = pool.simulatedMedia!.durableImage()
        let crashed = try Pool.openSimulated(image: image, layout: "app")
        #expect(!crashed.previousShutdownWasClean)
        #expect(try crashed.load(try crashed.root(Int.self)) == 5)
        let reopened = try Pool.openSimulated(image: clean, layout: "app")
        #expect(reopened.previousShutdownWasClean)
    }

    @Test("growth maps the new bytes in place: the base address and all data stay")
    func growthKeepsBase() throws {
        for simulated in [false, true] {
            let path = dir.file("grow-\(simulated).pool")
            let pool = simulated
                ? try Pool.createSimulated(size: 512 << 10, layout: "g", options: PoolOptions(maxSize: 8 << 20, growthStep: 256 << 10))
                : try Pool.create(path: path, size: 512 << 10, layout: "g", options: PoolOptions(maxSize: 8 << 20, growthStep: 256 << 10))
            let base = pool.baseAddress
            let startSize = pool.size
            var ptrs: [PPointer<UInt64>] = []
            for i in 0..<400 {
                let p = try pool.allocate(UInt64.self, count: 1000)
                try pool.store(UInt64(i), at: p)
                ptrs.append(p)
                if pool.size > startSize * 4 { break }
            }
            #expect(pool.size > startSize, "the pool grew")
            #expect(pool.baseAddress == base)
            for (i, p) in ptrs.enumerated() { #expect(try pool.load(p) == UInt64(i)) }
            expectPoolError(.outOfSpace) { try pool.allocate(bytes: 64 << 20) }
            expectConsistent(pool)
            if !simulated {
                let grown = pool.size
                try pool.close()
                let again = try Pool.open(path: path, layout: "g")
                #expect(again.size == grown)
                for (i, p) in ptrs.enumerated() { #expect(try again.load(p) == UInt64(i)) }
                try again.close()
            }
        }
    }

    @Test("pointer validation: null, misaligned and out-of-bounds pointers get invalidPointer")
    func pointerValidation() throws {
        let pool = try Pool.createSimulated(size: 1 << 20, layout: "p")
        let p = try pool.allocate(Account.self)
        try pool.store(Account(id: 1, balance: 2, next: .null), at: p)
        #expect(try pool.load(p).balance == 2)
        #expect(pool.unsafeAddress(of: p).pointee.balance == 2)
        #expect(pool[p].id == 1)
        pool[p] = Account(id: 3, balance: 4, next: p)
        #expect(try pool.load(p).next == p)
        expectPoolError(.invalidPointer) { try pool.load(PPointer<Account>.null) }
        expectPoolError(.invalidPointer) { try pool.load(PPointer<Account>(offset: p.offset + 4)) }
        expectPoolError(.invalidPointer) { try pool.load(PPointer<UInt64>(offset: UInt64(pool.size))) }
        expectPoolError(.invalidPointer) { try pool.load(PPointer<UInt64>(offset: UInt64(pool.size - 4))) }
        expectPoolError(.invalidPointer) { try pool.load(PPointer<UInt64>(offset: 8)) }  // header, not heap
        expectPoolError(.invalidPointer) { try pool.store(1, at: PPointer<UInt64>(offset: 1 << 40)) }
        expectPoolError(.invalidPointer) { try pool.withUnsafeMutablePointer(to: p, count: 1 << 30) { _ in } }
        #expect(p.field(\.balance).offset == p.offset + 8)
        #expect(MemoryLayout<PPointer<Account>>.size == 8)
        try pool.close()
        expectPoolError(.closed) { try pool.load(p) }
    }

    @Test("persistence domains: MAP_SYNC falls back on tmpfs and ext4, options and the force switch choose flush")
    func domains() throws {
        for memory in [false, true] {
            let d = ScratchDirectory("domain", memory: memory)
            let auto = try Pool.create(path: d.file("a.pool"), size: 1 << 20, layout: "d")
            #expect(!auto.mapping.mapSync, "no DAX here: MAP_SYNC must have fallen back")
            #expect(auto.persistence.domain == .msync)
            try auto.close()
            for (option, domain) in [(PoolOptions.Durability.cacheLineFlush, PersistenceDomain.cacheLineFlush),
                                     (.fenceOnly, .fenceOnly), (.msync, .msync)] {
                let p = try Pool.open(path: d.file("a.pool"), layout: "d", options: PoolOptions(durability: option))
                #expect(p.persistence.domain == domain)
                #expect(["clwb", "clflushopt", "clflush"].contains(p.persistence.flushInstruction))
                try p.store(1, at: try p.root(Int.self))
                try p.close()
            }
            // The environment switch, seen by a child process.
            let (code, out, _) = try runProcess(siblingExecutable("pheap"), ["info", "--json", d.file("a.pool")],
                                                environment: ["PHEAP_FORCE_PMEM": "1"])
            #expect(code == 0)
            #expect(out.contains("\"domain\":\"flush\""))
            let (_, out2, _) = try runProcess(siblingExecutable("pheap"), ["info", "--json", d.file("a.pool")],
                                              environment: ["PHEAP_FORCE_PMEM": "0"])
            #expect(out2.contains("\"domain\":\"msync\""))
        }
    }

    @Test("persistence counters count flushed lines, fences and msync calls")
    func counters() throws {
        let d = ScratchDirectory("counters")
        let pool = try Pool.create(path: d.file("c.pool"), size: 1 << 20, layout: "c", options: PoolOptions(durability: .msync))
        let p = try pool.allocate(UInt64.self, count: 32)
        let before = PersistenceCounters.current
        try pool.persist(p, count: 32)  // 256 bytes = 4 lines, 1 fence, 1 msync
        let delta = PersistenceCounters.current.since(before)
        #expect(delta.fences == 1)
        #expect(delta.msyncCalls == 1)
        #expect(delta.flushedLines == 4 || delta.flushedLines == 5)
        try pool.close()
    }

    @Test("a process killed with SIGKILL after persisting the root finds it on reopen")
    func killAfterPersist() throws {
        let d = ScratchDirectory("kill")
        let path = d.file("counter.pool")
        var last = 0
        for round in 0..<3 {
            let child = try ChildProcess(executable: siblingExecutable("pheap-crash-helper"), arguments: ["counter", path])
            let start = try child.waitForLine { $0.hasPrefix("START") }
            #expect(Int(start.split(separator: " ")[1])! >= last)
            var n = 0
            for _ in 0..<(50 + round * 37) {
                let line = try child.waitForLine { $0.hasPrefix("PERSISTED") }
                n = Int(line.split(separator: " ")[1])!
            }
            child.kill()
            #expect(child.wasKilled())
            let pool = try Pool.open(path: path, layout: "crash-counter")
            #expect(!pool.previousShutdownWasClean)
            let root = try pool.load(try pool.root(CounterRootView.self))
            #expect(root.count >= n, "persisted value \(n) lost (found \(root.count))")
            #expect(root.check == root.count * 7 || root.check == (root.count - 1) * 7)
            expectConsistent(pool)
            last = root.count
            try pool.close()
        }
    }
}

/// The helper's counter root, as the test reads it.
struct CounterRootView: BitwiseCopyable {
    var count: Int
    var check: Int
}
