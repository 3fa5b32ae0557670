// The LMDB side of Benchmarks/compare-kv: the same workload and JSON lines as kv-compare.
//
//   lmdb_bench DIR STORAGE N LOOKUPS SCANS
//
// N durable inserts (one write transaction each, LMDB's default durable commit), LOOKUPS random
// point lookups, SCANS range scans of 100 keys, all in one environment in DIR.
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static uint64_t mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// Key i: 16 hex digits of mix(i); value i: 100 bytes derived from i.
static void key(uint64_t i, char out[16]) { snprintf(out, 17, "%016llx", (unsigned long long)mix(i)); }
static void value(uint64_t i, char out[100]) { for (int k = 0; k < 100; k++) out[k] = 'a' + (char)((i * 31 + k) % 26); }
#define CHECK(x) do { int rc_ = (x); if (rc_) { fprintf(stderr, "lmdb_bench: %s: %s\n", #x, mdb_strerror(rc_)); exit(1); } } while (0)

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: lmdb_bench DIR STORAGE N LOOKUPS SCANS\n"); return 2; }
    const char *dir = argv[1], *storage = argv[2];
    long n = atol(argv[3]), lookups = atol(argv[4]), scans = atol(argv[5]);
    MDB_env *env; MDB_dbi dbi; MDB_txn *txn;
    CHECK(mdb_env_create(&env));
    CHECK(mdb_env_set_mapsize(env, (size_t)8 << 30));
    CHECK(mdb_env_open(env, dir, 0, 0664));  // default flags: durable commits (fdatasync / msync)
    // The durability flags as LMDB reports them (none of NOSYNC / NOMETASYNC / MAPASYNC / WRITEMAP).
    unsigned int flags = 0;
    CHECK(mdb_env_get_flags(env, &flags));
    char config[160];
    snprintf(config, sizeof config, "env_flags=0x%x NOSYNC=%d NOMETASYNC=%d MAPASYNC=%d WRITEMAP=%d", flags,
             !!(flags & MDB_NOSYNC), !!(flags & MDB_NOMETASYNC), !!(flags & MDB_MAPASYNC), !!(flags & MDB_WRITEMAP));
    CHECK(mdb_txn_begin(env, NULL, 0, &txn));
    CHECK(mdb_dbi_open(txn, NULL, 0, &dbi));
    CHECK(mdb_txn_commit(txn));
    char k[17], v[100];
    double t = now();
    for (long i = 0; i < n; i++) {
        key(i, k); value(i, v);
        MDB_val mk = {16, k}, mv = {100, v};
        CHECK(mdb_txn_begin(env, NULL, 0, &txn));
        CHECK(mdb_put(txn, dbi, &mk, &mv, 0));
        CHECK(mdb_txn_commit(txn));
    }
    double insert = now() - t;
    printf("{\"bench\":\"insert\",\"system\":\"lmdb\",\"storage\":\"%s\",\"n\":%ld,\"ops_per_s\":%.0f,\"config\":\"%s\"}\n", storage, n, n / insert, config);
    CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
    uint64_t r = 7;
    t = now();
    for (long i = 0; i < lookups; i++) {
        r = mix(r);
        uint64_t j = r % n;
        key(j, k);
        MDB_val mk = {16, k}, mv;
        CHECK(mdb_get(txn, dbi, &mk, &mv));
        if (mv.mv_size != 100 || ((char *)mv.mv_data)[0] != 'a' + (char)((j * 31) % 26)) { fprintf(stderr, "wrong value\n"); return 1; }
    }
    double lookup = now() - t;
    printf("{\"bench\":\"lookup\",\"system\":\"lmdb\",\"storage\":\"%s\",\"n\":%ld,\"ops_per_s\":%.0f,\"ns_per_op\":%.1f,\"config\":\"%s\"}\n", storage, lookups, lookups / lookup, lookup * 1e9 / lookups, config);
    MDB_cursor *cur;
    CHECK(mdb_cursor_open(txn, dbi, &cur));
    long seen = 0;
    t = now();
    for (long i = 0; i < scans; i++) {
        r = mix(r);
        key(r % n, k);
        MDB_val mk = {16, k}, mv;
        int rc = mdb_cursor_get(cur, &mk, &mv, MDB_SET_RANGE);
        for (int c = 0; c < 100 && rc == 0; c++) { seen++; rc = mdb_cursor_get(cur, &mk, &mv, MDB_NEXT); }
    }
    double scan = now() - t;
    printf("{\"bench\":\"scan100\",\"system\":\"lmdb\",\"storage\":\"%s\",\"n\":%ld,\"ops_per_s\":%.0f,\"entries\":%ld,\"config\":\"%s\"}\n", storage, scans, scans / scan, seen, config);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    // The data file's size (LMDB's lookups and scans above are zero-copy already: mdb_get and
    // mdb_cursor_get hand out pointers into the map).
    char file[4096];
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    struct stat st;
    if (stat(file, &st) == 0)
        printf("{\"bench\":\"size\",\"system\":\"lmdb\",\"storage\":\"%s\",\"n\":%ld,\"ops_per_s\":0,\"bytes_per_entry\":%.1f,\"file_bytes\":%lld,\"config\":\"%s\"}\n",
               storage, n, (double)st.st_size / n, (long long)st.st_size, config);
    return 0;
}
