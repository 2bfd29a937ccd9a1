/* byte_bpe.c - GPT-2 byte-level BPE (GGUF tokenizer.ggml.model == "gpt2").
 *
 * Encode: special tokens (types 3 and 4) are matched literally first
 * (leftmost, longest); the text between them is split by the pre-tokenizer
 * regexes that llama.cpp (llama-vocab.cpp) uses for the tokenizer.ggml.pre
 * name, applied one after the other (matches and the gaps between them both
 * become pieces); each piece's bytes map to the GPT-2 bytes->unicode alphabet
 * and are merged by rank (lowest first, leftmost on ties). Words are cached
 * per call. Decode maps the alphabet back to bytes. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

/* ---- pre-tokenizers (llama.cpp llama-vocab.cpp) ---- */

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3_HEAD                                                                                                 \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
#define RE_LLAMA3_TAIL " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct {
    const char *names; /* space-separated tokenizer.ggml.pre names */
    int ignore_merges;
    const char *re[TOK_MAX_RE];
} pre_def;

static const pre_def PRE_DEFS[] = {
    {"default", 0, {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"llama3 llama-v3 llama-bpe falcon3", 1, {RE_LLAMA3_HEAD "\\p{N}{1,3}|" RE_LLAMA3_TAIL}},
    {"dbrx smaug-bpe", 0, {RE_LLAMA3_HEAD "\\p{N}{1,3}|" RE_LLAMA3_TAIL}},
    {"qwen2 stablelm2 deepseek-r1-qwen", 0, {RE_LLAMA3_HEAD "\\p{N}|" RE_LLAMA3_TAIL}},
    {"smollm starcoder refact command-r codeshell exaone minerva-7b", 0, {"\\p{N}", RE_GPT2}},
    {"gpt2 gpt-2 phi-2 mpt olmo jais roberta-bpe jina-es jina-de gigachat jina-v1-en jina-v2-es jina-v2-de "
     "jina-v2-code trillion",
     0,
     {RE_GPT2}},
    {"falcon", 0, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}},
};

static int name_in(const char *name, const char *names) {
    size_t n = strlen(name);
    for (const char *p = names; *p;) {
        const char *e = strchr(p, ' ');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && memcmp(p, name, n) == 0) return 1;
        p += l + (e != NULL);
    }
    return 0;
}

static int compile_pre(mf_tokenizer *t, const char *pre, mf_err *err) {
    const pre_def *d = NULL;
    for (size_t i = 0; i < sizeof PRE_DEFS / sizeof PRE_DEFS[0] && !d; i++)
        if (name_in(pre, PRE_DEFS[i].names)) d = &PRE_DEFS[i];
    if (!d)
        return mf_err_set(err,
                          "gpt2 vocab: unknown pre-tokenizer '%s' (tokenizer.ggml.pre); known: default, smollm, "
                          "llama-bpe/llama3, qwen2, gpt2, falcon, dbrx, starcoder, ...",
                          pre);
    t->ignore_merges = d->ignore_merges;
    for (int i = 0; i < TOK_MAX_RE && d->re[i]; i++) {
        int ec;
        PCRE2_SIZE eo;
        uint32_t opts = PCRE2_UTF | PCRE2_UCP;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)d->re[i], PCRE2_ZERO_TERMINATED, opts, &ec, &eo, NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(ec, msg, sizeof msg);
            return mf_err_set(err, "gpt2 vocab: pre-tokenizer '%s' regex %d at offset %zu: %s", pre, i, (size_t)eo,
                              (const char *)msg);
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is used if JIT is unavailable */
        t->re[t->n_re++] = re;
    }
    return 0;
}

/* ---- construction ---- */

/* GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to 256+. */
static void byte_to_cp(uint32_t cp[256]) {
    uint32_t extra = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp[b] = keep ? (uint32_t)b : 256 + extra++;
    }
}

static int gpt2_check_args(const char *const *tokens, int n, const char *const *merges, int n_merges,
                           const int32_t *types, int bos, int eos, mf_err *err) {
    if (n <= 0 || !tokens) return mf_err_set(err, "gpt2 vocab: %d tokens (need at least one)", n);
    if (n_merges < 0 || (n_merges > 0 && !merges)) return mf_err_set(err, "gpt2 vocab: bad merge list (%d)", n_merges);
    if (bos < -1 || bos >= n) return mf_err_set(err, "gpt2 vocab: BOS id %d out of range [0, %d)", bos, n);
    if (eos < -1 || eos >= n) return mf_err_set(err, "gpt2 vocab: EOS id %d out of range [0, %d)", eos, n);
    for (int i = 0; i < n; i++) {
        if (!tokens[i]) return mf_err_set(err, "gpt2 vocab: token %d is NULL", i);
        if (types && (types[i] < MF_TOK_NORMAL || types[i] > MF_TOK_BYTE))
            return mf_err_set(err, "gpt2 vocab: token %d '%s' has unknown type %d", i, tokens[i], types[i]);
    }
    for (int i = 0; i < n_merges; i++)
        if (!merges[i]) return mf_err_set(err, "gpt2 vocab: merge %d is NULL", i);
    return 0;
}

/* Some vocabularies lack a few bytes (SmolLM2: 0x04, 0xF1, 0xFF, ...): such
 * bytes get -1 and are dropped when encoding, as HF tokenizers (no unk token)
 * and llama.cpp do. */
static void build_byte_tokens(mf_tokenizer *t, const uint32_t cp[256]) {
    for (int b = 0; b < 256; b++) {
        char u[4];
        int l = tok_utf8_put(cp[b], u);
        t->byte_tok[b] = tok_map_get(&t->vocab, &t->text, u, (size_t)l);
    }
}

static int build_merges(mf_tokenizer *t, const char *const *merges, int n_merges, mf_err *err) {
    tok_pairmap_init(&t->merges, n_merges);
    for (int i = 0; i < n_merges; i++) {
        const char *m = merges[i];
        const char *sp = m[0] ? strchr(m + 1, ' ') : NULL; /* as llama.cpp: the first space after index 0 */
        if (!sp) return mf_err_set(err, "gpt2 vocab: merge %d '%s' is not of the form 'left right'", i, m);
        size_t ll = (size_t)(sp - m), rl = strlen(sp + 1);
        int32_t l = tok_map_get(&t->vocab, &t->text, m, ll);
        int32_t r = tok_map_get(&t->vocab, &t->text, sp + 1, rl);
        int32_t res = tok_map_get2(&t->vocab, &t->text, m, ll, sp + 1, rl);
        if (l < 0 || r < 0 || res < 0)
            return mf_err_set(err, "gpt2 vocab: merge %d '%s': %s is not in the vocabulary", i, m,
                              l < 0 ? "the left part" : r < 0 ? "the right part" : "the merged token");
        tok_pairmap_put(&t->merges, l, r, i, res);
    }
    return 0;
}

typedef struct {
    size_t len;
    int32_t id;
} len_id;

static int by_len_desc(const void *a, const void *b) {
    const len_id *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Control and user-defined tokens with non-empty valid UTF-8 text, longest first. */
static void build_specials(mf_tokenizer *t) {
    len_id *v = mf_malloc((size_t)t->n_vocab * sizeof *v);
    int k = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        size_t l = tok_len(&t->text, i);
        const char *s = tok_str(&t->text, i);
        if ((t->type[i] != MF_TOK_CONTROL && t->type[i] != MF_TOK_USER) || l == 0) continue;
        if ((s[0] & 0xC0) == 0x80 || tok_utf8_check(s, l, NULL)) continue;
        v[k++] = (len_id){l, i};
    }
    qsort(v, (size_t)k, sizeof *v, by_len_desc);
    t->special = mf_malloc(((size_t)k + 1) * sizeof *t->special);
    for (int i = 0; i < k; i++) {
        t->special[i] = v[i].id;
        t->special_first[(unsigned char)tok_str(&t->text, v[i].id)[0]] = 1;
    }
    t->n_special = k;
    free(v);
}

/* Decode pieces: special tokens give their text, others map back to bytes. */
static void build_pieces(mf_tokenizer *t, const uint32_t cp[256]) {
    int16_t inv[0x144];
    for (int i = 0; i < 0x144; i++) inv[i] = -1;
    for (int b = 0; b < 256; b++) inv[cp[b]] = (int16_t)b;
    tok_strs_alloc(&t->piece, t->n_vocab, t->text.off[t->n_vocab]);
    for (int i = 0; i < t->n_vocab; i++) {
        const char *s = tok_str(&t->text, i);
        size_t n = tok_len(&t->text, i), o = 0;
        char *dst = t->piece.buf + t->piece.off[i];
        int raw = t->type[i] == MF_TOK_CONTROL || t->type[i] == MF_TOK_USER || tok_utf8_check(s, n, NULL);
        for (size_t j = 0; j < n;) {
            int cl = raw ? 1 : tok_utf8_len((unsigned char)s[j]);
            uint32_t c = (unsigned char)s[j];
            if (cl == 2) c = ((c & 0x1F) << 6) | ((unsigned char)s[j + 1] & 0x3F);
            if (cl <= 2 && c < 0x144 && inv[c] >= 0 && !raw)
                dst[o++] = (char)inv[c];
            else
                memcpy(dst + o, s + j, (size_t)cl), o += (size_t)cl;
            j += (size_t)cl;
        }
        t->piece.off[i + 1] = t->piece.off[i] + o;
    }
}

mf_tokenizer *mf_tok_new_gpt2(const char *const *tokens, int n, const char *const *merges, int n_merges,
                              const int32_t *types, const char *pre, int bos, int eos, mf_err *err) {
    if (gpt2_check_args(tokens, n, merges, n_merges, types, bos, eos, err)) return NULL;
    mf_tokenizer *t = mf_calloc(1, sizeof *t);
    t->kind = TOK_KIND_GPT2;
    t->n_vocab = n;
    t->bos = bos;
    t->eos = eos;
    t->unk = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    t->type = mf_malloc((size_t)n);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += strlen(tokens[i]);
    tok_strs_alloc(&t->text, n, total);
    tok_map_init(&t->vocab, n);
    for (int i = 0; i < n; i++) {
        t->type[i] = (uint8_t)(types ? types[i] : MF_TOK_NORMAL);
        tok_strs_set(&t->text, i, tokens[i], strlen(tokens[i]));
        tok_map_put(&t->vocab, &t->text, i);
    }
    uint32_t cp[256];
    byte_to_cp(cp);
    build_byte_tokens(t, cp);
    if (build_merges(t, merges, n_merges, err) ||
        compile_pre(t, pre ? pre : "default", err)) {
        mf_tok_free(t);
        return NULL;
    }
    build_specials(t);
    build_pieces(t, cp);
    return t;
}

/* ---- encode ---- */

typedef struct {
    size_t off, len;
} span;

typedef struct {
    size_t off, out; /* word text offset; where its ids were first written in out */
    uint32_t len, cnt;
} cache_ent;

typedef struct {
    const mf_tokenizer *t;
    const char *text;
    tok_ids *out;
    pcre2_match_data *md;
    span *sa, *sb;
    size_t span_cap;
    tok_sym *sym;
    size_t sym_cap;
    char *scratch;
    tok_heap heap;
    cache_ent *cache; /* len 0 = empty */
    uint32_t cache_mask;
    size_t cache_n;
} g2_ctx;

/* Split each of in[0..n_in) by re: matches and the gaps between them. */
static int split_re(g2_ctx *c, const pcre2_code *re, const span *in, size_t n_in, span *out, size_t *n_out,
                    mf_err *err) {
    size_t k = 0;
    for (size_t i = 0; i < n_in; i++) {
        PCRE2_SPTR subj = (PCRE2_SPTR)(c->text + in[i].off);
        size_t L = in[i].len, prev = 0, start = 0;
        while (start < L) {
            int rc = pcre2_match(re, subj, L, start, PCRE2_NO_UTF_CHECK, c->md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return mf_err_set(err, "text: pre-tokenizer regex failed at byte offset %zu: %s", in[i].off + start,
                                  (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
            size_t ms = ov[0], me = ov[1];
            if (me <= ms) { /* empty match: step one character */
                start = ms + (size_t)tok_utf8_len(subj[ms < L ? ms : 0]);
                continue;
            }
            if (ms > prev) out[k++] = (span){in[i].off + prev, ms - prev};
            out[k++] = (span){in[i].off + ms, me - ms};
            prev = start = me;
        }
        if (prev < L) out[k++] = (span){in[i].off + prev, L - prev};
    }
    *n_out = k;
    return 0;
}

/* BPE of one word's bytes, appended to out. */
static void bpe_word(g2_ctx *c, const unsigned char *w, size_t len) {
    const mf_tokenizer *t = c->t;
    if (t->ignore_merges) {
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
            int32_t b = t->byte_tok[w[i]];
            if (b < 0) continue;
            memcpy(c->scratch + o, tok_str(&t->text, b), tok_len(&t->text, b));
            o += tok_len(&t->text, b);
        }
        int32_t id = tok_map_get(&t->vocab, &t->text, c->scratch, o);
        if (id >= 0) {
            tok_ids_push(c->out, id);
            return;
        }
    }
    if (len > c->sym_cap) {
        c->sym_cap = len;
        c->sym = mf_realloc(c->sym, len * sizeof *c->sym);
    }
    int n = 0;
    for (size_t i = 0; i < len; i++)
        if (t->byte_tok[w[i]] >= 0) c->sym[n++].id = t->byte_tok[w[i]];
    tok_merge(t, c->sym, n, &c->heap);
    for (int i = 0; i >= 0 && n > 0; i = c->sym[i].next) tok_ids_push(c->out, c->sym[i].id);
}

static void cache_grow(g2_ctx *c) {
    uint32_t old = c->cache_mask + 1, cap = old * 2;
    cache_ent *o = c->cache;
    c->cache = mf_calloc(cap, sizeof *c->cache);
    c->cache_mask = cap - 1;
    for (uint32_t i = 0; i < old; i++) {
        if (!o[i].len) continue;
        uint32_t j = (uint32_t)tok_hash(c->text + o[i].off, o[i].len, TOK_HASH_SEED) & c->cache_mask;
        while (c->cache[j].len) j = (j + 1) & c->cache_mask;
        c->cache[j] = o[i];
    }
    free(o);
}

/* Encode one pre-tokenized word, through the per-call cache. */
static void encode_word(g2_ctx *c, size_t off, size_t len) {
    const char *w = c->text + off;
    uint32_t i = (uint32_t)tok_hash(w, len, TOK_HASH_SEED) & c->cache_mask;
    for (; c->cache[i].len; i = (i + 1) & c->cache_mask) {
        cache_ent *e = &c->cache[i];
        if (e->len == len && memcmp(c->text + e->off, w, len) == 0) {
            for (uint32_t k = 0; k < e->cnt; k++) tok_ids_push(c->out, c->out->a[e->out + k]);
            return;
        }
    }
    size_t start = c->out->n;
    bpe_word(c, (const unsigned char *)w, len);
    c->cache[i] = (cache_ent){off, start, (uint32_t)len, (uint32_t)(c->out->n - start)};
    if (++c->cache_n * 2 > c->cache_mask) cache_grow(c);
}

/* Pre-tokenize and encode text[off .. off+len) (no special tokens inside). */
static int encode_fragment(g2_ctx *c, size_t off, size_t len, mf_err *err) {
    if (!len) return 0;
    if (len + 1 > c->span_cap) {
        c->span_cap = len + 1;
        c->sa = mf_realloc(c->sa, c->span_cap * sizeof *c->sa);
        c->sb = mf_realloc(c->sb, c->span_cap * sizeof *c->sb);
    }
    size_t n = 1;
    c->sa[0] = (span){off, len};
    for (int r = 0; r < c->t->n_re; r++) {
        size_t m;
        if (split_re(c, c->t->re[r], c->sa, n, c->sb, &m, err)) return -1;
        span *tmp = c->sa;
        c->sa = c->sb;
        c->sb = tmp;
        n = m;
    }
    for (size_t i = 0; i < n; i++) encode_word(c, c->sa[i].off, c->sa[i].len);
    return 0;
}

/* Longest special token at s[0..n), or -1. */
static int32_t match_special(const mf_tokenizer *t, const char *s, size_t n, size_t *mlen) {
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        size_t l = tok_len(&t->text, id);
        if (l <= n && memcmp(tok_str(&t->text, id), s, l) == 0) {
            *mlen = l;
            return id;
        }
    }
    return -1;
}

int tok_gpt2_encode(const mf_tokenizer *t, const char *text, size_t len, int add_bos, tok_ids *out, mf_err *err) {
    g2_ctx c = {.t = t, .text = text, .out = out};
    c.md = pcre2_match_data_create(4, NULL);
    c.cache_mask = 1023;
    c.cache = mf_calloc(c.cache_mask + 1, sizeof *c.cache);
    c.scratch = mf_malloc(2 * len + 16);
    if (add_bos) tok_ids_push(out, t->bos);
    int rc = 0;
    size_t frag = 0, i = 0;
    while (i < len && !rc) {
        size_t ml;
        int32_t id;
        if (t->special_first[(unsigned char)text[i]] && (id = match_special(t, text + i, len - i, &ml)) >= 0) {
            rc = encode_fragment(&c, frag, i - frag, err);
            tok_ids_push(out, id);
            i += ml;
            frag = i;
        } else {
            i++;
        }
    }
    if (!rc) rc = encode_fragment(&c, frag, len - frag, err);
    pcre2_match_data_free(c.md);
    free(c.cache);
    free(c.sa);
    free(c.sb);
    free(c.sym);
    free(c.scratch);
    tok_heap_free(&c.heap);
    return rc;
}
