/* fuse_run.h - FuseGPT layer fusion of a whole model, restartable: the run.
 *
 * Until `drop` blocks are gone, one iteration:
 *   1. Macro Influence of every surviving block on the first mi_samples
 *      windows (pipelined, compress/macro_influence.h); the least influential
 *      block is removed (or the next of `blocks`, when given).
 *   2. Its window (`window` blocks: half before, the rest after, shifted to
 *      stay inside the model) is gathered onto every rank (broadcast by the
 *      layers' owners): a window that crosses stage boundaries needs nothing
 *      special.
 *   3. The window's input for every training window (`samples`) comes from a
 *      pipelined forward of the blocks before it; sample s lives on rank
 *      s mod P. Each rank computes the teacher output (the window with the
 *      block) of its samples.
 *   4. Local distillation, data-parallel over all ranks: each step takes a
 *      batch of `batch` samples (the same permutation for any P), element j
 *      goes to rank j mod P (its input and target travel from the owner);
 *      W_eff = W + B A + (U V) * P is materialized, the student window runs
 *      forward and backward, the gradients of A, B, U, V and the norm scales
 *      (one flat buffer) are summed over ranks (mpi/collective.h); Adam
 *      (0.9, 0.95), cosine to 0, two learning rates (lr for the gates U V,
 *      lr_base for A, B, norms).
 *   5. Fold: every receiving block's weights become W_eff (fp32); the owners
 *      keep them; the block is removed.
 * The model keeps its original stage partition; removed blocks are skipped.
 * Checkpoints (train/run.h, train/checkpoint.h): the weights of every block
 * changed so far under global names, the removal order and every iteration's
 * MI, and mid-iteration the trainable tensors with their Adam moments; one
 * after every fold and every ckpt_every steps. resume continues at the block
 * and step where the run stopped, with identical results.
 * Output: a Hugging Face directory of an ordinary Llama with fewer layers. */
#ifndef MF_FUSE_RUN_H
#define MF_FUSE_RUN_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

enum { MF_FUSE_LOSS_KL_BATCH, MF_FUSE_LOSS_NMSE, MF_FUSE_LOSS_COSINE };

typedef struct mf_fuse_opts {
    const char *model, *text, *out, *tokenizer, *ckpt_dir, *log, *loss_name, *blocks_s, *backend;
    int *blocks;               /* removal order given, no MI (NULL: by MI) */
    int drop, window, rank, samples, mi_samples, epochs, ctx, batch, ckpt_every, keep, resume, recompute, force;
    float lr, lr_base;
    float watchdog;            /* seconds without progress before the job is aborted (0 auto, < 0 off) */
    int max_steps;             /* > 0: stop at the first checkpoint at or after global step N (--max-steps) */
    unsigned long long seed;
    int loss;                  /* MF_FUSE_LOSS_* */
} mf_fuse_opts;

/* One iteration's record. */
typedef struct mf_fuse_iter {
    int block, first, count;   /* removed block; window start and size (count 0: unknown, older checkpoint) */
    double loss_first, loss_last, seconds;
    double sec_mi, sec_train;  /* parts of seconds (NaN: unknown) */
} mf_fuse_iter;

typedef struct mf_fuse_result {
    int finished;              /* 1: all blocks removed and the model written */
    int n_layers_before, removed;
    int64_t tokens;
    double seconds;            /* this process's loop */
    int *order;                /* [removed] */
    double *mi;                /* [removed][n_layers_before] (NaN: removed or not computed) */
    mf_fuse_iter *iters;       /* [removed] */
} mf_fuse_result;

/* Collective over comm. ids[n]: the calibration tokens; text_id their
 * identity (checkpoints). Errors end the job. */
void mf_fuse_run(const mf_fuse_opts *o, MPI_Comm comm, const int32_t *ids, size_t n, const char *text_id,
                 mf_fuse_result *res);
void mf_fuse_result_free(mf_fuse_result *res);

/* "kl-batch" | "nmse" | "cosine" -> MF_FUSE_LOSS_*, -1 for anything else. */
int mf_fuse_loss_parse(const char *s);

#endif
