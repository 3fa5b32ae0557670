// The types of the core that are part of this module's API (errors, the persistence layer and
// its simulated media, byte views, check reports) are re-exported: `import PersistentHeap` is all
// an application needs.
@_exported import PersistentHeapCore
