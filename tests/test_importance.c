/* test_importance.c - `minifuse score` on stories260K against an independent
 * float64 numpy computation (tests/gen_importance_goldens.py ->
 * tests/golden/importance/stories260K.json): Minitron width scores (every
 * seq x batch aggregation), Block Importance, drop-one perplexity and Macro
 * Influence; the rankings file and the JSON are identical for P = 1, 2, 3
 * ranks; h5dump and h5py read the file. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/rankings.h"
#include "testutil.h"

#define GOLDEN "tests/golden/importance/stories260K.json"
#define REL_TOL 2.5e-5 /* float32 forward vs float64 reference: at most 8.0e-6 achieved (variance aggregations) */

TestSuite(importance, .timeout = 300);

/* ---- helpers ---- */

static json_t *load_golden(void) {
    json_error_t je;
    json_t *g = json_load_file(GOLDEN, 0, &je);
    cr_assert(g, "%s: %s (line %d)", GOLDEN, je.text, je.line);
    return g;
}

static int gint(json_t *g, const char *key) {
    json_t *v = json_object_get(g, key);
    cr_assert(json_is_integer(v), "%s: no integer '%s'", GOLDEN, key);
    return (int)json_integer_value(v);
}

static double jnum(json_t *v) { return json_is_null(v) ? NAN : json_number_value(v); }

/* The golden's calibration text, written to dir/calib.txt. */
static char *write_text(const char *dir, json_t *g) {
    const char *text = json_string_value(json_object_get(g, "text"));
    cr_assert(text, "%s: no 'text'", GOLDEN);
    char *p = malloc(strlen(dir) + 16);
    sprintf(p, "%s/calib.txt", dir);
    tu_write(p, text, strlen(text));
    return p;
}

/* Run score with P ranks into out; returns the parsed --json output. */
static json_t *run_score(int P, json_t *g, const char *text, const char *out, const char *extra) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s score --model %s --text %s --out %s --samples %d --ctx %d --json %s", tu_mpirun(P),
             tu_shared("llm_assets/models/stories260K/stories260K.bin"), text, out, gint(g, "windows"), gint(g, "ctx"),
             extra);
    char *o, *e;
    int rc = tu_run(cmd, &o, &e);
    cr_assert_eq(rc, 0, "exit %d: %s\nstderr: %s", rc, cmd, e);
    json_error_t je;
    json_t *j = json_loads(o, 0, &je);
    cr_assert(j, "P=%d: --json output is not JSON (%s): %s", P, je.text, o);
    free(o);
    free(e);
    return j;
}

static void read_rankings(const char *path, mf_rankings *r) {
    mf_err err = {{0}};
    cr_assert_eq(mf_rankings_read(path, r, &err), 0, "mf_rankings_read: %s", err.msg);
}

/* The rankings file's provenance attribute against what the run printed. */
static void check_provenance(const mf_rankings *r, json_t *printed, int P) {
    json_error_t je;
    json_t *pv = json_loads(r->meta.provenance ? r->meta.provenance : "", 0, &je);
    cr_assert(pv, "P=%d: provenance attribute is not JSON (%s): '%s'", P, je.text, r->meta.provenance);
    const char *core = json_string_value(json_object_get(pv, "blas_core"));
    const char *want = json_string_value(json_object_get(printed, "blas_core"));
    cr_assert(core && want && *core, "P=%d: no blas_core in provenance '%s'", P, r->meta.provenance);
    cr_expect_str_eq(core, want, "P=%d: provenance core vs --json", P);
    cr_expect_str_eq(json_string_value(json_object_get(pv, "backend")), "cpu", "P=%d: backend", P);
    cr_expect_eq(json_integer_value(json_object_get(pv, "ranks")), P, "P=%d: ranks in provenance", P);
    cr_expect(json_is_integer(json_object_get(pv, "blas_threads")), "P=%d: blas_threads", P);
    json_decref(pv);
}

/* Relative error of got vs want; the max over a score kind is recorded in *worst. */
static double rel_err(double got, double want) {
    if (isnan(got) && isnan(want)) return 0;
    return fabs(got - want) / fmax(fabs(want), 1e-30);
}

/* Compare n values with a golden JSON array (null = NaN); returns the max relative error. */
static double cmp_arr(const char *what, const double *got, json_t *want, int n) {
    cr_assert(json_is_array(want) && (int)json_array_size(want) == n, "%s: golden has %zu values, want %d", what,
              json_array_size(want), n);
    cr_assert(got, "%s: missing", what);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double w = jnum(json_array_get(want, i)), e = rel_err(got[i], w);
        cr_expect(isnan(w) == isnan(got[i]) && e <= REL_TOL, "%s[%d]: got %.10g, golden %.10g (rel %.2e)", what, i,
                  got[i], w, e);
        if (e > worst) worst = e;
    }
    return worst;
}

/* The same for a JSON array from our --json output. */
static double cmp_jarr(const char *what, json_t *got, json_t *want) {
    cr_assert(json_is_array(got), "%s: not in the --json output", what);
    int n = (int)json_array_size(got);
    double *v = malloc((size_t)n * sizeof *v);
    for (int i = 0; i < n; i++) v[i] = jnum(json_array_get(got, i));
    double w = cmp_arr(what, v, want, n);
    free(v);
    return w;
}

static void cmp_ints(const char *what, const int *got, json_t *want, int n) {
    cr_assert(got && (int)json_array_size(want) == n, "%s: missing or wrong length", what);
    for (int i = 0; i < n; i++)
        cr_expect_eq(got[i], (int)json_integer_value(json_array_get(want, i)), "%s[%d]: got %d, golden %d", what, i,
                     got[i], (int)json_integer_value(json_array_get(want, i)));
}

/* Width scores of r against golden combination key ("mean/l2"); worst[4]: mlp, heads, norms, emb. */
static void check_width(const mf_rankings *r, json_t *g, const char *key, double worst[4]) {
    json_t *w = json_object_get(json_object_get(g, "width"), key);
    cr_assert(w, "%s: no width '%s'", GOLDEN, key);
    int L = gint(g, "n_layers");
    cr_assert_eq(r->meta.n_layers, L, "n_layers");
    cr_assert((r->metrics & MF_RK_WIDTH) == MF_RK_WIDTH, "%s: width metrics missing (metrics 0x%x)", key, r->metrics);
    char what[128];
    for (int l = 0; l < L; l++) {
        double e;
        snprintf(what, sizeof what, "%s mlp_neurons layer %d", key, l);
        e = cmp_arr(what, r->layers[l].mlp_neurons, json_array_get(json_object_get(w, "mlp"), l), gint(g, "ffn_dim"));
        worst[0] = fmax(worst[0], e);
        snprintf(what, sizeof what, "%s attn_heads layer %d", key, l);
        e = cmp_arr(what, r->layers[l].attn_heads, json_array_get(json_object_get(w, "heads"), l), gint(g, "n_heads"));
        worst[1] = fmax(worst[1], e);
        snprintf(what, sizeof what, "%s emb_attn_norm layer %d", key, l);
        e = cmp_arr(what, r->layers[l].emb_attn_norm, json_array_get(json_object_get(w, "emb_attn_norm"), l), gint(g, "dim"));
        worst[2] = fmax(worst[2], e);
        snprintf(what, sizeof what, "%s emb_mlp_norm layer %d", key, l);
        e = cmp_arr(what, r->layers[l].emb_mlp_norm, json_array_get(json_object_get(w, "emb_mlp_norm"), l), gint(g, "dim"));
        worst[2] = fmax(worst[2], e);
    }
    snprintf(what, sizeof what, "%s /width/emb", key);
    worst[3] = fmax(worst[3], cmp_arr(what, r->width_emb, json_object_get(w, "emb"), gint(g, "dim")));
}

/* Depth scores (file and --json output) against the golden; worst[4]: bi, ppl, mi0, mi1. */
static void check_depth(const mf_rankings *r, json_t *j, json_t *g, double worst[4]) {
    int L = gint(g, "n_layers");
    cr_assert((r->metrics & (MF_RK_BI | MF_RK_PPL | MF_RK_MI)) == (MF_RK_BI | MF_RK_PPL | MF_RK_MI), "depth metrics missing");
    json_t *mi = json_object_get(g, "mi");
    worst[0] = fmax(worst[0], cmp_arr("/depth/bi", r->depth.bi, json_object_get(g, "bi"), L));
    worst[1] = fmax(worst[1], cmp_arr("/depth/ppl", r->depth.ppl, json_object_get(g, "ppl_drop"), L));
    double pf = json_number_value(json_object_get(g, "ppl_full"));
    worst[1] = fmax(worst[1], rel_err(r->depth.ppl_full, pf));
    cr_expect(rel_err(r->depth.ppl_full, pf) <= REL_TOL, "ppl_full: got %.10g, golden %.10g", r->depth.ppl_full, pf);
    cr_assert(r->depth.n_mi_iter >= 2, "MI iterations: %d", r->depth.n_mi_iter);
    worst[2] = fmax(worst[2], cmp_arr("/depth/mi[0]", r->depth.mi, json_array_get(mi, 0), L));
    worst[3] = fmax(worst[3], cmp_arr("/depth/mi[1]", r->depth.mi + L, json_array_get(mi, 1), L));
    cmp_ints("/orders/mi", r->depth.mi_order, json_object_get(g, "mi_removed"), 2);
    /* --json output */
    worst[0] = fmax(worst[0], cmp_jarr("json bi", json_object_get(j, "bi"), json_object_get(g, "bi")));
    worst[1] = fmax(worst[1], cmp_jarr("json ppl_drop", json_object_get(j, "ppl_drop"), json_object_get(g, "ppl_drop")));
    double jpf = json_number_value(json_object_get(j, "ppl_full"));
    cr_expect(rel_err(jpf, pf) <= REL_TOL, "json ppl_full: got %.10g, golden %.10g", jpf, pf);
    json_t *jmi = json_object_get(j, "mi");
    worst[2] = fmax(worst[2], cmp_jarr("json mi[0]", json_array_get(jmi, 0), json_array_get(mi, 0)));
    worst[3] = fmax(worst[3], cmp_jarr("json mi[1]", json_array_get(jmi, 1), json_array_get(mi, 1)));
    json_t *jr = json_object_get(j, "mi_removed");
    for (int k = 0; k < 2; k++)
        cr_expect(json_equal(json_array_get(jr, k), json_array_get(json_object_get(g, "mi_removed"), k)),
                  "json mi_removed[%d]", k);
}

static void check_json_heads(json_t *j, json_t *g, const char *key, double *worst) {
    json_t *hs = json_object_get(j, "head_scores"), *want = json_object_get(json_object_get(json_object_get(g, "width"), key), "heads");
    cr_assert(json_is_array(hs) && json_array_size(hs) == json_array_size(want), "json head_scores");
    char what[64];
    for (size_t l = 0; l < json_array_size(hs); l++) {
        snprintf(what, sizeof what, "json head_scores layer %zu", l);
        *worst = fmax(*worst, cmp_jarr(what, json_array_get(hs, l), json_array_get(want, l)));
    }
}

/* ---- exact equality of two rankings files ---- */

static void same_doubles(const char *what, const double *a, const double *b, int n) {
    cr_assert((a == NULL) == (b == NULL), "%s: present in one file only", what);
    if (a) cr_expect(memcmp(a, b, (size_t)n * sizeof *a) == 0, "%s differs between rank counts", what);
}

static void same_ints(const char *what, const int *a, const int *b, int n) {
    cr_assert((a == NULL) == (b == NULL), "%s: present in one file only", what);
    if (a) cr_expect(memcmp(a, b, (size_t)n * sizeof *a) == 0, "%s differs between rank counts", what);
}

static void same_str(const char *what, const char *a, const char *b) {
    cr_expect_str_eq(a ? a : "", b ? b : "", "%s differs between rank counts", what);
}

static void same_rankings(const mf_rankings *a, const mf_rankings *b, int P) {
    const mf_rankings_meta *x = &a->meta, *y = &b->meta;
    cr_expect_eq(a->metrics, b->metrics, "P=%d: metrics", P);
    cr_expect(x->n_tokens == y->n_tokens && x->n_samples == y->n_samples && x->ctx == y->ctx, "P=%d: sizes", P);
    cr_expect(x->n_layers == y->n_layers && x->hidden_size == y->hidden_size && x->intermediate_size == y->intermediate_size &&
                  x->n_heads == y->n_heads && x->n_kv_heads == y->n_kv_heads && x->head_dim == y->head_dim &&
                  x->vocab_size == y->vocab_size, "P=%d: model shape", P);
    same_str("model_sha256", x->model_sha256, y->model_sha256);
    same_str("data_sha256", x->data_sha256, y->data_sha256);
    same_str("options", x->options, y->options);
    int L = x->n_layers, D = x->hidden_size;
    for (int l = 0; l < L; l++) {
        same_doubles("mlp_neurons", a->layers[l].mlp_neurons, b->layers[l].mlp_neurons, x->intermediate_size);
        same_doubles("attn_heads", a->layers[l].attn_heads, b->layers[l].attn_heads, x->n_heads);
        same_doubles("emb_attn_norm", a->layers[l].emb_attn_norm, b->layers[l].emb_attn_norm, D);
        same_doubles("emb_mlp_norm", a->layers[l].emb_mlp_norm, b->layers[l].emb_mlp_norm, D);
    }
    same_doubles("/width/emb", a->width_emb, b->width_emb, D);
    same_doubles("/depth/bi", a->depth.bi, b->depth.bi, L);
    same_doubles("/depth/ppl", a->depth.ppl, b->depth.ppl, L);
    cr_expect(memcmp(&a->depth.ppl_full, &b->depth.ppl_full, sizeof(double)) == 0, "P=%d: ppl_full", P);
    cr_assert_eq(a->depth.n_mi_iter, b->depth.n_mi_iter, "P=%d: MI iterations", P);
    same_doubles("/depth/mi", a->depth.mi, b->depth.mi, a->depth.n_mi_iter * L);
    same_ints("/orders/mi", a->depth.mi_order, b->depth.mi_order, a->depth.n_mi_iter);
    same_ints("/orders/bi", a->order_bi, b->order_bi, L);
    same_ints("/orders/ppl", a->order_ppl, b->order_ppl, L);
}

static const char *DEPTH_KEYS[] = {"bi", "order_bi", "ppl_full", "ppl_drop", "order_ppl", "mi", "mi_removed", "order_mi",
                                   "head_scores"};

static void same_json(json_t *a, json_t *b, int P) {
    for (size_t k = 0; k < sizeof DEPTH_KEYS / sizeof *DEPTH_KEYS; k++) {
        json_t *x = json_object_get(a, DEPTH_KEYS[k]), *y = json_object_get(b, DEPTH_KEYS[k]);
        cr_expect(x && y && json_equal(x, y), "json '%s' differs between P=1 and P=%d", DEPTH_KEYS[k], P);
    }
}

static void remove_dir(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    tu_run(cmd, NULL, NULL);
}

/* ---- tests ---- */

/* Default aggregation (mean over tokens, L2 over windows), P = 1, 2, 3. */
Test(importance, stories260K_golden_and_ranks) {
    json_t *g = load_golden();
    char dir[4096]; /* tu_* paths live in a small ring of buffers: keep a copy */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    char *text = write_text(dir, g);
    mf_rankings r[3];
    json_t *j[3];
    double ww[4] = {0}, wd[4] = {0}, wjh = 0;
    for (int P = 1; P <= 3; P++) {
        char out[4200];
        snprintf(out, sizeof out, "%s/rank%d.h5", dir, P);
        j[P - 1] = run_score(P, g, text, out, "");
        read_rankings(out, &r[P - 1]);
    }
    /* against the independent computation */
    int T = gint(g, "ctx"), N = gint(g, "windows");
    cr_expect_eq(r[0].meta.ctx, T, "ctx");
    cr_expect_eq(r[0].meta.n_samples, N, "n_samples");
    cr_expect_eq(r[0].meta.n_tokens, (int64_t)T * N, "n_tokens");
    check_width(&r[0], g, "mean/l2", ww);
    check_depth(&r[0], j[0], g, wd);
    check_json_heads(j[0], g, "mean/l2", &wjh);
    /* provenance: the file names the backend, the BLAS core the --json reports, and the rank count */
    for (int P = 1; P <= 3; P++) check_provenance(&r[P - 1], j[P - 1], P);
    /* bit-identical across rank counts */
    for (int P = 2; P <= 3; P++) {
        same_rankings(&r[0], &r[P - 1], P);
        same_json(j[0], j[P - 1], P);
    }
    fprintf(stderr,
            "importance mean/l2 max rel err: mlp %.2e heads %.2e emb-norms %.2e emb %.2e | bi %.2e ppl %.2e mi0 %.2e "
            "mi1 %.2e | json heads %.2e\n",
            ww[0], ww[1], ww[2], ww[3], wd[0], wd[1], wd[2], wd[3], wjh);
    for (int k = 0; k < 3; k++) {
        mf_rankings_free(&r[k]);
        json_decref(j[k]);
    }
    free(text);
    json_decref(g);
    remove_dir(dir);
}

/* Every other seq x batch aggregation (l2/mean with all metrics, the rest width only), P = 1..3 in turn. */
Test(importance, stories260K_aggregations) {
    static const char *aggs[] = {"mean", "l2", "var"};
    json_t *g = load_golden();
    char dir[4096]; /* tu_* paths live in a small ring of buffers: keep a copy */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    char *text = write_text(dir, g);
    int k = 0;
    for (int s = 0; s < 3; s++)
        for (int b = 0; b < 3; b++) {
            if (s == 0 && b == 1) continue; /* default: the test above */
            char key[32], extra[128], out[4200];
            snprintf(key, sizeof key, "%s/%s", aggs[s], aggs[b]);
            int full = s == 1 && b == 0;
            snprintf(extra, sizeof extra, "--agg-seq %s --agg-batch %s%s", aggs[s], aggs[b], full ? "" : " --metrics width");
            snprintf(out, sizeof out, "%s/%s_%s.h5", dir, aggs[s], aggs[b]);
            int P = 1 + k++ % 3;
            json_t *j = run_score(P, g, text, out, extra);
            mf_rankings r;
            read_rankings(out, &r);
            double ww[4] = {0}, wd[4] = {0}, wjh = 0;
            check_width(&r, g, key, ww);
            check_json_heads(j, g, key, &wjh);
            if (full) check_depth(&r, j, g, wd);
            else cr_expect((r.metrics & ~MF_RK_WIDTH) == 0, "%s --metrics width: file has metrics 0x%x", key, r.metrics);
            fprintf(stderr, "importance %s (P=%d) max rel err: mlp %.2e heads %.2e emb-norms %.2e emb %.2e%s\n", key, P,
                    ww[0], ww[1], ww[2], ww[3], full ? " (+ depth checked)" : "");
            mf_rankings_free(&r);
            json_decref(j);
        }
    free(text);
    json_decref(g);
    remove_dir(dir);
}

/* The file reads with the HDF5 tools and with h5py, which sees our /depth/bi exactly. */
Test(importance, rankings_readable_by_h5dump_and_h5py) {
    json_t *g = load_golden();
    char dir[4096]; /* tu_* paths live in a small ring of buffers: keep a copy */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    char *text = write_text(dir, g);
    char out[4200], cmd[8800];
    snprintf(out, sizeof out, "%s/r.h5", dir);
    json_t *j = run_score(2, g, text, out, "");
    mf_rankings r;
    read_rankings(out, &r);
    char *o, *e;
    snprintf(cmd, sizeof cmd, "h5dump -H %s", out);
    int rc = tu_run(cmd, &o, &e);
    cr_expect_eq(rc, 0, "h5dump -H failed (%d): %s", rc, e);
    cr_expect(strstr(o, "/depth") || strstr(o, "\"depth\""), "h5dump -H shows no depth group:\n%s", o);
    free(o); free(e);
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import sys, h5py\nwith h5py.File(sys.argv[1], 'r') as f:\n"
             "    print(' '.join(repr(float(v)) for v in f['depth/bi'][()]))\" %s", out);
    rc = tu_run(cmd, &o, &e);
    cr_assert_eq(rc, 0, "h5py could not read /depth/bi (%d): %s", rc, e);
    int L = gint(g, "n_layers"), n = 0;
    char *p = o, *end;
    for (; n < L + 1; n++) {
        double v = strtod(p, &end);
        if (end == p) break;
        if (n < L) cr_expect(v == r.depth.bi[n], "h5py /depth/bi[%d] = %.17g, mf_rankings_read %.17g", n, v, r.depth.bi[n]);
        p = end;
    }
    cr_expect_eq(n, L, "h5py /depth/bi has %d values, want %d: %s", n, L, o);
    free(o); free(e);
    mf_rankings_free(&r);
    json_decref(j);
    free(text);
    json_decref(g);
    remove_dir(dir);
}
