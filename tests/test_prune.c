/* test_prune.c - score -> prune -> eval on real models: the perplexity `score`
 * predicts for a dropped block equals `eval` on the saved pruned model; width
 * pruning keeps the best-scored units; bad rankings are refused. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/rankings.h"
#include "io/source.h"
#include "testutil.h"

#define STORIES "llm_assets/models/stories260K/stories260K.bin"
#define TOK512 "llm_assets/models/stories260K/tok512.bin"
#define TINY "llm_assets/text/tinystories_train_first2MiB.txt"

static json_t *run_json(const char *cmd) {
    char *out, *err;
    int rc = tu_run(cmd, &out, &err);
    cr_assert_eq(rc, 0, "command failed: %s\n%s", cmd, err);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    cr_assert(j, "not JSON: %.300s", out);
    free(out); free(err);
    return j;
}

static void run_ok(const char *cmd) {
    char *err;
    int rc = tu_run(cmd, NULL, &err);
    cr_assert_eq(rc, 0, "command failed: %s\n%s", cmd, err);
    free(err);
}

/* Score on `samples` windows, prune the block the ppl order removes first, eval the
 * saved model on the same windows: its ppl must equal score's ppl_drop for that block. */
/* The block the ppl order drops first is compared. */
static void check_drop_one(const char *model, const char *text, int samples, int ctx, int P) {
    const char *dir = tu_tmpdir();
    char cmd[16384], rk[4200];
    snprintf(rk, sizeof rk, "%s/r.h5", dir);
    snprintf(cmd, sizeof cmd, "%s score --model %s --text %s --out %s --samples %d --ctx %d --metrics bi,ppl --json", tu_mpirun(P),
             model, text, rk, samples, ctx);
    json_t *s = run_json(cmd);
    json_t *drop = json_object_get(s, "ppl_drop");
    mf_rankings r;
    mf_err err;
    cr_assert_eq(mf_rankings_read(rk, &r, &err), 0, "%s", err.msg);
    int first = r.order_ppl[0];
    char out[4300];
    snprintf(out, sizeof out, "%s/pruned", dir);
    snprintf(cmd, sizeof cmd, "%s prune --model %s --rankings %s --out %s --drop-layers 1 --metric ppl", tu_mpirun(P), model, rk, out);
    run_ok(cmd);
    /* no --tokenizer: the pruned directory's config names the original tokenizer */
    snprintf(cmd, sizeof cmd, "%s eval --model %s --text %s --ctx %d --max-windows %d --json", tu_mpirun(P), out, text, ctx, samples);
    json_t *e = run_json(cmd);
    double want = json_real_value(json_array_get(drop, (size_t)first)), got = json_real_value(json_object_get(e, "ppl"));
    cr_expect(fabs(got / want - 1) < 1e-8, "%s: ppl of the model without block %d: eval %.10g, score predicted %.10g", model, first, got, want);
    cr_expect(fabs(r.depth.ppl[first] - got) / got < 1e-12, "rankings.h5 ppl[%d] %.12g vs eval %.12g", first, r.depth.ppl[first], got);
    /* the saved model has one layer less and loads back */
    mf_source *src = mf_source_open(out, &err);
    cr_assert(src, "%s", err.msg);
    cr_expect_eq(src->cfg.n_layers, r.meta.n_layers - 1);
    mf_source_close(src);
    mf_rankings_free(&r);
    json_decref(s); json_decref(e);
}

Test(prune, stories260K_drop_one_matches_score, .timeout = 300) {
    check_drop_one(tu_shared(STORIES), tu_shared(TINY), 8, 256, 2);
}

Test(prune, smollm2_drop_one_matches_score, .timeout = 600) {
    char model[4200];
    snprintf(model, sizeof model, "%s", tu_smollm2());
    check_drop_one(model, tu_shared(TINY), 2, 64, 3);
}

/* Width pruning keeps the highest-scored neurons/heads/channels, slices every tensor
 * consistently (the pruned model runs and its ppl is finite), GQA groups stay equal. */
Test(prune, stories260K_width_and_gqa, .timeout = 300) {
    const char *dir = tu_tmpdir();
    char cmd[16384], rk[4200], out[4300];
    snprintf(rk, sizeof rk, "%s/r.h5", dir);
    snprintf(cmd, sizeof cmd, "%s score --model %s --text %s --out %s --samples 4 --ctx 128 --metrics width", tu_mpirun(2),
             tu_shared(STORIES), tu_shared(TINY), rk);
    run_ok(cmd);
    mf_rankings r;
    mf_err err;
    cr_assert_eq(mf_rankings_read(rk, &r, &err), 0, "%s", err.msg);
    const char *variants[] = {"--ffn-keep 0.5 --align 8", "--heads-keep 4", "--prune-kv-groups --heads-keep 0.5", "--hidden-keep 32 --align 8"};
    for (int v = 0; v < 4; v++) {
        snprintf(out, sizeof out, "%s/w%d", dir, v);
        snprintf(cmd, sizeof cmd, "%s prune --model %s --rankings %s --out %s %s", tu_mpirun(v % 3 + 1), tu_shared(STORIES), rk, out, variants[v]);
        run_ok(cmd);
        mf_source *src = mf_source_open(out, &err);
        cr_assert(src, "%s", err.msg);
        const mf_config *c = &src->cfg;
        if (v == 0) cr_expect_eq(c->ffn_dim, 88);
        if (v == 1) { cr_expect_eq(c->n_heads, 4); cr_expect_eq(c->n_kv_heads, 4); }
        if (v == 2) { cr_expect_eq(c->n_heads, 4); cr_expect_eq(c->n_kv_heads, 2); }
        if (v == 3) { cr_expect_eq(c->dim, 32); cr_expect_eq(c->head_dim, 8); cr_expect_eq(c->n_heads, 8); }
        /* the kept down_proj columns of layer 0 are the top-scored neurons, in order */
        if (v == 0) {
            int64_t shape[2] = {64, 88};
            int owned;
            float *down = mf_source_get(src, "model.layers.0.mlp.down_proj.weight", 2, shape, &owned, &err);
            cr_assert(down, "%s", err.msg);
            mf_source *orig = mf_source_open(tu_shared(STORIES), &err);
            int64_t oshape[2] = {64, 172};
            int oowned;
            float *odown = mf_source_get(orig, "model.layers.0.mlp.down_proj.weight", 2, oshape, &oowned, &err);
            const double *sc = r.layers[0].mlp_neurons;
            int j = 0, bad = 0;
            double thresh; /* 88th largest score */
            double *sorted = malloc(172 * sizeof *sorted);
            memcpy(sorted, sc, 172 * sizeof *sorted);
            for (int a = 0; a < 172; a++) for (int b = a + 1; b < 172; b++) if (sorted[b] > sorted[a]) { double t = sorted[a]; sorted[a] = sorted[b]; sorted[b] = t; }
            thresh = sorted[87];
            for (int n = 0; n < 172; n++) {
                if (sc[n] < thresh) continue;
                for (int row = 0; row < 64; row++) bad += down[row * 88 + j] != odown[row * 172 + n];
                j++;
            }
            cr_expect_eq(j, 88);
            cr_expect_eq(bad, 0, "down_proj columns are not the top-scored neurons in order");
            free(sorted);
            if (owned) free(down);
            if (oowned) free(odown);
            mf_source_close(orig);
        }
        mf_source_close(src);
        snprintf(cmd, sizeof cmd, "%s eval --model %s --tokenizer %s --text %s --ctx 128 --max-windows 4 --json", tu_mpirun(2), out,
                 tu_shared(TOK512), tu_shared(TINY));
        json_t *e = run_json(cmd);
        double ppl = json_real_value(json_object_get(e, "ppl"));
        cr_expect(isfinite(ppl) && ppl > 1 && ppl < 512, "variant %d: ppl %g", v, ppl);
        json_decref(e);
    }
    mf_rankings_free(&r);
}

/* Rankings of another model, or a corrupt file, are refused in one line. */
Test(prune, bad_rankings_refused, .timeout = 300) {
    const char *dir = tu_tmpdir();
    char cmd[16384], rk[4200], out[4300], bad[4300];
    snprintf(rk, sizeof rk, "%s/r.h5", dir);
    snprintf(cmd, sizeof cmd, "%s score --model %s --text %s --out %s --samples 2 --ctx 64 --metrics bi", tu_mpirun(1),
             tu_shared(STORIES), tu_shared(TINY), rk);
    run_ok(cmd);
    snprintf(out, sizeof out, "%s/o", dir);
    snprintf(cmd, sizeof cmd, "%s prune --model %s --rankings %s --out %s --drop-layers 2 --metric bi", tu_mpirun(2), tu_smollm2(), rk, out);
    char *o, *e;
    int rc = tu_run(cmd, &o, &e);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(e, "minifuse: error") && strstr(e, "r.h5"), "stderr: %s", e);
    cr_expect(access(out, F_OK) != 0, "no output may be left");
    free(o); free(e);
    snprintf(bad, sizeof bad, "%s/bad.h5", dir);
    size_t len;
    char *b = tu_read(rk, &len);
    tu_write(bad, b, len / 2);
    free(b);
    snprintf(cmd, sizeof cmd, "%s prune --model %s --rankings %s --out %s --drop-layers 1 --metric bi", tu_mpirun(2), tu_shared(STORIES), bad, out);
    rc = tu_run(cmd, &o, &e);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(e, "bad.h5"), "stderr: %s", e);
    cr_expect(access(out, F_OK) != 0, "no output may be left");
    free(o); free(e);
    /* a metric that was not computed */
    snprintf(cmd, sizeof cmd, "%s prune --model %s --rankings %s --out %s --drop-layers 1 --metric mi", tu_mpirun(1), tu_shared(STORIES), rk, out);
    rc = tu_run(cmd, &o, &e);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(e, "Macro Influence"), "stderr: %s", e);
    free(o); free(e);
}

/* --drop-block removes the contiguous run of N layers with the least summed score. */
Test(prune, drop_block_is_contiguous_minimum, .timeout = 300) {
    const char *dir = tu_tmpdir();
    char cmd[16384], rk[4200], out[4300];
    snprintf(rk, sizeof rk, "%s/r.h5", dir);
    snprintf(cmd, sizeof cmd, "%s score --model %s --text %s --out %s --samples 2 --ctx 64 --metrics bi", tu_mpirun(1),
             tu_shared(STORIES), tu_shared(TINY), rk);
    run_ok(cmd);
    mf_rankings r;
    mf_err err;
    cr_assert_eq(mf_rankings_read(rk, &r, &err), 0, "%s", err.msg);
    int best = 0;
    double bsum = 1e300;
    for (int a = 0; a + 2 <= 5; a++) {
        double s = r.depth.bi[a] + r.depth.bi[a + 1];
        if (s < bsum) { bsum = s; best = a; }
    }
    snprintf(out, sizeof out, "%s/blk", dir);
    snprintf(cmd, sizeof cmd, "%s prune --model %s --rankings %s --out %s --drop-layers 2 --drop-block --metric bi", tu_mpirun(2),
             tu_shared(STORIES), rk, out);
    run_ok(cmd);
    char cfg[4400];
    snprintf(cfg, sizeof cfg, "%s/config.json", out);
    json_t *j = json_load_file(cfg, 0, NULL);
    json_t *d = json_object_get(json_object_get(j, "minifuse"), "dropped_layers");
    cr_assert_eq(json_array_size(d), 2);
    cr_expect_eq(json_integer_value(json_array_get(d, 0)), best);
    cr_expect_eq(json_integer_value(json_array_get(d, 1)), best + 1);
    cr_expect_eq(json_integer_value(json_object_get(j, "num_hidden_layers")), 3);
    json_decref(j);
    mf_rankings_free(&r);
}

static char *slurp(const char *path, size_t *n) {
    char *s = tu_read(path, n);
    cr_assert(s, "cannot read %s", path);
    return s;
}

/* --drop-list: the blocks named, no rankings needed; the same list as the MI order
 * gives the same bytes as --metric mi; bad lists are refused with the option named. */
Test(prune, drop_list_equals_metric_order, .timeout = 300) {
    const char *dir = tu_tmpdir();
    char cmd[16384], rk[4200];
    snprintf(rk, sizeof rk, "%s/r.h5", dir);
    snprintf(cmd, sizeof cmd, "%s score --model %s --text %s --out %s --samples 2 --ctx 64 --metrics mi --mi-iters 2", tu_mpirun(1),
             tu_shared(STORIES), tu_shared(TINY), rk);
    run_ok(cmd);
    mf_rankings r;
    mf_err err;
    cr_assert_eq(mf_rankings_read(rk, &r, &err), 0, "%s", err.msg);
    int a = r.depth.mi_order[0], b = r.depth.mi_order[1];
    mf_rankings_free(&r);
    snprintf(cmd, sizeof cmd, "%s prune --model %s --rankings %s --out %s/mi --drop-layers 2 --metric mi && "
             "%s prune --model %s --out %s/list --drop-list %d,%d", tu_mpirun(2), tu_shared(STORIES), rk, dir,
             tu_mpirun(2), tu_shared(STORIES), dir, a, b);
    run_ok(cmd);
    char p1[4400], p2[4400];
    for (int s = 1; s <= 2; s++) { /* two ranks write two shards */
        size_t n1, n2;
        snprintf(p1, sizeof p1, "%s/mi/model-0000%d-of-00002.safetensors", dir, s);
        snprintf(p2, sizeof p2, "%s/list/model-0000%d-of-00002.safetensors", dir, s);
        char *x = slurp(p1, &n1), *y = slurp(p2, &n2);
        cr_expect(n1 == n2 && memcmp(x, y, n1) == 0, "--drop-list %d,%d and --metric mi give different weights (%s)", a, b, p2);
        free(x); free(y);
    }
    snprintf(p2, sizeof p2, "%s/list/config.json", dir);
    json_t *j = json_load_file(p2, 0, NULL);
    json_t *mf = json_object_get(j, "minifuse");
    cr_expect_str_eq(json_string_value(json_object_get(mf, "depth_metric")), "list");
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(mf, "dropped_layers"), 0)), a);
    json_decref(j);
    const struct { const char *args, *msg; } bad[] = {
        {"--drop-list 1,1", "names block 1 twice"},
        {"--drop-list 5", "not a block index 0..4"},
        {"--drop-list 1,x", "--drop-list"},
        {"--drop-list 1,2 --drop-layers 3", "--drop-layers is 3"},
        {"--drop-list 1 --drop-block", "--drop-block"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char *err_s;
        snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s/bad%zu %s", tu_mpirun(1), tu_shared(STORIES), dir, k, bad[k].args);
        cr_expect_neq(tu_run(cmd, NULL, &err_s), 0, "%s should fail", bad[k].args);
        cr_expect(strstr(err_s, bad[k].msg), "%s: message lacks '%s': %s", bad[k].args, bad[k].msg, err_s);
        free(err_s);
        snprintf(p1, sizeof p1, "%s/bad%zu", dir, k);
        cr_expect(access(p1, F_OK) != 0, "%s left an output", bad[k].args);
    }
}
