import PersistentHeap

/// Error-handling shapes around `Pool`, compiled with the package: if one stops compiling (or
/// crashes the compiler), the build fails.
///
/// Known compiler crash (swift-frontend 6.3.1, "Found outside of lifetime use?!"): at **top
/// level** in `main.swift`, a `do` block calling a `throws(PoolError)` function followed by
/// only `catch … where …` clauses (so the error can escape the top level) crashes
/// `MandatoryAllocBoxToStack` when the path is computed at run time. Inside a function it
/// compiles, as does the top-level form with a final plain `catch` — and `Pool.openOrCreate`
/// needs no `do` at all. The shapes below are the ones that compile.
enum ErrorShapes {
    static func check(path: String) throws {
        // Typed throws: inside `catch`, `error` is already a PoolError (no `as` cast needed —
        // `catch let e as PoolError` works too, with an "'as' test is always true" warning).
        do {
            _ = try Pool.open(path: path + ".missing", layout: "todo")
        } catch where error.code == .fileNotFound {
            // expected
        } catch {
            throw error
        }

        // A `switch` over the code, with the message for the user.
        do {
            _ = try Pool.open(path: path, layout: "not-todo")
        } catch {
            switch error.code {
            case .layoutMismatch, .poolBusy: break   // expected: the layout differs; or open above
            default: throw error
            }
        }

        // Untyped `throws` callers see an `any Error`, cast as usual.
        func untyped() throws { _ = try Pool.open(path: path + ".missing", layout: "todo") }
        do { try untyped() } catch let e as PoolError where e.code == .fileNotFound {}
    }
}
