#include "util/sha256.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The digest is OpenSSL's (libcrypto EVP): its SHA-256 uses the CPU's SHA extensions where there
 * are some, several times faster than the portable C this file held before, which matters when a
 * 70B model's 140 GB are hashed on one rank (score, prune, the teacher cache). */
void mf_sha256_init(mf_sha256 *s) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) mf_fatal("sha256: cannot set up OpenSSL's SHA-256");
    s->ctx = c;
}

void mf_sha256_update(mf_sha256 *s, const void *data, size_t n) {
    if (n && EVP_DigestUpdate((EVP_MD_CTX *)s->ctx, data, n) != 1) mf_fatal("sha256: OpenSSL's digest update failed");
}

void mf_sha256_final(mf_sha256 *s, uint8_t digest[32]) {
    unsigned len = 0;
    int ok = EVP_DigestFinal_ex((EVP_MD_CTX *)s->ctx, digest, &len) == 1 && len == 32;
    EVP_MD_CTX_free((EVP_MD_CTX *)s->ctx);
    s->ctx = NULL;
    if (!ok) mf_fatal("sha256: OpenSSL's digest final failed");
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
    uint8_t dg[32];
    mf_sha256_final(&s, dg); /* also on error: it frees the digest's state */
    if (rc) return -1;
    mf_sha256_hex(dg, hex);
    return 0;
}
