/* tok_internal.h - what the tokenizer sources share: the mf_tokenizer struct,
 * string tables, hash maps, the merge priority queue, UTF-8 checks.
 * Not part of the public API (see tokenizer.h). */
#ifndef MF_TOK_INTERNAL_H
#define MF_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/tokenizer.h"
#include "util/hash.h"

enum { TOK_KIND_SP = 1, TOK_KIND_GPT2 = 2 };

#define TOK_MAX_RE 4

/* n byte strings in one buffer: string i is buf[off[i] .. off[i+1]). */
typedef struct {
    char *buf;
    size_t *off; /* [n + 1] */
    int n;
} tok_strs;

/* Open-addressing hash table of token ids keyed by their text in a tok_strs. */
typedef struct {
    int32_t *slot; /* [mask + 1], -1 = empty */
    uint32_t mask;
} tok_map;

/* (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t *key; /* [mask + 1], UINT64_MAX = empty */
    int32_t *rank, *result;
    uint32_t mask;
} tok_pairmap;

/* A symbol of the word being merged; merged-away symbols have id -1. */
typedef struct {
    int32_t id, prev, next;
} tok_sym;

/* A candidate merge of symbols left and right (ids at push time) into result.
 * Higher key first, then lower left (leftmost). */
typedef struct {
    double key;
    int32_t left, right, id_l, id_r, result;
} tok_cand;

typedef struct {
    tok_cand *a;
    size_t n, cap;
} tok_heap;

/* Growable id list. */
typedef struct {
    int32_t *a;
    size_t n, cap;
} tok_ids;

struct mf_tokenizer {
    int kind, n_vocab, bos, eos, unk;
    tok_strs text;  /* token text: SP with ' ' for U+2581; GPT-2 as in the vocab */
    tok_strs piece; /* the bytes each token decodes to */
    uint8_t *type;  /* [n_vocab] MF_TOK_* */
    tok_map vocab;  /* text -> id: SP codepoint lookup and merges; GPT-2 all tokens */
    /* SentencePiece */
    float *score;          /* [n_vocab] */
    int add_space_prefix;  /* prepend one space to non-empty text */
    int bos_merges;        /* llama2.c: BOS takes part in merges, as in run.c */
    int space_split;       /* no mergeable token has a space after a non-space: merges never
                              cross the start of a space that follows a non-space */
    int32_t byte_id[256];  /* byte-fallback token of each byte, -1 if none */
    /* GPT-2 byte-level */
    tok_pairmap merges;
    int32_t byte_tok[256]; /* token of the byte-level character of each byte */
    int ignore_merges;     /* a word that is a whole token is taken as is (llama3) */
    int n_re;
    pcre2_code *re[TOK_MAX_RE];
    int32_t *special; /* [n_special] special token ids, longest text first */
    int n_special;
    uint8_t special_first[256]; /* 1 if a special token's text starts with the byte */
};

/* ---- tok_common.c ---- */
uint64_t tok_hash(const void *p, size_t n, uint64_t h);
#define TOK_HASH_SEED MF_FNV1A64_SEED

void tok_strs_alloc(tok_strs *s, int n, size_t total);
void tok_strs_set(tok_strs *s, int i, const void *bytes, size_t len); /* in order i = 0, 1, ... */
void tok_strs_free(tok_strs *s);
static inline const char *tok_str(const tok_strs *s, int i) { return s->buf + s->off[i]; }
static inline size_t tok_len(const tok_strs *s, int i) { return s->off[i + 1] - s->off[i]; }

void tok_map_init(tok_map *m, int n);
/* Adds id under its text in s unless that text is already present. */
void tok_map_put(tok_map *m, const tok_strs *s, int32_t id);
/* Id whose text is a followed by b, or -1. */
int32_t tok_map_get2(const tok_map *m, const tok_strs *s, const char *a, size_t alen, const char *b, size_t blen);
static inline int32_t tok_map_get(const tok_map *m, const tok_strs *s, const char *a, size_t alen) {
    return tok_map_get2(m, s, a, alen, "", 0);
}
void tok_map_free(tok_map *m);

void tok_pairmap_init(tok_pairmap *m, int n);
/* Adds (l, r) unless present (so the first, lowest rank wins). */
void tok_pairmap_put(tok_pairmap *m, int32_t l, int32_t r, int32_t rank, int32_t result);
int tok_pairmap_get(const tok_pairmap *m, int32_t l, int32_t r, int32_t *rank, int32_t *result);
void tok_pairmap_free(tok_pairmap *m);

void tok_ids_push(tok_ids *v, int32_t id);

/* BPE over sym[0..n): links the symbols, then repeatedly applies the best
 * candidate pair (tok_pair_ok decides which pairs merge and their key). */
void tok_merge(const mf_tokenizer *t, tok_sym *sym, int n, tok_heap *h);
void tok_heap_free(tok_heap *h);

/* ---- utf8.c ---- */
/* 0 if s[0..n) is valid UTF-8 (no overlongs, surrogates or > U+10FFFF), else
 * -1 with err naming the byte offset of the bad sequence. */
int tok_utf8_check(const char *s, size_t n, mf_err *err);
/* Length of the sequence at s (valid input assumed): 1..4. */
int tok_utf8_len(unsigned char lead);
/* Writes the UTF-8 encoding of cp (< 0x110000) to out, returns its length. */
int tok_utf8_put(uint32_t cp, char *out);

/* ---- sp_bpe.c / byte_bpe.c ---- */
int tok_sp_pair(const mf_tokenizer *t, int32_t l, int32_t r, double *key, int32_t *result);
int tok_sp_encode(const mf_tokenizer *t, const char *text, size_t len, int add_bos, tok_ids *out, mf_err *err);
int tok_gpt2_encode(const mf_tokenizer *t, const char *text, size_t len, int add_bos, tok_ids *out, mf_err *err);

/* Frees what a partly built tokenizer holds (NULL fields are fine). */
void tok_free_fields(mf_tokenizer *t);

#endif
