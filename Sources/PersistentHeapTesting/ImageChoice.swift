@_spi(Core) import PersistentHeapCore

/// One difference of a crash image from the durable state at its fence: a candidate line (or
/// one 8-byte word of it) that survived, with its flushed or its current contents.
struct Piece: Hashable, Sendable, CustomStringConvertible {
    /// Index into the fence's candidates.
    let candidate: Int
    /// The word (0–7), or -1 for the whole line.
    let word: Int
    /// The flushed contents (else the current ones).
    let flushed: Bool

    var description: String { "\(candidate)/\(word)/\(flushed)" }
}

/// The state at one fence from which its crash images are made.
struct FenceState {
    let snapshot: DurableSnapshot
    let candidates: [CandidateLine]
    /// Lines written over the snapshot before any piece (a crash during recovery: the image being
    /// recovered and what its recovery already made durable).
    var baseWrites: [LineWrite] = []

    /// The images of `mode` at this fence: each a list of pieces, chosen reproducibly from
    /// `seed` (the run), `fence` and the image's index.
    func images(_ mode: CrashMode, seed: UInt64, fence: Int, randomImages: Int, exhaustiveLimit: Int) -> [[Piece]] {
        let n = candidates.count
        switch mode {
        case .fence:
            let flushedLines = candidates.indices.filter { candidates[$0].flushed != nil }.map { Piece(candidate: $0, word: -1, flushed: true) }
            return flushedLines.isEmpty ? [[]] : [[], flushedLines]
        case .evictions:
            guard n > 0 else { return [] }
            return (0..<randomImages).map { i in
                var rng = SplitMix64(seed: FenceState.mix(seed, fence, 1, i))
                let p = [0.1, 0.5, 0.9][i % 3]
                var pieces: [Piece] = []
                for c in 0..<n {
                    let r = Double(rng.next() >> 11) / Double(1 << 53)
                    if r < p {
                        pieces.append(Piece(candidate: c, word: -1, flushed: false))
                    } else if candidates[c].flushed != nil && rng.next() & 1 == 1 {
                        pieces.append(Piece(candidate: c, word: -1, flushed: true))
                    }
                }
                return pieces
            }
        case .torn:
            guard n > 0 else { return [] }
            return (0..<randomImages).map { i in
                var rng = SplitMix64(seed: FenceState.mix(seed, fence, 2, i))
                var pieces: [Piece] = []
                for c in 0..<n {
                    let line = candidates[c]
                    for w in 0..<8 {
                        let old = line.durable.word(w)
                        let options = [line.current.word(w) != old ? false : nil,
                                       line.flushed.map { $0.word(w) != old && $0.word(w) != line.current.word(w) } == true ? true : nil]
                            .compactMap { $0 }
                        guard !options.isEmpty else { continue }   // this word never changed
                        let pick = Int(rng.next() % UInt64(options.count + 1))
                        if pick < options.count { pieces.append(Piece(candidate: c, word: w, flushed: options[pick])) }
                    }
                }
                return pieces
            }
        case .exhaustive:
            guard n > 0, n <= exhaustiveLimit else { return [] }
            return (0..<(1 << n)).map { bits in
                (0..<n).filter { bits & (1 << $0) != 0 }.map { Piece(candidate: $0, word: -1, flushed: false) }
            }
        }
    }

    /// The line writes that make the image of `pieces`.
    func writes(_ pieces: [Piece]) -> [LineWrite] {
        var base: [Int: SimulatedMedia.Line] = [:]
        for w in baseWrites { base[w.line] = w.contents }
        var lines: [Int: SimulatedMedia.Line] = [:]
        for p in pieces where p.word < 0 {
            let c = candidates[p.candidate]
            lines[p.candidate] = p.flushed ? (c.flushed ?? c.current) : c.current
        }
        for p in pieces where p.word >= 0 {
            let c = candidates[p.candidate]
            let source = p.flushed ? (c.flushed ?? c.current) : c.current
            lines[p.candidate] = (lines[p.candidate] ?? c.durable).replacing(word: p.word, with: source.word(p.word))
        }
        for (c, contents) in lines { base[candidates[c].line] = contents }
        return base.map { LineWrite(line: $0.key, contents: $0.value) }
    }

    /// A description of `pieces` for a failure report: which bytes of which lines survived.
    func describe(_ pieces: [Piece]) -> String {
        if pieces.isEmpty { return "nothing written since the previous fence survived" }
        return pieces.map { p in
            let offset = candidates[p.candidate].line << 6
            let what = p.flushed ? "flushed" : "current"
            return p.word < 0 ? "line at offset \(offset) (\(what) contents)"
                : "word at offset \(offset + p.word * 8) (\(what) contents)"
        }.joined(separator: ", ")
    }

    static func mix(_ a: UInt64, _ b: Int, _ c: Int, _ d: Int) -> UInt64 {
        var rng = SplitMix64(seed: a &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(b) &* 0xBF58_476D_1CE4_E5B9 ^ UInt64(c) << 56 ^ UInt64(d) << 40)
        return rng.next()
    }
}
