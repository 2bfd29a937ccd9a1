/* hash.h - FNV-1a, 64 bit: hash tables (tokenizer, GGUF reader) and the identity
 * of a run's training tokens in checkpoints. Not cryptographic. */
#ifndef MF_HASH_H
#define MF_HASH_H

#include <stddef.h>
#include <stdint.h>

#define MF_FNV1A64_SEED 1469598103934665603ULL

/* FNV-1a over n bytes at p, continuing from h (start with MF_FNV1A64_SEED). */
static inline uint64_t mf_fnv1a64(const void *p, size_t n, uint64_t h) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

#endif
