/* test_checkpoint.c - training checkpoints: parallel-HDF5 writer, per-rank
 * reader by name, latest-checkpoint discovery, pruning, errors.
 *
 * Values are the synthetic ones of tests/ckpt_synth.h (a function of tensor
 * name and element, so any pipeline split must read back the same bits).
 * Multi-rank runs use build/tests/tools/ckpt_writer under mpirun; h5py and
 * h5dump read our files independently. */
#include <criterion/criterion.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_synth.h"
#include "testutil.h"
#include "train/checkpoint.h"
#include "version.h"

#define TOOL "build/tests/tools/ckpt_writer"

TestSuite(ckpt, .init = tu_mpi_init, .timeout = 180);

/* ---- helpers ---- */


static void expect_msg(const char *msg, const char *part) {
    cr_assert(strstr(msg, part) != NULL, "expected '%s' in: %s", part, msg);
}

/* Write the whole synthetic model from this process as a checkpoint of step. */
static int write_one(const char *dir, int64_t step, int keep, char *path, mf_err *err) {
    mf_params ps;
    mf_adamw opt;
    cs_stage(0, 1, 0, &ps, &opt);
    mf_train_meta m;
    cs_meta(&m, step, 0);
    int rc = mf_ckpt_write(dir, MPI_COMM_WORLD, 0, &ps, &opt, &m, keep, path, path ? 4096 : 0, err);
    cs_free(&ps, &opt);
    return rc;
}

static void write_ok(const char *dir, int64_t step, int keep, char *path) {
    mf_err err = {{0}};
    cr_assert_eq(write_one(dir, step, keep, path, &err), 0, "write step %lld: %s", (long long)step, err.msg);
}

/* Read stage s of P from file and compare bit-exactly with salt. */
static void read_stage_ok(const char *file, int s, int P, int salt) {
    mf_params ps;
    mf_adamw opt;
    cs_stage(s, P, 0, &ps, &opt);
    cs_zero(&ps, &opt);
    mf_err err = {{0}};
    cr_assert_eq(mf_ckpt_read(file, 0, &ps, &opt, NULL, &err), 0, "stage %d of %d: %s", s, P, err.msg);
    char why[512];
    cr_assert_eq(cs_check(&ps, &opt, salt, why, sizeof why), 0, "stage %d of %d: %s", s, P, why);
    cs_free(&ps, &opt);
}

/* Read must fail, naming the file; returns the message (static). */
static const char *read_fails(const char *path) {
    static mf_err err;
    memset(&err, 0, sizeof err);
    mf_params ps;
    mf_adamw opt;
    cs_stage(0, 1, 0, &ps, &opt);
    mf_train_meta m;
    int rc = mf_ckpt_read(path, 0, &ps, &opt, &m, &err);
    cs_free(&ps, &opt);
    cr_assert_eq(rc, -1, "%s: read should fail", path);
    cr_assert(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    cr_assert(strchr(err.msg, '\n') == NULL, "message is not one line: %s", err.msg);
    return err.msg;
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    void *b = tu_read(from, &n);
    cr_assert_not_null(b, "cannot read %s", from);
    tu_write(to, b, n);
    free(b);
}

/* A copy of good, edited by h5py; read must fail with `part`. */
static void edited_fails(const char *good, const char *name, const char *code, const char *part) {
    char *p = tu_path_in(tu_tmpdir(), name);
    copy_file(good, p);
    tu_h5py_edit(p, code);
    expect_msg(read_fails(p), part);
    free(p);
}

static void need_tool(void) {
    cr_assert(access(TOOL, X_OK) == 0, "%s is missing: build it with `make %s`", TOOL, TOOL);
}

/* mpirun -np N ckpt_writer ARGS; this process is an MPI singleton, so drop the
 * OMPI_/PMIX_/ORTE_ variables it exported first. */
static int run_tool(int N, const char *args, char **out, char **errs) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "for v in $(env | sed -n 's/^\\(\\(OMPI\\|PMIX\\|ORTE\\)_[A-Za-z0-9_]*\\)=.*/\\1/p'); do unset $v; done; "
             "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 "
             "mpirun --oversubscribe --bind-to none -np %d %s %s", N, TOOL, args);
    return tu_run(cmd, out, errs);
}

static void tool_ok(int N, const char *args) {
    char *out = NULL, *errs = NULL;
    int rc = run_tool(N, args, &out, &errs);
    cr_assert_eq(rc, 0, "mpirun -np %d ckpt_writer %s: %s%s", N, args, out, errs);
    expect_msg(out, "ok");
    free(out); free(errs);
}

/* ---- one process ---- */

Test(ckpt, roundtrip_one_rank) {
    const char *dir = tu_tmpdir();
    char path[4096];
    write_ok(dir, 7, 0, path);
    char *want = tu_path_in(dir, "ckpt-00000007.h5");
    cr_assert_str_eq(path, want);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_assert(tu_exists(path) && !tu_exists(tmp), "file missing or temporary left behind");

    mf_params ps;
    mf_adamw opt;
    cs_stage(0, 1, 0, &ps, &opt);
    cs_zero(&ps, &opt);
    mf_train_meta m;
    mf_err err = {{0}};
    cr_assert_eq(mf_ckpt_read(path, 0, &ps, &opt, &m, &err), 0, "%s", err.msg);
    char why[512];
    cr_assert_eq(cs_check(&ps, &opt, 0, why, sizeof why), 0, "%s", why);
    cr_assert_eq(ps.n, CS_TENSORS);
    mf_train_meta w;
    cs_meta(&w, 7, 0);
    cr_assert_eq(m.step, 7);
    cr_assert_eq(m.tokens, w.tokens);
    cr_assert_eq(m.data_pos, w.data_pos);
    cr_assert(m.lr == w.lr);
    cr_assert(m.sched.max_lr == w.sched.max_lr && m.sched.min_lr == w.sched.min_lr);
    cr_assert(m.sched.warmup == w.sched.warmup && m.sched.total == w.sched.total);
    cr_assert_eq(m.n_rng, 1);
    cr_assert(m.have_rng && memcmp(&m.rng, &w.rng, sizeof w.rng) == 0, "rng state differs");
    cr_assert_str_eq(m.options_json, w.options_json);
    cr_assert_str_eq(m.student, w.student);
    cr_assert_str_eq(m.student_sha, w.student_sha);
    cr_assert_str_eq(m.teacher, w.teacher);
    cr_assert_str_eq(m.teacher_sha, w.teacher_sha);
    cr_assert_str_eq(m.software_version, MF_VERSION);
    cr_assert(strlen(m.created) == 20 && m.created[10] == 'T' && m.created[19] == 'Z', "created '%s'", m.created);
    mf_train_meta_free(&m);
    mf_train_meta_free(&m); /* idempotent */
    /* replica 1 does not exist in a 1-replica file: no rng, the rest is read */
    cr_assert_eq(mf_ckpt_read(path, 1, &ps, &opt, &m, &err), 0, "%s", err.msg);
    cr_assert(!m.have_rng && m.n_rng == 1);
    mf_train_meta_free(&m);
    /* weights only */
    cs_zero(&ps, NULL);
    cr_assert_eq(mf_ckpt_read(path, 0, &ps, NULL, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(cs_check(&ps, NULL, 0, why, sizeof why), 0, "%s", why);
    cs_free(&ps, &opt);
    free(want);
}

Test(ckpt, read_with_other_pipeline_splits) {
    const char *dir = tu_tmpdir();
    char path[4096];
    write_ok(dir, 3, 0, path);
    for (int P = 1; P <= 5; P++)
        for (int s = 0; s < P; s++) read_stage_ok(path, s, P, 0);
}

Test(ckpt, optimizer_continues_identically_after_restore) {
    /* 3 more AdamW steps on the original state == 3 steps on the restored one */
    const char *dir = tu_tmpdir();
    char path[4096];
    write_ok(dir, 7, 0, path);
    mf_params a, b;
    mf_adamw oa, ob;
    cs_stage(0, 1, 0, &a, &oa);
    cs_stage(0, 1, 0, &b, &ob);
    cs_zero(&b, &ob);
    mf_err err = {{0}};
    cr_assert_eq(mf_ckpt_read(path, 0, &b, &ob, NULL, &err), 0, "%s", err.msg);
    for (int t = 0; t < 3; t++) {
        mf_adamw_step(&oa, &a, 1e-3, 0.5f);
        mf_adamw_step(&ob, &b, 1e-3, 0.5f);
    }
    for (int i = 0; i < a.n; i++) {
        cr_assert_eq(memcmp(a.p[i].data, b.p[i].data, a.p[i].numel * sizeof(float)), 0, "%s", a.p[i].name);
        cr_assert_eq(memcmp(oa.v[i], ob.v[i], a.p[i].numel * sizeof(float)), 0, "%s", a.p[i].name);
    }
    cs_free(&a, &oa);
    cs_free(&b, &ob);
}

/* ---- several ranks ---- */

Test(ckpt, mpi_write_2_and_3_ranks_read_with_other_splits) {
    need_tool();
    const char *dir = tu_tmpdir();
    for (int P = 1; P <= 3; P++) {
        char sub[64], args[4400];
        snprintf(sub, sizeof sub, "p%d", P);
        char *d = tu_path_in(dir, sub);
        mkdir(d, 0755);
        snprintf(args, sizeof args, "write %s 12", d);
        tool_ok(P, args);
        char *f = tu_path_in(d, "ckpt-00000012.h5");
        /* in this process, serially, with every split */
        for (int Q = 1; Q <= 4; Q++)
            for (int s = 0; s < Q; s++) read_stage_ok(f, s, Q, 0);
        /* and by Q ranks at once */
        for (int Q = 1; Q <= 3; Q++) {
            if (Q == P) continue;
            snprintf(args, sizeof args, "read %s", f);
            tool_ok(Q, args);
        }
        free(f);
        free(d);
    }
}

Test(ckpt, mpi_data_parallel_replica_0_writes) {
    need_tool();
    const char *dir = tu_tmpdir();
    char args[4400];
    /* 2 replicas x 2 stages; replica 1's weights differ (salt 1): the file must
     * hold replica 0's, and one RNG row per replica */
    snprintf(args, sizeof args, "write %s 5 --dp 2 --replica-salt", dir);
    tool_ok(4, args);
    char *f = tu_path_in(dir, "ckpt-00000005.h5");
    for (int s = 0; s < 3; s++) read_stage_ok(f, s, 3, 0);
    mf_params ps;
    mf_adamw opt;
    cs_stage(0, 1, 0, &ps, &opt);
    mf_train_meta m;
    mf_err err = {{0}};
    cr_assert_eq(mf_ckpt_read(f, 1, &ps, &opt, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m.n_rng, 2);
    mf_rng r0, r1;
    mf_rng_seed(&r0, 1000);
    mf_rng_seed(&r1, 1001);
    cr_assert(memcmp(&m.rng_all[0], &r0, sizeof r0) == 0 && memcmp(&m.rng_all[1], &r1, sizeof r1) == 0);
    cr_assert(m.have_rng && memcmp(&m.rng, &r1, sizeof r1) == 0);
    mf_train_meta_free(&m);
    cs_free(&ps, &opt);
    /* read by 2 replicas x 3 stages, each checking its replica's RNG */
    snprintf(args, sizeof args, "read %s --dp 2", f);
    tool_ok(6, args);
    /* 3 replicas of the whole model */
    char *d3 = tu_path_in(dir, "dp3");
    mkdir(d3, 0755);
    snprintf(args, sizeof args, "write %s 6 --dp 3 --replica-salt", d3);
    tool_ok(3, args);
    char *f3 = tu_path_in(d3, "ckpt-00000006.h5");
    read_stage_ok(f3, 0, 1, 0);
    free(f); free(d3); free(f3);
}

Test(ckpt, mpi_duplicate_tensor_fails_on_every_rank) {
    need_tool();
    const char *dir = tu_tmpdir();
    char args[4400], *out = NULL, *errs = NULL;
    snprintf(args, sizeof args, "write %s 9 --dup", dir);
    int rc = run_tool(2, args, &out, &errs);
    cr_assert_neq(rc, 0, "a tensor held by two ranks was accepted");
    expect_msg(errs, "rank 0: ");
    expect_msg(errs, "rank 1: ");
    expect_msg(errs, "tensor 'model.embed_tokens.weight' is held by ranks 0 and 1 of replica 0");
    char *f = tu_path_in(dir, "ckpt-00000009.h5"), tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", f);
    cr_assert(!tu_exists(f) && !tu_exists(tmp), "a file was left behind");
    free(out); free(errs); free(f);
}

/* mf_grad_global_norm: every rank gets the same bits, and they are the
 * fixed-order sum of the per-rank sums of squares; runs repeat exactly. */
Test(ckpt, mpi_global_grad_norm_deterministic) {
    need_tool();
    for (int P = 1; P <= 3; P++) {
        double want_sq = 0;
        for (int s = 0; s < P; s++) {
            mf_params ps;
            cs_stage(s, P, 0, &ps, NULL);
            want_sq += mf_params_grad_sq(&ps);
            cs_free(&ps, NULL);
        }
        double want = sqrt(want_sq);
        char *first = NULL;
        for (int rep = 0; rep < 2; rep++) {
            char *out = NULL, *errs = NULL;
            cr_assert_eq(run_tool(P, "norm", &out, &errs), 0, "%s", errs);
            int n = 0;
            for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
                int r;
                char hex[64];
                if (sscanf(line, "rank %d norm %63s", &r, hex) != 2) continue;
                double v = strtod(hex, NULL);
                cr_assert(v == want, "P=%d rank %d: norm %a, expected %a", P, r, v, want);
                n++;
            }
            cr_assert_eq(n, P, "P=%d: %d norm lines", P, n);
            free(errs);
            if (rep == 0) first = out;
            else free(out);
        }
        free(first);
        /* the whole model in one list: the same norm to rounding */
        mf_params all;
        cs_stage(0, 1, 0, &all, NULL);
        double one = sqrt(mf_params_grad_sq(&all));
        cr_assert(fabs(one - want) <= 1e-14 * want);
        cr_assert(mf_grad_global_norm(&all, MPI_COMM_WORLD) == one);
        cs_free(&all, NULL);
    }
}

/* ---- latest, pruning ---- */

Test(ckpt, find_latest_skips_tmp_incomplete_and_broken) {
    const char *dir = tu_tmpdir();
    char p1[4096], p3[4096], got[4096];
    mf_err err = {{0}};
    cr_assert_eq(mf_ckpt_find_latest(dir, got, sizeof got, &err), 1, "empty directory: %s", err.msg);
    write_ok(dir, 1, 0, p1);
    write_ok(dir, 3, 0, p3);
    cr_assert_eq(mf_ckpt_find_latest(dir, got, sizeof got, &err), 0, "%s", err.msg);
    cr_assert_str_eq(got, p3);

    size_t n;
    unsigned char *b = tu_read(p3, &n);
    char *tmp9 = tu_path_in(dir, "ckpt-00000009.h5.tmp"); /* a complete file, but .tmp */
    tu_write(tmp9, b, n);
    char *trunc5 = tu_path_in(dir, "ckpt-00000005.h5");  /* truncated */
    tu_write(trunc5, b, n / 2);
    char *text8 = tu_path_in(dir, "ckpt-00000008.h5");   /* not HDF5 */
    tu_write(text8, "not a checkpoint\n", 17);
    char *empty7 = tu_path_in(dir, "ckpt-7.h5");         /* empty */
    tu_write(empty7, "", 0);
    char *other = tu_path_in(dir, "ckpt-00000011.h5.bak");
    tu_write(other, b, n);
    char *other2 = tu_path_in(dir, "ckpt-x12.h5");
    tu_write(other2, b, n);
    free(b);
    char *inc4 = tu_path_in(dir, "ckpt-00000004.h5");     /* marker removed */
    copy_file(p3, inc4);
    tu_h5py_edit(inc4, "del f.attrs['complete']");
    char *zero6 = tu_path_in(dir, "ckpt-00000006.h5");    /* marker 0 */
    copy_file(p3, zero6);
    tu_h5py_edit(zero6, "f.attrs['complete'] = np.int64(0)");
    char *foreign10 = tu_path_in(dir, "ckpt-00000010.h5"); /* another kind of HDF5 file */
    copy_file(p3, foreign10);
    tu_h5py_edit(foreign10, "f.attrs['format'] = np.bytes_('something-else')");
    char *sub = tu_path_in(dir, "ckpt-00000013.h5");      /* a directory */
    mkdir(sub, 0755);

    cr_assert_eq(mf_ckpt_find_latest(dir, got, sizeof got, &err), 0, "%s", err.msg);
    cr_assert_str_eq(got, p3);
    /* and each skipped one fails to read with a reason */
    expect_msg(read_fails(trunc5), "truncated HDF5 file");
    expect_msg(read_fails(text8), "not an HDF5 file");
    expect_msg(read_fails(inc4), "not complete");
    expect_msg(read_fails(zero6), "not complete");
    expect_msg(read_fails(foreign10), "not a minifuse training checkpoint");
    expect_msg(read_fails(sub), "not a regular file");

    /* a directory not made yet holds no checkpoint (--resume on a first start, any rank);
     * a path that is not a directory is an error naming it */
    char *missing = tu_path_in(dir, "no/such");
    cr_assert_eq(mf_ckpt_find_latest(missing, got, sizeof got, &err), 1, "%s", err.msg);
    cr_assert_eq(mf_ckpt_find_latest(text8, got, sizeof got, &err), -1);
    expect_msg(err.msg, text8);
    free(tmp9); free(trunc5); free(text8); free(empty7); free(other); free(other2); free(inc4); free(zero6);
    free(foreign10); free(sub); free(missing);
}

Test(ckpt, keep_last_deletes_old_complete_checkpoints) {
    const char *dir = tu_tmpdir();
    char *junk = tu_path_in(dir, "ckpt-00000000.h5"); /* incomplete: left alone */
    tu_write(junk, "junk", 4);
    for (int s = 1; s <= 5; s++) write_ok(dir, s, 2, NULL);
    for (int s = 1; s <= 5; s++) {
        char name[64];
        snprintf(name, sizeof name, "ckpt-%08d.h5", s);
        char *p = tu_path_in(dir, name);
        cr_assert_eq(tu_exists(p), s >= 4, "%s %s", name, tu_exists(p) ? "kept" : "deleted");
        free(p);
    }
    cr_assert(tu_exists(junk));
    /* writing an older step (a restart from it) never deletes what was just written */
    char p2[4096];
    write_ok(dir, 2, 2, p2);
    cr_assert(tu_exists(p2));
    char got[4096];
    mf_err err = {{0}};
    cr_assert_eq(mf_ckpt_find_latest(dir, got, sizeof got, &err), 0, "%s", err.msg);
    expect_msg(got, "ckpt-00000005.h5");
    /* keep_last 0 keeps everything */
    write_ok(dir, 6, 0, NULL);
    char *p4 = tu_path_in(dir, "ckpt-00000004.h5");
    cr_assert(tu_exists(p4) && tu_exists(p2));
    free(p4); free(junk);
}

/* ---- independent readers ---- */

Test(ckpt, h5py_and_h5dump_read_it) {
    const char *dir = tu_tmpdir();
    char path[4096];
    write_ok(dir, 7, 0, path);
    const char *name = "model.layers.2.mlp.down_proj.weight";
    char cmd[8192], *out = NULL, *errs = NULL;
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import sys, h5py, numpy as np; f = h5py.File(sys.argv[1], 'r'); n = sys.argv[2]; "
             "w = f['params/' + n]; v = f['adam_v/' + n]; "
             "print(w.dtype, w.shape, f.attrs['step'], f.attrs['complete'], f.attrs['format'].decode(), len(f['params'])); "
             "print(w[...].astype('<f4').tobytes().hex()); print(v[...].astype('<f4').tobytes().hex()); "
             "print(f['rng'].dtype, f['rng'].shape, int(f['rng'][0, 3]))\" %s %s",
             path, name);
    cr_assert_eq(tu_run(cmd, &out, &errs), 0, "h5py: %s", errs);
    char *lines[4] = {0};
    int nl = 0;
    for (char *l = strtok(out, "\n"); l && nl < 4; l = strtok(NULL, "\n")) lines[nl++] = l;
    cr_assert_eq(nl, 4, "h5py printed %d lines", nl);
    char want[256];
    snprintf(want, sizeof want, "float32 (%d, %d) 7 1 minifuse-train-checkpoint %d", CS_D, CS_F, CS_TENSORS);
    cr_assert_str_eq(lines[0], want);
    for (int k = 1; k <= 2; k++) {
        cr_assert_eq(strlen(lines[k]), (size_t)CS_D * CS_F * 8);
        for (int j = 0; j < CS_D * CS_F; j++) {
            float x = cs_val(name, k == 1 ? CS_DATA : CS_V_, 0, (size_t)j);
            unsigned char bytes[4];
            memcpy(bytes, &x, 4); /* little-endian host */
            char hex[9];
            snprintf(hex, sizeof hex, "%02x%02x%02x%02x", bytes[0], bytes[1], bytes[2], bytes[3]);
            cr_assert(strncmp(lines[k] + 8 * j, hex, 8) == 0, "%s [%d]: h5py %.8s, ours %s", k == 1 ? "weight" : "v",
                      j, lines[k] + 8 * j, hex);
        }
    }
    mf_rng r;
    mf_rng_seed(&r, 1000);
    snprintf(want, sizeof want, "uint64 (1, 4) %llu", (unsigned long long)r.s[3]);
    cr_assert_str_eq(lines[3], want);
    free(out); free(errs);

    snprintf(cmd, sizeof cmd, "h5dump -H %s", path);
    cr_assert_eq(tu_run(cmd, &out, &errs), 0, "h5dump -H: %s", errs);
    cr_assert_str_empty(errs, "h5dump -H stderr: %s", errs);
    expect_msg(out, "GROUP \"adam_m\"");
    expect_msg(out, "DATASET \"model.norm.weight\"");
    expect_msg(out, "DATASET \"lm_head.weight\"");
    expect_msg(out, "ATTRIBUTE \"complete\"");
    free(out); free(errs);
}

/* ---- errors ---- */

Test(ckpt, read_errors_name_file_and_dataset) {
    const char *dir = tu_tmpdir();
    char good[4096];
    write_ok(dir, 7, 0, good);
    edited_fails(good, "a.h5", "del f['adam_v/model.layers.2.mlp.up_proj.weight']",
                 "missing dataset '/adam_v/model.layers.2.mlp.up_proj.weight'");
    edited_fails(good, "b.h5", "del f['params/model.norm.weight']; f['params/model.norm.weight'] = np.zeros(9, 'f4')",
                 "dataset '/params/model.norm.weight' has shape [9], expected [8]");
    edited_fails(good, "c.h5",
                 "del f['params/lm_head.weight']; f['params/lm_head.weight'] = np.zeros((40, 8), 'i4')",
                 "dataset '/params/lm_head.weight' is not of float type");
    edited_fails(good, "d.h5", "del f['adam_m']", "missing dataset '/adam_m/model.embed_tokens.weight'");
    edited_fails(good, "e.h5", "f.attrs['format_version'] = np.int64(2)", "format_version 2 is not supported");
    edited_fails(good, "f.h5", "del f.attrs['step']", "missing root attribute 'step'");
    edited_fails(good, "g.h5", "f.attrs['step'] = 'seven'", "attribute 'step' is not a single integer");
    edited_fails(good, "h.h5", "del f['rng']; f['rng'] = np.zeros((1, 3), 'u8')", "dataset '/rng' has the wrong shape");
    edited_fails(good, "i.h5", "del f['rng']", "missing dataset '/rng'");
    edited_fails(good, "j.h5", "del f.attrs['format']", "missing root attribute 'format'");

    /* a tensor the new run has but the checkpoint lacks; a shape change */
    mf_params ps;
    mf_adamw opt;
    cs_stage(0, 1, 0, &ps, NULL);
    cs_add(&ps, "model.extra.weight", 3, 0, 0);
    mf_err err = {{0}};
    cr_assert_eq(mf_ckpt_read(good, 0, &ps, NULL, NULL, &err), -1);
    expect_msg(err.msg, good);
    expect_msg(err.msg, "missing dataset '/params/model.extra.weight'");
    cs_free(&ps, NULL);
    cs_stage(1, 2, 0, &ps, &opt);
    ps.p[0].shape[0] = 4; /* model.layers.3.input_layernorm.weight as [4, 2] */
    ps.p[0].shape[1] = 2;
    ps.p[0].ndim = 2;
    cr_assert_eq(mf_ckpt_read(good, 0, &ps, &opt, NULL, &err), -1);
    expect_msg(err.msg, "dataset '/params/model.layers.3.input_layernorm.weight' has shape [8], expected [4, 2]");
    /* optimizer state of another list */
    mf_params small;
    cs_stage(0, 2, 0, &small, NULL);
    cr_assert_eq(mf_ckpt_read(good, 0, &small, &opt, NULL, &err), -1);
    expect_msg(err.msg, "optimizer state has");
    cs_free(&small, NULL);
    cs_free(&ps, &opt);

    char *missing = tu_path_in(dir, "missing.h5");
    expect_msg(read_fails(missing), "No such file");
    free(missing);
}

Test(ckpt, write_errors_leave_no_file) {
    const char *dir = tu_tmpdir();
    mf_err err = {{0}};
    char *bad = tu_path_in(dir, "no/such/dir");
    cr_assert_eq(write_one(bad, 4, 0, NULL, &err), -1);
    expect_msg(err.msg, bad);
    free(bad);

    mf_params ps;
    mf_adamw opt;
    mf_train_meta m;
    cs_meta(&m, 4, 0);
    cs_stage(0, 1, 0, &ps, &opt);
    snprintf(ps.p[3].name, sizeof ps.p[3].name, "model/layers.0.bad");
    cr_assert_eq(mf_ckpt_write(dir, MPI_COMM_WORLD, 0, &ps, &opt, &m, 0, NULL, 0, &err), -1);
    expect_msg(err.msg, "unusable name 'model/layers.0.bad'");
    snprintf(ps.p[3].name, sizeof ps.p[3].name, "%s", ps.p[4].name);
    cr_assert_eq(mf_ckpt_write(dir, MPI_COMM_WORLD, 0, &ps, &opt, &m, 0, NULL, 0, &err), -1);
    expect_msg(err.msg, "is held by ranks 0 and 0 of replica 0");
    cs_free(&ps, &opt);

    cs_stage(0, 1, 0, &ps, &opt);
    mf_params other;
    cs_stage(0, 2, 0, &other, NULL);
    cr_assert_eq(mf_ckpt_write(dir, MPI_COMM_WORLD, 0, &other, &opt, &m, 0, NULL, 0, &err), -1);
    expect_msg(err.msg, "optimizer state has");
    cr_assert_eq(mf_ckpt_write(dir, MPI_COMM_WORLD, 1, &ps, &opt, &m, 0, NULL, 0, &err), -1);
    expect_msg(err.msg, "data-parallel replica index 1 with only 1 ranks");
    m.step = -1;
    cr_assert_eq(mf_ckpt_write(dir, MPI_COMM_WORLD, 0, &ps, &opt, &m, 0, NULL, 0, &err), -1);
    expect_msg(err.msg, "step -1 is negative");
    cr_assert_eq(mf_ckpt_write(NULL, MPI_COMM_WORLD, 0, &ps, &opt, &m, 0, NULL, 0, &err), -1);
    expect_msg(err.msg, "no directory");
    cs_free(&other, NULL);
    cs_free(&ps, &opt);
    char got[4096];
    cr_assert_eq(mf_ckpt_find_latest(dir, got, sizeof got, &err), 1, "a failed write left a checkpoint: %s", got);

    /* the same step twice: the second replaces the first */
    char p[4096];
    write_ok(dir, 4, 0, p);
    write_ok(dir, 4, 0, p);
    read_stage_ok(p, 0, 1, 0);
}
