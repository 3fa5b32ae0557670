import Benchmark
import PersistentHeap

let benchmarks: @Sendable () -> Void = {}
