#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An error from a pool operation: what went wrong (``code``), a human-readable message,
/// the pool file when there is one, and the `errno` of the failing system call when there is one.
///
/// Codes are a struct over a private enum, so new codes can be added without breaking
/// exhaustive `switch` statements in client code; compare with `==`.
public struct PoolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Kind: String, Hashable, Sendable {
            case fileNotFound, isDirectory, permissionDenied, alreadyExists, ioError
            case tooSmall, truncated, notAPool, corruptedHeader, corrupted
            case layoutMismatch, versionTooNew, versionTooOld, unsupportedFeature
            case poolBusy, readOnly, closed
            case outOfSpace, invalidArgument, invalidPointer, invalidFree
            case transactionMisuse, logOverflow
        }
        fileprivate let kind: Kind
        fileprivate init(_ kind: Kind) { self.kind = kind }

        /// The pool file does not exist.
        public static let fileNotFound = Code(.fileNotFound)
        /// The path names a directory, not a pool file.
        public static let isDirectory = Code(.isDirectory)
        /// The process may not open the file in the requested mode.
        public static let permissionDenied = Code(.permissionDenied)
        /// `create` was asked to make a pool where a file already exists.
        public static let alreadyExists = Code(.alreadyExists)
        /// A system call failed (see ``PoolError/errno``).
        public static let ioError = Code(.ioError)
        /// The file (or the requested size) is smaller than the smallest possible pool.
        public static let tooSmall = Code(.tooSmall)
        /// The header records a pool larger than the file: the file was truncated.
        public static let truncated = Code(.truncated)
        /// The file does not start with a pool header (wrong magic in both copies).
        public static let notAPool = Code(.notAPool)
        /// Both header copies fail their checksum or hold impossible values.
        public static let corruptedHeader = Code(.corruptedHeader)
        /// Heap metadata (unit table, run headers, logs) is inconsistent.
        public static let corrupted = Code(.corrupted)
        /// The pool was created with a different layout name.
        public static let layoutMismatch = Code(.layoutMismatch)
        /// The pool was written by a newer, incompatible format version.
        public static let versionTooNew = Code(.versionTooNew)
        /// The pool was written in an older format this version no longer reads (open it with
        /// the release that wrote it and copy its data out).
        public static let versionTooOld = Code(.versionTooOld)
        /// The pool uses a feature flag this version does not know.
        public static let unsupportedFeature = Code(.unsupportedFeature)
        /// Another writer (this process or another) has the pool open.
        public static let poolBusy = Code(.poolBusy)
        /// The pool was opened read-only and the operation would modify it.
        public static let readOnly = Code(.readOnly)
        /// The pool has been closed.
        public static let closed = Code(.closed)
        /// No free space is left and the pool cannot grow further.
        public static let outOfSpace = Code(.outOfSpace)
        /// An argument is out of range (size, alignment, layout name, …).
        public static let invalidArgument = Code(.invalidArgument)
        /// A persistent pointer is null, misaligned, or outside the heap.
        public static let invalidPointer = Code(.invalidPointer)
        /// A pointer given to `free` is not a live allocation (double free or not a block start).
        public static let invalidFree = Code(.invalidFree)
        /// A transaction was used outside its scope or from another thread.
        public static let transactionMisuse = Code(.transactionMisuse)
        /// A log record does not fit in the space available for it.
        public static let logOverflow = Code(.logOverflow)

        public var description: String { kind.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// A one-line human-readable explanation.
    public let message: String
    /// The pool file involved, if any.
    public let path: String?
    /// The `errno` of the failing system call, if any.
    public let errno: Int32?

    /// Creates an error. Library code uses the factories below.
    public init(_ code: Code, _ message: String, path: String? = nil, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.path = path
        self.errno = errno
    }

    public var description: String {
        var s = ""
        if let path { s += "\(path): " }
        s += message
        if let errno, let c = strerror(errno) { s += " (\(String(cString: c)), errno \(errno))" }
        return s
    }

    /// An error for a failed system call `call` with `errno` `err`, mapped to the most specific code.
    static func syscall(_ call: String, errno err: Int32, path: String?) -> PoolError {
        let code: Code
        switch err {
        case ENOENT: code = .fileNotFound
        case EISDIR: code = .isDirectory
        case EACCES, EPERM, EROFS: code = .permissionDenied
        case EEXIST: code = .alreadyExists
        case ENOSPC, EFBIG, ENOMEM: code = .outOfSpace
        case EWOULDBLOCK: code = .poolBusy
        default: code = .ioError
        }
        let what: String
        switch code {
        case .fileNotFound: what = PoolError.missingDirectory(of: path).map { "the directory \($0) does not exist" } ?? "no such pool file"
        case .isDirectory: what = "is a directory, not a pool file"
        case .permissionDenied: what = "permission denied"
        case .alreadyExists: what = "a file already exists at this path"
        case .outOfSpace: what = "\(call) failed: no space"
        default: what = "\(call) failed"
        }
        return PoolError(code, what, path: path, errno: err)
    }
}

extension PoolError {
    /// The directory part of `path` when that directory does not exist (why a file in it
    /// cannot be found or created), else nil.
    static func missingDirectory(of path: String?) -> String? {
        guard let path, let slash = path.lastIndex(of: "/") else { return nil }
        let dir = slash == path.startIndex ? "/" : String(path[..<slash])
        return access(dir, F_OK) == 0 ? nil : dir
    }
}

/// Runs `body`, which throws only `PoolError`, through a `rethrows` API (such as
/// `Array.withUnsafeBytes`) and gives the error its type back.
@inline(__always)
func typedThrows<R>(_ body: () throws -> R) throws(PoolError) -> R {
    do { return try body() } catch let error as PoolError { throw error } catch {
        throw PoolError(.ioError, "unexpected error: \(error)")
    }
}
