/* rankings.c - write (parallel HDF5) and read (serial) the rankings file.
 * Layout: docs/rankings_schema.md. */
#include "io/rankings.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"
#include "util/fsutil.h"
#include "version.h"

/* ---------------------------------------------------------------- common */

static const char *metric_names[MF_RK_N_METRICS] = {
    "mlp_neurons", "attn_heads", "emb_attn_norm", "emb_mlp_norm", "bi", "ppl", "mi",
};

const char *mf_rankings_metric_name(unsigned bit) {
    for (int i = 0; i < MF_RK_N_METRICS; i++)
        if (bit == 1u << i) return metric_names[i];
    return NULL;
}

void mf_rankings_meta_set_config(mf_rankings_meta *m, const mf_config *c) {
    m->n_layers = c->n_layers;
    m->hidden_size = c->dim;
    m->intermediate_size = c->ffn_dim;
    m->n_heads = c->n_heads;
    m->n_kv_heads = c->n_kv_heads;
    m->head_dim = c->head_dim;
    m->vocab_size = c->vocab_size;
}

/* Per-layer width datasets, in bit order (MF_RK_MLP_NEURONS .. MF_RK_EMB_MLP_NORM). */
enum { N_WIDTH = 4 };

static double *layer_field(const mf_layer_scores *s, int k) {
    switch (k) {
    case 0: return s->mlp_neurons;
    case 1: return s->attn_heads;
    case 2: return s->emb_attn_norm;
    default: return s->emb_mlp_norm;
    }
}

static double **layer_field_ref(mf_layer_scores *s, int k) {
    switch (k) {
    case 0: return &s->mlp_neurons;
    case 1: return &s->attn_heads;
    case 2: return &s->emb_attn_norm;
    default: return &s->emb_mlp_norm;
    }
}

/* Length of width dataset k for a model of shape m. */
static hsize_t width_len(const mf_rankings_meta *m, int k) {
    return (hsize_t)(k == 0 ? m->intermediate_size : k == 1 ? m->n_heads : m->hidden_size);
}

/* "/layers/NN": NN zero-padded to max(2, digits of n_layers-1). */
static void layer_group(char buf[64], int l, int n_layers) {
    int digits = 2;
    for (int x = n_layers - 1; x >= 100 && digits < 10; x /= 10) digits++;
    snprintf(buf, 64, "/layers/%0*d", digits, l);
}

static void metrics_string(unsigned metrics, char *buf, size_t n) {
    buf[0] = 0;
    for (int i = 0; i < MF_RK_N_METRICS; i++) {
        if (!(metrics & (1u << i))) continue;
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%s", len ? "," : "", metric_names[i]);
    }
}

/* a sorts before b: ascending, NaN last. */
static int before(double a, double b) { return !isnan(a) && (isnan(b) || a < b); }

/* Stable argsort ascending, NaN last (insertion sort: n is a layer count). */
static void argsort(const double *x, int n, int *idx) {
    for (int i = 0; i < n; i++) {
        int j = i;
        for (; j > 0 && before(x[i], x[idx[j - 1]]); j--) idx[j] = idx[j - 1];
        idx[j] = i;
    }
}

/* ---------------------------------------------------------------- writer */

typedef struct wctx {
    MPI_Comm comm;
    int rank, size;
    char *path, *tmp;    /* rank 0's path, on every rank */
    mf_rankings_meta m;  /* rank 0's meta, on every rank (owned strings) */
    unsigned metrics;
    int n_mi_iter;
    double ppl_full;
    int *ranges;         /* [size][2] every rank's l0, l1 */
    double *emb;         /* rank 0: [hidden] */
    int *order_bi, *order_ppl; /* rank 0: [n_layers] */
    hid_t file;
    hid_t *lay;          /* [n_layers][N_WIDTH] datasets, -1 when absent */
    hid_t bi, ppl, mi, emb_ds, obi, oppl, omi;
} wctx;

static void meta_free(mf_rankings_meta *m) {
    free(m->software_version); free(m->created);
    free(m->model_path); free(m->model_sha256);
    free(m->data_path); free(m->data_sha256);
    free(m->options); free(m->provenance);
    memset(m, 0, sizeof *m);
}

/* Rank 0: meta and depth make sense. */
static int check_root(const char *path, const mf_rankings_meta *m, const mf_depth_scores *d, mf_err *e) {
    if (!m) return mf_err_set(e, "%s: no metadata given on rank 0", path);
    const int v[7] = {m->n_layers, m->hidden_size, m->intermediate_size, m->n_heads,
                      m->n_kv_heads, m->head_dim, m->vocab_size};
    static const char *names[7] = {"n_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                                   "num_key_value_heads", "head_dim", "vocab_size"};
    for (int i = 0; i < 7; i++)
        if (v[i] <= 0) return mf_err_set(e, "%s: %s is %d, must be positive", path, names[i], v[i]);
    const int max[7] = {1 << 16, 1 << 20, 1 << 22, 1 << 16, 1 << 16, 1 << 16, 1 << 26};
    for (int i = 0; i < 7; i++)
        if (v[i] > max[i]) return mf_err_set(e, "%s: %s is %d, more than %d", path, names[i], v[i], max[i]);
    if ((int64_t)m->n_layers * 2 * m->hidden_size > INT32_MAX)
        return mf_err_set(e, "%s: %d layers x 2 x hidden %d scores overflow an MPI count", path, m->n_layers,
                          m->hidden_size);
    if (!d) return 0;
    if (d->n_mi_iter < 0 || d->n_mi_iter > m->n_layers)
        return mf_err_set(e, "%s: %d MI iterations for %d layers", path, d->n_mi_iter, m->n_layers);
    if (d->n_mi_iter > 0 && (!d->mi || !d->mi_order))
        return mf_err_set(e, "%s: %d MI iterations but no mi/mi_order arrays", path, d->n_mi_iter);
    for (int t = 0; t < d->n_mi_iter; t++) {
        int l = d->mi_order[t];
        if (l < 0 || l >= m->n_layers)
            return mf_err_set(e, "%s: MI iteration %d removes layer %d, outside [0, %d)", path, t, l, m->n_layers);
        for (int u = 0; u < t; u++)
            if (d->mi_order[u] == l)
                return mf_err_set(e, "%s: MI iterations %d and %d both remove layer %d", path, u, t, l);
    }
    return 0;
}

/* Local: the range is sane and every own layer has the same width metrics. */
static int check_local(const char *path, int l0, int l1, const mf_layer_scores *mine, unsigned *have, mf_err *e) {
    *have = 0;
    if (l0 < 0 || l1 < l0) return mf_err_set(e, "%s: bad layer range [%d, %d)", path, l0, l1);
    if (l1 > l0 && !mine) return mf_err_set(e, "%s: no scores for layers [%d, %d)", path, l0, l1);
    for (int l = l0; l < l1; l++) {
        unsigned h = 0;
        for (int k = 0; k < N_WIDTH; k++) h |= layer_field(&mine[l - l0], k) ? 1u << k : 0;
        if (l > l0 && h != *have)
            return mf_err_set(e, "%s: layer %d has different width metrics from layer %d", path, l, l0);
        *have = h;
    }
    return 0;
}

/* Share rank 0's path, meta and depth header; check that the layer ranges
 * tile [0, n_layers) and that all ranks computed the same width metrics. */
static int share(wctx *w, const char *path, const mf_rankings_meta *meta, const mf_depth_scores *d,
                 int l0, int l1, unsigned have, mf_err *e) {
    w->path = mf_h5_bcast_str(w->comm, path);
    const mf_rankings_meta *m = meta;
    char now[32];
    mf_h5_now_iso(now);
    w->m.software_version =
        mf_h5_bcast_str(w->comm, w->rank == 0 ? (m->software_version ? m->software_version : MF_VERSION) : NULL);
    w->m.created = mf_h5_bcast_str(w->comm, w->rank == 0 ? (m->created ? m->created : now) : NULL);
    w->m.model_path = mf_h5_bcast_str(w->comm, w->rank == 0 ? m->model_path : NULL);
    w->m.model_sha256 = mf_h5_bcast_str(w->comm, w->rank == 0 ? m->model_sha256 : NULL);
    w->m.data_path = mf_h5_bcast_str(w->comm, w->rank == 0 ? m->data_path : NULL);
    w->m.data_sha256 = mf_h5_bcast_str(w->comm, w->rank == 0 ? m->data_sha256 : NULL);
    w->m.options = mf_h5_bcast_str(w->comm, w->rank == 0 ? m->options : NULL);
    w->m.provenance = mf_h5_bcast_str(w->comm, w->rank == 0 ? (m->provenance ? m->provenance : "") : NULL);
    int64_t nums[13] = {0};
    double ppl_full = 0;
    if (w->rank == 0) {
        int64_t v[13] = {m->n_tokens, m->n_samples, m->ctx, m->n_layers, m->hidden_size, m->intermediate_size,
                         m->n_heads, m->n_kv_heads, m->head_dim, m->vocab_size, 0, 0, 0};
        if (d) {
            v[10] = (d->bi ? MF_RK_BI : 0) | (d->ppl ? MF_RK_PPL : 0) | (d->n_mi_iter > 0 ? MF_RK_MI : 0);
            v[11] = d->n_mi_iter;
            ppl_full = d->ppl_full;
        }
        memcpy(nums, v, sizeof v);
    }
    MPI_Bcast(nums, 13, MPI_INT64_T, 0, w->comm);
    MPI_Bcast(&ppl_full, 1, MPI_DOUBLE, 0, w->comm);
    w->m.n_tokens = nums[0]; w->m.n_samples = nums[1]; w->m.ctx = (int)nums[2];
    w->m.n_layers = (int)nums[3]; w->m.hidden_size = (int)nums[4]; w->m.intermediate_size = (int)nums[5];
    w->m.n_heads = (int)nums[6]; w->m.n_kv_heads = (int)nums[7]; w->m.head_dim = (int)nums[8];
    w->m.vocab_size = (int)nums[9];
    w->metrics = (unsigned)nums[10];
    w->n_mi_iter = (int)nums[11];
    w->ppl_full = ppl_full;
    w->tmp = mf_h5_tmp_name_comm(w->comm, w->path);

    /* ranges and width metrics of every rank */
    int mine[3] = {l0, l1, (int)have};
    int *all = mf_malloc(sizeof(int) * 3 * (size_t)w->size);
    MPI_Allgather(mine, 3, MPI_INT, all, 3, MPI_INT, w->comm);
    w->ranges = mf_malloc(sizeof(int) * 2 * (size_t)w->size);
    int covered = 0, rc = 0, first_with = -1;
    for (int r = 0; r < w->size; r++) {
        w->ranges[2 * r] = all[3 * r];
        w->ranges[2 * r + 1] = all[3 * r + 1];
    }
    for (int r = 0; r < w->size && rc == 0; r++) {
        int a = all[3 * r], b = all[3 * r + 1];
        if (a == b) continue;
        if (b > w->m.n_layers)
            rc = mf_err_set(e, "%s: rank %d holds layers [%d, %d) of a %d-layer model", w->path, r, a, b, w->m.n_layers);
        for (int q = 0; q < r && rc == 0; q++)
            if (all[3 * q] < b && a < all[3 * q + 1] && all[3 * q] != all[3 * q + 1])
                rc = mf_err_set(e, "%s: ranks %d and %d both hold layers in [%d, %d)", w->path, q, r, a, b);
        if (rc == 0 && first_with < 0) first_with = r;
        if (rc == 0 && (unsigned)all[3 * r + 2] != (unsigned)all[3 * first_with + 2])
            rc = mf_err_set(e, "%s: ranks %d and %d computed different width metrics", w->path, first_with, r);
    }
    /* walk the ranges in layer order: each must start where the last ended */
    while (covered < w->m.n_layers && rc == 0) {
        int next = -1;
        for (int r = 0; r < w->size; r++)
            if (all[3 * r] == covered && all[3 * r + 1] > covered) next = r;
        if (next < 0) rc = mf_err_set(e, "%s: no rank holds layer %d of %d", w->path, covered, w->m.n_layers);
        else covered = all[3 * next + 1];
    }
    if (rc == 0 && first_with >= 0) w->metrics |= (unsigned)all[3 * first_with + 2];
    free(all);
    return rc;
}

/* Rank 0 gathers every layer's two norm scores and sums them in layer order
 * (so the result does not depend on how layers are split over ranks). */
static void gather_emb(wctx *w, int l0, int l1, const mf_layer_scores *mine) {
    int dim = w->m.hidden_size, n = w->m.n_layers;
    size_t per = 2 * (size_t)dim;
    double *local = mf_malloc(sizeof(double) * per * (size_t)(l1 - l0));
    for (int l = l0; l < l1; l++) {
        memcpy(local + per * (size_t)(l - l0), mine[l - l0].emb_attn_norm, sizeof(double) * (size_t)dim);
        memcpy(local + per * (size_t)(l - l0) + dim, mine[l - l0].emb_mlp_norm, sizeof(double) * (size_t)dim);
    }
    int *counts = NULL, *displs = NULL;
    double *all = NULL; /* [n_layers][2][dim] */
    if (w->rank == 0) {
        counts = mf_malloc(sizeof(int) * (size_t)w->size);
        displs = mf_malloc(sizeof(int) * (size_t)w->size);
        for (int r = 0; r < w->size; r++) {
            counts[r] = (w->ranges[2 * r + 1] - w->ranges[2 * r]) * (int)per;
            displs[r] = w->ranges[2 * r] * (int)per;
        }
        all = mf_malloc(sizeof(double) * per * (size_t)n);
    }
    MPI_Gatherv(local, (l1 - l0) * (int)per, MPI_DOUBLE, all, counts, displs, MPI_DOUBLE, 0, w->comm);
    if (w->rank == 0) {
        w->emb = mf_calloc((size_t)dim, sizeof(double));
        for (int l = 0; l < n; l++)
            for (int i = 0; i < dim; i++) {
                w->emb[i] += all[per * (size_t)l + i];
                w->emb[i] += all[per * (size_t)l + dim + i];
            }
    }
    free(local); free(counts); free(displs); free(all);
}

static int root_attrs(wctx *w, mf_err *e) {
    char metrics[256], why[256];
    metrics_string(w->metrics, metrics, sizeof metrics);
    const mf_rankings_meta *m = &w->m;
    struct { const char *k, *v; } s[] = {
        {"format", MF_RANKINGS_FORMAT}, {"software_version", m->software_version}, {"created", m->created},
        {"model_path", m->model_path}, {"model_sha256", m->model_sha256}, {"data_path", m->data_path},
        {"data_sha256", m->data_sha256}, {"options", m->options}, {"metrics", metrics},
        {"provenance", m->provenance},
    };
    struct { const char *k; int v; } i[] = {
        {"format_version", MF_RANKINGS_VERSION}, {"ctx", m->ctx}, {"n_layers", m->n_layers},
        {"hidden_size", m->hidden_size}, {"intermediate_size", m->intermediate_size},
        {"num_attention_heads", m->n_heads}, {"num_key_value_heads", m->n_kv_heads},
        {"head_dim", m->head_dim}, {"vocab_size", m->vocab_size},
    };
    for (size_t k = 0; k < sizeof s / sizeof *s; k++)
        if (mf_h5_attr_str(w->file, s[k].k, s[k].v, why))
            return mf_err_set(e, "%s: cannot write attribute '%s': %s", w->path, s[k].k, why);
    for (size_t k = 0; k < sizeof i / sizeof *i; k++)
        if (mf_h5_attr_i32(w->file, i[k].k, i[k].v, why))
            return mf_err_set(e, "%s: cannot write attribute '%s': %s", w->path, i[k].k, why);
    if (mf_h5_attr_i64(w->file, "n_tokens", m->n_tokens, why) ||
        mf_h5_attr_i64(w->file, "n_samples", m->n_samples, why))
        return mf_err_set(e, "%s: cannot write attribute 'n_tokens'/'n_samples': %s", w->path, why);
    return 0;
}

/* Every rank creates every group, dataset and attribute, identically. */
static int create_all(wctx *w, mf_err *e) {
    const mf_rankings_meta *m = &w->m;
    hid_t f = w->file;
    const char *p = w->path;
    char name[128], why[256];
    if (root_attrs(w, e)) return -1;
    if (w->metrics & MF_RK_WIDTH) {
        if (mf_h5_make_group(f, p, "/layers", e)) return -1;
        for (int l = 0; l < m->n_layers; l++) {
            char g[64];
            layer_group(g, l, m->n_layers);
            if (mf_h5_make_group(f, p, g, e)) return -1;
            for (int k = 0; k < N_WIDTH; k++) {
                if (!(w->metrics & (1u << k))) continue;
                hsize_t n = width_len(m, k);
                snprintf(name, sizeof name, "%s/%s", g, metric_names[k]);
                if ((w->lay[(size_t)l * N_WIDTH + k] = mf_h5_make_ds(f, p, name, H5T_IEEE_F64LE, 1, &n, e)) < 0)
                    return -1;
            }
        }
    }
    hsize_t nl = (hsize_t)m->n_layers, mi_dims[2] = {(hsize_t)w->n_mi_iter, nl}, nit = (hsize_t)w->n_mi_iter;
    if ((w->metrics & (MF_RK_BI | MF_RK_PPL | MF_RK_MI)) &&
        (mf_h5_make_group(f, p, "/depth", e) || mf_h5_make_group(f, p, "/orders", e)))
        return -1;
    if ((w->metrics & MF_RK_BI) && ((w->bi = mf_h5_make_ds(f, p, "/depth/bi", H5T_IEEE_F64LE, 1, &nl, e)) < 0 ||
                                    (w->obi = mf_h5_make_ds(f, p, "/orders/bi", H5T_STD_I32LE, 1, &nl, e)) < 0))
        return -1;
    if (w->metrics & MF_RK_PPL) {
        if ((w->ppl = mf_h5_make_ds(f, p, "/depth/ppl", H5T_IEEE_F64LE, 1, &nl, e)) < 0 ||
            (w->oppl = mf_h5_make_ds(f, p, "/orders/ppl", H5T_STD_I32LE, 1, &nl, e)) < 0)
            return -1;
        if (mf_h5_attr_f64(w->ppl, "ppl_full", w->ppl_full, why))
            return mf_err_set(e, "%s: cannot write attribute '/depth/ppl/ppl_full': %s", w->path, why);
    }
    if ((w->metrics & MF_RK_MI) && ((w->mi = mf_h5_make_ds(f, p, "/depth/mi", H5T_IEEE_F64LE, 2, mi_dims, e)) < 0 ||
                                    (w->omi = mf_h5_make_ds(f, p, "/orders/mi", H5T_STD_I32LE, 1, &nit, e)) < 0))
        return -1;
    if ((w->metrics & MF_RK_EMB_ATTN_NORM) && (w->metrics & MF_RK_EMB_MLP_NORM)) {
        hsize_t dim = (hsize_t)m->hidden_size;
        if (mf_h5_make_group(f, p, "/width", e) ||
            (w->emb_ds = mf_h5_make_ds(f, p, "/width/emb", H5T_IEEE_F64LE, 1, &dim, e)) < 0)
            return -1;
    }
    return 0;
}

/* Collective: dataset d (when it exists) written by the rank whose buf is
 * non-NULL. After a failure the rank still takes part in the rest. */
static int write_ds(wctx *w, hid_t d, hid_t mtype, const void *buf, const char *what, int rc, mf_err *e) {
    char why[256];
    if (d < 0) return rc;
    if (mf_h5_write_coll(d, mtype, rc ? NULL : buf, why) != 0 && rc == 0)
        rc = mf_err_set(e, "%s: cannot write %s: %s", w->path, what, why);
    return rc;
}

/* The rank that holds layer l. */
static int owner_of(const wctx *w, int l) {
    for (int r = 0; r < w->size; r++)
        if (w->ranges[2 * r] <= l && l < w->ranges[2 * r + 1]) return r;
    return -1;
}

/* Collective (filtered datasets are written collectively): every rank goes
 * through every dataset; each layer's owner writes it, rank 0 the rest. */
static int write_data(wctx *w, int l0, int l1, const mf_layer_scores *mine, const mf_depth_scores *d, mf_err *e) {
    char what[128];
    int rc = 0;
    for (int l = 0; l < w->m.n_layers; l++) {
        int me = owner_of(w, l) == w->rank && l >= l0 && l < l1;
        for (int k = 0; k < N_WIDTH; k++) {
            snprintf(what, sizeof what, "layer %d %s", l, metric_names[k]);
            rc = write_ds(w, w->lay[(size_t)l * N_WIDTH + k], H5T_NATIVE_DOUBLE,
                          me ? layer_field(&mine[l - l0], k) : NULL, what, rc, e);
        }
    }
    int r0 = w->rank == 0;
    rc = write_ds(w, w->bi, H5T_NATIVE_DOUBLE, r0 && d ? d->bi : NULL, "/depth/bi", rc, e);
    rc = write_ds(w, w->obi, H5T_NATIVE_INT, r0 ? w->order_bi : NULL, "/orders/bi", rc, e);
    rc = write_ds(w, w->ppl, H5T_NATIVE_DOUBLE, r0 && d ? d->ppl : NULL, "/depth/ppl", rc, e);
    rc = write_ds(w, w->oppl, H5T_NATIVE_INT, r0 ? w->order_ppl : NULL, "/orders/ppl", rc, e);
    rc = write_ds(w, w->mi, H5T_NATIVE_DOUBLE, r0 && d ? d->mi : NULL, "/depth/mi", rc, e);
    rc = write_ds(w, w->omi, H5T_NATIVE_INT, r0 && d ? d->mi_order : NULL, "/orders/mi", rc, e);
    rc = write_ds(w, w->emb_ds, H5T_NATIVE_DOUBLE, r0 ? w->emb : NULL, "/width/emb", rc, e);
    return rc;
}

/* Close every object and the file (collective, same order on all ranks). */
static int close_all(wctx *w, mf_err *e) {
    if (w->lay)
        for (size_t i = 0; i < (size_t)w->m.n_layers * N_WIDTH; i++) mf_h5_close_id(&w->lay[i]);
    hid_t *ids[] = {&w->bi, &w->ppl, &w->mi, &w->emb_ds, &w->obi, &w->oppl, &w->omi};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) mf_h5_close_id(ids[i]);
    return mf_h5_close_file(&w->file, w->path, w->tmp, e);
}

static void wctx_free(wctx *w) {
    meta_free(&w->m);
    free(w->path); free(w->tmp); free(w->ranges); free(w->emb);
    free(w->order_bi); free(w->order_ppl); free(w->lay);
}

/* Phases after the inputs are shared and checked: file, structure, data, rename. */
static int write_file(wctx *w, int l0, int l1, const mf_layer_scores *mine, const mf_depth_scores *d, mf_err *e) {
    int n = w->m.n_layers;
    if ((w->metrics & MF_RK_EMB_ATTN_NORM) && (w->metrics & MF_RK_EMB_MLP_NORM)) gather_emb(w, l0, l1, mine);
    if (w->rank == 0 && (w->metrics & MF_RK_BI)) argsort(d->bi, n, w->order_bi = mf_malloc(sizeof(int) * (size_t)n));
    if (w->rank == 0 && (w->metrics & MF_RK_PPL)) argsort(d->ppl, n, w->order_ppl = mf_malloc(sizeof(int) * (size_t)n));
    w->lay = mf_malloc(sizeof(hid_t) * (size_t)n * N_WIDTH);
    for (size_t i = 0; i < (size_t)n * N_WIDTH; i++) w->lay[i] = H5I_INVALID_HID;

    if (mf_h5_create_file(w->comm, w->path, w->tmp, &w->file, e)) return -1;
    int rc = mf_h5_agree(w->comm, create_all(w, e), e);
    if (rc == 0) rc = mf_h5_agree(w->comm, write_data(w, l0, l1, mine, d, e), e);
    int crc = close_all(w, e);
    if (rc == 0) rc = mf_h5_agree(w->comm, crc, e);
    if (w->rank == 0) rc = mf_h5_finish(rc, w->path, w->tmp, 0, e);
    return mf_h5_bcast_rc(w->comm, rc, e);
}

int mf_rankings_write(const char *path, MPI_Comm comm, const mf_rankings_meta *meta, int l0, int l1,
                      const mf_layer_scores *mine, const mf_depth_scores *depth, mf_err *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    wctx w = {.comm = comm, .file = H5I_INVALID_HID, .bi = -1, .ppl = -1, .mi = -1,
              .emb_ds = -1, .obi = -1, .oppl = -1, .omi = -1};
    MPI_Comm_rank(comm, &w.rank);
    MPI_Comm_size(comm, &w.size);
    mf_err e = {{0}};
    unsigned have = 0;
    int rc = check_local(path ? path : "(null)", l0, l1, mine, &have, &e);
    if (rc == 0 && w.rank == 0) rc = !path ? mf_err_set(&e, "rankings: no output path") : check_root(path, meta, depth, &e);
    rc = mf_h5_agree(w.comm, rc, &e);
    if (rc == 0) rc = mf_h5_agree(w.comm, share(&w, path, meta, depth, l0, l1, have, &e), &e);
    if (rc == 0) rc = write_file(&w, l0, l1, mine, depth, &e);
    wctx_free(&w);
    if (rc) mf_err_set(err, "%s", e.msg);
    return rc;
}

/* ---------------------------------------------------------------- reader */

/* A required integer attribute in [lo, hi]. */
static int get_int(mf_h5r *c, const char *name, int64_t lo, int64_t hi, int *out) {
    int64_t v;
    if (mf_h5_get_i64(c, name, 1, &v)) return -1;
    if (v < lo || v > hi)
        return mf_err_set(c->e, "%s: attribute '%s' is %lld, outside [%lld, %lld]", c->path, name, (long long)v,
                          (long long)lo, (long long)hi);
    *out = (int)v;
    return 0;
}

/* Read dataset `name` of class cls and rank nd into a new buffer (memory type
 * mtype, elem bytes each). dims[i] > 0 must match; 0 takes the file's size,
 * which must be in [1, max_any]. Nothing is allocated before the shape and
 * the bytes stored for it are checked. */
static void *read_ds(mf_h5r *c, const char *name, H5T_class_t cls, hid_t mtype, size_t elem, int nd, hsize_t *dims,
                     hsize_t max_any) {
    char why[256];
    int any[4] = {0};
    for (int i = 0; i < nd; i++) any[i] = dims[i] == 0;
    hid_t d = mf_h5_open_ds(c, name, cls, nd, dims, 1);
    if (d < 0) return NULL;
    size_t n = elem;
    for (int i = 0; i < nd; i++) {
        if (any[i] && (dims[i] < 1 || dims[i] > max_any)) {
            mf_err_set(c->e, "%s: dataset '%s' has %llu entries in dimension %d, expected 1..%llu", c->path, name,
                       (unsigned long long)dims[i], i, (unsigned long long)max_any);
            H5Dclose(d);
            return NULL;
        }
        if (mf_mul_size(n, (size_t)dims[i], &n)) {
            mf_err_set(c->e, "%s: dataset '%s': its shape overflows a byte count", c->path, name);
            H5Dclose(d);
            return NULL;
        }
    }
    void *buf = mf_malloc(n ? n : 1);
    if (H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        mf_err_set(c->e, "%s: cannot read dataset '%s': %s", c->path, name, mf_h5_read_reason(why));
        free(buf);
        buf = NULL;
    }
    H5Dclose(d);
    return buf;
}

static int read_meta(mf_h5r *c, mf_rankings *r) {
    mf_rankings_meta *m = &r->meta;
    char *fmt = NULL;
    if (mf_h5_get_str(c, "format", 1, &fmt)) return -1;
    if (strcmp(fmt, MF_RANKINGS_FORMAT) != 0) {
        mf_err_set(c->e, "%s: root attribute 'format' is '%.64s', expected '%s' (not a minifuse rankings file)",
                   c->path, fmt, MF_RANKINGS_FORMAT);
        free(fmt);
        return -1;
    }
    free(fmt);
    int64_t ver;
    if (mf_h5_get_i64(c, "format_version", 1, &ver)) return -1;
    if (ver != MF_RANKINGS_VERSION)
        return mf_err_set(c->e, "%s: format_version %lld is not supported (this build reads %d)", c->path,
                          (long long)ver, MF_RANKINGS_VERSION);
    if (get_int(c, "n_layers", 1, 1 << 16, &m->n_layers) || get_int(c, "hidden_size", 1, 1 << 20, &m->hidden_size) ||
        get_int(c, "intermediate_size", 1, 1 << 22, &m->intermediate_size) ||
        get_int(c, "num_attention_heads", 1, 1 << 16, &m->n_heads) ||
        get_int(c, "num_key_value_heads", 1, 1 << 16, &m->n_kv_heads) ||
        get_int(c, "head_dim", 1, 1 << 16, &m->head_dim) || get_int(c, "vocab_size", 1, 1 << 26, &m->vocab_size))
        return -1;
    int64_t ctx;
    struct { const char *k; char **v; } s[] = {
        {"software_version", &m->software_version}, {"created", &m->created}, {"model_path", &m->model_path},
        {"model_sha256", &m->model_sha256}, {"data_path", &m->data_path}, {"data_sha256", &m->data_sha256},
        {"options", &m->options}, {"provenance", &m->provenance},
    };
    for (size_t k = 0; k < sizeof s / sizeof *s; k++)
        if (mf_h5_get_str(c, s[k].k, 0, s[k].v)) return -1;
    if (mf_h5_get_i64(c, "n_tokens", 0, &m->n_tokens) || mf_h5_get_i64(c, "n_samples", 0, &m->n_samples) ||
        mf_h5_get_i64(c, "ctx", 0, &ctx))
        return -1;
    if (ctx < 0 || ctx > INT32_MAX) return mf_err_set(c->e, "%s: attribute 'ctx' is %lld", c->path, (long long)ctx);
    m->ctx = (int)ctx;
    return 0;
}

static int read_metrics(mf_h5r *c, mf_rankings *r) {
    char *s = NULL;
    if (mf_h5_get_str(c, "metrics", 1, &s)) return -1;
    /* comma-separated names; unknown names are skipped (later additions) */
    for (char *tok = strtok(s, ", "); tok; tok = strtok(NULL, ", "))
        for (int i = 0; i < MF_RK_N_METRICS; i++)
            if (strcmp(tok, metric_names[i]) == 0) r->metrics |= 1u << i;
    free(s);
    return 0;
}

static int read_layers(mf_h5r *c, mf_rankings *r) {
    const mf_rankings_meta *m = &r->meta;
    if (!(r->metrics & MF_RK_WIDTH)) return 0;
    r->layers = mf_calloc((size_t)m->n_layers, sizeof *r->layers);
    for (int l = 0; l < m->n_layers; l++)
        for (int k = 0; k < N_WIDTH; k++) {
            if (!(r->metrics & (1u << k))) continue;
            char g[64], name[128];
            layer_group(g, l, m->n_layers);
            snprintf(name, sizeof name, "%s/%s", g, metric_names[k]);
            hsize_t n = width_len(m, k);
            double **dst = layer_field_ref(&r->layers[l], k);
            if (!(*dst = read_ds(c, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, sizeof(double), 1, &n, 0))) return -1;
        }
    return 0;
}

/* An int32 order dataset of length n whose entries are distinct layer indices. */
static int *read_order(mf_h5r *c, const char *name, int n, int n_layers) {
    hsize_t d = (hsize_t)n;
    int *o = read_ds(c, name, H5T_INTEGER, H5T_NATIVE_INT, sizeof(int), 1, &d, 0);
    if (!o) return NULL;
    char *seen = mf_calloc((size_t)n_layers, 1);
    for (int i = 0; i < n; i++) {
        if (o[i] < 0 || o[i] >= n_layers || seen[o[i]]) {
            mf_err_set(c->e, "%s: dataset '%s' entry %d is %d: not a distinct layer index in [0, %d)", c->path, name,
                       i, o[i], n_layers);
            free(o); free(seen);
            return NULL;
        }
        seen[o[i]] = 1;
    }
    free(seen);
    return o;
}

static int read_ppl_full(mf_h5r *c, double *out) {
    char why[256];
    hid_t d = mf_h5_path_exists(c->file, "/depth/ppl") ? H5Dopen2(c->file, "/depth/ppl", H5P_DEFAULT) : -1;
    htri_t ex = d < 0 ? -1 : H5Aexists(d, "ppl_full");
    hid_t a = ex > 0 ? H5Aopen(d, "ppl_full", H5P_DEFAULT) : -1;
    hid_t t = a >= 0 ? H5Aget_type(a) : -1;
    int is_float = t >= 0 && H5Tget_class(t) == H5T_FLOAT;
    int ok = is_float && H5Aread(a, H5T_NATIVE_DOUBLE, out) >= 0;
    if (!ok) mf_h5_reason(why);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    if (d >= 0) H5Dclose(d);
    if (ok) return 0;
    if (ex == 0) return mf_err_set(c->e, "%s: dataset '/depth/ppl' has no attribute 'ppl_full'", c->path);
    return mf_err_set(c->e, "%s: cannot read attribute '/depth/ppl/ppl_full': %s", c->path,
                      t >= 0 && !is_float ? "not a float" : why);
}

static int read_depth(mf_h5r *c, mf_rankings *r) {
    int n = r->meta.n_layers;
    hsize_t nl = (hsize_t)n;
    mf_depth_scores *d = &r->depth;
    if (r->metrics & MF_RK_BI) {
        if (!(d->bi = read_ds(c, "/depth/bi", H5T_FLOAT, H5T_NATIVE_DOUBLE, sizeof(double), 1, &nl, 0)) ||
            !(r->order_bi = read_order(c, "/orders/bi", n, n)))
            return -1;
    }
    if (r->metrics & MF_RK_PPL) {
        if (!(d->ppl = read_ds(c, "/depth/ppl", H5T_FLOAT, H5T_NATIVE_DOUBLE, sizeof(double), 1, &nl, 0)) ||
            read_ppl_full(c, &d->ppl_full) || !(r->order_ppl = read_order(c, "/orders/ppl", n, n)))
            return -1;
    }
    if (r->metrics & MF_RK_MI) {
        hsize_t dims[2] = {0, nl};
        if (!(d->mi = read_ds(c, "/depth/mi", H5T_FLOAT, H5T_NATIVE_DOUBLE, sizeof(double), 2, dims, nl))) return -1;
        d->n_mi_iter = (int)dims[0];
        if (!(d->mi_order = read_order(c, "/orders/mi", d->n_mi_iter, n))) return -1;
    }
    return 0;
}

/* Everything after the root attributes. */
static int read_data(mf_h5r *c, mf_rankings *r) {
    if (read_metrics(c, r) || read_layers(c, r) || read_depth(c, r)) return -1;
    if ((r->metrics & MF_RK_EMB_ATTN_NORM) && (r->metrics & MF_RK_EMB_MLP_NORM)) {
        hsize_t dim = (hsize_t)r->meta.hidden_size;
        if (!(r->width_emb = read_ds(c, "/width/emb", H5T_FLOAT, H5T_NATIVE_DOUBLE, sizeof(double), 1, &dim, 0)))
            return -1;
    }
    return 0;
}

/* Read path; with cfg, its shape is checked against the model before any
 * dataset is read (so nothing is sized by the file alone). */
static int read_direct(const char *path, const mf_config *cfg, const char *sha, mf_rankings *out, mf_err *err) {
    memset(out, 0, sizeof *out);
    hid_t f = mf_h5_open_read(path, err);
    if (f < 0) return -1;
    mf_err e = {{0}};
    mf_h5r c = {.path = path, .file = f, .e = &e};
    out->path = mf_strdup(path);
    int rc = read_meta(&c, out);
    if (rc == 0 && cfg) rc = mf_rankings_check_model(out, cfg, sha, &e);
    if (rc == 0) rc = read_data(&c, out);
    H5Fclose(f);
    if (rc) {
        mf_rankings_free(out);
        mf_err_set(err, "%s", e.msg);
    }
    return rc;
}

typedef struct probe_ctx {
    const char *path, *sha;
    const mf_config *cfg;
} probe_ctx;

static int probe_read(void *ctx, mf_err *e) {
    probe_ctx *p = ctx;
    mf_rankings r;
    int rc = read_direct(p->path, p->cfg, p->sha, &r, e);
    if (rc == 0) mf_rankings_free(&r);
    return rc;
}

/* The whole read once in a child process (libhdf5 may crash on forged
 * metadata: that must cost an error, not the job), then for real. */
static int read_file(const char *path, const mf_config *cfg, const char *sha, mf_rankings *out, mf_err *err) {
    memset(out, 0, sizeof *out);
    probe_ctx p = {path, sha, cfg};
    if (mf_h5_check_file(path, err) || mf_h5_probe(path, probe_read, &p, err)) return -1;
    return read_direct(path, cfg, sha, out, err);
}

int mf_rankings_read(const char *path, mf_rankings *out, mf_err *err) { return read_file(path, NULL, NULL, out, err); }

int mf_rankings_read_model(const char *path, const mf_config *cfg, const char *model_sha256, mf_rankings *out,
                           mf_err *err) {
    return read_file(path, cfg, model_sha256, out, err);
}

void mf_rankings_free(mf_rankings *r) {
    if (!r) return;
    if (r->layers)
        for (int l = 0; l < r->meta.n_layers; l++)
            for (int k = 0; k < N_WIDTH; k++) free(*layer_field_ref(&r->layers[l], k));
    free(r->layers);
    meta_free(&r->meta);
    free(r->path);
    free(r->depth.bi); free(r->depth.ppl); free(r->depth.mi); free(r->depth.mi_order);
    free(r->width_emb); free(r->order_bi); free(r->order_ppl);
    memset(r, 0, sizeof *r);
}

int mf_rankings_check_model(const mf_rankings *r, const mf_config *c, const char *model_sha256, mf_err *err) {
    const mf_rankings_meta *m = &r->meta;
    const char *file = r->path ? r->path : "rankings";
    struct { const char *k; int have, want; } f[] = {
        {"n_layers", m->n_layers, c->n_layers}, {"hidden_size", m->hidden_size, c->dim},
        {"intermediate_size", m->intermediate_size, c->ffn_dim}, {"num_attention_heads", m->n_heads, c->n_heads},
        {"num_key_value_heads", m->n_kv_heads, c->n_kv_heads}, {"head_dim", m->head_dim, c->head_dim},
        {"vocab_size", m->vocab_size, c->vocab_size},
    };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (f[i].have != f[i].want)
            return mf_err_set(err, "%s: %s is %d in the rankings but %d in the model (rankings of another model?)",
                              file, f[i].k, f[i].have, f[i].want);
    if (model_sha256 && model_sha256[0] && m->model_sha256 && m->model_sha256[0] &&
        strcmp(model_sha256, m->model_sha256) != 0)
        return mf_err_set(err, "%s: model_sha256 is %.64s in the rankings (model '%.200s') but %.64s for this model", file,
                          m->model_sha256, m->model_path ? m->model_path : "", model_sha256);
    return 0;
}
