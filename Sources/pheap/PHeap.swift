import ArgumentParser
import Foundation
import PersistentHeap

/// `pheap`: create, inspect, check and use PersistentHeap pools from the shell.
@main
struct PHeap: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pheap",
        abstract: "Create, inspect and check PersistentHeap pools.",
        subcommands: [Create.self, Info.self, Check.self, Stats.self, KV.self, Demo.self])

    /// Runs the command; errors become one line on stderr and a non-zero exit status: bad
    /// arguments point at the subcommand's help, failures say what failed (no backtrace).
    static func main() {
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) } // --help, --version
            let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            let args = CommandLine.arguments.dropFirst()
            let sub = configuration.subcommands.map { $0._commandName }.first { args.first == $0 }
            fail("\(message) (see 'pheap \(sub.map { "\($0) " } ?? "")--help')", code: code.rawValue)
        }
        do {
            try command.run()
        } catch let error as PoolError {
            // One format everywhere: `pheap: PATH: message` — errors raised inside the heap carry
            // no path of their own.
            if error.path == nil, let path = (command as? PoolCommand)?.poolPath {
                fail("\(PoolError(error.code, error.message, path: path, errno: error.errno))", code: 1)
            }
            fail("\(error)", code: 1)
        } catch let error as CommandFailure {
            fail(error.message, code: error.code)
        } catch let error as ExitCode {
            Foundation.exit(error.rawValue)
        } catch {
            // `--help` and `help` run a command that "fails" with a clean exit: print the help.
            if exitCode(for: error) == .success { exit(withError: error) }
            let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            fail(message, code: 1)
        }
    }

    static func fail(_ message: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data("pheap: \(message)\n".utf8))
        Foundation.exit(code)
    }
}

/// A failure with its own exit status (e.g. `check` finding inconsistencies).
struct CommandFailure: Error {
    let message: String
    let code: Int32
}

/// Options shared by commands that take a pool path.
struct PoolPath: ParsableArguments {
    @Argument(help: "The pool file.")
    var path: String
}

/// A command working on one pool file: its errors are prefixed with that path.
protocol PoolCommand {
    var poolPath: String { get }
}

/// A byte size written like `4096`, `64KiB`, `64MiB`, `1GiB` (K/M/G/T and KiB/MiB/GiB/TiB are
/// powers of 1024; KB/MB/GB/TB powers of 1000; case does not matter).
struct ByteSize: CustomStringConvertible {
    let bytes: Int

    /// What `--help` says about sizes.
    static let syntax = "K/M/G/T or KiB/MiB/GiB/TiB = powers of 1024, KB/MB/GB/TB = powers of 1000"

    /// A parse error that says what is wrong with the text.
    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    /// Parses `argument` for an ArgumentParser option: a clear error for negative, zero,
    /// unknown-unit and overflowing sizes (`allowZero` for the growth step).
    static func parse(_ argument: String, allowZero: Bool = false) throws -> ByteSize {
        let s = argument.trimmingCharacters(in: .whitespaces)
        if s.hasPrefix("-") { throw Invalid(description: "a size cannot be negative") }
        guard let size = ByteSize(text: s) else {
            throw Invalid(description: "not a size: write a number with an optional unit (\(syntax))")
        }
        if size.bytes == 0 && !allowZero { throw Invalid(description: "a size must be greater than zero") }
        return size
    }

    init?(text s: String) {
        let digits = s.prefix { $0.isNumber }
        guard !digits.isEmpty, let n = Int(digits) else { return nil }
        let unit = s.dropFirst(digits.count).trimmingCharacters(in: .whitespaces).lowercased()
        let scale: Int
        switch unit {
        case "", "b": scale = 1
        case "k", "kib": scale = 1 << 10
        case "m", "mib": scale = 1 << 20
        case "g", "gib": scale = 1 << 30
        case "t", "tib": scale = 1 << 40
        case "kb": scale = 1_000
        case "mb": scale = 1_000_000
        case "gb": scale = 1_000_000_000
        case "tb": scale = 1_000_000_000_000
        default: return nil
        }
        let (v, overflow) = n.multipliedReportingOverflow(by: scale)
        guard !overflow else { return nil }
        bytes = v
    }

    var description: String { "\(bytes)" }
}

/// Prints `value` as one line of JSON with sorted keys.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// `1.5 MiB`-style rendering of a byte count (IEC units): the library's, so the map and the
/// statistics print sizes alike.
func humanBytes(_ n: Int) -> String { HeapMap.human(n) }
