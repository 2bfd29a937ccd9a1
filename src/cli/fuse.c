/* fuse.c - `minifuse fuse`: options, validation and the JSON summary; the run
 * is src/compress/fuse_run.c (FuseGPT learnable layer fusion, restartable). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/args.h"
#include "cli/common.h"
#include "compress/fuse_run.h"
#include "train/run.h"
#include "util/log.h"

static void print_summary(const mf_fuse_opts *opts, const mf_fuse_result *f) {
    json_t *its = json_array();
    for (int i = 0; i < f->removed; i++) {
        json_t *row = json_array();
        for (int l = 0; l < f->n_layers_before; l++) {
            double v = f->mi[(size_t)i * f->n_layers_before + l];
            json_array_append_new(row, isnan(v) ? json_null() : json_real(v));
        }
        const mf_fuse_iter *r = &f->iters[i];
        json_t *o = json_pack("{s:i, s:o}", "block", f->order[i], "mi", row);
        if (r->count) { /* not known for iterations done before a resume from an older checkpoint */
            json_object_set_new(o, "window_first", json_integer(r->first));
            json_object_set_new(o, "window_blocks", json_integer(r->count));
            json_object_set_new(o, "loss_first", json_real(r->loss_first));
            json_object_set_new(o, "loss_last", json_real(r->loss_last));
            json_object_set_new(o, "seconds", json_real(r->seconds));
            if (!isnan(r->sec_mi) && !isnan(r->sec_train)) {
                json_object_set_new(o, "seconds_mi", json_real(r->sec_mi));
                json_object_set_new(o, "seconds_train", json_real(r->sec_train));
                /* the rest: gathering the window, the prefix and teacher forwards of its inputs, the fold, checkpoints */
                json_object_set_new(o, "seconds_setup_fold", json_real(r->seconds - r->sec_mi - r->sec_train));
            }
        }
        json_array_append_new(its, o);
    }
    json_t *j = json_pack("{s:s, s:i, s:i, s:I, s:f, s:o}", "out", opts->out, "n_layers_before", f->n_layers_before, "n_layers",
                          f->n_layers_before - f->removed, "tokens", (json_int_t)f->tokens, "seconds", f->seconds, "iterations", its);
    char *s = json_dumps(j, JSON_INDENT(1));
    printf("%s\n", s);
    free(s);
    json_decref(j);
}

/* --blocks "17,4,12": distinct block indices, as many as --drop-layers. */
static int *parse_blocks(const char *s, int drop) {
    const long L = 1L << 30; /* the model bound is checked once it is open */
    int *b = mf_calloc((size_t)drop, sizeof *b), n = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *end;
        long v = strtol(tok, &end, 10);
        if (*end || v < 0 || v >= L) mf_fatal("fuse: --blocks entry '%s' is not a block index", tok);
        for (int i = 0; i < n; i++) if (b[i] == v) mf_fatal("fuse: --blocks names block %ld twice", v);
        if (n == drop) mf_fatal("fuse: --blocks names more than --drop-layers %d blocks", drop);
        b[n++] = (int)v;
    }
    if (n != drop) mf_fatal("fuse: --blocks names %d blocks, --drop-layers is %d", n, drop);
    return b;
}

int mf_cmd_fuse(int argc, char **argv) {
    int json = 0;
    const char *weights = "f32";
    mf_fuse_opts opts_v, *o = &opts_v;
    *o = (mf_fuse_opts){.window = 8, .rank = 128, .samples = 64, .mi_samples = -1, .epochs = 20, .ctx = 256, .batch = 8,
                     .keep = 2, .lr = 1e-2f, .lr_base = 1e-3f, .loss_name = "nmse", .seed = 0, .backend = "cpu"};
    const mf_opt opts[] = {
        {"model", MF_OPT_STR, &o->model, "model: HF directory, GGUF file or llama2.c .bin", 1},
        {"text", MF_OPT_STR, &o->text, "calibration / fine-tuning text (UTF-8), cut into windows of --ctx tokens", 1},
        {"out", MF_OPT_STR, &o->out, "output Hugging Face directory (must not exist unless --force)", 1},
        {"drop-layers", MF_OPT_INT, &o->drop, "blocks to remove, one per iteration", 1},
        {"blocks", MF_OPT_STR, &o->blocks_s, "remove these blocks in this order (comma list) instead of choosing by Macro Influence", 0},
        {"window", MF_OPT_INT, &o->window, "blocks in a fusion window, the removed one included: half before, the rest after (default 8)", 0},
        {"rank", MF_OPT_INT, &o->rank, "rank of the LoRA term B A and of the gate U V (default 128)", 0},
        {"samples", MF_OPT_INT, &o->samples, "training windows, the first of the text (default 64)", 0},
        {"mi-samples", MF_OPT_INT, &o->mi_samples, "windows for Macro Influence (default min(32, --samples))", 0},
        {"epochs", MF_OPT_INT, &o->epochs, "passes over the samples per removed block (default 20)", 0},
        {"ctx", MF_OPT_INT, &o->ctx, "tokens per window (default 256)", 0},
        {"batch", MF_OPT_INT, &o->batch, "windows per step; the kl-batch softmax runs over them (default 8)", 0},
        {"lr", MF_OPT_FLOAT, &o->lr, "learning rate of the gates U, V (default 1e-2; official 1e-3, tuned for 2560 steps per block)", 0},
        {"lr-base", MF_OPT_FLOAT, &o->lr_base, "learning rate of the LoRA A, B and the norm scales (default 1e-3; official 9.65e-6)", 0},
        {"loss", MF_OPT_STR, &o->loss_name, "nmse (default, measured best), kl-batch (the official code's softmax over the batch axis) or cosine", 0},
        {"seed", MF_OPT_U64, &o->seed, "seed of the adapter initialization and the data order (default 0)", 0},
        {"recompute", MF_OPT_FLAG, &o->recompute, "recompute activations in the backward (less memory, same result)", 0},
        {"checkpoint-every", MF_OPT_INT, &o->ckpt_every, "also checkpoint every K steps inside an iteration (default 0)", 0},
        {"checkpoint-dir", MF_OPT_STR, &o->ckpt_dir, "checkpoint directory (default OUT.ckpt); one after every block", 0},
        {"keep", MF_OPT_INT, &o->keep, "complete checkpoints to keep (default 2)", 0},
        {"resume", MF_OPT_FLAG, &o->resume, "continue from the newest complete checkpoint", 0},
        {"max-steps", MF_OPT_INT, &o->max_steps, "stop at the first checkpoint at or after global step N, as on SIGTERM (default 0: no limit)", 0},
        {"log", MF_OPT_STR, &o->log, "per-step JSON lines log (default OUT.fuse.jsonl)", 0},
        {"tokenizer", MF_OPT_STR, &o->tokenizer, "tokenizer.bin or GGUF file (default: from the model)", 0},
        {"force", MF_OPT_FLAG, &o->force, "replace --out if it exists", 0},
        {"json", MF_OPT_FLAG, &json, "print a JSON summary", 0},
        {"backend", MF_OPT_STR, &o->backend, MF_BACKEND_HELP, 0},
        {"weights", MF_OPT_STR, &weights, "f32 only: the frozen base is held in float32 (bf16/f16 weights are not supported by fuse)", 0},
        {"watchdog", MF_OPT_FLOAT, &o->watchdog, MF_WATCHDOG_HELP, 0},
    };
    const char *summary =
        "FuseGPT: remove blocks one at a time by Macro Influence, folding each into its neighbours with\n"
        "learnable low-rank updates (W + B A + (U V) * P) trained by local distillation of the window;\n"
        "writes an ordinary Llama with fewer layers. Restartable (checkpoint after every block, --resume;\n"
        "SIGTERM, SIGUSR1 or SIGINT: checkpoint and exit).";
    if (mf_args_parse_or_die("fuse", summary, opts, sizeof opts / sizeof opts[0], argc, argv)) return 0;
    if (mf_cli_weights("fuse", weights) != MF_WEIGHTS_F32)
        mf_fatal("fuse: --weights %s is not supported: the fusion window trains W + B A + (U V) * P on the frozen base W and "
                 "writes the folded weights in float32, so fuse holds the model in float32 (--weights f32)", weights);
    o->loss = mf_fuse_loss_parse(o->loss_name);
    if (o->loss < 0) mf_fatal("fuse: --loss '%s' is not one of kl-batch, nmse, cosine", o->loss_name);
    if (o->ctx < 2 || o->samples < 1 || o->batch < 1 || o->epochs < 1 || o->window < 2 || o->rank < 1 || o->lr <= 0 ||
        o->lr_base < 0)
        mf_fatal("fuse: need --ctx >= 2, --samples >= 1, --batch >= 1, --epochs >= 1, --window >= 2, --rank >= 1, --lr > 0, --lr-base >= 0");
    if (o->samples < o->batch) mf_fatal("fuse: --samples %d is smaller than --batch %d", o->samples, o->batch);
    if (o->mi_samples < 0) o->mi_samples = o->samples < 32 ? o->samples : 32;
    if (o->mi_samples < 1 || o->mi_samples > o->samples) mf_fatal("fuse: --mi-samples %d must be between 1 and --samples %d", o->mi_samples, o->samples);
    char ckpt_default[4200], log_default[4200];
    snprintf(ckpt_default, sizeof ckpt_default, "%s.ckpt", o->out);
    snprintf(log_default, sizeof log_default, "%s.fuse.jsonl", o->out);
    if (!o->ckpt_dir) o->ckpt_dir = ckpt_default;
    if (!o->log) o->log = log_default;
    struct stat sb;
    if (stat(o->out, &sb) == 0 && !o->force) mf_fatal("fuse: --out %s already exists (use --force to replace it)", o->out);
    if (o->drop < 1) mf_fatal("fuse: --drop-layers %d must be at least 1", o->drop);
    if (o->max_steps < 0) mf_fatal("fuse: --max-steps %d must not be negative", o->max_steps);
    if (o->blocks_s) o->blocks = parse_blocks(o->blocks_s, o->drop);
    size_t n;
    char text_id[64];
    int32_t *ids = mf_cli_training_tokens(o->model, o->tokenizer, o->text, &n, text_id);
    mf_fuse_result r;
    mf_fuse_run(o, MPI_COMM_WORLD, ids, n, text_id, &r);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (r.finished && rank == 0) {
        mf_log("fuse: removed %d blocks in %.1fs, wrote %s", r.removed, r.seconds, o->out);
        if (json) print_summary(o, &r);
    }
    mf_fuse_result_free(&r);
    free(o->blocks);
    free(ids);
    return 0;
}
