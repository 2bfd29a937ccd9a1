/* gguf.c - GGUF v2/v3 reader: mmap, one validating pass, hashed lookups.
 *
 * File layout (little-endian):
 *   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x { string key | u32 vtype | value }       string = u64 len + bytes
 *   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 type | u64 offset }
 *   zero padding to `alignment` | data section (tensor offsets are relative to it)
 * Every length and count is checked against the bytes left before anything
 * is read or allocated, so a corrupt file yields an error, never a bad read. */
#include "io/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/dequant.h"
#include "util/hash.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

/* mf_err_set/prefix, as an expression the compiler knows is -1. */
#define FAIL(...) (mf_err_set(__VA_ARGS__), -1)
#define PREFIX(...) (mf_err_prefix(__VA_ARGS__), -1)

#define GGUF_MAGIC "GGUF"
#define GGUF_MAX_DEPTH 8 /* nesting limit for arrays of arrays */

/* One metadata key/value. Scalars live in num/str; arrays are copied. */
typedef struct gguf_kv {
    char *key;
    uint32_t type;      /* mf_gguf_vtype */
    uint32_t elem_type; /* arrays: element type; scalars: = type */
    uint64_t n;         /* arrays: element count; scalars: 1 */
    union {
        uint64_t u;
        int64_t i;
        double f;
    } num;     /* integer, bool and float scalars */
    char *str; /* STRING scalar, NUL-terminated */
    size_t str_len;
    void *arr;      /* numeric array [n] (aligned copy), or char *[n] for strings */
    size_t *lens;   /* string arrays: lens[n] */
    char *arena;    /* string arrays: the bytes of all strings */
    size_t raw_off; /* serialized value span in the file */
    size_t raw_len;
} gguf_kv;

/* Open-addressing string -> index table (power-of-two capacity). */
typedef struct htab {
    const char **names; /* [cap], NULL = empty */
    size_t *idx;        /* [cap] */
    size_t mask;
} htab;

struct mf_gguf {
    char *path;
    const uint8_t *map;
    size_t size;
    uint32_t version;
    uint32_t alignment;
    size_t data_off;
    gguf_kv *kvs;
    size_t n_kv;
    htab kv_index;
    mf_gguf_tensor *tensors;
    size_t n_tensors;
    htab tensor_index;
};

/* ---- hash table ---- */

static uint64_t fnv1a(const char *s) { return mf_fnv1a64(s, strlen(s), MF_FNV1A64_SEED); }

static void htab_init(htab *t, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    t->names = mf_calloc(cap, sizeof *t->names);
    t->idx = mf_calloc(cap, sizeof *t->idx);
    t->mask = cap - 1;
}

static void htab_free(htab *t) {
    free(t->names);
    free(t->idx);
}

/* Insert name -> i; returns -1 and *dup = the earlier index if name exists. */
static int htab_insert(htab *t, const char *name, size_t i, size_t *dup) {
    for (size_t s = fnv1a(name) & t->mask;; s = (s + 1) & t->mask) {
        if (!t->names[s]) {
            t->names[s] = name;
            t->idx[s] = i;
            return 0;
        }
        if (!strcmp(t->names[s], name)) {
            *dup = t->idx[s];
            return -1;
        }
    }
}

static int htab_find(const htab *t, const char *name, size_t *i) {
    if (!t->names) return -1;
    for (size_t s = fnv1a(name) & t->mask; t->names[s]; s = (s + 1) & t->mask)
        if (!strcmp(t->names[s], name)) {
            *i = t->idx[s];
            return 0;
        }
    return -1;
}

/* ---- bounds-checked reader ---- */

typedef struct rd {
    const uint8_t *p;
    size_t size, pos;
    mf_err *err;
} rd;

static size_t rd_left(const rd *r) { return r->size - r->pos; }

static int need(rd *r, uint64_t n, const char *what) {
    if (n > rd_left(r))
        return FAIL(r->err, "truncated: %s needs %llu bytes at offset %zu but only %zu remain (file is %zu bytes)",
                    what, (unsigned long long)n, r->pos, rd_left(r), r->size);
    return 0;
}

static int rd_u32(rd *r, uint32_t *v, const char *what) {
    if (need(r, 4, what)) return -1;
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int rd_u64(rd *r, uint64_t *v, const char *what) {
    if (need(r, 8, what)) return -1;
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return 0;
}

/* gguf_string: u64 length + bytes; *s points into the mapping. */
static int rd_str(rd *r, const uint8_t **s, uint64_t *len, const char *what) {
    size_t at = r->pos;
    if (rd_u64(r, len, what)) return -1;
    if (*len > rd_left(r))
        return FAIL(r->err, "%s length %llu at offset %zu runs past end of file (%zu bytes remain, file is %zu bytes)",
                    what, (unsigned long long)*len, at, rd_left(r), r->size);
    *s = r->p + r->pos;
    r->pos += (size_t)*len;
    return 0;
}

/* A name (key or tensor name) as a C string: no NUL bytes inside. */
static int rd_name(rd *r, char **out, const char *what) {
    const uint8_t *s;
    uint64_t len;
    if (rd_str(r, &s, &len, what)) return -1;
    if (memchr(s, 0, (size_t)len))
        return FAIL(r->err, "%s at offset %zu contains a NUL byte", what, r->pos - (size_t)len);
    char *c = mf_malloc((size_t)len + 1);
    memcpy(c, s, (size_t)len);
    c[len] = 0;
    *out = c;
    return 0;
}

/* A count of items that each take >= min_each bytes must fit in what is left. */
static int check_count(rd *r, uint64_t n, size_t min_each, const char *what, const char *item) {
    if (n > rd_left(r) / min_each)
        return FAIL(
            r->err,
            "%s %llu is impossible: %zu bytes remain and each %s takes at least %zu (file truncated or corrupt)", what,
            (unsigned long long)n, rd_left(r), item, min_each);
    return 0;
}

/* ---- value types ---- */

static const char *vtype_name(uint32_t t) {
    static const char *names[] = {"UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",  "FLOAT32",
                                  "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "INVALID";
}

/* Bytes of a fixed-size scalar; 0 for STRING/ARRAY; -1 if t is not a type. */
static int vtype_size(uint32_t t) {
    static const int sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sizes / sizeof sizes[0] ? sizes[t] : -1;
}

static int is_int_type(uint32_t t) { return t <= MF_GGUF_INT32 || t == MF_GGUF_UINT64 || t == MF_GGUF_INT64; }
static int is_signed_type(uint32_t t) {
    return t == MF_GGUF_INT8 || t == MF_GGUF_INT16 || t == MF_GGUF_INT32 || t == MF_GGUF_INT64;
}

/* Minimum serialized size of one value of type t (for count sanity checks). */
static uint64_t vtype_min_size(uint32_t t) {
    if (t == MF_GGUF_STRING) return 8;
    if (t == MF_GGUF_ARRAY) return 12;
    return (uint64_t)vtype_size(t);
}

static int check_vtype(rd *r, uint32_t t, size_t at) {
    if (vtype_size(t) < 0) return FAIL(r->err, "unknown value type %u at offset %zu", t, at);
    return 0;
}

/* Decode a fixed-size scalar at p into kv->num (little-endian host). */
static void load_scalar(gguf_kv *kv, const uint8_t *p) {
    uint64_t u = 0;
    memcpy(&u, p, (size_t)vtype_size(kv->type));
    switch (kv->type) {
    case MF_GGUF_INT8: kv->num.i = (int8_t)u; break;
    case MF_GGUF_INT16: kv->num.i = (int16_t)u; break;
    case MF_GGUF_INT32: kv->num.i = (int32_t)u; break;
    case MF_GGUF_FLOAT32: {
        float f;
        memcpy(&f, &u, 4);
        kv->num.f = f;
        break;
    }
    default: kv->num.u = u; /* unsigned, bool; INT64 and FLOAT64 keep their bits */
    }
}

static int check_bools(rd *r, const uint8_t *p, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (p[i] > 1) return FAIL(r->err, "invalid BOOL value %u at offset %zu", p[i], (size_t)(p + i - r->p));
    return 0;
}

/* Walk (validate, store nothing) an array body: u32 elem type, u64 n, items. */
static int skip_array(rd *r, int depth) {
    uint32_t et;
    uint64_t n;
    size_t at = r->pos;
    if (depth > GGUF_MAX_DEPTH) return FAIL(r->err, "arrays nested deeper than %d at offset %zu", GGUF_MAX_DEPTH, at);
    if (rd_u32(r, &et, "array element type") || check_vtype(r, et, at)) return -1;
    if (rd_u64(r, &n, "array length")) return -1;
    if (n > rd_left(r) / vtype_min_size(et))
        return FAIL(r->err,
                    "array length %llu at offset %zu exceeds the %zu bytes left in the file (truncated or corrupt)",
                    (unsigned long long)n, at + 4, rd_left(r));
    if (et == MF_GGUF_STRING) {
        for (uint64_t i = 0; i < n; i++) {
            const uint8_t *s;
            uint64_t len;
            if (rd_str(r, &s, &len, "string")) return -1;
        }
    } else if (et == MF_GGUF_ARRAY) {
        for (uint64_t i = 0; i < n; i++)
            if (skip_array(r, depth + 1)) return -1;
    } else {
        if (et == MF_GGUF_BOOL && check_bools(r, r->p + r->pos, n)) return -1;
        r->pos += (size_t)(n * (uint64_t)vtype_size(et));
    }
    return 0;
}

/* String array: validate all lengths, then copy into one arena. */
static int load_str_array(rd *r, gguf_kv *kv) {
    size_t start = r->pos, total = 0;
    for (uint64_t i = 0; i < kv->n; i++) {
        const uint8_t *s;
        uint64_t len;
        if (rd_str(r, &s, &len, "string")) return PREFIX(r->err, "element %llu", (unsigned long long)i);
        total += (size_t)len;
    }
    char **ptrs = mf_malloc((size_t)kv->n * sizeof *ptrs);
    kv->lens = mf_malloc((size_t)kv->n * sizeof *kv->lens);
    kv->arena = mf_malloc(total + (size_t)kv->n);
    kv->arr = ptrs;
    char *dst = kv->arena;
    r->pos = start;
    for (uint64_t i = 0; i < kv->n; i++) {
        uint64_t len;
        memcpy(&len, r->p + r->pos, 8);
        memcpy(dst, r->p + r->pos + 8, (size_t)len);
        dst[len] = 0;
        ptrs[i] = dst;
        kv->lens[i] = (size_t)len;
        dst += len + 1;
        r->pos += 8 + (size_t)len;
    }
    return 0;
}

static int load_array(rd *r, gguf_kv *kv) {
    size_t at = r->pos;
    if (rd_u32(r, &kv->elem_type, "array element type") || check_vtype(r, kv->elem_type, at)) return -1;
    if (rd_u64(r, &kv->n, "array length")) return -1;
    if (kv->n > rd_left(r) / vtype_min_size(kv->elem_type))
        return FAIL(r->err,
                    "%s array length %llu at offset %zu exceeds the %zu bytes left in the file (truncated or "
                    "corrupt)",
                    vtype_name(kv->elem_type), (unsigned long long)kv->n, at + 4, rd_left(r));
    if (kv->elem_type == MF_GGUF_STRING) return load_str_array(r, kv);
    if (kv->elem_type == MF_GGUF_ARRAY) {
        for (uint64_t i = 0; i < kv->n; i++)
            if (skip_array(r, 1)) return PREFIX(r->err, "element %llu", (unsigned long long)i);
        return 0;
    }
    size_t nbytes = (size_t)kv->n * (size_t)vtype_size(kv->elem_type);
    const uint8_t *p = r->p + r->pos;
    if (kv->elem_type == MF_GGUF_BOOL && check_bools(r, p, kv->n)) return -1;
    kv->arr = mf_malloc(nbytes);
    memcpy(kv->arr, p, nbytes);
    r->pos += nbytes;
    return 0;
}

static int load_value(rd *r, gguf_kv *kv) {
    kv->elem_type = kv->type;
    kv->n = 1;
    if (kv->type == MF_GGUF_ARRAY) return load_array(r, kv);
    if (kv->type == MF_GGUF_STRING) {
        const uint8_t *s;
        uint64_t len;
        if (rd_str(r, &s, &len, "string value")) return -1;
        kv->str = mf_malloc((size_t)len + 1);
        memcpy(kv->str, s, (size_t)len);
        kv->str[len] = 0;
        kv->str_len = (size_t)len;
        return 0;
    }
    int size = vtype_size(kv->type);
    if (need(r, (uint64_t)size, vtype_name(kv->type))) return -1;
    if (kv->type == MF_GGUF_BOOL && check_bools(r, r->p + r->pos, 1)) return -1;
    load_scalar(kv, r->p + r->pos);
    r->pos += (size_t)size;
    return 0;
}

/* Room for one more element in a growing array (grows by doubling, so a
 * corrupt count never triggers a huge allocation up front). */
static void *grow(void *p, size_t n, size_t *cap, size_t elem) {
    if (n < *cap) return p;
    *cap = *cap ? 2 * *cap : 16;
    return mf_realloc(p, *cap * elem);
}

/* One key/value pair into g->kvs[g->n_kv]. */
static int load_kv(rd *r, mf_gguf *g, uint64_t i, size_t *cap) {
    g->kvs = grow(g->kvs, g->n_kv, cap, sizeof *g->kvs);
    gguf_kv *kv = &g->kvs[g->n_kv];
    memset(kv, 0, sizeof *kv);
    if (rd_name(r, &kv->key, "key")) return PREFIX(r->err, "metadata entry %llu", (unsigned long long)i);
    g->n_kv++;
    size_t at = r->pos;
    if (rd_u32(r, &kv->type, "value type") || check_vtype(r, kv->type, at)) return PREFIX(r->err, "key '%s'", kv->key);
    kv->raw_off = r->pos;
    if (load_value(r, kv)) return PREFIX(r->err, "key '%s'", kv->key);
    kv->raw_len = r->pos - kv->raw_off;
    return 0;
}

static int load_kvs(rd *r, mf_gguf *g, uint64_t n_kv) {
    /* every pair takes >= 13 bytes: key length, value type, a 1-byte value */
    if (check_count(r, n_kv, 13, "metadata count", "entry")) return -1;
    size_t cap = 0;
    for (uint64_t i = 0; i < n_kv; i++)
        if (load_kv(r, g, i, &cap)) return -1;
    htab_init(&g->kv_index, g->n_kv);
    for (size_t i = 0; i < g->n_kv; i++) {
        size_t dup;
        if (htab_insert(&g->kv_index, g->kvs[i].key, i, &dup))
            return FAIL(r->err, "duplicate metadata key '%s' (entries %zu and %zu)", g->kvs[i].key, dup, i);
    }
    return 0;
}

/* general.alignment: optional, UINT32, a power of two. */
static int load_alignment(rd *r, mf_gguf *g) {
    size_t i;
    g->alignment = MF_GGUF_DEFAULT_ALIGNMENT;
    if (htab_find(&g->kv_index, "general.alignment", &i)) return 0;
    const gguf_kv *kv = &g->kvs[i];
    if (kv->type != MF_GGUF_UINT32)
        return FAIL(r->err, "key 'general.alignment' has type %s, expected UINT32", vtype_name(kv->type));
    if (kv->num.u == 0 || (kv->num.u & (kv->num.u - 1)))
        return FAIL(r->err, "key 'general.alignment' = %llu is not a power of two", (unsigned long long)kv->num.u);
    g->alignment = (uint32_t)kv->num.u;
    return 0;
}

/* ---- tensor infos ---- */

/* Shape, type and byte size of t; its name is already set. */
static int load_tensor_shape(rd *r, mf_gguf_tensor *t) {
    uint32_t n_dims;
    if (rd_u32(r, &n_dims, "n_dims")) return -1;
    if (n_dims > 4) return FAIL(r->err, "n_dims %u exceeds the maximum of 4", n_dims);
    t->n_dims = (int)n_dims;
    int64_t count = 1;
    for (int j = 0; j < 4; j++) {
        uint64_t ne = 1;
        if ((uint32_t)j < n_dims && rd_u64(r, &ne, "ne")) return -1;
        if (ne > (uint64_t)INT64_MAX) return FAIL(r->err, "ne[%d] = %llu is too large", j, (unsigned long long)ne);
        t->ne[j] = (int64_t)ne;
        if (ne && count > INT64_MAX / (int64_t)ne)
            return FAIL(r->err, "element count overflows int64 at ne[%d] = %llu", j, (unsigned long long)ne);
        count *= (int64_t)ne;
    }
    if (rd_u32(r, &t->type, "tensor type")) return -1;
    const char *tn = mf_ggml_type_name(t->type);
    if (!tn) return FAIL(r->err, "unknown or unsupported ggml type %u", t->type);
    if (t->ne[0] % mf_ggml_block_size(t->type))
        return FAIL(r->err, "ne[0] = %lld is not a multiple of the %s block size %d", (long long)t->ne[0], tn,
                    mf_ggml_block_size(t->type));
    size_t row;
    if (mf_ggml_row_bytes(t->type, t->ne[0], &row, r->err)) return -1;
    uint64_t rows = (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3]; /* <= count: no overflow */
    if (row && rows > SIZE_MAX / row) return FAIL(r->err, "byte size overflows");
    t->nbytes = row * (size_t)rows;
    return rd_u64(r, &t->offset, "tensor data offset");
}

static int load_tensor_infos(rd *r, mf_gguf *g, uint64_t n) {
    /* every info takes >= 24 bytes: name length, n_dims, type, offset */
    if (check_count(r, n, 24, "tensor count", "tensor info")) return -1;
    size_t cap = 0;
    for (uint64_t i = 0; i < n; i++) {
        g->tensors = grow(g->tensors, g->n_tensors, &cap, sizeof *g->tensors);
        mf_gguf_tensor *t = &g->tensors[i];
        memset(t, 0, sizeof *t);
        char *name;
        if (rd_name(r, &name, "tensor name")) return PREFIX(r->err, "tensor %llu", (unsigned long long)i);
        t->name = name;
        g->n_tensors++;
        if (load_tensor_shape(r, t)) return PREFIX(r->err, "tensor '%s'", t->name);
    }
    htab_init(&g->tensor_index, g->n_tensors);
    for (size_t i = 0; i < g->n_tensors; i++) {
        size_t dup;
        if (htab_insert(&g->tensor_index, g->tensors[i].name, i, &dup))
            return FAIL(r->err, "duplicate tensor name '%s' (tensors %zu and %zu)", g->tensors[i].name, dup, i);
    }
    return 0;
}

/* Data section: after the infos, padded to the alignment; every tensor aligned and inside the file. */
static int place_tensors(rd *r, mf_gguf *g) {
    size_t a = g->alignment;
    g->data_off = r->pos + (a - r->pos % a) % a;
    if (g->n_tensors && g->data_off > r->size)
        return FAIL(r->err, "truncated: data section would start at offset %zu but the file is %zu bytes", g->data_off,
                    r->size);
    for (size_t i = 0; i < g->n_tensors; i++) {
        mf_gguf_tensor *t = &g->tensors[i];
        if (t->offset % a)
            return FAIL(r->err, "tensor '%s' data offset %llu is not a multiple of the alignment %zu", t->name,
                        (unsigned long long)t->offset, a);
        size_t room = r->size - g->data_off;
        if (t->offset > room || t->nbytes > room - t->offset)
            return FAIL(r->err,
                        "tensor '%s' data [offset %llu, %zu bytes] runs past end of file (data section %zu bytes)",
                        t->name, (unsigned long long)t->offset, t->nbytes, room);
        t->data = r->p + g->data_off + t->offset;
    }
    return 0;
}

/* ---- header ---- */

static int load_header(rd *r, mf_gguf *g, uint64_t *n_tensors, uint64_t *n_kv) {
    if (r->size < 24) return FAIL(r->err, "file is too small to be GGUF (%zu bytes)", r->size);
    if (memcmp(r->p, GGUF_MAGIC, 4))
        return FAIL(r->err, "bad magic %02x %02x %02x %02x (expected \"GGUF\"): not a GGUF file", r->p[0], r->p[1],
                    r->p[2], r->p[3]);
    r->pos = 4;
    rd_u32(r, &g->version, "version");
    if ((g->version & 0xffff) == 0 && g->version)
        return FAIL(r->err, "big-endian GGUF (version bytes 0x%08x) is not supported", g->version);
    if (g->version == 1) return FAIL(r->err, "GGUF version 1 is not supported (only versions 2 and 3)");
    if (g->version != 2 && g->version != 3)
        return FAIL(r->err, "unsupported GGUF version %u (only versions 2 and 3)", g->version);
    rd_u64(r, n_tensors, "tensor count");
    rd_u64(r, n_kv, "metadata count");
    return 0;
}

static int parse(mf_gguf *g, mf_err *err) {
    rd r = {g->map, g->size, 0, err};
    uint64_t n_tensors, n_kv;
    if (load_header(&r, g, &n_tensors, &n_kv)) return -1;
    if (check_count(&r, n_tensors, 24, "tensor count", "tensor info")) return -1; /* before the metadata */
    if (load_kvs(&r, g, n_kv) || load_alignment(&r, g)) return -1;
    if (load_tensor_infos(&r, g, n_tensors)) return -1;
    return place_tensors(&r, g);
}

/* ---- open / close ---- */

static int map_file(mf_gguf *g, mf_err *err) {
    int fd = open(g->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return FAIL(err, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        int e = errno;
        close(fd);
        return FAIL(err, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return FAIL(err, "not a regular file");
    }
    g->size = (size_t)st.st_size;
    if (g->size < 24) {
        close(fd);
        return FAIL(err, "file is too small to be GGUF (%zu bytes)", g->size);
    }
    void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return FAIL(err, "cannot mmap %zu bytes: %s", g->size, strerror(e));
    g->map = m;
    return 0;
}

/* Keep messages on one printable line: names from a corrupt file may hold control bytes. */
static void sanitize(mf_err *err) {
    if (!err) return;
    for (char *c = err->msg; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
}

mf_gguf *mf_gguf_open(const char *path, mf_err *err) {
    mf_gguf *g = mf_calloc(1, sizeof *g);
    g->path = mf_strdup(path);
    if (map_file(g, err) || parse(g, err)) {
        mf_err_prefix(err, "%s", path);
        sanitize(err);
        mf_gguf_close(g);
        return NULL;
    }
    return g;
}

static void free_kv(gguf_kv *kv) {
    free(kv->key);
    free(kv->str);
    free(kv->arr);
    free(kv->lens);
    free(kv->arena);
}

void mf_gguf_close(mf_gguf *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_kv; i++) free_kv(&g->kvs[i]);
    free(g->kvs);
    for (size_t i = 0; i < g->n_tensors; i++) free((char *)g->tensors[i].name);
    free(g->tensors);
    htab_free(&g->kv_index);
    htab_free(&g->tensor_index);
    if (g->map) munmap((void *)g->map, g->size);
    free(g->path);
    free(g);
}

/* ---- accessors ---- */

const char *mf_gguf_path(const mf_gguf *g) { return g->path; }
uint32_t mf_gguf_version(const mf_gguf *g) { return g->version; }
uint32_t mf_gguf_alignment(const mf_gguf *g) { return g->alignment; }
size_t mf_gguf_data_offset(const mf_gguf *g) { return g->data_off; }
size_t mf_gguf_file_size(const mf_gguf *g) { return g->size; }
size_t mf_gguf_n_tensors(const mf_gguf *g) { return g->n_tensors; }

const mf_gguf_tensor *mf_gguf_tensor_at(const mf_gguf *g, size_t i) { return i < g->n_tensors ? &g->tensors[i] : NULL; }

const mf_gguf_tensor *mf_gguf_find_tensor(const mf_gguf *g, const char *name) {
    size_t i;
    return htab_find(&g->tensor_index, name, &i) ? NULL : &g->tensors[i];
}

size_t mf_gguf_n_kv(const mf_gguf *g) { return g->n_kv; }

const char *mf_gguf_kv_key(const mf_gguf *g, size_t i) { return i < g->n_kv ? g->kvs[i].key : NULL; }

static const gguf_kv *find_kv(const mf_gguf *g, const char *key) {
    size_t i;
    return htab_find(&g->kv_index, key, &i) ? NULL : &g->kvs[i];
}

int mf_gguf_has_key(const mf_gguf *g, const char *key) { return find_kv(g, key) != NULL; }

int mf_gguf_kv_type(const mf_gguf *g, const char *key, uint32_t *elem_type, size_t *n) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) return -1;
    if (elem_type) *elem_type = kv->elem_type;
    if (n) *n = (size_t)kv->n;
    return (int)kv->type;
}

int mf_gguf_kv_raw(const mf_gguf *g, size_t i, uint32_t *type, const void **bytes, size_t *nbytes) {
    if (i >= g->n_kv) return -1;
    *type = g->kvs[i].type;
    *bytes = g->map + g->kvs[i].raw_off;
    *nbytes = g->kvs[i].raw_len;
    return 0;
}

/* The key, or NULL with "<path>: key '<key>' not found" in err. */
static const gguf_kv *need_kv(const mf_gguf *g, const char *key, mf_err *err) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) mf_err_set(err, "%s: key '%s' not found", g->path, key);
    return kv;
}

static int wrong_type(const mf_gguf *g, const gguf_kv *kv, const char *want, mf_err *err) {
    if (kv->type == MF_GGUF_ARRAY)
        return FAIL(err, "%s: key '%s' has type ARRAY[%s], expected %s", g->path, kv->key, vtype_name(kv->elem_type),
                    want);
    return FAIL(err, "%s: key '%s' has type %s, expected %s", g->path, kv->key, vtype_name(kv->type), want);
}

/* Integer key as a signed range check: value must be in [lo, hi]. */
static int get_int(const mf_gguf *g, const char *key, int64_t lo, uint64_t hi, int *neg, uint64_t *mag,
                   const char *want, mf_err *err) {
    const gguf_kv *kv = need_kv(g, key, err);
    if (!kv) return -1;
    if (!is_int_type(kv->type)) return wrong_type(g, kv, want, err);
    *neg = is_signed_type(kv->type) && kv->num.i < 0;
    *mag = *neg ? (uint64_t)0 - (uint64_t)kv->num.i : kv->num.u;
    int fits = *neg ? (lo < 0 && *mag <= (uint64_t)0 - (uint64_t)lo) : *mag <= hi;
    if (!fits) {
        if (*neg)
            return FAIL(err, "%s: key '%s' value %lld does not fit in %s", g->path, key, (long long)kv->num.i, want);
        return FAIL(err, "%s: key '%s' value %llu does not fit in %s", g->path, key, (unsigned long long)*mag, want);
    }
    return 0;
}

int mf_gguf_get_u32(const mf_gguf *g, const char *key, uint32_t *out, mf_err *err) {
    int neg;
    uint64_t m;
    if (get_int(g, key, 0, UINT32_MAX, &neg, &m, "uint32", err)) return -1;
    *out = (uint32_t)m;
    return 0;
}

int mf_gguf_get_i32(const mf_gguf *g, const char *key, int32_t *out, mf_err *err) {
    int neg;
    uint64_t m;
    if (get_int(g, key, INT32_MIN, INT32_MAX, &neg, &m, "int32", err)) return -1;
    *out = neg ? (int32_t)(0 - (int64_t)m) : (int32_t)m;
    return 0;
}

int mf_gguf_get_u64(const mf_gguf *g, const char *key, uint64_t *out, mf_err *err) {
    int neg;
    uint64_t m;
    if (get_int(g, key, 0, UINT64_MAX, &neg, &m, "uint64", err)) return -1;
    *out = m;
    return 0;
}

int mf_gguf_get_i64(const mf_gguf *g, const char *key, int64_t *out, mf_err *err) {
    int neg;
    uint64_t m;
    if (get_int(g, key, INT64_MIN, INT64_MAX, &neg, &m, "int64", err)) return -1;
    *out = neg ? (int64_t)(0 - m) : (int64_t)m;
    return 0;
}

int mf_gguf_get_f64(const mf_gguf *g, const char *key, double *out, mf_err *err) {
    const gguf_kv *kv = need_kv(g, key, err);
    if (!kv) return -1;
    if (kv->type != MF_GGUF_FLOAT32 && kv->type != MF_GGUF_FLOAT64) return wrong_type(g, kv, "FLOAT32 or FLOAT64", err);
    *out = kv->num.f;
    return 0;
}

int mf_gguf_get_f32(const mf_gguf *g, const char *key, float *out, mf_err *err) {
    double d;
    if (mf_gguf_get_f64(g, key, &d, err)) return -1;
    *out = (float)d;
    return 0;
}

int mf_gguf_get_bool(const mf_gguf *g, const char *key, int *out, mf_err *err) {
    const gguf_kv *kv = need_kv(g, key, err);
    if (!kv) return -1;
    if (kv->type != MF_GGUF_BOOL) return wrong_type(g, kv, "BOOL", err);
    *out = kv->num.u != 0;
    return 0;
}

int mf_gguf_get_str_len(const mf_gguf *g, const char *key, const char **out, size_t *len, mf_err *err) {
    const gguf_kv *kv = need_kv(g, key, err);
    if (!kv) return -1;
    if (kv->type != MF_GGUF_STRING) return wrong_type(g, kv, "STRING", err);
    *out = kv->str;
    if (len) *len = kv->str_len;
    return 0;
}

int mf_gguf_get_str(const mf_gguf *g, const char *key, const char **out, mf_err *err) {
    return mf_gguf_get_str_len(g, key, out, NULL, err);
}

/* The array key with element type t (or t2), else an error. */
static const gguf_kv *need_array(const mf_gguf *g, const char *key, uint32_t t, uint32_t t2, const char *want,
                                 mf_err *err) {
    const gguf_kv *kv = need_kv(g, key, err);
    if (!kv) return NULL;
    if (kv->type != MF_GGUF_ARRAY || (kv->elem_type != t && kv->elem_type != t2)) {
        wrong_type(g, kv, want, err);
        return NULL;
    }
    return kv;
}

int mf_gguf_get_str_array_lens(const mf_gguf *g, const char *key, const char *const **out, const size_t **lens,
                               size_t *n, mf_err *err) {
    const gguf_kv *kv = need_array(g, key, MF_GGUF_STRING, MF_GGUF_STRING, "ARRAY[STRING]", err);
    if (!kv) return -1;
    static const char *const empty_strs[1] = {NULL};
    static const size_t empty_lens[1] = {0};
    *out = kv->arr ? (const char *const *)kv->arr : empty_strs;
    if (lens) *lens = kv->lens ? kv->lens : empty_lens;
    *n = (size_t)kv->n;
    return 0;
}

int mf_gguf_get_str_array(const mf_gguf *g, const char *key, const char *const **out, size_t *n, mf_err *err) {
    return mf_gguf_get_str_array_lens(g, key, out, NULL, n, err);
}

int mf_gguf_get_f32_array(const mf_gguf *g, const char *key, const float **out, size_t *n, mf_err *err) {
    const gguf_kv *kv = need_array(g, key, MF_GGUF_FLOAT32, MF_GGUF_FLOAT32, "ARRAY[FLOAT32]", err);
    if (!kv) return -1;
    static const float empty[1] = {0};
    *out = kv->arr ? kv->arr : empty;
    *n = (size_t)kv->n;
    return 0;
}

int mf_gguf_get_i32_array(const mf_gguf *g, const char *key, const int32_t **out, size_t *n, mf_err *err) {
    const gguf_kv *kv = need_array(g, key, MF_GGUF_INT32, MF_GGUF_UINT32, "ARRAY[INT32] or ARRAY[UINT32]", err);
    if (!kv) return -1;
    if (kv->elem_type == MF_GGUF_UINT32) {
        const uint32_t *u = kv->arr;
        for (uint64_t i = 0; i < kv->n; i++)
            if (u[i] > INT32_MAX)
                return FAIL(err, "%s: key '%s' element %llu = %u does not fit in int32", g->path, key,
                            (unsigned long long)i, u[i]);
    }
    static const int32_t empty[1] = {0};
    *out = kv->arr ? kv->arr : empty;
    *n = (size_t)kv->n;
    return 0;
}

/* ---- vocabulary-only copy ---- */

int mf_gguf_write_vocab(const mf_gguf *g, const char *dst, mf_err *err) {
    FILE *f = fopen(dst, "wb");
    if (!f) return FAIL(err, "%s: cannot create: %s", dst, strerror(errno));
    uint64_t n_kv = 0;
    for (size_t i = 0; i < g->n_kv; i++)
        n_kv += !strncmp(g->kvs[i].key, "tokenizer.", 10) || !strcmp(g->kvs[i].key, "general.architecture");
    uint32_t version = 3;
    uint64_t n_tensors = 0;
    int ok = fwrite(GGUF_MAGIC, 1, 4, f) == 4 && fwrite(&version, 4, 1, f) == 1 && fwrite(&n_tensors, 8, 1, f) == 1 &&
             fwrite(&n_kv, 8, 1, f) == 1;
    for (size_t i = 0; ok && i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kvs[i];
        if (strncmp(kv->key, "tokenizer.", 10) && strcmp(kv->key, "general.architecture")) continue;
        uint64_t len = strlen(kv->key);
        ok = fwrite(&len, 8, 1, f) == 1 && fwrite(kv->key, 1, (size_t)len, f) == len && fwrite(&kv->type, 4, 1, f) == 1 &&
             fwrite(g->map + kv->raw_off, 1, kv->raw_len, f) == kv->raw_len;
    }
    int en = errno;
    if (fclose(f) != 0 && ok) ok = 0, en = errno;
    if (!ok) {
        unlink(dst);
        return FAIL(err, "%s: cannot write: %s", dst, strerror(en));
    }
    return 0;
}
