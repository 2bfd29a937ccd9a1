/* eval.c - `minifuse eval`: perplexity (and KL divergence from a reference model).
 *
 * Protocol: tokenize the whole file without BOS, cut it into non-overlapping
 * windows of ctx tokens; a window's input is BOS + its first ctx-1 tokens and
 * all ctx tokens are scored. NLLs are summed on the last rank in window order,
 * so the result is bit-identical for any number of pipeline ranks. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_blas.h"
#include "cli/args.h"
#include "cli/common.h"
#include "stage.h"
#include "tags.h"
#include "util/log.h"
#include "util/rss.h"
#include "util/vec.h"

typedef struct eval_opts {
    const char *model, *text, *ref, *tokenizer, *backend, *weights;
    int ctx, max_windows, skip, json;
} eval_opts;

/* Memory of every rank, gathered on the last: held weight bytes and peak RSS. */
typedef struct eval_mem {
    const char *wdt;
    long long *weight_bytes, *peak_rss; /* [ranks] (last rank) */
} eval_mem;

/* Running sums on the last rank. */
typedef struct eval_acc {
    double nll_sum, nll_sq;
    long n_tok;
    float *kl;      /* [n_tok] per-token KL(ref || model) */
    long top1_same;
} eval_acc;

static void score_window(const double *nll, int T, eval_acc *a) {
    for (int t = 0; t < T; t++) {
        a->nll_sum += nll[t];
        a->nll_sq += nll[t] * nll[t];
    }
}

/* KL(ref || model) per token and top-1 agreement, from the logits on the backend
 * (kl_rows: T doubles and T ints come back from a device). */
static void kl_window(const mf_backend *be, const float *ref, const float *mod, int T, int V, double *kl, int32_t *same,
                      eval_acc *a) {
    be->kl_rows(ref, mod, T, V, kl, same);
    for (int t = 0; t < T; t++) {
        a->kl[a->n_tok + t] = (float)(kl[t] > 0 ? kl[t] : 0);
        a->top1_same += same[t];
    }
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double percentile(float *v, long n, double p) {
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_float);
    double pos = p * (double)(n - 1);
    long i = (long)pos;
    double f = pos - (double)i;
    return i + 1 < n ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

static json_t *json_ll_array(const long long *v, int n, long long *max) {
    json_t *a = json_array();
    *max = 0;
    for (int i = 0; i < n; i++) {
        json_array_append_new(a, json_integer(v[i]));
        if (v[i] > *max) *max = v[i];
    }
    return a;
}

static void report(const eval_opts *o, const eval_acc *a, const eval_mem *mem, long windows, double secs, int nranks,
                   double kl_mean, double kl_p99) {
    double mean = a->nll_sum / (double)a->n_tok;
    double var = a->nll_sq / (double)a->n_tok - mean * mean;
    double se = sqrt(var > 0 ? var / (double)a->n_tok : 0);
    double tps = (double)a->n_tok / secs;
    if (o->json) {
        json_t *j = json_pack("{s:s, s:s, s:i, s:i, s:I, s:f, s:f, s:f, s:f, s:f, s:i}", "model", o->model, "text", o->text,
                              "ctx", o->ctx, "windows", (int)windows, "tokens", (json_int_t)a->n_tok, "mean_nll", mean,
                              "ppl", exp(mean), "nll_stderr", se, "seconds", secs, "tokens_per_s", tps, "ranks", nranks);
        if (o->ref) {
            json_object_set_new(j, "ref_model", json_string(o->ref));
            json_object_set_new(j, "kl_mean", json_real(kl_mean));
            json_object_set_new(j, "kl_p99", json_real(kl_p99));
            json_object_set_new(j, "top1_agree", json_real((double)a->top1_same / (double)a->n_tok));
        }
        long long wmax, rmax;
        json_object_set_new(j, "weights", json_string(mem->wdt));
        json_object_set_new(j, "weight_bytes", json_ll_array(mem->weight_bytes, nranks, &wmax));
        json_object_set_new(j, "peak_rss_bytes", json_ll_array(mem->peak_rss, nranks, &rmax));
        json_object_set_new(j, "peak_rss_max", json_integer(rmax));
        mf_blas_json(j); /* the kernels change the last bits: part of the result's provenance */
        char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17));
        printf("%s\n", s);
        free(s);
        json_decref(j);
    } else {
        printf("model       %s\ntext        %s\nwindows     %ld x %d tokens\ntokens      %ld\n", o->model, o->text, windows, o->ctx, a->n_tok);
        printf("mean NLL    %.6f +/- %.6f\nperplexity  %.4f\ntokens/s    %.1f (%d ranks, %.2f s)\n", mean, se, exp(mean), tps, nranks, secs);
        if (o->ref)
            printf("ref model   %s\nKL mean     %.6f\nKL p99      %.6f\ntop-1 agree %.4f\n", o->ref, kl_mean, kl_p99,
                   (double)a->top1_same / (double)a->n_tok);
    }
    fflush(stdout);
}

static void run_eval(const eval_opts *o, const int32_t *ids, long windows, MPI_Comm comm) {
    const mf_backend *be = mf_cli_backend("eval", o->backend);
    mf_stage m, r;
    mf_weights wsel = mf_cli_weights("eval", o->weights);
    mf_stage_open_w(&m, o->model, comm, be, o->ctx, o->ctx, wsel);
    mf_stage_log_layout(&m, "model");
    if (o->ref) {
        mf_stage_open_w(&r, o->ref, comm, be, o->ctx, o->ctx, wsel);
        if (r.model->cfg.vocab_size != m.model->cfg.vocab_size)
            mf_fatal("eval: --ref-model %s has vocabulary %d, model has %d", o->ref, r.model->cfg.vocab_size, m.model->cfg.vocab_size);
        mf_stage_log_layout(&r, "ref");
    }
    int T = o->ctx, V = m.model->cfg.vocab_size, last = m.pipe.last;
    eval_acc acc = {0};
    double *nll = mf_malloc((size_t)T * sizeof *nll), *kl = mf_malloc((size_t)T * sizeof *kl);
    int32_t *same = mf_malloc((size_t)T * sizeof *same);
    if (o->ref && last) acc.kl = mf_malloc((size_t)(windows * T) * sizeof *acc.kl);
    int32_t *in = mf_malloc((size_t)T * sizeof *in);
    mf_progress prog;
    mf_progress_start(&prog, "eval", windows);
    MPI_Barrier(comm);
    double t0 = mf_now();
    for (long w = 0; w < windows; w++) {
        const int32_t *win = ids + w * T;
        in[0] = m.model->cfg.bos_id;
        memcpy(in + 1, win, (size_t)(T - 1) * sizeof *in);
        /* the reference's logits stay in its stage (on the device) until the model's window is scored */
        if (o->ref) mf_stage_forward(&r, in, T, 0, MF_TAG_REF);
        if (mf_stage_forward(&m, in, T, 0, MF_TAG_MODEL)) {
            be->nll(m.st->logits, win, T, V, nll); /* T doubles from a device, not T x V logits */
            score_window(nll, T, &acc);
            if (o->ref) kl_window(be, r.st->logits, m.st->logits, T, V, kl, same, &acc);
            acc.n_tok += T;
            mf_progress_update(&prog, w + 1, "windows");
        }
    }
    mf_pipe_flush(&m.pipe);
    if (o->ref) mf_pipe_flush(&r.pipe);
    MPI_Barrier(comm);
    double secs = mf_now() - t0;
    long long mine[2] = {(long long)mf_model_weight_bytes(m.model) + (o->ref ? (long long)mf_model_weight_bytes(r.model) : 0),
                         (long long)mf_peak_rss_bytes()};
    long long *all = last ? mf_malloc((size_t)m.pipe.size * 2 * sizeof *all) : NULL;
    MPI_Gather(mine, 2, MPI_LONG_LONG, all, 2, MPI_LONG_LONG, m.pipe.size - 1, comm);
    eval_mem mem = {.wdt = mf_dtype_short(m.model->wdt)};
    if (last) {
        mem.weight_bytes = mf_malloc((size_t)m.pipe.size * sizeof(long long));
        mem.peak_rss = mf_malloc((size_t)m.pipe.size * sizeof(long long));
        for (int i = 0; i < m.pipe.size; i++) mem.weight_bytes[i] = all[2 * i], mem.peak_rss[i] = all[2 * i + 1];
        double kl_mean = 0;
        for (long i = 0; o->ref && i < acc.n_tok; i++) kl_mean += acc.kl[i];
        kl_mean = acc.n_tok ? kl_mean / (double)acc.n_tok : 0;
        double kl_p99 = o->ref ? percentile(acc.kl, acc.n_tok, 0.99) : 0;
        report(o, &acc, &mem, windows, secs, m.pipe.size, kl_mean, kl_p99);
    }
    free(all);
    free(mem.weight_bytes);
    free(mem.peak_rss);
    free(in);
    free(nll);
    free(kl);
    free(same);
    free(acc.kl);
    if (o->ref) mf_stage_close(&r);
    mf_stage_close(&m);
}

int mf_cmd_eval(int argc, char **argv) {
    eval_opts o = {.ctx = 256, .max_windows = 0, .backend = "cpu", .weights = "auto"};
    const mf_opt opts[] = {
        {"model", MF_OPT_STR, &o.model, "model: HF directory, GGUF file or llama2.c .bin", 1},
        {"text", MF_OPT_STR, &o.text, "UTF-8 text file to score", 1},
        {"ctx", MF_OPT_INT, &o.ctx, "window length in tokens (default 256)", 0},
        {"max-windows", MF_OPT_INT, &o.max_windows, "score at most N windows (default: all)", 0},
        {"skip", MF_OPT_INT, &o.skip, "skip the first N windows (e.g. those used for calibration)", 0},
        {"ref-model", MF_OPT_STR, &o.ref, "reference model: also report KL(ref || model) and top-1 agreement", 0},
        {"tokenizer", MF_OPT_STR, &o.tokenizer, "tokenizer.bin or GGUF file (default: from the model)", 0},
        {"backend", MF_OPT_STR, &o.backend, MF_BACKEND_HELP, 0},
        {"weights", MF_OPT_STR, &o.weights, MF_WEIGHTS_HELP " (model and --ref-model)", 0},
        {"json", MF_OPT_FLAG, &o.json, "print one JSON object (with weight bytes and peak RSS per rank)", 0},
    };
    const char *summary =
        "Perplexity of a model on a text file: the file is tokenized without BOS and cut into\n"
        "non-overlapping windows of --ctx tokens; each window is fed as BOS + its first ctx-1\n"
        "tokens and all ctx tokens are scored. Run under mpirun -np P to split the layers over\n"
        "P pipeline ranks; results are identical for every P.";
    if (mf_args_parse_or_die("eval", summary, opts, sizeof opts / sizeof opts[0], argc, argv)) return 0;
    if (o.ctx < 2 || o.ctx > 1 << 16) mf_fatal("eval: --ctx %d must be between 2 and 65536", o.ctx);
    if (o.max_windows < 0) mf_fatal("eval: --max-windows %d must not be negative", o.max_windows);
    mf_cli_weights("eval", o.weights); /* a bad --weights fails before the text is read */
    size_t n;
    int32_t *ids = mf_cli_tokenize_file(o.model, o.tokenizer, o.text, &n, MPI_COMM_WORLD);
    if (o.skip < 0) mf_fatal("eval: --skip %d must not be negative", o.skip);
    long windows = (long)(n / (size_t)o.ctx) - o.skip;
    if (o.max_windows > 0 && windows > o.max_windows) windows = o.max_windows;
    if (windows <= 0) mf_fatal("eval: %s has %zu tokens, fewer than --skip %d + 1 windows of --ctx %d", o.text, n, o.skip, o.ctx);
    run_eval(&o, ids + (size_t)o.skip * o.ctx, windows, MPI_COMM_WORLD);
    free(ids);
    return 0;
}
