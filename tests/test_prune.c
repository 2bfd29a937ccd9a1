/* test_prune.c - score -> prune -> eval on real models: the perplexity `score`
 * predicts for a dropped block equals `eval` on the saved pruned model; width
 * pruning keeps the units the scores name and slices exactly what an independent
 * numpy slicing gives (tests/check_prune_slice.py); bad rankings are refused. */
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

/* Width pruning, checked against an independent oracle (tests/check_prune_slice.py: numpy,
 * safetensors, h5py): which neurons / query heads / KV groups / hidden channels were kept
 * follows from the scores in rankings.h5 alone; every tensor of the pruned model is
 * bit-identical to a numpy slice of the original safetensors by those indices; and the
 * pruned model's logits (`minifuse logits`, 2 ranks) equal a float64 numpy forward of the
 * sliced weights. The original is the Hugging Face copy of stories260K (8 heads in 4 KV groups). */
#define STORIES_HF "llm_assets/models/stories260K_hf"
#define IDS "1,385,328,432,261,376,298,315,421,395,317,272,277,264,261,404,266,305,322,311"

Test(prune, stories260K_width_and_gqa_vs_numpy_slices, .timeout = 300) {
    const char *dir = tu_tmpdir();
    char cmd[16384], rk[4200], out[4300], lf[4400];
    snprintf(rk, sizeof rk, "%s/r.h5", dir);
    snprintf(cmd, sizeof cmd, "%s score --model %s --text %s --out %s --samples 4 --ctx 128 --metrics width,bi", tu_mpirun(2),
             tu_shared(STORIES_HF), tu_shared(TINY), rk);
    run_ok(cmd);
    mf_rankings r;
    mf_err err;
    cr_assert_eq(mf_rankings_read(rk, &r, &err), 0, "%s", err.msg);
    const struct { const char *args; int layers, ffn, heads, kv, dim; } variants[] = {
        {"--ffn-keep 0.5 --align 8", 5, 88, 8, 4, 64},
        {"--heads-keep 4", 5, 172, 4, 4, 64},                           /* one query of each KV group */
        {"--prune-kv-groups --heads-keep 0.5", 5, 172, 4, 2, 64},       /* two whole KV groups */
        {"--hidden-keep 32 --align 8", 5, 172, 8, 4, 32},
        {"--drop-layers 1 --metric bi --ffn-keep 96 --heads-keep 0.5 --hidden-keep 48 --align 8", 4, 96, 4, 4, 48},
    };
    for (int v = 0; v < (int)(sizeof variants / sizeof variants[0]); v++) {
        snprintf(out, sizeof out, "%s/w%d", dir, v);
        snprintf(cmd, sizeof cmd, "%s prune --model %s --rankings %s --out %s %s", tu_mpirun(v % 3 + 1), tu_shared(STORIES_HF), rk, out,
                 variants[v].args);
        run_ok(cmd);
        mf_source *src = mf_source_open(out, &err);
        cr_assert(src, "%s", err.msg);
        const mf_config *c = &src->cfg;
        cr_expect(c->n_layers == variants[v].layers && c->ffn_dim == variants[v].ffn && c->n_heads == variants[v].heads &&
                  c->n_kv_heads == variants[v].kv && c->dim == variants[v].dim && c->head_dim == 8,
                  "%s: layers %d, ffn %d, heads %d/%d, hidden %d, head_dim %d", variants[v].args, c->n_layers, c->ffn_dim, c->n_heads,
                  c->n_kv_heads, c->dim, c->head_dim);
        mf_source_close(src);
        snprintf(lf, sizeof lf, "%s/l%d.f32", dir, v);
        snprintf(cmd, sizeof cmd, "%s logits --model %s --ids " IDS " --out %s", tu_mpirun(2), out, lf);
        run_ok(cmd);
        char *o, *e;
        /* float32 minifuse against float64 numpy: 1.1e-5 on the unpruned model, at most 1.4e-5 on these */
        snprintf(cmd, sizeof cmd, "python3 tests/check_prune_slice.py %s %s %s --ids " IDS " --logits %s --tol 5e-5",
                 tu_shared(STORIES_HF), rk, out, lf);
        int rc = tu_run(cmd, &o, &e);
        cr_expect_eq(rc, 0, "%s: the independent check fails:\n%s%s", variants[v].args, o, e);
        cr_log_info("%s: %s", variants[v].args, o);
        free(o); free(e);
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
