/* test_weights.c - frozen models holding their matrices in 16 bits (--weights).
 *
 *   * eval with --weights bf16 against f32: stories260K (llama2.c, F32) and
 *     SmolLM2-135M (GGUF Q4_1), perplexity change measured and bounded;
 *   * a BF16 safetensors model (written here from the F32 stories260K_hf) is
 *     used in place from the memory map (auto), and gives exactly what the F32
 *     file gives with --weights bf16 (the same round-to-nearest-even values);
 *   * mf_model_weight_bytes counts 2 bytes per matrix element, 4 per norm;
 *   * bad --weights values and the commands that refuse 16-bit weights. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/hf_write.h"
#include "io/source.h"
#include "model/model.h"
#include "testutil.h"
#include "util/half.h"

#define STORIES_BIN "llm_assets/models/stories260K/stories260K.bin"
#define STORIES_HF "llm_assets/models/stories260K_hf"
#define TOK512 "llm_assets/models/stories260K/tok512.bin"
#define TINY "llm_assets/text/tinystories_train_first2MiB.txt"
#define WIKI "llm_assets/text/wikitext2_raw_test.txt"

TestSuite(weights, .timeout = 600);

typedef struct {
    double ppl;
    char wdt[8];
    long long weight_bytes; /* summed over ranks */
} eval_out;

/* eval --json of model on text with the given --weights over P ranks */
static eval_out eval_w(const char *model, const char *tok, const char *text, int ctx, int windows, const char *w, int P) {
    char cmd[8192], *out, *err;
    snprintf(cmd, sizeof cmd, "%s eval --model %s %s%s --text %s --ctx %d --max-windows %d --weights %s --json",
             tu_mpirun(P), model, tok ? "--tokenizer " : "", tok ? tok : "", text, ctx, windows, w);
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "eval --weights %s: %s", w, err);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert(j, "eval --json: %s", out);
    eval_out r = {.ppl = json_real_value(json_object_get(j, "ppl"))};
    const char *s = json_string_value(json_object_get(j, "weights"));
    cr_assert(s, "eval --json has no \"weights\": %s", out);
    snprintf(r.wdt, sizeof r.wdt, "%s", s);
    json_t *wb = json_object_get(j, "weight_bytes"), *v;
    size_t i;
    cr_assert(json_is_array(wb) && json_array_size(wb) == (size_t)P, "weight_bytes per rank: %s", out);
    cr_assert(json_is_array(json_object_get(j, "peak_rss_bytes")), "peak_rss_bytes: %s", out);
    json_array_foreach(wb, i, v) r.weight_bytes += json_integer_value(v);
    json_decref(j);
    free(out);
    free(err);
    return r;
}

Test(weights, stories260k_bf16_vs_f32) {
    const char *m = tu_shared(STORIES_BIN);
    char mcopy[4096];
    snprintf(mcopy, sizeof mcopy, "%s", m);
    eval_out f = eval_w(mcopy, NULL, tu_shared(TINY), 256, 16, "f32", 2);
    eval_out b = eval_w(mcopy, NULL, tu_shared(TINY), 256, 16, "bf16", 2);
    eval_out a = eval_w(mcopy, NULL, tu_shared(TINY), 256, 16, "auto", 2);
    double rel = fabs(b.ppl - f.ppl) / f.ppl;
    cr_log_info("stories260K ppl f32 %.6f bf16 %.6f (rel %.2e); weight bytes %lld vs %lld", f.ppl, b.ppl, rel,
                f.weight_bytes, b.weight_bytes);
    cr_expect_str_eq(f.wdt, "f32");
    cr_expect_str_eq(b.wdt, "bf16");
    cr_expect_str_eq(a.wdt, "f32", "auto on an F32 file holds f32, got %s", a.wdt);
    cr_expect_eq(a.ppl, f.ppl, "auto on an F32 file: ppl %.9g, f32 gives %.9g", a.ppl, f.ppl);
    cr_expect(b.ppl != f.ppl, "bf16 gave the f32 perplexity bit for bit: the 16-bit path did not run");
    /* measured 7.0e-4 on these 16 windows: a tiny model (dim 64) with bf16's 8-bit mantissa */
    cr_expect(rel < 2e-3, "stories260K perplexity changed by %.3e with bf16 weights (bound 2e-3)", rel);
    cr_expect(b.weight_bytes < f.weight_bytes * 0.55, "bf16 holds %lld bytes, f32 %lld", b.weight_bytes, f.weight_bytes);
}

Test(weights, smollm2_bf16_within_0_1_percent, .timeout = 1200) {
    char m[4096];
    snprintf(m, sizeof m, "%s", tu_smollm2());
    /* the 16 windows of docs/performance.md (+0.015 %); fewer are noisier: 6 gave 0.062 %, 4 gave 0.097 % */
    eval_out f = eval_w(m, NULL, tu_shared(WIKI), 256, 16, "f32", 2);
    eval_out b = eval_w(m, NULL, tu_shared(WIKI), 256, 16, "bf16", 2);
    double rel = fabs(b.ppl - f.ppl) / f.ppl;
    cr_log_info("SmolLM2 Q4_1 WikiText-2 ppl f32 %.6f bf16 %.6f (rel %.2e)", f.ppl, b.ppl, rel);
    cr_expect_str_eq(b.wdt, "bf16");
    cr_expect(b.ppl != f.ppl, "bf16 gave the f32 perplexity bit for bit: the 16-bit path did not run");
    cr_expect(rel < 1e-3, "SmolLM2 perplexity changed by %.3e with bf16 weights (issue: within 0.1 %%)", rel);
}

/* dir/config.json + model.safetensors: the F32 stories260K_hf in BF16; and in
 * dir_f32 the same bf16 values widened back, stored as F32 (norms included) */
static void write_bf16_copy(const char *dir, const char *dir_f32) {
    mf_err err;
    mf_source *src = mf_source_open(tu_shared(STORIES_HF), &err);
    cr_assert(src, "%s", err.msg);
    const mf_config *c = &src->cfg;
    mf_tensor_ref t[128];
    float *owned[128];
    int n = 0;
    char names[128][160];
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(c, lt);
    snprintf(names[n], 160, "model.embed_tokens.weight");
    t[n] = (mf_tensor_ref){names[n], 2, {c->vocab_size, c->dim}, NULL};
    n++;
    snprintf(names[n], 160, "model.norm.weight");
    t[n] = (mf_tensor_ref){names[n], 1, {c->dim}, NULL};
    n++;
    for (int l = 0; l < c->n_layers; l++)
        for (int i = 0; i < MF_LAYER_TENSORS; i++) {
            if (lt[i].is_bias) continue;
            snprintf(names[n], 160, "model.layers.%d.%s", l, lt[i].suffix);
            t[n] = (mf_tensor_ref){names[n], lt[i].d1 ? 2 : 1, {lt[i].d0, lt[i].d1}, NULL};
            n++;
        }
    for (int i = 0; i < n; i++) {
        int own;
        t[i].data = owned[i] = mf_source_get(src, t[i].name, t[i].ndim, t[i].shape, &own, &err);
        cr_assert(t[i].data, "%s", err.msg);
        if (!own) owned[i] = NULL;
    }
    cr_assert_eq(mf_hf_write_dir(dir, c, t, n, "BF16", 0, NULL, &err), 0, "%s", err.msg);
    for (int i = 0; i < n; i++) {
        size_t k = (size_t)t[i].shape[0] * (size_t)(t[i].ndim > 1 ? t[i].shape[1] : 1);
        float *r = malloc(k * sizeof *r);
        for (size_t e = 0; e < k; e++) r[e] = mf_bf16_to_f32(mf_f32_to_bf16(t[i].data[e]));
        free(owned[i]);
        t[i].data = owned[i] = r;
    }
    cr_assert_eq(mf_hf_write_dir(dir_f32, c, t, n, "F32", 0, NULL, &err), 0, "%s", err.msg);
    for (int i = 0; i < n; i++) free(owned[i]);
    mf_source_close(src);
}

/* Whether p lies inside the safetensors data of tensor `name` as the source maps it. */
static int in_map(const mf_source *src, const char *name, const void *p) {
    mf_raw_tensor raw;
    if (src->lookup(src, name, &raw) != 0) return 0;
    return p == raw.data;
}

Test(weights, bf16_safetensors_used_in_place) {
    const char *dir = tu_path_in(tu_tmpdir(), "stories260K_bf16"), *dir32 = tu_path_in(tu_tmpdir(), "stories260K_r32");
    write_bf16_copy(dir, dir32);
    mf_err err;
    mf_source *src = mf_source_open(dir, &err);
    cr_assert(src, "%s", err.msg);
    cr_assert_eq(mf_source_dtype(src, "model.layers.0.mlp.up_proj.weight"), MF_DT_BF16);
    mf_model *m = mf_model_load_w(src, mf_backend_cpu(), 0, src->cfg.n_layers, 1, 1, MF_WEIGHTS_AUTO, &err);
    cr_assert(m, "%s", err.msg);
    cr_expect_eq(m->wdt, MF_DT_BF16, "auto on a BF16 file holds %s", mf_dtype_short(m->wdt));
    cr_expect(in_map(src, "model.layers.0.self_attn.q_proj.weight", m->layers[0].wq), "q_proj is a copy, not the map");
    cr_expect(in_map(src, "model.layers.4.mlp.down_proj.weight", m->layers[4].w_down), "down_proj is a copy");
    cr_expect(in_map(src, "model.embed_tokens.weight", m->tok_embd), "the embedding is a copy");
    cr_expect_eq(m->n_owned, 2 * m->cfg.n_layers + 1, "%d tensors copied: only the norms (float32) should be",
                 m->n_owned);
    /* bytes: 2 per matrix element, 4 per norm element */
    const mf_config *c = &m->cfg;
    size_t mat = 0, vec = (size_t)c->dim;
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(c, lt);
    for (int i = 0; i < MF_LAYER_TENSORS; i++)
        if (!lt[i].is_bias) {
            if (lt[i].d1) mat += (size_t)(lt[i].d0 * lt[i].d1) * c->n_layers;
            else vec += (size_t)lt[i].d0 * c->n_layers;
        }
    mat += (size_t)c->vocab_size * c->dim; /* tied: one table */
    cr_expect_eq(mf_model_weight_bytes(m), mat * 2 + vec * 4, "weight bytes %zu, expected %zu",
                 mf_model_weight_bytes(m), mat * 2 + vec * 4);
    mf_err e2;
    cr_expect_neq(mf_model_require_f32(m, "prune", &e2), 0, "a bf16 model passed as float32");
    cr_expect(strstr(e2.msg, "prune") && strstr(e2.msg, "bf16"), "message: %s", e2.msg);
    mf_model_free(m);
    /* --weights f32 of the BF16 file converts (owned float copies) */
    m = mf_model_load_w(src, mf_backend_cpu(), 0, src->cfg.n_layers, 1, 1, MF_WEIGHTS_F32, &err);
    cr_assert(m, "%s", err.msg);
    cr_expect_eq(m->wdt, MF_DT_F32);
    cr_expect_gt(m->n_owned, 0);
    mf_model_free(m);
    mf_source_close(src);

    /* the same values either way: BF16 file (auto, in place) == the F32 file of its values with --weights bf16
     * (f32 -> bf16 rounding of a bf16 value is exact; norms widened exactly in both) */
    char model[4096], f32model[4096], tok[4096], text[4096];
    snprintf(model, sizeof model, "%s", dir);
    snprintf(f32model, sizeof f32model, "%s", dir32);
    snprintf(tok, sizeof tok, "%s", tu_shared(TOK512));
    snprintf(text, sizeof text, "%s", tu_shared(TINY));
    eval_out a = eval_w(model, tok, text, 128, 8, "auto", 2);
    eval_out b = eval_w(f32model, tok, text, 128, 8, "bf16", 2);
    eval_out f = eval_w(f32model, tok, text, 128, 8, "f32", 1);
    cr_log_info("BF16 file auto %.9g, F32 file bf16 %.9g, f32 %.9g", a.ppl, b.ppl, f.ppl);
    cr_expect_str_eq(a.wdt, "bf16");
    cr_expect_eq(a.ppl, b.ppl, "BF16 file %.12g vs F32 file --weights bf16 %.12g", a.ppl, b.ppl);
    cr_expect_eq(a.weight_bytes, b.weight_bytes);
    cr_expect(fabs(a.ppl - f.ppl) / f.ppl < 2e-3, "bf16 %.9g vs f32 %.9g", a.ppl, f.ppl);
}

static void expect_refusal(const char *args, const char *want1, const char *want2) {
    char cmd[16384], *err;
    snprintf(cmd, sizeof cmd, "%s %s", tu_bin(), args);
    int rc = tu_run(cmd, NULL, &err);
    cr_expect_eq(rc, 1, "%s: exit %d, expected 1", args, rc);
    cr_expect(strstr(err, want1) && strstr(err, want2), "%s: message '%s' lacks '%s' / '%s'", args, err, want1, want2);
    free(err);
}

Test(weights, bad_values_and_refusals) {
    char a[16384], m[4096], t[4096];
    snprintf(m, sizeof m, "%s", tu_shared(STORIES_BIN));
    snprintf(t, sizeof t, "%s", tu_shared(TINY));
    snprintf(a, sizeof a, "eval --model %s --text %s --weights fp8", m, t);
    expect_refusal(a, "eval: --weights 'fp8'", "auto, bf16, f32");
    snprintf(a, sizeof a, "logits --model %s --ids 1,2 --out /dev/null --weights F32", m);
    expect_refusal(a, "logits: --weights 'F32'", "auto, bf16, f32");
    snprintf(a, sizeof a, "generate --model %s --steps 4 --weights half", m);
    expect_refusal(a, "generate: --weights 'half'", "auto, bf16, f32");
    snprintf(a, sizeof a, "score --model %s --text %s --out /tmp/x.h5 --weights 16", m, t);
    expect_refusal(a, "score: --weights '16'", "auto, bf16, f32");
    snprintf(a, sizeof a, "fuse --model %s --text %s --out %s/fz --drop-layers 1 --weights bf16", m, t, tu_tmpdir());
    expect_refusal(a, "fuse: --weights bf16 is not supported", "float32");
    snprintf(a, sizeof a, "distill --teacher %s --student %s --text %s --out %s/dz --teacher-weights int8", m, m, t,
             tu_tmpdir());
    expect_refusal(a, "distill: --teacher-weights 'int8'", "auto, bf16, f32");
}

Test(weights, generate_bf16_runs) {
    char cmd[8192], *out, *err;
    snprintf(cmd, sizeof cmd, "%s generate --model %s --steps 24 --temp 0 --weights bf16 --json", tu_mpirun(2),
             tu_shared(STORIES_BIN));
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "generate --weights bf16: %s", err);
    cr_expect(strstr(out, "Once upon a time"), "greedy bf16 generation: %s", out);
    free(out);
    free(err);
}

/* A fake source: one [rows][cols] tensor "q", stored as F32 or BF16, in interleaved RoPE order for `heads`. */
typedef struct {
    float f[8 * 6];
    uint16_t h[8 * 6];
    int bf16, heads;
} fake_src;

static int fake_lookup(const mf_source *s, const char *name, mf_raw_tensor *raw) {
    const fake_src *f = s->impl;
    if (strcmp(name, "q") != 0) return -1;
    memset(raw, 0, sizeof *raw);
    raw->kind = MF_RAW_ST;
    raw->ndim = 2;
    raw->shape[0] = 8;
    raw->shape[1] = 6;
    raw->dtype = f->bf16 ? MF_DT_BF16 : MF_DT_F32;
    raw->data = f->bf16 ? (const void *)f->h : (const void *)f->f;
    raw->nbytes = 48 * (f->bf16 ? 2 : 4);
    raw->rope_heads = f->heads;
    return 0;
}

/* GGUF q/k rows stored in 16 bits are reordered in 16 bits exactly as float rows are */
Test(weights, rope_rows_reordered_in_16_bits) {
    static fake_src fs;
    for (int i = 0; i < 48; i++) {
        fs.f[i] = (float)(i + 1) * 0.25f;
        fs.h[i] = mf_f32_to_bf16(fs.f[i]);
    }
    mf_source s = {.path = "fake", .impl = &fs, .lookup = fake_lookup};
    int64_t shape[2] = {8, 6};
    mf_err err;
    for (int heads = 0; heads <= 2; heads += 2) {
        fs.heads = heads;
        fs.bf16 = 0;
        int own_f, own_h;
        float *f = mf_source_get(&s, "q", 2, shape, &own_f, &err);
        cr_assert(f, "%s", err.msg);
        fs.bf16 = 1;
        uint16_t *h = mf_source_get_half(&s, "q", 2, shape, MF_DT_BF16, &own_h, &err);
        cr_assert(h, "%s", err.msg);
        cr_expect_eq(own_h, heads > 0, "heads %d: owned %d (in place only without reordering)", heads, own_h);
        for (int i = 0; i < 48; i++)
            cr_expect_eq(h[i], mf_f32_to_bf16(f[i]), "heads %d: element %d is %g, float path has %g", heads, i,
                         mf_bf16_to_f32(h[i]), f[i]);
        if (heads) cr_expect(f[6] != 7 * 0.25f, "the float path did not reorder rows");
        if (own_f) free(f);
        if (own_h) free(h);
    }
}

/* The synthetic BF16 and F16 (sharded) models of tests/golden/synthetic held in their own
 * type (auto, in place) against transformers' logits from the same values upcast to float32. */
static void synthetic_auto(const char *name, mf_dtype want) {
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "tests/golden/synthetic/%s", name);
    json_error_t je;
    snprintf(p, sizeof p, "%s/case.json", dir);
    json_t *meta = json_load_file(p, 0, &je);
    cr_assert(meta, "%s: %s", p, je.text);
    double tol = json_number_value(json_object_get(meta, "tolerance"));
    snprintf(p, sizeof p, "%s/ids.json", dir);
    json_t *idj = json_load_file(p, 0, &je);
    cr_assert(idj, "%s: %s", p, je.text);
    json_t *arr = json_object_get(idj, "ids");
    int n = (int)json_array_size(arr);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    size_t len;
    snprintf(p, sizeof p, "%s/logits.f32", dir);
    float *want_z = tu_read(p, &len);
    cr_assert(want_z, "%s missing", p);
    mf_err err;
    mf_source *src = mf_source_open(dir, &err);
    cr_assert(src, "%s", err.msg);
    mf_model *m = mf_model_load_w(src, mf_backend_cpu(), 0, src->cfg.n_layers, 1, 1, MF_WEIGHTS_AUTO, &err);
    cr_assert(m, "%s", err.msg);
    cr_expect_eq(m->wdt, want, "%s held as %s", name, mf_dtype_short(m->wdt));
    int V = m->cfg.vocab_size;
    cr_assert_eq(len, (size_t)n * V * sizeof(float));
    mf_state *s = mf_state_new(m, n, n);
    mf_forward_embed(m, s, ids, n);
    mf_forward_layers(m, s, n, 0);
    mf_forward_head(m, s, n);
    double d = 0;
    for (size_t i = 0; i < (size_t)n * V; i++) d = fmax(d, fabs((double)s->logits[i] - want_z[i]));
    cr_log_info("synthetic/%s held in %s: max |logit - transformers| = %.3g (tolerance %.3g)", name,
                mf_dtype_short(m->wdt), d, tol);
    cr_expect(d < tol, "%s: max |logit - transformers| = %g with %s weights (want < %g)", name, d,
              mf_dtype_short(m->wdt), tol);
    mf_state_free(m, s);
    mf_model_free(m);
    mf_source_close(src);
    free(ids);
    free(want_z);
    json_decref(idj);
    json_decref(meta);
}

Test(weights, synthetic_bf16_file_in_place) { synthetic_auto("mistral_bf16", MF_DT_BF16); }
Test(weights, synthetic_f16_sharded_in_place) { synthetic_auto("llama_f16_sharded", MF_DT_F16); }

/* first-step loss of distilling stories260K into itself: 0 with an f32 teacher, small but
 * not 0 with a bf16 one (the teacher really runs in 16 bits, the student in float32) */
static double distill_first_loss(const char *tw) {
    char cmd[40000], out[4200], log[4300], *err;
    snprintf(out, sizeof out, "%s/d-%s", tu_tmpdir(), tw);
    snprintf(log, sizeof log, "%s.train.jsonl", out);
    char m[4096], tok[4096], text[4096];
    snprintf(m, sizeof m, "%s", tu_shared(STORIES_HF));
    snprintf(tok, sizeof tok, "%s", tu_shared(TOK512));
    snprintf(text, sizeof text, "%s", tu_shared(TINY));
    snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s --tokenizer %s --text %s --out %s --tokens 512 "
             "--ctx 64 --batch 4 --teacher-weights %s", tu_mpirun(2), m, m, tok, text, out, tw);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "distill --teacher-weights %s: %s", tw, err);
    free(err);
    size_t n;
    char *s = tu_read(log, &n);
    cr_assert(s, "no %s", log);
    json_t *j = json_loads(s, JSON_DISABLE_EOF_CHECK, NULL); /* the first line */
    cr_assert(j, "%s: %s", log, s);
    double loss = json_number_value(json_object_get(j, "loss"));
    json_decref(j);
    free(s);
    return loss;
}

Test(weights, distill_teacher_bf16_student_f32) {
    double f = distill_first_loss("f32"), b = distill_first_loss("bf16");
    cr_log_info("distill stories260K -> itself, first step loss: f32 teacher %.3g, bf16 teacher %.3g", f, b);
    cr_expect_eq(f, 0.0, "an f32 teacher equal to the student gives loss %g", f);
    cr_expect(b > 0 && b < 1e-2, "a bf16 teacher gives loss %g (want small, not 0)", b);
}

/* a converted tensor's file pages are dropped (mf_mmap_drop); reading it again faults them back intact */
Test(weights, dropped_pages_read_back) {
    mf_err err;
    mf_source *src = mf_source_open("tests/golden/synthetic/llama_f16_sharded", &err);
    cr_assert(src, "%s", err.msg);
    int64_t shape[2] = {src->cfg.vocab_size, src->cfg.dim};
    int o1, o2;
    float *a = mf_source_get(src, "model.embed_tokens.weight", 2, shape, &o1, &err);
    cr_assert(a && o1, "%s", err.msg);
    float *b = mf_source_get(src, "model.embed_tokens.weight", 2, shape, &o2, &err);
    cr_assert(b && o2, "%s", err.msg);
    cr_expect(memcmp(a, b, (size_t)shape[0] * shape[1] * sizeof *a) == 0, "second read differs after the drop");
    long nz = 0;
    for (int64_t i = 0; i < shape[0] * shape[1]; i++) nz += a[i] != 0;
    cr_expect_gt(nz, shape[0] * shape[1] / 2, "the embedding is mostly zeros: pages zeroed, not re-read");
    free(a);
    free(b);
    mf_source_close(src);
}
