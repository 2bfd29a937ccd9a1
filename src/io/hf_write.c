#include "io/hf_write.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/half.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; hf_write.c writes host floats as they are"
#endif

#define MAX_NUMEL ((uint64_t)1 << 46)

/* ------------------------------------------------------------------------- */
/* Temporary files: "<path>.tmp.<pid>", fsync'ed, then renamed. */

static char *tmp_name(const char *path) {
    size_t cap = strlen(path) + 32;
    char *t = mf_malloc(cap);
    snprintf(t, cap, "%s.tmp.%ld", path, (long)getpid());
    return t;
}

/* Open tmp for writing; the message names the final path. */
static FILE *tmp_open(const char *path, const char *tmp, mf_err *err) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        mf_err_set(err, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
        if (fd >= 0) close(fd);
        unlink(tmp);
    }
    return f;
}

/* Flush, fsync and close f; on any failure remove tmp. */
static int tmp_close(FILE *f, const char *path, const char *tmp, int ok, mf_err *err) {
    if (ok && (fflush(f) != 0 || fsync(fileno(f)) != 0)) {
        ok = 0;
        mf_err_set(err, "%s: writing %s failed: %s", path, tmp, strerror(errno));
    }
    if (fclose(f) != 0 && ok) {
        ok = 0;
        mf_err_set(err, "%s: closing %s failed: %s", path, tmp, strerror(errno));
    }
    if (!ok) unlink(tmp);
    return ok ? 0 : -1;
}

/* fsync the directory holding path, so the rename itself is durable (best effort). */
static void sync_parent(const char *path) {
    char *d = mf_strdup(path);
    char *slash = strrchr(d, '/');
    if (slash == d) slash[1] = 0;
    else if (slash) *slash = 0;
    else strcpy(d, ".");
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(d);
}

static int tmp_commit(const char *path, const char *tmp, mf_err *err) {
    if (rename(tmp, path) != 0) {
        mf_err_set(err, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    sync_parent(path);
    return 0;
}

/* Write a whole text (JSON) file to tmp. */
static int write_text_tmp(const char *path, const char *tmp, const char *text, mf_err *err) {
    FILE *f = tmp_open(path, tmp, err);
    if (!f) return -1;
    size_t len = strlen(text);
    int ok = fwrite(text, 1, len, f) == len && fputc('\n', f) != EOF;
    if (!ok) mf_err_set(err, "%s: writing %s failed: %s", path, tmp, strerror(errno));
    return tmp_close(f, path, tmp, ok, err);
}

static int write_text(const char *path, const char *text, mf_err *err) {
    char *tmp = tmp_name(path);
    int rc = write_text_tmp(path, tmp, text, err);
    if (rc == 0) rc = tmp_commit(path, tmp, err);
    free(tmp);
    return rc;
}

/* ------------------------------------------------------------------------- */
/* Tensor refs */

size_t mf_st_dtype_size(const char *dtype) {
    if (!dtype) return 0;
    if (strcmp(dtype, "F32") == 0) return 4;
    if (strcmp(dtype, "BF16") == 0 || strcmp(dtype, "F16") == 0) return 2;
    return 0;
}

static uint64_t ref_numel(const mf_tensor_ref *t) {
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (uint64_t)t->shape[i];
    return n;
}

/* One ref: name, dims, data. `where` names the output file. */
static int check_ref(const char *where, const mf_tensor_ref *t, int i, mf_err *err) {
    if (!t->name || !t->name[0]) return mf_err_set(err, "%s: tensor #%d has no name", where, i);
    if (t->ndim < 1 || t->ndim > 4)
        return mf_err_set(err, "%s: tensor '%s' has %d dimensions (1..4 allowed)", where, t->name, t->ndim);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] <= 0 || (uint64_t)t->shape[d] > MAX_NUMEL)
            return mf_err_set(err, "%s: tensor '%s' dimension %d is %lld (must be positive)", where, t->name, d,
                              (long long)t->shape[d]);
        numel *= (uint64_t)t->shape[d];
        if (numel > MAX_NUMEL) return mf_err_set(err, "%s: tensor '%s' is too large", where, t->name);
    }
    if (!t->data) return mf_err_set(err, "%s: tensor '%s' has no data", where, t->name);
    return 0;
}

/* All refs valid, names unique, dtype known. */
static int check_refs(const char *where, const mf_tensor_ref *t, int n, const char *dtype, mf_err *err) {
    if (mf_st_dtype_size(dtype) == 0)
        return mf_err_set(err, "%s: unknown dtype '%s' (F32, BF16 or F16)", where, dtype ? dtype : "(null)");
    if (n < 0 || (n > 0 && !t)) return mf_err_set(err, "%s: bad tensor list (n = %d)", where, n);
    for (int i = 0; i < n; i++)
        if (check_ref(where, &t[i], i, err) != 0) return -1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(t[i].name, t[j].name) == 0) return mf_err_set(err, "%s: tensor '%s' appears twice", where, t[i].name);
    return 0;
}

uint64_t mf_st_tensor_bytes(const mf_tensor_ref *t, const char *dtype) {
    if (!t || check_ref("", t, 0, NULL) != 0) return 0;
    return ref_numel(t) * mf_st_dtype_size(dtype);
}

/* ------------------------------------------------------------------------- */
/* safetensors */

/* Header JSON, padded with spaces to a multiple of 8 bytes; *len gets its length. */
static char *st_header(const char *path, const mf_tensor_ref *t, int n, const char *dtype, size_t *len, mf_err *err) {
    json_t *root = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(root, "__metadata__", meta);
    uint64_t off = 0, esz = mf_st_dtype_size(dtype);
    for (int i = 0; i < n; i++) {
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        for (int d = 0; d < t[i].ndim; d++) json_array_append_new(shape, json_integer(t[i].shape[d]));
        uint64_t nb = ref_numel(&t[i]) * esz;
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + nb)));
        off += nb;
        json_object_set_new(e, "dtype", json_string(dtype));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", offs);
        if (json_object_set_new(root, t[i].name, e) != 0) {
            json_decref(root);
            mf_err_set(err, "%s: tensor name '%s' is not valid UTF-8", path, t[i].name);
            return NULL;
        }
    }
    char *js = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    size_t jl = strlen(js), padded = (jl + 7) / 8 * 8;
    char *h = mf_malloc(padded + 1);
    memcpy(h, js, jl);
    memset(h + jl, ' ', padded - jl);
    h[padded] = 0;
    free(js);
    *len = padded;
    return h;
}

/* Tensor data as dtype (little-endian host assumed, as in the reader). */
static int st_write_data(FILE *f, const mf_tensor_ref *t, const char *dtype) {
    uint64_t numel = ref_numel(t);
    if (strcmp(dtype, "F32") == 0) return fwrite(t->data, sizeof(float), (size_t)numel, f) == numel;
    int bf = strcmp(dtype, "BF16") == 0;
    enum { CHUNK = 1 << 15 };
    uint16_t buf[CHUNK];
    for (uint64_t i = 0; i < numel; i += CHUNK) {
        size_t m = numel - i < CHUNK ? (size_t)(numel - i) : CHUNK;
        for (size_t j = 0; j < m; j++) buf[j] = bf ? mf_f32_to_bf16(t->data[i + j]) : mf_f32_to_fp16(t->data[i + j]);
        if (fwrite(buf, 2, m, f) != m) return 0;
    }
    return 1;
}

/* The whole file into tmp (refs already checked). */
static int st_write_tmp(const char *path, const char *tmp, const mf_tensor_ref *t, int n, const char *dtype, mf_err *err) {
    size_t hlen;
    char *h = st_header(path, t, n, dtype, &hlen, err);
    if (!h) return -1;
    FILE *f = tmp_open(path, tmp, err);
    if (!f) { free(h); return -1; }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h, 1, hlen, f) == hlen;
    for (int i = 0; ok && i < n; i++) ok = st_write_data(f, &t[i], dtype);
    if (!ok) mf_err_set(err, "%s: writing %s failed: %s", path, tmp, strerror(errno));
    free(h);
    return tmp_close(f, path, tmp, ok, err);
}

int mf_st_write(const char *path, const mf_tensor_ref *t, int n, const char *dtype, mf_err *err) {
    if (check_refs(path, t, n, dtype, err) != 0) return -1;
    char *tmp = tmp_name(path);
    int rc = st_write_tmp(path, tmp, t, n, dtype, err);
    if (rc == 0) rc = tmp_commit(path, tmp, err);
    free(tmp);
    return rc;
}

/* ------------------------------------------------------------------------- */
/* config.json */

/* A float as the double of its shortest decimal that reads back as the same
 * float: 1e-5f is written 1e-05, not 9.99999974737875e-06. */
static json_t *json_float(float f) {
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

/* Does some real in v need more than 15 significant digits to read back? */
static int needs_17_digits(json_t *v) {
    if (json_is_real(v)) {
        char buf[40];
        snprintf(buf, sizeof buf, "%.15g", json_real_value(v));
        return strtod(buf, NULL) != json_real_value(v);
    }
    const char *k;
    size_t i;
    json_t *x;
    if (json_is_object(v)) json_object_foreach(v, k, x) if (needs_17_digits(x)) return 1;
    if (json_is_array(v)) json_array_foreach(v, i, x) if (needs_17_digits(x)) return 1;
    return 0;
}

static const char *arch_class(mf_arch a) {
    switch (a) {
    case MF_ARCH_LLAMA: return "LlamaForCausalLM";
    case MF_ARCH_MISTRAL: return "MistralForCausalLM";
    case MF_ARCH_QWEN2: return "Qwen2ForCausalLM";
    }
    return "?";
}

/* Configurations that transformers' class for the architecture cannot express. */
static int check_expressible(const char *path, const mf_config *c, mf_err *err) {
    if (c->arch == MF_ARCH_QWEN2 && !c->qkv_bias)
        return mf_err_set(err, "%s: a qwen2 model without q/k/v biases cannot be written as Qwen2ForCausalLM", path);
    if (c->arch == MF_ARCH_MISTRAL && c->qkv_bias)
        return mf_err_set(err, "%s: a mistral model with q/k/v biases cannot be written as MistralForCausalLM", path);
    return 0;
}

static json_t *rope_scaling_json(const mf_config *c) {
    if (!c->rope_llama3) return json_null();
    json_t *r = json_object();
    json_object_set_new(r, "rope_type", json_string("llama3"));
    json_object_set_new(r, "factor", json_float(c->rope_factor));
    json_object_set_new(r, "low_freq_factor", json_float(c->rope_low_freq_factor));
    json_object_set_new(r, "high_freq_factor", json_float(c->rope_high_freq_factor));
    json_object_set_new(r, "original_max_position_embeddings", json_integer(c->rope_orig_ctx));
    return r;
}

static json_t *config_json(const mf_config *c, const char *torch_dtype) {
    json_t *o = json_object(), *archs = json_array();
    json_array_append_new(archs, json_string(arch_class(c->arch)));
    json_object_set_new(o, "architectures", archs);
    json_object_set_new(o, "model_type", json_string(mf_arch_name(c->arch)));
    json_object_set_new(o, "hidden_size", json_integer(c->dim));
    json_object_set_new(o, "intermediate_size", json_integer(c->ffn_dim));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_seq_len));
    json_object_set_new(o, "rms_norm_eps", json_float(c->norm_eps));
    json_object_set_new(o, "rope_theta", json_float(c->rope_theta));
    json_object_set_new(o, "rope_scaling", rope_scaling_json(c));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tied_embeddings));
    if (c->arch != MF_ARCH_QWEN2) json_object_set_new(o, "attention_bias", json_boolean(c->qkv_bias));
    json_object_set_new(o, "mlp_bias", json_false());
    if (c->arch != MF_ARCH_LLAMA)
        json_object_set_new(o, "sliding_window", c->sliding_window > 0 ? json_integer(c->sliding_window) : json_null());
    if (c->arch == MF_ARCH_QWEN2) json_object_set_new(o, "use_sliding_window", json_boolean(c->sliding_window > 0));
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "bos_token_id", json_integer(c->bos_id));
    json_object_set_new(o, "eos_token_id", c->eos_id >= 0 ? json_integer(c->eos_id) : json_null());
    json_object_set_new(o, "torch_dtype", json_string(torch_dtype));
    json_object_set_new(o, "use_cache", json_true());
    return o;
}

/* config.json text (malloc'ed), or NULL with err naming path. */
static char *config_text(const char *path, const mf_config *c, const char *torch_dtype, const char *extra_json, mf_err *err) {
    if (mf_config_validate(c, path, err) != 0 || check_expressible(path, c, err) != 0) return NULL;
    if (!torch_dtype || (strcmp(torch_dtype, "float32") && strcmp(torch_dtype, "bfloat16") && strcmp(torch_dtype, "float16"))) {
        mf_err_set(err, "%s: torch_dtype '%s' is not float32, bfloat16 or float16", path, torch_dtype ? torch_dtype : "(null)");
        return NULL;
    }
    json_t *o = config_json(c, torch_dtype);
    if (extra_json) {
        json_error_t je;
        json_t *x = json_loads(extra_json, 0, &je);
        if (!json_is_object(x)) {
            mf_err_set(err, "%s: extra JSON is not an object: %s", path, x ? "other JSON value" : je.text);
            json_decref(x);
            json_decref(o);
            return NULL;
        }
        json_object_update(o, x);
        json_decref(x);
    }
    int prec = needs_17_digits(o) ? 17 : 15;
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(prec));
    json_decref(o);
    char *r = mf_strdup(s);
    free(s);
    return r;
}

int mf_hf_write_config(const char *path, const mf_config *c, const char *torch_dtype, const char *extra_json, mf_err *err) {
    char *text = config_text(path, c, torch_dtype, extra_json, err);
    if (!text) return -1;
    int rc = write_text(path, text, err);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------------- */
/* model.safetensors.index.json */

static char *index_text(const char *path, const char *const *names, const char *const *files, int n, uint64_t total_size,
                        mf_err *err) {
    if (n <= 0 || !names || !files) {
        mf_err_set(err, "%s: an index needs at least one tensor", path);
        return NULL;
    }
    json_t *o = json_object(), *meta = json_object(), *wm = json_object();
    json_object_set_new(meta, "total_size", json_integer((json_int_t)total_size));
    json_object_set_new(o, "metadata", meta);
    json_object_set_new(o, "weight_map", wm);
    for (int i = 0; i < n; i++) {
        const char *bad = !names[i] || !names[i][0] ? "has no name"
                          : !files[i] || !files[i][0] || strchr(files[i], '/') ? "has no plain shard file name"
                          : json_object_get(wm, names[i]) ? "appears twice" : NULL;
        if (!bad && json_object_set_new(wm, names[i], json_string(files[i])) != 0) bad = "is not valid UTF-8";
        if (bad) {
            mf_err_set(err, "%s: tensor #%d '%s' %s", path, i, names[i] ? names[i] : "", bad);
            json_decref(o);
            return NULL;
        }
    }
    char *s = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    char *r = mf_strdup(s);
    free(s);
    return r;
}

int mf_hf_write_index(const char *path, const char *const *names, const char *const *files, int n, uint64_t total_size,
                      mf_err *err) {
    char *text = index_text(path, names, files, n, total_size, err);
    if (!text) return -1;
    int rc = write_text(path, text, err);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------------- */
/* Whole directory */

void mf_hf_shard_name(char *buf, size_t cap, int i, int k) { snprintf(buf, cap, "model-%05d-of-%05d.safetensors", i, k); }

int mf_hf_shard_plan(const mf_tensor_ref *t, int n, const char *dtype, size_t max_shard_bytes, int *shard_of, mf_err *err) {
    if (check_refs("shard plan", t, n, dtype, err) != 0) return -1;
    int k = 0;
    uint64_t cur = 0;
    for (int i = 0; i < n; i++) {
        uint64_t nb = mf_st_tensor_bytes(&t[i], dtype);
        if (i == 0 || (max_shard_bytes > 0 && cur + nb > max_shard_bytes)) { k++; cur = 0; }
        cur += nb;
        shard_of[i] = k - 1;
    }
    return k > 0 ? k : 1;
}

static const mf_tensor_ref *find_ref(const mf_tensor_ref *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return &t[i];
    return NULL;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && o < cap; i++) o += (size_t)snprintf(buf + o, cap - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Tensor `name` is given with shape [d0] (d1 == 0) or [d0][d1]. */
static int expect_tensor(const char *dir, const mf_tensor_ref *t, int n, const char *name, int64_t d0, int64_t d1, mf_err *err) {
    const mf_tensor_ref *r = find_ref(t, n, name);
    if (!r) return mf_err_set(err, "%s: tensor '%s' is missing", dir, name);
    int64_t want[2] = {d0, d1};
    int nd = d1 ? 2 : 1;
    if (r->ndim != nd || r->shape[0] != d0 || (nd == 2 && r->shape[1] != d1)) {
        char got_s[96], want_s[96];
        shape_str(got_s, sizeof got_s, r->ndim, r->shape);
        shape_str(want_s, sizeof want_s, nd, want);
        return mf_err_set(err, "%s: tensor '%s' has shape %s, the config needs %s", dir, name, got_s, want_s);
    }
    return 0;
}

/* Every tensor the config needs is there with its shape; lm_head matches tie_word_embeddings. */
static int check_model_tensors(const char *dir, const mf_config *c, const mf_tensor_ref *t, int n, mf_err *err) {
    int64_t D = c->dim, F = c->ffn_dim, V = c->vocab_size;
    int64_t Q = (int64_t)c->n_heads * c->head_dim, KV = (int64_t)c->n_kv_heads * c->head_dim;
    if (expect_tensor(dir, t, n, "model.embed_tokens.weight", V, D, err) || expect_tensor(dir, t, n, "model.norm.weight", D, 0, err))
        return -1;
    int has_head = find_ref(t, n, "lm_head.weight") != NULL;
    if (c->tied_embeddings && has_head)
        return mf_err_set(err, "%s: tensor 'lm_head.weight' given but the config ties the embeddings", dir);
    if (!c->tied_embeddings && expect_tensor(dir, t, n, "lm_head.weight", V, D, err)) return -1;
    static const struct { const char *suffix; char d0, d1; } LAYER[] = {
        {"input_layernorm.weight", 'D', 0}, {"self_attn.q_proj.weight", 'Q', 'D'}, {"self_attn.k_proj.weight", 'K', 'D'},
        {"self_attn.v_proj.weight", 'K', 'D'}, {"self_attn.o_proj.weight", 'D', 'Q'}, {"post_attention_layernorm.weight", 'D', 0},
        {"mlp.gate_proj.weight", 'F', 'D'}, {"mlp.up_proj.weight", 'F', 'D'}, {"mlp.down_proj.weight", 'D', 'F'},
        {"self_attn.q_proj.bias", 'Q', 0}, {"self_attn.k_proj.bias", 'K', 0}, {"self_attn.v_proj.bias", 'K', 0},
    };
    int n_kinds = c->qkv_bias ? 12 : 9;
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < n_kinds; k++) {
            char name[160];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, LAYER[k].suffix);
            int64_t d[2];
            for (int j = 0; j < 2; j++) {
                char s = j ? LAYER[k].d1 : LAYER[k].d0;
                d[j] = s == 'D' ? D : s == 'F' ? F : s == 'Q' ? Q : s == 'K' ? KV : 0;
            }
            if (expect_tensor(dir, t, n, name, d[0], d[1], err)) return -1;
        }
    return 0;
}

static const char *torch_dtype_of(const char *dtype) {
    return strcmp(dtype, "BF16") == 0 ? "bfloat16" : strcmp(dtype, "F16") == 0 ? "float16" : "float32";
}

static int ensure_dir(const char *dir, mf_err *err) {
    if (mkdir(dir, 0755) == 0) return 0;
    struct stat st;
    if (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    if (errno == EEXIST) return mf_err_set(err, "%s: exists and is not a directory", dir);
    return mf_err_set(err, "%s: cannot create directory: %s", dir, strerror(errno));
}

/* Is `name` "model-NNNNN-of-KKKKK.safetensors" with KKKKK != keep_k? */
static int stale_shard(const char *name, int keep_k) {
    int i, k, len = 0;
    if (sscanf(name, "model-%5d-of-%5d.safetensors%n", &i, &k, &len) != 2 || len != (int)strlen(name)) return 0;
    return strlen(name) == strlen("model-00001-of-00001.safetensors") && k != keep_k;
}

/* Remove what an earlier write left that the new layout (k shards) does not overwrite. */
static void remove_stale(const char *dir, int k) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, k > 1 ? "model.safetensors" : "model.safetensors.index.json");
    unlink(p);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (stale_shard(e->d_name, k > 1 ? k : 0)) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
}

int mf_hf_prepare_dir(const char *dir, int n_shards, mf_err *err) {
    if (n_shards < 1) return mf_err_set(err, "%s: %d shards requested", dir, n_shards);
    if (ensure_dir(dir, err) != 0) return -1;
    remove_stale(dir, n_shards);
    return 0;
}

/* The files of one directory write: final paths and their temporaries. */
typedef struct out_files {
    int n;
    char **path, **tmp;
} out_files;

static int out_add(out_files *o, const char *dir, const char *name) {
    o->path = mf_realloc(o->path, (size_t)(o->n + 1) * sizeof *o->path);
    o->tmp = mf_realloc(o->tmp, (size_t)(o->n + 1) * sizeof *o->tmp);
    size_t cap = strlen(dir) + strlen(name) + 2;
    o->path[o->n] = mf_malloc(cap);
    snprintf(o->path[o->n], cap, "%s/%s", dir, name);
    o->tmp[o->n] = tmp_name(o->path[o->n]);
    return o->n++;
}

static void out_free(out_files *o, int unlink_tmps) {
    for (int i = 0; i < o->n; i++) {
        if (unlink_tmps) unlink(o->tmp[i]);
        free(o->path[i]);
        free(o->tmp[i]);
    }
    free(o->path);
    free(o->tmp);
}

/* Shards (k of them) into temporaries; index too when k > 1. */
static int write_shards_tmp(out_files *o, const char *dir, const mf_tensor_ref *t, int n, const char *dtype, const int *shard_of,
                            int k, mf_err *err) {
    mf_tensor_ref *sel = mf_malloc((size_t)(n > 0 ? n : 1) * sizeof *sel);
    const char **files = mf_malloc((size_t)(n > 0 ? n : 1) * sizeof *files);
    const char **names = mf_malloc((size_t)(n > 0 ? n : 1) * sizeof *names);
    char fname[64];
    int rc = 0;
    uint64_t total = 0;
    for (int s = 0; s < k && rc == 0; s++) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (shard_of[i] == s) sel[m++] = t[i];
        if (k > 1) mf_hf_shard_name(fname, sizeof fname, s + 1, k);
        else snprintf(fname, sizeof fname, "model.safetensors");
        int f = out_add(o, dir, fname);
        rc = st_write_tmp(o->path[f], o->tmp[f], sel, m, dtype, err);
        for (int i = 0; i < n; i++)
            if (shard_of[i] == s) files[i] = o->path[f] + strlen(dir) + 1;
    }
    if (rc == 0 && k > 1) {
        for (int i = 0; i < n; i++) {
            names[i] = t[i].name;
            total += mf_st_tensor_bytes(&t[i], dtype);
        }
        int f = out_add(o, dir, "model.safetensors.index.json");
        char *text = index_text(o->path[f], names, files, n, total, err);
        rc = text ? write_text_tmp(o->path[f], o->tmp[f], text, err) : -1;
        free(text);
    }
    free(sel);
    free(files);
    free(names);
    return rc;
}

int mf_hf_write_dir(const char *dir, const mf_config *c, const mf_tensor_ref *t, int n, const char *dtype, size_t max_shard_bytes,
                    const char *extra_json, mf_err *err) {
    if (check_refs(dir, t, n, dtype, err) != 0 || check_model_tensors(dir, c, t, n, err) != 0) return -1;
    char cpath[4096];
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    char *ctext = config_text(cpath, c, torch_dtype_of(dtype), extra_json, err);
    if (!ctext) return -1;
    int *shard_of = mf_malloc((size_t)n * sizeof *shard_of);
    int k = mf_hf_shard_plan(t, n, dtype, max_shard_bytes, shard_of, err);
    out_files o = {0};
    int rc = ensure_dir(dir, err);
    if (rc == 0) rc = write_shards_tmp(&o, dir, t, n, dtype, shard_of, k, err);
    if (rc == 0) {
        int f = out_add(&o, dir, "config.json");
        rc = write_text_tmp(o.path[f], o.tmp[f], ctext, err);
    }
    if (rc == 0) {
        remove_stale(dir, k);
        for (int i = 0; i < o.n && rc == 0; i++) rc = tmp_commit(o.path[i], o.tmp[i], err);
    }
    out_free(&o, 1);
    free(shard_of);
    free(ctext);
    return rc;
}
