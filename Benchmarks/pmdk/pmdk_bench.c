// The PMDK (libpmemobj) and glibc side of Benchmarks/compare.
//
//   pmdk_bench WORKLOAD SYSTEM POOLDIR [--reps N]
//   WORKLOAD: pair64 pair256 pair4k link64 random fill1m reopen1m pair64-2t
//             tx-write64 tx-alloc-link-free tx-empty tx-16fields
//   SYSTEM:   pmdk | glibc
//
// Prints one JSON line: workload, system, ns_per_op (median of the repetitions), fences_per_op,
// lines_per_op, and bytes_per_object / open_ms where they apply.
//
// PMDK's flushes and fences are *counted*, not assumed: libpmemobj calls libpmem's exported
// pmem_flush / pmem_drain / pmem_persist / pmem_mem* through the dynamic linker, and this
// executable (linked with -rdynamic) defines those symbols, counts, and forwards to libpmem.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <libpmem.h>
#include <libpmemobj.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// MARK: - Counting interposers

static _Thread_local uint64_t lines, fences, msyncs;

static uint64_t lines_of(const void *p, size_t n) {
    if (n == 0) return 0;
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, e = (uintptr_t)p + n;
    return (e - a + 63) / 64;
}

#define REAL(name) static __typeof__(&name) real_##name; if (!real_##name) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

void pmem_flush(const void *addr, size_t len) {
    REAL(pmem_flush);
    lines += lines_of(addr, len);
    real_pmem_flush(addr, len);
}
void pmem_drain(void) {
    REAL(pmem_drain);
    fences++;
    real_pmem_drain();
}
// libpmem's pmem_persist calls the exported pmem_flush and pmem_drain (counted there), and
// pmem_memcpy/memmove/memset call the exported pmem_drain: verified with a probe calling each
// function once. So only the primitives count fences; the mem* functions count their lines.
void pmem_persist(const void *addr, size_t len) {
    REAL(pmem_persist);
    real_pmem_persist(addr, len);
}
void pmem_deep_flush(const void *addr, size_t len) {
    REAL(pmem_deep_flush);
    real_pmem_deep_flush(addr, len);
}
int pmem_msync(const void *addr, size_t len) {
    REAL(pmem_msync);
    msyncs++;
    fences++;
    lines += lines_of(addr, len);
    return real_pmem_msync(addr, len);
}
static void count_mem(void *dest, size_t len, unsigned flags) {
    if (!(flags & PMEM_F_MEM_NOFLUSH)) lines += lines_of(dest, len);
}
void *pmem_memcpy(void *dest, const void *src, size_t len, unsigned flags) {
    REAL(pmem_memcpy);
    count_mem(dest, len, flags);
    return real_pmem_memcpy(dest, src, len, flags);
}
void *pmem_memmove(void *dest, const void *src, size_t len, unsigned flags) {
    REAL(pmem_memmove);
    count_mem(dest, len, flags);
    return real_pmem_memmove(dest, src, len, flags);
}
void *pmem_memset(void *dest, int c, size_t len, unsigned flags) {
    REAL(pmem_memset);
    count_mem(dest, len, flags);
    return real_pmem_memset(dest, c, len, flags);
}

// MARK: - Helpers

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void die(const char *what) {
    fprintf(stderr, "pmdk_bench: %s: %s\n", what, pmemobj_errormsg());
    exit(1);
}

static char pool_path[4096];

static PMEMobjpool *create_pool(const char *dir, const char *name, size_t size) {
    snprintf(pool_path, sizeof pool_path, "%s/%s", dir, name);
    unlink(pool_path);
    PMEMobjpool *pop = pmemobj_create(pool_path, "bench", size, 0644);
    if (!pop) die("pmemobj_create");
    return pop;
}

struct root {
    PMEMoid oid;
    PMEMoid array;     // fill1m: PMEMoid[N]
    uint64_t count;
    uint64_t fields[16 * 8];  // tx-16fields: one 8-byte field per 64-byte line
};

static void emit(const char *workload, const char *system, double ns, double fences_per_op, double lines_per_op,
                 double bytes_per_object, double open_ms) {
    printf("{\"workload\":\"%s\",\"system\":\"%s\",\"ns_per_op\":%.1f,\"fences_per_op\":%.2f,\"lines_per_op\":%.2f",
           workload, system, ns, fences_per_op, lines_per_op);
    if (bytes_per_object >= 0) printf(",\"bytes_per_object\":%.1f", bytes_per_object);
    if (open_ms >= 0) printf(",\"open_ms\":%.3f", open_ms);
    printf("}\n");
}

// MARK: - Workloads

typedef struct { double ns; uint64_t fences, lines, ops; } result;

static result pairs(PMEMobjpool *pop, size_t size, long n, int glibc) {
    result r = {0};
    uint64_t f0 = fences, l0 = lines;
    double t = now_ns();
    if (glibc) {
        for (long i = 0; i < n; i++) {
            void *volatile p = malloc(size);
            free(p);
        }
    } else {
        for (long i = 0; i < n; i++) {
            PMEMoid oid;
            if (pmemobj_alloc(pop, &oid, size, 0, NULL, NULL)) die("pmemobj_alloc");
            pmemobj_free(&oid);
        }
    }
    r.ns = now_ns() - t;
    r.fences = fences - f0;
    r.lines = lines - l0;
    r.ops = n;
    return r;
}

static result links(PMEMobjpool *pop, long n) {
    struct root *rp = pmemobj_direct(pmemobj_root(pop, sizeof(struct root)));
    result r = {0};
    uint64_t f0 = fences, l0 = lines;
    double t = now_ns();
    for (long i = 0; i < n; i++) {
        if (pmemobj_alloc(pop, &rp->oid, 64, 0, NULL, NULL)) die("pmemobj_alloc");
        pmemobj_free(&rp->oid);
    }
    r.ns = now_ns() - t;
    r.fences = fences - f0;
    r.lines = lines - l0;
    r.ops = n;
    return r;
}

static result random_ops(PMEMobjpool *pop, long live_target, long n, int glibc) {
    PMEMoid *oids = calloc(live_target * 2, sizeof(PMEMoid));
    void **ptrs = calloc(live_target * 2, sizeof(void *));
    long live = 0;
    rng_state = 12345;
    // Warm up to the live target (not measured).
    while (live < live_target) {
        size_t sz = 16 + rnd() % (4096 - 16 + 1);
        if (glibc) ptrs[live++] = malloc(sz);
        else if (pmemobj_alloc(pop, &oids[live++], sz, 0, NULL, NULL)) die("pmemobj_alloc");
    }
    result r = {0};
    uint64_t f0 = fences, l0 = lines;
    double t = now_ns();
    for (long i = 0; i < n; i++) {
        if ((rnd() & 1) && live > 0) {
            long k = rnd() % live;
            if (glibc) { free(ptrs[k]); ptrs[k] = ptrs[--live]; }
            else { pmemobj_free(&oids[k]); oids[k] = oids[--live]; }
        } else {
            size_t sz = 16 + rnd() % (4096 - 16 + 1);
            if (glibc) ptrs[live++] = malloc(sz);
            else if (pmemobj_alloc(pop, &oids[live++], sz, 0, NULL, NULL)) die("pmemobj_alloc");
        }
    }
    r.ns = now_ns() - t;
    r.fences = fences - f0;
    r.lines = lines - l0;
    r.ops = n;
    for (long k = 0; k < live; k++) { if (glibc) free(ptrs[k]); else pmemobj_free(&oids[k]); }
    free(oids);
    free(ptrs);
    return r;
}

struct thread_arg { PMEMobjpool *pop; long n; double ns; };
static atomic_int go;
static void *pair_thread(void *a) {
    struct thread_arg *ta = a;
    while (!atomic_load(&go)) {}
    result r = pairs(ta->pop, 64, ta->n, 0);
    ta->ns = r.ns / r.ops;
    return NULL;
}

static int tx_write64(PMEMobjpool *pop, struct root *rp, long n, result *r) {
    uint64_t f0 = fences, l0 = lines;
    double t = now_ns();
    for (long i = 0; i < n; i++) {
        TX_BEGIN(pop) {
            pmemobj_tx_add_range_direct(rp->fields, 64);
            for (int k = 0; k < 8; k++) rp->fields[k] = i + k;
        } TX_END
    }
    r->ns = now_ns() - t; r->fences = fences - f0; r->lines = lines - l0; r->ops = n;
    return 0;
}

static int tx_alloc_link_free(PMEMobjpool *pop, struct root *rp, long n, result *r) {
    uint64_t f0 = fences, l0 = lines;
    double t = now_ns();
    for (long i = 0; i < n; i++) {
        TX_BEGIN(pop) {
            PMEMoid old = rp->oid;
            PMEMoid fresh = pmemobj_tx_alloc(64, 0);
            pmemobj_tx_add_range_direct(&rp->oid, sizeof(PMEMoid));
            rp->oid = fresh;
            if (!OID_IS_NULL(old)) pmemobj_tx_free(old);
        } TX_END
    }
    r->ns = now_ns() - t; r->fences = fences - f0; r->lines = lines - l0; r->ops = n;
    return 0;
}

static int tx_empty(PMEMobjpool *pop, long n, result *r) {
    uint64_t f0 = fences, l0 = lines;
    double t = now_ns();
    for (long i = 0; i < n; i++) { TX_BEGIN(pop) { } TX_END }
    r->ns = now_ns() - t; r->fences = fences - f0; r->lines = lines - l0; r->ops = n;
    return 0;
}

static int tx_16fields(PMEMobjpool *pop, struct root *rp, long n, result *r) {
    uint64_t f0 = fences, l0 = lines;
    double t = now_ns();
    for (long i = 0; i < n; i++) {
        TX_BEGIN(pop) {
            for (int k = 0; k < 16; k++) {
                pmemobj_tx_add_range_direct(&rp->fields[k * 8], 8);
                rp->fields[k * 8] = i + k;
            }
        } TX_END
    }
    r->ns = now_ns() - t; r->fences = fences - f0; r->lines = lines - l0; r->ops = n;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: pmdk_bench WORKLOAD pmdk|glibc POOLDIR [--reps N]\n"); return 2; }
    const char *w = argv[1], *sys = argv[2], *dir = argv[3];
    int reps = 5;
    if (argc > 5 && !strcmp(argv[4], "--reps")) reps = atoi(argv[5]);
    int glibc = !strcmp(sys, "glibc");
    double samples[64];
    if (reps > 64) reps = 64;

    if (!strncmp(w, "pair", 4) && strcmp(w, "pair64-2t")) {
        size_t size = !strcmp(w, "pair64") ? 64 : !strcmp(w, "pair256") ? 256 : 4096;
        PMEMobjpool *pop = glibc ? NULL : create_pool(dir, "pmdk-pair.pool", 64 << 20);
        long n = glibc ? 2000000 : 200000;
        uint64_t tf = 0, tl = 0, to = 0;
        pairs(pop, size, n / 10, glibc);  // warm-up
        for (int i = 0; i < reps; i++) {
            result r = pairs(pop, size, n, glibc);
            samples[i] = r.ns / r.ops; tf += r.fences; tl += r.lines; to += r.ops;
        }
        emit(w, sys, median(samples, reps), (double)tf / to, (double)tl / to, -1, -1);
        if (pop) { pmemobj_close(pop); unlink(pool_path); }
    } else if (!strcmp(w, "link64")) {
        PMEMobjpool *pop = create_pool(dir, "pmdk-link.pool", 64 << 20);
        uint64_t tf = 0, tl = 0, to = 0;
        links(pop, 20000);
        for (int i = 0; i < reps; i++) {
            result r = links(pop, 100000);
            samples[i] = r.ns / r.ops; tf += r.fences; tl += r.lines; to += r.ops;
        }
        emit(w, sys, median(samples, reps), (double)tf / to, (double)tl / to, -1, -1);
        pmemobj_close(pop); unlink(pool_path);
    } else if (!strcmp(w, "random")) {
        uint64_t tf = 0, tl = 0, to = 0;
        for (int i = 0; i < reps; i++) {
            PMEMobjpool *pop = glibc ? NULL : create_pool(dir, "pmdk-random.pool", 1024 << 20);
            result r = random_ops(pop, 100000, 1000000, glibc);
            samples[i] = r.ns / r.ops; tf += r.fences; tl += r.lines; to += r.ops;
            if (pop) { pmemobj_close(pop); unlink(pool_path); }
        }
        emit(w, sys, median(samples, reps), (double)tf / to, (double)tl / to, -1, -1);
    } else if (!strcmp(w, "fill1m")) {
        // Fill 1M x 64 B objects, each allocated into its slot of a persistent array.
        PMEMobjpool *pop = create_pool(dir, "pmdk-fill.pool", 1024 << 20);
        int enabled = 1;
        pmemobj_ctl_set(pop, "stats.enabled", &enabled);
        struct root *rp = pmemobj_direct(pmemobj_root(pop, sizeof(struct root)));
        long n = 1000000;
        if (pmemobj_zalloc(pop, &rp->array, n * sizeof(PMEMoid), 0)) die("array");
        uint64_t before = 0, after = 0;
        pmemobj_ctl_get(pop, "stats.heap.curr_allocated", &before);
        PMEMoid *arr = pmemobj_direct(rp->array);
        uint64_t f0 = fences, l0 = lines;
        double t = now_ns();
        for (long i = 0; i < n; i++) if (pmemobj_alloc(pop, &arr[i], 64, 0, NULL, NULL)) die("fill");
        double ns = (now_ns() - t) / n;
        pmemobj_ctl_get(pop, "stats.heap.curr_allocated", &after);
        rp->count = n;
        pmemobj_persist(pop, &rp->count, 8);
        double fpo = (double)(fences - f0) / n, lpo = (double)(lines - l0) / n;
        pmemobj_close(pop);
        // The reopen is timed by `reopen1m` in a fresh process (no warm state).
        emit(w, sys, ns, fpo, lpo, (double)(after - before) / n, -1);
    } else if (!strcmp(w, "reopen1m")) {
        snprintf(pool_path, sizeof pool_path, "%s/%s", dir, "pmdk-fill.pool");
        double t = now_ns();
        PMEMobjpool *pop = pmemobj_open(pool_path, "bench");
        if (!pop) die("pmemobj_open");
        PMEMoid oid;
        if (pmemobj_alloc(pop, &oid, 64, 0, NULL, NULL)) die("first alloc");
        double ms = (now_ns() - t) / 1e6;
        struct root *rp = pmemobj_direct(pmemobj_root(pop, sizeof(struct root)));
        if (rp->count != 1000000) { fprintf(stderr, "pmdk_bench: fill1m pool holds %lu objects\n", (unsigned long)rp->count); return 1; }
        pmemobj_free(&oid);
        pmemobj_close(pop);
        unlink(pool_path);
        emit("fill1m", sys, ms * 1e6, 0, 0, -1, ms);
    } else if (!strcmp(w, "pair64-2t")) {
        PMEMobjpool *pop = create_pool(dir, "pmdk-2t.pool", 128 << 20);
        for (int i = 0; i < reps; i++) {
            struct thread_arg a[2] = {{pop, 200000, 0}, {pop, 200000, 0}};
            pthread_t th[2];
            atomic_store(&go, 0);
            for (int k = 0; k < 2; k++) pthread_create(&th[k], NULL, pair_thread, &a[k]);
            atomic_store(&go, 1);
            for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
            samples[i] = (a[0].ns + a[1].ns) / 2;
        }
        // Counters are per thread; the per-pair counts equal those of pair64.
        result r = pairs(pop, 64, 10000, 0);
        emit(w, sys, median(samples, reps), (double)r.fences / r.ops, (double)r.lines / r.ops, -1, -1);
        pmemobj_close(pop); unlink(pool_path);
    } else if (!strncmp(w, "tx-", 3)) {
        PMEMobjpool *pop = create_pool(dir, "pmdk-tx.pool", 64 << 20);
        struct root *rp = pmemobj_direct(pmemobj_root(pop, sizeof(struct root)));
        uint64_t tf = 0, tl = 0, to = 0;
        for (int i = 0; i <= reps; i++) {
            result r;
            long n = 100000;
            if (!strcmp(w, "tx-write64")) tx_write64(pop, rp, n, &r);
            else if (!strcmp(w, "tx-alloc-link-free")) tx_alloc_link_free(pop, rp, n, &r);
            else if (!strcmp(w, "tx-empty")) tx_empty(pop, n * 10, &r);
            else if (!strcmp(w, "tx-16fields")) tx_16fields(pop, rp, n, &r);
            else { fprintf(stderr, "unknown workload %s\n", w); return 2; }
            if (i == 0) continue;  // warm-up
            samples[i - 1] = r.ns / r.ops; tf += r.fences; tl += r.lines; to += r.ops;
        }
        emit(w, sys, median(samples, reps), (double)tf / to, (double)tl / to, -1, -1);
        pmemobj_close(pop); unlink(pool_path);
    } else {
        fprintf(stderr, "unknown workload %s\n", w);
        return 2;
    }
    return 0;
}
