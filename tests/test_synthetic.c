/* test_synthetic.c - every architecture feature the loader claims, on tiny
 * random models, against transformers' logits (tests/gen_synthetic_goldens.py).
 *
 * Each case directory tests/golden/synthetic/<case>/ holds the model (HF
 * directory or model.gguf), ids.json, logits.f32 [n][V] and case.json (the
 * oracle's view of the config, its RoPE inv_freq and the tolerance). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/source.h"
#include "model/model.h"
#include "testutil.h"

#define SYN_DIR "tests/golden/synthetic"

typedef struct syn_case {
    json_t *meta;   /* case.json */
    json_t *expect; /* meta["expect"] */
    char model[512];
    int32_t *ids;
    int n;
    float *want;    /* [n][V] */
    size_t want_len;
} syn_case;

static void syn_load(syn_case *c, const char *name) {
    char p[512];
    json_error_t je;
    snprintf(p, sizeof p, SYN_DIR "/%s/case.json", name);
    c->meta = json_load_file(p, 0, &je);
    cr_assert(c->meta, "%s: %s (run tests/gen_synthetic_goldens.py)", p, je.text);
    c->expect = json_object_get(c->meta, "expect");
    cr_assert(json_is_object(c->expect), "%s: no \"expect\"", p);
    snprintf(c->model, sizeof c->model, SYN_DIR "/%s/%s", name, json_string_value(json_object_get(c->meta, "model")));
    snprintf(p, sizeof p, SYN_DIR "/%s/ids.json", name);
    json_t *ids = json_load_file(p, 0, &je);
    cr_assert(ids, "%s: %s", p, je.text);
    json_t *arr = json_object_get(ids, "ids");
    c->n = (int)json_array_size(arr);
    c->ids = malloc((size_t)c->n * sizeof *c->ids);
    for (int i = 0; i < c->n; i++) c->ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    json_decref(ids);
    snprintf(p, sizeof p, SYN_DIR "/%s/logits.f32", name);
    c->want = tu_read(p, &c->want_len);
    cr_assert(c->want, "%s is missing", p);
}

static void syn_free(syn_case *c) {
    json_decref(c->meta);
    free(c->ids);
    free(c->want);
}

static int ex_int(const syn_case *c, const char *key) {
    json_t *v = json_object_get(c->expect, key);
    cr_assert(json_is_integer(v), "case.json: expect.%s missing", key);
    return (int)json_integer_value(v);
}

static double ex_num(const syn_case *c, const char *key) {
    json_t *v = json_object_get(c->expect, key);
    cr_assert(json_is_number(v), "case.json: expect.%s missing", key);
    return json_number_value(v);
}

static void expect_close(double got, double want, const char *what, const char *model) {
    cr_expect(fabs(got - want) <= 1e-6 * fabs(want), "%s: %s = %.9g, transformers has %.9g", model, what, got, want);
}

/* The parsed mf_config against transformers' view of the same model. */
static void check_config(const syn_case *c, const mf_config *cfg) {
    const char *m = c->model;
    const char *arch = json_string_value(json_object_get(c->expect, "arch"));
    cr_expect_str_eq(mf_arch_name(cfg->arch), arch, "%s: arch", m);
    const struct { const char *key; int got; } ints[] = {
        {"dim", cfg->dim},           {"ffn_dim", cfg->ffn_dim},       {"n_layers", cfg->n_layers},
        {"n_heads", cfg->n_heads},   {"n_kv_heads", cfg->n_kv_heads}, {"head_dim", cfg->head_dim},
        {"vocab_size", cfg->vocab_size}, {"tied", cfg->tied_embeddings}, {"qkv_bias", cfg->qkv_bias},
        {"rope_llama3", cfg->rope_llama3},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        cr_expect_eq(ints[i].got, ex_int(c, ints[i].key), "%s: %s = %d, transformers has %d", m, ints[i].key,
                     ints[i].got, ex_int(c, ints[i].key));
    expect_close(cfg->norm_eps, ex_num(c, "norm_eps"), "rms_norm_eps", m);
    expect_close(cfg->rope_theta, ex_num(c, "rope_theta"), "rope_theta", m);
    if (cfg->rope_llama3 && ex_int(c, "rope_llama3")) {
        expect_close(cfg->rope_factor, ex_num(c, "rope_factor"), "rope factor", m);
        expect_close(cfg->rope_low_freq_factor, ex_num(c, "rope_low_freq_factor"), "low_freq_factor", m);
        expect_close(cfg->rope_high_freq_factor, ex_num(c, "rope_high_freq_factor"), "high_freq_factor", m);
        cr_expect_eq(cfg->rope_orig_ctx, ex_int(c, "rope_orig_ctx"), "%s: original_max_position_embeddings", m);
    }
    /* RoPE frequencies (llama3 scaling included) against transformers' rotary_emb.inv_freq */
    json_t *f = json_object_get(c->expect, "inv_freq");
    cr_assert_eq((int)json_array_size(f), cfg->head_dim / 2, "%s: inv_freq length", m);
    float *inv = malloc((size_t)(cfg->head_dim / 2) * sizeof *inv);
    mf_config_rope_inv_freq(cfg, inv);
    for (int i = 0; i < cfg->head_dim / 2; i++) {
        double w = json_number_value(json_array_get(f, (size_t)i));
        cr_expect(fabs(inv[i] - w) <= 2e-6 * w, "%s: inv_freq[%d] = %.9g, transformers has %.9g", m, i, inv[i], w);
    }
    free(inv);
}

static double max_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* Logits [n][V] with layers split into stages [0, split) and [split, L) in one
 * process (split = L: one stage), the residual handed over as between ranks. */
static float *forward_split(const mf_source *src, const int32_t *ids, int n, int split) {
    mf_err err;
    int L = src->cfg.n_layers, V = src->cfg.vocab_size, D = src->cfg.dim;
    int two = split < L;
    mf_model *a = mf_model_load(src, mf_backend_cpu(), 0, split, 1, !two, &err);
    cr_assert(a, "%s", err.msg);
    mf_state *sa = mf_state_new(a, n, n);
    mf_forward_embed(a, sa, ids, n);
    mf_forward_layers(a, sa, n, 0);
    mf_model *last = a;
    mf_state *sl = sa;
    if (two) {
        last = mf_model_load(src, mf_backend_cpu(), split, L, 0, 1, &err);
        cr_assert(last, "%s", err.msg);
        sl = mf_state_new(last, n, n);
        memcpy(sl->x, sa->x, (size_t)n * D * sizeof(float));
        mf_forward_layers(last, sl, n, 0);
    }
    mf_forward_head(last, sl, n);
    float *out = malloc((size_t)n * V * sizeof *out);
    memcpy(out, sl->logits, (size_t)n * V * sizeof *out);
    if (two) { mf_state_free(last, sl); mf_model_free(last); }
    mf_state_free(a, sa);
    mf_model_free(a);
    return out;
}

static void check_case(const char *name, mf_format fmt) {
    syn_case c;
    syn_load(&c, name);
    mf_err err;
    mf_source *src = mf_source_open(c.model, &err);
    cr_assert(src, "%s", err.msg);
    cr_expect_eq(src->format, fmt, "%s opened as %s", c.model, mf_format_name(src->format));
    check_config(&c, &src->cfg);
    int V = src->cfg.vocab_size;
    size_t numel = (size_t)c.n * V;
    cr_assert_eq(c.want_len, numel * sizeof(float), "%s: logits.f32 has %zu bytes, want %d x %d floats", name, c.want_len, c.n, V);
    double tol = json_number_value(json_object_get(c.meta, "tolerance"));
    float *got = forward_split(src, c.ids, c.n, src->cfg.n_layers);
    double d = max_diff(got, c.want, numel);
    cr_log_info("synthetic/%s: max |logit - transformers| = %.3g", name, d);
    cr_expect(d < tol, "%s: max |logit - transformers| = %g (want < %g)", c.model, d, tol);
    /* two pipeline stages in one process: the last stage alone loads the
     * (possibly tied) head; logits must be bit-identical to one stage */
    float *got2 = forward_split(src, c.ids, c.n, 1);
    cr_expect(memcmp(got, got2, numel * sizeof(float)) == 0, "%s: two-stage logits differ from one stage by %g", c.model,
              max_diff(got, got2, numel));
    free(got);
    free(got2);
    mf_source_close(src);
    syn_free(&c);
}

/* LlamaForCausalLM F32, untied, GQA 4/2, head_dim 16 != 48/4, llama3 rope_scaling, hub-style config.json. */
Test(synthetic, llama_untied_llama3rope) { check_case("llama_untied_llama3rope", MF_FMT_HF); }
/* Qwen2ForCausalLM F32: q/k/v biases, tied embeddings, rope_theta 1e6 in transformers 5 rope_parameters. */
Test(synthetic, qwen2_bias) { check_case("qwen2_bias", MF_FMT_HF); }
/* MistralForCausalLM stored in bfloat16 (golden from the same bf16 weights upcast). */
Test(synthetic, mistral_bf16) { check_case("mistral_bf16", MF_FMT_HF); }
/* Llama float16, tied, two safetensors shards + model.safetensors.index.json. */
Test(synthetic, llama_f16_sharded) { check_case("llama_f16_sharded", MF_FMT_HF); }
/* GGUF llama F32: q/k rows permuted as convert_hf_to_gguf.py, untied, head_dim 8 via attention.key_length. */
Test(synthetic, llama_gguf) { check_case("llama_gguf", MF_FMT_GGUF); }
/* The same model with Q8_0 2-D weights (golden from gguf-py's dequantization). */
Test(synthetic, llama_gguf_q8_0) { check_case("llama_gguf_q8_0", MF_FMT_GGUF); }
/* GGUF qwen2 F32: not permuted, q/k/v biases, tied. */
Test(synthetic, qwen2_gguf) { check_case("qwen2_gguf", MF_FMT_GGUF); }

/* The sharded case really is sharded: the index names two files. */
Test(synthetic, sharded_index_names_two_files) {
    json_error_t je;
    json_t *idx = json_load_file(SYN_DIR "/llama_f16_sharded/model.safetensors.index.json", 0, &je);
    cr_assert(idx, "%s", je.text);
    json_t *wm = json_object_get(idx, "weight_map");
    const char *k, *first = NULL;
    json_t *v;
    int other = 0;
    json_object_foreach(wm, k, v) {
        if (!first) first = json_string_value(v);
        else if (strcmp(first, json_string_value(v)) != 0) other = 1;
    }
    cr_expect(first && other, "index.json maps every tensor to one file");
    json_decref(idx);
}

/* A copy of a synthetic case directory with config.json keys replaced (JSON values). */
static const char *copy_with(const char *name, const char *key1, const char *val1, const char *key2, const char *val2) {
    const char *dir = tu_tmpdir();
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp " SYN_DIR "/%s/config.json " SYN_DIR "/%s/model.safetensors %s/", name, name, dir);
    cr_assert_eq(tu_run(cmd, NULL, NULL), 0, "%s", cmd);
    char p[4300];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_t *cfg = json_load_file(p, 0, NULL);
    cr_assert(cfg);
    json_object_set_new(cfg, key1, json_loads(val1, JSON_DECODE_ANY, NULL));
    if (key2) json_object_set_new(cfg, key2, json_loads(val2, JSON_DECODE_ANY, NULL));
    cr_assert_eq(json_dump_file(cfg, p, JSON_INDENT(2)), 0);
    json_decref(cfg);
    return dir;
}

/* minifuse has no sliding-window attention: a context longer than a Mistral model's
 * sliding_window is refused (and a Qwen2 one only with use_sliding_window true); within the
 * window full causal attention is exact, so the logits equal the unwindowed model's; the window
 * survives a rewrite (prune). */
Test(synthetic, sliding_window_refused_beyond_window, .timeout = 120) {
    const char *win = copy_with("mistral_bf16", "sliding_window", "8", NULL, NULL);
    char cmd[16384], *err, out[4300];
    const char *ids9 = "1,5,9,13,17,21,25,29,33", *ids8 = "1,5,9,13,17,21,25,29";
    snprintf(out, sizeof out, "%s/l.f32", win);
    snprintf(cmd, sizeof cmd, "%s logits --model %s --ids %s --out %s", tu_mpirun(2), win, ids9, out);
    cr_expect_neq(tu_run(cmd, NULL, &err), 0, "9 tokens through a model with sliding_window 8 must be refused");
    cr_expect(strstr(err, "sliding_window 8 is smaller than the context of 9 tokens"), "%s", err);
    cr_expect(access(out, F_OK) != 0, "a refused run must not write %s", out);
    free(err);
    /* 8 tokens: allowed, and the same logits as without a window */
    snprintf(cmd, sizeof cmd, "%s logits --model %s --ids %s --out %s && %s logits --model " SYN_DIR "/mistral_bf16 --ids %s --out %s.ref",
             tu_mpirun(2), win, ids8, out, tu_mpirun(1), ids8, out);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "%s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "cmp %s %s.ref", out, out);
    cr_expect_eq(tu_run(cmd, NULL, NULL), 0, "within the window the logits must equal the unwindowed model's");
    /* the window is kept when minifuse writes the model again */
    snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s/pruned --drop-list 0", tu_mpirun(1), win, win);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "%s", err);
    free(err);
    snprintf(out, sizeof out, "%s/pruned/config.json", win);
    json_t *cfg = json_load_file(out, 0, NULL);
    cr_assert(cfg);
    cr_expect_eq(json_integer_value(json_object_get(cfg, "sliding_window")), 8, "the pruned config lost sliding_window");
    json_decref(cfg);
    /* Qwen2: sliding_window counts only with use_sliding_window */
    const char *q_off = copy_with("qwen2_bias", "sliding_window", "4", "use_sliding_window", "false");
    const char *q_on = copy_with("qwen2_bias", "sliding_window", "4", "use_sliding_window", "true");
    snprintf(cmd, sizeof cmd, "%s logits --model %s --ids %s --out %s/l.f32", tu_mpirun(1), q_off, ids8, q_off);
    cr_expect_eq(tu_run(cmd, NULL, &err), 0, "use_sliding_window false: no window: %s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s logits --model %s --ids %s --out %s/l.f32", tu_mpirun(1), q_on, ids8, q_on);
    cr_expect_neq(tu_run(cmd, NULL, &err), 0, "use_sliding_window true, window 4, 8 tokens must be refused");
    cr_expect(strstr(err, "sliding_window 4 is smaller than the context of 8 tokens"), "%s", err);
    free(err);
    mf_config c = {0};
    mf_err e;
    c.sliding_window = 16;
    cr_expect_eq(mf_config_check_ctx(&c, 16, "m", &e), 0);
    cr_expect_neq(mf_config_check_ctx(&c, 17, "m", &e), 0);
    c.sliding_window = 0;
    cr_expect_eq(mf_config_check_ctx(&c, 1 << 20, "m", &e), 0);
}
