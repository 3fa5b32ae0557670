// The corpus format: a damaged pool file stored sparsely (pools are mostly zeros), with a note
// saying how it was made and what it did.
//
//     "PHFZCASE"  magic
//     UInt64      file size
//     UInt32      note length, then the note (UTF-8)
//     chunks      (UInt64 offset, UInt32 length, bytes) of every non-zero 64-byte line, merged
import PHeapTestSupport

enum CorpusFile {
    static let magic = Array("PHFZCASE".utf8)

    static func write(_ path: String, bytes: [UInt8], note: String) {
        var out = magic
        func u64(_ v: Int) { for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        func u32(_ v: Int) { for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
        u64(bytes.count)
        let n = Array(note.utf8)
        u32(n.count)
        out += n
        var i = 0
        while i < bytes.count {
            let end = min(bytes.count, i + 64)
            if bytes[i..<end].allSatisfy({ $0 == 0 }) { i = end; continue }
            var j = end
            while j < bytes.count {
                let e = min(bytes.count, j + 64)
                if bytes[j..<e].allSatisfy({ $0 == 0 }) { break }
                j = e
            }
            u64(i)
            u32(j - i)
            out += bytes[i..<j]
            i = j
        }
        _ = FileBytes.write(path, out)
    }

    static func read(_ path: String) -> [UInt8]? {
        guard let b = FileBytes.read(path), b.count >= 20, Array(b[0..<8]) == magic else { return nil }
        var at = 8
        func u64() -> Int? {
            guard at + 8 <= b.count else { return nil }
            defer { at += 8 }
            return (0..<8).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) }
        }
        func u32() -> Int? {
            guard at + 4 <= b.count else { return nil }
            defer { at += 4 }
            return (0..<4).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) }
        }
        guard let size = u64(), size >= 0, size <= 1 << 30, let noteLength = u32(), at + noteLength <= b.count else { return nil }
        at += noteLength
        var out = [UInt8](repeating: 0, count: size)
        while at < b.count {
            guard let off = u64(), let len = u32(), off >= 0, len >= 0, off + len <= size, at + len <= b.count else { return nil }
            out.replaceSubrange(off..<(off + len), with: b[at..<(at + len)])
            at += len
        }
        return out
    }
}
