/* fuse.h - FuseGPT learnable layer fusion of one window of blocks (one process).
 *
 * A window is n consecutive surviving blocks of the current model, one of which
 * (window index `drop`) is being removed. The teacher is the window as it is;
 * the student is the other n-1 blocks, where every linear weight W (q, k, v, o,
 * gate, up, down) of a receiving block becomes
 *     W_eff = W + B A + (U V) * P          (* elementwise)
 * with P the removed block's weight of the same name, A [r][in] and V [r][in]
 * Kaiming-uniform U(-1/sqrt(in), 1/sqrt(in)) (torch's kaiming_uniform_(a=sqrt 5)),
 * B [out][r] and U [out][r] zero, so that at the start W_eff == W exactly and
 * the student is "the window without the block". The RMSNorm scales of the
 * receiving blocks are trainable; q/k/v biases (Qwen2) stay as they are. The
 * trainable tensors form two lists with their own learning rates, as in the
 * official code: `gates` (U, V) and `base` (A, B, norm scales).
 *
 * One optimizer step: mf_fuse_zero_grad, mf_fuse_materialize (W_eff from the
 * current tensors), per sample mf_fuse_forward, the loss, mf_fuse_backward
 * (accumulates dL/dW_eff and the norm gradients), then mf_fuse_param_grads maps
 * dL/dW_eff to A, B, U, V. mf_fuse_fold writes W_eff and the norm scales into
 * the receiving blocks: the result is an ordinary block.
 *
 * Names (checkpoints): fuse.layers.<L>.<module>.{lora_A,lora_B,gate_U,gate_V}
 * and fuse.layers.<L>.<norm>.weight, L the block's index in the original model. */
#ifndef MF_FUSE_H
#define MF_FUSE_H

#include <stdint.h>
#include "model/model.h"
#include "train/params.h"
#include "train/train_model.h"
#include "util/err.h"

#define MF_FUSE_LINEARS 7   /* q, k, v, o, gate, up, down */

typedef struct mf_fuse_lin {
    int out, in;
    const float *W, *P;     /* frozen [out][in]: the receiving weight, the removed block's */
    float *A, *B, *U, *V;   /* trainable: data of the params */
    float *dA, *dB, *dU, *dV;
    float *W_eff, *G;       /* [out][in]: what the forward uses, dL/dW_eff */
} mf_fuse_lin;

typedef struct mf_fuse_window {
    const mf_backend *be;    /* every tensor of the window is memory of be (blocks, adapters, W_eff, gradients) */
    mf_config cfg;           /* of the model (n_layers replaced in the two window models) */
    int n, drop, rank;       /* teacher blocks, window index of the removed one, adapter rank */
    mf_layer *blocks;        /* [n] the window's blocks (caller's, writable: fold writes them) */
    mf_model teacher, student; /* no embedding / head; layers of the student point to W_eff */
    mf_layer *student_layers;  /* [n-1] */
    int n_lin;
    mf_fuse_lin *lin;        /* [(n-1) * 7] */
    mf_params gates, base;   /* trainable (owned) */
    float *grad_flat;        /* [grad_n] the gradients of both lists, one buffer (one data-parallel sum) */
    size_t grad_n, grad_pos;
    mf_params wgrad;         /* W_eff and norm scales with their gradients, for mf_train_backward */
    mf_train_state **ts;     /* [n_slots] one per sample in flight */
    mf_state *tst;           /* teacher forward */
    int n_slots, max_T;
    float *scratch;          /* [largest out*in] */
    float *x_dev;            /* [max_T][D] a device backend's copy of a host input (NULL on host backends) */
} mf_fuse_window;

/* blocks[n] (n >= 2): the window, memory of be; orig[n]: their indices in the
 * original model (names); drop: window index of the block to remove; rank >= 1;
 * seed: the Kaiming draws (same seed, same tensors on every rank, drawn on the
 * host and uploaded). n_slots samples can be held between forward and backward. */
int mf_fuse_window_init(mf_fuse_window *w, const mf_backend *be, const mf_config *c, mf_layer *blocks, const int *orig,
                        int n, int drop, int rank, uint64_t seed, int max_T, int n_slots, int recompute, mf_err *err);
void mf_fuse_window_free(mf_fuse_window *w);

/* The teacher window (all n blocks) on x_in [T][D] -> out [T][D] (both host memory). */
void mf_fuse_teacher(mf_fuse_window *w, const float *x_in, int T, float *out);
void mf_fuse_zero_grad(mf_fuse_window *w);
/* W_eff of every receiving linear from W, P and the current A, B, U, V. */
void mf_fuse_materialize(mf_fuse_window *w);
/* The student window on x_in [T][D] (host memory); returns its output [T][D] (in
 * slot's state: backend memory). */
const float *mf_fuse_forward(mf_fuse_window *w, int slot, const float *x_in, int T);
/* Backward of slot's last forward from dout [T][D] (backend memory): accumulates dL/dW_eff and the norm gradients. */
void mf_fuse_backward(mf_fuse_window *w, int slot, const float *dout);
/* dL/dW_eff -> the gradients of A, B, U, V (written). */
void mf_fuse_param_grads(mf_fuse_window *w);
/* Fold: the receiving blocks of w->blocks get W_eff (materialized from the
 * current tensors) and the trained norm scales. */
void mf_fuse_fold(mf_fuse_window *w);
/* Trainable parameter count (both lists). */
size_t mf_fuse_trainable(const mf_fuse_window *w);

/* Window of `size` blocks around position p of n surviving blocks: `before` =
 * size/2 blocks before p and size - before - 1 after, shifted to stay inside
 * [0, n) (the official group: 4 before, the block, 3 after). Returns the first
 * position; *count = min(size, n). */
int mf_fuse_window_span(int n, int p, int size, int *count);

#endif
