/* tok_common.c - shared tokenizer machinery: string tables, hash maps, the
 * priority-queue BPE merge loop, and the public encode/decode entry points. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

/* FNV-1a, 64 bit, continuing from h. */
uint64_t tok_hash(const void *p, size_t n, uint64_t h) { return mf_fnv1a64(p, n, h); }

/* ---- string table ---- */

void tok_strs_alloc(tok_strs *s, int n, size_t total) {
    s->n = n;
    s->buf = mf_malloc(total + 1);
    s->off = mf_malloc(((size_t)n + 1) * sizeof *s->off);
    s->off[0] = 0;
}

void tok_strs_set(tok_strs *s, int i, const void *bytes, size_t len) {
    if (len) memcpy(s->buf + s->off[i], bytes, len);
    s->off[i + 1] = s->off[i] + len;
}

void tok_strs_free(tok_strs *s) {
    free(s->buf);
    free(s->off);
    s->buf = NULL;
    s->off = NULL;
}

/* ---- text -> id map ---- */

static uint32_t pow2_cap(int n) {
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)n + 16) cap <<= 1;
    return cap;
}

void tok_map_init(tok_map *m, int n) {
    uint32_t cap = pow2_cap(n);
    m->mask = cap - 1;
    m->slot = mf_malloc(cap * sizeof *m->slot);
    for (uint32_t i = 0; i < cap; i++) m->slot[i] = -1;
}

int32_t tok_map_get2(const tok_map *m, const tok_strs *s, const char *a, size_t alen, const char *b, size_t blen) {
    uint32_t i = (uint32_t)tok_hash(b, blen, tok_hash(a, alen, TOK_HASH_SEED)) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        const char *t = tok_str(s, id);
        if (tok_len(s, id) == alen + blen && memcmp(t, a, alen) == 0 && memcmp(t + alen, b, blen) == 0) return id;
    }
}

void tok_map_put(tok_map *m, const tok_strs *s, int32_t id) {
    const char *t = tok_str(s, id);
    size_t len = tok_len(s, id);
    uint32_t i = (uint32_t)tok_hash(t, len, TOK_HASH_SEED) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        int32_t o = m->slot[i];
        if (o < 0) {
            m->slot[i] = id;
            return;
        }
        if (tok_len(s, o) == len && memcmp(tok_str(s, o), t, len) == 0) return;
    }
}

void tok_map_free(tok_map *m) {
    free(m->slot);
    m->slot = NULL;
}

/* ---- (left, right) -> merge map ---- */

static uint32_t pair_slot(uint64_t key, uint32_t mask) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (uint32_t)key & mask;
}

void tok_pairmap_init(tok_pairmap *m, int n) {
    uint32_t cap = pow2_cap(n);
    m->mask = cap - 1;
    m->key = mf_malloc(cap * sizeof *m->key);
    m->rank = mf_malloc(cap * sizeof *m->rank);
    m->result = mf_malloc(cap * sizeof *m->result);
    for (uint32_t i = 0; i < cap; i++) m->key[i] = UINT64_MAX;
}

void tok_pairmap_put(tok_pairmap *m, int32_t l, int32_t r, int32_t rank, int32_t result) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    for (uint32_t i = pair_slot(key, m->mask);; i = (i + 1) & m->mask) {
        if (m->key[i] == key) return;
        if (m->key[i] == UINT64_MAX) {
            m->key[i] = key;
            m->rank[i] = rank;
            m->result[i] = result;
            return;
        }
    }
}

int tok_pairmap_get(const tok_pairmap *m, int32_t l, int32_t r, int32_t *rank, int32_t *result) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    for (uint32_t i = pair_slot(key, m->mask);; i = (i + 1) & m->mask) {
        if (m->key[i] == key) {
            *rank = m->rank[i];
            *result = m->result[i];
            return 1;
        }
        if (m->key[i] == UINT64_MAX) return 0;
    }
}

void tok_pairmap_free(tok_pairmap *m) {
    free(m->key);
    free(m->rank);
    free(m->result);
    m->key = NULL;
    m->rank = m->result = NULL;
}

void tok_ids_push(tok_ids *v, int32_t id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 64;
        v->a = mf_realloc(v->a, v->cap * sizeof *v->a);
    }
    v->a[v->n++] = id;
}

/* ---- binary max-heap of candidate merges ---- */

static int cand_better(const tok_cand *x, const tok_cand *y) {
    return x->key > y->key || (x->key == y->key && x->left < y->left);
}

static void heap_push(tok_heap *h, tok_cand c) {
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 64;
        h->a = mf_realloc(h->a, h->cap * sizeof *h->a);
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_better(&c, &h->a[p])) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = c;
}

static int heap_pop(tok_heap *h, tok_cand *out) {
    if (h->n == 0) return 0;
    *out = h->a[0];
    tok_cand last = h->a[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_better(&h->a[c + 1], &h->a[c])) c++;
        if (!cand_better(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (n) h->a[i] = last;
    return 1;
}

void tok_heap_free(tok_heap *h) {
    free(h->a);
    h->a = NULL;
    h->n = h->cap = 0;
}

/* ---- the merge loop ---- */

static int pair_ok(const mf_tokenizer *t, int32_t l, int32_t r, double *key, int32_t *result) {
    if (t->kind == TOK_KIND_SP) return tok_sp_pair(t, l, r, key, result);
    int32_t rank;
    if (!tok_pairmap_get(&t->merges, l, r, &rank, result)) return 0;
    *key = -(double)rank; /* lowest rank first */
    return 1;
}

static void try_pair(const mf_tokenizer *t, const tok_sym *sym, int32_t l, int32_t r, tok_heap *h) {
    if (l < 0 || r < 0) return;
    tok_cand c = {.left = l, .right = r, .id_l = sym[l].id, .id_r = sym[r].id};
    if (pair_ok(t, c.id_l, c.id_r, &c.key, &c.result)) heap_push(h, c);
}

void tok_merge(const mf_tokenizer *t, tok_sym *sym, int n, tok_heap *h) {
    h->n = 0;
    for (int i = 0; i < n; i++) {
        sym[i].prev = i - 1;
        sym[i].next = i + 1 < n ? i + 1 : -1;
    }
    for (int i = 0; i + 1 < n; i++) try_pair(t, sym, i, i + 1, h);
    tok_cand c;
    while (heap_pop(h, &c)) {
        tok_sym *L = &sym[c.left], *R = &sym[c.right];
        if (L->id != c.id_l || R->id != c.id_r || L->next != c.right) continue; /* stale */
        L->id = c.result;
        R->id = -1;
        L->next = R->next;
        if (R->next >= 0) sym[R->next].prev = c.left;
        try_pair(t, sym, L->prev, c.left, h);
        try_pair(t, sym, c.left, L->next, h);
    }
}

/* ---- public API ---- */

void tok_free_fields(mf_tokenizer *t) {
    tok_strs_free(&t->text);
    tok_strs_free(&t->piece);
    free(t->type);
    free(t->score);
    free(t->special);
    tok_map_free(&t->vocab);
    tok_pairmap_free(&t->merges);
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    t->n_re = 0;
}

void mf_tok_free(mf_tokenizer *t) {
    if (!t) return;
    tok_free_fields(t);
    free(t);
}

int mf_tok_vocab_size(const mf_tokenizer *t) { return t->n_vocab; }
int mf_tok_bos(const mf_tokenizer *t) { return t->bos; }
int mf_tok_eos(const mf_tokenizer *t) { return t->eos; }

int mf_tok_encode(const mf_tokenizer *t, const char *text, size_t len, int add_bos, int32_t **ids, size_t *n_ids,
                  mf_err *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return mf_err_set(err, "tokenizer: encode given NULL text of %zu bytes", len);
    if (len > (size_t)INT32_MAX - 8)
        return mf_err_set(err, "tokenizer: text of %zu bytes is too long (max 2 GiB)", len);
    if (add_bos && t->bos < 0) return mf_err_set(err, "tokenizer: BOS requested but the vocabulary has no BOS token");
    if (tok_utf8_check(text, len, err)) return -1;
    tok_ids out = {0};
    int rc = t->kind == TOK_KIND_SP ? tok_sp_encode(t, text, len, add_bos, &out, err)
                                    : tok_gpt2_encode(t, text, len, add_bos, &out, err);
    if (rc) {
        free(out.a);
        return -1;
    }
    if (!out.a) out.a = mf_malloc(sizeof *out.a);
    *ids = out.a;
    *n_ids = out.n;
    return 0;
}

size_t mf_tok_decode_token(const mf_tokenizer *t, int prev, int id, char *buf, size_t cap) {
    if (id < 0 || id >= t->n_vocab) return 0;
    const char *p = tok_str(&t->piece, id);
    size_t n = tok_len(&t->piece, id);
    if (t->kind == TOK_KIND_SP && prev == t->bos && prev >= 0 && n > 0 && p[0] == ' ') {
        p++;
        n--;
    }
    if (buf && cap) {
        memcpy(buf, p, n < cap ? n : cap);
        if (n < cap) buf[n] = '\0';
    }
    return n;
}

char *mf_tok_decode(const mf_tokenizer *t, const int32_t *ids, size_t n) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += mf_tok_decode_token(t, i ? ids[i - 1] : -1, ids[i], NULL, 0);
    char *s = mf_malloc(total + 1);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) at += mf_tok_decode_token(t, i ? ids[i - 1] : -1, ids[i], s + at, total + 1 - at);
    s[at] = '\0';
    return s;
}
