/* sha256.h - SHA-256 (FIPS 180-4) of memory, files and model directories.
 *
 * Used for provenance: the rankings file records the hash of the model and of
 * the calibration text it was computed on. Streaming, so big files are fine. */
#ifndef MF_SHA256_H
#define MF_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include "util/err.h"

/* A running SHA-256 (OpenSSL's EVP digest): init, update any number of times, final (which
 * frees it). Failures of the library (out of memory) are fatal. */
typedef struct mf_sha256 {
    void *ctx; /* EVP_MD_CTX */
} mf_sha256;

void mf_sha256_init(mf_sha256 *s);
void mf_sha256_update(mf_sha256 *s, const void *data, size_t n);
void mf_sha256_final(mf_sha256 *s, uint8_t digest[32]);
/* 32-byte digest -> 64 lowercase hex chars + NUL. */
void mf_sha256_hex(const uint8_t digest[32], char hex[65]);
/* One-shot hash of a buffer as hex. */
void mf_sha256_buf(const void *data, size_t n, char hex[65]);

/* SHA-256 of a path as 64 hex chars.
 *  - regular file: the hash of its bytes (identical to `sha256sum FILE`);
 *  - directory: not recursive; the regular files (symlinks followed) whose
 *    names do not start with '.', sorted by byte-wise name (strcmp), each fed as
 *      name bytes, one 0x00 byte, the size as 8 bytes little-endian, contents.
 * Errors name the path (missing, unreadable, read error, empty directory). */
int mf_sha256_path(const char *path, char hex[65], mf_err *err);

#endif
