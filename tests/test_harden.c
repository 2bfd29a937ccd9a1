/* test_harden.c - issue 12, items 1, 2, 3, 9 and 10: no crash from any input
 * file, no silent corruption, no shell, no clobbered output.
 *
 *  - file-system chores: rmtree without a shell, unique temporary names,
 *    stale temporaries removed only when their writer is dead, the output lock;
 *  - HDF5 (rankings, checkpoints, teacher cache): every single-byte flip of a
 *    file either fails in one line naming the file or reads back exactly what
 *    was written; a flipped data byte names the dataset; truncation, old
 *    superblocks, forged shapes and sizes are refused before allocation;
 *  - the teacher cache is keyed on teacher, text and vocabulary, and every id
 *    and window is checked when read;
 *  - sizes from files: safetensors element counts, llama2.c INT32_MIN
 *    vocabulary, tokenizer.bin counts; config.json tokenizer paths stay in the
 *    model directory; --force with a quote in --out. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt_synth.h"
#include "io/h5util.h"
#include "io/rankings.h"
#include "io/safetensors.h"
#include "io/source.h"
#include "rankings_synth.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"
#include "train/teacher_cache.h"
#include "util/fsutil.h"

TestSuite(harden, .init = tu_mpi_init, .timeout = 240);

/* This process is an MPI singleton: a child mpirun must not inherit its OMPI_/PMIX_/ORTE_ variables. */
#define NO_MPI_ENV "for v in $(env | sed -n 's/^\\(\\(OMPI\\|PMIX\\|ORTE\\)_[A-Za-z0-9_]*\\)=.*/\\1/p'); do unset $v; done; "

static void expect_msg(const char *msg, const char *part) {
    cr_assert(strstr(msg, part) != NULL, "expected '%s' in: %s", part, msg);
}

static void one_line_naming(const char *msg, const char *path) {
    cr_assert(strstr(msg, path) != NULL, "message does not name %s: %s", path, msg);
    cr_assert(strchr(msg, '\n') == NULL, "message is not one line: %s", msg);
}

/* File offset of the first chunk (or the contiguous data) of dataset name, via h5py. */
static long data_offset(const char *path, const char *name) {
    char cmd[8192], *out = NULL;
    snprintf(cmd, sizeof cmd, "python3 -c \"import h5py, sys; d = h5py.File(sys.argv[1])[sys.argv[2]]; "
             "print(d.id.get_chunk_info(0).byte_offset if d.chunks else d.id.get_offset())\" %s %s", path, name);
    cr_assert_eq(tu_run(cmd, &out, NULL), 0);
    long off = atol(out);
    free(out);
    cr_assert(off > 0);
    return off;
}

static void flip_at(const char *src, const char *dst, long off) {
    size_t n;
    unsigned char *b = tu_read(src, &n);
    cr_assert((size_t)off < n);
    b[off] ^= 0x5a;
    tu_write(dst, b, n);
    free(b);
}

/* ------------------------------------------------------------ file-system chores */

Test(harden, rmtree_is_not_a_shell) {
    const char *dir = tu_tmpdir();
    char *victim = tu_path_in(dir, "it's a; $(touch PWNED) `touch PWNED2` dir");
    char *outside = tu_path_in(dir, "outside"), p[8192];
    cr_assert(victim && outside);
    mkdir(victim, 0755);
    mkdir(outside, 0755);
    snprintf(p, sizeof p, "%s/keep.txt", outside);
    tu_write(p, "keep", 4);
    snprintf(p, sizeof p, "%s/sub", victim);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/sub/f", victim);
    tu_write(p, "x", 1);
    snprintf(p, sizeof p, "%s/link-out", victim); /* must be removed, never followed */
    cr_assert_eq(symlink(outside, p), 0);
    mf_err err = {{0}};
    cr_assert_eq(mf_rmtree(victim, &err), 0, "%s", err.msg);
    cr_assert(!tu_exists(victim), "not removed");
    snprintf(p, sizeof p, "%s/keep.txt", outside);
    cr_assert(tu_exists(p), "followed a symlink out of the tree");
    char *pw = tu_path_in(dir, "PWNED");
    cr_assert(!tu_exists(pw) && !tu_exists("PWNED") && !tu_exists("PWNED2"), "a shell ran");
    cr_assert_eq(mf_rmtree(victim, &err), 0, "a missing path is not an error");
    free(victim); free(outside); free(pw);
}

Test(harden, temporary_names_are_unique_and_parsed) {
    char *a = mf_tmp_unique("/x/ckpt-00000001.h5"), *b = mf_tmp_unique("/x/ckpt-00000001.h5");
    cr_assert_str_neq(a, b);
    char host[64];
    pid_t pid = 0;
    const char *base = strrchr(a, '/') + 1;
    cr_assert(mf_tmp_parse(base, host, sizeof host, &pid), "%s", base);
    cr_assert_eq(pid, getpid());
    cr_assert_str_eq(host, mf_host_tag());
    const char *not_tmp[] = {"ckpt-00000001.h5.tmp", "ckpt-1.h5", ".tmp.h.12.0123abcd", "a.tmp.h.12.0123abcg",
                             "a.tmp..12.0123abcd", "a.tmp.h.x12.0123abcd", "a.tmp.h.0.0123abcd", "a.tmp.h!.12.0123abcd"};
    for (size_t i = 0; i < sizeof not_tmp / sizeof *not_tmp; i++)
        cr_assert(!mf_tmp_parse(not_tmp[i], NULL, 0, NULL), "%s parsed as a temporary", not_tmp[i]);
    free(a); free(b);
}

/* A pid that has just exited (reaped). */
static pid_t dead_pid(void) {
    pid_t c = fork();
    if (c == 0) _exit(0);
    waitpid(c, NULL, 0);
    return c;
}

Test(harden, stale_temporaries_only_of_dead_writers) {
    const char *dir = tu_tmpdir();
    char name[512];
    struct { pid_t pid; const char *host; int gone; } e[] = {
        {dead_pid(), mf_host_tag(), 1}, {getpid(), mf_host_tag(), 0}, {1, mf_host_tag(), 0}, {dead_pid(), "otherhost", 0}};
    char *paths[4];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "ckpt-0000000%d.h5.tmp.%s.%d.0123abcd", i, e[i].host, (int)e[i].pid);
        paths[i] = tu_path_in(dir, name);
        if (i == 0) mkdir(paths[i], 0755); /* directories too (an output's OUT.tmp...) */
        else tu_write(paths[i], "x", 1);
    }
    char *other = tu_path_in(dir, "ckpt-00000009.h5"); /* not a temporary */
    tu_write(other, "x", 1);
    cr_assert_eq(mf_clean_stale_tmps(dir, "ckpt-", NULL), 1);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(tu_exists(paths[i]), !e[i].gone, "%s", paths[i]);
        free(paths[i]);
    }
    cr_assert(tu_exists(other));
    free(other);
}

Test(harden, output_lock_refuses_a_second_writer) {
    char *lock = tu_path_in(tu_tmpdir(), "out.lock");
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t child = fork();
    if (child == 0) {
        mf_err e;
        char ok = mf_lock_acquire(lock, "out", &e) == 0 ? 'y' : 'n';
        if (write(fds[1], &ok, 1) != 1) _exit(2);
        pause();
        _exit(0);
    }
    char got = 0;
    cr_assert_eq(read(fds[0], &got, 1), 1);
    cr_assert_eq(got, 'y', "the child could not take the lock");
    mf_err err = {{0}};
    int rc = mf_lock_acquire(lock, "out", &err);
    kill(child, SIGKILL); /* first: a failed assertion must not leave it behind */
    waitpid(child, NULL, 0);
    cr_assert_eq(rc, -1, "a second writer was let in");
    one_line_naming(err.msg, lock);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %d", (int)child);
    expect_msg(err.msg, pid);
    expect_msg(err.msg, "another minifuse job is writing out");
    cr_assert_eq(mf_lock_acquire(lock, "out", &err), 0, "the lock outlived its holder: %s", err.msg);
    cr_assert_eq(mf_lock_acquire(lock, "out", &err), 0, "taking a held lock again");
    /* dropped: the file goes; a process that opened it just before finds that out and takes the new one */
    mf_lock_drop(lock);
    cr_assert(!tu_exists(lock), "mf_lock_drop left %s", lock);
    cr_assert_eq(mf_lock_acquire(lock, "out", &err), 0, "after a drop: %s", err.msg);
    cr_assert(tu_exists(lock));
    mf_lock_drop(lock);
    free(lock);
}

/* ------------------------------------------------------------ rankings */

static void rk_write(const char *path) {
    mf_layer_scores *s = rs_layers(0, RS_LAYERS, MF_RK_WIDTH);
    mf_rankings_meta m;
    rs_meta(&m, "cd");
    mf_depth_scores d;
    double bi[RS_LAYERS], ppl[RS_LAYERS], mi[RS_MI_ITER * RS_LAYERS];
    rs_depth(&d, bi, ppl, mi);
    mf_err err = {{0}};
    cr_assert_eq(mf_rankings_write(path, MPI_COMM_WORLD, &m, 0, RS_LAYERS, s, &d, &err), 0, "%s", err.msg);
    rs_free_layers(s, RS_LAYERS);
}

static int same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Everything of r equals what rk_write wrote. */
static int rk_same(const mf_rankings *r, char *why, size_t cap) {
    const mf_rankings_meta *m = &r->meta;
    if (m->n_layers != RS_LAYERS || m->hidden_size != RS_HIDDEN || m->intermediate_size != RS_FFN ||
        m->n_heads != RS_HEADS || m->n_kv_heads != RS_KV || m->head_dim != RS_HEAD_DIM || m->vocab_size != RS_VOCAB ||
        m->n_tokens != 256 || m->n_samples != 4 || m->ctx != 64)
        return snprintf(why, cap, "shape or counts differ"), -1;
    if (strcmp(m->model_sha256, "cd") || strcmp(m->model_path, "synthetic/model") ||
        strcmp(m->options, "{\"ctx\": 64, \"n_samples\": 4}") || strcmp(m->created, "2025-01-01T00:00:00Z") ||
        strcmp(m->data_path, "synthetic/data.txt"))
        return snprintf(why, cap, "a string differs"), -1;
    if (r->metrics != (MF_RK_WIDTH | MF_RK_BI | MF_RK_PPL | MF_RK_MI)) return snprintf(why, cap, "metrics differ"), -1;
    for (int l = 0; l < RS_LAYERS; l++)
        for (int k = 0; k < 4; k++) {
            const double *v = k == 0 ? r->layers[l].mlp_neurons : k == 1 ? r->layers[l].attn_heads
                            : k == 2 ? r->layers[l].emb_attn_norm : r->layers[l].emb_mlp_norm;
            for (int i = 0; i < rs_width_len(k); i++)
                if (!same_double(v[i], rs_synth(l, k, i))) return snprintf(why, cap, "layer %d metric %d differs", l, k), -1;
        }
    double bi[RS_LAYERS], ppl[RS_LAYERS], mi[RS_MI_ITER * RS_LAYERS];
    mf_depth_scores d;
    rs_depth(&d, bi, ppl, mi);
    for (int l = 0; l < RS_LAYERS; l++)
        if (!same_double(r->depth.bi[l], bi[l]) || !same_double(r->depth.ppl[l], ppl[l]))
            return snprintf(why, cap, "depth differs"), -1;
    if (r->depth.n_mi_iter != RS_MI_ITER || memcmp(r->depth.mi, mi, sizeof mi) || !same_double(r->depth.ppl_full, d.ppl_full))
        return snprintf(why, cap, "MI differs"), -1;
    for (int t = 0; t < RS_MI_ITER; t++)
        if (r->depth.mi_order[t] != rs_mi_order[t]) return snprintf(why, cap, "MI order differs"), -1;
    return 0;
}

Test(harden, rankings_every_byte_flip_fails_cleanly_or_reads_the_same) {
    const char *dir = tu_tmpdir();
    char *good = tu_path_in(dir, "good.h5"), *bad = tu_path_in(dir, "bad.h5");
    rk_write(good);
    size_t n;
    unsigned char *b = tu_read(good, &n);
    int errors = 0, same = 0;
    {
        mf_rankings r;
        mf_err err = {{0}};
        char why[256];
        cr_assert_eq(mf_rankings_read(good, &r, &err), 0, "%s", err.msg);
        cr_assert_eq(rk_same(&r, why, sizeof why), 0, "%s", why);
        mf_rankings_free(&r);
    }
    for (size_t off = 0; off < n; off += off < 4096 ? 3 : 97) {
        b[off] ^= 0xa5;
        tu_write(bad, b, n);
        b[off] ^= 0xa5;
        mf_rankings r;
        mf_err err = {{0}};
        if (mf_rankings_read(bad, &r, &err) == 0) {
            char why[256];
            cr_assert_eq(rk_same(&r, why, sizeof why), 0, "byte %zu flipped: read back different values (%s)", off, why);
            mf_rankings_free(&r);
            same++;
        } else {
            one_line_naming(err.msg, bad);
            errors++;
        }
    }
    cr_log_info("rankings: %d flips refused, %d harmless (unused bytes)", errors, same);
    cr_assert(errors > 0);
    /* every truncation too */
    for (size_t len = 0; len < n; len += len < 256 ? 1 : 499) {
        tu_write(bad, b, len);
        mf_rankings r;
        mf_err err = {{0}};
        cr_assert_eq(mf_rankings_read(bad, &r, &err), -1, "truncated to %zu bytes and read", len);
        one_line_naming(err.msg, bad);
    }
    free(b); free(good); free(bad);
}

Test(harden, rankings_flipped_data_names_the_dataset) {
    const char *dir = tu_tmpdir();
    char *good = tu_path_in(dir, "good.h5"), *bad = tu_path_in(dir, "bad.h5");
    rk_write(good);
    flip_at(good, bad, data_offset(good, "/depth/bi") + 5);
    mf_rankings r;
    mf_err err = {{0}};
    cr_assert_eq(mf_rankings_read(bad, &r, &err), -1);
    one_line_naming(err.msg, bad);
    expect_msg(err.msg, "'/depth/bi'");
    expect_msg(err.msg, "checksum");
    free(good); free(bad);
}

Test(harden, rankings_forged_sizes_refused_before_allocation) {
    const char *dir = tu_tmpdir();
    char *good = tu_path_in(dir, "good.h5");
    rk_write(good);
    struct { const char *name, *code, *part; } cases[] = {
        /* declared huge, nothing stored: refused on its shape, before any buffer */
        {"mi.h5", "del f['depth/mi']; f.create_dataset('depth/mi', shape=(2**40, 7), dtype='f8', chunks=(1, 7), fletcher32=True)",
         "dataset '/depth/mi' needs 61572651155456 bytes but holds 0"},
        /* the right shape, but no bytes behind it */
        {"empty.h5", "del f['layers/03/mlp_neurons']; f.create_dataset('layers/03/mlp_neurons', shape=(128,), dtype='f8', "
                     "chunks=(16,), fletcher32=True)", "needs 1024 bytes but holds 0"},
        /* the attribute caps allow 65536 layers of 4M neurons: the datasets must hold them */
        {"big.h5", "f.attrs['intermediate_size'] = np.int64(1 << 22)", "has shape [128], expected [4194304]"},
        /* an old (superblock 0) file from another tool */
        {"old.h5", NULL, "superblock version 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *p = tu_path_in(dir, cases[i].name);
        if (cases[i].code) {
            size_t n;
            void *b = tu_read(good, &n);
            tu_write(p, b, n);
            free(b);
            tu_h5py_edit(p, cases[i].code);
        } else {
            char cmd[8192];
            snprintf(cmd, sizeof cmd, "python3 -c \"import h5py, sys; h5py.File(sys.argv[1], 'w', libver='earliest')"
                     ".attrs['format'] = 'minifuse-rankings'\" %s", p);
            cr_assert_eq(tu_run(cmd, NULL, NULL), 0);
        }
        mf_rankings r;
        mf_err err = {{0}};
        cr_assert_eq(mf_rankings_read(p, &r, &err), -1, "%s read", cases[i].name);
        one_line_naming(err.msg, p);
        expect_msg(err.msg, cases[i].part);
        free(p);
    }
    free(good);
}

/* Found by the fuzzer in "crafted" mode (checksums recomputed after each
 * mutation): a link-info message whose B-tree address makes libhdf5 1.10.8
 * memcpy from NULL. The read runs in a child process first: an error, not a crash. */
Test(harden, rankings_forged_metadata_that_crashes_libhdf5) {
    const char *p = "tests/fuzz/regressions/rankings/crafted-linkinfo-btree2-addr-accum-read-segv";
    mf_rankings r;
    mf_err err = {{0}};
    cr_assert_eq(mf_rankings_read(p, &r, &err), -1, "read");
    one_line_naming(err.msg, p);
    expect_msg(err.msg, "forged or damaged past its checksums");
}

Test(harden, rankings_read_model_checks_the_model_first) {
    char *good = tu_path_in(tu_tmpdir(), "good.h5");
    rk_write(good);
    mf_config c = {.n_layers = RS_LAYERS, .dim = RS_HIDDEN, .ffn_dim = RS_FFN, .n_heads = RS_HEADS,
                   .n_kv_heads = RS_KV, .head_dim = RS_HEAD_DIM, .vocab_size = RS_VOCAB};
    mf_rankings r;
    mf_err err = {{0}};
    cr_assert_eq(mf_rankings_read_model(good, &c, "cd", &r, &err), 0, "%s", err.msg);
    mf_rankings_free(&r);
    c.ffn_dim = 256;
    cr_assert_eq(mf_rankings_read_model(good, &c, NULL, &r, &err), -1);
    expect_msg(err.msg, "intermediate_size is 128 in the rankings but 256 in the model");
    c.ffn_dim = RS_FFN;
    cr_assert_eq(mf_rankings_read_model(good, &c, "ee", &r, &err), -1);
    expect_msg(err.msg, "model_sha256");
    free(good);
}

/* ------------------------------------------------------------ checkpoints */

static void ck_write(const char *dir, int64_t step, char *path) {
    mf_params ps;
    mf_adamw opt;
    cs_stage(0, 1, 0, &ps, &opt);
    mf_train_meta m;
    cs_meta(&m, step, 0);
    mf_err err = {{0}};
    cr_assert_eq(mf_ckpt_write(dir, MPI_COMM_WORLD, 0, &ps, &opt, &m, 0, path, 4096, &err), 0, "%s", err.msg);
    cs_free(&ps, &opt);
}

/* 0: read back exactly; -1: refused (message in err). */
static int ck_read_same(const char *path, mf_err *err, char *why, size_t cap) {
    mf_params ps;
    mf_adamw opt;
    cs_stage(0, 1, 0, &ps, &opt);
    cs_zero(&ps, &opt);
    mf_train_meta m;
    int rc = mf_ckpt_read(path, 0, &ps, &opt, &m, err);
    if (rc == 0) {
        mf_train_meta want;
        cs_meta(&want, 12, 0);
        rc = cs_check(&ps, &opt, 0, why, cap) ? 1 : 0;
        if (!rc && (m.step != 12 || m.tokens != want.tokens || m.data_pos != want.data_pos || m.lr != want.lr ||
                    strcmp(m.options_json, want.options_json) || strcmp(m.student_sha, want.student_sha) ||
                    m.n_rng != 1 || memcmp(&m.rng, &want.rng, sizeof m.rng)))
            rc = 1, snprintf(why, cap, "metadata differs");
        mf_train_meta_free(&m);
    }
    cs_free(&ps, &opt);
    return rc;
}

Test(harden, checkpoint_every_byte_flip_fails_cleanly_or_reads_the_same) {
    const char *dir = tu_tmpdir();
    char good[4096], *bad = tu_path_in(dir, "bad.h5");
    ck_write(dir, 12, good);
    size_t n;
    unsigned char *b = tu_read(good, &n);
    int errors = 0, same = 0;
    {
        mf_err err = {{0}};
        char why[512] = "";
        cr_assert_eq(ck_read_same(good, &err, why, sizeof why), 0, "%s %s", err.msg, why);
    }
    for (size_t off = 0; off < n; off += off < 4096 ? 3 : 89) {
        b[off] ^= 0x3c;
        tu_write(bad, b, n);
        b[off] ^= 0x3c;
        mf_err err = {{0}};
        char why[512] = "";
        int rc = ck_read_same(bad, &err, why, sizeof why);
        cr_assert_neq(rc, 1, "byte %zu flipped: read back different values (%s)", off, why);
        if (rc == 0) same++;
        else one_line_naming(err.msg, bad), errors++;
    }
    cr_log_info("checkpoint: %d flips refused, %d harmless", errors, same);
    for (size_t len = 0; len < n; len += len < 256 ? 1 : 997) {
        tu_write(bad, b, len);
        mf_err err = {{0}};
        char why[512];
        cr_assert_eq(ck_read_same(bad, &err, why, sizeof why), -1, "truncated to %zu bytes and read", len);
        one_line_naming(err.msg, bad);
    }
    /* a flipped weight names the tensor's dataset */
    flip_at(good, bad, data_offset(good, "/params/model.layers.1.mlp.up_proj.weight") + 9);
    mf_err err = {{0}};
    char why[512];
    cr_assert_eq(ck_read_same(bad, &err, why, sizeof why), -1);
    expect_msg(err.msg, "'/params/model.layers.1.mlp.up_proj.weight'");
    expect_msg(err.msg, "checksum");
    free(b); free(bad);
}

/* A frozen tensor (no moment buffers) is only in /params: the metadata walk
 * that runs first (in a child process) must not ask for its moments. */
Test(harden, checkpoint_with_a_frozen_tensor) {
    const char *dir = tu_tmpdir();
    mf_params ps;
    mf_adamw opt;
    cs_stage(0, 1, 0, &ps, &opt);
    free(opt.m[2]); free(opt.v[2]);
    opt.m[2] = opt.v[2] = NULL;
    mf_train_meta m;
    cs_meta(&m, 4, 0);
    mf_err err = {{0}};
    char path[4096];
    cr_assert_eq(mf_ckpt_write(dir, MPI_COMM_WORLD, 0, &ps, &opt, &m, 0, path, sizeof path, &err), 0, "%s", err.msg);
    cr_assert_eq(mf_ckpt_read(path, 0, &ps, &opt, NULL, &err), 0, "%s", err.msg);
    cs_free(&ps, &opt);
}

Test(harden, checkpoint_directory_lock_and_stale_temporaries) {
    const char *dir = tu_tmpdir();
    char name[512];
    snprintf(name, sizeof name, "ckpt-00000003.h5.tmp.%s.%d.00c0ffee", mf_host_tag(), (int)dead_pid());
    char *stale = tu_path_in(dir, name);
    snprintf(name, sizeof name, "ckpt-00000004.h5.tmp.%s.1.00c0ffee", mf_host_tag()); /* pid 1 lives */
    char *live = tu_path_in(dir, name);
    tu_write(stale, "x", 1);
    tu_write(live, "x", 1);
    char path[4096];
    ck_write(dir, 5, path); /* takes the lock: this process keeps it */
    cr_assert(!tu_exists(stale), "the temporary of a dead writer is still there");
    cr_assert(tu_exists(live), "the temporary of a live writer was removed");
    /* another process writing the same directory is refused, naming the lock and this pid */
    char cmd[8192], *out = NULL, *errs = NULL;
    snprintf(cmd, sizeof cmd, NO_MPI_ENV "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 "
             "mpirun --oversubscribe --bind-to none -np 2 build/tests/tools/ckpt_writer write %s 6", dir);
    cr_assert_neq(tu_run(cmd, &out, &errs), 0, "a second writer wrote into a locked directory");
    char want[64];
    snprintf(want, sizeof want, "is locked by pid %d", (int)getpid());
    expect_msg(errs, want);
    expect_msg(errs, MF_CKPT_LOCK);
    char *six = tu_path_in(dir, "ckpt-00000006.h5");
    cr_assert(!tu_exists(six));
    free(out); free(errs); free(stale); free(live); free(six);
}

/* ------------------------------------------------------------ teacher cache */

enum { TK = 4, TT = 3, TW = 5, TV = 50 };
static const char *SHA_A = "aaaa000000000000000000000000000000000000000000000000000000000000";
static const char *SHA_B = "bbbb000000000000000000000000000000000000000000000000000000000000";

static void tc_window(int64_t w, int32_t *ids, float *vals) {
    for (int i = 0; i < TT * TK; i++) {
        ids[i] = (int32_t)((w * 7 + i * 3) % TV);
        vals[i] = (float)(w * 100 + i) / 8.0f;
    }
}

static void tc_build(const char *path, const char *teacher, const char *text, int bad_window) {
    mf_tcache c;
    mf_err err = {{0}};
    cr_assert_eq(mf_tcache_create_v(path, MPI_COMM_WORLD, TK, TT, TW, TV, teacher, SHA_A, text, SHA_B, &c, &err), 0,
                 "%s", err.msg);
    int32_t ids[TT * TK];
    float vals[TT * TK];
    for (int64_t w = 0; w < TW; w++) {
        tc_window(w, ids, vals);
        if (w == bad_window) ids[5] = TV; /* a foreign cache: an id past the vocabulary, checksum right */
        cr_assert_eq(mf_tcache_put(&c, w, ids, vals, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(mf_tcache_finish(path, MPI_COMM_WORLD, &c, 0, &err), 0, "%s", err.msg);
}

Test(harden, teacher_cache_keyed_and_every_window_checked) {
    const char *dir = tu_tmpdir();
    char *path = tu_path_in(dir, "c.h5"), *teacher = tu_path_in(dir, "teacher.bin"), *text = tu_path_in(dir, "t.txt");
    tu_write(teacher, "teacher", 7);
    tu_write(text, "text", 4);
    tc_build(path, teacher, text, 3);
    mf_tcache c;
    mf_err err = {{0}};
    /* another teacher, text, vocabulary or shape: rebuild (1), never reuse */
    cr_assert_eq(mf_tcache_open_v(path, TK, TT, TW, TV, SHA_B, SHA_B, &c, &err), 1, "another teacher reused");
    cr_assert_eq(mf_tcache_open_v(path, TK, TT, TW, TV, SHA_A, SHA_A, &c, &err), 1, "another text reused");
    cr_assert_eq(mf_tcache_open_v(path, TK, TT, TW, TV + 1, SHA_A, SHA_B, &c, &err), 1, "another vocabulary reused");
    cr_assert_eq(mf_tcache_open_v(path, TK, TT + 1, TW, TV, SHA_A, SHA_B, &c, &err), 1, "another ctx reused");
    cr_assert_eq(mf_tcache_open_v(path, TK, TT, TW, TV, SHA_A, SHA_B, &c, &err), 0, "%s", err.msg);
    int32_t ids[TT * TK], want[TT * TK];
    float vals[TT * TK], wv[TT * TK];
    for (int64_t w = 0; w < TW; w++) {
        int rc = mf_tcache_get(&c, w, ids, vals, &err);
        if (w == 3) {
            cr_assert_eq(rc, -1, "an id past the vocabulary was let through");
            one_line_naming(err.msg, path);
            expect_msg(err.msg, "token id 50 outside the vocabulary [0, 50)");
            continue;
        }
        cr_assert_eq(rc, 0, "%s", err.msg);
        tc_window(w, want, wv);
        cr_assert(!memcmp(ids, want, sizeof ids) && !memcmp(vals, wv, sizeof vals), "window %lld differs", (long long)w);
    }
    cr_assert_eq(mf_tcache_get(&c, TW, ids, vals, &err), -1, "window past the end");
    mf_tcache_close(&c);

    /* a damaged window fails its checksum; the others still read */
    char *bad = tu_path_in(dir, "bad.h5");
    flip_at(path, bad, data_offset(path, "/logits") + (long)(2 * TT * TK * sizeof(float)) + 6);
    cr_assert_eq(mf_tcache_open_v(bad, TK, TT, TW, TV, SHA_A, SHA_B, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(mf_tcache_get(&c, 2, ids, vals, &err), -1, "a damaged window was used");
    one_line_naming(err.msg, bad);
    expect_msg(err.msg, "window 2 fails its checksum");
    cr_assert_eq(mf_tcache_get(&c, 1, ids, vals, &err), 0, "%s", err.msg);
    mf_tcache_close(&c);

    /* truncated / not a cache: an error naming it (never a crash, never silent reuse) */
    size_t n;
    unsigned char *b = tu_read(path, &n);
    tu_write(bad, b, n / 2);
    cr_assert_eq(mf_tcache_open_v(bad, TK, TT, TW, TV, SHA_A, SHA_B, &c, &err), -1);
    one_line_naming(err.msg, bad);
    expect_msg(err.msg, "truncated");
    free(b);

    /* the old API (no key from the caller) checks the files named in the cache: unchanged size and
     * mtime pass the quick check (the fake digests are not recomputed) */
    cr_assert_eq(mf_tcache_open(path, TK, TT, TW, &c, &err), 0, "%s", err.msg);
    mf_tcache_close(&c);
    free(path); free(teacher); free(text); free(bad);
}

Test(harden, teacher_cache_old_api_notices_changed_inputs) {
    const char *dir = tu_tmpdir();
    char *path = tu_path_in(dir, "c.h5"), *teacher = tu_path_in(dir, "teacher.bin"), *text = tu_path_in(dir, "t.txt");
    tu_write(teacher, "teacher", 7);
    tu_write(text, "text", 4);
    char tsha[65], xsha[65];
    mf_err err = {{0}};
    cr_assert_eq(mf_tcache_key(MPI_COMM_WORLD, teacher, text, tsha, xsha, &err), 0, "%s", err.msg);
    mf_tcache c;
    cr_assert_eq(mf_tcache_create_v(path, MPI_COMM_WORLD, TK, TT, TW, TV, teacher, tsha, text, xsha, &c, &err), 0, "%s", err.msg);
    int32_t ids[TT * TK];
    float vals[TT * TK];
    for (int64_t w = 0; w < TW; w++) {
        tc_window(w, ids, vals);
        cr_assert_eq(mf_tcache_put(&c, w, ids, vals, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(mf_tcache_finish(path, MPI_COMM_WORLD, &c, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(mf_tcache_open(path, TK, TT, TW, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.V, TV);
    mf_tcache_close(&c);
    /* same bytes, new mtime: the SHA-256 decides (reused) */
    sleep(1);
    tu_write(teacher, "teacher", 7);
    cr_assert_eq(mf_tcache_open(path, TK, TT, TW, &c, &err), 0, "%s", err.msg);
    mf_tcache_close(&c);
    /* another teacher at the same path: rebuilt */
    tu_write(teacher, "retrained", 9);
    cr_assert_eq(mf_tcache_open(path, TK, TT, TW, &c, &err), 1, "a cache of a changed teacher was reused");
    free(path); free(teacher); free(text);
}

/* ------------------------------------------------------------ sizes from model files */

Test(harden, safetensors_element_count_cannot_wrap) {
    char *p = tu_path_in(tu_tmpdir(), "wrap.safetensors");
    /* 2^40 * 2^40 * 2^40 wraps a 64-bit count to 0: with 0 data bytes it used to be accepted */
    const char *h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776,1099511627776],\"data_offsets\":[0,0]}}";
    size_t hl = strlen(h);
    unsigned char *b = calloc(1, 8 + hl);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    memcpy(b + 8, h, hl);
    tu_write(p, b, 8 + hl);
    mf_err err = {{0}};
    mf_safetensors *st = mf_st_open_file(p, &err);
    cr_assert_null(st, "a wrapped element count was accepted");
    expect_msg(err.msg, "shape too large");
    free(b); free(p);
}

Test(harden, llama2c_vocab_int32_min) {
    size_t n;
    unsigned char *b = tu_read(tu_shared("llm_assets/models/stories260K/stories260K.bin"), &n);
    cr_assert(b);
    int32_t v = INT32_MIN;
    memcpy(b + 5 * 4, &v, 4);
    char *p = tu_path_in(tu_tmpdir(), "m.bin");
    tu_write(p, b, n);
    mf_err err = {{0}};
    mf_source *s = mf_source_open(p, &err);
    cr_assert_null(s);
    one_line_naming(err.msg, p);
    expect_msg(err.msg, "vocab_size");
    free(b); free(p);
}

Test(harden, tokenizer_bin_count_bounded_by_its_size) {
    mf_err err = {{0}};
    const char *tok = tu_shared("llm_assets/models/stories260K/tok512.bin");
    mf_tokenizer *t = mf_tok_load_llama2c(tok, 1 << 24, &err);
    cr_assert_null(t);
    expect_msg(err.msg, "cannot hold 16777216 tokens");
}

/* A copy of the stories260K HF directory whose config.json names tokenizer ref. */
static const char *hf_with_tokenizer(const char *ref, const char *link_to) {
    const char *dir = tu_tmpdir();
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp %s/* %s/ && rm -f %s/tok512.bin", tu_shared("llm_assets/models/stories260K_hf"), dir, dir);
    cr_assert_eq(tu_run(cmd, NULL, NULL), 0);
    char p[4300];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_t *c = json_load_file(p, 0, NULL);
    cr_assert(c);
    json_object_set_new(c, "minifuse", json_pack("{s:s}", "tokenizer", ref));
    json_dump_file(c, p, 0);
    json_decref(c);
    if (link_to) {
        snprintf(p, sizeof p, "%s/sub", dir);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/sub/tok.bin", dir);
        cr_assert_eq(symlink(link_to, p), 0);
    } else {
        snprintf(cmd, sizeof cmd, "mkdir -p %s/sub && cp %s %s/sub/tok.bin", dir,
                 tu_shared("llm_assets/models/stories260K/tok512.bin"), dir);
        cr_assert_eq(tu_run(cmd, NULL, NULL), 0);
    }
    return dir;
}

static const char *load_tok(const char *dir, const char *tok_path, mf_err *err) {
    mf_source *s = mf_source_open(dir, err);
    cr_assert(s, "%s", err->msg);
    mf_tokenizer *t = mf_source_load_tokenizer(s, tok_path, err);
    mf_source_close(s);
    if (!t) return err->msg;
    mf_tok_free(t);
    return NULL;
}

Test(harden, config_tokenizer_path_stays_in_the_model_directory) {
    char real[4096];
    cr_assert(realpath(tu_shared("llm_assets/models/stories260K/tok512.bin"), real));
    mf_err err = {{0}};
    const char *dir = hf_with_tokenizer("sub/tok.bin", NULL);
    cr_assert_null(load_tok(dir, NULL, &err), "a relative path inside: %s", err.msg);
    const char *bad[][2] = {{real, NULL}, {"../../../../../../../../etc/passwd", NULL}, {"sub/tok.bin", real}};
    for (int i = 0; i < 3; i++) {
        dir = hf_with_tokenizer(bad[i][0], bad[i][1]);
        const char *msg = load_tok(dir, NULL, &err);
        cr_assert_not_null(msg, "'%s'%s was followed out of the model directory", bad[i][0], bad[i][1] ? " (symlink)" : "");
        expect_msg(msg, "not followed");
        one_line_naming(msg, dir);
        /* given on the command line, it is trusted */
        cr_assert_null(load_tok(dir, real, &err), "%s", err.msg);
    }
}

/* ------------------------------------------------------------ --force, no shell */

Test(harden, force_with_a_quote_in_out, .timeout = 300) {
    const char *dir = tu_tmpdir();
    char out[4300], cmd[16384], *errs = NULL;
    snprintf(out, sizeof out, "%s/it's; touch PWNED; '", dir);
    for (int round = 0; round < 2; round++) {
        snprintf(cmd, sizeof cmd, "%s%s prune --model %s --out \"%s\" --drop-layers 1 --metric random --seed %d%s",
                 NO_MPI_ENV, tu_mpirun(1), tu_shared("llm_assets/models/stories260K/stories260K.bin"), out, round,
                 round ? " --force" : "");
        char *outs = NULL;
        int rc = tu_run(cmd, &outs, &errs);
        cr_assert_eq(rc, 0, "%s\n%s%s", cmd, outs, errs);
        free(outs);
        free(errs);
    }
    char *pw = tu_path_in(dir, "PWNED");
    cr_assert(!tu_exists(pw) && !tu_exists("PWNED"), "--out ran a shell command");
    char p[4400];
    snprintf(p, sizeof p, "%s/config.json", out);
    cr_assert(tu_exists(p));
    snprintf(p, sizeof p, "%s/tokenizer.bin", out); /* the output carries its tokenizer */
    cr_assert(tu_exists(p));
    /* nothing left behind but the output (its lock file goes once it is in place) */
    snprintf(cmd, sizeof cmd, "ls -A %s | grep -v -x -e \"it's; touch PWNED; '\" | wc -l", dir);
    char *cnt = NULL;
    cr_assert_eq(tu_run(cmd, &cnt, NULL), 0);
    cr_assert_eq(atoi(cnt), 0, "left behind in %s", dir);
    free(cnt); free(pw);
}
