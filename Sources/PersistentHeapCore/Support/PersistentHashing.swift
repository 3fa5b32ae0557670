/// Hashes that are the same in every process (Swift's `Hasher` is seeded per process, so it
/// cannot be kept in a persistent table): FNV-1a over bytes, finished with a 64-bit mix.
public enum PersistentHashing {
    /// The hash of `bytes`.
    @inlinable
    public static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return finish(h)
    }

    /// The hash of the in-memory bytes of `value` (a fixed-layout value: an integer, a
    /// `BitwiseCopyable` struct without padding you care about).
    @inlinable
    public static func hash<T: BitwiseCopyable>(bytesOf value: T) -> UInt64 {
        withUnsafeBytes(of: value) { hash($0.bindMemory(to: UInt8.self)) }
    }

    /// The hash of `count` bytes of `view` at `offset`.
    public static func hash(_ view: ByteView, at offset: Int, count: Int) -> UInt64 {
        view.withUnsafeBytes { b in hash(UnsafeRawBufferPointer(rebasing: b[offset..<(offset + count)]).bindMemory(to: UInt8.self)) }
    }

    @usableFromInline
    static func finish(_ x: UInt64) -> UInt64 {
        var h = x
        h ^= h >> 33
        h = h &* 0xff51_afd7_ed55_8ccd
        return h ^ (h >> 33)
    }
}
