// Implementation of CPersistentHeap.h. See the header for what each function is for.
//
// Platforms: Linux x86_64 (tested), Linux aarch64 (compiled in CI with clang --target, not run),
// macOS (reviewed, not compiled here). Architecture-specific code is under __x86_64__ /
// __aarch64__; OS-specific code under __linux__ / __APPLE__.
#define _GNU_SOURCE
#include "CPersistentHeap.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <linux/falloc.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_DCPOP
#define HWCAP_DCPOP (1 << 16)
#endif
#endif
#endif

#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif
#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif

_Thread_local ph_thread_state ph_tls_state;

// MARK: - CPU features

uint32_t ph_cpu_features(void) {
    uint32_t result = 0;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        if (c & (1u << 20)) result |= PH_CPU_SSE42;
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        if (b & (1u << 23)) result |= PH_CPU_CLFLUSHOPT;
        if (b & (1u << 24)) result |= PH_CPU_CLWB;
    }
#elif defined(__aarch64__) && defined(__linux__)
    // DC CVAP (clean to the point of persistence, ARMv8.2 DCPoP) plays clwb's part;
    // DC CVAC (clean to the point of coherency, every ARMv8) plays clflushopt's.
    if (getauxval(AT_HWCAP) & HWCAP_DCPOP) result |= PH_CPU_CLWB;
    result |= PH_CPU_CLFLUSHOPT;
#elif defined(__aarch64__)
    result |= PH_CPU_CLFLUSHOPT;
#endif
    return result;
}

// MARK: - Flush

#define PH_LINE 64u

#if defined(__x86_64__)
__attribute__((target("clwb")))
void ph_flush_clwb(const void *p, size_t len) {
    uintptr_t start = (uintptr_t)p & ~(uintptr_t)(PH_LINE - 1);
    uintptr_t end = (uintptr_t)p + len;
    for (uintptr_t a = start; a < end; a += PH_LINE) _mm_clwb((void *)a);
}

__attribute__((target("clflushopt")))
void ph_flush_clflushopt(const void *p, size_t len) {
    uintptr_t start = (uintptr_t)p & ~(uintptr_t)(PH_LINE - 1);
    uintptr_t end = (uintptr_t)p + len;
    for (uintptr_t a = start; a < end; a += PH_LINE) _mm_clflushopt((void *)a);
}

void ph_flush_clflush(const void *p, size_t len) {
    uintptr_t start = (uintptr_t)p & ~(uintptr_t)(PH_LINE - 1);
    uintptr_t end = (uintptr_t)p + len;
    for (uintptr_t a = start; a < end; a += PH_LINE) _mm_clflush((const void *)a);
}
#elif defined(__aarch64__)
// The cache maintenance instructions by their system-register encoding, so the assembler needs no
// -march flag: DC CVAP = SYS #3, C7, C12, #1 (ARMv8.2); DC CVAC = SYS #3, C7, C10, #1.
void ph_flush_clwb(const void *p, size_t len) {
    uintptr_t start = (uintptr_t)p & ~(uintptr_t)(PH_LINE - 1);
    uintptr_t end = (uintptr_t)p + len;
    for (uintptr_t a = start; a < end; a += PH_LINE) __asm__ __volatile__("sys #3, c7, c12, #1, %0" ::"r"(a) : "memory");
}

void ph_flush_clflushopt(const void *p, size_t len) {
    uintptr_t start = (uintptr_t)p & ~(uintptr_t)(PH_LINE - 1);
    uintptr_t end = (uintptr_t)p + len;
    for (uintptr_t a = start; a < end; a += PH_LINE) __asm__ __volatile__("sys #3, c7, c10, #1, %0" ::"r"(a) : "memory");
}

void ph_flush_clflush(const void *p, size_t len) { ph_flush_clflushopt(p, len); }
#else
#error "CPersistentHeap: a cache-line write-back instruction is needed for this architecture (x86_64 and aarch64 are supported)"
#endif

// MARK: - Simulated media

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PH_NO_TSAN __attribute__((no_sanitize("thread")))
#endif
#endif
#ifndef PH_NO_TSAN
#define PH_NO_TSAN
#endif

PH_NO_TSAN void ph_copy_line(void *dst, const void *src) {
    const volatile uint64_t *s = (const volatile uint64_t *)src;
    uint64_t *d = (uint64_t *)dst;
    for (int i = 0; i < 8; i++) d[i] = s[i];
}

// MARK: - CRC-32C

static uint32_t crc_table[8][256];
static int crc_hw = 0;

// Runs when the library is loaded, so the hot path checks no once-flag.
__attribute__((constructor)) static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xff] ^ (c >> 8);
            crc_table[t][i] = c;
        }
    }
    crc_hw = (ph_cpu_features() & PH_CPU_SSE42) != 0;
}

static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t len) {
    while (len >= 8) {
        uint64_t v;
        __builtin_memcpy(&v, p, 8);
        v ^= crc;
        crc = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^ crc_table[5][(v >> 16) & 0xff] ^
              crc_table[4][(v >> 24) & 0xff] ^ crc_table[3][(v >> 32) & 0xff] ^ crc_table[2][(v >> 40) & 0xff] ^
              crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
        p += 8;
        len -= 8;
    }
    while (len--) crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc_hw_run(uint32_t crc, const unsigned char *p, size_t len) {
    uint64_t c = crc;
    while (len >= 8) {
        uint64_t v;
        __builtin_memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}
#endif

uint32_t ph_crc32c(uint32_t crc, const void *p, size_t len) {
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (crc_hw) return ~crc_hw_run(c, (const unsigned char *)p, len);
#endif
    return ~crc_sw(c, (const unsigned char *)p, len);
}

// MARK: - Thread exit

static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static void (*exit_destructor)(void *) = 0;

static void exit_trampoline(void *arg) {
    void (*d)(void *) = __atomic_load_n(&exit_destructor, __ATOMIC_ACQUIRE);
    if (d) d(arg);
}

static void exit_init(void) { pthread_key_create(&exit_key, exit_trampoline); }

int ph_register_thread_exit(void (*destructor)(void *), void *arg) {
    pthread_once(&exit_once, exit_init);
    // Every thread registers the same destructor: an atomic store, so racing registrations are well defined.
    __atomic_store_n(&exit_destructor, destructor, __ATOMIC_RELEASE);
    return pthread_setspecific(exit_key, arg);
}

// MARK: - Constants and wrappers

#if defined(__linux__)
int ph_falloc_punch_hole(void) { return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE; }
int ph_map_sync(void) { return MAP_SYNC; }
int ph_map_shared_validate(void) { return MAP_SHARED_VALIDATE; }
int ph_fallocate(int fd, int mode, int64_t offset, int64_t len) { return fallocate(fd, mode, offset, len); }
int ph_preallocate(int fd, int64_t offset, int64_t len) { return posix_fallocate(fd, offset, len); }
int ph_full_sync(int fd) { (void)fd; return 0; }
int ph_anonymous_file(void) { return memfd_create("pheap-crash-image", MFD_CLOEXEC); }
#elif defined(__APPLE__)
// No MAP_SYNC (no DAX) and no hole punching through fallocate on macOS: shrink keeps the blocks.
int ph_falloc_punch_hole(void) { return 0; }
int ph_map_sync(void) { return 0; }
int ph_map_shared_validate(void) { return MAP_SHARED; }
int ph_fallocate(int fd, int mode, int64_t offset, int64_t len) {
    (void)fd; (void)mode; (void)offset; (void)len;
    errno = EOPNOTSUPP;
    return -1;
}
int ph_preallocate(int fd, int64_t offset, int64_t len) {
    // F_PREALLOCATE reserves blocks past the current allocation (contiguous if it can).
    fstore_t store = {F_ALLOCATECONTIG | F_ALLOCATEALL, F_PEOFPOSMODE, 0, offset + len, 0};
    if (fcntl(fd, F_PREALLOCATE, &store) == -1) {
        store.fst_flags = F_ALLOCATEALL;
        if (fcntl(fd, F_PREALLOCATE, &store) == -1) return errno;
    }
    return 0;
}
// msync(MS_SYNC) on macOS reaches the drive's cache, not its media: F_FULLFSYNC asks the drive
// to write its cache out (what the ordinary-file domain promises).
int ph_full_sync(int fd) { return fcntl(fd, F_FULLFSYNC) == -1 ? errno : 0; }
int ph_anonymous_file(void) {
    char name[] = "/tmp/pheap-crash-image-XXXXXX";
    int fd = mkstemp(name);
    if (fd >= 0) unlink(name);
    return fd;
}
#else
#error "CPersistentHeap: Linux and macOS are supported"
#endif
