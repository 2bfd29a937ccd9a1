/* generate.c - `minifuse generate`: sample text, llama2.c run.c sampler semantics.
 *
 * The prompt is encoded with BOS (unless the GGUF says add_bos_token = false); `--steps` counts positions including the
 * prompt (as run.c). temp 0 is greedy; otherwise softmax(logits/temp) and
 * top-p (nucleus) sampling with run.c's xorshift RNG, so a seed reproduces run.c.
 * Generation stops at BOS (as run.c) or EOS. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/common.h"
#include "stage.h"
#include "util/log.h"
#include "util/vec.h"

typedef struct sampler {
    float temp, topp;
    unsigned long long rng;
    float *probs;
    struct pi { float p; int i; } *idx;
} sampler;

static unsigned int rng_u32(unsigned long long *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (unsigned int)((*s * 0x2545F4914F6CDD1Dull) >> 32);
}
static float rng_f32(unsigned long long *s) { return (float)(rng_u32(s) >> 8) / 16777216.0f; }

static void softmax(float *x, int n) {
    float m = x[0], s = 0;
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - m); s += x[i]; }
    for (int i = 0; i < n; i++) x[i] /= s;
}

static int cmp_desc(const void *a, const void *b) {
    const struct pi *x = a, *y = b;
    return (x->p < y->p) - (x->p > y->p);
}

static int sample_mult(const float *p, int n, float coin) {
    float cdf = 0;
    for (int i = 0; i < n; i++) { cdf += p[i]; if (coin < cdf) return i; }
    return n - 1;
}

static int sample_topp(sampler *s, const float *p, int n, float coin) {
    int k = 0;
    float cutoff = (1.0f - s->topp) / (float)(n - 1);
    for (int i = 0; i < n; i++)
        if (p[i] >= cutoff) { s->idx[k].p = p[i]; s->idx[k].i = i; k++; }
    qsort(s->idx, (size_t)k, sizeof *s->idx, cmp_desc);
    float cum = 0;
    int last = k - 1;
    for (int i = 0; i < k; i++) {
        cum += s->idx[i].p;
        if (cum > s->topp) { last = i; break; }
    }
    float r = coin * cum, cdf = 0;
    for (int i = 0; i <= last; i++) { cdf += s->idx[i].p; if (r < cdf) return s->idx[i].i; }
    return s->idx[last].i;
}

static int sample(sampler *s, const float *logits, int n) {
    if (s->temp == 0.0f) return mf_argmax(logits, n);
    for (int i = 0; i < n; i++) s->probs[i] = logits[i] / s->temp;
    softmax(s->probs, n);
    float coin = rng_f32(&s->rng);
    if (s->topp <= 0 || s->topp >= 1) return sample_mult(s->probs, n, coin);
    return sample_topp(s, s->probs, n, coin);
}

/* {"ids": [...], "n_prompt": k, "seconds": s, "text": "..."}; invalid UTF-8 bytes become U+FFFD. */
static void print_json(const mf_tokenizer *tok, const int32_t *seq, int n, size_t n_prompt, double secs) {
    char *text = mf_tok_decode(tok, seq, (size_t)n);
    json_t *ids = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(ids, json_integer(seq[i]));
    json_t *jt = json_string(text);
    if (!jt) { /* not valid UTF-8: keep ASCII, mark the rest */
        for (char *c = text; *c; c++) if ((unsigned char)*c >= 0x80) *c = '?';
        jt = json_string(text);
    }
    json_t *j = json_pack("{s:o, s:I, s:f, s:o}", "ids", ids, "n_prompt", (json_int_t)n_prompt, "seconds", secs, "text", jt);
    char *s = json_dumps(j, JSON_COMPACT);
    printf("%s\n", s);
    free(s);
    json_decref(j);
    free(text);
}

int mf_cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = "", *tokp = NULL, *backend = "cpu", *weights = "auto";
    int steps = 256, json = 0;
    float temp = 1.0f, topp = 0.9f;
    unsigned long long seed = 0;
    const mf_opt opts[] = {
        {"model", MF_OPT_STR, &model, "model: HF directory, GGUF file or llama2.c .bin", 1},
        {"prompt", MF_OPT_STR, &prompt, "prompt text (default: empty, start from BOS)", 0},
        {"steps", MF_OPT_INT, &steps, "positions to run, prompt included (default 256)", 0},
        {"temp", MF_OPT_FLOAT, &temp, "temperature, 0 = greedy (default 1.0)", 0},
        {"top-p", MF_OPT_FLOAT, &topp, "nucleus sampling threshold (default 0.9)", 0},
        {"seed", MF_OPT_U64, &seed, "random seed (default: time)", 0},
        {"tokenizer", MF_OPT_STR, &tokp, "tokenizer.bin or GGUF file (default: from the model)", 0},
        {"backend", MF_OPT_STR, &backend, MF_BACKEND_HELP, 0},
        {"weights", MF_OPT_STR, &weights, MF_WEIGHTS_HELP, 0},
        {"json", MF_OPT_FLAG, &json, "print a JSON object with the ids and text instead of streaming", 0},
    };
    mf_err err;
    if (mf_args_parse_or_die("generate", "Generate text from a prompt (llama2.c run.c sampling semantics).", opts,
                           sizeof opts / sizeof opts[0], argc, argv)) return 0;
    if (temp < 0) mf_fatal("generate: --temp %g must not be negative", temp);
    if (steps < 1) mf_fatal("generate: --steps %d must be positive", steps);
    if (seed == 0) seed = (unsigned long long)time(NULL);

    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const mf_backend *be = mf_cli_backend("generate", backend);
    mf_source *src = mf_source_open(model, &err);
    if (!src) mf_fatal_err(&err);
    if (steps > src->cfg.max_seq_len) steps = src->cfg.max_seq_len;
    mf_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n_prompt = 0;
    if (rank == 0) {
        if (!(tok = mf_source_load_tokenizer(src, tokp, &err))) mf_fatal_err(&err);
        int bos = !src->cfg.no_bos_prompt || !*prompt; /* an empty prompt always starts from BOS */
        if (mf_tok_encode(tok, prompt, strlen(prompt), bos, &ids, &n_prompt, &err) != 0) mf_fatal("generate: --prompt: %s", err.msg);
    }
    unsigned long long np = n_prompt;
    MPI_Bcast(&np, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    n_prompt = (size_t)np;
    if ((int)n_prompt > steps) steps = (int)n_prompt;
    int32_t *seq = mf_calloc((size_t)steps + 1, sizeof *seq);
    if (rank == 0) memcpy(seq, ids, n_prompt * sizeof *seq);
    MPI_Bcast(seq, (int)n_prompt, MPI_INT32_T, 0, MPI_COMM_WORLD);

    mf_stage s;
    mf_stage_open_w(&s, model, MPI_COMM_WORLD, be, (int)n_prompt, steps, mf_cli_weights("generate", weights));
    int V = s.model->cfg.vocab_size, root = s.pipe.size - 1;
    sampler sm = {temp, topp, seed, mf_malloc((size_t)V * sizeof(float)), mf_malloc((size_t)V * sizeof(struct pi))};
    float *row = mf_malloc((size_t)V * sizeof *row);
    int n = (int)n_prompt, pos = 0;
    double t0 = mf_now();
    /* prefill all prompt tokens but the last, then one token per step */
    if (n > 1) { mf_stage_forward(&s, seq, n - 1, 0, 1); pos = n - 1; }
    while (pos < steps - 1 || pos < n - 1) {
        int next = 0;
        if (mf_stage_forward(&s, seq + pos, 1, pos, 1)) {
            be->download(row, s.st->logits, (size_t)V * sizeof *row);
            next = sample(&sm, row, V);
        }
        MPI_Bcast(&next, 1, MPI_INT, root, MPI_COMM_WORLD);
        pos++;
        if (pos < n) continue; /* still inside the prompt */
        if (next == s.model->cfg.bos_id || next == s.model->cfg.eos_id) break; /* end of text */
        seq[n++] = next;
        if (rank == 0 && !json) {
            char piece[512];
            size_t len = mf_tok_decode_token(tok, seq[n - 2], next, piece, sizeof piece);
            fwrite(piece, 1, len, stdout);
            fflush(stdout);
        }
    }
    double secs = mf_now() - t0;
    if (rank == 0) {
        if (json) print_json(tok, seq, n, n_prompt, secs);
        else printf("\n");

        mf_log("generated %d tokens in %.2fs (%.1f tok/s)", n - (int)n_prompt, secs, (n - (int)n_prompt) / secs);
    }
    free(row);
    free(sm.probs);
    free(sm.idx);
    free(seq);
    free(ids);
    mf_tok_free(tok);
    mf_stage_close(&s);
    mf_source_close(src);
    return 0;
}
