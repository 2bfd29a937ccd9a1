/* rankings_synth.h - deterministic synthetic scores for the rankings tests,
 * shared by tests/test_rankings.c, tests/tools/rankings_writer.c and (as the
 * same formula) tests/gen_rankings_golden.py and the h5py checks.
 *   width score (layer l, metric k in 0..3, index i): ((l*7919 + k*104729 + i*31) % 10007 - 5000) / 3.0
 *   bi[l] = synth(l, 4, 0); ppl[l] = 10 + (l*37 % 5) / 4.0 (ties on purpose)
 *   mi[t][l] = synth(l, 6, t), NaN for layers removed before iteration t
 * Divisions by 3 are correctly rounded in C and Python alike, so values are bit-exact. */
#ifndef MF_RANKINGS_SYNTH_H
#define MF_RANKINGS_SYNTH_H

#include <math.h>
#include <stdlib.h>
#include "io/rankings.h"

enum { RS_LAYERS = 7, RS_HIDDEN = 48, RS_FFN = 128, RS_HEADS = 6, RS_KV = 2, RS_HEAD_DIM = 8, RS_VOCAB = 1000,
       RS_MI_ITER = 3 };
static const int rs_mi_order[RS_MI_ITER] = {5, 0, 3};

static inline double rs_synth(int l, int k, int i) {
    return (double)(((long)l * 7919 + (long)k * 104729 + (long)i * 31) % 10007 - 5000) / 3.0;
}

static inline int rs_width_len(int k) { return k == 0 ? RS_FFN : k == 1 ? RS_HEADS : RS_HIDDEN; }

static inline void rs_meta(mf_rankings_meta *m, const char *model_sha) {
    *m = (mf_rankings_meta){0};
    m->created = "2025-01-01T00:00:00Z";
    m->model_path = "synthetic/model";
    m->model_sha256 = (char *)model_sha;
    m->data_path = "synthetic/data.txt";
    m->data_sha256 = "";
    m->options = "{\"ctx\": 64, \"n_samples\": 4}";
    m->n_tokens = 256;
    m->n_samples = 4;
    m->ctx = 64;
    m->n_layers = RS_LAYERS; m->hidden_size = RS_HIDDEN; m->intermediate_size = RS_FFN;
    m->n_heads = RS_HEADS; m->n_kv_heads = RS_KV; m->head_dim = RS_HEAD_DIM; m->vocab_size = RS_VOCAB;
}

/* Layers [l0,l1) with the width metrics in mask (bits 0..3); free with rs_free_layers. */
static inline mf_layer_scores *rs_layers(int l0, int l1, unsigned mask) {
    mf_layer_scores *s = calloc((size_t)(l1 - l0 + 1), sizeof *s);
    for (int l = l0; l < l1; l++)
        for (int k = 0; k < 4; k++) {
            if (!(mask & (1u << k))) continue;
            double *v = malloc(sizeof(double) * (size_t)rs_width_len(k));
            for (int i = 0; i < rs_width_len(k); i++) v[i] = rs_synth(l, k, i);
            if (k == 0) s[l - l0].mlp_neurons = v;
            if (k == 1) s[l - l0].attn_heads = v;
            if (k == 2) s[l - l0].emb_attn_norm = v;
            if (k == 3) s[l - l0].emb_mlp_norm = v;
        }
    return s;
}

static inline void rs_free_layers(mf_layer_scores *s, int n) {
    for (int i = 0; i < n; i++) {
        free(s[i].mlp_neurons); free(s[i].attn_heads); free(s[i].emb_attn_norm); free(s[i].emb_mlp_norm);
    }
    free(s);
}

static inline void rs_depth(mf_depth_scores *d, double bi[RS_LAYERS], double ppl[RS_LAYERS],
                            double mi[RS_MI_ITER * RS_LAYERS]) {
    for (int l = 0; l < RS_LAYERS; l++) {
        bi[l] = rs_synth(l, 4, 0);
        ppl[l] = 10 + (l * 37 % 5) / 4.0;
    }
    for (int t = 0; t < RS_MI_ITER; t++)
        for (int l = 0; l < RS_LAYERS; l++) {
            int gone = 0;
            for (int u = 0; u < t; u++) gone |= rs_mi_order[u] == l;
            mi[t * RS_LAYERS + l] = gone ? NAN : rs_synth(l, 6, t);
        }
    *d = (mf_depth_scores){.bi = bi, .ppl = ppl, .ppl_full = 9.5, .n_mi_iter = RS_MI_ITER, .mi = mi,
                           .mi_order = (int *)rs_mi_order};
}

#endif
