// CPersistentHeap: the few things PersistentHeap needs that Swift cannot express.
//
// - cache-line write-back (clwb / clflushopt / clflush) and the store fence, chosen by CPUID;
// - CRC-32C (SSE4.2 instruction when present, table otherwise);
// - atomic read-modify-write on raw (mapped) memory;
// - one thread-local slot per thread (counters and the lane cache), read inline.
//
// Everything here is small and audited; only PersistentHeapCore imports it (its Persistence,
// Checksum, PoolBytes, FixedArray, UnitInfo, SpinLock and ThreadContext types).
#ifndef CPERSISTENTHEAP_H
#define CPERSISTENTHEAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - CPU features

#define PH_CPU_CLFLUSHOPT 0x1u
#define PH_CPU_CLWB       0x2u
#define PH_CPU_SSE42      0x4u

/// Bitmask of PH_CPU_* features of the running CPU (CPUID).
uint32_t ph_cpu_features(void);

// MARK: - Flush and fence

/// Write back every cache line overlapping [p, p+len) with clwb (keeps the line cached).
void ph_flush_clwb(const void *p, size_t len);
/// Same with clflushopt (evicts the line).
void ph_flush_clflushopt(const void *p, size_t len);
/// Same with clflush (serialised, oldest instruction; always available on x86-64).
void ph_flush_clflush(const void *p, size_t len);

/// Store fence: orders every earlier flush of this thread before later stores.
static inline void ph_sfence(void) {
#if defined(__x86_64__)
    __asm__ __volatile__("sfence" ::: "memory");
#elif defined(__aarch64__)
    // DSB ISH waits for the preceding DC CVAP/CVAC to complete (the barrier PMDK uses on ARM).
    __asm__ __volatile__("dsb ish" ::: "memory");
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/// A hint to bring the cache line at `p` in for reading (no fault: an address outside the
/// mapping is ignored by the hardware).
static inline void ph_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

/// Spin-wait hint.
static inline void ph_pause(void) {
#if defined(__x86_64__)
    __asm__ __volatile__("pause" ::: "memory");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/// Copies the 64-byte line at `src` to `dst`: the simulated media's snapshot of a cache line at a
/// flush. Other threads may be storing to their own words of that line at the same moment (a
/// cache writes back whole lines while cores write them), so this copy is excluded from
/// ThreadSanitizer: the race is the hardware behaviour being simulated, not a bug.
void ph_copy_line(void *dst, const void *src);

// MARK: - CRC-32C (Castagnoli)

/// Continue a CRC-32C over [p, p+len). Start with crc = 0; the result is final
/// (pre/post inversion handled inside).
uint32_t ph_crc32c(uint32_t crc, const void *p, size_t len);

// MARK: - Atomics on raw memory (mapped pool memory is not Swift-managed)
//
// The memory ordering is part of each name. Swift reaches these only through the core's
// PoolBytes, FixedArray and UnitInfo (PersistentHeapCore), which name the ordering at each use.

static inline uint64_t ph_load_relaxed_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint64_t ph_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint64_t ph_load_seq_cst_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void ph_store_relaxed_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void ph_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void ph_store_seq_cst_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t ph_fetch_or_acq_rel_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_or(p, v, __ATOMIC_ACQ_REL); }
static inline uint64_t ph_fetch_or_seq_cst_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
static inline uint64_t ph_fetch_and_acq_rel_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_and(p, v, __ATOMIC_ACQ_REL); }
static inline uint64_t ph_fetch_and_seq_cst_u64(uint64_t *p, uint64_t v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
static inline int ph_compare_exchange_seq_cst_u64(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline int32_t ph_load_seq_cst_i32(const int32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void ph_store_seq_cst_i32(int32_t *p, int32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline int32_t ph_fetch_add_seq_cst_i32(int32_t *p, int32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline uint8_t ph_load_relaxed_u8(const uint8_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void ph_store_relaxed_u8(uint8_t *p, uint8_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

// MARK: - Spin lock (test-and-test-and-set; for short slow-path sections)

static inline void ph_spin_lock(int32_t *p) {
    for (;;) {
        if (__atomic_exchange_n(p, 1, __ATOMIC_ACQUIRE) == 0) return;
        while (__atomic_load_n(p, __ATOMIC_RELAXED) != 0) ph_pause();
    }
}
static inline void ph_spin_unlock(int32_t *p) { __atomic_store_n(p, 0, __ATOMIC_RELEASE); }

// MARK: - Thread-local state

/// Per-thread persistence counters and the lane cache (see ThreadContext in PersistentHeapCore).
typedef struct ph_thread_state {
    uint64_t flushed_lines;  ///< cache lines written back (or pages msync'd, counted as lines of the range)
    uint64_t fences;         ///< drains: sfence, msync batch, or simulated fence
    uint64_t msyncs;         ///< msync system calls
    uint64_t checkpoints;    ///< checkpoints this thread ran (log records retired in bulk)
    uint64_t checkpoint_fences; ///< of `fences`, those made by checkpoints
    uint64_t msync_owner;    ///< the Persistence whose pages msync_lo..msync_hi are (0: none)
    // msync domain: page range flushed since the last drain on this thread
    uintptr_t msync_lo;
    uintptr_t msync_hi;
    // lane cache: a small direct-mapped table of (pool id, lane index)
    uint64_t lane_pool_id[4];
    int64_t lane_index[4];
    int64_t exit_registered; ///< non-zero once the thread-exit destructor is registered
} ph_thread_state;

extern _Thread_local ph_thread_state ph_tls_state;

static inline ph_thread_state *ph_tls(void) { return &ph_tls_state; }

/// The lane this thread holds in pool `pool_id`, or -1.
static inline int64_t ph_tls_lane_lookup(uint64_t pool_id) {
    unsigned s = (unsigned)(pool_id & 3);
    return ph_tls_state.lane_pool_id[s] == pool_id ? ph_tls_state.lane_index[s] : -1;
}

/// Records `lane` for `pool_id`; returns the entry it replaces through the out parameters
/// (pool id 0 when the slot was empty).
static inline void ph_tls_lane_store(uint64_t pool_id, int64_t lane, uint64_t *old_pool, int64_t *old_lane) {
    unsigned s = (unsigned)(pool_id & 3);
    *old_pool = ph_tls_state.lane_pool_id[s];
    *old_lane = ph_tls_state.lane_index[s];
    ph_tls_state.lane_pool_id[s] = pool_id;
    ph_tls_state.lane_index[s] = lane;
}

/// Reads entry `i` (0..<4) of the lane cache.
static inline void ph_tls_lane_entry(unsigned i, uint64_t *pool, int64_t *lane) {
    *pool = ph_tls_state.lane_pool_id[i & 3];
    *lane = ph_tls_state.lane_index[i & 3];
}

/// Clears entry `i` of the lane cache.
static inline void ph_tls_lane_clear(unsigned i) {
    ph_tls_state.lane_pool_id[i & 3] = 0;
    ph_tls_state.lane_index[i & 3] = -1;
}

/// Register `destructor` to run at this thread's exit with `arg` (pthread key based).
/// Returns 0 on success.
int ph_register_thread_exit(void (*destructor)(void *), void *arg);

// MARK: - Constants Swift does not import

int ph_falloc_punch_hole(void);     // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (macOS: 0)
int ph_map_sync(void);              // MAP_SYNC (macOS: 0, no DAX)
int ph_map_shared_validate(void);   // MAP_SHARED_VALIDATE (macOS: MAP_SHARED)

/// fallocate(2) wrapper (the Glibc module does not import it everywhere). macOS: fails, EOPNOTSUPP.
int ph_fallocate(int fd, int mode, int64_t offset, int64_t len);
/// Reserves the file's blocks for [offset, offset+len): posix_fallocate(3) on Linux,
/// fcntl(F_PREALLOCATE) on macOS. Returns 0 or an errno value.
int ph_preallocate(int fd, int64_t offset, int64_t len);
/// After msync: makes the written data reach the media where msync alone does not
/// (macOS: fcntl(F_FULLFSYNC)); a no-op returning 0 on Linux. Returns 0 or an errno value.
int ph_full_sync(int fd);
/// A file with no name, in memory where possible (memfd_create on Linux; an unlinked temporary
/// file on macOS): the base of copy-on-write crash images. Returns the descriptor or -1.
int ph_anonymous_file(void);

#ifdef __cplusplus
}
#endif

#endif
