// Implementation of CPersistentHeap.h. See the header for what each function is for.
#define _GNU_SOURCE
#include "CPersistentHeap.h"

#include <cpuid.h>
#include <fcntl.h>
#include <immintrin.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <sys/mman.h>

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
#else
void ph_flush_clwb(const void *p, size_t len) { (void)p; (void)len; __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void ph_flush_clflushopt(const void *p, size_t len) { (void)p; (void)len; __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void ph_flush_clflush(const void *p, size_t len) { (void)p; (void)len; __atomic_thread_fence(__ATOMIC_SEQ_CST); }
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

int ph_falloc_punch_hole(void) { return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE; }
int ph_map_sync(void) { return MAP_SYNC; }
int ph_map_shared_validate(void) { return MAP_SHARED_VALIDATE; }
int ph_fallocate(int fd, int mode, int64_t offset, int64_t len) { return fallocate(fd, mode, offset, len); }
