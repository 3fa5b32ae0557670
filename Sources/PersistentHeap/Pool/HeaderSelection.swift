/// Chooses between the two header copies at open.
///
/// - both valid: the primary wins (it is always written first); a differing backup is repaired;
/// - one valid: it is used and the other is rewritten from it;
/// - none valid: the most specific error — a newer major version or unknown feature flag in
///   either copy, else `notAPool` when neither copy has the magic, else `corruptedHeader`.
enum HeaderSelection {
    enum Repair: Equatable { case none, primary, backup }

    static func select(primary: UnsafeRawBufferPointer, backup: UnsafeRawBufferPointer?, path: String?)
        throws(PoolError) -> (PoolHeader, Repair)
    {
        let p = PoolHeader.decode(primary)
        let b = backup.map { PoolHeader.decode($0) } ?? .failure(.badMagic)
        for r in [p, b] {
            if case .failure(.versionTooNew(let major, let minor)) = r {
                throw PoolError(.versionTooNew, "the pool has format version \(major).\(minor); this library reads version \(Format.major).x", path: path)
            }
            if case .failure(.unsupportedFeature(let flags)) = r {
                throw PoolError(.unsupportedFeature, "the pool uses incompatible feature flags 0x\(String(flags, radix: 16))", path: path)
            }
        }
        switch (p, b) {
        case (.success(let h), .success(let hb)):
            return (h, h == hb ? .none : .backup)
        case (.success(let h), .failure):
            return (h, .backup)
        case (.failure, .success(let h)):
            return (h, .primary)
        case (.failure(let fp), .failure(let fb)):
            if fp == .badMagic && fb == .badMagic {
                throw PoolError(.notAPool, "not a PersistentHeap pool (no pool header)", path: path)
            }
            var why = "both header copies are damaged"
            if case .inconsistent(let s) = fp { why += ": \(s)" } else if case .inconsistent(let s) = fb { why += ": \(s)" }
            throw PoolError(.corruptedHeader, why, path: path)
        }
    }
}
