/* test_tokenizer.c - tokenizers against goldens from independent implementations:
 * llama2.c run.c encode (shared reference + a Python port), the sentencepiece
 * package (Llama-2 tokenizer), HF tokenizers (SmolLM2, pre "smollm").
 * Goldens: tests/gen_tok_goldens.py -> tests/golden/tok/. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/gguf.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"

#define TOK512 "llm_assets/models/stories260K/tok512.bin"
#define LLAMA2_TOK "llm_assets/tokenizers/llama2_tokenizer.bin"
#define TINYSTORIES "llm_assets/text/tinystories_train_first2MiB.txt"
#define WIKI_RAW "llm_assets/text/wikitext2_raw_test.txt"

/* ---- helpers ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    cr_assert(j != NULL, "%s: cannot load JSON (line %d: %s); run tests/gen_tok_goldens.py", path, je.line, je.text);
    return j;
}

static char *read_asset(const char *path, size_t *len) {
    char *s = tu_read(path, len);
    cr_assert(s != NULL, "%s is missing (set MINIFUSE_SHARED / MINIFUSE_CACHE)", path);
    return s;
}

static mf_tokenizer *load_llama2c(const char *rel, int vocab) {
    const char *path = tu_shared(rel);
    mf_err err = {{0}};
    mf_tokenizer *t = mf_tok_load_llama2c(path, vocab, &err);
    cr_assert(t != NULL, "%s", err.msg);
    return t;
}

/* SmolLM2's tokenizer, read from the GGUF through src/io/gguf.h; pre_override
 * (if non-NULL) replaces tokenizer.ggml.pre. */
static mf_tokenizer *load_smollm2_pre(const char *pre_override) {
    const char *path = tu_smollm2();
    mf_err err = {{0}};
    mf_gguf *g = mf_gguf_open(path, &err);
    cr_assert(g != NULL, "%s", err.msg);
    const char *const *tokens, *const *merges;
    const int32_t *types;
    const char *pre;
    size_t n, n_merges, n_types;
    uint32_t bos, eos;
    cr_assert(mf_gguf_get_str_array(g, "tokenizer.ggml.tokens", &tokens, &n, &err) == 0, "%s", err.msg);
    cr_assert(mf_gguf_get_str_array(g, "tokenizer.ggml.merges", &merges, &n_merges, &err) == 0, "%s", err.msg);
    cr_assert(mf_gguf_get_i32_array(g, "tokenizer.ggml.token_type", &types, &n_types, &err) == 0, "%s", err.msg);
    cr_assert(mf_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &err) == 0, "%s", err.msg);
    cr_assert(mf_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &bos, &err) == 0, "%s", err.msg);
    cr_assert(mf_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos, &err) == 0, "%s", err.msg);
    cr_assert_eq(n_types, n);
    cr_assert_str_eq(pre, "smollm");
    if (pre_override) pre = pre_override;
    mf_tokenizer *t = mf_tok_new_gpt2(tokens, (int)n, merges, (int)n_merges, types, pre, (int)bos, (int)eos, &err);
    cr_assert(t != NULL, "%s", err.msg);
    mf_gguf_close(g); /* the tokenizer keeps its own copies */
    return t;
}

static mf_tokenizer *load_smollm2(void) { return load_smollm2_pre(NULL); }

static void encode_ok(const mf_tokenizer *t, const char *s, size_t len, int bos, int32_t **ids, size_t *n) {
    mf_err err = {{0}};
    int rc = mf_tok_encode(t, s, len, bos, ids, n, &err);
    cr_assert_eq(rc, 0, "encode failed: %s", err.msg);
}

/* Asserts ids[0..n) equal the JSON int array want; label names the case. */
static void assert_ids(const int32_t *ids, size_t n, const json_t *want, const char *label) {
    size_t wn = json_array_size(want);
    size_t first = 0;
    while (first < n && first < wn && ids[first] == (int32_t)json_integer_value(json_array_get(want, first))) first++;
    cr_assert(n == wn && first == n, "%s: %zu ids, want %zu; first difference at index %zu (got %d, want %d)", label,
              n, wn, first, first < n ? ids[first] : -1,
              first < wn ? (int)json_integer_value(json_array_get(want, first)) : -1);
}

static void assert_roundtrip(const mf_tokenizer *t, const int32_t *ids, size_t n, const char *text, size_t len,
                             const char *label) {
    char *back = mf_tok_decode(t, ids, n);
    size_t bl = strlen(back);
    size_t i = 0;
    while (i < bl && i < len && back[i] == text[i]) i++;
    cr_assert(bl == len && i == len, "%s: decode(encode(x)) != x: lengths %zu vs %zu, first difference at byte %zu",
              label, bl, len, i);
    free(back);
}

/* Encode a whole asset file; checks the count and round trip, prints the time. */
static void file_count(const mf_tokenizer *t, const char *rel, int bos, long long want, const char *name) {
    size_t len;
    char *text = read_asset(tu_shared(rel), &len);
    int32_t *ids;
    size_t n;
    double t0 = now_s();
    encode_ok(t, text, len, bos, &ids, &n);
    double dt = now_s() - t0;
    fprintf(stderr, "[tok] %s: %s (%zu bytes) -> %zu tokens in %.3f s (%.1f MB/s)\n", name, rel, len, n, dt,
            (double)len / dt / 1e6);
    cr_assert_eq((long long)n, want, "%s: %s: %zu tokens, golden %lld", name, rel, n, want);
    assert_roundtrip(t, ids, n, text, len, rel);
    free(ids);
    free(text);
}

/* Encode must fail with a message naming the byte offset. */
static void assert_bad_utf8(const mf_tokenizer *t, const char *s, size_t len, size_t off) {
    mf_err err = {{0}};
    int32_t *ids = (int32_t *)1;
    size_t n = 99;
    cr_assert_eq(mf_tok_encode(t, s, len, 1, &ids, &n, &err), -1, "invalid UTF-8 accepted (offset %zu)", off);
    cr_assert(ids == NULL && n == 0);
    char want[64];
    snprintf(want, sizeof want, "byte offset %zu ", off);
    cr_assert(strstr(err.msg, want) && strstr(err.msg, "UTF-8"), "message '%s' should name '%s'", err.msg, want);
}

static void check_bad_utf8(const mf_tokenizer *t) {
    assert_bad_utf8(t, "ab\xC0\xAF", 4, 2);          /* overlong '/' */
    assert_bad_utf8(t, "\xE0\x80\xAFxyz", 6, 0);     /* overlong 3-byte */
    assert_bad_utf8(t, "x\xF0\x80\x80\x80", 5, 1);   /* overlong 4-byte */
    assert_bad_utf8(t, "abc\xE2\x82", 5, 3);         /* truncated at end */
    assert_bad_utf8(t, "abc\xE2\x82x", 6, 3);        /* truncated mid-text */
    assert_bad_utf8(t, "hello \x80 world", 13, 6);   /* lone continuation */
    assert_bad_utf8(t, "s\xED\xA0\x80", 4, 1);       /* surrogate U+D800 */
    assert_bad_utf8(t, "\xED\xBF\xBF", 3, 0);        /* surrogate U+DFFF */
    assert_bad_utf8(t, "\xF4\x90\x80\x80", 4, 0);    /* > U+10FFFF */
    assert_bad_utf8(t, "ok \xC3\xA9 \xFF", 7, 6);    /* invalid lead byte after valid é */
}

/* ---- llama2.c tokenizer.bin ---- */

Test(tok_llama2c, tok512_reference_cases) {
    mf_tokenizer *t = load_llama2c(TOK512, 512);
    cr_assert_eq(mf_tok_vocab_size(t), 512);
    cr_assert_eq(mf_tok_bos(t), 1);
    cr_assert_eq(mf_tok_eos(t), 2);
    json_t *cases = load_json(tu_shared("llm_assets/reference/tok512_encode_cases.json"));
    cr_assert(json_array_size(cases) >= 3);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        const char *s = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int32_t *ids;
        size_t n;
        encode_ok(t, s, len, 1, &ids, &n);
        char label[64];
        snprintf(label, sizeof label, "tok512 case %zu", i);
        assert_ids(ids, n, json_object_get(c, "ids"), label);
        assert_roundtrip(t, ids, n, s, len, label);
        free(ids);
    }
    json_decref(cases);
    mf_tok_free(t);
}

Test(tok_llama2c, tinystories_2mib_count_tok512, .timeout = 120) {
    mf_tokenizer *t = load_llama2c(TOK512, 512);
    json_t *g = load_json("tests/golden/tok/llama2c_counts.json");
    file_count(t, TINYSTORIES, 1, json_integer_value(json_object_get(g, "tok512")), "tok512 (SentencePiece BPE)");
    json_decref(g);
    mf_tok_free(t);
}

Test(tok_llama2c, tinystories_2mib_count_llama2, .timeout = 120) {
    mf_tokenizer *t = load_llama2c(LLAMA2_TOK, 32000);
    json_t *g = load_json("tests/golden/tok/llama2c_counts.json");
    file_count(t, TINYSTORIES, 1, json_integer_value(json_object_get(g, "llama2")), "llama2 32000 (SentencePiece BPE)");
    json_decref(g);
    mf_tok_free(t);
}

/* Lines of real text against the sentencepiece package; where run.c's
 * algorithm is known to differ from sentencepiece, against the run.c port. */
static void check_llama2_cases(const mf_tokenizer *t, const char *name) {
    json_t *g = load_json("tests/golden/tok/llama2_sp_cases.json");
    json_t *cases = json_object_get(g, "cases");
    cr_assert(json_array_size(cases) >= 300);
    size_t n_sp = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        const char *s = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int same = json_is_true(json_object_get(c, "same_as_sp"));
        int32_t *ids;
        size_t n;
        encode_ok(t, s, len, 1, &ids, &n);
        char label[128];
        snprintf(label, sizeof label, "%s case %zu (%s)", name, i, same ? "sentencepiece" : "run.c port");
        assert_ids(ids, n, json_object_get(c, same ? "sp_ids" : "runc_ids"), label);
        assert_roundtrip(t, ids, n, s, len, label);
        n_sp += (size_t)same;
        free(ids);
    }
    fprintf(stderr, "[tok] %s: %zu/%zu lines identical to sentencepiece, the rest to the run.c port\n", name, n_sp,
            json_array_size(cases));
    json_decref(g);
}

Test(tok_llama2c, llama2_vs_sentencepiece) {
    mf_tokenizer *t = load_llama2c(LLAMA2_TOK, 32000);
    check_llama2_cases(t, "llama2 tokenizer.bin");
    mf_tok_free(t);
}

Test(tok_llama2c, empty_text) {
    mf_tokenizer *t = load_llama2c(TOK512, 512);
    int32_t *ids;
    size_t n;
    encode_ok(t, "", 0, 0, &ids, &n);
    cr_assert_eq(n, 0);
    free(ids);
    encode_ok(t, "", 0, 1, &ids, &n);
    cr_assert(n == 1 && ids[0] == 1);
    free(ids);
    char *s = mf_tok_decode(t, NULL, 0);
    cr_assert_str_eq(s, "");
    free(s);
    mf_tok_free(t);
}

Test(tok_llama2c, decode_token) {
    mf_tokenizer *t = load_llama2c(LLAMA2_TOK, 32000);
    int32_t *ids;
    size_t n;
    encode_ok(t, "Hello\n", 6, 1, &ids, &n); /* BOS, " Hello", <0x0A> */
    cr_assert(n == 3 && ids[0] == 1 && ids[2] == 13, "got %zu ids", n);
    char buf[32];
    cr_assert_eq(mf_tok_decode_token(t, 1, ids[1], buf, sizeof buf), 5); /* space stripped after BOS */
    cr_assert_str_eq(buf, "Hello");
    cr_assert_eq(mf_tok_decode_token(t, 100, ids[1], buf, sizeof buf), 6);
    cr_assert_str_eq(buf, " Hello");
    cr_assert_eq(mf_tok_decode_token(t, ids[1], 13, buf, sizeof buf), 1); /* byte token */
    cr_assert_str_eq(buf, "\n");
    cr_assert_eq(mf_tok_decode_token(t, -1, 1, buf, sizeof buf), 0); /* BOS decodes to nothing */
    cr_assert_eq(mf_tok_decode_token(t, -1, 32000, buf, sizeof buf), 0);
    cr_assert_eq(mf_tok_decode_token(t, -1, -5, buf, sizeof buf), 0);
    memset(buf, 'x', sizeof buf);
    cr_assert_eq(mf_tok_decode_token(t, 100, ids[1], buf, 3), 6); /* truncated copy, full length returned */
    cr_assert(memcmp(buf, " Hex", 4) == 0);
    free(ids);
    mf_tok_free(t);
}

Test(tok_llama2c, invalid_utf8) {
    mf_tokenizer *t = load_llama2c(TOK512, 512);
    check_bad_utf8(t);
    mf_tok_free(t);
}

/* ---- corrupt tokenizer.bin ---- */

static void le32(unsigned char *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(u >> (8 * i));
}

static void assert_load_fails(const char *path, int vocab, const char *what) {
    mf_err err = {{0}};
    mf_tokenizer *t = mf_tok_load_llama2c(path, vocab, &err);
    cr_assert(t == NULL, "corrupt tokenizer accepted (%s)", what);
    cr_assert(strstr(err.msg, path) != NULL, "message '%s' should name the file", err.msg);
    cr_assert(strstr(err.msg, what) != NULL, "message '%s' should say '%s'", err.msg, what);
}

Test(tok_llama2c, corrupt_tokenizer_bin) {
    size_t len;
    unsigned char *good = (unsigned char *)read_asset(tu_shared(TOK512), &len);
    const char *dir = tu_tmpdir();
    char path[4200];

    snprintf(path, sizeof path, "%s/truncated.bin", dir);
    tu_write(path, good, 3000);
    assert_load_fails(path, 512, "truncated");
    tu_write(path, good, 2);
    assert_load_fails(path, 512, "truncated");

    /* token 0's length field (bytes 8..11) made negative, then huge */
    snprintf(path, sizeof path, "%s/neglen.bin", dir);
    unsigned char *bad = malloc(len);
    memcpy(bad, good, len);
    le32(bad + 8, -7);
    tu_write(path, bad, len);
    assert_load_fails(path, 512, "negative length");
    le32(bad + 8, 1 << 30);
    tu_write(path, bad, len);
    assert_load_fails(path, 512, "past end of file");

    /* the model header's vocab size disagrees with the file */
    assert_load_fails(tu_shared(TOK512), 500, "vocab size mismatch");
    assert_load_fails(tu_shared(TOK512), 600, "truncated");
    assert_load_fails(tu_shared(TOK512), 100, "too small");

    snprintf(path, sizeof path, "%s/does-not-exist.bin", dir);
    assert_load_fails(path, 512, "cannot open");
    free(bad);
    free(good);
}

/* ---- SentencePiece from arrays (GGUF "llama" layout) ---- */

/* The Llama-2 vocabulary as a GGUF "llama" tokenizer would give it: U+2581
 * for space, token types, scores. */
typedef struct {
    char **tokens;
    float *scores;
    int32_t *types;
    int n;
} sp_arrays;

static sp_arrays llama2_as_gguf(void) {
    size_t len;
    unsigned char *d = (unsigned char *)read_asset(tu_shared(LLAMA2_TOK), &len);
    sp_arrays a = {malloc(32000 * sizeof(char *)), malloc(32000 * sizeof(float)), malloc(32000 * sizeof(int32_t)),
                   32000};
    size_t at = 4;
    for (int i = 0; i < 32000; i++) {
        int32_t l;
        memcpy(&a.scores[i], d + at, 4);
        memcpy(&l, d + at + 4, 4);
        at += 8;
        char *s = malloc(3 * (size_t)l + 1), *o = s;
        for (int k = 0; k < l; k++) {
            if (d[at + k] == ' ') {
                memcpy(o, "\xE2\x96\x81", 3);
                o += 3;
            } else {
                *o++ = (char)d[at + k];
            }
        }
        *o = 0;
        at += (size_t)l;
        a.tokens[i] = s;
        a.types[i] = i == 0 ? 2 : i <= 2 ? 3 : i <= 258 ? 6 : 1;
    }
    free(d);
    return a;
}

static void sp_arrays_free(sp_arrays *a) {
    for (int i = 0; i < a->n; i++) free(a->tokens[i]);
    free(a->tokens);
    free(a->scores);
    free(a->types);
}

Test(tok_sp, llama2_arrays_vs_sentencepiece) {
    sp_arrays a = llama2_as_gguf();
    mf_err err = {{0}};
    mf_tokenizer *t = mf_tok_new_sp((const char *const *)a.tokens, a.scores, a.types, a.n, 1, 2, 1, &err);
    cr_assert(t != NULL, "%s", err.msg);
    check_llama2_cases(t, "llama2 as GGUF arrays");
    mf_tok_free(t);
    sp_arrays_free(&a);
}

/* Same, with one extra never-merging token (score below run.c's -1e10 floor)
 * whose text has a space after a non-space: that turns the per-word split off,
 * so this runs the global priority-queue merge over whole lines. */
Test(tok_sp, llama2_arrays_global_merge) {
    sp_arrays a = llama2_as_gguf();
    a.tokens = realloc(a.tokens, 32001 * sizeof(char *));
    a.scores = realloc(a.scores, 32001 * sizeof(float));
    a.types = realloc(a.types, 32001 * sizeof(int32_t));
    a.tokens[32000] = strdup("x\xE2\x96\x81y");
    a.scores[32000] = -2e10f;
    a.types[32000] = 1;
    a.n = 32001;
    mf_err err = {{0}};
    mf_tokenizer *t = mf_tok_new_sp((const char *const *)a.tokens, a.scores, a.types, a.n, 1, 2, 1, &err);
    cr_assert(t != NULL, "%s", err.msg);
    check_llama2_cases(t, "llama2 arrays, global merge");
    mf_tok_free(t);
    sp_arrays_free(&a);
}

Test(tok_sp, bad_arrays) {
    sp_arrays a = llama2_as_gguf();
    mf_err err = {{0}};
    a.types[500] = 9;
    cr_assert_null(mf_tok_new_sp((const char *const *)a.tokens, a.scores, a.types, a.n, 1, 2, 1, &err));
    cr_assert(strstr(err.msg, "token 500") && strstr(err.msg, "type 9"), "%s", err.msg);
    a.types[500] = 6; /* a byte token whose text is not <0xHH> */
    cr_assert_null(mf_tok_new_sp((const char *const *)a.tokens, a.scores, a.types, a.n, 1, 2, 1, &err));
    cr_assert(strstr(err.msg, "byte token 500"), "%s", err.msg);
    a.types[500] = 1;
    cr_assert_null(mf_tok_new_sp((const char *const *)a.tokens, a.scores, a.types, a.n, 40000, 2, 1, &err));
    cr_assert(strstr(err.msg, "BOS id 40000"), "%s", err.msg);
    sp_arrays_free(&a);
}

/* ---- GPT-2 byte-level BPE: SmolLM2 ---- */

Test(tok_gpt2, smollm2_cases) {
    mf_tokenizer *t = load_smollm2();
    cr_assert_eq(mf_tok_vocab_size(t), 49152);
    json_t *g = load_json("tests/golden/tok/smollm2_cases.json");
    json_t *cases = json_object_get(g, "cases");
    cr_assert(json_array_size(cases) >= 30);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        const char *s = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int32_t *ids;
        size_t n;
        encode_ok(t, s, len, 0, &ids, &n);
        char label[128];
        snprintf(label, sizeof label, "smollm2 case %zu '%.40s'", i, s);
        assert_ids(ids, n, json_object_get(c, "ids"), label);
        if (!json_is_true(json_object_get(c, "lossy"))) assert_roundtrip(t, ids, n, s, len, label);
        free(ids);
    }
    json_decref(g);
    mf_tok_free(t);
}

/* SmolLM2's vocab under the Llama-3 and Qwen2 pre-tokenizers, against HF
 * tokenizers running those models' original regexes. */
static void check_other_pre(const char *pre) {
    mf_tokenizer *t = load_smollm2_pre(pre);
    json_t *g = load_json("tests/golden/tok/smollm2_cases.json");
    json_t *cases = json_object_get(g, "cases");
    json_t *want = json_object_get(json_object_get(g, "other_pre"), pre);
    cr_assert(json_array_size(want) == json_array_size(cases), "no golden for pre '%s'", pre);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        const char *s = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int32_t *ids;
        size_t n;
        encode_ok(t, s, len, 0, &ids, &n);
        char label[128];
        snprintf(label, sizeof label, "pre %s case %zu '%.40s'", pre, i, s);
        assert_ids(ids, n, json_array_get(want, i), label);
        free(ids);
    }
    json_decref(g);
    mf_tok_free(t);
}

Test(tok_gpt2, llama3_pre) { check_other_pre("llama-bpe"); }
Test(tok_gpt2, qwen2_pre) { check_other_pre("qwen2"); }

static long long smollm2_file_count(const char *name) {
    json_t *g = load_json("tests/golden/tok/smollm2_cases.json");
    long long n = json_integer_value(json_object_get(json_object_get(g, "file_counts"), name));
    json_decref(g);
    cr_assert(n > 0, "no golden count for %s", name);
    return n;
}

Test(tok_gpt2, smollm2_tinystories_2mib_count, .timeout = 120) {
    mf_tokenizer *t = load_smollm2();
    file_count(t, TINYSTORIES, 0, smollm2_file_count("tinystories_train_first2MiB.txt"), "SmolLM2 (byte-level BPE)");
    mf_tok_free(t);
}

Test(tok_gpt2, smollm2_wikitext2_count, .timeout = 120) {
    mf_tokenizer *t = load_smollm2();
    file_count(t, WIKI_RAW, 0, smollm2_file_count("wikitext2_raw_test.txt"), "SmolLM2 (byte-level BPE)");
    mf_tok_free(t);
}

Test(tok_gpt2, specials_bos_and_empty) {
    mf_tokenizer *t = load_smollm2();
    cr_assert_eq(mf_tok_bos(t), 1);
    cr_assert_eq(mf_tok_eos(t), 2);
    int32_t *ids;
    size_t n;
    encode_ok(t, "", 0, 0, &ids, &n);
    cr_assert_eq(n, 0);
    free(ids);
    encode_ok(t, "", 0, 1, &ids, &n);
    cr_assert(n == 1 && ids[0] == 1);
    free(ids);
    const char *s = "<|im_start|>user\nhi<|im_end|>";
    encode_ok(t, s, strlen(s), 0, &ids, &n);
    cr_assert(n >= 4 && ids[0] == 1 && ids[n - 1] == 2, "special tokens not matched as single tokens");
    char buf[32];
    cr_assert_eq(mf_tok_decode_token(t, -1, 1, buf, sizeof buf), 12);
    cr_assert_str_eq(buf, "<|im_start|>");
    free(ids);
    mf_tok_free(t);
}

Test(tok_gpt2, invalid_utf8) {
    mf_tokenizer *t = load_smollm2();
    check_bad_utf8(t);
    mf_tok_free(t);
}

/* A tiny byte-level vocab: the 256 byte characters, then merges. */
typedef struct {
    char *tokens[300];
    int n;
} mini_vocab;

static mini_vocab mini(void) {
    mini_vocab v = {{0}, 0};
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        unsigned cp = keep ? (unsigned)b : 256u + (unsigned)extra++;
        char *s = calloc(4, 1);
        if (cp < 0x80) s[0] = (char)cp;
        else s[0] = (char)(0xC0 | (cp >> 6)), s[1] = (char)(0x80 | (cp & 0x3F));
        v.tokens[v.n++] = s;
    }
    v.tokens[v.n++] = strdup("ab");
    v.tokens[v.n++] = strdup("<|x|>");
    return v;
}

Test(tok_gpt2, bad_vocab_and_pre) {
    mini_vocab v = mini();
    int32_t types[300];
    for (int i = 0; i < v.n; i++) types[i] = i == v.n - 1 ? 3 : 1;
    const char *merges[] = {"a b"};
    mf_err err = {{0}};
    const char *const *toks = (const char *const *)v.tokens;
    mf_tokenizer *t = mf_tok_new_gpt2(toks, v.n, merges, 1, types, "no-such-pre", -1, -1, &err);
    cr_assert_null(t);
    cr_assert(strstr(err.msg, "'no-such-pre'"), "%s", err.msg);
    const char *bad_merge[] = {"a c"};
    cr_assert_null(mf_tok_new_gpt2((const char *const *)v.tokens, v.n, bad_merge, 1, types, "gpt2", -1, -1, &err));
    cr_assert(strstr(err.msg, "merge 0 'a c'"), "%s", err.msg);
    const char *no_space[] = {"ab"};
    cr_assert_null(mf_tok_new_gpt2((const char *const *)v.tokens, v.n, no_space, 1, types, "gpt2", -1, -1, &err));
    cr_assert(strstr(err.msg, "merge 0 'ab'"), "%s", err.msg);
    /* every supported pre-tokenizer name compiles, encodes and round-trips */
    const char *pres[] = {NULL, "default", "smollm", "llama-bpe", "llama3", "qwen2", "gpt2", "gpt-2", "falcon",
                          "dbrx", "starcoder", "command-r"};
    const char *text = "Hello world 12345 it's  a\ttest\r\n\n\u00e9t\u00e9 \xe6\x97\xa5\xe6\x9c\xac <|x|>!!";
    for (size_t k = 0; k < sizeof pres / sizeof pres[0]; k++) {
        t = mf_tok_new_gpt2((const char *const *)v.tokens, v.n, merges, 1, types, pres[k], -1, -1, &err);
        cr_assert_not_null(t, "pre %s: %s", pres[k] ? pres[k] : "NULL", err.msg);
        int32_t *ids;
        size_t n;
        encode_ok(t, text, strlen(text), 0, &ids, &n);
        assert_roundtrip(t, ids, n, text, strlen(text), pres[k] ? pres[k] : "NULL");
        free(ids);
        mf_tok_free(t);
    }

    /* a working one: merges, specials, decode of the byte alphabet */
    t = mf_tok_new_gpt2((const char *const *)v.tokens, v.n, merges, 1, types, "gpt2", -1, -1, &err);
    cr_assert_not_null(t, "%s", err.msg);
    int32_t *ids;
    size_t n;
    encode_ok(t, "xab<|x|>\n", 9, 0, &ids, &n);
    cr_assert(n == 4 && ids[0] == 'x' && ids[1] == 256 && ids[2] == 257 && ids[3] == 10, "got %zu ids", n);
    char *s = mf_tok_decode(t, ids, n);
    cr_assert_str_eq(s, "xab<|x|>\n");
    free(s);
    free(ids);
    /* a byte without a token is dropped (as HF tokenizers and llama.cpp do) */
    char *saved = v.tokens['q'];
    v.tokens['q'] = "zz";
    mf_tokenizer *t2 = mf_tok_new_gpt2((const char *const *)v.tokens, v.n, merges, 1, types, "gpt2", -1, -1, &err);
    cr_assert_not_null(t2, "%s", err.msg);
    encode_ok(t2, "aqb", 3, 0, &ids, &n);
    cr_assert(n == 1 && ids[0] == 256, "got %zu ids", n);
    free(ids);
    mf_tok_free(t2);
    v.tokens['q'] = saved;
    /* BOS requested but there is none */
    cr_assert_eq(mf_tok_encode(t, "a", 1, 1, &ids, &n, &err), -1);
    cr_assert(strstr(err.msg, "BOS"), "%s", err.msg);
    mf_tok_free(t);
    for (int i = 0; i < v.n; i++) free(v.tokens[i]);
}

/* A vocabulary with a space after a non-space ("a▁") disables the word split:
 * the global best-first merge must still follow run.c. Expected ids worked by
 * hand from run.c's loop: [▁ a ▁ b] -> "a▁" (-1) beats "▁b" (-2) ->
 * [▁ a▁ b] -> "a▁b" (-0.5) -> [▁ a▁b]. Splitting at the space would give
 * [▁ a ▁b]. */
Test(tok_sp, no_word_split_vocab) {
    const char *tokens[] = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "a\xE2\x96\x81", "\xE2\x96\x81" "b",
                            "a\xE2\x96\x81" "b", "<0x0A>"};
    float scores[] = {0, 0, 0, -10, -10, -10, -1, -2, -0.5f, 0};
    int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 6};
    mf_err err = {{0}};
    mf_tokenizer *t = mf_tok_new_sp(tokens, scores, types, 10, 1, 2, 1, &err);
    cr_assert_not_null(t, "%s", err.msg);
    int32_t *ids;
    size_t n;
    encode_ok(t, "a b", 3, 1, &ids, &n);
    cr_assert(n == 3 && ids[0] == 1 && ids[1] == 3 && ids[2] == 8, "got %zu ids: %d %d %d", n, ids[0],
              n > 1 ? ids[1] : -1, n > 2 ? ids[2] : -1);
    free(ids);
    /* a codepoint with no token: byte fallback for '\n', the unknown token for bytes without one */
    encode_ok(t, "\nx", 2, 0, &ids, &n);
    cr_assert(n == 3 && ids[0] == 3 && ids[1] == 9 && ids[2] == 0, "got %zu ids", n);
    char *s = mf_tok_decode(t, ids, n);
    cr_assert_str_eq(s, " \n<unk>");
    free(s);
    free(ids);
    mf_tok_free(t);
}

/* ---- random text: no crash, decode(encode(x)) == x ---- */

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random valid UTF-8 without NUL, mostly ASCII; smollm_safe avoids the bytes
 * SmolLM2 has no token for (C0 controls other than \t \n \r, planes >= 4). */
static size_t random_utf8(uint64_t *rng, char *out, size_t max_cp, int smollm_safe) {
    size_t n = 0, k = 1 + rng_next(rng) % max_cp;
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    for (size_t i = 0; i < k; i++) {
        uint64_t r = rng_next(rng) % 100;
        uint32_t cp;
        if (r < 50) cp = (uint32_t)alnum[rng_next(rng) % (sizeof alnum - 1)];
        else if (r < 75) cp = 0x20 + (uint32_t)(rng_next(rng) % 0x5F);
        else if (r < 80) cp = "\t\n\r "[rng_next(rng) % 4];
        else if (r < 85) cp = 1 + (uint32_t)(rng_next(rng) % 0x1F);
        else if (r < 93) cp = 0x80 + (uint32_t)(rng_next(rng) % 0x780);
        else if (r < 98) cp = 0x800 + (uint32_t)(rng_next(rng) % 0xF800);
        else cp = 0x10000 + (uint32_t)(rng_next(rng) % 0x100000);
        if (cp >= 0xD800 && cp < 0xE000) cp = 'x';
        if (smollm_safe && ((cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp >= 0x40000)) cp = 'y';
        unsigned char *o = (unsigned char *)out + n;
        if (cp < 0x80) o[0] = (unsigned char)cp, n += 1;
        else if (cp < 0x800) o[0] = (unsigned char)(0xC0 | cp >> 6), o[1] = (unsigned char)(0x80 | (cp & 0x3F)), n += 2;
        else if (cp < 0x10000)
            o[0] = (unsigned char)(0xE0 | cp >> 12), o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)),
            o[2] = (unsigned char)(0x80 | (cp & 0x3F)), n += 3;
        else
            o[0] = (unsigned char)(0xF0 | cp >> 18), o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F)),
            o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (unsigned char)(0x80 | (cp & 0x3F)), n += 4;
    }
    out[n] = 0;
    return n;
}

static void fuzz_roundtrip(const mf_tokenizer *t, int bos, int smollm_safe, uint64_t seed) {
    char *buf = malloc(4 * 300 + 1);
    for (int it = 0; it < 300; it++) {
        size_t len = random_utf8(&seed, buf, 300, smollm_safe);
        int32_t *ids;
        size_t n;
        encode_ok(t, buf, len, bos, &ids, &n);
        char label[64];
        snprintf(label, sizeof label, "random text %d", it);
        assert_roundtrip(t, ids, n, buf, len, label);
        free(ids);
        /* random bytes: valid or not, encode must return cleanly */
        for (size_t i = 0; i < len; i++) buf[i] = (char)(rng_next(&seed) & 0xFF);
        mf_err err = {{0}};
        if (mf_tok_encode(t, buf, len, bos, &ids, &n, &err) == 0) free(ids);
    }
    free(buf);
}

Test(tok_llama2c, random_text_roundtrip) {
    mf_tokenizer *t = load_llama2c(LLAMA2_TOK, 32000);
    fuzz_roundtrip(t, 1, 0, 0x9E3779B97F4A7C15ULL);
    mf_tok_free(t);
}

Test(tok_gpt2, random_text_roundtrip) {
    mf_tokenizer *t = load_smollm2();
    fuzz_roundtrip(t, 0, 1, 0xD1B54A32D192ED03ULL);
    mf_tok_free(t);
}
