/* sp_bpe.c - SentencePiece-style BPE: llama2.c tokenizer.bin and GGUF
 * "llama" vocabularies. Encoding gives the ids of llama2.c run.c encode():
 * optional BOS, one dummy-prefix space (non-empty text), per-codepoint vocab
 * lookup else byte fallback, then merges of the adjacent pair whose
 * concatenation is the highest-scoring token (leftmost on ties), done with a
 * priority queue instead of run.c's O(n^2) rescans. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

/* run.c starts its best score at -1e10: pairs scoring no more never merge. */
#define SP_MIN_SCORE (-1e10)

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The byte of a "<0xHH>" token, or -1. */
static int byte_token_value(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static mf_tokenizer *sp_alloc(int n) {
    mf_tokenizer *t = mf_calloc(1, sizeof *t);
    t->kind = TOK_KIND_SP;
    t->n_vocab = n;
    t->type = mf_calloc((size_t)n, 1);
    t->score = mf_calloc((size_t)n, sizeof *t->score);
    for (int b = 0; b < 256; b++) t->byte_id[b] = t->byte_tok[b] = -1;
    return t;
}

/* Decode pieces from text and types: control -> "", byte -> its byte. */
static void sp_build_pieces(mf_tokenizer *t) {
    tok_strs_alloc(&t->piece, t->n_vocab, t->text.off[t->n_vocab]);
    for (int i = 0; i < t->n_vocab; i++) {
        const char *s = tok_str(&t->text, i);
        size_t n = tok_len(&t->text, i);
        int b = t->type[i] == MF_TOK_BYTE ? byte_token_value(s, n) : -1;
        if (t->type[i] == MF_TOK_CONTROL) {
            tok_strs_set(&t->piece, i, "", 0);
        } else if (b >= 0) {
            char c = (char)b;
            tok_strs_set(&t->piece, i, &c, 1);
        } else {
            tok_strs_set(&t->piece, i, s, n);
        }
    }
}

/* Sets space_split when no token in the vocab map has a space right after a
 * non-space character (true of the Llama-2 and tok512 vocabularies). Then no
 * merged token can span a symbol boundary where a space follows a non-space,
 * so the text splits there into words whose merges are independent: each
 * word's merge sequence under the global best-first order is its own
 * best-first sequence, and the per-word queues stay small. */
static void sp_check_space_split(mf_tokenizer *t) {
    t->space_split = 1;
    for (uint32_t i = 0; i <= t->vocab.mask; i++) {
        int32_t id = t->vocab.slot[i];
        if (id < 0) continue;
        const char *s = tok_str(&t->text, id);
        size_t n = tok_len(&t->text, id);
        for (size_t k = 1; k < n; k++)
            if (s[k] == ' ' && s[k - 1] != ' ') t->space_split = 0;
    }
}

/* ---- llama2.c tokenizer.bin ---- */

static int read_file(const char *path, unsigned char **data, size_t *size, mf_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return mf_err_set(err, "%s: cannot open tokenizer: %s", path, strerror(errno));
    long end = -1;
    if (fseek(f, 0, SEEK_END) == 0) end = ftell(f);
    if (end < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return mf_err_set(err, "%s: cannot determine tokenizer file size", path);
    }
    *size = (size_t)end;
    *data = mf_malloc(*size + 1);
    size_t got = fread(*data, 1, *size, f);
    fclose(f);
    if (got != *size) {
        free(*data);
        return mf_err_set(err, "%s: read %zu of %zu bytes", path, got, *size);
    }
    return 0;
}

static int32_t rd_i32(const unsigned char *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t r;
    memcpy(&r, &v, 4);
    return r;
}

static float rd_f32(const unsigned char *p) {
    int32_t v = rd_i32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

/* Checks the layout and fills text offsets; the table of tokens is parsed twice
 * (sizes, then copy) so that the text lives in one buffer. */
static int parse_llama2c(const char *path, const unsigned char *d, size_t size, int vocab, mf_tokenizer *t,
                         mf_err *err) {
    if (size < 4) return mf_err_set(err, "%s: truncated tokenizer: %zu bytes, no max_token_length header", path, size);
    size_t at = 4, total = 0;
    for (int pass = 0; pass < 2; pass++) {
        at = 4;
        for (int i = 0; i < vocab; i++) {
            if (size - at < 8)
                return mf_err_set(err,
                                  "%s: truncated at token %d of %d (vocab size from the model header): "
                                  "file ends at byte %zu",
                                  path, i, vocab, size);
            int32_t len = rd_i32(d + at + 4);
            if (len < 0)
                return mf_err_set(err, "%s: token %d has negative length %d (at byte offset %zu)", path, i, len,
                                  at + 4);
            if ((size_t)len > size - at - 8)
                return mf_err_set(err, "%s: token %d of length %d at byte offset %zu runs past end of file (%zu bytes)",
                                  path, i, len, at + 8, size);
            if (pass == 0) {
                total += (size_t)len;
            } else {
                t->score[i] = rd_f32(d + at);
                tok_strs_set(&t->text, i, d + at + 8, (size_t)len);
            }
            at += 8 + (size_t)len;
        }
        if (pass == 0) {
            if (at != size)
                return mf_err_set(err,
                                  "%s: %zu bytes left after %d tokens: vocab size mismatch "
                                  "(model header says %d)",
                                  path, size - at, vocab, vocab);
            tok_strs_alloc(&t->text, vocab, total);
        }
    }
    return 0;
}

mf_tokenizer *mf_tok_load_llama2c(const char *path, int vocab_size, mf_err *err) {
    if (vocab_size < 259) {
        mf_err_set(err, "%s: vocab size %d from the model header is too small (need >= 259: BOS, EOS, 256 bytes)",
                   path, vocab_size);
        return NULL;
    }
    unsigned char *d = NULL;
    size_t size = 0;
    if (read_file(path, &d, &size, err)) return NULL;
    if (size < 4 || (size - 4) / 8 < (size_t)vocab_size) { /* each token takes >= 8 bytes: before allocating for them */
        mf_err_set(err, "%s: %zu bytes cannot hold %d tokens (vocab size from the model header)", path, size, vocab_size);
        free(d);
        return NULL;
    }
    mf_tokenizer *t = sp_alloc(vocab_size);
    if (parse_llama2c(path, d, size, vocab_size, t, err)) {
        free(d);
        mf_tok_free(t);
        return NULL;
    }
    free(d);
    t->bos = 1;
    t->eos = 2;
    t->unk = 0;
    t->add_space_prefix = 1;
    t->bos_merges = 1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = b + 3;
    /* run.c looks every token up, whatever it is. */
    tok_map_init(&t->vocab, vocab_size);
    for (int i = 0; i < vocab_size; i++) {
        int b = byte_token_value(tok_str(&t->text, i), tok_len(&t->text, i));
        t->type[i] = i == 0 ? MF_TOK_UNKNOWN : i <= 2 ? MF_TOK_CONTROL : b >= 0 ? MF_TOK_BYTE : MF_TOK_NORMAL;
        tok_map_put(&t->vocab, &t->text, i);
    }
    sp_check_space_split(t);
    sp_build_pieces(t);
    return t;
}

/* ---- SentencePiece from arrays (GGUF "llama") ---- */

static int sp_check_args(const char *const *tokens, const float *scores, const int32_t *types, int n, int bos, int eos,
                         mf_err *err) {
    if (n <= 0 || !tokens) return mf_err_set(err, "sentencepiece vocab: %d tokens (need at least one)", n);
    if (!scores) return mf_err_set(err, "sentencepiece vocab: no token scores");
    if (bos < -1 || bos >= n) return mf_err_set(err, "sentencepiece vocab: BOS id %d out of range [0, %d)", bos, n);
    if (eos < -1 || eos >= n) return mf_err_set(err, "sentencepiece vocab: EOS id %d out of range [0, %d)", eos, n);
    for (int i = 0; i < n; i++) {
        if (!tokens[i]) return mf_err_set(err, "sentencepiece vocab: token %d is NULL", i);
        int ty = types ? types[i] : MF_TOK_NORMAL;
        if (ty < MF_TOK_NORMAL || ty > MF_TOK_BYTE)
            return mf_err_set(err, "sentencepiece vocab: token %d '%s' has unknown type %d", i, tokens[i], ty);
        if (ty == MF_TOK_BYTE && byte_token_value(tokens[i], strlen(tokens[i])) < 0)
            return mf_err_set(err, "sentencepiece vocab: byte token %d '%s' is not of the form <0xHH>", i, tokens[i]);
    }
    return 0;
}

/* Copy s with each U+2581 (E2 96 81) replaced by a space; returns the length. */
static size_t unescape_space(const char *s, char *out) {
    size_t o = 0;
    for (size_t i = 0; s[i];) {
        if ((unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x96 && (unsigned char)s[i + 2] == 0x81) {
            out[o++] = ' ';
            i += 3;
        } else {
            out[o++] = s[i++];
        }
    }
    return o;
}

mf_tokenizer *mf_tok_new_sp(const char *const *tokens, const float *scores, const int32_t *types, int n, int bos,
                            int eos, int add_space_prefix, mf_err *err) {
    if (sp_check_args(tokens, scores, types, n, bos, eos, err)) return NULL;
    mf_tokenizer *t = sp_alloc(n);
    t->bos = bos;
    t->eos = eos;
    t->unk = -1;
    t->add_space_prefix = add_space_prefix != 0;
    size_t total = 0, maxlen = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(tokens[i]);
        total += l;
        if (l > maxlen) maxlen = l;
    }
    tok_strs_alloc(&t->text, n, total);
    char *tmp = mf_malloc(maxlen + 1);
    tok_map_init(&t->vocab, n);
    for (int i = 0; i < n; i++) {
        t->type[i] = (uint8_t)(types ? types[i] : MF_TOK_NORMAL);
        t->score[i] = scores[i];
        tok_strs_set(&t->text, i, tmp, unescape_space(tokens[i], tmp));
        if (t->type[i] == MF_TOK_NORMAL || t->type[i] == MF_TOK_USER) tok_map_put(&t->vocab, &t->text, i);
        if (t->type[i] == MF_TOK_UNKNOWN && t->unk < 0) t->unk = i;
        if (t->type[i] == MF_TOK_BYTE) {
            int b = byte_token_value(tokens[i], strlen(tokens[i]));
            if (t->byte_id[b] < 0) t->byte_id[b] = i;
        }
    }
    free(tmp);
    sp_check_space_split(t);
    sp_build_pieces(t);
    return t;
}

/* ---- encode ---- */

int tok_sp_pair(const mf_tokenizer *t, int32_t l, int32_t r, double *key, int32_t *result) {
    int32_t id = tok_map_get2(&t->vocab, &t->text, tok_str(&t->text, l), tok_len(&t->text, l), tok_str(&t->text, r),
                              tok_len(&t->text, r));
    if (id < 0 || !(t->score[id] > SP_MIN_SCORE)) return 0;
    *key = t->score[id];
    *result = id;
    return 1;
}

/* Appends the token of the codepoint s[0..n), else its byte-fallback tokens. */
static int push_codepoint(const mf_tokenizer *t, const char *s, size_t n, tok_sym *sym, int *n_sym, mf_err *err) {
    int32_t id = tok_map_get(&t->vocab, &t->text, s, n);
    if (id >= 0) {
        sym[(*n_sym)++].id = id;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        id = t->byte_id[b] >= 0 ? t->byte_id[b] : t->unk;
        if (id < 0)
            return mf_err_set(err, "sentencepiece vocab: no byte-fallback token <0x%02X> and no unknown token", b);
        sym[(*n_sym)++].id = id;
    }
    return 0;
}

/* Does a word start at symbol j (a space after a non-space)? */
static int word_start(const mf_tokenizer *t, const tok_sym *sym, int j) {
    const tok_strs *x = &t->text;
    size_t pl = tok_len(x, sym[j - 1].id);
    return tok_len(x, sym[j].id) > 0 && tok_str(x, sym[j].id)[0] == ' ' && pl > 0 &&
           tok_str(x, sym[j - 1].id)[pl - 1] != ' ';
}

/* Merge sym[0..n) (word by word when space_split) and append the result. */
static void merge_words(const mf_tokenizer *t, tok_sym *sym, int n, tok_ids *out) {
    tok_heap h = {0};
    for (int s0 = 0; s0 < n;) {
        int e = s0 + 1;
        if (t->space_split)
            while (e < n && !word_start(t, sym, e)) e++;
        else
            e = n;
        tok_merge(t, sym + s0, e - s0, &h);
        for (int i = 0; i >= 0; i = sym[s0 + i].next) tok_ids_push(out, sym[s0 + i].id);
        s0 = e;
    }
    tok_heap_free(&h);
}

int tok_sp_encode(const mf_tokenizer *t, const char *text, size_t len, int add_bos, tok_ids *out, mf_err *err) {
    tok_sym *sym = mf_malloc((len + 2) * sizeof *sym);
    int n = 0, rc = 0;
    if (add_bos) {
        if (t->bos_merges)
            sym[n++].id = t->bos;
        else
            tok_ids_push(out, t->bos);
    }
    if (len > 0 && t->add_space_prefix) rc = push_codepoint(t, " ", 1, sym, &n, err);
    for (size_t i = 0; i < len && !rc;) {
        size_t cl = (size_t)tok_utf8_len((unsigned char)text[i]);
        rc = push_codepoint(t, text + i, cl, sym, &n, err);
        i += cl;
    }
    if (!rc) merge_words(t, sym, n, out);
    free(sym);
    return rc;
}
