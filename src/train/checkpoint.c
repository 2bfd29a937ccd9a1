/* checkpoint.c - training checkpoints: collective parallel-HDF5 writer, serial
 * per-rank reader, latest-checkpoint discovery. Layout: docs/checkpoint_schema.md. */
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "io/h5util.h"
#include "util/fsutil.h"
#include "util/log.h"
#include "version.h"

/* Bytes per HDF5 transfer: MPI-IO counts are int, and HDF5 1.10 does not split. */
#define XFER_BYTES ((size_t)256 << 20)

/* ---------------------------------------------------------------- common */

void mf_ckpt_path(const char *dir, int64_t step, char *out, size_t cap) {
    snprintf(out, cap, "%s/ckpt-%08lld.h5", dir, (long long)step);
}

/* "ckpt-<digits>.h5" -> step; -1 for any other name. */
static int64_t name_step(const char *name) {
    if (strncmp(name, "ckpt-", 5) != 0) return -1;
    const char *p = name + 5, *q = p;
    int64_t v = 0;
    while (*q >= '0' && *q <= '9') {
        if (v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*q++ - '0');
    }
    if (q == p || strcmp(q, ".h5") != 0) return -1;
    return v;
}

/* A tensor name usable as an HDF5 link name. */
static int bad_name(const char *n) {
    size_t len = strnlen(n, 128);
    return len == 0 || len >= 128 || strchr(n, '/') || strcmp(n, ".") == 0 || strcmp(n, "..") == 0;
}

/* Read a float dataset of shape [ndim] (1 or 2 dims) in pieces of whole rows;
 * on failure why gets HDF5's reason (taken before any other HDF5 call clears it). */
static herr_t read_rows(hid_t d, float *buf, int ndim, const int64_t *shape, char why[256]) {
    hsize_t rows = (hsize_t)shape[0], cols = ndim == 2 ? (hsize_t)shape[1] : 1;
    hsize_t per = cols ? XFER_BYTES / sizeof(float) / cols : rows;
    if (per == 0) per = 1;
    snprintf(why, 256, "HDF5 error");
    if (rows * cols == 0) return 0;
    hid_t fs = H5Dget_space(d);
    herr_t rc = fs < 0 ? -1 : 0;
    for (hsize_t r = 0; r < rows && rc >= 0; r += per) {
        hsize_t n = rows - r < per ? rows - r : per;
        hsize_t start[2] = {r, 0}, count[2] = {n, cols}, len = n * cols;
        hid_t ms = H5Screate_simple(1, &len, NULL);
        rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
        if (rc >= 0 && ms >= 0) rc = H5Dread(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf + r * cols);
        if (rc < 0 || ms < 0) mf_h5_read_reason(why);
        if (ms < 0) rc = -1;
        else H5Sclose(ms);
    }
    if (fs >= 0) H5Sclose(fs);
    return rc;
}

static const char *group_of[3] = {"params", "adam_m", "adam_v"};

/* ---------------------------------------------------------------- writer */

/* One tensor as every rank learns it. */
typedef struct trec {
    char name[128];
    int32_t ndim, rank;
    int32_t moments;        /* 1: has /adam_m and /adam_v (0: a frozen tensor) */
    int64_t shape[2];
} trec;

/* Scalars rank 0 decides for everyone. */
typedef struct wnums {
    int64_t step, tokens, data_pos, adam_step, warmup, total;
    double lr, max_lr, min_lr, beta1, beta2, eps, wd;
    int32_t decay_1d, blas_threads, pp, dp, n_layers;
} wnums;

enum { S_OPTIONS, S_STUDENT, S_STUDENT_SHA, S_TEACHER, S_TEACHER_SHA, S_STATE, S_CREATED, S_PROV, S_BACKEND, S_BLAS_CORE, N_STR };
static const char *str_attr[N_STR] = {"options", "student_path", "student_sha256", "teacher_path", "teacher_sha256",
                                      "state", "created", "provenance", "backend", "blas_core"};

/* Largest model depth a /layer_stage map may describe. */
#define MAX_LAYERS (1 << 20)

typedef struct wctx {
    MPI_Comm comm;
    int rank, size, replica, n_rep;
    char *dir, *path, *tmp; /* rank 0's, on every rank */
    char *s[N_STR];
    wnums nums;
    uint64_t *rng;          /* [n_rep][4] */
    int32_t *layer_stage;   /* [nums.n_layers] rank 0's, on every rank */
    trec *all;              /* every rank's tensors, rank order */
    int n_all;
    int *wr, n_wr;          /* indices into all of the tensors in the file (replica 0's) */
    trec *f64;              /* every rank's float64 arrays (shape[0] = n), rank order */
    int n_f64, my_f64;      /* how many; index of this rank's first */
    hid_t *f64_ds;          /* [n_f64] */
    int my_first;           /* index in wr of this rank's first tensor (replica 0), else -1 */
    hid_t file, rng_ds, stage_ds;
    hid_t *ds;              /* [n_wr][3] */
} wctx;

/* This rank's inputs make sense. */
static int check_local(const char *dir, int replica, const mf_params *ps, const mf_adamw *opt,
                       const mf_train_meta *meta, mf_err *e) {
    const char *d = dir ? dir : "(no directory)";
    if (!dir || !dir[0]) return mf_err_set(e, "checkpoint: no directory given");
    if (!ps || !opt || !meta) return mf_err_set(e, "%s: checkpoint: tensors, optimizer state or metadata missing", d);
    if (meta->n_layers < 0 || meta->n_layers > MAX_LAYERS || (meta->n_layers > 0 && !meta->layer_stage))
        return mf_err_set(e, "%s: checkpoint: the layer -> stage map has %d entries", d, (int)meta->n_layers);
    for (int i = 0; i < meta->n_f64; i++)
        if (bad_name(meta->f64[i].name) || meta->f64[i].n <= 0 || !meta->f64[i].data)
            return mf_err_set(e, "%s: checkpoint: float64 array %d ('%.127s') has %lld entries", d, i,
                              meta->f64[i].name ? meta->f64[i].name : "", (long long)meta->f64[i].n);
    if (replica < 0) return mf_err_set(e, "%s: checkpoint: data-parallel replica index %d is negative", d, replica);
    if (meta->step < 0) return mf_err_set(e, "%s: checkpoint: step %lld is negative", d, (long long)meta->step);
    if (opt->n != ps->n)
        return mf_err_set(e, "%s: checkpoint: optimizer state has %d tensors, the parameter list %d", d, opt->n, ps->n);
    for (int i = 0; i < ps->n; i++) {
        const mf_param *p = &ps->p[i];
        if (bad_name(p->name)) return mf_err_set(e, "%s: checkpoint: tensor %d has an unusable name '%.127s'", d, i, p->name);
        int64_t n = p->shape[0] * (p->ndim == 2 ? p->shape[1] : 1);
        if ((p->ndim != 1 && p->ndim != 2) || p->shape[0] <= 0 || (p->ndim == 2 && p->shape[1] <= 0) ||
            (size_t)n != p->numel)
            return mf_err_set(e, "%s: checkpoint: tensor '%s' has ndim %d, shape [%lld, %lld] and %zu elements", d,
                              p->name, p->ndim, (long long)p->shape[0], (long long)p->shape[1], p->numel);
        if (opt->numel[i] != p->numel || !p->data || !opt->m[i] != !opt->v[i])
            return mf_err_set(e, "%s: checkpoint: optimizer state of tensor '%s' does not match it", d, p->name);
    }
    return 0;
}

/* Rank 0's path, scalars and strings on every rank. */
static void share_meta(wctx *w, const char *dir, const mf_adamw *opt, const mf_train_meta *m) {
    char *d = w->dir = mf_h5_bcast_str(w->comm, dir);
    wnums n = {0};
    if (w->rank == 0)
        n = (wnums){.step = m->step, .tokens = m->tokens, .data_pos = m->data_pos, .adam_step = opt->step,
                    .warmup = m->sched.warmup, .total = m->sched.total, .lr = m->lr, .max_lr = m->sched.max_lr,
                    .min_lr = m->sched.min_lr, .beta1 = opt->o.beta1, .beta2 = opt->o.beta2, .eps = opt->o.eps,
                    .wd = opt->o.weight_decay, .decay_1d = opt->o.decay_1d, .blas_threads = m->blas_threads,
                    .pp = m->pp, .dp = m->dp, .n_layers = m->n_layers};
    MPI_Bcast(&n, (int)sizeof n, MPI_BYTE, 0, w->comm);
    w->nums = n;
    w->layer_stage = mf_calloc((size_t)n.n_layers + 1, sizeof *w->layer_stage);
    if (w->rank == 0 && n.n_layers > 0) memcpy(w->layer_stage, m->layer_stage, (size_t)n.n_layers * sizeof *w->layer_stage);
    if (n.n_layers > 0) MPI_Bcast(w->layer_stage, n.n_layers, MPI_INT32_T, 0, w->comm);
    char now[32];
    mf_h5_now_iso(now);
    const char *v[N_STR] = {m->options_json, m->student, m->student_sha, m->teacher, m->teacher_sha, m->state_json, now,
                            m->provenance_json, m->backend, m->blas_core};
    for (int i = 0; i < N_STR; i++) w->s[i] = mf_h5_bcast_str(w->comm, v[i]);
    size_t cap = strlen(d) + 64;
    w->path = mf_malloc(cap);
    mf_ckpt_path(d, n.step, w->path, cap);
    w->tmp = mf_h5_tmp_name_comm(w->comm, w->path);
}

/* Every rank's replica index and RNG; rows of /rng from the lowest rank of
 * each replica. Replica indices must be 0..R-1, all used. */
static int share_rng(wctx *w, const mf_train_meta *m, mf_err *e) {
    uint64_t mine[5] = {(uint64_t)w->replica, m->rng.s[0], m->rng.s[1], m->rng.s[2], m->rng.s[3]};
    uint64_t *all = mf_malloc(sizeof(uint64_t) * 5 * (size_t)w->size);
    MPI_Allgather(mine, 5, MPI_UINT64_T, all, 5, MPI_UINT64_T, w->comm);
    int max = 0;
    for (int r = 0; r < w->size; r++)
        if ((int)all[5 * r] > max) max = (int)all[5 * r];
    if (max >= w->size) {
        free(all);
        return mf_err_set(e, "%s: data-parallel replica index %d with only %d ranks", w->path, max, w->size);
    }
    w->n_rep = max + 1;
    w->rng = mf_calloc((size_t)w->n_rep * 4, sizeof(uint64_t));
    char *seen = mf_calloc((size_t)w->n_rep, 1);
    for (int r = 0; r < w->size; r++) {
        int q = (int)all[5 * r];
        if (seen[q]++) continue;
        memcpy(w->rng + 4 * (size_t)q, all + 5 * r + 1, 4 * sizeof(uint64_t));
    }
    int rc = 0;
    for (int q = 0; q < w->n_rep && rc == 0; q++)
        if (!seen[q]) rc = mf_err_set(e, "%s: no rank holds data-parallel replica %d of %d", w->path, q, w->n_rep);
    free(seen);
    free(all);
    return rc;
}

static int cmp_name(const void *a, const void *b, void *ctx) {
    const trec *all = ctx;
    return strcmp(all[*(const int *)a].name, all[*(const int *)b].name);
}

/* Index (into sorted) of the tensor called name, -1 if none. */
static int find_sorted(const trec *all, const int *sorted, int n, const char *name) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(all[sorted[mid]].name, name);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* Gather every rank's tensor list; the file holds replica 0's, which must not
 * repeat a name; every other replica must hold exactly the same tensors. */
/* Every rank's float64 arrays (meta->f64), names unique over all ranks. */
static int share_f64(wctx *w, const mf_train_meta *m, mf_err *e) {
    int *counts = mf_malloc(sizeof(int) * (size_t)w->size), *bytes = mf_malloc(sizeof(int) * (size_t)w->size),
        *displs = mf_malloc(sizeof(int) * (size_t)w->size);
    MPI_Allgather(&m->n_f64, 1, MPI_INT, counts, 1, MPI_INT, w->comm);
    trec *mine = mf_calloc((size_t)m->n_f64 + 1, sizeof *mine);
    for (int i = 0; i < m->n_f64; i++) {
        snprintf(mine[i].name, sizeof mine[i].name, "%s", m->f64[i].name);
        mine[i].ndim = 1;
        mine[i].rank = w->rank;
        mine[i].shape[0] = m->f64[i].n;
    }
    w->n_f64 = 0;
    for (int r = 0; r < w->size; r++) {
        if (r == w->rank) w->my_f64 = w->n_f64;
        displs[r] = w->n_f64 * (int)sizeof(trec);
        bytes[r] = counts[r] * (int)sizeof(trec);
        w->n_f64 += counts[r];
    }
    w->f64 = mf_calloc((size_t)w->n_f64 + 1, sizeof(trec));
    MPI_Allgatherv(mine, m->n_f64 * (int)sizeof(trec), MPI_BYTE, w->f64, bytes, displs, MPI_BYTE, w->comm);
    free(mine); free(counts); free(bytes); free(displs);
    int rc = 0;
    for (int i = 0; i < w->n_f64 && rc == 0; i++) /* few arrays: quadratic is fine */
        for (int j = 0; j < i && rc == 0; j++)
            if (strcmp(w->f64[i].name, w->f64[j].name) == 0)
                rc = mf_err_set(e, "%s: float64 array '%s' is held by ranks %d and %d", w->path, w->f64[i].name,
                                w->f64[j].rank, w->f64[i].rank);
    w->f64_ds = mf_malloc(sizeof(hid_t) * ((size_t)w->n_f64 + 1));
    for (int i = 0; i < w->n_f64; i++) w->f64_ds[i] = H5I_INVALID_HID;
    return rc;
}

static int share_tensors(wctx *w, const mf_params *ps, const mf_adamw *opt, const int *rep_of, mf_err *e) {
    int *counts = mf_malloc(sizeof(int) * (size_t)w->size), *displs = mf_malloc(sizeof(int) * (size_t)w->size);
    MPI_Allgather(&ps->n, 1, MPI_INT, counts, 1, MPI_INT, w->comm);
    trec *mine = mf_calloc((size_t)ps->n + 1, sizeof *mine);
    for (int i = 0; i < ps->n; i++) {
        snprintf(mine[i].name, sizeof mine[i].name, "%s", ps->p[i].name);
        mine[i].ndim = ps->p[i].ndim;
        mine[i].rank = w->rank;
        mine[i].moments = opt->m[i] != NULL;
        mine[i].shape[0] = ps->p[i].shape[0];
        mine[i].shape[1] = ps->p[i].ndim == 2 ? ps->p[i].shape[1] : 0;
    }
    w->n_all = 0;
    for (int r = 0; r < w->size; r++) w->n_all += counts[r];
    int *bytes = mf_malloc(sizeof(int) * (size_t)w->size);
    for (int r = 0, off = 0; r < w->size; r++) {
        bytes[r] = counts[r] * (int)sizeof(trec);
        displs[r] = off;
        off += bytes[r];
    }
    w->all = mf_calloc((size_t)w->n_all + 1, sizeof(trec));
    MPI_Allgatherv(mine, ps->n * (int)sizeof(trec), MPI_BYTE, w->all, bytes, displs, MPI_BYTE, w->comm);
    free(mine); free(bytes); free(displs);

    /* the tensors of replica 0, in rank order */
    w->wr = mf_malloc(sizeof(int) * ((size_t)w->n_all + 1));
    w->n_wr = 0;
    w->my_first = -1;
    for (int i = 0; i < w->n_all; i++) {
        int r = w->all[i].rank;
        if (rep_of[r] != 0) continue;
        if (r == w->rank && w->my_first < 0) w->my_first = w->n_wr;
        w->wr[w->n_wr++] = i;
    }
    int *sorted = mf_malloc(sizeof(int) * ((size_t)w->n_wr + 1));
    memcpy(sorted, w->wr, sizeof(int) * (size_t)w->n_wr);
    qsort_r(sorted, (size_t)w->n_wr, sizeof(int), cmp_name, w->all);
    int rc = 0;
    for (int i = 1; i < w->n_wr && rc == 0; i++) {
        const trec *a = &w->all[sorted[i - 1]], *b = &w->all[sorted[i]];
        if (strcmp(a->name, b->name) == 0)
            rc = mf_err_set(e, "%s: tensor '%s' is held by ranks %d and %d of replica 0", w->path, a->name, a->rank,
                            b->rank);
    }
    /* other replicas: same names and shapes, each once */
    char *seen = mf_malloc((size_t)w->n_wr + 1);
    for (int q = 1; q < w->n_rep && rc == 0; q++) {
        memset(seen, 0, (size_t)w->n_wr + 1);
        int n = 0;
        for (int i = 0; i < w->n_all && rc == 0; i++) {
            int r = w->all[i].rank;
            if (rep_of[r] != q) continue;
            const trec *t = &w->all[i];
            int j = find_sorted(w->all, sorted, w->n_wr, t->name);
            const trec *z = j >= 0 ? &w->all[sorted[j]] : NULL;
            if (!z)
                rc = mf_err_set(e, "%s: tensor '%s' of rank %d (replica %d) is not held by replica 0", w->path,
                                t->name, r, q);
            else if (seen[j]++)
                rc = mf_err_set(e, "%s: tensor '%s' is held twice in replica %d", w->path, t->name, q);
            else if (z->ndim != t->ndim || z->shape[0] != t->shape[0] || z->shape[1] != t->shape[1])
                rc = mf_err_set(e, "%s: tensor '%s' has shape [%lld, %lld] on rank %d (replica %d), [%lld, %lld] on "
                                "rank %d (replica 0)", w->path, t->name, (long long)t->shape[0], (long long)t->shape[1],
                                r, q, (long long)z->shape[0], (long long)z->shape[1], z->rank);
            n++;
        }
        if (rc == 0 && n != w->n_wr)
            rc = mf_err_set(e, "%s: replica %d holds %d tensors, replica 0 holds %d", w->path, q, n, w->n_wr);
    }
    free(seen); free(sorted); free(counts);
    return rc;
}

/* ---- HDF5 objects */

static int root_attrs(wctx *w, mf_err *e) {
    char why[256];
    const wnums *n = &w->nums;
    struct { const char *k, *v; } s[N_STR + 2] = {{"format", MF_CKPT_FORMAT}, {"software_version", MF_VERSION}};
    for (int i = 0; i < N_STR; i++) s[i + 2].k = str_attr[i], s[i + 2].v = w->s[i];
    struct { const char *k; int64_t v; } iv[] = {
        {"format_version", MF_CKPT_VERSION}, {"step", n->step}, {"tokens", n->tokens}, {"data_pos", n->data_pos},
        {"lr_warmup_steps", n->warmup}, {"lr_total_steps", n->total}, {"adam_step", n->adam_step},
        {"adam_decay_1d", n->decay_1d}, {"n_tensors", w->n_wr}, {"n_ranks", w->size}, {"n_replicas", w->n_rep},
        {"blas_threads", n->blas_threads}, {"pp", n->pp}, {"dp", n->dp},
    };
    struct { const char *k; double v; } dv[] = {
        {"lr", n->lr}, {"lr_max", n->max_lr}, {"lr_min", n->min_lr}, {"adam_beta1", n->beta1},
        {"adam_beta2", n->beta2}, {"adam_eps", n->eps}, {"adam_weight_decay", n->wd},
    };
    for (size_t k = 0; k < sizeof s / sizeof *s; k++)
        if (mf_h5_attr_str(w->file, s[k].k, s[k].v, why))
            return mf_err_set(e, "%s: cannot write attribute '%s': %s", w->path, s[k].k, why);
    for (size_t k = 0; k < sizeof iv / sizeof *iv; k++)
        if (mf_h5_attr_i64(w->file, iv[k].k, iv[k].v, why))
            return mf_err_set(e, "%s: cannot write attribute '%s': %s", w->path, iv[k].k, why);
    for (size_t k = 0; k < sizeof dv / sizeof *dv; k++)
        if (mf_h5_attr_f64(w->file, dv[k].k, dv[k].v, why))
            return mf_err_set(e, "%s: cannot write attribute '%s': %s", w->path, dv[k].k, why);
    return 0;
}

/* Every rank creates every group, dataset and attribute, identically. */
static int create_all(wctx *w, mf_err *e) {
    if (root_attrs(w, e)) return -1;
    char name[160];
    for (int g = 0; g < 3; g++) {
        snprintf(name, sizeof name, "/%s", group_of[g]);
        if (mf_h5_make_group(w->file, w->path, name, e)) return -1;
    }
    for (int i = 0; i < w->n_wr; i++) {
        const trec *t = &w->all[w->wr[i]];
        hsize_t dims[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
        for (int g = 0; g < (t->moments ? 3 : 1); g++) {
            snprintf(name, sizeof name, "/%s/%s", group_of[g], t->name);
            if ((w->ds[3 * i + g] = mf_h5_make_ds(w->file, w->path, name, H5T_IEEE_F32LE, t->ndim, dims, e)) < 0)
                return -1;
        }
    }
    if (w->n_f64 > 0 && mf_h5_make_group(w->file, w->path, "/f64", e)) return -1;
    for (int i = 0; i < w->n_f64; i++) {
        hsize_t n = (hsize_t)w->f64[i].shape[0];
        snprintf(name, sizeof name, "/f64/%s", w->f64[i].name);
        if ((w->f64_ds[i] = mf_h5_make_ds(w->file, w->path, name, H5T_IEEE_F64LE, 1, &n, e)) < 0) return -1;
    }
    hsize_t rd[2] = {(hsize_t)w->n_rep, 4}, nl = (hsize_t)w->nums.n_layers;
    if (nl > 0 && (w->stage_ds = mf_h5_make_ds(w->file, w->path, "/layer_stage", H5T_STD_I32LE, 1, &nl, e)) < 0) return -1;
    return (w->rng_ds = mf_h5_make_ds(w->file, w->path, "/rng", H5T_STD_U64LE, 2, rd, e)) < 0 ? -1 : 0;
}

/* Collective (filtered datasets are written collectively): every rank goes
 * through every dataset of the file in the same order; the rank of replica 0
 * that holds a tensor writes it, the others take part with empty selections;
 * rank 0 writes the RNG table. After a failure a rank still takes part. */
static int write_data(wctx *w, const mf_params *ps, const mf_adamw *opt, const mf_train_meta *m, mf_err *e) {
    char why[256];
    int rc = 0;
    for (int j = 0; j < w->n_wr; j++) {
        const trec *t = &w->all[w->wr[j]];
        int i = w->my_first >= 0 ? j - w->my_first : -1, mine = i >= 0 && i < ps->n && t->rank == w->rank;
        float *src[3] = {NULL, NULL, NULL};
        if (mine) src[0] = ps->p[i].data, src[1] = opt->m[i], src[2] = opt->v[i];
        for (int g = 0; g < (t->moments ? 3 : 1); g++)
            if (mf_h5_write_rows(w->ds[3 * j + g], rc ? NULL : src[g], t->ndim, t->shape, why) < 0 && rc == 0)
                rc = mf_err_set(e, "%s: cannot write dataset '/%s/%s': %s", w->path, group_of[g], t->name, why);
    }
    if (mf_h5_write_coll(w->rng_ds, H5T_NATIVE_UINT64, w->rank == 0 && !rc ? w->rng : NULL, why) < 0 && rc == 0)
        rc = mf_err_set(e, "%s: cannot write dataset '/rng': %s", w->path, why);
    if (w->nums.n_layers > 0 &&
        mf_h5_write_coll(w->stage_ds, H5T_NATIVE_INT32, w->rank == 0 && !rc ? w->layer_stage : NULL, why) < 0 && rc == 0)
        rc = mf_err_set(e, "%s: cannot write dataset '/layer_stage': %s", w->path, why);
    for (int i = 0; i < w->n_f64; i++) {
        int k = i - w->my_f64, mine = w->f64[i].rank == w->rank && k >= 0 && k < m->n_f64;
        if (mf_h5_write_coll(w->f64_ds[i], H5T_NATIVE_DOUBLE, mine && !rc ? m->f64[k].data : NULL, why) < 0 && rc == 0)
            rc = mf_err_set(e, "%s: cannot write dataset '/f64/%s': %s", w->path, w->f64[i].name, why);
    }
    return rc;
}

/* Flush everything, then the completion marker (collective). */
static int mark_complete(wctx *w, mf_err *e) {
    char why[256];
    if (H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0)
        return mf_err_set(e, "%s: cannot flush %s: %s", w->path, w->tmp, mf_h5_reason(why));
    if (mf_h5_attr_i64(w->file, "complete", 1, why))
        return mf_err_set(e, "%s: cannot write attribute 'complete': %s", w->path, why);
    return 0;
}

static int close_all(wctx *w, mf_err *e) {
    for (int i = 0; w->ds && i < 3 * w->n_wr; i++) mf_h5_close_id(&w->ds[i]);
    mf_h5_close_id(&w->rng_ds);
    mf_h5_close_id(&w->stage_ds);
    for (int i = 0; w->f64_ds && i < w->n_f64; i++) mf_h5_close_id(&w->f64_ds[i]);
    return mf_h5_close_file(&w->file, w->path, w->tmp, e);
}

/* ---- listing and pruning */

typedef struct ckpt_ent {
    int64_t step;
    char *path;
} ckpt_ent;

static int ent_newest_first(const void *a, const void *b) {
    const ckpt_ent *x = a, *y = b;
    if (x->step != y->step) return x->step < y->step ? 1 : -1;
    return strcmp(x->path, y->path);
}

/* The ckpt-<step>.h5 names of dir, newest first. */
static int list_ckpts(const char *dir, ckpt_ent **out, int *n, mf_err *e) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d && errno == ENOENT) return 0; /* not created yet (rank 0 makes it): no checkpoints */
    if (!d) return mf_err_set(e, "%s: cannot list checkpoint directory: %s", dir, strerror(errno));
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        int64_t s = name_step(de->d_name);
        if (s < 0) continue;
        if (*n == cap) *out = mf_realloc(*out, sizeof **out * (size_t)(cap = cap ? 2 * cap : 16));
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        (*out)[*n].step = s;
        (*out)[*n].path = mf_malloc(len);
        snprintf((*out)[*n].path, len, "%s/%s", dir, de->d_name);
        (*n)++;
    }
    closedir(d);
    if (*n) qsort(*out, (size_t)*n, sizeof **out, ent_newest_first);
    return 0;
}

static void free_ents(ckpt_ent *v, int n) {
    for (int i = 0; i < n; i++) free(v[i].path);
    free(v);
}

static int is_complete(const char *path);

/* Delete the complete checkpoints of dir beyond the keep newest (by step),
 * except `just` (the one just written). */
static int prune(const char *dir, int keep, const char *just, mf_err *e) {
    ckpt_ent *v;
    int n, kept = 0, rc = 0;
    if (list_ckpts(dir, &v, &n, e)) return -1;
    for (int i = 0; i < n; i++) {
        if (strcmp(v[i].path, just) == 0 || !is_complete(v[i].path)) {
            kept += strcmp(v[i].path, just) == 0;
            continue;
        }
        if (kept++ < keep) continue;
        if (unlink(v[i].path) != 0 && errno != ENOENT && rc == 0)
            rc = mf_err_set(e, "%s: checkpoint written, but cannot delete the old checkpoint %s: %s", dir, v[i].path,
                            strerror(errno));
    }
    free_ents(v, n);
    return rc;
}

static void log_stale(const char *path) { mf_log("checkpoint: removed %s (a temporary left by a dead writer)", path); }

/* Rank 0, before the first write into dir: the directory's lock (one writer
 * at a time) and the temporaries of dead writers removed. */
static int claim_dir(const char *dir, mf_err *e) {
    size_t len = strlen(dir) + 32;
    char *lock = mf_malloc(len);
    snprintf(lock, len, "%s/%s", dir, MF_CKPT_LOCK);
    int rc = mf_lock_acquire(lock, dir, e);
    free(lock);
    if (rc == 0) mf_clean_stale_tmps(dir, "ckpt-", log_stale);
    return rc;
}

static void wctx_free(wctx *w) {
    free(w->dir); free(w->path); free(w->tmp); free(w->rng); free(w->layer_stage); free(w->all); free(w->f64); free(w->f64_ds); free(w->wr); free(w->ds);
    for (int i = 0; i < N_STR; i++) free(w->s[i]);
}

/* After the inputs are shared: file, structure, data, marker, rename, prune. */
static int write_file(wctx *w, const mf_params *ps, const mf_adamw *opt, const mf_train_meta *m, int keep, mf_err *e) {
    w->ds = mf_malloc(sizeof(hid_t) * 3 * ((size_t)w->n_wr + 1));
    for (int i = 0; i < 3 * w->n_wr; i++) w->ds[i] = H5I_INVALID_HID;
    int rc = w->rank == 0 ? claim_dir(w->dir, e) : 0;
    if (mf_h5_agree(w->comm, rc, e)) return -1;
    if (mf_h5_create_file(w->comm, w->path, w->tmp, &w->file, e)) return -1;
    rc = mf_h5_agree(w->comm, create_all(w, e), e);
    if (rc == 0) rc = mf_h5_agree(w->comm, write_data(w, ps, opt, m, e), e);
    if (rc == 0) rc = mf_h5_agree(w->comm, mark_complete(w, e), e);
    int crc = close_all(w, e);
    if (rc == 0) rc = mf_h5_agree(w->comm, crc, e);
    if (w->rank == 0) rc = mf_h5_finish(rc, w->path, w->tmp, 1, e);
    if (rc == 0 && w->rank == 0 && keep > 0) rc = prune(w->dir, keep, w->path, e);
    return mf_h5_bcast_rc(w->comm, rc, e);
}

/* Parallel HDF5 does not fail cleanly when the disk fills in the middle of a
 * collective write (one rank leaves a dataset creation with an error while the
 * others wait in its barrier), so the room is checked first: the bytes every
 * tensor of replica 0 needs (data and moments) plus a margin for metadata,
 * against what the file system gives this user. Rank 0 decides for all. */
static int check_room(const char *dir, MPI_Comm world, int replica, const mf_params *ps, const mf_adamw *opt, mf_err *e) {
    uint64_t mine = 0, need = 0;
    if (replica == 0)
        for (int i = 0; i < ps->n; i++) {
            int moments = opt && opt->m && opt->m[i] ? 3 : 1;
            mine += (uint64_t)ps->p[i].numel * sizeof(float) * (uint64_t)moments;
        }
    MPI_Reduce(&mine, &need, 1, MPI_UINT64_T, MPI_SUM, 0, world);
    int rank, rc = 0;
    MPI_Comm_rank(world, &rank);
    if (rank == 0) {
        struct statvfs sv;
        need += need / 20 + ((uint64_t)1 << 20); /* chunk indexes, attributes, the superblock */
        if (statvfs(dir, &sv) == 0) {
            uint64_t avail = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
            if (avail < need)
                rc = mf_err_set(e, "%s: no space left for a checkpoint: it needs about %.1f MB, the file system has %.1f MB free "
                                "(the previous checkpoints are untouched)", dir, need / 1e6, avail / 1e6);
        }
    }
    return rc;
}

int mf_ckpt_write(const char *dir, MPI_Comm world, int replica, const mf_params *ps, const mf_adamw *opt,
                  const mf_train_meta *meta, int keep_last, char *path_out, size_t cap, mf_err *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    wctx w = {.comm = world, .replica = replica, .file = H5I_INVALID_HID, .rng_ds = H5I_INVALID_HID,
              .stage_ds = H5I_INVALID_HID, .my_first = -1};
    MPI_Comm_rank(world, &w.rank);
    MPI_Comm_size(world, &w.size);
    mf_err e = {{0}};
    int rc = mf_h5_agree(w.comm, check_local(dir, replica, ps, opt, meta, &e), &e);
    if (rc == 0) rc = mf_h5_agree(w.comm, check_room(dir, world, replica, ps, opt, &e), &e);
    int *rep_of = NULL;
    if (rc == 0) {
        share_meta(&w, dir, opt, meta);
        rc = mf_h5_agree(w.comm, share_rng(&w, meta, &e), &e);
    }
    if (rc == 0) {
        rep_of = mf_malloc(sizeof(int) * (size_t)w.size);
        MPI_Allgather(&replica, 1, MPI_INT, rep_of, 1, MPI_INT, world);
        rc = mf_h5_agree(w.comm, share_tensors(&w, ps, opt, rep_of, &e), &e);
    }
    if (rc == 0) rc = mf_h5_agree(w.comm, share_f64(&w, meta, &e), &e);
    if (rc == 0) rc = write_file(&w, ps, opt, meta, keep_last, &e);
    if (rc == 0 && path_out && cap) snprintf(path_out, cap, "%s", w.path);
    free(rep_of);
    wctx_free(&w);
    if (rc) mf_err_set(err, "%s", e.msg);
    return rc;
}

/* ---------------------------------------------------------------- reader */

/* /GROUP/NAME into buf (the shape of p). */
static int read_tensor(mf_h5r *c, const char *group, const mf_param *p, float *buf) {
    char name[200], why[256];
    snprintf(name, sizeof name, "/%s/%s", group, p->name);
    if (!mf_h5_path_exists(c->file, name))
        return mf_err_set(c->e, "%s: missing dataset '%s' (tensor '%s' is not in the checkpoint)", c->path, name,
                          p->name);
    hsize_t dims[2] = {(hsize_t)p->shape[0], (hsize_t)p->shape[1]};
    hid_t d = mf_h5_open_ds(c, name, H5T_FLOAT, p->ndim, dims, 0);
    if (d < 0) return -1;
    int rc = read_rows(d, buf, p->ndim, p->shape, why) < 0
                 ? mf_err_set(c->e, "%s: cannot read dataset '%s': %s", c->path, name, why) : 0;
    H5Dclose(d);
    return rc;
}

static int check_format(mf_h5r *c) {
    char *fmt = NULL;
    if (mf_h5_get_str(c, "format", 1, &fmt)) return -1;
    int ok = strcmp(fmt, MF_CKPT_FORMAT) == 0;
    if (!ok) mf_err_set(c->e, "%s: root attribute 'format' is '%.64s', expected '%s' (not a minifuse training "
                        "checkpoint)", c->path, fmt, MF_CKPT_FORMAT);
    free(fmt);
    if (!ok) return -1;
    int64_t v, done;
    if (mf_h5_get_i64(c, "format_version", 1, &v)) return -1;
    if (v != MF_CKPT_VERSION)
        return mf_err_set(c->e, "%s: format_version %lld is not supported (this build reads %d)", c->path,
                          (long long)v, MF_CKPT_VERSION);
    if (mf_h5_get_i64(c, "complete", 0, &done)) return -1;
    if (done != 1)
        return mf_err_set(c->e, "%s: checkpoint is not complete (attribute 'complete' is not 1: the write was "
                          "interrupted)", c->path);
    return 0;
}

static int read_rng(mf_h5r *c, int replica, mf_train_meta *m) {
    char why[256];
    if (!mf_h5_path_exists(c->file, "/rng")) return mf_err_set(c->e, "%s: missing dataset '/rng'", c->path);
    hid_t d = H5Dopen2(c->file, "/rng", H5P_DEFAULT); /* shape first; then opened again with every check */
    if (d < 0) return mf_err_set(c->e, "%s: cannot open dataset '/rng': %s", c->path, mf_h5_reason(why));
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    if (nd == 2) H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(d);
    if (nd != 2 || dims[1] != 4 || dims[0] < 1 || dims[0] > (1u << 20))
        return mf_err_set(c->e, "%s: dataset '/rng' has the wrong shape (expected [replicas, 4])", c->path);
    if ((d = mf_h5_open_ds(c, "/rng", H5T_INTEGER, 2, dims, 0)) < 0) return -1;
    m->n_rng = (int)dims[0];
    m->rng_all = mf_calloc(dims[0], sizeof *m->rng_all);
    int rc = H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, m->rng_all) < 0
                 ? mf_err_set(c->e, "%s: cannot read dataset '/rng': %s", c->path, mf_h5_read_reason(why)) : 0;
    H5Dclose(d);
    if (rc == 0 && replica >= 0 && replica < m->n_rng) {
        m->rng = m->rng_all[replica];
        m->have_rng = 1;
    }
    return rc;
}

/* /layer_stage (absent in checkpoints of older versions: n_layers 0). */
static int read_layer_stage(mf_h5r *c, mf_train_meta *m) {
    char why[256];
    if (!mf_h5_path_exists(c->file, "/layer_stage")) return 0;
    hsize_t dims[1] = {0};
    hid_t d = mf_h5_open_ds(c, "/layer_stage", H5T_INTEGER, 1, dims, 1);
    if (d < 0) return -1;
    if (dims[0] < 1 || dims[0] > MAX_LAYERS) {
        H5Dclose(d);
        return mf_err_set(c->e, "%s: dataset '/layer_stage' has %llu entries", c->path, (unsigned long long)dims[0]);
    }
    m->n_layers = (int32_t)dims[0];
    m->layer_stage = mf_calloc(dims[0], sizeof *m->layer_stage);
    int rc = H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, m->layer_stage) < 0
                 ? mf_err_set(c->e, "%s: cannot read dataset '/layer_stage': %s", c->path, mf_h5_read_reason(why)) : 0;
    H5Dclose(d);
    return rc;
}

/* An optional int32 root attribute (0 when absent). */
static int get_i32(mf_h5r *c, const char *name, int32_t *out) {
    int64_t v = 0;
    if (mf_h5_get_i64(c, name, 0, &v)) return -1;
    if (v < 0 || v > INT32_MAX) return mf_err_set(c->e, "%s: attribute '%s' is %lld", c->path, name, (long long)v);
    *out = (int32_t)v;
    return 0;
}

static int read_meta(mf_h5r *c, int replica, mf_train_meta *m) {
    char **s[N_STR] = {&m->options_json, &m->student, &m->student_sha, &m->teacher, &m->teacher_sha, &m->state_json,
                       &m->created, &m->provenance_json, &m->backend, &m->blas_core};
    for (int i = 0; i < N_STR; i++)
        if (mf_h5_get_str(c, str_attr[i], 0, s[i])) return -1;
    if (mf_h5_get_str(c, "software_version", 0, &m->software_version) || mf_h5_get_i64(c, "step", 1, &m->step) ||
        mf_h5_get_i64(c, "tokens", 1, &m->tokens) || mf_h5_get_i64(c, "data_pos", 1, &m->data_pos) ||
        mf_h5_get_f64(c, "lr", 1, &m->lr) || mf_h5_get_f64(c, "lr_max", 0, &m->sched.max_lr) ||
        mf_h5_get_f64(c, "lr_min", 0, &m->sched.min_lr) || mf_h5_get_i64(c, "lr_warmup_steps", 0, &m->sched.warmup) ||
        mf_h5_get_i64(c, "lr_total_steps", 0, &m->sched.total) || get_i32(c, "blas_threads", &m->blas_threads) ||
        get_i32(c, "pp", &m->pp) || get_i32(c, "dp", &m->dp) || read_layer_stage(c, m))
        return -1;
    return read_rng(c, replica, m);
}

static int read_all(mf_h5r *c, int replica, mf_params *ps, mf_adamw *opt, mf_train_meta *meta) {
    if (check_format(c)) return -1;
    if (opt) {
        if (opt->n != ps->n)
            return mf_err_set(c->e, "%s: optimizer state has %d tensors, the parameter list %d", c->path, opt->n, ps->n);
        for (int i = 0; i < ps->n; i++)
            if (opt->numel[i] != ps->p[i].numel || !opt->m[i] != !opt->v[i])
                return mf_err_set(c->e, "%s: optimizer state of tensor '%s' does not match it", c->path, ps->p[i].name);
    }
    for (int i = 0; i < ps->n; i++) {
        mf_param *p = &ps->p[i];
        if (bad_name(p->name)) return mf_err_set(c->e, "%s: tensor %d has an unusable name '%.127s'", c->path, i, p->name);
        if (read_tensor(c, "params", p, p->data)) return -1;
        if (opt && opt->m[i] && (read_tensor(c, "adam_m", p, opt->m[i]) || read_tensor(c, "adam_v", p, opt->v[i])))
            return -1;
    }
    if (opt) {
        int64_t st;
        if (mf_h5_get_i64(c, "adam_step", 1, &st)) return -1;
        if (st < 0) return mf_err_set(c->e, "%s: attribute 'adam_step' is %lld", c->path, (long long)st);
        opt->step = st;
    }
    return meta ? read_meta(c, replica, meta) : 0;
}

/* ---- the metadata walk, first in a child process (mf_h5_probe) */

typedef struct probe_ctx {
    const char *path;
    int replica;
    const mf_params *ps;
    const mf_adamw *opt; /* may be NULL; a tensor without moment buffers is read from /params only */
} probe_ctx;

/* Everything but the tensor data: format, every dataset this rank will read
 * opened and checked, the scalars and /rng. */
static int probe_walk(void *ctx, mf_err *e) {
    probe_ctx *p = ctx;
    hid_t f = mf_h5_open_read(p->path, e);
    if (f < 0) return -1;
    mf_h5r c = {.path = p->path, .file = f, .e = e};
    int rc = check_format(&c);
    for (int i = 0; rc == 0 && i < p->ps->n; i++) {
        const mf_param *t = &p->ps->p[i];
        int moments = p->opt && i < p->opt->n && p->opt->m[i];
        for (int g = 0; rc == 0 && g < (moments ? 3 : 1); g++) {
            char name[200];
            snprintf(name, sizeof name, "/%s/%s", group_of[g], t->name);
            hsize_t dims[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
            if (bad_name(t->name)) continue;
            hid_t d = mf_h5_open_ds(&c, name, H5T_FLOAT, t->ndim, dims, 0);
            if (d < 0) rc = -1;
            else H5Dclose(d);
        }
    }
    mf_train_meta m;
    memset(&m, 0, sizeof m);
    if (rc == 0) rc = read_meta(&c, p->replica, &m);
    mf_train_meta_free(&m);
    H5Fclose(f);
    return rc;
}

int mf_ckpt_read(const char *path, int replica, mf_params *ps, mf_adamw *opt, mf_train_meta *meta, mf_err *err) {
    if (meta) memset(meta, 0, sizeof *meta);
    probe_ctx p = {path, replica, ps, opt};
    if (mf_h5_check_file(path, err) || mf_h5_probe(path, probe_walk, &p, err)) return -1;
    hid_t f = mf_h5_open_read(path, err);
    if (f < 0) return -1;
    mf_err e = {{0}};
    mf_h5r c = {.path = path, .file = f, .e = &e};
    int rc = read_all(&c, replica, ps, opt, meta);
    H5Fclose(f);
    if (rc) {
        if (meta) mf_train_meta_free(meta);
        mf_err_set(err, "%s", e.msg);
    }
    return rc;
}

int mf_ckpt_read_f64(const char *path, const mf_ckpt_f64 *list, int n, mf_err *err) {
    if (mf_h5_check_file(path, err)) return -1;
    hid_t f = mf_h5_open_read(path, err);
    if (f < 0) return -1;
    mf_err e = {{0}};
    mf_h5r c = {.path = path, .file = f, .e = &e};
    int rc = check_format(&c);
    for (int i = 0; i < n && rc == 0; i++) {
        char name[200], why[256];
        snprintf(name, sizeof name, "/f64/%s", list[i].name);
        if (bad_name(list[i].name) || !mf_h5_path_exists(f, name)) {
            rc = mf_err_set(&e, "%s: missing dataset '%s'", path, name);
            break;
        }
        hsize_t dims[1] = {(hsize_t)list[i].n};
        hid_t d = mf_h5_open_ds(&c, name, H5T_FLOAT, 1, dims, 0);
        if (d < 0) { rc = -1; break; }
        if (H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, list[i].data) < 0)
            rc = mf_err_set(&e, "%s: cannot read dataset '%s': %s", path, name, mf_h5_read_reason(why));
        H5Dclose(d);
    }
    H5Fclose(f);
    if (rc) mf_err_set(err, "%s", e.msg);
    return rc;
}

void mf_train_meta_free(mf_train_meta *m) {
    if (!m) return;
    free(m->options_json); free(m->state_json); free(m->student); free(m->student_sha); free(m->teacher); free(m->teacher_sha);
    free(m->software_version); free(m->created); free(m->rng_all); free(m->provenance_json);
    free(m->backend); free(m->blas_core); free(m->layer_stage);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- latest */

/* Opens as HDF5 and is a complete checkpoint of this format. */
static int probe_format(void *ctx, mf_err *e) {
    const char *path = ctx;
    hid_t f = mf_h5_open_read(path, e);
    if (f < 0) return -1;
    mf_h5r c = {.path = path, .file = f, .e = e};
    int rc = check_format(&c);
    H5Fclose(f);
    return rc;
}

static int is_complete(const char *path) {
    mf_err e;
    if (mf_h5_check_file(path, &e) || mf_h5_probe(path, probe_format, (void *)path, &e)) return 0;
    hid_t f = mf_h5_open_read(path, &e);
    if (f < 0) return 0;
    mf_h5r c = {.path = path, .file = f, .e = &e};
    int ok = check_format(&c) == 0;
    H5Fclose(f);
    return ok;
}

int mf_ckpt_list_complete(const char *dir, char ***paths, int *n_out, mf_err *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    mf_err e = {{0}};
    ckpt_ent *v;
    int n;
    *paths = NULL;
    *n_out = 0;
    if (!dir || !dir[0]) return mf_err_set(err, "checkpoint: no directory given");
    mf_clean_stale_tmps(dir, "ckpt-", log_stale);
    if (list_ckpts(dir, &v, &n, &e)) return mf_err_set(err, "%s", e.msg);
    *paths = mf_calloc((size_t)n + 1, sizeof **paths);
    for (int i = 0; i < n; i++)
        if (is_complete(v[i].path)) {
            size_t len = strlen(v[i].path) + 1;
            (*paths)[*n_out] = mf_malloc(len);
            memcpy((*paths)[(*n_out)++], v[i].path, len);
        }
        else mf_log_always("checkpoint %s: not a complete checkpoint, skipped", v[i].path);
    free_ents(v, n);
    return 0;
}

int mf_ckpt_find_latest(const char *dir, char *path_out, size_t cap, mf_err *err) {
    char **v;
    int n;
    if (mf_ckpt_list_complete(dir, &v, &n, err) != 0) return -1;
    if (n > 0 && path_out && cap) snprintf(path_out, cap, "%s", v[0]);
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
    return n > 0 ? 0 : 1;
}

/* ----------------------------------------------------------------- resume: same options */

static int key_is_free(const char *key, const char *const *free_keys) {
    for (int i = 0; free_keys && free_keys[i]; i++)
        if (strcmp(key, free_keys[i]) == 0) return 1;
    return 0;
}

int mf_ckpt_options_check(const char *path, const char *stored, const char *current, const char *const *free_keys,
                          mf_err *err) {
    json_t *s = json_loads(stored ? stored : "", 0, NULL), *c = json_loads(current ? current : "", 0, NULL);
    int rc = 0;
    if (!json_is_object(c)) {
        rc = mf_err_set(err, "%s: internal: this run's options are not a JSON object", path);
    } else if (!json_is_object(s)) {
        rc = mf_err_set(err, "%s: attribute 'options' is not a JSON object; cannot check that --resume continues the same run", path);
    } else {
        const char *key;
        json_t *cv;
        json_object_foreach(c, key, cv) {
            json_t *sv = json_object_get(s, key);
            if (!sv || key_is_free(key, free_keys) || json_equal(sv, cv)) continue;
            char opt[64], *a = json_dumps(cv, JSON_ENCODE_ANY | JSON_REAL_PRECISION(6)),
                 *b = json_dumps(sv, JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));
            snprintf(opt, sizeof opt, "%s", key);
            for (char *p = opt; *p; p++) if (*p == '_') *p = '-';
            rc = mf_err_set(err, "%s: --%s %s differs from the checkpoint's %s (resume with the options of the run, or start afresh without --resume)",
                            path, opt, a ? a : "?", b ? b : "?");
            free(a);
            free(b);
            break;
        }
    }
    json_decref(s);
    json_decref(c);
    return rc;
}
