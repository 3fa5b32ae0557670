#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import PHeapTestSupport
import Testing
import PersistentCollections

/// The mutation fuzzer (`pheap-fuzz`, each case a child process): the saved corpus is replayed
/// and a few hundred fresh cases run on every `swift test`; `.ci/run` runs thousands, and
/// `PHEAP_LONG_TESTS=1 pheap-fuzz run` 200,000.
@Suite("Fuzzing")
struct FuzzTests {
    /// Tests/FuzzCorpus, found from this file's path.
    static let corpus: String = {
        var path = #filePath
        for _ in 0..<2 { if let slash = path.lastIndex(of: "/") { path = String(path[..<slash]) } }
        return path + "/FuzzCorpus"
    }()

    @Test("the corpus of once-crashing pool images replays without a crash or a hang")
    func corpusReplays() throws {
        #expect(access(Self.corpus, R_OK) == 0, "the corpus is in the repository")
        let (code, out, err) = try runProcess(siblingExecutable("pheap-fuzz"), ["replay", Self.corpus])
        #expect(code == 0, "\(out.suffix(2000)) \(err.suffix(500))")
        #expect(out.contains("0 crash, 0 hang"))
        #expect(!out.contains(" 0 cases"), "the corpus is not empty")
    }

    @Test("300 fresh mutated pool images: no crash, no hang, nothing the checks miss")
    func freshCases() throws {
        let save = ScratchDirectory("fuzz-failures")
        let (code, out, _) = try runProcess(siblingExecutable("pheap-fuzz"), ["run", "--cases", "300", "--seed", "77", "--save", save.path])
        #expect(code == 0, "\(out.suffix(3000))")
        let summary = out.split(separator: "\n").last.map(String.init) ?? ""
        #expect(summary.contains("0 missed by the checks, 0 broken by changes, 0 crash, 0 hang"), "\(summary)")
    }
}
