/* test_schedule.c - the distillation pipeline schedules on stories260K (teacher:
 * 5 layers, student: block 2 removed, 4 steps of 8 windows x 256 tokens):
 * --schedule 1f1b and gpipe with m = 1, 2, 4, 8 micro-batches on P = 2 and 3
 * stages, and 2 stages x --dp 2, against one rank. Backwards run in
 * micro-batch order in both schedules, so at one layout every m and both
 * schedules give the same bits (losses and weights); other layouts agree
 * within reduction noise (the gradient norm and the tied embedding are summed
 * across stages in another order). Each stage holds at most min(m, P - s)
 * micro-batches under 1F1B, m under GPipe (its log line, checked). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define STORIES "llm_assets/models/stories260K/stories260K.bin"
#define TINY "llm_assets/text/tinystories_train_first2MiB.txt"
#define STEPS 4

static const char *make_student(const char *dir) {
    static __thread char out[4300];
    snprintf(out, sizeof out, "%s/student", dir);
    char cmd[8192], *err;
    snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s --drop-layers 1 --metric random --seed 3", tu_mpirun(1), tu_shared(STORIES), out);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "prune: %s", err);
    free(err);
    return out;
}

/* The per-step losses of DIR/OUT.train.jsonl into loss[steps]. */
static void read_losses(const char *dir, const char *out, int steps, double *loss) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.train.jsonl", dir, out);
    FILE *f = fopen(path, "r");
    cr_assert(f, "no log %s", path);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(j, "bad log line %s", line);
        int step = (int)json_integer_value(json_object_get(j, "step"));
        cr_assert(step >= 1 && step <= steps, "step %d", step);
        loss[step - 1] = json_real_value(json_object_get(j, "loss"));
        json_decref(j);
        n++;
    }
    fclose(f);
    cr_assert_eq(n, steps, "%s: %d steps logged", path, n);
}

/* `distill` on `ranks` ranks with the log lines on (no MINIFUSE_QUIET); stderr in *err. */
static void distill(int ranks, const char *args, char **err) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
             "mpirun --oversubscribe --bind-to none -np %d %s distill %s", ranks, tu_bin(), args);
    cr_assert_eq(tu_run(cmd, NULL, err), 0, "distill %s failed:\n%s", args, *err);
}

/* stories260K into DIR/OUT on `ranks` ranks with --dp dp and extra options; the
 * per-step losses into loss[STEPS]; stderr (with the log lines) in *err. */
static void run(const char *dir, const char *student, const char *out, int ranks, int dp, const char *extra, double *loss,
                char **err) {
    char args[16384];
    snprintf(args, sizeof args, "--teacher %s --student %s --text %s --out %s/%s --tokens %d --batch 8 --lr 1e-3 --dp %d %s",
             tu_shared(STORIES), student, tu_shared(TINY), dir, out, STEPS * 8 * 256, dp, extra);
    distill(ranks, args, err);
    read_losses(dir, out, STEPS, loss);
}

/* Largest relative difference of two loss curves. */
static double max_rel_n(const double *a, const double *b, int n) {
    double d = 0;
    for (int i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i]) / fabs(b[i]));
    return d;
}

static double max_rel(const double *a, const double *b) { return max_rel_n(a, b, STEPS); }

/* Every stage's log line "stage s of P (replica r): SCHED, m micro-batch(es) of k window(s), at most n in flight". */
static void check_in_flight(const char *err, int P, int m, int onef1b, int lines_expected) {
    int lines = 0;
    for (const char *p = strstr(err, "distill: stage "); p; p = strstr(p + 1, "distill: stage ")) {
        int s, PP, r, mm, k, n;
        char sched[16];
        if (sscanf(p, "distill: stage %d of %d (replica %d): %15[^,], %d micro-batch(es) of %d window(s), at most %d in flight", &s,
                   &PP, &r, sched, &mm, &k, &n) != 7)
            continue;
        lines++;
        int want = P == 1 ? 1 : onef1b ? (m < P - s ? m : P - s) : m;
        cr_expect(PP == P && mm == m && n == want && strcmp(sched, onef1b ? "1F1B" : "GPipe") == 0,
                  "stage %d of %d, %s m %d: %d micro-batches in flight, expected %d", s, PP, sched, mm, n, want);
    }
    cr_expect_eq(lines, lines_expected, "one schedule line per rank: %d of %d", lines, lines_expected);
}

Test(schedule, onef1b_gpipe_one_rank_agree, .timeout = 1200) {
    const char *dir = tu_tmpdir(), *student = make_student(dir);
    double ref[STEPS], l[STEPS], first[STEPS];
    char *err, name[64], extra[256], a[4400], b[4400], why[9000];
    run(dir, student, "p1", 1, 1, "", ref, &err);
    check_in_flight(err, 1, 8, 1, 1);
    free(err);
    double worst_layout = 0;
    static const int ms[] = {1, 2, 4, 8};
    for (int P = 2; P <= 3; P++) {
        int have_first = 0;
        for (int sched = 0; sched < 2; sched++)
            for (int i = 0; i < 4; i++) {
                int m = ms[i];
                snprintf(name, sizeof name, "p%d_%s_m%d", P, sched ? "1f1b" : "gpipe", m);
                snprintf(extra, sizeof extra, "--schedule %s --micro-batches %d", sched ? "1f1b" : "gpipe", m);
                run(dir, student, name, P, 1, extra, l, &err);
                check_in_flight(err, P, m, sched, P);
                free(err);
                double d1 = max_rel(l, ref);
                worst_layout = fmax(worst_layout, d1);
                if (!have_first) { memcpy(first, l, sizeof first); have_first = 1; }
                double d0 = max_rel(l, first);
                fprintf(stderr, "schedule: P %d %-5s m %d: losses vs 1 rank max rel. diff %.3g, vs P %d gpipe m 1: %.3g\n", P,
                        sched ? "1f1b" : "gpipe", m, d1, P, d0);
                cr_expect(d0 == 0, "%s: the same layout must give the same bits (max rel. diff %.3g)", name, d0);
                cr_expect(d1 < 1e-5, "%s: losses differ from 1 rank by %.3g (threshold 1e-5)", name, d1);
            }
        /* the students themselves: GPipe m 1 and 1F1B m 8, byte for byte */
        snprintf(a, sizeof a, "%s/p%d_gpipe_m1", dir, P);
        snprintf(b, sizeof b, "%s/p%d_1f1b_m8", dir, P);
        cr_expect(tu_same_weights(a, b, why, sizeof why), "P %d: GPipe m 1 and 1F1B m 8 students differ: %s", P, why);
    }
    /* 2 stages x 2 replicas (4 ranks): 4 windows per replica */
    for (int sched = 0; sched < 2; sched++)
        for (int m = 1; m <= 4; m *= 2) {
            snprintf(name, sizeof name, "dp2_%s_m%d", sched ? "1f1b" : "gpipe", m);
            snprintf(extra, sizeof extra, "--schedule %s --micro-batches %d", sched ? "1f1b" : "gpipe", m);
            run(dir, student, name, 4, 2, extra, l, &err);
            check_in_flight(err, 2, m, sched, 4);
            free(err);
            double d1 = max_rel(l, ref);
            fprintf(stderr, "schedule: 2 stages x dp 2 %-5s m %d: losses vs 1 rank max rel. diff %.3g\n", sched ? "1f1b" : "gpipe", m, d1);
            cr_expect(d1 < 1e-5, "%s: losses differ from 1 rank by %.3g (threshold 1e-5)", name, d1);
        }
    fprintf(stderr, "schedule: largest loss difference of a pipeline layout vs 1 rank: %.3g\n", worst_layout);
}

Test(schedule, bad_micro_batches, .timeout = 120) {
    const char *dir = tu_tmpdir();
    char cmd[16384], *err;
    snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s --text %s --out %s/x --batch 8 --micro-batches 3", tu_mpirun(2),
             tu_shared(STORIES), tu_shared(STORIES), tu_shared(TINY), dir);
    cr_expect_neq(tu_run(cmd, NULL, &err), 0);
    cr_expect(strstr(err, "--micro-batches 3 must divide"), "%s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s --text %s --out %s/x --schedule zigzag", tu_mpirun(1),
             tu_shared(STORIES), tu_shared(STORIES), tu_shared(TINY), dir);
    cr_expect_neq(tu_run(cmd, NULL, &err), 0);
    cr_expect(strstr(err, "--schedule 'zigzag'"), "%s", err);
    free(err);
    /* a memory budget no stage of stories260K fits (about 8 MiB each on 2 stages) */
    snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s --text %s --out %s/x --stage-memory 1", tu_mpirun(2),
             tu_shared(STORIES), tu_shared(STORIES), tu_shared(TINY), dir);
    cr_expect_neq(tu_run(cmd, NULL, &err), 0);
    cr_expect(strstr(err, "fits 1.0 MiB per stage") && strstr(err, "--stage-memory"), "%s", err);
    free(err);
}

/* SmolLM2 (a short run): the student without 8 blocks, 2 steps of 4 windows x 32
 * tokens: 1 rank, 2 stages GPipe m 1, 1F1B m 4, 3 stages 1F1B m 2. */
Test(schedule, smollm2_short, .timeout = 1200) {
    const char *dir = tu_tmpdir();
    char cmd[16384], args[16384], *err;
    snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s/student --drop-list 4,5,3,12,17,16,18,13", tu_mpirun(1), tu_smollm2(), dir);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "prune: %s", err);
    free(err);
    static const struct { const char *name; int P, m; const char *sched; } runs[] = {
        {"s1", 1, 4, "1f1b"}, {"s2g", 2, 1, "gpipe"}, {"s2o", 2, 4, "1f1b"}, {"s3o", 3, 2, "1f1b"}};
    double loss[4][2];
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "--teacher %s --student %s/student --text %s --out %s/%s --tokens 256 --batch 4 --ctx 32 --lr 1e-4 "
                 "--schedule %s --micro-batches %d", tu_smollm2(), dir, tu_shared(TINY), dir, runs[i].name, runs[i].sched, runs[i].m);
        distill(runs[i].P, args, &err);
        check_in_flight(err, runs[i].P, runs[i].m, strcmp(runs[i].sched, "1f1b") == 0, runs[i].P);
        free(err);
        read_losses(dir, runs[i].name, 2, loss[i]);
        double d = max_rel_n(loss[i], loss[0], 2);
        fprintf(stderr, "schedule: SmolLM2 P %d %s m %d: losses %.8g %.8g, max rel. diff vs 1 rank %.3g\n", runs[i].P, runs[i].sched,
                runs[i].m, loss[i][0], loss[i][1], d);
        cr_expect(d < 1e-5, "SmolLM2 P %d %s m %d: losses differ from 1 rank by %.3g (threshold 1e-5)", runs[i].P, runs[i].sched,
                  runs[i].m, d);
    }
    cr_expect(max_rel_n(loss[1], loss[2], 2) == 0, "SmolLM2, 2 stages: GPipe m 1 and 1F1B m 4 must give the same bits");
}
