#include "io/source.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/dequant.h"
#include "io/safetensors.h"
#include "util/mmapfile.h"

const char *mf_format_name(mf_format f) {
    switch (f) {
    case MF_FMT_HF: return "hf-safetensors";
    case MF_FMT_GGUF: return "gguf";
    case MF_FMT_LLAMA2C: return "llama2c";
    }
    return "?";
}

static int has_gguf_magic(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[4] = {0};
    size_t n = fread(m, 1, 4, f);
    fclose(f);
    return n == 4 && memcmp(m, "GGUF", 4) == 0;
}

mf_source *mf_source_open(const char *path, mf_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        mf_err_set(err, "%s: no such file or directory", path);
        return NULL;
    }
    mf_source *s = mf_calloc(1, sizeof *s);
    s->path = mf_strdup(path);
    int rc;
    if (S_ISDIR(st.st_mode)) rc = mf_hf_open(s, path, err);
    else if (has_gguf_magic(path)) rc = mf_gguf_model_open(s, path, err);
    else rc = mf_llama2c_open(s, path, err);
    if (rc == 0) rc = mf_config_validate(&s->cfg, path, err);
    s->mapped = 1; /* safetensors, GGUF, llama2.c: all read through mmap */
    if (rc != 0) {
        mf_source_close(s);
        return NULL;
    }
    return s;
}

void mf_source_close(mf_source *s) {
    if (!s) return;
    if (s->close) s->close(s);
    free(s->tokenizer_ref);
    free(s->tokenizer_refused);
    free(s->path);
    free(s);
}

int mf_source_has(const mf_source *s, const char *name) {
    mf_raw_tensor raw;
    return s->lookup(s, name, &raw) == 0;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && o < cap; i++) o += (size_t)snprintf(buf + o, cap - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Rows of a [n_heads*hd][cols] matrix of `esize`-byte elements from interleaved RoPE order
 * (pairs 2j, 2j+1) to rotate-half order (j, j + hd/2): hf[h*hd + t*hd/2 + j] = src[h*hd + 2j + t]. */
void mf_unpermute_rope_rows(void *w, size_t esize, int n_heads, int64_t rows, int64_t cols) {
    int64_t hd = rows / n_heads;
    size_t row = (size_t)cols * esize;
    char *tmp = mf_malloc((size_t)hd * row);
    for (int h = 0; h < n_heads; h++) {
        char *blk = (char *)w + (size_t)h * (size_t)hd * row;
        memcpy(tmp, blk, (size_t)hd * row);
        for (int64_t j = 0; j < hd / 2; j++)
            for (int t = 0; t < 2; t++) memcpy(blk + (size_t)(t * hd / 2 + j) * row, tmp + (size_t)(2 * j + t) * row, row);
    }
    free(tmp);
}

static int convert(const mf_source *s, const char *name, const mf_raw_tensor *raw, float *dst, int64_t numel, mf_err *err) {
    if (raw->kind == MF_RAW_ST) {
        mf_st_tensor t = {.name = (char *)name, .dtype = raw->dtype, .data = raw->data, .nbytes = raw->nbytes, .file = s->path};
        return mf_st_to_f32(&t, dst, err);
    }
    if (mf_dequantize(raw->ggml_type, raw->data, dst, numel, err) != 0)
        return mf_err_prefix(err, "%s: tensor '%s'", s->path, name);
    return 0;
}

float *mf_source_get(const mf_source *s, const char *name, int ndim, const int64_t *shape, int *owned, mf_err *err) {
    mf_raw_tensor raw;
    *owned = 0;
    if (s->lookup(s, name, &raw) != 0) {
        mf_err_set(err, "%s: missing tensor '%s'", s->path, name);
        return NULL;
    }
    int same = raw.ndim == ndim;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        numel *= shape[i];
        if (same && raw.shape[i] != shape[i]) same = 0;
    }
    if (!same) {
        char want[128], got[128];
        shape_str(want, sizeof want, ndim, shape);
        shape_str(got, sizeof got, raw.ndim, raw.shape);
        mf_err_set(err, "%s: tensor '%s' has shape %s, expected %s", s->path, name, got, want);
        return NULL;
    }
    int zero_copy = raw.kind == MF_RAW_ST && raw.dtype == MF_DT_F32 && raw.rope_heads == 0 &&
                    ((uintptr_t)raw.data % sizeof(float)) == 0;
    if (zero_copy) return (float *)raw.data;
    float *dst = mf_malloc((size_t)numel * sizeof *dst);
    if (convert(s, name, &raw, dst, numel, err) != 0) {
        free(dst);
        return NULL;
    }
    if (raw.rope_heads > 0) mf_unpermute_rope_rows(dst, sizeof *dst, raw.rope_heads, shape[0], ndim > 1 ? shape[1] : 1);
    if (s->mapped) mf_mmap_drop(raw.data, raw.nbytes); /* converted: its file pages need not stay resident */
    *owned = 1;
    return dst;
}

/* A llama2.c tokenizer.bin next to the model: tokenizer.bin, else the first tok*.bin. */
static int find_tokenizer_bin(const char *dir, char *out, size_t cap) {
    snprintf(out, cap, "%s/tokenizer.bin", dir);
    struct stat st;
    if (stat(out, &st) == 0) return 0;
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    int found = -1;
    while ((e = readdir(d)) && found != 0) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "tok", 3) == 0 && n > 4 && strcmp(e->d_name + n - 4, ".bin") == 0) {
            snprintf(out, cap, "%s/%s", dir, e->d_name);
            found = 0;
        }
    }
    closedir(d);
    return found;
}

int mf_source_tokenizer_path(const mf_source *s, const char *tok_path, char *out, size_t cap) {
    if (tok_path) { snprintf(out, cap, "%s", tok_path); return 0; }
    if (s->format == MF_FMT_GGUF) { snprintf(out, cap, "%s", s->path); return 0; }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", s->path);
    if (s->format != MF_FMT_HF) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else snprintf(dir, sizeof dir, ".");
    }
    if (find_tokenizer_bin(dir, out, cap) == 0) return 0;
    if (s->tokenizer_ref) { snprintf(out, cap, "%s", s->tokenizer_ref); return 0; }
    return -1;
}

mf_tokenizer *mf_source_load_tokenizer(const mf_source *s, const char *tok_path, mf_err *err) {
    char path[4400];
    if (mf_source_tokenizer_path(s, tok_path, path, sizeof path) != 0) {
        if (s->tokenizer_refused)
            mf_err_set(err, "%s: config.json names the tokenizer '%.512s', which is not a file inside the model "
                       "directory: not followed (give it with --tokenizer if you trust it)", s->path, s->tokenizer_refused);
        else mf_err_set(err, "%s: no tokenizer found (give --tokenizer tokenizer.bin or a GGUF file)", s->path);
        return NULL;
    }
    if (has_gguf_magic(path)) return mf_gguf_file_tokenizer(path, err);
    return mf_tok_load_llama2c(path, s->cfg.vocab_size, err);
}
