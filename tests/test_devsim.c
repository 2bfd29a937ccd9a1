/* test_devsim.c - the device seams, checked without a GPU on the devsim backend
 * (src/backend/devsim.c: the cpu backend's ops behind a device's memory rules).
 *
 * 1. The rules hold: host code that touches devsim memory dies at once; an op
 *    given host memory where backend memory belongs (or the reverse) stops,
 *    naming the op and the argument; upload/download round-trip.
 * 2. Whole commands on --backend devsim give the cpu backend's bits, so every
 *    device code path they take is right up to the ops themselves (which
 *    test_backend_ops.c checks per backend): eval and logits at P = 1 and 2,
 *    score (every rankings dataset), distill at P = 1, 2 pipeline stages and 2
 *    data-parallel replicas (pipeline messages, the tied-embedding fold and the
 *    bucket sums staged through host memory, AdamW and the gradient norm on the
 *    backend, checkpoints and the written model through host copies), with
 *    --kl/--ce/--hidden weights and with --teacher-topk;
 *    fuse (the fusion window, its batch loss and adapter sums) at P = 1 and 2;
 * 3. a checkpoint written on one backend resumes on the other (cpu -> devsim,
 *    devsim -> cpu), for distill and fuse, and ends with the bytes of an
 *    uninterrupted run. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
#include "testutil.h"

#define STORIES "llm_assets/models/stories260K/stories260K.bin"
#define TINY "llm_assets/text/tinystories_train_first2MiB.txt"

TestSuite(devsim, .timeout = 600);

/* ---------------------------------------------------------------- the rules */

/* Run fn in a child process; its exit status (or 128 + signal) and what it wrote to stderr. */
static int in_child(void (*fn)(void), char *err, size_t n) {
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        fn();
        _exit(0);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < n && (r = read(fd[0], err + got, n - 1 - got)) > 0) got += (size_t)r;
    err[got] = 0;
    close(fd[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void host_store(void) {
    float *p = mf_backend_devsim()->alloc(16 * sizeof *p);
    *(volatile float *)p = 1.0f; /* must fault */
}

static void host_load(void) {
    float *p = mf_backend_devsim()->alloc(16 * sizeof *p);
    volatile float x = p[3]; /* must fault */
    (void)x;
}

Test(devsim, host_code_cannot_touch_backend_memory) {
    char err[4096];
    int st = in_child(host_store, err, sizeof err);
    cr_expect(st != 0, "a host store into devsim memory ran to the end");
    st = in_child(host_load, err, sizeof err);
    cr_expect(st != 0, "a host load from devsim memory ran to the end");
}

static void host_y_to_linear(void) {
    const mf_backend *be = mf_backend_devsim();
    float *x = be->alloc(4 * sizeof *x), *w = be->alloc(4 * sizeof *w), y[2];
    be->zero(x, 4 * sizeof *x);
    be->zero(w, 4 * sizeof *w);
    be->linear(y, x, w, NULL, 1, 2, 2, 0);
}

static void device_ids_to_embed(void) {
    const mf_backend *be = mf_backend_devsim();
    float *x = be->alloc(4 * sizeof *x), *table = be->alloc(4 * sizeof *table);
    int32_t *ids = be->alloc(2 * sizeof *ids);
    be->embed(x, table, ids, 2, 2);
}

static void host_buffer_to_download(void) {
    const mf_backend *be = mf_backend_devsim();
    float a[4] = {0}, b[4];
    be->download(b, a, sizeof a);
}

Test(devsim, ops_refuse_memory_of_the_wrong_side) {
    char err[4096];
    cr_expect_neq(in_child(host_y_to_linear, err, sizeof err), 0);
    cr_expect(strstr(err, "devsim: linear: argument y") && strstr(err, "is host memory"), "%s", err);
    cr_expect_neq(in_child(device_ids_to_embed, err, sizeof err), 0);
    cr_expect(strstr(err, "devsim: embed: argument ids") && strstr(err, "is backend memory"), "%s", err);
    cr_expect_neq(in_child(host_buffer_to_download, err, sizeof err), 0);
    cr_expect(strstr(err, "devsim: download: argument src") && strstr(err, "is host memory"), "%s", err);
}

Test(devsim, upload_download_round_trip) {
    const mf_backend *be = mf_backend_devsim();
    cr_assert_eq(be->is_host, 0);
    cr_assert_eq(mf_backend_get("devsim"), be);
    float h[1000], back[1000];
    for (int i = 0; i < 1000; i++) h[i] = (float)i * 0.25f - 7;
    float *d = be->alloc(sizeof h), *e = be->alloc(sizeof h);
    cr_assert_neq((void *)d, (void *)h);
    be->upload(d, h, sizeof h);
    be->copy(e, d, sizeof h);
    be->add(e, d, 1000);
    be->download(back, e, sizeof back);
    for (int i = 0; i < 1000; i++) cr_assert_eq(back[i], 2 * h[i], "element %d", i);
    cr_expect_eq(be->sumsq(d, 1000), mf_backend_cpu()->sumsq(h, 1000));
    be->free(d);
    be->free(e);
}

/* ---------------------------------------------------------------- commands: devsim == cpu */

static char *run_ok(const char *cmd) {
    char *out, *err;
    int rc = tu_run(cmd, &out, &err);
    cr_assert_eq(rc, 0, "%s\nfailed (%d):\n%s", cmd, rc, err);
    free(err);
    return out;
}

/* The "ppl" of an eval --json, as printed (17 significant digits). */
static char *eval_ppl(int P, const char *model, const char *backend, const char *extra) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s eval --model %s --text %s --max-windows 6 --ctx 128 --backend %s --json %s", tu_mpirun(P),
             model, tu_shared(TINY), backend, extra);
    char *out = run_ok(cmd);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert(j, "eval --json: %s", out);
    char *s = malloc(64);
    snprintf(s, 64, "%.17g", json_real_value(json_object_get(j, "ppl")));
    json_decref(j);
    free(out);
    return s;
}

Test(devsim, eval_and_logits_match_cpu) {
    for (int P = 1; P <= 2; P++) {
        char *a = eval_ppl(P, tu_shared(STORIES), "cpu", ""), *b = eval_ppl(P, tu_shared(STORIES), "devsim", "");
        cr_expect_str_eq(b, a, "P = %d: eval ppl on devsim %s, on cpu %s", P, b, a);
        free(a); free(b);
    }
    const char *dir = tu_tmpdir();
    char cmd[8192];
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "%s logits --model %s --ids 1,403,407,261,500,30,7 --out %s/%s.bin --backend %s", tu_mpirun(1),
                 tu_shared(STORIES), dir, k ? "devsim" : "cpu", k ? "devsim" : "cpu");
        free(run_ok(cmd));
    }
    size_t na, nb;
    char *a = tu_read(tu_path_in(dir, "cpu.bin"), &na), *b = tu_read(tu_path_in(dir, "devsim.bin"), &nb);
    cr_assert(a && b && na == nb && na > 0, "logits files %zu and %zu bytes", na, nb);
    cr_expect(memcmp(a, b, na) == 0, "logits on devsim differ from cpu");
    free(a); free(b);
}

/* SmolLM2 (GGUF Q4_1, 30 layers, GQA, untied head) with bf16 weights in memory: the 16-bit upload path. */
Test(devsim, smollm2_eval_matches_cpu) {
    const char *m = tu_smollm2();
    char *a = eval_ppl(2, m, "cpu", "--weights bf16"), *b = eval_ppl(2, m, "devsim", "--weights bf16");
    cr_expect_str_eq(b, a, "SmolLM2 bf16 eval ppl on devsim %s, on cpu %s", b, a);
    free(a); free(b);
}

Test(devsim, score_matches_cpu) {
    const char *dir = tu_tmpdir();
    char cmd[8192];
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "%s score --model %s --text %s --out %s/%s.h5 --samples 6 --ctx 64 --backend %s", tu_mpirun(2),
                 tu_shared(STORIES), tu_shared(TINY), dir, k ? "devsim" : "cpu", k ? "devsim" : "cpu");
        free(run_ok(cmd));
    }
    /* every dataset, bit for bit (the provenance attribute names the backend and differs) */
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import h5py, numpy as np, sys\n"
             "a, b = h5py.File('%s/cpu.h5', 'r'), h5py.File('%s/devsim.h5', 'r')\n"
             "names = []\n"
             "a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)\n"
             "assert len(names) > 5, names\n"
             "bad = [n for n in names if n not in b or a[n].shape != b[n].shape or a[n][()].tobytes() != b[n][()].tobytes()]\n"
             "print(len(names), 'datasets'); sys.exit('differ: %%s' %% bad if bad else 0)\"",
             dir, dir);
    char *out = run_ok(cmd);
    cr_expect(strstr(out, "datasets"), "%s", out);
    free(out);
}

/* A student: stories260K without block 2. */
static const char *make_student(const char *dir) {
    static __thread char out[4300];
    snprintf(out, sizeof out, "%s/student", dir);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s --drop-layers 1 --metric random --seed 3", tu_mpirun(1),
             tu_shared(STORIES), out);
    free(run_ok(cmd));
    return out;
}

static void distill(const char *dir, const char *student, const char *out, int P, const char *backend, const char *extra) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd,
             "%s distill --teacher %s --student %s --text %s --out %s/%s --tokens 16384 --batch 8 --ctx 128 --lr 1e-3 "
             "--backend %s %s",
             tu_mpirun(P), tu_shared(STORIES), student, tu_shared(TINY), dir, out, backend, extra);
    free(run_ok(cmd));
}

/* The per-step logs without the timing: "loss", "lr", "grad_norm" of every step (distill: OUT.train.jsonl, fuse: OUT.fuse.jsonl). */
static char *log_losses_in(const char *dir, const char *out, const char *suffix) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.%s.jsonl", dir, out, suffix);
    size_t len;
    char *s = tu_read(path, &len), *res = calloc(1, len + 1);
    cr_assert(s, "no log %s", path);
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(j, "bad log line %s", line);
        char buf[200];
        snprintf(buf, sizeof buf, "%lld %.9g %.9g %.9g\n", (long long)json_integer_value(json_object_get(j, "step")),
                 json_real_value(json_object_get(j, "loss")), json_real_value(json_object_get(j, "lr")),
                 json_real_value(json_object_get(j, "grad_norm")));
        strcat(res, buf);
        json_decref(j);
    }
    free(s);
    return res;
}

static void expect_same_run_in(const char *dir, const char *a, const char *b, const char *suffix) {
    char *la = log_losses_in(dir, a, suffix), *lb = log_losses_in(dir, b, suffix), why[9000];
    cr_expect_str_eq(lb, la, "%s and %s logged different steps", a, b);
    free(la); free(lb);
    cr_expect(tu_same_weights(tu_path_in(dir, a), tu_path_in(dir, b), why, sizeof why), "%s vs %s: %s", a, b, why);
}

static void expect_same_run(const char *dir, const char *a, const char *b) { expect_same_run_in(dir, a, b, "train"); }

/* Layouts: 1 rank; 2 pipeline stages (staged activations and gradients, the tied
 * embedding folded between first and last stage); 2 data-parallel replicas (staged bucket sums). */
Test(devsim, distill_layouts_match_cpu) {
    const char *dir = tu_tmpdir(), *student = make_student(dir);
    static const struct { int P; const char *opts, *name; } L[] = {
        {1, "", "p1"}, {2, "", "pp2"}, {2, "--dp 2", "dp2"},
    };
    for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
        char a[64], b[64];
        snprintf(a, sizeof a, "%s-cpu", L[i].name);
        snprintf(b, sizeof b, "%s-devsim", L[i].name);
        distill(dir, student, a, L[i].P, "cpu", L[i].opts);
        distill(dir, student, b, L[i].P, "devsim", L[i].opts);
        expect_same_run(dir, a, b);
    }
}

/* Weighted losses (KL, CE, hidden states) and the teacher's top-K cache, 2 stages. */
Test(devsim, distill_losses_and_topk_match_cpu) {
    const char *dir = tu_tmpdir(), *student = make_student(dir);
    distill(dir, student, "w-cpu", 2, "cpu", "--kl 0.7 --ce 0.3 --hidden 0.5 --hidden-loss nmse");
    distill(dir, student, "w-devsim", 2, "devsim", "--kl 0.7 --ce 0.3 --hidden 0.5 --hidden-loss nmse");
    expect_same_run(dir, "w-cpu", "w-devsim");
    char opts[4400];
    snprintf(opts, sizeof opts, "--teacher-topk 16 --teacher-cache %s/tk.h5", dir);
    distill(dir, student, "k-cpu", 2, "cpu", opts);
    distill(dir, student, "k-devsim", 2, "devsim", opts);
    expect_same_run(dir, "k-cpu", "k-devsim");
}

/* A checkpoint is host data: stopped on one backend (--max-steps), resumed on the other. */
Test(devsim, checkpoints_cross_backends) {
    const char *dir = tu_tmpdir(), *student = make_student(dir);
    distill(dir, student, "ref", 2, "cpu", "");
    distill(dir, student, "a", 2, "cpu", "--max-steps 5 --checkpoint-every 5");
    cr_assert(!tu_exists(tu_path_in(dir, "a")), "--max-steps 5 must stop before the end");
    distill(dir, student, "a", 2, "devsim", "--resume");
    expect_same_run(dir, "ref", "a");
    distill(dir, student, "b", 2, "devsim", "--max-steps 3 --checkpoint-every 3");
    cr_assert(!tu_exists(tu_path_in(dir, "b")), "--max-steps 3 must stop before the end");
    distill(dir, student, "b", 2, "cpu", "--resume");
    expect_same_run(dir, "ref", "b");
}

/* ---------------------------------------------------------------- fuse */

/* The small stories260K fusion of test_fuse.c: 2 blocks, 16 samples, 3 epochs (6 steps per block). */
static void fuse(const char *dir, const char *out, int P, const char *backend, const char *extra) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd,
             "%s fuse --model %s --text %s --out %s/%s --drop-layers 2 --samples 16 --epochs 3 --rank 8 --lr 1e-2 "
             "--lr-base 1e-3 --ctx 128 --backend %s %s",
             tu_mpirun(P), tu_shared(STORIES), tu_shared(TINY), dir, out, backend, extra);
    free(run_ok(cmd));
}

/* The window (blocks gathered by broadcast, adapters, W_eff, the batch loss, the
 * adapter sum over ranks, AdamW) on the backend; Macro Influence picks the blocks. */
Test(devsim, fuse_matches_cpu) {
    const char *dir = tu_tmpdir();
    fuse(dir, "n-cpu", 1, "cpu", "");
    fuse(dir, "n-devsim", 1, "devsim", "");
    expect_same_run_in(dir, "n-cpu", "n-devsim", "fuse");
    fuse(dir, "k-cpu", 2, "cpu", "--loss kl-batch");
    fuse(dir, "k-devsim", 2, "devsim", "--loss kl-batch");
    expect_same_run_in(dir, "k-cpu", "k-devsim", "fuse");
}

/* Fusion checkpoints (changed blocks, adapters, moments) cross backends both ways. */
Test(devsim, fuse_checkpoints_cross_backends) {
    const char *dir = tu_tmpdir();
    fuse(dir, "ref", 2, "cpu", "");
    fuse(dir, "a", 2, "cpu", "--max-steps 4 --checkpoint-every 2");
    cr_assert(!tu_exists(tu_path_in(dir, "a")), "--max-steps 4 must stop before the end");
    fuse(dir, "a", 2, "devsim", "--checkpoint-every 2 --resume");
    expect_same_run_in(dir, "ref", "a", "fuse");
    fuse(dir, "b", 2, "devsim", "--max-steps 9 --checkpoint-every 2");
    cr_assert(!tu_exists(tu_path_in(dir, "b")), "--max-steps 9 must stop before the end");
    fuse(dir, "b", 2, "cpu", "--checkpoint-every 2 --resume");
    expect_same_run_in(dir, "ref", "b", "fuse");
}
