/* ckpt_synth.h - a synthetic pipeline-stage parameter list for the checkpoint
 * tests (tests/test_checkpoint.c and tests/tools/ckpt_writer.c).
 *
 * A 5-layer Llama-shaped model (hidden 8, ffn 12, kv 4, vocab 40, untied head)
 * with Hugging Face tensor names. Stage s of P owns layers [l0, l1) split like
 * the pipeline (first stages take the extra layer), stage 0 the embedding, the
 * last stage the final norm and the head. Every value is a function of the
 * tensor's name, the element index, the kind (weight, m, v, grad) and a salt,
 * so any split of the model gives the same numbers for the same tensor. */
#ifndef CKPT_SYNTH_H
#define CKPT_SYNTH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/params.h"

enum { CS_LAYERS = 5, CS_D = 8, CS_F = 12, CS_KV = 4, CS_V = 40, CS_TENSORS = 3 + 9 * CS_LAYERS };
enum { CS_DATA, CS_M, CS_V_, CS_GRAD };

static inline uint64_t cs_hash(const char *name, uint64_t kind, uint64_t salt, uint64_t j) {
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = name; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ULL;
    h ^= kind * 0x9e3779b97f4a7c15ULL ^ salt * 0xbf58476d1ce4e5b9ULL ^ j * 0x94d049bb133111ebULL;
    h ^= h >> 31;
    h *= 0xd6e8feb86659fd93ULL;
    h ^= h >> 32;
    return h;
}

/* A float with all mantissa bits used, in (-2, 2); v (second moment) >= 0. */
static inline float cs_val(const char *name, int kind, int salt, size_t j) {
    uint64_t h = cs_hash(name, (uint64_t)kind, (uint64_t)salt, j);
    float x = (float)((double)(int32_t)(uint32_t)h * 0x1.0p-30);
    return kind == CS_V_ ? (x < 0 ? -x : x) * 1e-3f : x;
}

static inline void cs_add(mf_params *ps, const char *name, int64_t d0, int64_t d1, int salt) {
    ps->p = realloc(ps->p, sizeof *ps->p * (size_t)(ps->n + 1));
    mf_param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = d1 ? 2 : 1;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->numel = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    p->data = malloc(p->numel * sizeof(float));
    p->grad = malloc(p->numel * sizeof(float));
    for (size_t j = 0; j < p->numel; j++) {
        p->data[j] = cs_val(name, CS_DATA, salt, j);
        p->grad[j] = cs_val(name, CS_GRAD, salt, j);
    }
    ps->total += p->numel;
}

/* Layers [l0, l1) of stage s of P. */
static inline void cs_range(int s, int P, int *l0, int *l1) {
    int base = CS_LAYERS / P, extra = CS_LAYERS % P;
    *l0 = s * base + (s < extra ? s : extra);
    *l1 = *l0 + base + (s < extra);
}

/* Stage s of P (P = 1: the whole model); opt (may be NULL) gets the synthetic
 * moments and step 7. */
static inline void cs_stage(int s, int P, int salt, mf_params *ps, mf_adamw *opt) {
    memset(ps, 0, sizeof *ps);
    int l0, l1;
    cs_range(s, P, &l0, &l1);
    char n[128];
    if (s == 0) cs_add(ps, "model.embed_tokens.weight", CS_V, CS_D, salt);
    for (int l = l0; l < l1; l++) {
#define L(suffix, d0, d1) do { snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix); cs_add(ps, n, d0, d1, salt); } while (0)
        L("input_layernorm.weight", CS_D, 0);
        L("self_attn.q_proj.weight", CS_D, CS_D);
        L("self_attn.k_proj.weight", CS_KV, CS_D);
        L("self_attn.v_proj.weight", CS_KV, CS_D);
        L("self_attn.o_proj.weight", CS_D, CS_D);
        L("post_attention_layernorm.weight", CS_D, 0);
        L("mlp.gate_proj.weight", CS_F, CS_D);
        L("mlp.up_proj.weight", CS_F, CS_D);
        L("mlp.down_proj.weight", CS_D, CS_F);
#undef L
    }
    if (s == P - 1) {
        cs_add(ps, "model.norm.weight", CS_D, 0, salt);
        cs_add(ps, "lm_head.weight", CS_V, CS_D, salt);
    }
    if (!opt) return;
    mf_adamw_init(opt, ps, NULL);
    opt->step = 7;
    for (int i = 0; i < ps->n; i++)
        for (size_t j = 0; j < ps->p[i].numel; j++) {
            opt->m[i][j] = cs_val(ps->p[i].name, CS_M, salt, j);
            opt->v[i][j] = cs_val(ps->p[i].name, CS_V_, salt, j);
        }
}

/* Zero the weights and moments (before reading into them). */
static inline void cs_zero(mf_params *ps, mf_adamw *opt) {
    for (int i = 0; i < ps->n; i++) {
        memset(ps->p[i].data, 0, ps->p[i].numel * sizeof(float));
        if (opt) memset(opt->m[i], 0, ps->p[i].numel * sizeof(float));
        if (opt) memset(opt->v[i], 0, ps->p[i].numel * sizeof(float));
    }
    if (opt) opt->step = 0;
}

/* Bit-exact comparison with the synthetic values; 0 or -1 with why. */
static inline int cs_check(const mf_params *ps, const mf_adamw *opt, int salt, char *why, size_t cap) {
    for (int i = 0; i < ps->n; i++) {
        const mf_param *p = &ps->p[i];
        for (size_t j = 0; j < p->numel; j++) {
            float want[3] = {cs_val(p->name, CS_DATA, salt, j), cs_val(p->name, CS_M, salt, j),
                             cs_val(p->name, CS_V_, salt, j)};
            float got[3] = {p->data[j], opt ? opt->m[i][j] : want[1], opt ? opt->v[i][j] : want[2]};
            for (int k = 0; k < 3; k++)
                if (memcmp(&got[k], &want[k], sizeof(float)) != 0) {
                    snprintf(why, cap, "%s %s[%zu] = %.9g, expected %.9g", k == 0 ? "weight" : k == 1 ? "m" : "v",
                             p->name, j, got[k], want[k]);
                    return -1;
                }
        }
    }
    if (opt && opt->step != 7) {
        snprintf(why, cap, "adam step %lld, expected 7", (long long)opt->step);
        return -1;
    }
    return 0;
}

static inline void cs_free(mf_params *ps, mf_adamw *opt) {
    for (int i = 0; i < ps->n; i++) free(ps->p[i].data);
    mf_params_free(ps);
    if (opt) mf_adamw_free(opt);
}

/* The metadata the tests write (rng: replica r's is seeded 1000 + r). */
static inline void cs_meta(mf_train_meta *m, int64_t step, int replica) {
    memset(m, 0, sizeof *m);
    m->step = step;
    m->tokens = step * 4096;
    m->data_pos = step * 17 + 3;
    m->lr = 2.5e-4;
    m->sched = (mf_lr_sched){.max_lr = 3e-4, .min_lr = 3e-5, .warmup = 10, .total = 1000};
    mf_rng_seed(&m->rng, 1000 + (uint64_t)replica);
    m->options_json = "{\"lr\": 0.0003, \"keep\": 2}";
    m->student = "synthetic/student";
    m->student_sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    m->teacher = "synthetic/teacher";
    m->teacher_sha = "fedcba";
}

#endif
