/* test_gguf.c - GGUF reader and ggml dequantizers against gguf-py goldens.
 *
 * Goldens come from tests/gen_dequant_goldens.py (numpy + PyPI gguf):
 *   tests/golden/dequant/<TYPE>.{bin,f32}  raw blocks and gguf.quants output
 *   tests/golden/gguf/tiny.{gguf,json}     a GGUFWriter file and its expectations
 *   tests/golden/gguf/smollm2.json         facts about the real SmolLM2 Q4_1 GGUF
 * "wsum" = sum_i bits(x[i]) * (2i+1) mod 2^64: an exact fingerprint of f32 data. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/dequant.h"
#include "io/gguf.h"

/* ---- helpers ---- */

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s (run from the repo root)", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(sz > 0 ? (size_t)sz : 1);
    cr_assert_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void spit(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    cr_assert_not_null(j, "%s: %s (line %d)", path, je.text, je.line);
    return j;
}

static uint64_t wsum(const float *x, size_t n) {
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        h += (uint64_t)u * (2 * (uint64_t)i + 1);
    }
    return h;
}

static uint64_t hex_u64(json_t *o, const char *k) {
    return strtoull(json_string_value(json_object_get(o, k)), NULL, 16);
}

static int64_t jint(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

static size_t unhex(const char *h, uint8_t *out) {
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

#define TINY "tests/golden/gguf/tiny.gguf"
#define TINY_JSON "tests/golden/gguf/tiny.json"

/* ---- dequantizers: bit-exact vs gguf.quants ---- */

static void check_dequant(uint32_t type) {
    const char *name = mf_ggml_type_name(type);
    cr_assert_not_null(name);
    char p[256];
    size_t nraw, nf;
    snprintf(p, sizeof p, "tests/golden/dequant/%s.bin", name);
    uint8_t *raw = slurp(p, &nraw);
    snprintf(p, sizeof p, "tests/golden/dequant/%s.f32", name);
    uint8_t *want = slurp(p, &nf);
    int64_t n = (int64_t)(nf / 4);
    size_t rb;
    mf_err err = {{0}};
    cr_assert_eq(mf_ggml_row_bytes(type, n, &rb, &err), 0, "%s", err.msg);
    cr_assert_eq(rb, nraw, "%s: %lld values should take %zu bytes", name, (long long)n, nraw);

    float *got = malloc(nf);
    cr_assert_eq(mf_dequantize(type, raw, got, n, &err), 0, "%s", err.msg);
    for (int64_t i = 0; i < n; i++) {
        uint32_t a, b;
        memcpy(&a, got + i, 4);
        memcpy(&b, want + 4 * i, 4);
        cr_assert_eq(a, b, "%s value %lld: got %.9g (0x%08x), gguf-py %.9g (0x%08x)", name, (long long)i, got[i], a,
                     ((float *)(void *)want)[i], b);
    }
    /* unaligned source, and the row-parallel entry point with 1 block per row */
    uint8_t *shifted = malloc(nraw + 1);
    memcpy(shifted + 1, raw, nraw);
    memset(got, 0, nf);
    int bs = mf_ggml_block_size(type);
    cr_assert_eq(mf_dequantize_rows(type, shifted + 1, got, n / bs, bs, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(got, want, nf), 0, "%s: mf_dequantize_rows on unaligned input differs", name);
    free(shifted);
    free(got);
    free(raw);
    free(want);
}

Test(gguf_dequant, f32) { check_dequant(MF_GGML_F32); }
Test(gguf_dequant, f16) { check_dequant(MF_GGML_F16); }
Test(gguf_dequant, bf16) { check_dequant(MF_GGML_BF16); }
Test(gguf_dequant, q4_0) { check_dequant(MF_GGML_Q4_0); }
Test(gguf_dequant, q4_1) { check_dequant(MF_GGML_Q4_1); }
Test(gguf_dequant, q5_0) { check_dequant(MF_GGML_Q5_0); }
Test(gguf_dequant, q5_1) { check_dequant(MF_GGML_Q5_1); }
Test(gguf_dequant, q8_0) { check_dequant(MF_GGML_Q8_0); }
Test(gguf_dequant, q2_k) { check_dequant(MF_GGML_Q2_K); }
Test(gguf_dequant, q3_k) { check_dequant(MF_GGML_Q3_K); }
Test(gguf_dequant, q4_k) { check_dequant(MF_GGML_Q4_K); }
Test(gguf_dequant, q5_k) { check_dequant(MF_GGML_Q5_K); }
Test(gguf_dequant, q6_k) { check_dequant(MF_GGML_Q6_K); }

/* Block geometry as in ggml-common.h / gguf.GGML_QUANT_SIZES. */
Test(gguf_dequant, type_table) {
    static const struct {
        uint32_t t;
        const char *name;
        int block;
        size_t size;
    } want[] = {
        {0, "F32", 1, 4},       {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},    {3, "Q4_1", 32, 20},
        {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},    {8, "Q8_0", 32, 34},    {10, "Q2_K", 256, 84},
        {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176}, {14, "Q6_K", 256, 210},
        {30, "BF16", 1, 2},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_expect_str_eq(mf_ggml_type_name(want[i].t), want[i].name);
        cr_expect_eq(mf_ggml_block_size(want[i].t), want[i].block, "%s", want[i].name);
        cr_expect_eq(mf_ggml_type_size(want[i].t), want[i].size, "%s", want[i].name);
    }
    uint32_t unknown[] = {4, 5, 9, 15, 16, 29, 31, 99, 0xffffffffu};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        cr_expect_null(mf_ggml_type_name(unknown[i]));
        cr_expect_eq(mf_ggml_type_size(unknown[i]), 0);
        cr_expect_eq(mf_ggml_block_size(unknown[i]), 0);
    }
    size_t rb;
    mf_err err = {{0}};
    cr_assert_eq(mf_ggml_row_bytes(MF_GGML_Q4_K, 576 * 256, &rb, &err), 0);
    cr_expect_eq(rb, (size_t)576 * 144);
    cr_expect_eq(mf_ggml_row_bytes(MF_GGML_Q8_0, 33, &rb, &err), -1);
    cr_expect(strstr(err.msg, "Q8_0") && strstr(err.msg, "multiple of the block size 32"), "%s", err.msg);
    cr_expect_eq(mf_ggml_row_bytes(99, 32, &rb, &err), -1);
    cr_expect(strstr(err.msg, "unsupported ggml type 99"), "%s", err.msg);
    cr_expect_eq(mf_ggml_row_bytes(MF_GGML_F32, -1, &rb, &err), -1);
    cr_expect_eq(mf_ggml_row_bytes(MF_GGML_F32, INT64_MAX, &rb, &err), -1);
    cr_expect(strstr(err.msg, "overflow"), "%s", err.msg);
    float y[64];
    uint8_t x[64] = {0};
    cr_expect_eq(mf_dequantize(MF_GGML_Q4_K, x, y, 32, &err), -1);
    cr_expect(strstr(err.msg, "Q4_K") && strstr(err.msg, "256"), "%s", err.msg);
    cr_expect_eq(mf_dequantize(7777, x, y, 1, &err), -1);
    cr_expect_eq(mf_dequantize_rows(MF_GGML_Q8_0, x, y, 1, 31, &err), -1);
}

/* ---- tiny.gguf: metadata of every type, tensors of every type ---- */

static mf_gguf *open_tiny(void) {
    mf_err err = {{0}};
    mf_gguf *g = mf_gguf_open(TINY, &err);
    cr_assert_not_null(g, "%s", err.msg);
    return g;
}

static const char *vtype_str[] = {"UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",  "FLOAT32",
                                  "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64"};

Test(gguf_tiny, header) {
    json_t *j = load_json(TINY_JSON);
    mf_gguf *g = open_tiny();
    cr_expect_str_eq(mf_gguf_path(g), TINY);
    cr_expect_eq(mf_gguf_version(g), 3);
    cr_expect_eq(mf_gguf_n_tensors(g), (size_t)jint(j, "n_tensors"));
    cr_expect_eq(mf_gguf_n_kv(g), (size_t)jint(j, "n_kv"));
    cr_expect_eq(mf_gguf_alignment(g), (uint32_t)jint(j, "alignment"));
    cr_expect_eq(mf_gguf_data_offset(g), (size_t)jint(j, "data_offset"));
    cr_expect_eq(mf_gguf_file_size(g), (size_t)jint(j, "file_size"));
    mf_gguf_close(g);
    json_decref(j);
}

/* Every key: type, element type, count and value as gguf-py wrote them. */
Test(gguf_tiny, metadata_values) {
    json_t *j = load_json(TINY_JSON);
    mf_gguf *g = open_tiny();
    mf_err err = {{0}};
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "kv"), i, e) {
        const char *key = json_string_value(json_object_get(e, "key"));
        const char *type = json_string_value(json_object_get(e, "type"));
        cr_expect_str_eq(mf_gguf_kv_key(g, i), key, "key order");
        uint32_t et;
        size_t n;
        int t = mf_gguf_kv_type(g, key, &et, &n);
        cr_assert(t >= 0, "key %s missing", key);
        cr_assert_str_eq(vtype_str[t], type, "key %s", key);
        json_t *v = json_object_get(e, "value");
        if (!strcmp(type, "ARRAY")) {
            const char *ets = json_string_value(json_object_get(e, "elem_type"));
            cr_expect_str_eq(vtype_str[et], ets, "key %s", key);
            cr_expect_eq(n, (size_t)jint(e, "n"), "key %s", key);
            if (!strcmp(ets, "STRING")) {
                const char *const *s;
                const size_t *lens;
                size_t ns;
                cr_assert_eq(mf_gguf_get_str_array_lens(g, key, &s, &lens, &ns, &err), 0, "%s", err.msg);
                json_t *hx = json_object_get(e, "value_hex");
                cr_assert_eq(ns, json_array_size(hx));
                for (size_t k = 0; k < ns; k++) {
                    uint8_t want[256];
                    size_t wl = unhex(json_string_value(json_array_get(hx, k)), want);
                    cr_expect_eq(lens[k], wl, "key %s[%zu]", key, k);
                    cr_expect_eq(memcmp(s[k], want, wl), 0, "key %s[%zu]", key, k);
                    cr_expect_eq(s[k][wl], 0, "NUL-terminated");
                }
            } else if (!strcmp(ets, "FLOAT32")) {
                const float *f;
                size_t nf;
                cr_assert_eq(mf_gguf_get_f32_array(g, key, &f, &nf, &err), 0, "%s", err.msg);
                for (size_t k = 0; k < nf; k++)
                    cr_expect_eq((double)f[k], json_real_value(json_array_get(v, k)), "key %s[%zu]", key, k);
            } else if (!strcmp(ets, "INT32")) {
                const int32_t *a;
                size_t na;
                cr_assert_eq(mf_gguf_get_i32_array(g, key, &a, &na, &err), 0, "%s", err.msg);
                for (size_t k = 0; k < na; k++)
                    cr_expect_eq(a[k], json_integer_value(json_array_get(v, k)), "key %s[%zu]", key, k);
            }
        } else if (!strcmp(type, "STRING")) {
            const char *s;
            size_t len;
            uint8_t want[256];
            size_t wl = unhex(json_string_value(json_object_get(e, "value_hex")), want);
            cr_assert_eq(mf_gguf_get_str_len(g, key, &s, &len, &err), 0, "%s", err.msg);
            cr_expect_eq(len, wl);
            cr_expect_eq(memcmp(s, want, wl), 0, "key %s", key);
        } else if (!strcmp(type, "FLOAT32") || !strcmp(type, "FLOAT64")) {
            double d;
            float f;
            cr_assert_eq(mf_gguf_get_f64(g, key, &d, &err), 0, "%s", err.msg);
            cr_expect_eq(d, json_real_value(v), "key %s: %.17g", key, d);
            cr_assert_eq(mf_gguf_get_f32(g, key, &f, &err), 0, "%s", err.msg);
            cr_expect_eq(f, (float)json_real_value(v), "key %s", key);
        } else if (!strcmp(type, "BOOL")) {
            int b;
            cr_assert_eq(mf_gguf_get_bool(g, key, &b, &err), 0, "%s", err.msg);
            cr_expect_eq(b, json_integer_value(v), "key %s", key);
        } else if (!strcmp(type, "UINT64")) {
            uint64_t u;
            cr_assert_eq(mf_gguf_get_u64(g, key, &u, &err), 0, "%s", err.msg);
            cr_expect_eq(u, strtoull(json_string_value(json_object_get(e, "value_str")), NULL, 10), "key %s", key);
        } else if (!strcmp(type, "INT64")) {
            int64_t s;
            cr_assert_eq(mf_gguf_get_i64(g, key, &s, &err), 0, "%s", err.msg);
            cr_expect_eq(s, strtoll(json_string_value(json_object_get(e, "value_str")), NULL, 10), "key %s", key);
        } else { /* 8..32-bit integers */
            int64_t s;
            cr_assert_eq(mf_gguf_get_i64(g, key, &s, &err), 0, "%s", err.msg);
            cr_expect_eq(s, json_integer_value(v), "key %s", key);
        }
    }
    mf_gguf_close(g);
    json_decref(j);
}

/* Integer conversions, type mismatches and missing keys give named errors. */
Test(gguf_tiny, getter_rules) {
    mf_gguf *g = open_tiny();
    mf_err err = {{0}};
    uint32_t u;
    int32_t s;
    float f;
    int b;
    const char *str;
    cr_assert_eq(mf_gguf_get_u32(g, "test.u8", &u, &err), 0);
    cr_expect_eq(u, 250);
    cr_assert_eq(mf_gguf_get_u32(g, "test.u32", &u, &err), 0);
    cr_expect_eq(u, 4000000000u);
    cr_assert_eq(mf_gguf_get_u32(g, "general.alignment", &u, &err), 0);
    cr_expect_eq(u, 64);
    cr_assert_eq(mf_gguf_get_i32(g, "test.i16", &s, &err), 0);
    cr_expect_eq(s, -32000);
    cr_expect_eq(mf_gguf_get_u32(g, "test.i8", &u, &err), -1);
    cr_expect(strstr(err.msg, TINY ": key 'test.i8' value -100 does not fit in uint32"), "%s", err.msg);
    cr_expect_eq(mf_gguf_get_u32(g, "test.u64", &u, &err), -1);
    cr_expect(strstr(err.msg, "'test.u64'") && strstr(err.msg, "does not fit"), "%s", err.msg);
    cr_expect_eq(mf_gguf_get_i32(g, "test.u32", &s, &err), -1);
    cr_expect(strstr(err.msg, "does not fit in int32"), "%s", err.msg);
    cr_expect_eq(mf_gguf_get_u32(g, "test.str", &u, &err), -1);
    cr_expect(strstr(err.msg, TINY ": key 'test.str' has type STRING"), "%s", err.msg);
    cr_expect_eq(mf_gguf_get_u32(g, "test.f32", &u, &err), -1);
    cr_expect_eq(mf_gguf_get_u32(g, "no.such.key", &u, &err), -1);
    cr_expect(strstr(err.msg, TINY ": key 'no.such.key' not found"), "%s", err.msg);
    cr_expect_eq(mf_gguf_has_key(g, "no.such.key"), 0);
    cr_expect_eq(mf_gguf_has_key(g, "test.nested"), 1);
    cr_expect_eq(mf_gguf_kv_type(g, "no.such.key", NULL, NULL), -1);
    cr_expect_eq(mf_gguf_get_f32(g, "test.u32", &f, &err), -1);
    cr_expect(strstr(err.msg, "'test.u32' has type UINT32, expected FLOAT32 or FLOAT64"), "%s", err.msg);
    cr_expect_eq(mf_gguf_get_bool(g, "test.u8", &b, &err), -1);
    cr_expect_eq(mf_gguf_get_str(g, "test.arr_str", &str, &err), -1);
    cr_expect(strstr(err.msg, "has type ARRAY[STRING], expected STRING"), "%s", err.msg);
    cr_assert_eq(mf_gguf_get_str(g, "general.architecture", &str, &err), 0);
    cr_expect_str_eq(str, "tinyarch");

    const int32_t *a;
    const float *fa;
    const char *const *sa;
    size_t n;
    cr_assert_eq(mf_gguf_get_i32_array(g, "test.arr_u32_small", &a, &n, &err), 0, "%s", err.msg);
    cr_expect(n == 3 && a[0] == 5 && a[2] == 7);
    cr_expect_eq(mf_gguf_get_i32_array(g, "test.arr_u32", &a, &n, &err), -1);
    cr_expect(strstr(err.msg, "'test.arr_u32' element 2 = 4294967295 does not fit in int32"), "%s", err.msg);
    cr_expect_eq(mf_gguf_get_f32_array(g, "test.arr_f64", &fa, &n, &err), -1);
    cr_expect(strstr(err.msg, "ARRAY[FLOAT64], expected ARRAY[FLOAT32]"), "%s", err.msg);
    cr_expect_eq(mf_gguf_get_str_array(g, "test.arr_i32", &sa, &n, &err), -1);
    cr_expect_eq(mf_gguf_get_i32_array(g, "test.nested", &a, &n, &err), -1);
    cr_expect(strstr(err.msg, "ARRAY[ARRAY]"), "%s", err.msg);
    uint32_t et;
    cr_expect_eq(mf_gguf_kv_type(g, "test.nested", &et, &n), MF_GGUF_ARRAY);
    cr_expect(et == MF_GGUF_ARRAY && n == 2);
    cr_assert_eq(mf_gguf_get_u32(g, "test.after_nested", &u, &err), 0, "%s", err.msg);
    cr_expect_eq(u, 12345);

    /* raw value bytes of a key, for verbatim copies */
    for (size_t i = 0; i < mf_gguf_n_kv(g); i++) {
        if (strcmp(mf_gguf_kv_key(g, i), "test.u32_small")) continue;
        uint32_t t;
        const void *p;
        size_t nb;
        cr_assert_eq(mf_gguf_kv_raw(g, i, &t, &p, &nb), 0);
        cr_expect(t == MF_GGUF_UINT32 && nb == 4 && !memcmp(p, &(uint32_t){30}, 4));
    }
    cr_expect_null(mf_gguf_kv_key(g, 1000));
    mf_gguf_close(g);
}

/* Every tensor: shape, type, placement, and dequantized values vs gguf-py. */
Test(gguf_tiny, tensors) {
    json_t *j = load_json(TINY_JSON);
    size_t file_n;
    uint8_t *file = slurp(TINY, &file_n);
    mf_gguf *g = open_tiny();
    mf_err err = {{0}};
    size_t data_off = (size_t)jint(j, "data_offset");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "tensors"), i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        const mf_gguf_tensor *t = mf_gguf_find_tensor(g, name);
        cr_assert_not_null(t, "tensor %s missing", name);
        cr_expect_eq(t, mf_gguf_tensor_at(g, i), "tensor %s order", name);
        cr_expect_str_eq(t->name, name);
        cr_expect_eq(t->n_dims, jint(e, "n_dims"), "%s", name);
        for (int d = 0; d < 4; d++)
            cr_expect_eq(t->ne[d], json_integer_value(json_array_get(json_object_get(e, "ne"), d)), "%s ne[%d]", name,
                         d);
        cr_expect_eq(t->type, (uint32_t)jint(e, "type"), "%s", name);
        cr_expect_str_eq(mf_ggml_type_name(t->type), json_string_value(json_object_get(e, "type_name")));
        cr_expect_eq(t->nbytes, (size_t)jint(e, "nbytes"), "%s", name);
        cr_expect_eq(t->offset, (uint64_t)jint(e, "offset"), "%s", name);
        cr_assert_eq(memcmp(t->data, file + data_off + t->offset, t->nbytes), 0, "%s data bytes", name);
        int64_t nv = jint(e, "n_values");
        cr_assert_eq(nv, t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
        float *y = malloc((size_t)nv * 4);
        cr_assert_eq(mf_dequantize_rows(t->type, t->data, y, nv / t->ne[0], t->ne[0], &err), 0, "%s", err.msg);
        cr_expect_eq(wsum(y, (size_t)nv), hex_u64(e, "wsum"), "%s: dequantized values differ from gguf-py", name);
        double sum = 0;
        for (int64_t k = 0; k < nv; k++) sum += y[k];
        cr_expect(fabs(sum - json_real_value(json_object_get(e, "sum"))) < 1e-9 * (1 + fabs(sum)), "%s sum", name);
        json_t *first = json_object_get(e, "first");
        for (size_t k = 0; k < json_array_size(first); k++)
            cr_expect_eq((double)y[k], json_real_value(json_array_get(first, k)), "%s[%zu]", name, k);
        free(y);
    }
    cr_expect_null(mf_gguf_find_tensor(g, "blk.0.nope"));
    cr_expect_null(mf_gguf_find_tensor(g, ""));
    cr_expect_null(mf_gguf_tensor_at(g, mf_gguf_n_tensors(g)));
    mf_gguf_close(g);
    free(file);
    json_decref(j);
}

/* ---- the real SmolLM2-135M-Instruct Q4_1 GGUF ---- */

static char *smol_path(void) {
    const char *cache = getenv("MINIFUSE_CACHE");
    char buf[4096];
    if (cache && *cache)
        snprintf(buf, sizeof buf, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
    else
        snprintf(buf, sizeof buf, "%s/.cache/minifuse/SmolLM2-135M-Instruct.Q4_1.gguf",
                 getenv("HOME") ? getenv("HOME") : "");
    cr_assert_eq(access(buf, R_OK), 0, "SmolLM2 GGUF not found at %s (set MINIFUSE_CACHE)", buf);
    return strdup(buf);
}

Test(gguf_smollm2, metadata, .timeout = 60) {
    json_t *j = load_json("tests/golden/gguf/smollm2.json");
    char *path = smol_path();
    mf_err err = {{0}};
    double t0 = now_s();
    mf_gguf *g = mf_gguf_open(path, &err);
    double dt = now_s() - t0;
    cr_assert_not_null(g, "%s", err.msg);
    cr_log_info("opened %s in %.1f ms", path, dt * 1e3);
    cr_expect_eq(mf_gguf_n_tensors(g), 272);
    cr_expect_eq(mf_gguf_n_tensors(g), (size_t)jint(j, "n_tensors"));
    cr_expect_eq(mf_gguf_n_kv(g), (size_t)jint(j, "n_kv"));
    uint32_t u;
    float f;
    int b;
    const char *s;
    cr_assert_eq(mf_gguf_get_u32(g, "llama.block_count", &u, &err), 0, "%s", err.msg);
    cr_expect_eq(u, 30);
    cr_assert_eq(mf_gguf_get_u32(g, "llama.embedding_length", &u, &err), 0);
    cr_expect_eq(u, (uint32_t)jint(j, "embedding_length"));
    cr_assert_eq(mf_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f, &err), 0);
    cr_expect_eq((double)f, json_real_value(json_object_get(j, "rms_eps")));
    cr_assert_eq(mf_gguf_get_f32(g, "llama.rope.freq_base", &f, &err), 0);
    cr_expect_eq((double)f, json_real_value(json_object_get(j, "rope_freq_base")));
    cr_assert_eq(mf_gguf_get_str(g, "general.architecture", &s, &err), 0);
    cr_expect_str_eq(s, json_string_value(json_object_get(j, "architecture")));
    cr_assert_eq(mf_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b, &err), 0);
    cr_expect_eq(b, json_is_true(json_object_get(j, "add_bos_token")));
    cr_assert_eq(mf_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u, &err), 0);
    cr_expect_eq(u, (uint32_t)jint(j, "eos_token_id"));

    const char *const *tok, *const *merges;
    const size_t *tlen, *mlen;
    const int32_t *ttype;
    size_t n_tok, n_merges, n_types;
    cr_assert_eq(mf_gguf_get_str_array_lens(g, "tokenizer.ggml.tokens", &tok, &tlen, &n_tok, &err), 0, "%s", err.msg);
    cr_expect_eq(n_tok, 49152);
    cr_assert_eq(mf_gguf_get_str_array_lens(g, "tokenizer.ggml.merges", &merges, &mlen, &n_merges, &err), 0);
    cr_expect_eq(n_merges, 48900);
    cr_assert_eq(mf_gguf_get_i32_array(g, "tokenizer.ggml.token_type", &ttype, &n_types, &err), 0, "%s", err.msg);
    cr_expect_eq(n_types, 49152);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "tokens"), i, e) {
        size_t id = (size_t)jint(e, "id");
        uint8_t want[256];
        size_t wl = unhex(json_string_value(json_object_get(e, "hex")), want);
        cr_expect(tlen[id] == wl && !memcmp(tok[id], want, wl), "token %zu", id);
        cr_expect_eq(ttype[id], jint(e, "type"), "token type %zu", id);
    }
    json_array_foreach(json_object_get(j, "merges"), i, e) {
        size_t id = (size_t)jint(e, "id");
        uint8_t want[256];
        size_t wl = unhex(json_string_value(json_object_get(e, "hex")), want);
        cr_expect(mlen[id] == wl && !memcmp(merges[id], want, wl), "merge %zu", id);
    }
    const mf_gguf_tensor *emb = mf_gguf_find_tensor(g, "token_embd.weight");
    cr_assert_not_null(emb);
    cr_expect_eq(emb->type, MF_GGML_Q8_0);
    cr_expect(emb->n_dims == 2 && emb->ne[0] == 576 && emb->ne[1] == 49152 && emb->ne[2] == 1 && emb->ne[3] == 1);
    cr_expect_eq(emb->nbytes, (size_t)49152 * 18 * 34);
    for (size_t k = 0; k < mf_gguf_n_tensors(g); k++)
        cr_expect_eq(mf_gguf_find_tensor(g, mf_gguf_tensor_at(g, k)->name), mf_gguf_tensor_at(g, k));
    mf_gguf_close(g);
    free(path);
    json_decref(j);
}

Test(gguf_smollm2, dequantize, .timeout = 120) {
    json_t *j = load_json("tests/golden/gguf/smollm2.json");
    char *path = smol_path();
    mf_err err = {{0}};
    mf_gguf *g = mf_gguf_open(path, &err);
    cr_assert_not_null(g, "%s", err.msg);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "tensors"), i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        const mf_gguf_tensor *t = mf_gguf_find_tensor(g, name);
        cr_assert_not_null(t, "%s", name);
        cr_expect_eq(t->type, (uint32_t)jint(e, "type"), "%s", name);
        int64_t n = jint(e, "n_values");
        cr_assert_eq(n, t->ne[0] * t->ne[1]);
        float *y = malloc((size_t)n * 4);
        double t0 = now_s();
        cr_assert_eq(mf_dequantize(t->type, t->data, y, n, &err), 0, "%s", err.msg);
        double t1 = now_s();
        cr_assert_eq(mf_dequantize_rows(t->type, t->data, y, t->ne[1], t->ne[0], &err), 0, "%s", err.msg);
        double t2 = now_s();
        cr_log_info("%s %s: %lld values, 1 thread %.0f MB/s out, rows %.0f MB/s out", name, mf_ggml_type_name(t->type),
                    (long long)n, 4e-6 * n / (t1 - t0), 4e-6 * n / (t2 - t1));
        cr_expect_eq(wsum(y, (size_t)n), hex_u64(e, "wsum"), "%s: values differ from gguf-py", name);
        double sum = 0, sumsq = 0;
        for (int64_t k = 0; k < n; k++) {
            sum += y[k];
            sumsq += (double)y[k] * y[k];
        }
        double js = json_real_value(json_object_get(e, "sum")), jq = json_real_value(json_object_get(e, "sumsq"));
        cr_expect(fabs(sum - js) <= 1e-9 * (1 + fabs(js)), "%s: sum %.12g vs %.12g", name, sum, js);
        cr_expect(fabs(sumsq - jq) <= 1e-9 * (1 + fabs(jq)), "%s: sumsq %.12g vs %.12g", name, sumsq, jq);
        json_t *first = json_object_get(e, "first"), *last = json_object_get(e, "last");
        for (size_t k = 0; k < 64; k++) {
            cr_expect_eq((double)y[k], json_real_value(json_array_get(first, k)), "%s[%zu]", name, k);
            cr_expect_eq((double)y[n - 64 + k], json_real_value(json_array_get(last, k)), "%s[-%zu]", name, 64 - k);
        }
        free(y);
    }
    mf_gguf_close(g);
    free(path);
    json_decref(j);
}

/* ---- malformed files: NULL, a message naming the file and the problem ---- */

typedef struct bad_ctx {
    char dir[64];
    char path[128];
    uint8_t *orig;
    size_t n;
    json_t *j;
} bad_ctx;

static void bad_init(bad_ctx *c) {
    strcpy(c->dir, "/tmp/mf_gguf_test_XXXXXX");
    cr_assert_not_null(mkdtemp(c->dir));
    snprintf(c->path, sizeof c->path, "%s/bad.gguf", c->dir);
    c->orig = slurp(TINY, &c->n);
    c->j = load_json(TINY_JSON);
}

static void bad_fini(bad_ctx *c) {
    unlink(c->path);
    rmdir(c->dir);
    free(c->orig);
    json_decref(c->j);
}

/* Open b[0..n) written to c->path; expect NULL and every substring in the message. */
static void expect_bad(bad_ctx *c, const uint8_t *b, size_t n, const char *what, const char *sub1, const char *sub2) {
    spit(c->path, b, n);
    mf_err err = {{0}};
    mf_gguf *g = mf_gguf_open(c->path, &err);
    if (g) mf_gguf_close(g);
    cr_assert_null(g, "%s: opened a bad file", what);
    cr_expect_eq(strncmp(err.msg, c->path, strlen(c->path)), 0, "%s: message does not start with the path: %s", what,
                 err.msg);
    cr_expect(strstr(err.msg, sub1), "%s: '%s' not in: %s", what, sub1, err.msg);
    if (sub2) cr_expect(strstr(err.msg, sub2), "%s: '%s' not in: %s", what, sub2, err.msg);
    cr_expect_null(strchr(err.msg, '\n'), "one line");
}

static void put32(uint8_t *b, size_t off, uint32_t v) { memcpy(b + off, &v, 4); }
static void put64(uint8_t *b, size_t off, uint64_t v) { memcpy(b + off, &v, 8); }

static json_t *kv_entry(bad_ctx *c, const char *key) {
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(c->j, "kv"), i,
                       e) if (!strcmp(json_string_value(json_object_get(e, "key")), key)) return e;
    cr_assert_fail("key %s not in tiny.json", key);
    return NULL;
}

static json_t *tensor_entry(bad_ctx *c, size_t i) { return json_array_get(json_object_get(c->j, "tensors"), i); }

/* Patch one copy of tiny.gguf: a u32 or u64 at off. */
static void bad_u32(bad_ctx *c, size_t off, uint32_t v, const char *what, const char *s1, const char *s2) {
    uint8_t *b = malloc(c->n);
    memcpy(b, c->orig, c->n);
    put32(b, off, v);
    expect_bad(c, b, c->n, what, s1, s2);
    free(b);
}

static void bad_u64(bad_ctx *c, size_t off, uint64_t v, const char *what, const char *s1, const char *s2) {
    uint8_t *b = malloc(c->n);
    memcpy(b, c->orig, c->n);
    put64(b, off, v);
    expect_bad(c, b, c->n, what, s1, s2);
    free(b);
}

Test(gguf_bad, truncated, .timeout = 120) {
    bad_ctx c;
    bad_init(&c);
    size_t min_valid = (size_t)jint(c.j, "min_valid_size"), data_off = (size_t)jint(c.j, "data_offset");
    int n_checked = 0;
    for (size_t cut = 0; cut < c.n; cut += cut < data_off + 64 ? 1 : 7) {
        spit(c.path, c.orig, cut);
        mf_err err = {{0}};
        mf_gguf *g = mf_gguf_open(c.path, &err);
        if (cut >= min_valid) { /* only trailing padding is missing: still valid */
            cr_expect_not_null(g, "cut %zu: %s", cut, err.msg);
            mf_gguf_close(g);
            continue;
        }
        if (g) mf_gguf_close(g);
        cr_assert_null(g, "file cut at %zu of %zu bytes opened", cut, c.n);
        cr_expect_eq(strncmp(err.msg, c.path, strlen(c.path)), 0, "cut %zu: %s", cut, err.msg);
        cr_expect(strstr(err.msg, "truncated") || strstr(err.msg, "past end of file") || strstr(err.msg, "too small") ||
                      strstr(err.msg, "truncated or corrupt"),
                  "cut %zu: %s", cut, err.msg);
        n_checked++;
    }
    cr_expect_gt(n_checked, 1500);
    bad_fini(&c);
}

Test(gguf_bad, header) {
    bad_ctx c;
    bad_init(&c);
    uint8_t *b = malloc(c.n);
    memcpy(b, c.orig, c.n);
    memcpy(b, "GGUG", 4);
    expect_bad(&c, b, c.n, "magic", "bad magic", "not a GGUF file");
    free(b);
    bad_u32(&c, 4, 99, "version 99", "unsupported GGUF version 99", NULL);
    bad_u32(&c, 4, 1, "version 1", "version 1 is not supported", NULL);
    bad_u32(&c, 4, 0x03000000u, "big-endian", "big-endian", NULL);
    bad_u64(&c, 8, 1ull << 40, "tensor count 2^40", "tensor count 1099511627776 is impossible", NULL);
    bad_u64(&c, 16, 1ull << 40, "kv count 2^40", "metadata count 1099511627776 is impossible", NULL);
    expect_bad(&c, c.orig, 0, "empty", "too small", NULL);
    expect_bad(&c, c.orig, 23, "23 bytes", "too small", NULL);
    bad_fini(&c);
}

Test(gguf_bad, metadata) {
    bad_ctx c;
    bad_init(&c);
    size_t first_key = (size_t)jint(kv_entry(&c, "general.architecture"), "key_len_off");
    bad_u64(&c, first_key, c.n, "key length = file size", "metadata entry 0", "past end of file");
    bad_u64(&c, first_key, UINT64_MAX, "key length 2^64-1", "past end of file", NULL);
    json_t *s = kv_entry(&c, "test.str");
    bad_u64(&c, (size_t)jint(s, "value_off"), 1ull << 62, "string value length", "key 'test.str'", "past end of file");
    json_t *as = kv_entry(&c, "test.arr_str");
    size_t as_len = (size_t)jint(as, "value_off") + 4;
    bad_u64(&c, as_len, 1ull << 60, "string array length", "key 'test.arr_str'", "array length 1152921504606846976");
    bad_u64(&c, as_len, 1000, "string array length 1000", "key 'test.arr_str'", "exceeds the");
    bad_u64(&c, as_len + 8, 1ull << 40, "string element length", "key 'test.arr_str': element 0: string length",
            "past end of file");
    json_t *af = kv_entry(&c, "test.arr_f32");
    bad_u64(&c, (size_t)jint(af, "value_off") + 4, UINT64_MAX / 2, "f32 array length", "key 'test.arr_f32'", "exceeds");
    json_t *nest = kv_entry(&c, "test.nested");
    size_t inner = (size_t)jint(nest, "value_off") + 12; /* first inner array: u32 type, u64 n */
    bad_u64(&c, inner + 4, 1ull << 50, "nested array length", "key 'test.nested'", "element 0");
    bad_u32(&c, inner, 77, "nested elem type", "key 'test.nested'", "unknown value type 77");
    bad_u32(&c, (size_t)jint(kv_entry(&c, "test.u32"), "type_off"), 13, "value type 13", "key 'test.u32'",
            "unknown value type 13");
    bad_u32(&c, (size_t)jint(af, "value_off"), 0xffffffffu, "array elem type", "key 'test.arr_f32'",
            "unknown value type 4294967295");
    json_t *bt = kv_entry(&c, "test.bool_t");
    uint8_t *b = malloc(c.n);
    memcpy(b, c.orig, c.n);
    b[jint(bt, "value_off")] = 2;
    expect_bad(&c, b, c.n, "bool 2", "key 'test.bool_t'", "invalid BOOL value 2");
    /* duplicate key: rename test.i8 to test.u8 (same length) */
    memcpy(b, c.orig, c.n);
    memcpy(b + jint(kv_entry(&c, "test.i8"), "key_len_off") + 8, "test.u8", 7);
    expect_bad(&c, b, c.n, "duplicate key", "duplicate metadata key 'test.u8'", NULL);
    /* NUL inside a key */
    memcpy(b, c.orig, c.n);
    b[jint(kv_entry(&c, "test.i8"), "key_len_off") + 10] = 0;
    expect_bad(&c, b, c.n, "NUL in key", "key", "NUL byte");
    free(b);
    /* general.alignment: not a power of two, zero, wrong type */
    json_t *al = kv_entry(&c, "general.alignment");
    bad_u32(&c, (size_t)jint(al, "value_off"), 48, "alignment 48", "'general.alignment' = 48 is not a power of two",
            NULL);
    bad_u32(&c, (size_t)jint(al, "value_off"), 0, "alignment 0", "not a power of two", NULL);
    bad_u32(&c, (size_t)jint(al, "type_off"), MF_GGUF_INT32, "alignment INT32", "'general.alignment' has type INT32",
            "expected UINT32");
    bad_fini(&c);
}

Test(gguf_bad, tensor_infos) {
    bad_ctx c;
    bad_init(&c);
    json_t *t0 = tensor_entry(&c, 0), *t1 = tensor_entry(&c, 1);
    size_t nt = json_array_size(json_object_get(c.j, "tensors"));
    json_t *tl = tensor_entry(&c, nt - 1);
    json_t *q80 = NULL;
    for (size_t i = 0; i < nt; i++)
        if (!strcmp(json_string_value(json_object_get(tensor_entry(&c, i), "name")), "blk.0.q80"))
            q80 = tensor_entry(&c, i);
    cr_assert_not_null(q80);
    bad_u32(&c, (size_t)jint(t0, "n_dims_off"), 5, "n_dims 5", "tensor 'blk.0.f32'",
            "n_dims 5 exceeds the maximum of 4");
    bad_u32(&c, (size_t)jint(t0, "type_off"), 99, "type 99", "tensor 'blk.0.f32'",
            "unknown or unsupported ggml type 99");
    bad_u32(&c, (size_t)jint(t0, "type_off"), 16, "type IQ2_XXS", "unsupported ggml type 16", NULL);
    size_t t1_off = (size_t)jint(t1, "offset_off");
    uint64_t t1_val;
    memcpy(&t1_val, c.orig + t1_off, 8);
    bad_u64(&c, t1_off, t1_val + 32, "misaligned", "tensor 'blk.0.vec' data offset",
            "not a multiple of the alignment 64");
    bad_u64(&c, t1_off, t1_val + 1, "misaligned by 1", "not a multiple of the alignment", NULL);
    size_t tl_off = (size_t)jint(tl, "offset_off");
    char want[128];
    snprintf(want, sizeof want, "tensor '%s' data", json_string_value(json_object_get(tl, "name")));
    bad_u64(&c, tl_off, (uint64_t)c.n / 64 * 64, "data past EOF", want, "runs past end of file");
    bad_u64(&c, tl_off, UINT64_MAX - 63, "offset near 2^64", "runs past end of file", NULL);
    bad_u64(&c, (size_t)jint(q80, "ne_off"), 33, "ne[0] 33", "tensor 'blk.0.q80'",
            "ne[0] = 33 is not a multiple of the Q8_0 block size 32");
    bad_u64(&c, (size_t)jint(t0, "ne_off"), 1ull << 63, "ne > INT64_MAX", "tensor 'blk.0.f32'", "too large");
    uint8_t *b = malloc(c.n);
    memcpy(b, c.orig, c.n);
    put64(b, (size_t)jint(t0, "ne_off"), 1ull << 40);
    put64(b, (size_t)jint(t0, "ne_off") + 8, 1ull << 40);
    expect_bad(&c, b, c.n, "ne overflow", "tensor 'blk.0.f32'", "overflows");
    /* huge but non-overflowing shape: nbytes past the file */
    memcpy(b, c.orig, c.n);
    put64(b, (size_t)jint(t0, "ne_off"), 1ull << 20);
    put64(b, (size_t)jint(t0, "ne_off") + 8, 1ull << 20);
    expect_bad(&c, b, c.n, "huge tensor", "tensor 'blk.0.f32' data", "runs past end of file");
    /* duplicate names: tensor 1 renamed to tensor 0's name (same length) */
    memcpy(b, c.orig, c.n);
    const char *n0 = json_string_value(json_object_get(t0, "name"));
    cr_assert_eq(strlen(n0), strlen(json_string_value(json_object_get(t1, "name"))));
    memcpy(b + jint(t1, "name_off"), n0, strlen(n0));
    expect_bad(&c, b, c.n, "duplicate tensor", "duplicate tensor name 'blk.0.f32'", "tensors 0 and 1");
    memcpy(b, c.orig, c.n);
    put64(b, (size_t)jint(t1, "name_len_off"), 1ull << 40);
    expect_bad(&c, b, c.n, "tensor name length", "tensor 1", "past end of file");
    free(b);
    bad_fini(&c);
}

/* Hand-built files: header only (valid), nested arrays too deep, not a file. */
Test(gguf_bad, synthetic) {
    bad_ctx c;
    bad_init(&c);
    uint8_t b[512] = {0};
    memcpy(b, "GGUF", 4);
    put32(b, 4, 3);
    spit(c.path, b, 24);
    mf_err err = {{0}};
    mf_gguf *g = mf_gguf_open(c.path, &err);
    cr_assert_not_null(g, "header-only file: %s", err.msg);
    cr_expect(mf_gguf_n_tensors(g) == 0 && mf_gguf_n_kv(g) == 0);
    cr_expect_eq(mf_gguf_alignment(g), 32);
    mf_gguf_close(g);
    put32(b, 4, 2); /* v2 is the same layout */
    spit(c.path, b, 24);
    g = mf_gguf_open(c.path, &err);
    cr_assert_not_null(g, "v2: %s", err.msg);
    mf_gguf_close(g);
    /* one key "k" holding 20 nested arrays of length 1 */
    put32(b, 4, 3);
    put64(b, 16, 1);
    size_t p = 24;
    put64(b, p, 1);
    b[p + 8] = 'k';
    p += 9;
    put32(b, p, MF_GGUF_ARRAY);
    p += 4;
    for (int d = 0; d < 20; d++, p += 12) {
        put32(b, p, MF_GGUF_ARRAY);
        put64(b, p + 4, 1);
    }
    expect_bad(&c, b, p, "deep nesting", "key 'k'", "nested deeper than");
    /* empty arrays are fine */
    put32(b, 37, MF_GGUF_FLOAT32);
    put64(b, 41, 0);
    spit(c.path, b, 49);
    g = mf_gguf_open(c.path, &err);
    cr_assert_not_null(g, "empty array: %s", err.msg);
    const float *f;
    size_t n = 99;
    cr_expect_eq(mf_gguf_get_f32_array(g, "k", &f, &n, &err), 0);
    cr_expect_eq(n, 0);
    mf_gguf_close(g);
    bad_fini(&c);

    g = mf_gguf_open("/nonexistent/dir/x.gguf", &err);
    cr_expect_null(g);
    cr_expect(strstr(err.msg, "/nonexistent/dir/x.gguf: cannot open"), "%s", err.msg);
    g = mf_gguf_open("tests", &err);
    cr_expect_null(g);
    cr_expect(strstr(err.msg, "tests: not a regular file"), "%s", err.msg);
}
