// The root object: the one persistent object a pool can always find, from which an
// application reaches everything else. Its offset lives in the root slot of the state page.

@_spi(Core) import PersistentHeapCore
@_spi(Allocator) import PersistentHeapAllocator

extension Pool {
    /// The pool offset of the root slot (an 8-byte persistent pointer in the state page).
    static let rootSlotOffset = StateField.rootSlot

    /// The root object, created zero-filled on first use.
    ///
    /// The first call allocates a `T` and links it into the root slot atomically; later calls
    /// (and later opens) return the same object. If the existing root is smaller than `T` (the
    /// application's root type grew), it is reallocated atomically, keeping its bytes and
    /// zero-filling the rest.
    public func root<T: BitwiseCopyable>(_ type: T.Type) throws(PoolError) -> PPointer<T> {
        try checkOpen()
        let size = max(MemoryLayout<T>.size, 1)
        return try rootLock.withLock { () throws(PoolError) -> PPointer<T> in
            let current = bytes.atomicLoad(Pool.rootSlotOffset, .acquiring)
            if current != 0 {
                let usable = try heap.usableSize(at: Int(truncatingIfNeeded: current))
                if usable >= size && current % UInt64(MemoryLayout<T>.alignment) == 0 { return PPointer(offset: current) }
                try checkWritable()
                return PPointer(offset: UInt64(try reallocateLinked(slot: Pool.rootSlotOffset, size: size, alignment: MemoryLayout<T>.alignment)))
            }
            try checkWritable()
            let x = try allocateLinked(size: size, alignment: MemoryLayout<T>.alignment, slot: Pool.rootSlotOffset,
                                       zeroed: true, fill: nil)
            return PPointer(offset: UInt64(x))
        }
    }

    /// The root object's pointer if one exists (without creating it).
    public var rootPointer: PRawPointer? {
        guard !isClosed else { return nil }
        let x = bytes.atomicLoad(Pool.rootSlotOffset, .acquiring)
        return x == 0 ? nil : PRawPointer(offset: x)
    }

    /// At open: the root slot must be null or point at a live allocation.
    func validateRoot() throws(PoolError) {
        let x = bytes.u64(Pool.rootSlotOffset)
        guard x != 0 else { return }
        do throws(PoolError) {
            _ = try heap.usableSize(at: Int(truncatingIfNeeded: x))
        } catch {
            throw PoolError(.corrupted, "the root slot holds 0x\(String(x, radix: 16)), which is not a live allocation", path: path)
        }
    }
}
