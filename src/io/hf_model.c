/* hf_model.c - Hugging Face model directory: config.json + safetensors. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "io/source.h"

#include <limits.h>
#include <stdlib.h>

/* Integer field: default `def` when absent or null; -1 with err if not an integer. */
static int get_int(json_t *root, const char *path, const char *key, int def, int *out, mf_err *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) { *out = def; return 0; }
    if (json_is_array(v) && json_array_size(v) > 0) v = json_array_get(v, 0); /* eos_token_id may be a list */
    if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) > (1 << 30))
        return mf_err_set(err, "%s: \"%s\" must be an integer", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_num(json_t *root, const char *path, const char *key, double def, float *out, mf_err *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) { *out = (float)def; return 0; }
    if (!json_is_number(v)) return mf_err_set(err, "%s: \"%s\" must be a number", path, key);
    *out = (float)json_number_value(v);
    return 0;
}

static int parse_arch(json_t *root, const char *path, mf_arch *arch, mf_err *err) {
    json_t *a = json_object_get(root, "architectures");
    const char *name = NULL;
    if (json_is_array(a) && json_is_string(json_array_get(a, 0))) name = json_string_value(json_array_get(a, 0));
    else if (json_is_string(json_object_get(root, "model_type"))) name = json_string_value(json_object_get(root, "model_type"));
    if (!name) return mf_err_set(err, "%s: no \"architectures\" or \"model_type\"", path);
    if (mf_arch_parse(name, arch) != 0)
        return mf_err_set(err, "%s: unknown architecture '%s' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)", path, name);
    return 0;
}

/* RoPE: transformers 4 / hub configs spell it as top-level "rope_theta" plus
 * "rope_scaling"; transformers 5 writes one "rope_parameters" object holding
 * rope_theta and the scaling. As in transformers, a non-null rope_scaling wins,
 * a rope_theta inside the object wins over the top-level one, a missing
 * rope_type means "default", and llama3's original_max_position_embeddings
 * defaults to max_position_embeddings. */
static int parse_rope(json_t *root, const char *path, mf_config *c, mf_err *err) {
    json_t *rs = json_object_get(root, "rope_scaling");
    if (!rs || json_is_null(rs)) rs = json_object_get(root, "rope_parameters");
    if (rs && json_is_null(rs)) rs = NULL;
    if (rs && !json_is_object(rs)) return mf_err_set(err, "%s: \"rope_scaling\" / \"rope_parameters\" must be an object", path);
    if (get_num(root, path, "rope_theta", 10000, &c->rope_theta, err)) return -1;
    if (!rs) return 0;
    if (get_num(rs, path, "rope_theta", c->rope_theta, &c->rope_theta, err)) return -1;
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    if (t && !json_is_string(t)) return mf_err_set(err, "%s: rope \"rope_type\" must be a string", path);
    const char *type = t ? json_string_value(t) : "default";
    if (strcmp(type, "default") == 0) return 0;
    if (strcmp(type, "llama3") != 0)
        return mf_err_set(err, "%s: rope_scaling type '%s' is not supported (only llama3)", path, type);
    c->rope_llama3 = 1;
    if (get_num(rs, path, "factor", 8, &c->rope_factor, err) || get_num(rs, path, "low_freq_factor", 1, &c->rope_low_freq_factor, err) ||
        get_num(rs, path, "high_freq_factor", 4, &c->rope_high_freq_factor, err) ||
        get_int(rs, path, "original_max_position_embeddings", c->max_seq_len, &c->rope_orig_ctx, err))
        return -1;
    return 0;
}

int mf_hf_parse_config(const char *path, mf_config *c, int *tie_flag, char **tok_ref, mf_err *err) {
    *tok_ref = NULL;
    *tie_flag = -1;
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) return mf_err_set(err, "%s: bad JSON: %s (line %d)", path, jerr.text, jerr.line);
    int rc = -1, attn_bias = 0;
    memset(c, 0, sizeof *c);
    if (!json_is_object(root)) { mf_err_set(err, "%s: not a JSON object", path); goto out; }
    if (parse_arch(root, path, &c->arch, err)) goto out;
    if (get_int(root, path, "hidden_size", 0, &c->dim, err) || get_int(root, path, "intermediate_size", 0, &c->ffn_dim, err) ||
        get_int(root, path, "num_hidden_layers", 0, &c->n_layers, err) ||
        get_int(root, path, "num_attention_heads", 0, &c->n_heads, err) ||
        get_int(root, path, "num_key_value_heads", c->n_heads, &c->n_kv_heads, err) ||
        get_int(root, path, "head_dim", c->n_heads > 0 ? c->dim / c->n_heads : 0, &c->head_dim, err) ||
        get_int(root, path, "vocab_size", 0, &c->vocab_size, err) ||
        get_int(root, path, "max_position_embeddings", 2048, &c->max_seq_len, err) ||
        get_num(root, path, "rms_norm_eps", 1e-6, &c->norm_eps, err) ||
        get_int(root, path, "bos_token_id", 1, &c->bos_id, err) || get_int(root, path, "eos_token_id", 2, &c->eos_id, err))
        goto out;
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    *tie_flag = json_is_boolean(tie) ? json_is_true(tie) : -1;
    json_t *ab = json_object_get(root, "attention_bias");
    attn_bias = json_is_true(ab);
    c->qkv_bias = c->arch == MF_ARCH_QWEN2 || attn_bias;
    if (json_is_true(json_object_get(root, "mlp_bias"))) { mf_err_set(err, "%s: mlp_bias = true is not supported", path); goto out; }
    json_t *act = json_object_get(root, "hidden_act");
    if (json_is_string(act) && strcmp(json_string_value(act), "silu") != 0) {
        mf_err_set(err, "%s: hidden_act '%s' is not supported (silu only)", path, json_string_value(act));
        goto out;
    }
    if (parse_rope(root, path, c, err)) goto out;
    /* Mistral: sliding_window (null = none); Qwen2: only with use_sliding_window true */
    if (c->arch == MF_ARCH_MISTRAL || (c->arch == MF_ARCH_QWEN2 && json_is_true(json_object_get(root, "use_sliding_window"))))
        if (get_int(root, path, "sliding_window", 0, &c->sliding_window, err)) goto out;
    if (c->sliding_window < 0) { mf_err_set(err, "%s: \"sliding_window\" must not be negative", path); goto out; }
    json_t *tok = json_object_get(json_object_get(root, "minifuse"), "tokenizer"); /* written by prune */
    if (json_is_string(tok) && json_string_length(tok) > 0) *tok_ref = mf_strdup(json_string_value(tok));
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int mf_hf_resolve_inside(const char *dir, const char *ref, char *out, size_t cap) {
    char rdir[PATH_MAX], joined[8200], rref[PATH_MAX];
    if (!ref[0] || !realpath(dir, rdir)) return -1;
    if (ref[0] == '/') snprintf(joined, sizeof joined, "%s", ref);
    else snprintf(joined, sizeof joined, "%s/%s", rdir, ref);
    if (!realpath(joined, rref)) return -1;
    size_t n = strlen(rdir);
    if (strncmp(rref, rdir, n) != 0 || (rref[n] != '/' && !(n == 1 && rdir[0] == '/'))) return -1;
    snprintf(out, cap, "%s", rref);
    return 0;
}

static int hf_lookup(const mf_source *s, const char *name, mf_raw_tensor *raw) {
    const mf_st_tensor *t = mf_st_find(s->impl, name);
    if (!t || t->ndim > 4) return -1;
    memset(raw, 0, sizeof *raw);
    raw->data = t->data;
    raw->nbytes = t->nbytes;
    raw->ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) raw->shape[i] = t->shape[i];
    raw->kind = MF_RAW_ST;
    raw->dtype = t->dtype;
    return 0;
}

static void hf_close(mf_source *s) { mf_st_close(s->impl); }

int mf_hf_open(mf_source *s, const char *dir, mf_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int tie_flag = -1;
    s->format = MF_FMT_HF;
    char *ref = NULL;
    if (mf_hf_parse_config(path, &s->cfg, &tie_flag, &ref, err) != 0) return -1;
    if (ref) { /* an untrusted config names a file: only inside the model directory */
        char real[4096];
        if (mf_hf_resolve_inside(dir, ref, real, sizeof real) == 0) s->tokenizer_ref = mf_strdup(real);
        else s->tokenizer_refused = mf_strdup(ref);
        free(ref);
    }
    mf_safetensors *st = mf_st_open_dir(dir, err);
    if (!st) return -1;
    s->impl = st;
    s->lookup = hf_lookup;
    s->close = hf_close;
    int has_head = mf_st_find(st, "lm_head.weight") != NULL;
    if (tie_flag == 0 && !has_head) return mf_err_set(err, "%s: tie_word_embeddings is false but tensor 'lm_head.weight' is missing", dir);
    s->cfg.tied_embeddings = !has_head;
    return 0;
}
