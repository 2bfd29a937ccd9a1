#include "testutil.h"

#include "backend/cpu_blas.h"
#include "io/source.h"
#include "model/model.h"
#include "util/fsutil.h"

#include <criterion/criterion.h>
#include <glob.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_SLOTS 8
static __thread char slots[N_SLOTS][4096];
static __thread int slot;

static char *next_slot(void) { return slots[slot++ % N_SLOTS]; }

const char *tu_shared(const char *rel) {
    const char *base = getenv("MINIFUSE_SHARED");
    char *p = next_slot();
    snprintf(p, 4096, "%s/%s", base ? base : "../shared", rel);
    return p;
}

const char *tu_cache(const char *rel) {
    const char *base = getenv("MINIFUSE_CACHE");
    char *p = next_slot();
    if (base) snprintf(p, 4096, "%s/%s", base, rel);
    else snprintf(p, 4096, "%s/.cache/minifuse/%s", getenv("HOME") ? getenv("HOME") : ".", rel);
    return p;
}

const char *tu_smollm2(void) {
    const char *p = tu_cache("SmolLM2-135M-Instruct.Q4_1.gguf");
    cr_assert(access(p, R_OK) == 0, "%s is missing: run scripts/setup.sh", p);
    return p;
}

/* The directories tu_tmpdir made in this test's process: removed when it exits
 * (each Criterion test runs in a process of its own), unless MINIFUSE_KEEP_TMP
 * is set. A whole suite otherwise leaves tens of GB in /tmp (SmolLM2 checkpoints). */
static char *tmpdirs[64];
static int n_tmpdirs;
static void remove_tmpdirs(void) {
    if (getenv("MINIFUSE_KEEP_TMP")) return;
    for (int i = 0; i < n_tmpdirs; i++) {
        mf_err e;
        mf_rmtree(tmpdirs[i], &e); /* best effort */
    }
}

const char *tu_tmpdir(void) { /* its own allocation: lives for the whole test */
    char *p = strdup("/tmp/minifuse-test-XXXXXX");
    cr_assert(mkdtemp(p) != NULL, "mkdtemp failed");
    if (n_tmpdirs == 0) atexit(remove_tmpdirs);
    if (n_tmpdirs < (int)(sizeof tmpdirs / sizeof *tmpdirs)) tmpdirs[n_tmpdirs++] = p;
    return p;
}

static char *slurp(FILE *f) {
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    size_t r;
    while ((r = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 >= cap) s = realloc(s, cap *= 2);
    }
    s[n] = 0;
    return s;
}

int tu_run(const char *cmd, char **out, char **err_out) {
    char errfile[64] = "/tmp/minifuse-test-err-XXXXXX";
    int fd = mkstemp(errfile);
    close(fd);
    char *full = malloc(strlen(cmd) + 128);
    sprintf(full, "( %s ) 2>%s", cmd, errfile);
    FILE *p = popen(full, "r");
    cr_assert(p != NULL, "popen failed: %s", cmd);
    char *o = slurp(p);
    int st = pclose(p);
    free(full);
    if (out) *out = o; else free(o);
    FILE *e = fopen(errfile, "r");
    char *es = e ? slurp(e) : strdup("");
    if (e) fclose(e);
    unlink(errfile);
    /* under bin/minifuse-asan (MINIFUSE_BIN) a sanitizer report fails the test even when the
     * command was expected to fail */
    cr_expect(!strstr(es, "ERROR: AddressSanitizer") && !strstr(es, "ERROR: LeakSanitizer") && !strstr(es, ": runtime error: "),
              "sanitizer report from: %s\n%s", cmd, es);
    if (err_out) *err_out = es; else free(es);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

const char *tu_bin(void) {
    const char *b = getenv("MINIFUSE_BIN");
    if (!b || !*b) return "bin/minifuse";
    cr_assert(access(b, X_OK) == 0, "MINIFUSE_BIN=%s is not an executable (make asan builds bin/minifuse-asan)", b);
    return b;
}

const char *tu_mpirun(int P) {
    char *p = next_slot();
    snprintf(p, 4096,
             "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "
             "MINIFUSE_QUIET=1 mpirun --oversubscribe --bind-to none -np %d %s", P, tu_bin());
    return p;
}

int tu_interrupt(const char *cmd, const char *trigger, const char *out, const char *pattern, int sig, char **err_out) {
    size_t n = strlen(cmd) + strlen(trigger) + strlen(out) + 2 * strlen(pattern) + 1024;
    char *sh = malloc(n);
    snprintf(sh, n,
             "%s & pid=$!; while [ ! -s '%s' ] && kill -0 $pid 2>/dev/null; do sleep 0.01; done; "
             "if [ ! -s '%s' ]; then echo NO-TRIGGER; wait $pid; exit 97; fi; "
             "if [ -e '%s' ]; then echo OUT-EXISTED; fi; "
             "for p in $(pgrep -f '%s'); do case $(cat /proc/$p/comm 2>/dev/null) in minifuse*|mpirun) kill -%d $p;; esac; done; "
             "wait $pid",
             cmd, trigger, trigger, out, pattern, sig);
    char *o;
    int rc = tu_run(sh, &o, err_out);
    cr_assert(!strstr(o, "NO-TRIGGER"), "the run ended before %s appeared: %s", trigger, cmd);
    cr_assert(!strstr(o, "OUT-EXISTED"), "the run had already written %s when the signal was sent: the signal must land mid-run", out);
    free(o);
    free(sh);
    return rc;
}

long tu_newest_ckpt(const char *dir) { /* a checkpoint gets its final name only when complete (.tmp before) */
    char pat[4200];
    glob_t g;
    long best = -1;
    snprintf(pat, sizeof pat, "%s/ckpt-*.h5", dir);
    if (glob(pat, 0, NULL, &g) != 0) return -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        long step;
        char tail;
        if (sscanf(strrchr(g.gl_pathv[i], '/') + 1, "ckpt-%ld.h%c", &step, &tail) == 2 && step > best) best = step;
    }
    globfree(&g);
    return best;
}

long tu_last_step(const char *jsonl) {
    size_t len;
    char *s = tu_read(jsonl, &len);
    if (!s) return -1;
    long step = -1;
    for (char *q = s; (q = strstr(q, "\"step\":")); q++) step = atol(q + 7);
    free(s);
    return step;
}

int tu_same_weights(const char *a, const char *b, char *why, size_t n) {
    char pat[4200];
    glob_t ga, gb;
    snprintf(pat, sizeof pat, "%s/*.safetensors", a);
    int ra = glob(pat, 0, NULL, &ga);
    snprintf(pat, sizeof pat, "%s/*.safetensors", b);
    int rb = glob(pat, 0, NULL, &gb);
    int same = ra == 0 && rb == 0 && ga.gl_pathc == gb.gl_pathc;
    if (!same) snprintf(why, n, "%s has %zu safetensors files, %s %zu", a, ra ? 0 : ga.gl_pathc, b, rb ? 0 : gb.gl_pathc);
    for (size_t i = 0; same && i < ga.gl_pathc; i++) {
        size_t na = 0, nb = 0;
        char *x = tu_read(ga.gl_pathv[i], &na), *y = tu_read(gb.gl_pathv[i], &nb);
        const char *fa = strrchr(ga.gl_pathv[i], '/'), *fb = strrchr(gb.gl_pathv[i], '/');
        if (strcmp(fa, fb) != 0) { same = 0; snprintf(why, n, "%s vs %s", ga.gl_pathv[i], gb.gl_pathv[i]); }
        else if (!x || !y || na != nb || memcmp(x, y, na) != 0) { same = 0; snprintf(why, n, "%s differs from %s", gb.gl_pathv[i], ga.gl_pathv[i]); }
        free(x); free(y);
    }
    if (ra == 0) globfree(&ga);
    if (rb == 0) globfree(&gb);
    return same;
}

void *tu_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc((size_t)n + 1);
    size_t r = fread(b, 1, (size_t)n, f);
    fclose(f);
    ((char *)b)[r] = 0;
    if (len) *len = r;
    return b;
}

void tu_write(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert(f != NULL, "cannot write %s", path);
    fwrite(data, 1, len, f);
    fclose(f);
}

float *tu_forward_all(const char *path, const int32_t *ids, int n, int *V) {
    mf_err err;
    mf_source *src = mf_source_open(path, &err);
    cr_assert(src, "%s", err.msg);
    mf_model *m = mf_model_load(src, mf_backend_cpu(), 0, src->cfg.n_layers, 1, 1, &err);
    cr_assert(m, "%s", err.msg);
    mf_state *s = mf_state_new(m, n, n);
    mf_forward_embed(m, s, ids, n);
    mf_forward_layers(m, s, n, 0);
    mf_forward_head(m, s, n);
    *V = m->cfg.vocab_size;
    float *out = malloc((size_t)n * *V * sizeof *out);
    memcpy(out, s->logits, (size_t)n * *V * sizeof *out);
    mf_state_free(m, s);
    mf_model_free(m);
    mf_source_close(src);
    return out;
}

void tu_mpi_init(void) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) MPI_Init(NULL, NULL);
}

char *tu_path_in(const char *dir, const char *name) {
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

int tu_exists(const char *path) { return access(path, F_OK) == 0; }

/* The test binary runs the same OpenBLAS kernels as bin/minifuse (backend/cpu_blas.h),
 * so in-process results compare bit for bit with the program's: exec again with
 * OPENBLAS_CORETYPE set when OpenBLAS fell back to generic kernels. */
__attribute__((constructor)) static void tu_blas_core(void) {
    static char buf[1 << 16];
    FILE *f = fopen("/proc/self/cmdline", "rb");
    if (!f) return;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    if (n == 0 || n >= sizeof buf - 1) return;
    static char *argv[512];
    int argc = 0;
    for (size_t i = 0; i < n && argc < 511; i += strlen(buf + i) + 1) argv[argc++] = buf + i;
    argv[argc] = NULL;
    mf_blas_ensure_core(argv);
}

void tu_h5py_edit(const char *path, const char *code) {
    char *script = tu_path_in(tu_tmpdir(), "edit.py"), cmd[8192], body[4096];
    snprintf(body, sizeof body, "import sys, h5py, numpy as np\nf = h5py.File(sys.argv[1], 'r+')\n%s\nf.close()\n", code);
    tu_write(script, body, strlen(body));
    snprintf(cmd, sizeof cmd, "python3 %s %s", script, path);
    char *err = NULL;
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "h5py edit failed: %s", err);
    free(err);
    free(script);
}
