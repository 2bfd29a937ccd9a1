/* distill.c - `minifuse distill`: options, validation and the closing line; the
 * schedule is src/train/distill.c (pipeline x data-parallel, checkpoints). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "cli/args.h"
#include "cli/common.h"
#include "train/distill.h"
#include "train/run.h"
#include "util/log.h"

int mf_cmd_distill(int argc, char **argv) {
    mf_distill_opts opts_v, *o = &opts_v;
    *o = (mf_distill_opts){.tokens = 1 << 20, .ctx = 256, .batch = 8, .dp = 1, .warmup = -1, .ckpt_every = 0, .keep = 2,
                        .lr = 1e-4f, .min_lr = -1, .wd = 0.1f, .clip = 1.0f, .temp = 1.0f, .kl = 1.0f, .ce = 0.0f, .seed = 1234,
                        .hidden = 0.0f, .hidden_loss = "cosine", .backend = "cpu", .schedule = "1f1b",
                        .teacher_weights = "auto"};
    const mf_opt opts[] = {
        {"teacher", MF_OPT_STR, &o->teacher, "teacher model (the original)", 1},
        {"student", MF_OPT_STR, &o->student, "student model to train (e.g. a pruned HF directory)", 1},
        {"text", MF_OPT_STR, &o->text, "training text (UTF-8), cut into windows of --ctx tokens", 1},
        {"out", MF_OPT_STR, &o->out, "output Hugging Face directory for the distilled student", 1},
        {"tokens", MF_OPT_U64, &o->tokens, "training tokens in all (default 1048576)", 0},
        {"ctx", MF_OPT_INT, &o->ctx, "tokens per window (default 256)", 0},
        {"batch", MF_OPT_INT, &o->batch, "windows per optimizer step, all replicas together (default 8)", 0},
        {"dp", MF_OPT_INT, &o->dp, "data-parallel replicas (ranks = dp x pipeline stages; default 1)", 0},
        {"schedule", MF_OPT_STR, &o->schedule, "pipeline schedule: 1f1b (default: at most P-s micro-batches alive on stage s) or gpipe (all forwards, then all backwards); same gradients", 0},
        {"stage-memory", MF_OPT_FLOAT, &o->stage_mem_mib, "modelled memory budget per pipeline stage in MiB: the layout keeps every stage within it, or fails naming the stage (default 0: none)", 0},
        {"micro-batches", MF_OPT_INT, &o->micro_batches, "micro-batches per step and replica, dividing --batch / --dp (default: one window each)", 0},
        {"lr", MF_OPT_FLOAT, &o->lr, "peak learning rate (default 1e-4)", 0},
        {"min-lr", MF_OPT_FLOAT, &o->min_lr, "final learning rate of the cosine (default lr/10)", 0},
        {"warmup", MF_OPT_INT, &o->warmup, "linear warm-up steps (default 5% of the steps)", 0},
        {"wd", MF_OPT_FLOAT, &o->wd, "AdamW weight decay on 2-D weights (default 0.1)", 0},
        {"clip", MF_OPT_FLOAT, &o->clip, "global gradient-norm clip, 0 = off (default 1.0)", 0},
        {"temp", MF_OPT_FLOAT, &o->temp, "distillation temperature (default 1)", 0},
        {"kl", MF_OPT_FLOAT, &o->kl, "weight of KL(teacher || student) on logits (default 1)", 0},
        {"ce", MF_OPT_FLOAT, &o->ce, "weight of cross-entropy on the data (default 0)", 0},
        {"hidden", MF_OPT_FLOAT, &o->hidden, "weight of the intermediate hidden-state loss (default 0; depth-pruned students)", 0},
        {"hidden-loss", MF_OPT_STR, &o->hidden_loss, "cosine (default) or nmse, between mapped student/teacher layer outputs", 0},
        {"teacher-weights", MF_OPT_STR, &o->teacher_weights, "the teacher's weights in memory: auto (default: the file's bf16/f16 when all its matrices are), bf16 or f32; the student is always float32", 0},
        {"teacher-topk", MF_OPT_INT, &o->topk, "use the teacher's top-K logits, computed once into --teacher-cache (default 0: full logits every step)", 0},
        {"teacher-cache", MF_OPT_STR, &o->tcache_path, "HDF5 file of the teacher's top-K logits (default OUT.teacher-topk.h5)", 0},
        {"seed", MF_OPT_U64, &o->seed, "seed of the data order (default 1234)", 0},
        {"recompute", MF_OPT_FLAG, &o->recompute, "recompute activations in the backward (less memory, same result)", 0},
        {"checkpoint-every", MF_OPT_INT, &o->ckpt_every, "write a checkpoint every K steps (default 0: only on signals)", 0},
        {"checkpoint-dir", MF_OPT_STR, &o->ckpt_dir, "checkpoint directory (default OUT.ckpt)", 0},
        {"keep", MF_OPT_INT, &o->keep, "complete checkpoints to keep (default 2)", 0},
        {"resume", MF_OPT_FLAG, &o->resume, "continue from the newest complete checkpoint", 0},
        {"max-steps", MF_OPT_INT, &o->max_steps, "stop after step N with a checkpoint, as on SIGTERM (to split a run into jobs; default 0: no limit)", 0},
        {"log", MF_OPT_STR, &o->log, "per-step JSON lines log (default OUT.train.jsonl)", 0},
        {"tokenizer", MF_OPT_STR, &o->tokenizer, "tokenizer.bin or GGUF file (default: the student's)", 0},
        {"force", MF_OPT_FLAG, &o->force, "replace --out if it exists", 0},
        {"backend", MF_OPT_STR, &o->backend, MF_BACKEND_HELP, 0},
        {"watchdog", MF_OPT_FLOAT, &o->watchdog, MF_WATCHDOG_HELP, 0},
    };
    const char *summary =
        "Distill a student from a teacher: forward KL on logits with temperature (Minitron), optional\n"
        "cross-entropy; pipeline-parallel over the ranks of a replica, data-parallel over --dp replicas;\n"
        "AdamW, warm-up + cosine LR, gradient clipping; HDF5 checkpoints (--checkpoint-every, --resume;\n"
        "SIGTERM, SIGUSR1 or SIGINT: checkpoint and exit).";
    if (mf_args_parse_or_die("distill", summary, opts, sizeof opts / sizeof opts[0], argc, argv)) return 0;
    if (o->ctx < 2 || o->batch < 1 || o->lr <= 0 || o->temp <= 0) mf_fatal("distill: --ctx >= 2, --batch >= 1, --lr > 0, --temp > 0 required");
    char ckpt_default[4200], log_default[4200];
    snprintf(ckpt_default, sizeof ckpt_default, "%s.ckpt", o->out);
    snprintf(log_default, sizeof log_default, "%s.train.jsonl", o->out);
    if (!o->ckpt_dir) o->ckpt_dir = ckpt_default;
    if (!o->log) o->log = log_default;
    char tc_default[4200];
    snprintf(tc_default, sizeof tc_default, "%s.teacher-topk.h5", o->out);
    if (!o->tcache_path) o->tcache_path = tc_default;
    if (o->topk < 0) mf_fatal("distill: --teacher-topk %d must not be negative", o->topk);
    if (o->stage_mem_mib < 0) mf_fatal("distill: --stage-memory %g must not be negative", o->stage_mem_mib);
    if (o->max_steps < 0) mf_fatal("distill: --max-steps %d must not be negative", o->max_steps);
    struct stat sb;
    if (stat(o->out, &sb) == 0 && !o->force) mf_fatal("distill: --out %s already exists (use --force to replace it)", o->out);
    size_t n;
    char text_id[64];
    int32_t *ids = mf_cli_training_tokens(o->student, o->tokenizer, o->text, &n, text_id);
    mf_distill_result r;
    mf_distill_run(o, MPI_COMM_WORLD, ids, n, text_id, &r);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0)
        mf_log("distill: %lld steps in %.1fs (%.1f tokens/s)%s", (long long)r.steps_done, r.seconds,
               (double)r.steps_done * o->batch * o->ctx / r.seconds, r.finished ? "; wrote the student" : "");
    free(ids);
    return 0;
}
