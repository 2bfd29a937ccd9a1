/* score.c - `minifuse score`: importance of widths and blocks on calibration text.
 *
 * One streaming pass over the calibration windows (memory independent of their
 * number), pipelined over the ranks. Per window:
 *   1. the full forward, with hooks that accumulate Minitron width statistics
 *      and Block Importance and cache the input of every owned layer;
 *   2. for every block i, the model without i, started from the cached input
 *      of block i (blocks before i are not recomputed): the last rank compares
 *      the final hidden state with the full model's (Macro Influence) and
 *      scores the tokens (perplexity with block i removed).
 * Macro Influence is iterative: after a pass, the least influential block is
 * removed and the next pass scores the remaining blocks (--mi-iters passes
 * over the first --mi-samples windows).
 * With --checkpoint-dir (or --checkpoint-every, --resume, --max-steps) the pass
 * is restartable: every running sum is checkpointed (compress/score_ckpt.h)
 * and a resumed run, on any number of ranks, writes the rankings of an
 * uninterrupted one. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/common.h"
#include "compress/importance.h"
#include "compress/macro_influence.h"
#include "compress/score_ckpt.h"
#include "compress/score_out.h"
#include "model/loss.h"
#include "collective.h"
#include "stage.h"
#include "tags.h"
#include "util/log.h"
#include "io/safetensors.h" /* mf_dtype_name */
#include "version.h"

typedef struct score_opts {
    const char *model, *text, *out, *metrics, *agg_seq, *agg_batch, *tokenizer, *backend, *weights, *ckpt_dir;
    int samples, ctx, mi_iters, mi_samples, json, ckpt_every, keep, resume, max_steps;
    int want_width, want_bi, want_ppl, want_mi;
    mf_agg seq, batch;
} score_opts;

/* Depth results, on the last rank. */
typedef struct depth_acc {
    int L;
    double *ppl_nll;   /* [L] NLL sum with block i removed (pass 0) */
    double base_nll;   /* full model */
    long ppl_tokens;
    mf_mi_acc mi_acc;  /* the current Macro Influence pass */
    double *mi;        /* [iters][L] */
    int *mi_order;     /* removal order */
    long layer_fwd, heads; /* work done, for forward-equivalents (summed over ranks later) */
    const int32_t *targets; /* the window being scored */
    double *nll;  /* [T] scratch of mf_nll_sum */
    int ppl, T;
} depth_acc;

static void parse_metrics(score_opts *o) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", o->metrics);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (strcmp(tok, "width") == 0) o->want_width = 1;
        else if (strcmp(tok, "bi") == 0) o->want_bi = 1;
        else if (strcmp(tok, "ppl") == 0) o->want_ppl = 1;
        else if (strcmp(tok, "mi") == 0) o->want_mi = 1;
        else mf_fatal("score: --metrics entry '%s' is not one of width, bi, ppl, mi", tok);
    }
}

/* A drop-one variant of the current window has run (last rank): score its tokens. */
static void on_variant(void *ctx, int i, mf_stage *st) {
    depth_acc *d = ctx;
    if (!d->ppl) return;
    d->heads++;
    d->ppl_nll[i] += mf_nll_sum(st->model->be, st->st->logits, d->targets, d->T, st->model->cfg.vocab_size, d->nll);
}

/* One window: full forward (hooks on), then every drop-one variant (mf_mi_window). */
static void score_window(const score_opts *o, mf_stage *st, mf_importance *imp, depth_acc *d, const int32_t *in,
                         const int32_t *targets, unsigned char *skip, int pass, int variants, int mi, float *ref) {
    int T = o->ctx, V = st->model->cfg.vocab_size, L = d->L;
    int head_full = pass == 0 && o->want_ppl;
    mf_pipe *p = &st->pipe;
    st->st->hooks = &imp->hooks;
    imp->want_width = pass == 0 && o->want_width;
    imp->want_bi = pass == 0 && o->want_bi;
    for (int l = p->l0; l < p->l1; l++) d->layer_fwd += !skip[l];
    if (mf_stage_forward_ex(st, in, T, 0, MF_TAG_REF, skip, head_full)) {
        st->model->be->download(ref, st->st->x, (size_t)T * st->model->cfg.dim * sizeof *ref);
        if (head_full) { d->base_nll += mf_nll_sum(st->model->be, st->st->logits, targets, T, V, d->nll); d->heads++; }
    }
    st->st->hooks = NULL;
    if (pass == 0) mf_importance_end_sample(imp, T);
    if (!variants) return;
    for (int i = 0; i < L; i++) /* layers this rank runs in the variants */
        if (!skip[i]) for (int l = i >= p->l0 ? i + 1 : p->l0; i < p->l1 && l < p->l1; l++) d->layer_fwd += !skip[l];
    d->ppl = pass == 0 && o->want_ppl;
    d->targets = targets;
    d->T = T;
    mf_mi_window(st, imp->cache, skip, T, d->ppl, ref, mi ? &d->mi_acc : NULL, on_variant, d);
}

/* After an MI pass: MI of every remaining block, remove the least influential
 * (decided on the last rank, broadcast so every rank skips it next pass). */
static int finish_mi_pass(mf_stage *st, depth_acc *d, unsigned char *skip, int iter) {
    int L = d->L, pick = -1;
    mf_coll coll;
    mf_coll_init(&coll, st->pipe.comm, st->model->be);
    if (st->pipe.last) {
        double *row = d->mi + (size_t)iter * L;
        mf_mi_finish(&d->mi_acc, skip, row);
        pick = mf_mi_argmin(row, skip, L);
    }
    mf_coll_bcast(&coll, &pick, sizeof pick, st->pipe.size - 1);
    skip[pick] = 1;
    d->mi_order[iter] = pick;
    mf_mi_acc_reset(&d->mi_acc);
    mf_coll_free(&coll);
    return pick;
}

/* After window `next` - 1 of `pass` (checkpointing on): a checkpoint when due,
 * and stop (1) on a signal or at --max-steps. Ranks agree on a signal only
 * every --checkpoint-every windows (16 without it), so the pipeline keeps
 * several windows in flight between agreements. */
static int checkpoint_point(const score_opts *o, const mf_run *run, mf_score_state *s, mf_stage *st, int pass, int next) {
    s->done++;
    int every = run->ckpt_every > 0 ? run->ckpt_every : 16;
    int cap = mf_run_at_limit(run, s->done) && s->done < s->total;
    if (s->done % every != 0 && !cap) return 0;
    int sig = mf_run_stop_agreed(run);
    if (!mf_run_ckpt_due(run, s->done) && !sig && !cap) return 0;
    mf_pipe_flush(&st->pipe);
    s->pass = pass;
    s->window = next;
    mf_score_ckpt_save(run, s, o->model);
    if (!sig && !cap) return 0;
    if (run->world.rank == 0)
        mf_log_always("%s%d: checkpoint written at window %lld (pass %d), exiting (resume with --resume)",
                      sig ? "signal " : "--max-steps ", sig ? sig : o->max_steps, (long long)s->done, pass + 1);
    return 1;
}

/* The passes from where s says (0, 0 on a fresh start); 1: stopped with a checkpoint. */
static int run_passes(const score_opts *o, mf_stage *st, mf_importance *imp, depth_acc *d, const int32_t *ids,
                      mf_score_state *s, const mf_run *run) {
    int T = o->ctx, L = d->L, stopped = 0;
    unsigned char *skip = mf_calloc((size_t)L, 1);
    for (int i = 0; i < s->pass; i++) skip[d->mi_order[i]] = 1;
    int32_t *in = mf_malloc((size_t)T * sizeof *in);
    float *ref = mf_malloc((size_t)T * st->model->cfg.dim * sizeof *ref);
    d->nll = mf_malloc((size_t)T * sizeof *d->nll);
    int passes = o->want_mi ? o->mi_iters : 1;
    for (int pass = s->pass; pass < passes && !stopped; pass++) {
        int nwin = pass == 0 ? o->samples : o->mi_samples;
        mf_progress prog;
        char what[64];
        snprintf(what, sizeof what, "score pass %d/%d", pass + 1, passes);
        mf_progress_start(&prog, what, nwin);
        for (int w = pass == s->pass ? s->window : 0; w < nwin && !stopped; w++) {
            const int32_t *win = ids + (size_t)w * T;
            in[0] = st->model->cfg.bos_id;
            memcpy(in + 1, win, (size_t)(T - 1) * sizeof *in);
            int mi = o->want_mi && w < o->mi_samples;
            int variants = (o->want_ppl && pass == 0) || mi;
            score_window(o, st, imp, d, in, win, skip, pass, variants, mi, ref);
            if (o->want_ppl && pass == 0) d->ppl_tokens += T;
            if (st->pipe.last) mf_progress_update(&prog, w + 1, "windows");
            if (run) stopped = checkpoint_point(o, run, s, st, pass, w + 1);
        }
        mf_pipe_flush(&st->pipe);
        if (o->want_mi && !stopped) {
            int pick = finish_mi_pass(st, d, skip, pass);
            if (st->pipe.rank == 0) mf_log("MI pass %d: removing block %d", pass + 1, pick);
        }
    }
    free(skip); free(in); free(ref); free(d->nll);
    return stopped;
}

/* Checkpointing on: the run (lock, fingerprint, provenance, layout), signals, --resume. */
static void open_run(const score_opts *o, mf_run *run, mf_stage *st, const int32_t *ids, size_t n, mf_score_state *s) {
    mf_run_catch_signals();
    mf_run_init(run, "score", MPI_COMM_WORLD, o->ckpt_dir, o->ckpt_every, o->keep);
    char text_id[64];
    mf_cli_tokens_id(ids, n, text_id, sizeof text_id);
    mf_run_set_options(run, "{\"samples\":%d,\"ctx\":%d,\"metrics\":\"%s%s%s%s\",\"agg_seq\":\"%s\",\"agg_batch\":\"%s\","
                       "\"mi_iters\":%d,\"mi_samples\":%d,\"text\":\"%s\",\"weights\":\"%s\"}", o->samples, o->ctx,
                       o->want_width ? "width," : "", o->want_bi ? "bi," : "", o->want_ppl ? "ppl," : "", o->want_mi ? "mi" : "",
                       mf_agg_name(o->seq), mf_agg_name(o->batch), o->want_mi ? o->mi_iters : 0, o->mi_samples, text_id,
                       mf_dtype_name(st->model->wdt)); /* 16-bit weights change the sums */
    mf_run_set_provenance(run, st->model->be->name, st->pipe.size, 1);
    mf_run_set_layers(run, st->pipe.bounds, st->pipe.size);
    run->max_steps = o->max_steps;
    if (o->resume) mf_score_ckpt_resume(run, s);
}

int mf_cmd_score(int argc, char **argv) {
    score_opts o = {.samples = 32, .ctx = 256, .metrics = "width,bi,ppl,mi", .agg_seq = "mean", .agg_batch = "l2", .mi_iters = -1,
                    .mi_samples = -1, .backend = "cpu", .weights = "auto", .keep = 2};
    const mf_opt opts[] = {
        {"model", MF_OPT_STR, &o.model, "model: HF directory, GGUF file or llama2.c .bin", 1},
        {"text", MF_OPT_STR, &o.text, "calibration text (UTF-8)", 1},
        {"out", MF_OPT_STR, &o.out, "rankings file to write (HDF5)", 1},
        {"samples", MF_OPT_INT, &o.samples, "calibration windows (default 32)", 0},
        {"ctx", MF_OPT_INT, &o.ctx, "tokens per window (default 256)", 0},
        {"metrics", MF_OPT_STR, &o.metrics, "comma list of width,bi,ppl,mi (default: all)", 0},
        {"agg-seq", MF_OPT_STR, &o.agg_seq, "width aggregation over a sequence: mean (default), l2, var", 0},
        {"agg-batch", MF_OPT_STR, &o.agg_batch, "width aggregation over samples: l2 (default), mean, var", 0},
        {"mi-iters", MF_OPT_INT, &o.mi_iters, "Macro Influence removal iterations (default: ceil(layers/4))", 0},
        {"mi-samples", MF_OPT_INT, &o.mi_samples, "windows used by Macro Influence (default: --samples)", 0},
        {"tokenizer", MF_OPT_STR, &o.tokenizer, "tokenizer.bin or GGUF file (default: from the model)", 0},
        {"json", MF_OPT_FLAG, &o.json, "print a JSON summary", 0},
        {"backend", MF_OPT_STR, &o.backend, MF_BACKEND_HELP, 0},
        {"weights", MF_OPT_STR, &o.weights, MF_WEIGHTS_HELP, 0},
        {"checkpoint-dir", MF_OPT_STR, &o.ckpt_dir, "make the pass restartable: checkpoints here (default OUT.ckpt with the next three)", 0},
        {"checkpoint-every", MF_OPT_INT, &o.ckpt_every, "checkpoint every K windows (default 0: only on signals)", 0},
        {"resume", MF_OPT_FLAG, &o.resume, "continue from the newest complete checkpoint (any number of ranks)", 0},
        {"max-steps", MF_OPT_INT, &o.max_steps, "stop after N windows (all passes counted) with a checkpoint", 0},
        {"keep", MF_OPT_INT, &o.keep, "complete checkpoints to keep (default 2)", 0},
    };
    const char *summary =
        "Score what matters in a model on calibration text: Minitron width importance (MLP neurons,\n"
        "attention heads, embedding channels), Block Importance, perplexity with each block removed,\n"
        "and FuseGPT Macro Influence (iterative). Writes an HDF5 rankings file for `minifuse prune`.";
    if (mf_args_parse_or_die("score", summary, opts, sizeof opts / sizeof opts[0], argc, argv)) return 0;
    parse_metrics(&o);
    if (mf_agg_parse(o.agg_seq, &o.seq) || mf_agg_parse(o.agg_batch, &o.batch))
        mf_fatal("score: --agg-seq/--agg-batch must be mean, l2 or var (got '%s', '%s')", o.agg_seq, o.agg_batch);
    if (o.ctx < 2 || o.samples < 1) mf_fatal("score: --ctx must be >= 2 and --samples >= 1");
    if (o.mi_samples < 0 || o.mi_samples > o.samples) o.mi_samples = o.samples;
    if (o.ckpt_every < 0 || o.max_steps < 0) mf_fatal("score: --checkpoint-every and --max-steps must not be negative");
    char ckpt_default[4200];
    snprintf(ckpt_default, sizeof ckpt_default, "%s.ckpt", o.out);
    if (!o.ckpt_dir && (o.ckpt_every > 0 || o.resume || o.max_steps > 0)) o.ckpt_dir = ckpt_default;

    size_t n;
    int32_t *ids = mf_cli_tokenize_file(o.model, o.tokenizer, o.text, &n, MPI_COMM_WORLD);
    if (n < (size_t)o.samples * o.ctx)
        mf_fatal("score: %s has %zu tokens, fewer than --samples %d x --ctx %d", o.text, n, o.samples, o.ctx);
    mf_stage st;
    mf_stage_open_w(&st, o.model, MPI_COMM_WORLD, mf_cli_backend("score", o.backend), o.ctx, o.ctx,
                    mf_cli_weights("score", o.weights));
    mf_stage_log_layout(&st, "score");
    int L = st.model->cfg.n_layers;
    if (o.mi_iters < 0) o.mi_iters = (L + 3) / 4;
    if (o.want_mi && (o.mi_iters < 1 || o.mi_iters >= L)) mf_fatal("score: --mi-iters %d must be between 1 and %d", o.mi_iters, L - 1);
    mf_importance imp;
    mf_importance_init(&imp, &st.model->cfg, st.pipe.l0, st.pipe.l1, o.ctx, o.seq, o.batch, o.want_width, o.want_bi,
                       o.want_ppl || o.want_mi);
    depth_acc d = {.L = L};
    d.ppl_nll = mf_calloc((size_t)L, sizeof(double));
    mf_mi_acc_init(&d.mi_acc, L);
    d.mi = mf_calloc((size_t)(o.mi_iters > 0 ? o.mi_iters : 1) * L, sizeof(double));
    d.mi_order = mf_calloc((size_t)(o.mi_iters > 0 ? o.mi_iters : 1), sizeof(int));
    mf_score_state ss = {.L = L, .mi_iters = o.want_mi ? o.mi_iters : 0, .last = st.pipe.last, .want_width = o.want_width,
                         .imp = &imp, .ppl_nll = d.ppl_nll, .base_nll = &d.base_nll, .ppl_tokens = &d.ppl_tokens,
                         .mi_acc = &d.mi_acc, .mi = d.mi, .mi_order = d.mi_order, .layer_fwd = &d.layer_fwd, .heads = &d.heads,
                         .passes = o.want_mi ? o.mi_iters : 1, .samples = o.samples, .mi_samples = o.mi_samples};
    ss.total = o.samples + (int64_t)(ss.passes - 1) * o.mi_samples;
    mf_run run, *runp = o.ckpt_dir ? &run : NULL;
    if (runp) open_run(&o, runp, &st, ids, n, &ss);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = mf_now();
    int stopped = run_passes(&o, &st, &imp, &d, ids, &ss, runp);
    MPI_Barrier(MPI_COMM_WORLD);
    double secs = mf_now() - t0;
    if (runp) mf_run_free(runp);
    if (stopped) {
        free(d.ppl_nll); mf_mi_acc_free(&d.mi_acc); free(d.mi); free(d.mi_order);
        mf_importance_free(&imp);
        mf_stage_close(&st);
        free(ids);
        return 0;
    }

    mf_score_result res = {.opts_samples = o.samples, .opts_ctx = o.ctx, .mi_iters = o.want_mi ? o.mi_iters : 0,
                           .mi_samples = o.mi_samples, .seconds = secs, .want_width = o.want_width, .want_bi = o.want_bi,
                           .want_ppl = o.want_ppl, .want_mi = o.want_mi, .seq = o.seq, .batch = o.batch};
    mf_score_collect(&res, &st, &imp, d.ppl_nll, d.base_nll, d.ppl_tokens, d.mi, d.mi_order, d.layer_fwd, d.heads);
    mf_score_write(&res, &st, &imp, o.model, o.text, o.out, (long)o.samples * o.ctx);
    if (st.pipe.rank == 0) mf_score_print(&res, o.json);
    mf_score_result_free(&res);
    free(d.ppl_nll); mf_mi_acc_free(&d.mi_acc); free(d.mi); free(d.mi_order);
    mf_importance_free(&imp);
    mf_stage_close(&st);
    free(ids);
    return 0;
}
