/// Chooses between the two header copies at open.
///
/// - both valid: the primary wins (it is always written first); a differing backup is repaired;
/// - one valid: it is used and the other is rewritten from it;
/// - none valid: the most specific error — a newer major version or unknown feature flag in
///   either copy, else `notAPool` when neither copy has the magic, else `corruptedHeader`.
@_spi(Core) public enum HeaderSelection {
    /// Which copy, if any, must be rewritten from the chosen one.
    @_spi(Core) public enum Repair: Equatable, Sendable { case none, primary, backup }

    /// Selects from a pool image (a file's bytes): the primary at 0, the backup at 0x1000.
    @_spi(Core) public static func select(image: [UInt8], path: String?) throws(PoolError) -> (PoolHeader, Repair) {
        guard image.count >= Format.headerSize else {
            throw PoolError(.tooSmall, "the image is \(image.count) bytes, smaller than a pool header", path: path)
        }
        let primary = Array(image[0..<Format.headerSize])
        let backupEnd = Format.backupHeaderOffset + Format.headerSize
        let backup = image.count >= backupEnd ? Array(image[Format.backupHeaderOffset..<backupEnd]) : nil
        return try select(primary: primary, backup: backup, path: path)
    }

    /// Reads both copies from the file with `pread` (no mapping: a short file cannot fault) and
    /// selects one.
    @_spi(Core) public static func read(_ fd: FileDescriptor, fileSize: Int) throws(PoolError) -> (PoolHeader, Repair) {
        if fileSize == 0 { throw PoolError(.tooSmall, "the file is empty", path: fd.path) }
        if fileSize < Format.headerSize {
            throw PoolError(.tooSmall, "the file is \(fileSize) bytes, smaller than a pool header", path: fd.path)
        }
        let primary = try fd.read(count: Format.headerSize, at: Format.primaryHeaderOffset)
        let backup = try fd.read(count: Format.headerSize, at: Format.backupHeaderOffset)
        return try select(primary: primary, backup: backup.count == Format.headerSize ? backup : nil, path: fd.path)
    }

    /// Selects between two header copies given as bytes.
    @_spi(Core) public static func select(primary: [UInt8], backup: [UInt8]?, path: String?) throws(PoolError) -> (PoolHeader, Repair) {
        try typedThrows {
            try primary.withUnsafeBytes { p in
                if let backup {
                    return try backup.withUnsafeBytes { b in try select(primary: p, backup: b, path: path) }
                }
                return try select(primary: p, backup: nil, path: path)
            }
        }
    }

    static func select(primary: UnsafeRawBufferPointer, backup: UnsafeRawBufferPointer?, path: String?)
        throws(PoolError) -> (PoolHeader, Repair)
    {
        let p = PoolHeader.decode(primary)
        let b = backup.map { PoolHeader.decode($0) } ?? .failure(.badMagic)
        for r in [p, b] {
            if case .failure(.versionTooNew(let major, let minor)) = r {
                throw PoolError(.versionTooNew, "the pool has format version \(major).\(minor); this library reads version \(Format.major).x", path: path)
            }
            if case .failure(.versionTooOld(let major, let minor)) = r {
                throw PoolError(.versionTooOld, "the pool has format version \(major).\(minor), which this library no longer reads (it reads version \(Format.major).x); open it with the release that wrote it and copy the data out", path: path)
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
