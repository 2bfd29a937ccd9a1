/* distill.h - knowledge distillation of a student from its teacher: the schedule.
 *
 * Ranks: world = dp replicas x P pipeline stages; rank = replica * P + stage.
 * Teacher and student are split jointly over the P stages of a replica
 * (train/partition.h): stage s runs the teacher layers its student layers came
 * from, balanced by a modelled compute and memory cost. One optimizer step:
 * this replica's share of the global batch in m micro-batches of k windows;
 *   F(j), for each window of micro-batch j:
 *     teacher forward -> teacher logits on the last stage
 *     student training forward (activations kept per window) -> student logits
 *     loss = kl * KL_tau(teacher || student) + ce * CE(data), mean over the
 *            global batch's tokens; head backward
 *   B(j): gradient back through the stages, window by window
 *   1F1B (default): stage s runs min(P-s-1, m) forwards, then alternates
 *     F(j), B(j-w) and ends with the remaining backwards: at most P-s
 *     micro-batches' activations alive; GPipe: F(0..m-1), then B(0..m-1).
 *   Backwards run in micro-batch order in both, so the gradients are the same
 *   bits; on the last window each layer's gradients start their data-parallel
 *   sum as soon as the layer is done (mpi/collective.h buckets, one per layer)
 *   tied embeddings: first + last stage sum their gradients; replicas sum the
 *   rest; global-norm clipping; AdamW; warm-up + cosine LR.
 * Restartable through train/run.h: a stop signal checkpoints at the end of the
 * step; --resume continues from the newest complete checkpoint with identical
 * results on the same layout. */
#ifndef MF_DISTILL_H
#define MF_DISTILL_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mf_distill_opts {
    const char *teacher, *student, *out, *ckpt_dir, *log, *tokenizer, *backend;
    const char *text;          /* for messages and the teacher cache */
    unsigned long long tokens, seed;
    int ctx, batch, dp, warmup, ckpt_every, keep, resume, recompute, force;
    float lr, min_lr, wd, clip, temp, kl, ce, hidden;
    float watchdog;            /* seconds without progress before the job is aborted (0 auto, < 0 off) */
    const char *hidden_loss, *tcache_path;
    const char *teacher_weights; /* --teacher-weights: auto, bf16, f32 (the teacher only; the student is float32) */
    int topk;
    const char *schedule;      /* "1f1b" (NULL: the same) or "gpipe" */
    int micro_batches;         /* per step and replica; 0: one per window (batch / dp) */
    float stage_mem_mib;       /* > 0: modelled memory budget per stage of the joint layout (MiB) */
    int max_steps;             /* > 0: checkpoint and exit after this step (--max-steps) */
} mf_distill_opts;

typedef struct mf_distill_result {
    int64_t steps, steps_done; /* of the whole run; done by this process */
    double seconds;            /* of this process's training loop */
    int finished;              /* 1: all steps done and the student written */
} mf_distill_result;

/* Collective over world. ids[n]: the training tokens (every rank); text_id:
 * their identity (mf_cli_tokens_id) for the checkpoints. Errors end the job. */
void mf_distill_run(const mf_distill_opts *o, MPI_Comm world, const int32_t *ids, size_t n, const char *text_id,
                    mf_distill_result *res);

#endif
