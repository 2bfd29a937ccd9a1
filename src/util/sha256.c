#include "util/sha256.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

/* Compress one 64-byte block into the state h[8]. */
static void compress(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

void mf_sha256_init(mf_sha256 *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->n_bytes = 0;
    s->n_buf = 0;
}

void mf_sha256_update(mf_sha256 *s, const void *data, size_t n) {
    const uint8_t *p = data;
    s->n_bytes += n;
    if (s->n_buf) { /* top up the pending block */
        size_t take = 64 - s->n_buf < n ? 64 - s->n_buf : n;
        memcpy(s->buf + s->n_buf, p, take);
        s->n_buf += take; p += take; n -= take;
        if (s->n_buf < 64) return;
        compress(s->h, s->buf);
        s->n_buf = 0;
    }
    for (; n >= 64; p += 64, n -= 64) compress(s->h, p);
    memcpy(s->buf, p, n);
    s->n_buf = n;
}

void mf_sha256_final(mf_sha256 *s, uint8_t digest[32]) {
    uint64_t bits = s->n_bytes * 8;
    uint8_t pad[72] = {0x80};
    size_t npad = (s->n_buf < 56 ? 56 : 120) - s->n_buf;
    for (int i = 0; i < 8; i++) pad[npad + i] = (uint8_t)(bits >> (56 - 8 * i));
    mf_sha256_update(s, pad, npad + 8);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) digest[4 * i + j] = (uint8_t)(s->h[i] >> (24 - 8 * j));
}

void mf_sha256_hex(const uint8_t digest[32], char hex[65]) {
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = d[digest[i] >> 4];
        hex[2 * i + 1] = d[digest[i] & 15];
    }
    hex[64] = 0;
}

void mf_sha256_buf(const void *data, size_t n, char hex[65]) {
    mf_sha256 s;
    uint8_t dg[32];
    mf_sha256_init(&s);
    mf_sha256_update(&s, data, n);
    mf_sha256_final(&s, dg);
    mf_sha256_hex(dg, hex);
}

/* Feed a file's contents into s; *size gets the byte count. */
static int hash_file(mf_sha256 *s, const char *path, uint64_t *size, mf_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return mf_err_set(err, "%s: cannot open: %s", path, strerror(errno));
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = mf_malloc(CHUNK);
    uint64_t total = 0;
    size_t r;
    while ((r = fread(buf, 1, CHUNK, f)) > 0) {
        mf_sha256_update(s, buf, r);
        total += r;
    }
    int bad = ferror(f);
    free(buf);
    fclose(f);
    if (bad) return mf_err_set(err, "%s: read error after %llu bytes", path, (unsigned long long)total);
    if (size) *size = total;
    return 0;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted names of the regular, non-hidden files of dir (mf_malloc'ed). */
static char **list_dir(const char *dir, int *n_out, mf_err *err) {
    DIR *d = opendir(dir);
    if (!d) return mf_err_set(err, "%s: cannot open directory: %s", dir, strerror(errno)), NULL;
    int n = 0, cap = 16;
    char **names = mf_malloc(cap * sizeof *names);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *full = mf_malloc(len);
        snprintf(full, len, "%s/%s", dir, e->d_name);
        struct stat st;
        int reg = stat(full, &st) == 0 && S_ISREG(st.st_mode);
        free(full);
        if (!reg) continue;
        if (n == cap) names = mf_realloc(names, (cap *= 2) * sizeof *names);
        names[n++] = mf_strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_names);
    *n_out = n;
    return names;
}

static int hash_dir(mf_sha256 *s, const char *dir, mf_err *err) {
    int n = 0, rc = 0;
    char **names = list_dir(dir, &n, err);
    if (!names) return -1;
    if (n == 0) rc = mf_err_set(err, "%s: directory has no regular files to hash", dir);
    for (int i = 0; i < n && rc == 0; i++) {
        size_t len = strlen(dir) + strlen(names[i]) + 2;
        char *full = mf_malloc(len);
        snprintf(full, len, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(full, &st) != 0) rc = mf_err_set(err, "%s: %s", full, strerror(errno));
        uint8_t hdr[8];
        for (int j = 0; j < 8 && rc == 0; j++) hdr[j] = (uint8_t)((uint64_t)st.st_size >> (8 * j));
        if (rc == 0) {
            mf_sha256_update(s, names[i], strlen(names[i]) + 1); /* name and its NUL */
            mf_sha256_update(s, hdr, 8);
            uint64_t got = 0;
            rc = hash_file(s, full, &got, err);
            if (rc == 0 && got != (uint64_t)st.st_size)
                rc = mf_err_set(err, "%s: size changed while hashing (%llu then %llu bytes)", full,
                                (unsigned long long)st.st_size, (unsigned long long)got);
        }
        free(full);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

int mf_sha256_path(const char *path, char hex[65], mf_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) return mf_err_set(err, "%s: %s", path, strerror(errno));
    mf_sha256 s;
    mf_sha256_init(&s);
    int rc;
    if (S_ISDIR(st.st_mode)) rc = hash_dir(&s, path, err);
    else if (S_ISREG(st.st_mode)) rc = hash_file(&s, path, NULL, err);
    else rc = mf_err_set(err, "%s: not a regular file or directory", path);
    if (rc) return -1;
    uint8_t dg[32];
    mf_sha256_final(&s, dg);
    mf_sha256_hex(dg, hex);
    return 0;
}
