#include "compress/prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/score_out.h"

int mf_depth_metric_parse(const char *s, mf_depth_metric *out) {
    static const char *names[] = {"bi", "ppl", "mi", "random"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) { *out = (mf_depth_metric)i; return 0; }
    return -1;
}

int mf_keep_size(double keep, int full, int align) {
    if (keep <= 0) return full;
    double want = keep <= 1.0 ? keep * full : keep;
    int n = (int)lround(want / align) * align;
    if (n < align) n = align;
    if (n > full) n = full;
    return n;
}

/* Top-k indices of score[0..n) (highest first by score, ties: lower index), returned sorted ascending. */
static int *top_k_sorted(const double *score, int n, int k) {
    int *idx = mf_malloc((size_t)n * sizeof *idx);
    double *neg = mf_malloc((size_t)n * sizeof *neg);
    for (int i = 0; i < n; i++) neg[i] = -score[i];
    mf_argsort_asc(neg, n, idx);
    int *out = mf_malloc((size_t)k * sizeof *out);
    char *take = mf_calloc((size_t)n, 1);
    for (int i = 0; i < k; i++) take[idx[i]] = 1;
    for (int i = 0, j = 0; i < n; i++) if (take[i]) out[j++] = i;
    free(idx); free(neg); free(take);
    return out;
}

static unsigned long long xorshift(unsigned long long *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* Per-layer depth scores (lower = less important) for the chosen metric. */
static int depth_scores(const mf_rankings *rk, mf_depth_metric m, int L, double *s, mf_err *err) {
    const char *file = rk->path;
    if (m == MF_DEPTH_BI) {
        if (!rk->depth.bi) return mf_err_set(err, "%s: no Block Importance scores (score with --metrics bi)", file);
        memcpy(s, rk->depth.bi, (size_t)L * sizeof *s);
    } else if (m == MF_DEPTH_PPL) {
        if (!rk->depth.ppl) return mf_err_set(err, "%s: no drop-one perplexities (score with --metrics ppl)", file);
        memcpy(s, rk->depth.ppl, (size_t)L * sizeof *s);
    } else if (m == MF_DEPTH_MI) {
        if (!rk->depth.mi) return mf_err_set(err, "%s: no Macro Influence scores (score with --metrics mi)", file);
        memcpy(s, rk->depth.mi, (size_t)L * sizeof *s); /* first iteration: all blocks present */
    }
    return 0;
}

/* Which layers to drop. */
static int choose_drops(const mf_rankings *rk, const mf_prune_opts *o, int L, int *drop, mf_err *err) {
    int N = o->drop_layers;
    if (N < 0 || N >= L) return mf_err_set(err, "prune: --drop-layers %d must be between 0 and %d", N, L - 1);
    if (N == 0) return 0;
    if (o->drop_list) { /* given by the user: in range and distinct */
        for (int i = 0; i < N; i++) {
            if (o->drop_list[i] < 0 || o->drop_list[i] >= L)
                return mf_err_set(err, "prune: --drop-list entry %d is not a block index 0..%d", o->drop_list[i], L - 1);
            for (int j = 0; j < i; j++)
                if (o->drop_list[j] == o->drop_list[i]) return mf_err_set(err, "prune: --drop-list names block %d twice", o->drop_list[i]);
            drop[i] = o->drop_list[i];
        }
        return 0;
    }
    if (o->metric == MF_DEPTH_RANDOM) {
        int *perm = mf_malloc((size_t)L * sizeof *perm);
        unsigned long long st = o->seed ? o->seed : 0x9E3779B97F4A7C15ull;
        for (int i = 0; i < L; i++) perm[i] = i;
        for (int i = L - 1; i > 0; i--) {
            int j = (int)(xorshift(&st) % (unsigned long long)(i + 1));
            int t = perm[i]; perm[i] = perm[j]; perm[j] = t;
        }
        memcpy(drop, perm, (size_t)N * sizeof *drop);
        free(perm);
        return 0;
    }
    double *s = mf_malloc((size_t)L * sizeof *s);
    int rc = depth_scores(rk, o->metric, L, s, err);
    if (rc == 0 && o->drop_block) { /* contiguous block with the least summed importance */
        int best = 0;
        double bsum = INFINITY;
        for (int a = 0; a + N <= L; a++) {
            double sum = 0;
            for (int i = a; i < a + N; i++) sum += s[i];
            if (sum < bsum) { bsum = sum; best = a; }
        }
        for (int i = 0; i < N; i++) drop[i] = best + i;
    } else if (rc == 0 && o->metric == MF_DEPTH_MI) { /* the iterative removal order */
        if (N > rk->depth.n_mi_iter)
            rc = mf_err_set(err, "%s: Macro Influence has %d removal iterations, --drop-layers %d needs more (score with --mi-iters %d)",
                            rk->path, rk->depth.n_mi_iter, N, N);
        else memcpy(drop, rk->depth.mi_order, (size_t)N * sizeof *drop);
    } else if (rc == 0) {
        int *idx = mf_malloc((size_t)L * sizeof *idx);
        mf_argsort_asc(s, L, idx);
        memcpy(drop, idx, (size_t)N * sizeof *drop);
        free(idx);
    }
    free(s);
    return rc;
}

static int plan_heads(mf_prune_plan *p, const mf_rankings *rk, const mf_prune_opts *o, int l, mf_err *err) {
    const mf_config *c = &p->old_cfg;
    int H = c->n_heads, KV = c->n_kv_heads, G = H / KV, Hn = p->new_cfg.n_heads, KVn = p->new_cfg.n_kv_heads;
    const double *hs = rk->layers ? rk->layers[l].attn_heads : NULL;
    p->head_idx[l] = mf_malloc((size_t)Hn * sizeof(int));
    p->kv_idx[l] = mf_malloc((size_t)KVn * sizeof(int));
    if (Hn == H) {
        for (int h = 0; h < H; h++) p->head_idx[l][h] = h;
        for (int g = 0; g < KV; g++) p->kv_idx[l][g] = g;
        return 0;
    }
    if (!hs) return mf_err_set(err, "%s: no attention head scores for layer %d (score with --metrics width)", rk->path, l);
    if (o->prune_kv_groups) { /* whole groups, ranked by the sum of their heads' scores */
        double *gs = mf_calloc((size_t)KV, sizeof *gs);
        for (int h = 0; h < H; h++) gs[h / G] += hs[h];
        int *keep = top_k_sorted(gs, KV, KVn);
        for (int g = 0; g < KVn; g++) {
            p->kv_idx[l][g] = keep[g];
            for (int j = 0; j < G; j++) p->head_idx[l][g * G + j] = keep[g] * G + j;
        }
        free(gs); free(keep);
        return 0;
    }
    int Gn = Hn / KV; /* queries kept per group, equal in every group */
    for (int g = 0; g < KV; g++) {
        int *keep = top_k_sorted(hs + g * G, G, Gn);
        for (int j = 0; j < Gn; j++) p->head_idx[l][g * Gn + j] = g * G + keep[j];
        p->kv_idx[l][g] = g;
        free(keep);
    }
    return 0;
}

static int plan_widths(mf_prune_plan *p, const mf_rankings *rk, const mf_prune_opts *o, mf_err *err) {
    const mf_config *c = &p->old_cfg;
    mf_config *n = &p->new_cfg;
    int KV = c->n_kv_heads, G = c->n_heads / KV;
    n->ffn_dim = mf_keep_size(o->ffn_keep, c->ffn_dim, o->align);
    n->dim = mf_keep_size(o->hidden_keep, c->dim, o->align);
    if (o->prune_kv_groups) {
        n->n_kv_heads = o->heads_keep <= 0 ? KV : (int)lround(o->heads_keep <= 1 ? o->heads_keep * KV : o->heads_keep / G);
        if (n->n_kv_heads < 1) n->n_kv_heads = 1;
        n->n_heads = n->n_kv_heads * G;
    } else {
        int h = o->heads_keep <= 0 ? c->n_heads : (int)lround(o->heads_keep <= 1 ? o->heads_keep * c->n_heads : o->heads_keep);
        h = (h + KV / 2) / KV * KV; /* equal number of queries in every KV group */
        n->n_heads = h < KV ? KV : h > c->n_heads ? c->n_heads : h;
        n->n_kv_heads = KV;
    }
    if (n->ffn_dim < c->ffn_dim && (!rk->layers || !rk->layers[p->keep_layer[0]].mlp_neurons))
        return mf_err_set(err, "%s: no MLP neuron scores (score with --metrics width)", rk->path);
    if (n->dim < c->dim && !rk->width_emb)
        return mf_err_set(err, "%s: no embedding-channel scores (score with --metrics width)", rk->path);
    p->hid_idx = n->dim < c->dim ? top_k_sorted(rk->width_emb, c->dim, n->dim) : NULL;
    if (!p->hid_idx) {
        p->hid_idx = mf_malloc((size_t)c->dim * sizeof(int));
        for (int i = 0; i < c->dim; i++) p->hid_idx[i] = i;
    }
    for (int k = 0; k < n->n_layers; k++) {
        int l = p->keep_layer[k];
        if (n->ffn_dim < c->ffn_dim) p->ffn_idx[l] = top_k_sorted(rk->layers[l].mlp_neurons, c->ffn_dim, n->ffn_dim);
        else {
            p->ffn_idx[l] = mf_malloc((size_t)c->ffn_dim * sizeof(int));
            for (int i = 0; i < c->ffn_dim; i++) p->ffn_idx[l][i] = i;
        }
        if (plan_heads(p, rk, o, l, err) != 0) return -1;
    }
    return 0;
}

int mf_prune_plan_make(mf_prune_plan *p, const mf_config *c, const mf_rankings *rk, const mf_prune_opts *o, mf_err *err) {
    memset(p, 0, sizeof *p);
    p->old_cfg = *c;
    p->new_cfg = *c;
    int L = c->n_layers;
    if (o->align < 1) return mf_err_set(err, "prune: --align %d must be positive", o->align);
    p->dropped = mf_calloc((size_t)(o->drop_layers > 0 ? o->drop_layers : 1), sizeof(int));
    if (choose_drops(rk, o, L, p->dropped, err) != 0) return -1;
    char *gone = mf_calloc((size_t)L, 1);
    for (int i = 0; i < o->drop_layers; i++) gone[p->dropped[i]] = 1;
    p->new_cfg.n_layers = L - o->drop_layers;
    p->keep_layer = mf_malloc((size_t)L * sizeof(int));
    for (int l = 0, k = 0; l < L; l++) if (!gone[l]) p->keep_layer[k++] = l;
    free(gone);
    p->ffn_idx = mf_calloc((size_t)L, sizeof(int *));
    p->head_idx = mf_calloc((size_t)L, sizeof(int *));
    p->kv_idx = mf_calloc((size_t)L, sizeof(int *));
    return plan_widths(p, rk, o, err);
}

void mf_prune_plan_free(mf_prune_plan *p) {
    for (int l = 0; l < p->old_cfg.n_layers && p->ffn_idx; l++) {
        free(p->ffn_idx[l]); free(p->head_idx[l]); free(p->kv_idx[l]);
    }
    free(p->ffn_idx); free(p->head_idx); free(p->kv_idx);
    free(p->keep_layer); free(p->dropped); free(p->hid_idx);
    memset(p, 0, sizeof *p);
}

/* out[r][c] = in[rows[r]][cols[c]] of an in-matrix with in_cols columns; NULL rows/cols = identity. */
static float *slice2(const float *in, int in_cols, const int *rows, int nr, const int *cols, int nc) {
    float *out = mf_malloc((size_t)nr * nc * sizeof *out);
    for (int r = 0; r < nr; r++) {
        const float *src = in + (size_t)(rows ? rows[r] : r) * in_cols;
        for (int c = 0; c < nc; c++) out[(size_t)r * nc + c] = src[cols ? cols[c] : c];
    }
    return out;
}

/* Row indices of whole heads: heads[i]*hd + j. */
static int *head_rows(const int *heads, int n, int hd) {
    int *rows = mf_malloc((size_t)n * hd * sizeof *rows);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < hd; j++) rows[i * hd + j] = heads[i] * hd + j;
    return rows;
}

static void add(mf_tensor_ref **t, int *n, const char *name, float *data, int64_t d0, int64_t d1) {
    *t = mf_realloc(*t, (size_t)(*n + 1) * sizeof **t);
    mf_tensor_ref *r = &(*t)[(*n)++];
    memset(r, 0, sizeof *r);
    r->name = mf_strdup(name);
    r->ndim = d1 ? 2 : 1;
    r->shape[0] = d0;
    r->shape[1] = d1;
    r->data = data;
}

static void slice_layer(const mf_prune_plan *p, const mf_layer *L, int old_l, int new_l, mf_tensor_ref **t, int *n) {
    const mf_config *c = &p->old_cfg, *nc = &p->new_cfg;
    int hd = c->head_dim, D = c->dim, Dn = nc->dim, Fn = nc->ffn_dim;
    int *qr = head_rows(p->head_idx[old_l], nc->n_heads, hd), *kr = head_rows(p->kv_idx[old_l], nc->n_kv_heads, hd);
    int Qn = nc->n_heads * hd, KVn = nc->n_kv_heads * hd;
    const int *hid = p->hid_idx, *ffn = p->ffn_idx[old_l];
    char name[160];
#define ADD(suffix, data, d0, d1) do { snprintf(name, sizeof name, "model.layers.%d.%s", new_l, suffix); add(t, n, name, data, d0, d1); } while (0)
    ADD("input_layernorm.weight", slice2(L->attn_norm, 1, hid, Dn, NULL, 1), Dn, 0);
    ADD("self_attn.q_proj.weight", slice2(L->wq, D, qr, Qn, hid, Dn), Qn, Dn);
    ADD("self_attn.k_proj.weight", slice2(L->wk, D, kr, KVn, hid, Dn), KVn, Dn);
    ADD("self_attn.v_proj.weight", slice2(L->wv, D, kr, KVn, hid, Dn), KVn, Dn);
    if (L->bq) {
        ADD("self_attn.q_proj.bias", slice2(L->bq, 1, qr, Qn, NULL, 1), Qn, 0);
        ADD("self_attn.k_proj.bias", slice2(L->bk, 1, kr, KVn, NULL, 1), KVn, 0);
        ADD("self_attn.v_proj.bias", slice2(L->bv, 1, kr, KVn, NULL, 1), KVn, 0);
    }
    ADD("self_attn.o_proj.weight", slice2(L->wo, c->n_heads * hd, hid, Dn, qr, Qn), Dn, Qn);
    ADD("post_attention_layernorm.weight", slice2(L->ffn_norm, 1, hid, Dn, NULL, 1), Dn, 0);
    ADD("mlp.gate_proj.weight", slice2(L->w_gate, D, ffn, Fn, hid, Dn), Fn, Dn);
    ADD("mlp.up_proj.weight", slice2(L->w_up, D, ffn, Fn, hid, Dn), Fn, Dn);
    ADD("mlp.down_proj.weight", slice2(L->w_down, c->ffn_dim, hid, Dn, ffn, Fn), Dn, Fn);
#undef ADD
    free(qr);
    free(kr);
}

int mf_prune_slice(const mf_prune_plan *p, const mf_model *m, mf_tensor_ref **out) {
    mf_err err;
    if (mf_model_require_f32(m, "prune", &err) != 0) mf_fatal_err(&err); /* slices read the weights as float */
    const mf_config *c = &p->old_cfg, *nc = &p->new_cfg;
    mf_tensor_ref *t = NULL;
    int n = 0;
    if (m->first) add(&t, &n, "model.embed_tokens.weight", slice2(m->tok_embd, c->dim, NULL, c->vocab_size, p->hid_idx, nc->dim), c->vocab_size, nc->dim);
    for (int k = 0; k < nc->n_layers; k++) {
        int l = p->keep_layer[k];
        if (l >= m->layer_begin && l < m->layer_end) slice_layer(p, &m->layers[l - m->layer_begin], l, k, &t, &n);
    }
    if (m->last) {
        add(&t, &n, "model.norm.weight", slice2(m->out_norm, 1, p->hid_idx, nc->dim, NULL, 1), nc->dim, 0);
        if (!c->tied_embeddings)
            add(&t, &n, "lm_head.weight", slice2(m->lm_head, c->dim, NULL, c->vocab_size, p->hid_idx, nc->dim), c->vocab_size, nc->dim);
    }
    *out = t;
    return n;
}

void mf_prune_tensors_free(mf_tensor_ref *t, int n) {
    for (int i = 0; i < n; i++) { free((char *)t[i].name); free((float *)t[i].data); }
    free(t);
}
