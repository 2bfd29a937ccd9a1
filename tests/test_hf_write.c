/* test_hf_write.c - writing Hugging Face model directories (src/io/hf_write.c).
 *
 * stories260K (HF safetensors asset) is read with our reader, written back as
 * a single F32 file, as >= 3 F32 shards, as BF16 and as F16, and read again:
 * logits must be bit-equal (F32) or close (BF16/F16) and match the independent
 * float64 numpy golden; the PyPI `safetensors` package must read every file and
 * find the original F32 bits (or their round-to-nearest-even BF16/F16 values,
 * computed with numpy). Error cases must leave no file behind. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/hf_write.h"
#include "io/source.h"
#include "model/model.h"
#include "testutil.h"

#define STORIES "llm_assets/models/stories260K_hf"

/* ------------------------------------------------------------------------- */
/* Helpers */

/* Every tensor of a model, in HF order, as float32 from a source. */
typedef struct loaded {
    mf_source *src;
    int n;
    mf_tensor_ref t[512];
    char names[512][96];
    int owned[512];
} loaded;

static void add_ref(loaded *L, const char *name, int64_t d0, int64_t d1) {
    cr_assert(L->n < 512);
    mf_tensor_ref *r = &L->t[L->n];
    snprintf(L->names[L->n], sizeof L->names[0], "%s", name);
    r->name = L->names[L->n];
    r->ndim = d1 ? 2 : 1;
    r->shape[0] = d0;
    r->shape[1] = d1;
    mf_err err;
    r->data = mf_source_get(L->src, name, r->ndim, r->shape, &L->owned[L->n], &err);
    cr_assert(r->data, "%s", err.msg);
    L->n++;
}

static loaded *load_all(const char *path) {
    loaded *L = calloc(1, sizeof *L);
    mf_err err;
    L->src = mf_source_open(path, &err);
    cr_assert(L->src, "%s", err.msg);
    const mf_config *c = &L->src->cfg;
    int64_t D = c->dim, F = c->ffn_dim, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    add_ref(L, "model.embed_tokens.weight", c->vocab_size, D);
    for (int l = 0; l < c->n_layers; l++) {
        char n[96];
#define ADD(suffix, d0, d1) (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), add_ref(L, n, d0, d1))
        ADD("input_layernorm.weight", D, 0);
        ADD("self_attn.q_proj.weight", Q, D);
        ADD("self_attn.k_proj.weight", KV, D);
        ADD("self_attn.v_proj.weight", KV, D);
        if (c->qkv_bias) {
            ADD("self_attn.q_proj.bias", Q, 0);
            ADD("self_attn.k_proj.bias", KV, 0);
            ADD("self_attn.v_proj.bias", KV, 0);
        }
        ADD("self_attn.o_proj.weight", D, Q);
        ADD("post_attention_layernorm.weight", D, 0);
        ADD("mlp.gate_proj.weight", F, D);
        ADD("mlp.up_proj.weight", F, D);
        ADD("mlp.down_proj.weight", D, F);
#undef ADD
    }
    add_ref(L, "model.norm.weight", D, 0);
    if (!c->tied_embeddings) add_ref(L, "lm_head.weight", c->vocab_size, D);
    return L;
}

static void free_loaded(loaded *L) {
    for (int i = 0; i < L->n; i++)
        if (L->owned[i]) free((void *)L->t[i].data);
    mf_source_close(L->src);
    free(L);
}


/* The 128 golden ids (independent numpy forward pass in llm_assets/reference). */
static int32_t *golden_ids(int *n) {
    json_error_t je;
    json_t *ref = json_load_file(tu_shared("llm_assets/reference/stories260K_logits_128.json"), 0, &je);
    cr_assert(ref, "golden json: %s", je.text);
    json_t *arr = json_object_get(ref, "input_ids");
    *n = (int)json_array_size(arr);
    int32_t *ids = malloc((size_t)*n * sizeof *ids);
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    json_decref(ref);
    return ids;
}

static void expect_cfg_equal(const mf_config *a, const mf_config *b) {
#define EQ(f) cr_expect(a->f == b->f, "config field " #f " differs: %g vs %g", (double)a->f, (double)b->f)
    EQ(arch); EQ(dim); EQ(ffn_dim); EQ(n_layers); EQ(n_heads); EQ(n_kv_heads); EQ(head_dim); EQ(vocab_size);
    EQ(max_seq_len); EQ(norm_eps); EQ(rope_theta); EQ(tied_embeddings); EQ(qkv_bias); EQ(rope_llama3);
    EQ(bos_id); EQ(eos_id);
    if (a->rope_llama3) { EQ(rope_factor); EQ(rope_low_freq_factor); EQ(rope_high_freq_factor); EQ(rope_orig_ctx); }
#undef EQ
}

/* Names in dir (sorted, comma-separated, "." entries skipped) into buf. */
static const char *dir_list(const char *dir, char *buf, size_t cap) {
    struct dirent **ents;
    int m = scandir(dir, &ents, NULL, alphasort);
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < m; i++) {
        if (ents[i]->d_name[0] != '.' && o < cap) o += (size_t)snprintf(buf + o, cap - o, "%s%s", o ? "," : "", ents[i]->d_name);
        free(ents[i]);
    }
    if (m >= 0) free(ents);
    return buf;
}

static const char *pathf(char *buf, const char *dir, const char *name) {
    snprintf(buf, 4096, "%.3000s/%.1000s", dir, name);
    return buf;
}

/* The safetensors header is 8-byte padded with spaces, valid JSON, with
 * __metadata__ {"format": "pt"} and the tensors in the order they were given. */
static void check_header(const char *file, const mf_tensor_ref *t, int n) {
    size_t len;
    unsigned char *b = tu_read(file, &len);
    cr_assert(b && len >= 8, "%s unreadable", file);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    cr_assert(h % 8 == 0 && 8 + h <= len, "%s: header length %llu is not a multiple of 8", file, (unsigned long long)h);
    cr_expect(b[8] == '{');
    size_t end = 8 + h;
    while (end > 8 && b[end - 1] == ' ') end--;
    cr_expect(end > 8 && b[end - 1] == '}', "%s: header must end with '}' then only spaces", file);
    json_error_t je;
    json_t *root = json_loadb((const char *)b + 8, h, 0, &je);
    cr_assert(root, "%s: header JSON: %s", file, je.text);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(root, "__metadata__"), "format")), "pt");
    const char *key;
    json_t *v;
    int i = 0;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) continue;
        cr_assert(i < n && strcmp(key, t[i].name) == 0, "%s: header entry %d is '%s', expected '%s'", file, i, key,
                  i < n ? t[i].name : "(none)");
        i++;
    }
    cr_expect_eq(i, n);
    json_decref(root);
    free(b);
}

/* Independent check with the PyPI safetensors package + numpy: every file of
 * dir reads, tensors equal those of the original F32 file (F32), or its
 * round-to-nearest-even BF16/F16 values; config.json agrees with the original's. */
static const char *PY_CHECK =
    "import json, struct, sys, os\n"
    "import numpy as np\n"
    "from safetensors.numpy import load_file\n"
    "d, dtype, orig_dir = sys.argv[1:4]\n"
    "ref = load_file(os.path.join(orig_dir, 'model.safetensors'))\n"
    "idx = os.path.join(d, 'model.safetensors.index.json')\n"
    "if os.path.exists(idx):\n"
    "    wm = json.load(open(idx))\n"
    "    files = sorted(set(wm['weight_map'].values()))\n"
    "else:\n"
    "    wm, files = None, ['model.safetensors']\n"
    "seen, total = {}, 0\n"
    "for fn in files:\n"
    "    raw = open(os.path.join(d, fn), 'rb').read()\n"
    "    n = struct.unpack('<Q', raw[:8])[0]\n"
    "    assert n % 8 == 0, 'header not padded'\n"
    "    hdr = json.loads(raw[8:8 + n])\n"
    "    assert hdr.pop('__metadata__') == {'format': 'pt'}\n"
    "    if dtype != 'BF16':\n"
    "        got = load_file(os.path.join(d, fn))\n"
    "        assert set(got) == set(hdr)\n"
    "    for k, e in hdr.items():\n"
    "        assert k not in seen, k\n"
    "        seen[k] = fn\n"
    "        assert e['dtype'] == dtype and e['shape'] == list(ref[k].shape), k\n"
    "        b, en = e['data_offsets']\n"
    "        total += en - b\n"
    "        f32 = np.ascontiguousarray(ref[k], dtype='<f4')\n"
    "        if dtype == 'BF16':\n"
    "            bits = np.frombuffer(raw[8 + n + b:8 + n + en], dtype='<u2')\n"
    "            u = f32.reshape(-1).view('<u4').astype(np.uint64)\n"
    "            want = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)\n"
    "            assert np.array_equal(bits, want), k\n"
    "        elif dtype == 'F16':\n"
    "            assert got[k].dtype == np.float16 and np.array_equal(got[k].view('<u2'), f32.astype(np.float16).view('<u2')), k\n"
    "        else:\n"
    "            assert got[k].dtype == np.float32 and np.array_equal(got[k].view('<u4'), f32.view('<u4')), k\n"
    "assert set(seen) == set(ref), 'tensor names differ'\n"
    "if wm is not None:\n"
    "    assert wm['weight_map'] == seen and wm['metadata']['total_size'] == total, 'index'\n"
    "c, oc = json.load(open(os.path.join(d, 'config.json'))), json.load(open(os.path.join(orig_dir, 'config.json')))\n"
    "for k in ['architectures', 'model_type', 'vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers',\n"
    "          'num_attention_heads', 'num_key_value_heads', 'head_dim', 'max_position_embeddings', 'rms_norm_eps',\n"
    "          'rope_theta', 'hidden_act', 'tie_word_embeddings', 'bos_token_id', 'eos_token_id', 'attention_bias', 'mlp_bias']:\n"
    "    assert c[k] == oc[k], (k, c[k], oc[k])\n"
    "assert c['rope_scaling'] is None\n"
    "assert c['torch_dtype'] == {'F32': 'float32', 'BF16': 'bfloat16', 'F16': 'float16'}[dtype]\n"
    "print('OK', len(seen), 'tensors in', len(files), 'files')\n";

static void python_check(const char *dir, const char *dtype) {
    char script[4096], cmd[12288];
    pathf(script, tu_tmpdir(), "check.py");
    tu_write(script, PY_CHECK, strlen(PY_CHECK));
    snprintf(cmd, sizeof cmd, "python3 %s %s %s %s", script, dir, dtype, tu_shared(STORIES));
    char *out, *err;
    int rc = tu_run(cmd, &out, &err);
    cr_expect_eq(rc, 0, "python safetensors check of %s (%s) failed (pip install safetensors numpy): %s%s", dir, dtype, out, err);
    cr_expect(strncmp(out, "OK ", 3) == 0, "python check said: %s", out);
    free(out);
    free(err);
}

/* stories260K through write_dir with dtype/sharding; returns the output dir. */
static const char *write_stories(loaded *L, const char *dtype, size_t max_shard, const char *extra) {
    char *dir = malloc(4096);
    pathf(dir, tu_tmpdir(), "out");
    mf_err err;
    int rc = mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, dtype, max_shard, extra, &err);
    cr_assert_eq(rc, 0, "mf_hf_write_dir: %s", err.msg);
    return dir;
}

/* Max |a - b| over n values; *bits_equal tells whether they are identical. */
static double max_diff(const float *a, const float *b, size_t n, int *bits_equal) {
    double m = 0;
    *bits_equal = memcmp(a, b, n * sizeof *a) == 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static float *golden_logits(size_t n) {
    size_t len;
    float *g = tu_read(tu_shared("llm_assets/reference/stories260K_logits_128x512.f32"), &len);
    cr_assert(g && len == n * 4, "golden logits size");
    return g;
}

/* ------------------------------------------------------------------------- */
/* Round trips */

static void roundtrip_f32(size_t max_shard, int want_min_shards) {
    loaded *L = load_all(tu_shared(STORIES));
    const char *dir = write_stories(L, "F32", max_shard, NULL);
    char list[4096], p[4096];
    dir_list(dir, list, sizeof list);
    if (want_min_shards == 1) {
        cr_expect_str_eq(list, "config.json,model.safetensors");
        check_header(pathf(p, dir, "model.safetensors"), L->t, L->n);
    } else {
        int k = 0;
        for (const char *s = list; (s = strstr(s, ".safetensors,")); s++) k++;
        cr_expect(k >= want_min_shards, "%d shards, want >= %d: %s", k, want_min_shards, list);
        char first[64];
        mf_hf_shard_name(first, sizeof first, 1, k);
        cr_expect(strstr(list, first) && strstr(list, "model.safetensors.index.json") && !strstr(list, "model.safetensors,") &&
                      !strstr(list, ".tmp."), "files: %s", list);
    }
    /* read back: config, tensors, logits */
    mf_err err;
    mf_source *back = mf_source_open(dir, &err);
    cr_assert(back, "%s", err.msg);
    expect_cfg_equal(&L->src->cfg, &back->cfg);
    mf_source_close(back);
    loaded *B = load_all(dir);
    cr_assert_eq(B->n, L->n);
    for (int i = 0; i < L->n; i++)
        cr_expect(memcmp(B->t[i].data, L->t[i].data, (size_t)mf_st_tensor_bytes(&L->t[i], "F32")) == 0, "tensor %s differs",
                  L->t[i].name);
    free_loaded(B);
    int n, V, same;
    int32_t *ids = golden_ids(&n);
    float *a = tu_forward_all(tu_shared(STORIES), ids, n, &V), *b = tu_forward_all(dir, ids, n, &V);
    double d = max_diff(a, b, (size_t)n * V, &same);
    cr_expect(same, "logits of the written model differ from the original (max %g)", d);
    float *g = golden_logits((size_t)n * V);
    d = max_diff(b, g, (size_t)n * V, &same);
    cr_expect(d < 1e-4, "written model: max |logit - numpy golden| = %g", d);
    python_check(dir, "F32");
    free(a); free(b); free(g); free(ids);
    free((void *)dir);
    free_loaded(L);
}

Test(hfwrite, roundtrip_f32_single_file) { roundtrip_f32(0, 1); }
Test(hfwrite, roundtrip_f32_sharded) { roundtrip_f32(300000, 3); }

/* Half precision: every value is RNE of the original (python check) and the
 * logits stay close to the F32 ones. */
static void roundtrip_half(const char *dtype, double tol) {
    loaded *L = load_all(tu_shared(STORIES));
    const char *dir = write_stories(L, dtype, 0, NULL);
    char p[4096];
    check_header(pathf(p, dir, "model.safetensors"), L->t, L->n);
    python_check(dir, dtype);
    mf_err err;
    mf_source *back = mf_source_open(dir, &err);
    cr_assert(back, "%s", err.msg);
    expect_cfg_equal(&L->src->cfg, &back->cfg);
    mf_source_close(back);
    int n, V, same, agree = 0;
    int32_t *ids = golden_ids(&n);
    float *a = tu_forward_all(tu_shared(STORIES), ids, n, &V), *b = tu_forward_all(dir, ids, n, &V);
    double d = max_diff(a, b, (size_t)n * V, &same);
    for (int t = 0; t < n; t++) {
        int ia = 0, ib = 0;
        for (int i = 1; i < V; i++) {
            if (a[t * V + i] > a[t * V + ia]) ia = i;
            if (b[t * V + i] > b[t * V + ib]) ib = i;
        }
        agree += ia == ib;
    }
    cr_expect(d < tol, "%s: max |logit - F32 logit| = %g (want < %g)", dtype, d, tol);
    cr_expect(agree >= n * 95 / 100, "%s: argmax agrees at %d of %d positions", dtype, agree, n);
    free(a); free(b); free(ids);
    free((void *)dir);
    free_loaded(L);
}

Test(hfwrite, roundtrip_bf16) { roundtrip_half("BF16", 0.3); }
Test(hfwrite, roundtrip_f16) { roundtrip_half("F16", 0.05); }

/* Rewriting a directory with another layout removes the files of the old one. */
Test(hfwrite, rewrite_changes_layout) {
    loaded *L = load_all(tu_shared(STORIES));
    char dir[4096], list[4096];
    pathf(dir, tu_tmpdir(), "out");
    mf_err err;
    cr_assert_eq(mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, "F32", 0, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, "F32", 200000, NULL, &err), 0, "%s", err.msg);
    dir_list(dir, list, sizeof list);
    cr_expect(!strstr(list, "model.safetensors,") && strstr(list, "model.safetensors.index.json"), "%s", list);
    int k = 0;
    for (const char *s = list; (s = strstr(s, ".safetensors,")); s++) k++;
    cr_assert_eq(mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, "F32", 400000, NULL, &err), 0, "%s", err.msg);
    dir_list(dir, list, sizeof list);
    int k2 = 0;
    for (const char *s = list; (s = strstr(s, ".safetensors,")); s++) k2++;
    cr_expect(k2 < k, "fewer shards expected after a rewrite with bigger shards: %s", list);
    char old_name[64];
    mf_hf_shard_name(old_name, sizeof old_name, 1, k);
    cr_expect(!strstr(list, old_name), "stale shard %s left: %s", old_name, list);
    mf_source *s = mf_source_open(dir, &err);
    cr_expect(s, "%s", err.msg);
    mf_source_close(s);
    cr_assert_eq(mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, "F32", 0, NULL, &err), 0, "%s", err.msg);
    cr_expect_str_eq(dir_list(dir, list, sizeof list), "config.json,model.safetensors");
    /* prepare_dir for a 2-shard layout written by someone else: the single file goes, config stays */
    char p[4096];
    tu_write(pathf(p, dir, "model-00001-of-00007.safetensors"), "x", 1);
    tu_write(pathf(p, dir, "model-00001-of-00002.safetensors"), "x", 1);
    tu_write(pathf(p, dir, "model-1-of-7.safetensors"), "x", 1);
    cr_assert_eq(mf_hf_prepare_dir(dir, 2, &err), 0, "%s", err.msg);
    cr_expect_str_eq(dir_list(dir, list, sizeof list), "config.json,model-00001-of-00002.safetensors,model-1-of-7.safetensors");
    free_loaded(L);
}

/* ------------------------------------------------------------------------- */
/* Configurations other than stories260K: Qwen2 (biases, untied, explicit
 * head_dim != dim/heads), Llama with llama3 rope scaling, Mistral. */

static float *rand_data(size_t n, unsigned *seed) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = (float)rand_r(seed) / RAND_MAX - 0.5f;
    return p;
}

static void synth_roundtrip(const mf_config *c, const char *extra) {
    /* tensors in the order load_all uses, from a throwaway list of names */
    static const char *LAYER[] = {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                  "self_attn.v_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.bias",
                                  "self_attn.v_proj.bias", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                                  "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};
    int64_t D = c->dim, F = c->ffn_dim, Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t shp[12][2] = {{D, 0}, {Q, D}, {KV, D}, {KV, D}, {Q, 0}, {KV, 0}, {KV, 0}, {D, Q}, {D, 0}, {F, D}, {F, D}, {D, F}};
    mf_tensor_ref t[64];
    char names[64][96];
    int n = 0;
    unsigned seed = 7;
#define PUT(nm, d0, d1) (snprintf(names[n], 96, "%s", nm), t[n] = (mf_tensor_ref){names[n], (d1) ? 2 : 1, {d0, d1}, \
                         rand_data((size_t)(d0) * ((d1) ? (d1) : 1), &seed)}, n++)
    PUT("model.embed_tokens.weight", c->vocab_size, D);
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < 12; k++) {
            if (!c->qkv_bias && k >= 4 && k <= 6) continue;
            char nm[96];
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, LAYER[k]);
            PUT(nm, shp[k][0], shp[k][1]);
        }
    PUT("model.norm.weight", D, 0);
    if (!c->tied_embeddings) PUT("lm_head.weight", c->vocab_size, D);
#undef PUT
    char dir[4096], p[4096];
    pathf(dir, tu_tmpdir(), "m");
    mf_err err;
    cr_assert_eq(mf_hf_write_dir(dir, c, t, n, "F32", 0, extra, &err), 0, "%s", err.msg);
    mf_source *s = mf_source_open(dir, &err);
    cr_assert(s, "%s", err.msg);
    expect_cfg_equal(c, &s->cfg);
    for (int i = 0; i < n; i++) {
        int owned;
        float *got = mf_source_get(s, t[i].name, t[i].ndim, t[i].shape, &owned, &err);
        cr_assert(got, "%s", err.msg);
        cr_expect(memcmp(got, t[i].data, (size_t)mf_st_tensor_bytes(&t[i], "F32")) == 0, "tensor %s differs", t[i].name);
        if (owned) free(got);
    }
    mf_source_close(s);
    check_header(pathf(p, dir, "model.safetensors"), t, n);
    for (int i = 0; i < n; i++) free((void *)t[i].data);
    /* the text itself: head_dim explicit, floats in shortest form */
    char *text = tu_read(pathf(p, dir, "config.json"), NULL);
    char want[64];
    snprintf(want, sizeof want, "\"head_dim\": %d", c->head_dim);
    cr_expect(strstr(text, want), "%s", text);
    free(text);
}

static mf_config small_cfg(mf_arch arch) {
    return (mf_config){.arch = arch, .dim = 16, .ffn_dim = 24, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8,
                       .vocab_size = 40, .max_seq_len = 64, .norm_eps = 1e-6f, .rope_theta = 1e6f, .tied_embeddings = 1,
                       .bos_id = 1, .eos_id = 2};
}

Test(hfwrite, config_qwen2_bias_untied) {
    mf_config c = small_cfg(MF_ARCH_QWEN2);
    c.qkv_bias = 1;
    c.tied_embeddings = 0;
    c.eos_id = 39;
    synth_roundtrip(&c, NULL);
}

Test(hfwrite, config_llama3_rope_and_extra) {
    mf_config c = small_cfg(MF_ARCH_LLAMA);
    c.rope_llama3 = 1;
    c.rope_factor = 8;
    c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4;
    c.rope_orig_ctx = 32;
    c.rope_theta = 500000;
    c.norm_eps = 1e-5f;
    const char *extra = "{\"minifuse\": {\"pruned_from\": \"x/y\", \"dropped_layers\": [3, 7]}, \"hidden_size\": 16}";
    synth_roundtrip(&c, extra);
    /* write_config alone, then check the JSON */
    char p[4096];
    pathf(p, tu_tmpdir(), "config.json");
    mf_err err;
    cr_assert_eq(mf_hf_write_config(p, &c, "bfloat16", extra, &err), 0, "%s", err.msg);
    json_error_t je;
    json_t *o = json_load_file(p, 0, &je);
    cr_assert(o, "%s", je.text);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(o, "minifuse"), "pruned_from")), "x/y");
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(json_object_get(o, "minifuse"), "dropped_layers"), 1)), 7);
    cr_expect_str_eq(json_string_value(json_object_get(o, "torch_dtype")), "bfloat16");
    json_t *rs = json_object_get(o, "rope_scaling");
    cr_expect_str_eq(json_string_value(json_object_get(rs, "rope_type")), "llama3");
    cr_expect_eq(json_integer_value(json_object_get(rs, "original_max_position_embeddings")), 32);
    cr_expect(json_real_value(json_object_get(o, "rms_norm_eps")) == 1e-5, "rms_norm_eps must be written as 1e-05");
    cr_expect(json_real_value(json_object_get(o, "rope_theta")) == 500000.0);
    cr_expect(json_is_false(json_object_get(o, "attention_bias")) && json_is_false(json_object_get(o, "mlp_bias")));
    json_decref(o);
    /* extra that is not an object */
    cr_expect_eq(mf_hf_write_config(p, &c, "float32", "[1, 2]", &err), -1);
    cr_expect(strstr(err.msg, p), "%s", err.msg);
    cr_expect_eq(mf_hf_write_config(p, &c, "float32", "{bad", &err), -1);
}

Test(hfwrite, config_mistral) {
    mf_config c = small_cfg(MF_ARCH_MISTRAL);
    c.head_dim = 4;
    synth_roundtrip(&c, NULL);
}

Test(hfwrite, config_inexpressible_refused) {
    char p[4096];
    pathf(p, tu_tmpdir(), "config.json");
    mf_err err;
    mf_config c = small_cfg(MF_ARCH_QWEN2); /* qwen2 without biases */
    cr_expect_eq(mf_hf_write_config(p, &c, "float32", NULL, &err), -1);
    cr_expect(strstr(err.msg, "qwen2"), "%s", err.msg);
    c = small_cfg(MF_ARCH_LLAMA);
    c.n_kv_heads = 3; /* invalid: validated */
    cr_expect_eq(mf_hf_write_config(p, &c, "float32", NULL, &err), -1);
    c = small_cfg(MF_ARCH_LLAMA);
    cr_expect_eq(mf_hf_write_config(p, &c, "float64", NULL, &err), -1);
    cr_expect(access(p, F_OK) != 0, "nothing may be written on error");
}

/* ------------------------------------------------------------------------- */
/* Errors leave nothing behind */

Test(hfwrite, unwritable_directory) {
    loaded *L = load_all(tu_shared(STORIES));
    const char *base = tu_tmpdir();
    char file[4096], dir[4096], list[4096], blocker[4096];
    mf_err err;
    /* parent is a regular file */
    tu_write(pathf(file, base, "plain"), "x", 1);
    pathf(dir, file, "out");
    cr_expect_eq(mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, "F32", 0, NULL, &err), -1);
    cr_expect(strstr(err.msg, dir), "error must name %s: %s", dir, err.msg);
    /* the third shard cannot be created (a directory sits on its temporary name):
     * shards 1 and 2 were already written and must be gone too */
    pathf(dir, base, "out2");
    mkdir(dir, 0755);
    int shard_of[512];
    int k = mf_hf_shard_plan(L->t, L->n, "F32", 300000, shard_of, &err);
    cr_assert(k >= 3);
    char name[64];
    mf_hf_shard_name(name, sizeof name, 3, k);
    snprintf(blocker, sizeof blocker, "%.3000s/%.63s.tmp.%ld", dir, name, (long)getpid());
    cr_assert_eq(mkdir(blocker, 0755), 0);
    cr_expect_eq(mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, "F32", 300000, NULL, &err), -1);
    cr_expect(strstr(err.msg, name), "error must name %s: %s", name, err.msg);
    cr_expect_str_eq(dir_list(dir, list, sizeof list), strrchr(blocker, '/') + 1, "left behind: %s", list);
    rmdir(blocker);
    /* a write that fails half way through a file (file size limit), in a child
     * process so that the limit cannot disturb the test runner's own files */
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        struct rlimit lim;
        getrlimit(RLIMIT_FSIZE, &lim);
        lim.rlim_cur = 100000;
        signal(SIGXFSZ, SIG_IGN);
        int rc = setrlimit(RLIMIT_FSIZE, &lim) == 0 ? mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, "F32", 0, NULL, &err) : -2;
        if (write(pfd[1], err.msg, strlen(err.msg) + 1) < 0) rc = -3;
        _exit(rc == -1 ? 0 : 1);
    }
    close(pfd[1]);
    char msg[1024] = "";
    ssize_t got = read(pfd[0], msg, sizeof msg - 1);
    close(pfd[0]);
    msg[got > 0 ? got : 0] = 0;
    int status;
    waitpid(pid, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the size-limited write should fail with -1");
    cr_expect(strstr(msg, "model.safetensors"), "%s", msg);
    cr_expect_str_eq(dir_list(dir, list, sizeof list), "", "left behind: %s", list);
    /* read-only directory (meaningless as root, who may write anyway) */
    if (geteuid() != 0) {
        chmod(dir, 0555);
        cr_expect_eq(mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, "F32", 0, NULL, &err), -1);
        cr_expect(strstr(err.msg, dir), "%s", err.msg);
        cr_expect_str_eq(dir_list(dir, list, sizeof list), "");
        chmod(dir, 0755);
    }
    free_loaded(L);
}

Test(hfwrite, bad_tensor_refs) {
    float x[6] = {1, 2, 3, 4, 5, 6};
    char p[4096], dir[4096];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    pathf(p, dir, "t.safetensors");
    mf_err err;
    struct { mf_tensor_ref t[2]; const char *dtype, *want; } cases[] = {
        {{{"a", 1, {6}, x}, {NULL, 1, {6}, x}}, "F32", "tensor #1 has no name"},
        {{{"a", 1, {6}, x}, {"", 1, {6}, x}}, "F32", "tensor #1 has no name"},
        {{{"a", 0, {0}, x}, {"b", 1, {6}, x}}, "F32", "'a' has 0 dimensions"},
        {{{"a", 5, {1, 1, 1, 1}, x}, {"b", 1, {6}, x}}, "F32", "'a' has 5 dimensions"},
        {{{"a", 2, {0, 6}, x}, {"b", 1, {6}, x}}, "F32", "'a' dimension 0 is 0"},
        {{{"a", 2, {2, -3}, x}, {"b", 1, {6}, x}}, "BF16", "'a' dimension 1 is -3"},
        {{{"a", 1, {6}, NULL}, {"b", 1, {6}, x}}, "F32", "'a' has no data"},
        {{{"a", 1, {6}, x}, {"a", 2, {2, 3}, x}}, "F32", "'a' appears twice"},
        {{{"a", 1, {6}, x}, {"b", 1, {6}, x}}, "F64", "unknown dtype 'F64'"},
        {{{"a", 1, {6}, x}, {"\xff\xfe", 1, {6}, x}}, "F32", "not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_expect_eq(mf_st_write(p, cases[i].t, 2, cases[i].dtype, &err), -1, "case %zu accepted", i);
        cr_expect(strstr(err.msg, p) && strstr(err.msg, cases[i].want), "case %zu: '%s' should name the file and say '%s'", i,
                  err.msg, cases[i].want);
        char list[4096];
        cr_expect_str_eq(dir_list(dir, list, sizeof list), "", "case %zu left %s", i, list);
    }
    /* and the good one is fine: read back by our reader */
    mf_tensor_ref ok[2] = {{"a", 2, {2, 3}, x}, {"b", 1, {5}, x + 1}};
    cr_assert_eq(mf_st_write(p, ok, 2, "F32", &err), 0, "%s", err.msg);
    check_header(p, ok, 2);
}

/* write_dir checks the tensors against the config. */
Test(hfwrite, model_tensors_checked) {
    loaded *L = load_all(tu_shared(STORIES));
    char dir[4096];
    pathf(dir, tu_tmpdir(), "out");
    mf_err err;
    /* a missing tensor */
    cr_expect_eq(mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n - 1, "F32", 0, NULL, &err), -1);
    cr_expect(strstr(err.msg, "model.norm.weight") && strstr(err.msg, dir), "%s", err.msg);
    /* a wrong shape */
    mf_tensor_ref save = L->t[1];
    L->t[1].shape[0] = 32;
    cr_expect_eq(mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, "F32", 0, NULL, &err), -1);
    cr_expect(strstr(err.msg, L->t[1].name) && strstr(err.msg, "[32]"), "%s", err.msg);
    L->t[1] = save;
    /* an untied config without lm_head */
    mf_config c = L->src->cfg;
    c.tied_embeddings = 0;
    cr_expect_eq(mf_hf_write_dir(dir, &c, L->t, L->n, "F32", 0, NULL, &err), -1);
    cr_expect(strstr(err.msg, "lm_head.weight"), "%s", err.msg);
    /* a NULL name or zero dims */
    L->t[3].name = NULL;
    cr_expect_eq(mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, "F32", 0, NULL, &err), -1);
    cr_expect(strstr(err.msg, "no name"), "%s", err.msg);
    L->t[3].name = L->names[3];
    L->t[3].ndim = 0;
    cr_expect_eq(mf_hf_write_dir(dir, &L->src->cfg, L->t, L->n, "F32", 0, NULL, &err), -1);
    cr_expect(strstr(err.msg, "0 dimensions"), "%s", err.msg);
    cr_expect(access(dir, F_OK) != 0, "nothing may be created on error");
    free_loaded(L);
}

Test(hfwrite, index_file) {
    char p[4096];
    pathf(p, tu_tmpdir(), "model.safetensors.index.json");
    const char *names[] = {"a", "b", "c"}, *files[] = {"model-00001-of-00002.safetensors", "model-00001-of-00002.safetensors",
                                                       "model-00002-of-00002.safetensors"};
    mf_err err;
    cr_assert_eq(mf_hf_write_index(p, names, files, 3, 123456789012ull, &err), 0, "%s", err.msg);
    json_error_t je;
    json_t *o = json_load_file(p, 0, &je);
    cr_assert(o, "%s", je.text);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(o, "metadata"), "total_size")), 123456789012ll);
    json_t *wm = json_object_get(o, "weight_map");
    cr_expect_eq(json_object_size(wm), 3);
    cr_expect_str_eq(json_string_value(json_object_get(wm, "c")), files[2]);
    json_decref(o);
    const char *bad_files[] = {"a", "../x.safetensors", "b"};
    cr_expect_eq(mf_hf_write_index(p, names, bad_files, 3, 1, &err), -1);
    cr_expect(strstr(err.msg, "'b'") && strstr(err.msg, p), "%s", err.msg);
    const char *dup[] = {"a", "b", "a"};
    cr_expect_eq(mf_hf_write_index(p, dup, files, 3, 1, &err), -1);
    cr_expect(strstr(err.msg, "appears twice"), "%s", err.msg);
}
