/* test_resume.c - restart anywhere: a run checkpointed on one rank layout
 * resumes on another and ends within reduction noise of the uninterrupted run.
 *
 *   distill (stories260K, 10 steps): pp2 stopped at step 3 (--max-steps) ->
 *     pp3 to step 6 -> 1 rank to the end; and the step-3 checkpoint -> pp1 x dp2
 *   fuse (stories260K, 2 blocks of 6 steps): 2 ranks stopped mid-block 1 ->
 *     3 ranks (through a fold and a Macro Influence pass) stopped mid-block 2 -> 1 rank
 *   SmolLM2 (a short distill, ctx 64): 2 ranks stopped at step 1 -> 1 rank; and -> pp1 x dp2
 *   SmolLM2 fuse (2 blocks by Macro Influence, ctx 32): 2 ranks stopped mid-block 1 -> 3 ranks
 *     (through a fold and a Macro Influence pass) stopped mid-block 2 -> 1 rank
 *   score (stories260K, 2 passes of 8 windows): 2 -> 3 -> 1 ranks, rankings bit-identical
 * Each asserts the resume happened (the log line naming the checkpoint, the
 * layout change and the step), the checkpoint's layout records (pp, dp,
 * /layer_stage, backend, BLAS core and threads), and the final loss and weights
 * against the uninterrupted run (tests/weight_diff.py; the achieved differences
 * are printed). A checkpoint from another BLAS core or thread count is a
 * warning naming both, also under MINIFUSE_QUIET; the checkpoint directory's
 * lock is taken at start-up. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "train/checkpoint.h"
#include "util/fsutil.h"

#define STORIES "llm_assets/models/stories260K/stories260K.bin"
#define TINY "llm_assets/text/tinystories_train_first2MiB.txt"

/* Tolerances. Resuming on another layout changes only the order of
 * floating-point sums (pipeline split, data-parallel reduce-scatter, loss
 * sums); the data, its order and every random choice are the same. Measured
 * here (OpenBLAS Zen, 1 thread): distill 10 steps, final loss within 5e-8
 * (relative) and weights within 3e-8 (largest ||a-b|| / ||a|| of a tensor);
 * fuse 2 blocks, loss equal to 8 digits and weights within 1.5e-7; SmolLM2
 * distill, 2 steps at lr 1e-4: loss equal to 8 digits, weights within 2.0e-11;
 * SmolLM2 fuse, loss within 1.7e-8 and weights within 3.1e-9 (a resume one step
 * off: 6e-2 and 1.7e-3). The thresholds allow 20-100x that, since Adam's normalization can amplify last-bit differences over more
 * steps or on another BLAS kernel; a resume that consumed other data (a
 * data position off by one step) misses them by orders of magnitude (about 1e-2). */
#define LOSS_TOL 2e-6
#define WEIGHT_TOL 3e-6

static char *run_ok(const char *cmd, const char *what) {
    char *err = NULL;
    int rc = tu_run(cmd, NULL, &err);
    cr_assert_eq(rc, 0, "%s failed (%d):\n%s", what, rc, err);
    return err;
}

static void expect_in(const char *s, const char *want, const char *what) {
    cr_expect(strstr(s, want), "%s: stderr should contain '%s':\n%s", what, want, s);
}

/* Loss of the last line of a JSON-lines log. */
static double last_loss(const char *dir, const char *name) {
    char *path = tu_path_in(dir, name);
    size_t len;
    char *s = tu_read(path, &len);
    cr_assert(s && len, "no log %s", path);
    char *p = s + len - 1;
    while (p > s && p[-1] != '\n') p--;
    json_t *j = json_loads(p, 0, NULL);
    cr_assert(j, "bad log line %s", p);
    double v = json_real_value(json_object_get(j, "loss"));
    json_decref(j);
    free(s);
    free(path);
    return v;
}

/* The weights of two HF directories: the largest relative difference of a tensor. */
static double weight_diff(const char *a, const char *b) {
    char cmd[9000], *out = NULL, *err = NULL;
    snprintf(cmd, sizeof cmd, "python3 tests/weight_diff.py %s %s", a, b);
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "weight_diff: %s", err);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert(j, "weight_diff output: %s", out);
    double rel = json_real_value(json_object_get(j, "max_rel"));
    cr_log_info("weights %s vs %s: %s", a, b, out);
    fprintf(stderr, "resume: weights %s vs %s: %s", a, b, out);
    json_decref(j);
    free(out);
    free(err);
    return rel;
}

static void expect_close(const char *what, const char *dir, const char *ref, const char *got, const char *log_ref,
                         const char *log_got) {
    double lr = last_loss(dir, log_ref), lg = last_loss(dir, log_got);
    double dl = fabs(lr - lg) / fabs(lr);
    fprintf(stderr, "resume: %s: final loss %.9g vs uninterrupted %.9g (relative difference %.3g)\n", what, lg, lr, dl);
    cr_expect(dl < LOSS_TOL, "%s: final loss %.9g vs uninterrupted %.9g (relative %.3g >= %g)", what, lg, lr, dl, LOSS_TOL);
    char *a = tu_path_in(dir, ref), *b = tu_path_in(dir, got);
    double dw = weight_diff(a, b);
    cr_expect(dw < WEIGHT_TOL, "%s: weights differ from the uninterrupted run by %.3g (>= %g)", what, dw, WEIGHT_TOL);
    free(a);
    free(b);
}

/* The layout records of a checkpoint written by `pp` x `dp` ranks on a model of n_layers. */
static void expect_layout(const char *path, int pp, int dp, int n_layers) {
    mf_params none = {0};
    mf_train_meta m;
    mf_err err;
    cr_assert_eq(mf_ckpt_read(path, 0, &none, NULL, &m, &err), 0, "%s", err.msg);
    cr_expect_eq(m.pp, pp, "%s: pp %d", path, m.pp);
    cr_expect_eq(m.dp, dp, "%s: dp %d", path, m.dp);
    cr_expect_str_eq(m.backend, "cpu");
    cr_expect(m.blas_core && m.blas_core[0], "%s: no blas_core", path);
    cr_expect_eq(m.blas_threads, 1, "%s: blas_threads %d (the tests run one thread)", path, m.blas_threads);
    cr_assert_eq(m.n_layers, n_layers, "%s: /layer_stage has %d entries", path, m.n_layers);
    /* contiguous stages 0..pp-1, each at least one layer, in order */
    cr_expect_eq(m.layer_stage[0], 0);
    cr_expect_eq(m.layer_stage[n_layers - 1], pp - 1, "%s: last layer on stage %d", path, m.layer_stage[n_layers - 1]);
    for (int l = 1; l < n_layers; l++) {
        int d = m.layer_stage[l] - m.layer_stage[l - 1];
        cr_expect(d == 0 || d == 1, "%s: layer %d on stage %d after %d", path, l, m.layer_stage[l], m.layer_stage[l - 1]);
    }
    mf_train_meta_free(&m);
}

/* ------------------------------------------------------------ distill */

static void distill_cmd(char *cmd, size_t cap, const char *dir, int P, const char *out, const char *extra) {
    snprintf(cmd, cap, "%s distill --teacher %s --student %s/student --text %s --out %s/%s --tokens 20480 --batch 8 --lr 1e-3 %s",
             tu_mpirun(P), tu_shared(STORIES), dir, tu_shared(TINY), dir, out, extra);
}

Test(resume, distill_2_to_3_to_1_and_pp2_to_dp2, .timeout = 900) {
    const char *dir = tu_tmpdir();
    char cmd[16384], path[4400], *err;
    snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s/student --drop-layers 1 --metric random --seed 3", tu_mpirun(1),
             tu_shared(STORIES), dir);
    free(run_ok(cmd, "prune"));
    distill_cmd(cmd, sizeof cmd, dir, 2, "ref", "");
    free(run_ok(cmd, "uninterrupted run (pp2)"));
    /* pp2, stopped after step 3 */
    distill_cmd(cmd, sizeof cmd, dir, 2, "a", "--max-steps 3");
    err = run_ok(cmd, "pp2 to step 3");
    expect_in(err, "--max-steps 3: checkpoint written at step 3", "pp2 to step 3");
    free(err);
    snprintf(path, sizeof path, "%s/a", dir);
    cr_assert(access(path, F_OK) != 0, "a run stopped by --max-steps must not write the student");
    cr_assert_eq(tu_last_step(tu_path_in(dir, "a.train.jsonl")), 3);
    snprintf(path, sizeof path, "%s/a.ckpt/ckpt-00000003.h5", dir);
    expect_layout(path, 2, 1, 4);
    /* the same checkpoint, for the pp1 x dp2 leg */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/b.ckpt && cp %s %s/b.ckpt/ && cp %s/a.train.jsonl %s/b.train.jsonl", dir, path, dir, dir, dir);
    free(run_ok(cmd, "copy"));
    /* 2 -> 3 ranks, stopped after step 6 */
    distill_cmd(cmd, sizeof cmd, dir, 3, "a", "--max-steps 6 --resume");
    err = run_ok(cmd, "pp3 from step 3");
    expect_in(err, "ckpt-00000003.h5 at step 3", "pp3 from step 3");
    expect_in(err, "resuming a pp 2 x dp 1 checkpoint on pp 3 x dp 1", "pp3 from step 3");
    free(err);
    snprintf(path, sizeof path, "%s/a.ckpt/ckpt-00000006.h5", dir);
    expect_layout(path, 3, 1, 4);
    /* a checkpoint from another BLAS core and thread count: a warning naming both, even under MINIFUSE_QUIET */
    tu_h5py_edit(path, "f.attrs['provenance'] = np.bytes_('{\"backend\":\"cpu\",\"blas_core\":\"FakeCore\",\"blas_threads\":7,"
                       "\"ranks\":3,\"pp\":3,\"dp\":1}')");
    /* 3 -> 1 rank, to the end */
    distill_cmd(cmd, sizeof cmd, dir, 1, "a", "--resume");
    err = run_ok(cmd, "1 rank from step 6");
    expect_in(err, "ckpt-00000006.h5 at step 6", "1 rank from step 6");
    expect_in(err, "resuming a pp 3 x dp 1 checkpoint on pp 1 x dp 1", "1 rank from step 6");
    expect_in(err, "warning: distill:", "BLAS core mismatch");
    expect_in(err, "blas_core \"FakeCore\", this run has \"", "BLAS core mismatch");
    expect_in(err, "blas_threads 7, this run has 1", "BLAS thread mismatch");
    free(err);
    cr_assert_eq(tu_last_step(tu_path_in(dir, "a.train.jsonl")), 10);
    expect_close("distill pp2 -> pp3 -> 1 rank", dir, "ref", "a", "ref.train.jsonl", "a.train.jsonl");
    /* pp2 x dp1 -> pp1 x dp2 */
    distill_cmd(cmd, sizeof cmd, dir, 2, "b", "--dp 2 --resume");
    err = run_ok(cmd, "pp1 x dp2 from step 3");
    expect_in(err, "ckpt-00000003.h5 at step 3", "pp1 x dp2 from step 3");
    expect_in(err, "resuming a pp 2 x dp 1 checkpoint on pp 1 x dp 2", "pp1 x dp2 from step 3");
    cr_expect(!strstr(err, "warning"), "same core and threads: no warning:\n%s", err);
    free(err);
    cr_assert_eq(tu_last_step(tu_path_in(dir, "b.train.jsonl")), 10);
    expect_close("distill pp2 -> pp1 x dp2", dir, "ref", "b", "ref.train.jsonl", "b.train.jsonl");
}

/* ------------------------------------------------------------ fuse */

/* 2 blocks x (3 epochs x 2 steps): block 1 is steps 1..6 and its fold 7, block 2 steps 8..13, fold 14. */
static void fuse_cmd(char *cmd, size_t cap, const char *dir, int P, const char *out, const char *extra) {
    snprintf(cmd, cap, "%s fuse --model %s --text %s --out %s/%s --drop-layers 2 --samples 16 --epochs 3 --rank 8 --lr 1e-2 "
             "--lr-base 1e-3 --ctx 128 %s", tu_mpirun(P), tu_shared(STORIES), tu_shared(TINY), dir, out, extra);
}

/* The block a fuse log's iteration `it` trained, or -1. */
static int log_block(const char *dir, const char *name, int it) {
    char *path = tu_path_in(dir, name);
    char *s = tu_read(path, NULL);
    cr_assert(s, "no log %s", path);
    int block = -1;
    for (char *line = strtok(s, "\n"); line && block < 0; line = strtok(NULL, "\n")) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(j, "bad log line in %s: %s", path, line);
        if (json_integer_value(json_object_get(j, "iteration")) == it) block = (int)json_integer_value(json_object_get(j, "block"));
        json_decref(j);
    }
    free(s);
    free(path);
    return block;
}

/* fuse resumed on 2 -> 3 -> 1 ranks against an uninterrupted 2-rank run (2 blocks, `per_block`
 * training steps each, so block 1's fold is global step per_block + 1): 2 ranks stopped at step
 * `stop1` inside block 1; 3 ranks finish block 1, fold it, run the second Macro Influence pass
 * and stop at `stop2` inside block 2; 1 rank finishes. `cmdf` writes the command line. */
typedef void (*fuse_cmd_fn)(char *cmd, size_t cap, const char *dir, int P, const char *out, const char *extra);

static void fuse_resume_2_3_1(const char *what, fuse_cmd_fn cmdf, int n_layers, int per_block, int stop1, int stop2) {
    const char *dir = tu_tmpdir();
    char cmd[16384], path[4400], want[160], step[64], *err;
    int in_block2 = stop2 - (per_block + 1); /* the step within block 2 at stop2 */
    cmdf(cmd, sizeof cmd, dir, 2, "ref", "");
    free(run_ok(cmd, "uninterrupted fuse (2 ranks)"));
    snprintf(step, sizeof step, "--max-steps %d", stop1);
    cmdf(cmd, sizeof cmd, dir, 2, "a", step);
    err = run_ok(cmd, "fuse on 2 ranks, stopped in block 1");
    snprintf(want, sizeof want, "--max-steps %d: checkpoint %d written at block", stop1, stop1);
    expect_in(err, want, what);
    free(err);
    snprintf(path, sizeof path, "%s/a", dir);
    cr_assert(access(path, F_OK) != 0, "%s: a run stopped by --max-steps must not write the model", what);
    snprintf(path, sizeof path, "%s/a.ckpt/ckpt-%08d.h5", dir, stop1);
    expect_layout(path, 2, 1, n_layers);
    /* 2 -> 3 ranks: the rest of block 1, its fold, the second Macro Influence pass, part of block 2 */
    snprintf(step, sizeof step, "--max-steps %d --resume", stop2);
    cmdf(cmd, sizeof cmd, dir, 3, "a", step);
    err = run_ok(cmd, "fuse on 3 ranks, from block 1 into block 2");
    snprintf(want, sizeof want, "ckpt-%08d.h5: 0 blocks removed, inside an iteration", stop1);
    expect_in(err, want, what);
    snprintf(want, sizeof want, "(iteration 1) at step %d", stop1);
    expect_in(err, want, what);
    expect_in(err, "resuming a pp 2 x dp 1 checkpoint on pp 3 x dp 1", what);
    /* the second Macro Influence pass, on 3 ranks, picked the block the uninterrupted run did */
    int block2 = log_block(dir, "ref.fuse.jsonl", 2);
    cr_assert(block2 >= 0, "%s: the uninterrupted run logged no iteration 2", what);
    snprintf(want, sizeof want, "--max-steps %d: checkpoint %d written at block %d step %d", stop2, stop2, block2, in_block2);
    expect_in(err, want, what);
    free(err);
    snprintf(path, sizeof path, "%s/a.ckpt/ckpt-%08d.h5", dir, stop2);
    expect_layout(path, 3, 1, n_layers);
    /* 3 -> 1 rank, to the end */
    cmdf(cmd, sizeof cmd, dir, 1, "a", "--resume");
    err = run_ok(cmd, "fuse on 1 rank, to the end");
    snprintf(want, sizeof want, "ckpt-%08d.h5: 1 blocks removed, inside an iteration", stop2);
    expect_in(err, want, what);
    snprintf(want, sizeof want, "(iteration 2) at step %d", in_block2);
    expect_in(err, want, what);
    expect_in(err, "resuming a pp 3 x dp 1 checkpoint on pp 1 x dp 1", what);
    free(err);
    expect_close(what, dir, "ref", "a", "ref.fuse.jsonl", "a.fuse.jsonl");
}

Test(resume, fuse_2_to_3_to_1, .timeout = 900) {
    fuse_resume_2_3_1("fuse 2 -> 3 -> 1 ranks", fuse_cmd, 5, 6, 3, 10);
}

/* ------------------------------------------------------------ SmolLM2 */

/* SmolLM2 without 8 blocks distilled from SmolLM2 (2 steps of 2 x 64 tokens): stopped after step 1
 * on 2 ranks, finished on 1. */
Test(resume, smollm2_distill_2_to_1_and_pp2_to_dp2, .timeout = 1200) {
    const char *dir = tu_tmpdir();
    char cmd[16384], *err;
    snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s/student --drop-list 4,5,3,12,17,16,18,13", tu_mpirun(1), tu_smollm2(), dir);
    free(run_ok(cmd, "prune"));
    const char *fmt = "%s distill --teacher %s --student %s/student --text %s --out %s/%s --tokens 256 --batch 2 --ctx 64 --lr 1e-4 %s";
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(2), tu_smollm2(), dir, tu_shared(TINY), dir, "ref", "");
    free(run_ok(cmd, "uninterrupted SmolLM2 run (2 ranks)"));
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(2), tu_smollm2(), dir, tu_shared(TINY), dir, "a", "--max-steps 1");
    free(run_ok(cmd, "SmolLM2 to step 1"));
    char path[4400];
    snprintf(path, sizeof path, "%s/a.ckpt/ckpt-00000001.h5", dir);
    expect_layout(path, 2, 1, 22);
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(1), tu_smollm2(), dir, tu_shared(TINY), dir, "a", "--resume");
    err = run_ok(cmd, "SmolLM2 on 1 rank from step 1");
    expect_in(err, "ckpt-00000001.h5 at step 1", "SmolLM2 resume");
    expect_in(err, "resuming a pp 2 x dp 1 checkpoint on pp 1 x dp 1", "SmolLM2 resume");
    free(err);
    cr_assert_eq(tu_last_step(tu_path_in(dir, "a.train.jsonl")), 2);
    expect_close("SmolLM2 distill 2 -> 1 rank", dir, "ref", "a", "ref.train.jsonl", "a.train.jsonl");
    /* the same step-1 checkpoint, pp 2 x dp 1 -> pp 1 x dp 2 */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/b.ckpt && cp %s %s/b.ckpt/ && head -n 1 %s/a.train.jsonl > %s/b.train.jsonl", dir, path,
             dir, dir, dir);
    free(run_ok(cmd, "copy"));
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(2), tu_smollm2(), dir, tu_shared(TINY), dir, "b", "--dp 2 --resume");
    err = run_ok(cmd, "SmolLM2 on pp 1 x dp 2 from step 1");
    expect_in(err, "ckpt-00000001.h5 at step 1", "SmolLM2 dp resume");
    expect_in(err, "resuming a pp 2 x dp 1 checkpoint on pp 1 x dp 2", "SmolLM2 dp resume");
    free(err);
    cr_assert_eq(tu_last_step(tu_path_in(dir, "b.train.jsonl")), 2);
    expect_close("SmolLM2 distill pp 2 -> dp 2", dir, "ref", "b", "ref.train.jsonl", "b.train.jsonl");
}

/* SmolLM2 fuse (2 blocks chosen by Macro Influence, 2 x 2 steps each of 2 x 32 tokens, window 4):
 * block 1 is steps 1..4 and its fold 5, block 2 steps 6..9, fold 10. 2 ranks stopped mid-block 1
 * -> 3 ranks (through the fold and the second Macro Influence pass) stopped mid-block 2 -> 1 rank. */
static void smollm2_fuse_cmd(char *cmd, size_t cap, const char *dir, int P, const char *out, const char *extra) {
    snprintf(cmd, cap, "%s fuse --model %s --text %s --out %s/%s --drop-layers 2 --samples 4 --mi-samples 2 --epochs 2 "
             "--batch 2 --ctx 32 --rank 4 --window 4 --lr 1e-2 --lr-base 1e-3 %s", tu_mpirun(P), tu_smollm2(), tu_shared(TINY),
             dir, out, extra);
}

Test(resume, smollm2_fuse_2_to_3_to_1, .timeout = 1200) {
    fuse_resume_2_3_1("SmolLM2 fuse 2 -> 3 -> 1 ranks", smollm2_fuse_cmd, 30, 4, 2, 7);
}

/* ------------------------------------------------------------ the lock */

/* The checkpoint directory is locked at start-up, not at the first write: a run that would
 * write no checkpoint at all (--checkpoint-every 0, no signal) is still refused while another
 * process holds the directory, before it trains, naming the lock and the holder. */
Test(resume, checkpoint_dir_locked_at_start_up, .timeout = 300) {
    const char *dir = tu_tmpdir();
    char ck[4400], lock[4500], cmd[16384], out[4400], *err;
    snprintf(ck, sizeof ck, "%s/held.ckpt", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s", ck);
    free(run_ok(cmd, "mkdir"));
    snprintf(lock, sizeof lock, "%s/%s", ck, MF_CKPT_LOCK);
    mf_err e;
    cr_assert_eq(mf_lock_acquire(lock, ck, &e), 0, "%s", e.msg);
    snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s --text %s --out %s/x --tokens 2048 --batch 8 --checkpoint-dir %s",
             tu_mpirun(2), tu_shared(STORIES), tu_shared(STORIES), tu_shared(TINY), dir, ck);
    cr_expect_neq(tu_run(cmd, NULL, &err), 0, "distill ran while its checkpoint directory was locked");
    char want[64];
    snprintf(want, sizeof want, "is locked by pid %d", (int)getpid());
    expect_in(err, want, "locked distill");
    expect_in(err, MF_CKPT_LOCK, "locked distill");
    cr_expect(!strstr(err, "step 1"), "it must stop before training:\n%s", err);
    free(err);
    snprintf(out, sizeof out, "%s/x", dir);
    cr_expect(access(out, F_OK) != 0, "a refused run must not write %s", out);
    snprintf(cmd, sizeof cmd, "%s fuse --model %s --text %s --out %s/y --drop-layers 1 --samples 8 --epochs 1 --rank 4 --ctx 64 "
             "--checkpoint-dir %s", tu_mpirun(2), tu_shared(STORIES), tu_shared(TINY), dir, ck);
    cr_expect_neq(tu_run(cmd, NULL, &err), 0, "fuse ran while its checkpoint directory was locked");
    expect_in(err, want, "locked fuse");
    free(err);
    mf_lock_release(lock);
    snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s --text %s --out %s/x --tokens 2048 --batch 8 --checkpoint-dir %s",
             tu_mpirun(2), tu_shared(STORIES), tu_shared(STORIES), tu_shared(TINY), dir, ck);
    free(run_ok(cmd, "distill after the lock was released"));
}

/* ------------------------------------------------------------ score */

/* The scoring pass (8 windows, then a second Macro Influence pass over 8: 16 in all), stopped
 * after window 5 on 2 ranks, after window 11 (inside the second pass) on 3, finished on 1: every
 * dataset of rankings.h5 equals the uninterrupted run's bit for bit (score is bit-identical for
 * any rank count, and the checkpoint keeps every running sum in float64). */
Test(resume, score_2_to_3_to_1_bit_identical, .timeout = 600) {
    const char *dir = tu_tmpdir();
    char cmd[16384], path[4400], *err;
    const char *fmt = "%s score --model %s --text %s --samples 8 --ctx 128 --out %s/%s %s";
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(2), tu_shared(STORIES), tu_shared(TINY), dir, "ref.h5", "");
    free(run_ok(cmd, "uninterrupted score (2 ranks)"));
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(2), tu_shared(STORIES), tu_shared(TINY), dir, "a.h5", "--max-steps 5");
    err = run_ok(cmd, "score to window 5");
    expect_in(err, "--max-steps 5: checkpoint written at window 5 (pass 1)", "score to window 5");
    free(err);
    snprintf(path, sizeof path, "%s/a.h5", dir);
    cr_assert(access(path, F_OK) != 0, "a score stopped by --max-steps must not write the rankings");
    snprintf(path, sizeof path, "%s/a.h5.ckpt/ckpt-00000005.h5", dir);
    expect_layout(path, 2, 1, 5);
    /* the running sums are float64 datasets, the width ones by layer */
    snprintf(cmd, sizeof cmd, "python3 -c \"import h5py,sys; f=h5py.File(sys.argv[1]); d=f['f64/score.layers.4.mlp_q']; "
             "assert d.dtype=='float64' and d.shape==(172,), (d.dtype, d.shape); assert f['f64/score.depth'].shape==(3,)\" %s", path);
    free(run_ok(cmd, "score checkpoint datasets"));
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(3), tu_shared(STORIES), tu_shared(TINY), dir, "a.h5", "--max-steps 11 --resume");
    err = run_ok(cmd, "score on 3 ranks from window 5");
    expect_in(err, "ckpt-00000005.h5 at window 5 (pass 1, window 5)", "score on 3 ranks");
    expect_in(err, "resuming a pp 2 x dp 1 checkpoint on pp 3 x dp 1", "score on 3 ranks");
    expect_in(err, "checkpoint written at window 11 (pass 2)", "score on 3 ranks");
    free(err);
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(1), tu_shared(STORIES), tu_shared(TINY), dir, "a.h5", "--resume");
    err = run_ok(cmd, "score on 1 rank from window 11");
    expect_in(err, "ckpt-00000011.h5 at window 11 (pass 2, window 3)", "score on 1 rank");
    free(err);
    snprintf(cmd, sizeof cmd, "python3 -c \"import h5py,sys,numpy as np; a=h5py.File(sys.argv[1]); b=h5py.File(sys.argv[2]); n=[]; "
             "a.visititems(lambda k,o: n.append(k) if isinstance(o,h5py.Dataset) else None); "
             "bad=[k for k in n if not np.array_equal(a[k][()],b[k][()],equal_nan=True)]; print(len(n),'datasets'); "
             "sys.exit('differ: '+' '.join(bad) if bad else 0)\" %s/ref.h5 %s/a.h5", dir, dir);
    free(run_ok(cmd, "rankings of the resumed score equal the uninterrupted run's"));
    /* another option that changes the scores is refused, naming it */
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(1), tu_shared(STORIES), tu_shared(TINY), dir, "b.h5",
             "--agg-seq l2 --resume --checkpoint-dir");
    strncat(cmd, " ", sizeof cmd - strlen(cmd) - 1);
    strncat(cmd, dir, sizeof cmd - strlen(cmd) - 1);
    strncat(cmd, "/a.h5.ckpt", sizeof cmd - strlen(cmd) - 1);
    cr_expect_neq(tu_run(cmd, NULL, &err), 0, "resume with another --agg-seq must fail");
    expect_in(err, "--agg-seq \"l2\" differs from the checkpoint's \"mean\"", "score resume with another option");
    free(err);
}
