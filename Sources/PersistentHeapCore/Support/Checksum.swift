import CPersistentHeap

/// CRC-32C (Castagnoli): the checksum of headers, run headers and logs.
/// Uses the SSE4.2 `crc32` instruction when the CPU has it.
@_spi(Core) public enum Checksum {
    /// CRC-32C of `count` bytes at `address`, continuing `crc` (start with 0).
    @inline(__always)
    @_spi(Core) public static func crc32c(_ address: UnsafeRawPointer, count: Int, continuing crc: UInt32 = 0) -> UInt32 {
        ph_crc32c(crc, address, count)
    }

    /// CRC-32C of a buffer.
    @_spi(Core) public static func crc32c(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return ph_crc32c(crc, base, bytes.count)
    }
}
