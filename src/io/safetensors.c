#include "io/safetensors.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/half.h"

static const struct { const char *name; mf_dtype dt; size_t size; } DTYPES[] = {
    {"F32", MF_DT_F32, 4}, {"F16", MF_DT_F16, 2}, {"BF16", MF_DT_BF16, 2}, {"F64", MF_DT_F64, 8},
    {"I64", MF_DT_I64, 8}, {"I32", MF_DT_I32, 4}, {"I16", MF_DT_I16, 2}, {"I8", MF_DT_I8, 1},
    {"U8", MF_DT_U8, 1},   {"BOOL", MF_DT_BOOL, 1},
};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

const char *mf_dtype_name(mf_dtype dt) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].dt == dt) return DTYPES[i].name;
    return "?";
}

size_t mf_dtype_size(mf_dtype dt) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].dt == dt) return DTYPES[i].size;
    return 0;
}

static int parse_dtype(const char *s, mf_dtype *dt) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strcmp(s, DTYPES[i].name) == 0) { *dt = DTYPES[i].dt; return 0; }
    return -1;
}

/* Parse one header entry into t; data points into the data section [base, base+dsize). */
static int parse_entry(const char *path, const char *name, json_t *v, const unsigned char *base,
                       size_t dsize, mf_st_tensor *t, mf_err *err) {
    json_t *jdt = json_object_get(v, "dtype"), *jsh = json_object_get(v, "shape");
    json_t *joff = json_object_get(v, "data_offsets");
    if (!json_is_string(jdt) || !json_is_array(jsh) || !json_is_array(joff) || json_array_size(joff) != 2)
        return mf_err_set(err, "%s: tensor '%s': header entry needs dtype, shape and data_offsets[2]", path, name);
    if (parse_dtype(json_string_value(jdt), &t->dtype) != 0)
        return mf_err_set(err, "%s: tensor '%s': unknown dtype '%s'", path, name, json_string_value(jdt));
    size_t nd = json_array_size(jsh);
    if (nd > 8) return mf_err_set(err, "%s: tensor '%s': %zu dimensions (max 8)", path, name, nd);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(jsh, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 || json_integer_value(d) > ((json_int_t)1 << 40))
            return mf_err_set(err, "%s: tensor '%s': bad shape entry %zu", path, name, i);
        t->shape[i] = json_integer_value(d);
        /* checked: [2^40, 2^40, 2^40] must not wrap to a small (or zero) count */
        if (__builtin_mul_overflow(numel, (uint64_t)t->shape[i], &numel) || numel > ((uint64_t)1 << 46))
            return mf_err_set(err, "%s: tensor '%s': shape too large", path, name);
    }
    json_t *jb = json_array_get(joff, 0), *je = json_array_get(joff, 1);
    if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 ||
        json_integer_value(je) < json_integer_value(jb))
        return mf_err_set(err, "%s: tensor '%s': bad data_offsets", path, name);
    uint64_t b = (uint64_t)json_integer_value(jb), e = (uint64_t)json_integer_value(je);
    if (e > dsize)
        return mf_err_set(err, "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data (%zu bytes)",
                          path, name, (unsigned long long)b, (unsigned long long)e, dsize);
    if (e - b != numel * mf_dtype_size(t->dtype))
        return mf_err_set(err, "%s: tensor '%s': %llu data bytes but shape and dtype %s need %llu", path, name,
                          (unsigned long long)(e - b), mf_dtype_name(t->dtype),
                          (unsigned long long)(numel * mf_dtype_size(t->dtype)));
    t->name = mf_strdup(name);
    t->data = base + b;
    t->nbytes = (size_t)(e - b);
    t->file = path;
    return 0;
}

/* Parse the header of an already-mapped file, appending its tensors to st. */
static int parse_file(mf_safetensors *st, const mf_mmap *m, mf_err *err) {
    const char *path = m->path;
    if (m->size < 8) return mf_err_set(err, "%s: too short for a safetensors file (%zu bytes)", path, m->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | m->data[i];
    if (hlen > m->size - 8)
        return mf_err_set(err, "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                          (unsigned long long)hlen, m->size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)m->data + 8, (size_t)hlen, 0, &jerr);
    if (!root) return mf_err_set(err, "%s: bad JSON header: %s (line %d)", path, jerr.text, jerr.line);
    if (!json_is_object(root)) {
        json_decref(root);
        return mf_err_set(err, "%s: JSON header is not an object", path);
    }
    const unsigned char *base = m->data + 8 + hlen;
    size_t dsize = m->size - 8 - (size_t)hlen;
    size_t n = json_object_size(root);
    st->tensors = mf_realloc(st->tensors, (st->n_tensors + n) * sizeof *st->tensors);
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) continue;
        if (!json_is_object(v)) { rc = mf_err_set(err, "%s: tensor '%s': header entry is not an object", path, key); break; }
        if (mf_st_find(st, key)) { rc = mf_err_set(err, "%s: tensor '%s' appears twice", path, key); break; }
        mf_st_tensor *t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof *t);
        if ((rc = parse_entry(path, key, v, base, dsize, t, err)) != 0) break;
        st->n_tensors++;
    }
    json_decref(root);
    return rc;
}

static mf_safetensors *open_files(char **paths, int n, mf_err *err) {
    mf_safetensors *st = mf_calloc(1, sizeof *st);
    st->files = mf_calloc((size_t)n, sizeof *st->files);
    for (int i = 0; i < n; i++) {
        if (mf_mmap_open(&st->files[i], paths[i], err) != 0 || (st->n_files++, parse_file(st, &st->files[i], err) != 0)) {
            mf_st_close(st);
            return NULL;
        }
    }
    return st;
}

mf_safetensors *mf_st_open_file(const char *path, mf_err *err) {
    char *p = (char *)path;
    return open_files(&p, 1, err);
}

/* Shard file names from model.safetensors.index.json's weight_map, deduplicated. */
static int index_shards(const char *dir, const char *index_path, char ***out, int *n_out, mf_err *err) {
    json_error_t jerr;
    json_t *root = json_load_file(index_path, 0, &jerr);
    if (!root) return mf_err_set(err, "%s: bad JSON: %s (line %d)", index_path, jerr.text, jerr.line);
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(root);
        return mf_err_set(err, "%s: no \"weight_map\" object", index_path);
    }
    char **names = NULL;
    int n = 0;
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v) || strchr(json_string_value(v), '/')) {
            rc = mf_err_set(err, "%s: weight_map entry '%s' is not a plain file name", index_path, key);
            break;
        }
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", dir, json_string_value(v));
        int seen = 0;
        for (int i = 0; i < n && !seen; i++) seen = strcmp(names[i], full) == 0;
        if (seen) continue;
        names = mf_realloc(names, (size_t)(n + 1) * sizeof *names);
        names[n++] = mf_strdup(full);
    }
    json_decref(root);
    if (rc == 0 && n == 0) rc = mf_err_set(err, "%s: weight_map is empty", index_path);
    *out = names;
    *n_out = n;
    return rc;
}

mf_safetensors *mf_st_open_dir(const char *dir, mf_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        return mf_st_open_file(path, err);
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    f = fopen(path, "rb");
    if (!f) {
        mf_err_set(err, "%s: neither model.safetensors nor model.safetensors.index.json found", dir);
        return NULL;
    }
    fclose(f);
    char **shards = NULL;
    int n = 0;
    mf_safetensors *st = NULL;
    if (index_shards(dir, path, &shards, &n, err) == 0) st = open_files(shards, n, err);
    for (int i = 0; i < n; i++) free(shards[i]);
    free(shards);
    return st;
}

void mf_st_close(mf_safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) mf_mmap_close(&st->files[i]);
    free(st->files);
    free(st);
}

const mf_st_tensor *mf_st_find(const mf_safetensors *st, const char *name) {
    for (size_t i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

int mf_st_to_f32(const mf_st_tensor *t, float *dst, mf_err *err) {
    size_t n = t->nbytes / mf_dtype_size(t->dtype);
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case MF_DT_F32: memcpy(dst, p, n * 4); return 0;
    case MF_DT_F16:
        for (size_t i = 0; i < n; i++) dst[i] = mf_fp16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return 0;
    case MF_DT_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = mf_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return 0;
    case MF_DT_F64:
        for (size_t i = 0; i < n; i++) { double d; memcpy(&d, p + 8 * i, 8); dst[i] = (float)d; }
        return 0;
    default:
        return mf_err_set(err, "%s: tensor '%s' has dtype %s, expected a floating-point type", t->file, t->name,
                          mf_dtype_name(t->dtype));
    }
}
