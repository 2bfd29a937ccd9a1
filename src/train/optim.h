/* optim.h - AdamW, the learning-rate schedule, global-norm gradient clipping
 * and a seedable random number generator whose state can be checkpointed.
 *
 * AdamW follows torch.optim.AdamW (decoupled weight decay, bias correction,
 * the single-tensor CPU code path) operation for operation in float32:
 *   t += 1
 *   p  = p * (1 - lr*wd)                     (wd = 0 for 1-D tensors unless decay_1d)
 *   m  = m + (1-b1) * (g - m)                (torch lerp_)
 *   v  = v * b2 + (1-b2) * g * g             (torch mul_ + addcmul_)
 *   p  = p + (-lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * where g is the stored gradient times a grad scale (the clip factor). The m
 * and v updates use a fused multiply-add like torch's vectorized CPU kernels;
 * torch's vectorized float sqrt (MKL) is not always correctly rounded, ours is,
 * so trajectories agree to ~1e-7 relative rather than to the bit.
 *
 * Schedule (step = number of updates already done, 0-based):
 *   step < warmup:           lr = max_lr * (step + 1) / warmup
 *   step >= total:           lr = min_lr
 *   otherwise:               r = (step - warmup) / (total - warmup)
 *                            lr = min_lr + 0.5 * (max_lr - min_lr) * (1 + cos(pi * r))
 *
 * RNG: PCG64 (XSL-RR 128/64, the same stream as numpy.random.PCG64 for the
 * same 128-bit state and increment), seeded through splitmix64. */
#ifndef MF_OPTIM_H
#define MF_OPTIM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include "train/params.h"

/* ---------------------------------------------------------------- AdamW */

typedef struct mf_adamw_opts {
    double beta1, beta2;   /* 0.9, 0.95 */
    double eps;            /* 1e-8 */
    double weight_decay;   /* 0.1 */
    int decay_1d;          /* 1: also decay 1-D tensors (norm weights, biases); default 0 */
} mf_adamw_opts;

typedef struct mf_adamw {
    mf_adamw_opts o;
    int n;                 /* = the parameter list's n */
    int64_t step;          /* updates done (torch's state['step']) */
    size_t *numel;         /* [n] */
    float **m, **v;        /* [n][numel] first and second moments */
    const mf_backend *be;  /* whose memory m and v are (the parameter list's; NULL: host malloc) */
} mf_adamw;

void mf_adamw_defaults(mf_adamw_opts *o);
/* State for every tensor of ps (zero moments, step 0). o NULL = defaults. */
void mf_adamw_init(mf_adamw *opt, const mf_params *ps, const mf_adamw_opts *o);
void mf_adamw_free(mf_adamw *opt);
/* One update of every tensor of ps with gradient grad * grad_scale. The list
 * must be the one opt was made for (same order and sizes). */
void mf_adamw_step(mf_adamw *opt, mf_params *ps, double lr, float grad_scale);
/* Does tensor p get weight decay under these options? */
int mf_adamw_decays(const mf_adamw_opts *o, const mf_param *p);

/* ---------------------------------------------------------------- schedule */

typedef struct mf_lr_sched {
    double max_lr, min_lr;
    int64_t warmup;        /* linear warm-up updates (0 = none) */
    int64_t total;         /* the cosine reaches min_lr at this step */
} mf_lr_sched;

double mf_lr_at(const mf_lr_sched *s, int64_t step);

/* ---------------------------------------------------------------- clipping */

/* Global L2 norm of the gradients of the ranks of comm (one pipeline replica:
 * each rank holds a disjoint part of the model). Each rank sums its squares in
 * double in list order, the per-rank sums are gathered (MPI_Allgather) and
 * added in rank order on every rank: all ranks get the same bits, and the
 * same partition gives the same bits on every run. Collective. */
double mf_grad_global_norm(const mf_params *ps, MPI_Comm comm);
/* min(1, max_norm / (norm + 1e-6)) in float32 like
 * torch.nn.utils.clip_grad_norm_; 1 when max_norm <= 0 (clipping off). */
float mf_clip_factor(double norm, double max_norm);

/* ---------------------------------------------------------------- RNG */

/* PCG64 state: s[0..1] = 128-bit state (high, low), s[2..3] = 128-bit odd
 * increment (high, low). Plain data: save and restore by copying. */
typedef struct mf_rng {
    uint64_t s[4];
} mf_rng;

/* splitmix64: advance *x and return the next output. */
uint64_t mf_splitmix64(uint64_t *x);
/* state and increment from four splitmix64 outputs of seed (increment made odd). */
void mf_rng_seed(mf_rng *r, uint64_t seed);
uint64_t mf_rng_next(mf_rng *r);
/* Uniform double in [0, 1): the top 53 bits of one draw. */
double mf_rng_uniform(mf_rng *r);
/* Uniform integer in [0, n) (n > 0), unbiased (Lemire's multiply + rejection). */
uint64_t mf_rng_below(mf_rng *r, uint64_t n);
/* Fisher-Yates: for i = n-1 down to 1, swap a[i] and a[mf_rng_below(r, i+1)]. */
void mf_rng_shuffle(mf_rng *r, int64_t *a, int64_t n);
/* a[0..n) = 0..n-1 shuffled by a generator seeded with seed (mf_rng_seed). */
void mf_rng_permutation(uint64_t seed, int64_t *a, int64_t n);

#endif
