/* test_distill.c - distillation end to end on stories260K (teacher: 5 layers,
 * student: block 2 removed): the loss falls and the student's perplexity
 * recovers; any pipeline/data-parallel layout gives the same result within
 * reduction noise; a run killed with SIGKILL mid-run (asserted) and resumed ends
 * with bit-identical weights; SIGTERM mid-run writes a checkpoint, exits cleanly,
 * and the resumed run ends with the bytes of an uninterrupted one; bad options fail. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define STORIES "llm_assets/models/stories260K/stories260K.bin"
#define TINY "llm_assets/text/tinystories_train_first2MiB.txt"

/* A student: stories260K without block 2 (random metric needs no rankings). */
static const char *make_student(const char *dir) {
    static __thread char out[4300];
    snprintf(out, sizeof out, "%s/student", dir);
    char cmd[8192], *err;
    snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s --drop-layers 1 --metric random --seed 3", tu_mpirun(1), tu_shared(STORIES), out);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "prune: %s", err);
    free(err);
    return out;
}

/* A short distillation into DIR/OUT with extra options (a repeated option: the last wins);
 * its exit status, stderr in *err (free it). */
static int distill_try(const char *dir, const char *student, const char *out, int P, int dp, const char *extra, char **err) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s --text %s --out %s/%s --tokens 20480 --batch 8 --lr 1e-3 --dp %d %s",
             tu_mpirun(P), tu_shared(STORIES), student, tu_shared(TINY), dir, out, dp, extra);
    return tu_run(cmd, NULL, err);
}

static void distill(const char *dir, const char *student, const char *out, int P, int dp, const char *extra) {
    char *err;
    cr_assert_eq(distill_try(dir, student, out, P, dp, extra, &err), 0, "distill %s failed:\n%s", extra, err);
    free(err);
}

/* Last line of the per-step log. */
static json_t *last_log(const char *dir, const char *out) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.train.jsonl", dir, out);
    size_t len;
    char *s = tu_read(path, &len);
    cr_assert(s, "no log %s", path);
    char *lastnl = s + len - 1;
    while (lastnl > s && lastnl[-1] != '\n') lastnl--;
    json_t *j = json_loads(lastnl, 0, NULL);
    cr_assert(j, "bad log line %s", lastnl);
    free(s);
    return j;
}

static double ppl(const char *model) {
    char cmd[8192], *out, *err;
    snprintf(cmd, sizeof cmd, "%s eval --model %s --text %s --skip 1000 --max-windows 40 --json", tu_mpirun(2), model, tu_shared(TINY));
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "eval: %s", err);
    json_t *j = json_loads(out, 0, NULL);
    double p = json_real_value(json_object_get(j, "ppl"));
    json_decref(j); free(out); free(err);
    return p;
}

Test(distill, recovers_and_layouts_agree, .timeout = 600) {
    const char *dir = tu_tmpdir(), *student = make_student(dir);
    distill(dir, student, "a", 1, 1, "");
    distill(dir, student, "b", 3, 1, "");   /* 3 pipeline stages */
    distill(dir, student, "c", 4, 2, "--recompute");   /* 2 stages x 2 replicas */
    json_t *a = last_log(dir, "a"), *b = last_log(dir, "b"), *c = last_log(dir, "c");
    double la = json_real_value(json_object_get(a, "loss")), lb = json_real_value(json_object_get(b, "loss")),
           lc = json_real_value(json_object_get(c, "loss"));
    cr_expect(fabs(la - lb) < 1e-5 * la && fabs(la - lc) < 1e-5 * la, "final losses differ: %.9g %.9g %.9g", la, lb, lc);
    char pa[4400], pc[4400];
    snprintf(pa, sizeof pa, "%s/a", dir);
    snprintf(pc, sizeof pc, "%s/c", dir);
    double p0 = ppl(student), p1 = ppl(pa), p2 = ppl(pc);
    cr_expect(p1 < 0.9 * p0, "distillation should recover: student ppl %.3f -> %.3f", p0, p1);
    cr_expect(fabs(p1 / p2 - 1) < 1e-3, "layouts give different students: ppl %.5f vs %.5f", p1, p2);
    json_decref(a); json_decref(b); json_decref(c);
}

/* Kill-and-resume runs: 40960 tokens = 20 steps of 8 x 256 tokens (0.3 s each on 2 ranks), so that
 * a signal sent at step 6 or earlier lands with more than a dozen steps to go. */
#define LONG_TOKENS 40960
#define LONG_STEPS 20

/* SIGKILL after a checkpoint, mid-run; resume: bit-identical weights to an uninterrupted run. */
Test(distill, kill_and_resume_bit_identical, .timeout = 600) {
    const char *dir = tu_tmpdir(), *student = make_student(dir);
    distill(dir, student, "ref", 2, 1, "--tokens 40960");
    cr_assert_eq(tu_last_step(tu_path_in(dir, "ref.train.jsonl")), LONG_STEPS);
    char cmd[16384], trig[4400], out[4400], ck[4400], why[9000];
    snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s --text %s --out %s/k --tokens %d --batch 8 --lr 1e-3 --checkpoint-every 3",
             tu_mpirun(2), tu_shared(STORIES), student, tu_shared(TINY), dir, LONG_TOKENS);
    snprintf(trig, sizeof trig, "%s/k.ckpt/ckpt-00000006.h5", dir);
    snprintf(out, sizeof out, "%s/k", dir);
    snprintf(ck, sizeof ck, "%s/k --tokens", dir);
    tu_interrupt(cmd, trig, out, ck, 9, NULL);
    /* it died mid-run: no output, its newest checkpoint and its log end before the last step */
    cr_assert(access(out, F_OK) != 0, "the killed run must not have finished");
    snprintf(ck, sizeof ck, "%s/k.ckpt", dir);
    long newest = tu_newest_ckpt(ck), logged = tu_last_step(tu_path_in(dir, "k.train.jsonl"));
    cr_assert(newest >= 6 && newest < LONG_STEPS && logged < LONG_STEPS, "the kill did not land mid-run: newest checkpoint %ld, "
              "last logged step %ld of %d", newest, logged, LONG_STEPS);
    distill(dir, student, "k", 2, 1, "--tokens 40960 --checkpoint-every 3 --resume");
    cr_expect_eq(tu_last_step(tu_path_in(dir, "k.train.jsonl")), LONG_STEPS);
    snprintf(ck, sizeof ck, "%s/ref", dir);
    cr_expect(tu_same_weights(ck, out, why, sizeof why), "resumed weights differ from the uninterrupted run: %s", why);
    /* resuming with an option that changes the result is refused, naming it; another layout is not */
    char *err, extra[4400], path[4400];
    snprintf(extra, sizeof extra, "--tokens 40960 --lr 2e-3 --checkpoint-dir %s/k.ckpt --resume", dir);
    cr_expect_neq(distill_try(dir, student, "o", 2, 1, extra, &err), 0, "resume with another --lr must fail");
    cr_expect(strstr(err, "--lr 0.002 differs from the checkpoint's 0.001"), "%s", err);
    free(err);
    snprintf(path, sizeof path, "%s/o", dir);
    cr_expect(access(path, F_OK) != 0, "a refused resume must not write %s", path);
}

/* SIGTERM mid-run: checkpoint at the end of the step, exit 0; --resume at the same layout
 * finishes with the bytes of an uninterrupted run. */
Test(distill, sigterm_checkpoints_exits_and_resumes_identically, .timeout = 600) {
    const char *dir = tu_tmpdir(), *student = make_student(dir);
    char cmd[16384], trig[4400], out[4400], ck[4400], why[9000], *err;
    /* a singleton (no mpirun): the signal goes to the program itself */
    snprintf(cmd, sizeof cmd, "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 %s distill "
             "--teacher %s --student %s --text %s --out %s/t --tokens %d --batch 8 --lr 1e-3",
             tu_bin(), tu_shared(STORIES), student, tu_shared(TINY), dir, LONG_TOKENS);
    snprintf(trig, sizeof trig, "%s/t.train.jsonl", dir);
    snprintf(out, sizeof out, "%s/t", dir);
    snprintf(ck, sizeof ck, "%s/t --tokens", dir);
    int rc = tu_interrupt(cmd, trig, out, ck, 15, &err);
    cr_expect_eq(rc, 0, "SIGTERM should end the run cleanly: %s", err);
    cr_expect(strstr(err, "checkpoint written"), "stderr: %s", err);
    free(err);
    cr_assert(access(out, F_OK) != 0, "no output after SIGTERM");
    snprintf(ck, sizeof ck, "%s/t.ckpt", dir);
    long newest = tu_newest_ckpt(ck);
    cr_assert(newest >= 1 && newest < LONG_STEPS, "SIGTERM should checkpoint mid-run: newest checkpoint %ld of %d steps", newest, LONG_STEPS);
    distill(dir, student, "t", 1, 1, "--tokens 40960 --resume");
    distill(dir, student, "ref", 1, 1, "--tokens 40960");
    cr_expect_eq(tu_last_step(tu_path_in(dir, "t.train.jsonl")), LONG_STEPS);
    snprintf(ck, sizeof ck, "%s/ref", dir);
    cr_expect(tu_same_weights(ck, out, why, sizeof why), "resumed after SIGTERM at step %ld: weights differ from the uninterrupted "
              "run: %s", newest, why);
}

Test(distill, bad_options, .timeout = 120) {
    const char *dir = tu_tmpdir();
    char cmd[16384], *err;
    snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s --text %s --out %s/x --dp 2", tu_mpirun(3), tu_shared(STORIES),
             tu_shared(STORIES), tu_shared(TINY), dir);
    cr_expect_neq(tu_run(cmd, NULL, &err), 0);
    cr_expect(strstr(err, "--dp 2"), "%s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s --text %s --out %s/x", tu_mpirun(1), tu_shared(STORIES),
             tu_smollm2(), tu_shared(TINY), dir);
    cr_expect_neq(tu_run(cmd, NULL, &err), 0);
    cr_expect(strstr(err, "vocabulary"), "%s", err);
    free(err);
}
