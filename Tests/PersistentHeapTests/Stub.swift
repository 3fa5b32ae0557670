import Testing
@testable import PersistentHeap

struct Counter { var value: Int; var other: Int }

@Test func smoke() throws {
    let pool = try Pool.createSimulated(size: 1 << 20, layout: "smoke")
    let root = try pool.root(Counter.self)
    try pool.store(Counter(value: 41, other: 1), at: root)
    try pool.withMutable(root) { $0.value += 1 }
    var ptrs: [PRawPointer] = []
    for i in 0..<2000 { ptrs.append(try pool.allocate(bytes: 16 + i % 300)) }
    for p in ptrs.prefix(1000) { try pool.free(p) }
    let big = try pool.allocate(bytes: 100_000)
    try pool.free(big)
    let image = pool.simulatedMedia!.crashImage(seed: 1, evictionProbability: 0)
    let again = try Pool.openSimulated(image: image, layout: "smoke")
    #expect(!again.previousShutdownWasClean)
    let r2 = try again.root(Counter.self)
    #expect(r2 == root)
    #expect(try again.load(r2).value == 42)
    for p in ptrs.suffix(1000) { #expect(again.isAllocated(p)) }
    for p in ptrs.prefix(1000) { #expect(!again.isAllocated(p)) }
}
