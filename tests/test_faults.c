/* test_faults.c - what a flaky cluster does to a training run (issue "Hardening").
 *
 *   one rank SIGKILLed mid-run   every rank is gone within 30 s; --resume
 *                                continues from the last complete checkpoint
 *                                and ends with the bytes of an uninterrupted run
 *   one rank SIGSTOPped          the watchdog aborts the job within its deadline
 *   SIGUSR1 sent to mpirun       forwarded: checkpoint, exit 0, resume identical
 *   newest checkpoint damaged    truncated, a byte flipped, a dataset missing, a
 *   or poisoned                  NaN written into a weight: detected with a
 *                                message, the previous checkpoint is used, and
 *                                the result equals the uninterrupted run
 *   disk full, read-only dir     one clear error; the previous checkpoint is
 *                                untouched and still resumes (a small tmpfs and
 *                                a read-only bind mount in a private mount
 *                                namespace: root only, skipped visibly otherwise)
 * All on a stories260K student (4 of 5 layers) over 2 ranks. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define STORIES "llm_assets/models/stories260K_hf"
#define TINY "llm_assets/text/tinystories_train_first2MiB.txt"
#define STEPS 12    /* batch 4 x ctx 128 */
#define TOKENS (STEPS * 4 * 128)

static const char *student(const char *dir) {
    char cmd[8192], *err;
    char *out = tu_path_in(dir, "student");
    snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s --drop-list 2", tu_mpirun(1), tu_shared(STORIES), out);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "prune: %s", err);
    free(err);
    return out;
}

/* The distill command writing DIR/OUT (checkpoints in DIR/ck unless ckdir), extra options appended. */
static void distill_cmd(char *cmd, size_t cap, const char *dir, const char *out, const char *ckdir, const char *extra) {
    snprintf(cmd, cap, "%s distill --teacher %s --student %s/student --text %s --out %s/%s --tokens %d --batch 4 --ctx 128 "
             "--lr 1e-3 --checkpoint-every 2 --keep 10 --checkpoint-dir %s %s", tu_mpirun(2), tu_shared(STORIES), dir,
             tu_shared(TINY), dir, out, TOKENS, ckdir, extra);
}

static void distill_ok(const char *dir, const char *out, const char *ckdir, const char *extra, char **err_out) {
    char cmd[16384], *err;
    distill_cmd(cmd, sizeof cmd, dir, out, ckdir, extra);
    int rc = tu_run(cmd, NULL, &err);
    cr_assert_eq(rc, 0, "%s\n%s", cmd, err);
    if (err_out) *err_out = err;
    else free(err);
}

/* An uninterrupted run: DIR/ref, checkpoints every 2 steps in DIR/ref.ck. */
static void reference_with(const char *dir, const char *extra) {
    char ck[4400];
    snprintf(ck, sizeof ck, "%s/ref.ck", dir);
    distill_ok(dir, "ref", ck, extra, NULL);
}

static void reference(const char *dir) { reference_with(dir, ""); }

static void expect_same_as_ref(const char *dir, const char *out) {
    char a[4400], b[4400], why[9000];
    snprintf(a, sizeof a, "%s/ref", dir);
    snprintf(b, sizeof b, "%s/%s", dir, out);
    cr_expect(tu_same_weights(a, b, why, sizeof why), "%s differs from the uninterrupted run: %s", out, why);
}

Test(faults, sigkill_one_rank_ends_the_job_and_resume_is_identical, .timeout = 600) {
    const char *dir = tu_tmpdir();
    student(dir);
    reference_with(dir, "--tokens 16384");
    char cmd[16384], sh[40000], ck[4400], *out, *err;
    snprintf(ck, sizeof ck, "%s/k.ck", dir);
    distill_cmd(cmd, sizeof cmd, dir, "k", ck, "--tokens 16384"); /* 32 steps: the kill lands mid-run */
    /* once a checkpoint exists, SIGKILL the highest-numbered minifuse process of this run (one rank) */
    snprintf(sh, sizeof sh,
             "%s >/dev/null 2>&1 & pid=$!; while [ ! -e %s/ckpt-00000004.h5 ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done; "
             "v=$(for p in $(pgrep -f '%s/k --tokens'); do [ \"$(cat /proc/$p/comm)\" = minifuse ] && echo $p; done | sort -n | tail -1); "
             "[ -n \"$v\" ] || { echo NO-RANK; exit 1; }; t0=$(date +%%s.%%N); kill -9 $v; wait $pid; "
             "echo gone $(awk \"BEGIN{print $(date +%%s.%%N) - $t0}\") "
             "$(for p in $(pgrep -f '%s/k --tokens'); do case $(cat /proc/$p/comm 2>/dev/null) in minifuse*|mpirun) echo $p;; esac; done | wc -l)",
             cmd, ck, dir, dir);
    tu_run(sh, &out, &err);
    double secs = -1;
    int left = -1;
    cr_assert(sscanf(strstr(out, "gone") ? strstr(out, "gone") : "", "gone %lf %d", &secs, &left) == 2, "%s\n%s", out, err);
    cr_expect(secs >= 0 && secs < 30 && left == 0, "after SIGKILL of one rank the job took %.1f s to end, %d processes left", secs, left);
    long newest = tu_newest_ckpt(ck);
    char done[4400];
    snprintf(done, sizeof done, "%s/k", dir);
    cr_assert(newest >= 4 && newest < 32 && access(done, F_OK) != 0, "the kill must land mid-run (newest checkpoint %ld of 32)", newest);
    free(out); free(err);
    distill_ok(dir, "k", ck, "--tokens 16384 --resume", &err);
    cr_expect(strstr(err, "resumed from"), "%s", err);
    free(err);
    expect_same_as_ref(dir, "k");
}

Test(faults, sigstop_one_rank_watchdog_aborts, .timeout = 300) {
    const char *dir = tu_tmpdir();
    student(dir);
    char cmd[16384], sh[40000], ck[4400], *out, *err;
    snprintf(ck, sizeof ck, "%s/s.ck", dir);
    distill_cmd(cmd, sizeof cmd, dir, "s", ck, "--tokens 409600 --watchdog 10");
    snprintf(sh, sizeof sh,
             "%s & pid=$!; while [ ! -e %s/ckpt-00000002.h5 ] && kill -0 $pid 2>/dev/null; do sleep 0.05; done; "
             "v=$(for p in $(pgrep -f '%s/s --tokens'); do [ \"$(cat /proc/$p/comm)\" = minifuse ] && echo $p; done | sort -n | tail -1); "
             "t0=$(date +%%s); kill -STOP $v; wait $pid; rc=$?; kill -CONT $v 2>/dev/null; kill -9 $v 2>/dev/null; "
             "echo; echo ended $(( $(date +%%s) - t0 )) rc $rc",
             cmd, ck, dir);
    tu_run(sh, &out, &err);
    int secs = -1, rc = -1;
    const char *e = strstr(out, "ended");
    cr_assert(e && sscanf(e, "ended %d rc %d", &secs, &rc) == 2, "%s\n%s", out, err);
    cr_expect(rc != 0, "a job with a stopped rank must fail");
    cr_expect(secs <= 10 + 20, "the watchdog took %d s (deadline 10 s)", secs);
    cr_expect(strstr(err, "no progress for"), "the waiting rank must say why: %s", err);
    free(out); free(err);
}

Test(faults, sigusr1_to_mpirun_checkpoints_and_resumes_identically, .timeout = 600) {
    const char *dir = tu_tmpdir();
    student(dir);
    reference(dir);
    char cmd[16384], sh[40000], ck[4400], *out, *err;
    snprintf(ck, sizeof ck, "%s/u.ck", dir);
    distill_cmd(cmd, sizeof cmd, dir, "u", ck, "--checkpoint-every 0");
    /* the signal goes to mpirun only; Open MPI forwards SIGUSR1 to every rank */
    snprintf(sh, sizeof sh, "%s & pid=$!; while [ \"$(cat %s/u.train.jsonl 2>/dev/null | grep -c step)\" -lt 3 ] && kill -0 $pid 2>/dev/null; "
             "do sleep 0.02; done; kill -USR1 $pid; wait $pid; echo rc $?", cmd, dir);
    tu_run(sh, &out, &err);
    cr_expect(strstr(out, "rc 0"), "mpirun after SIGUSR1: %s\n%s", out, err);
    cr_expect(strstr(err, "checkpoint written at step"), "%s", err);
    long newest = tu_newest_ckpt(ck);
    cr_assert(newest >= 3 && newest < STEPS, "SIGUSR1 must stop mid-run with a checkpoint (newest %ld)", newest);
    free(out); free(err);
    distill_ok(dir, "u", ck, "--checkpoint-every 0 --resume", NULL);
    expect_same_as_ref(dir, "u");
}

/* The reference's checkpoints copied to DIR/NAME.ck, the newest one damaged by `how` (shell, $F is the file). */
static void damaged_copy(const char *dir, const char *name, const char *how) {
    char sh[8192], *err;
    snprintf(sh, sizeof sh, "rm -rf %s/%s.ck && cp -r %s/ref.ck %s/%s.ck && F=%s/%s.ck/ckpt-%08d.h5 && %s", dir, name, dir, dir,
             name, dir, name, STEPS, how);
    cr_assert_eq(tu_run(sh, NULL, &err), 0, "damaging %s: %s", how, err);
    free(err);
}

static void resume_from_damaged(const char *dir, const char *name, const char *how, const char *expect) {
    damaged_copy(dir, name, how);
    char ck[4400], *err, want[4400];
    snprintf(ck, sizeof ck, "%s/%s.ck", dir, name);
    distill_ok(dir, name, ck, "--resume", &err);
    snprintf(want, sizeof want, "ckpt-%08d.h5", STEPS - 2);
    cr_expect(strstr(err, "trying the previous checkpoint") || strstr(err, "not a complete checkpoint, skipped"),
              "%s: the damaged checkpoint must be reported:\n%s", name, err);
    cr_expect(strstr(err, expect), "%s: the message must say '%s':\n%s", name, expect, err);
    cr_expect(strstr(err, "resumed from") && strstr(err, want), "%s: must resume from %s:\n%s", name, want, err);
    free(err);
    expect_same_as_ref(dir, name);
}

Test(faults, damaged_newest_checkpoint_previous_used, .timeout = 900) {
    const char *dir = tu_tmpdir();
    student(dir);
    reference(dir);
    resume_from_damaged(dir, "trunc", "truncate -s $(( $(stat -c %s $F) / 2 )) $F", "ckpt-00000012.h5");
    /* one bit inside the stored bytes of a weight (its chunk, located with h5py) */
    resume_from_damaged(dir, "flip",
                        "python3 -c \"import h5py,sys; p=sys.argv[1]; f=h5py.File(p,'r'); d=f['params/model.layers.0.mlp.up_proj.weight']; "
                        "o=(d.id.get_chunk_info(0).byte_offset if d.chunks else d.id.get_offset())+10; f.close(); "
                        "b=bytearray(open(p,'rb').read()); b[o]^=0x10; open(p,'wb').write(b)\" $F", "ckpt-00000012.h5");
    resume_from_damaged(dir, "nodset",
                        "python3 -c \"import h5py,sys; f=h5py.File(sys.argv[1],'r+'); del f['params/model.norm.weight']\" $F",
                        "model.norm.weight");
    resume_from_damaged(dir, "nan",
                        "python3 -c \"import h5py,sys,numpy as np; f=h5py.File(sys.argv[1],'r+'); "
                        "d=f['params/model.layers.0.mlp.up_proj.weight']; a=d[()]; a.flat[7]=np.nan; d[...]=a\" $F",
                        "non-finite");
}

/* Root only: a private mount namespace for a small tmpfs or a read-only bind mount. */
static int can_mount(void) {
    char *out, *err;
    int rc = tu_run("unshare -m sh -c 'd=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && echo ok'", &out, &err);
    int ok = rc == 0 && strstr(out, "ok");
    free(out); free(err);
    return ok;
}

Test(faults, disk_full_one_error_previous_checkpoint_intact, .timeout = 600) {
    if (!can_mount()) cr_skip_test("needs root and mount namespaces (unshare -m) for a size-limited tmpfs");
    const char *dir = tu_tmpdir();
    student(dir);
    reference(dir);
    char cmd[16384], sh[40000], ck[4400], *out, *err;
    /* room for one checkpoint and a half: the second write runs out of space */
    size_t len;
    char path[4400];
    snprintf(path, sizeof path, "%s/ref.ck/ckpt-00000002.h5", dir);
    free(tu_read(path, &len));
    snprintf(ck, sizeof ck, "%s/full", dir);
    distill_cmd(cmd, sizeof cmd, dir, "f", ck, "");
    snprintf(sh, sizeof sh, "mkdir -p %s && unshare -m sh -c 'mount -t tmpfs -o size=%zuk tmpfs %s && %s; echo rc $?; "
             "cp -r %s %s/kept'", ck, len * 3 / 2 / 1024 + 8, ck, cmd, ck, dir);
    tu_run(sh, &out, &err);
    cr_expect(!strstr(out, "rc 0"), "a full disk must fail the run: %s", out);
    cr_expect(strstr(err, "No space left") || strstr(err, "space"), "the error must say the disk is full:\n%s", err);
    cr_expect(!strstr(err, "Segmentation") && !strstr(err, "AddressSanitizer"), "%s", err);
    free(out); free(err);
    /* the first checkpoint survived, complete: a resume from a copy of it ends like the reference */
    char kept[4400];
    snprintf(kept, sizeof kept, "%s/kept", dir);
    cr_assert_eq(tu_newest_ckpt(kept), 2, "the checkpoint written before the disk filled must be intact");
    distill_ok(dir, "f", kept, "--resume", NULL);
    expect_same_as_ref(dir, "f");
}

Test(faults, readonly_checkpoint_dir_one_error_previous_intact, .timeout = 600) {
    if (!can_mount()) cr_skip_test("needs root and mount namespaces (unshare -m) for a read-only bind mount");
    const char *dir = tu_tmpdir();
    student(dir);
    reference(dir);
    char cmd[16384], sh[40000], ck[4400], *out, *err, sum0[256] = "", sum1[256] = "";
    snprintf(ck, sizeof ck, "%s/ro.ck", dir);
    char prep[16384];
    snprintf(prep, sizeof prep, "rm -rf %s && mkdir -p %s && cp %s/ref.ck/ckpt-00000004.h5 %s/ && sha256sum %s/ckpt-00000004.h5", ck, ck,
             dir, ck, ck);
    cr_assert_eq(tu_run(prep, &out, &err), 0, "%s", err);
    snprintf(sum0, sizeof sum0, "%.64s", out);
    free(out); free(err);
    distill_cmd(cmd, sizeof cmd, dir, "r", ck, "--resume");
    snprintf(sh, sizeof sh, "unshare -m sh -c 'mount --bind %s %s && mount -o remount,ro,bind %s && %s; echo rc $?'", ck, ck, ck, cmd);
    tu_run(sh, &out, &err);
    cr_expect(!strstr(out, "rc 0"), "writing into a read-only checkpoint directory must fail: %s", out);
    cr_expect(strstr(err, "Read-only") || strstr(err, "read-only") || strstr(err, "cannot"), "one clear error:\n%s", err);
    cr_expect(!strstr(err, "Segmentation"), "%s", err);
    free(out); free(err);
    snprintf(prep, sizeof prep, "sha256sum %s/ckpt-00000004.h5", ck);
    cr_assert_eq(tu_run(prep, &out, &err), 0, "%s", err);
    snprintf(sum1, sizeof sum1, "%.64s", out);
    free(out); free(err);
    cr_expect_str_eq(sum1, sum0, "the previous checkpoint must be untouched");
}

/* The same on the real 135M model (a short run): SmolLM2 without 8 blocks
 * distilled from SmolLM2, all processes SIGKILLed mid-run after a checkpoint,
 * --resume at the same layout ends with the bytes of an uninterrupted run. */
Test(faults, smollm2_kill_and_resume_identical, .timeout = 900) {
    const char *dir = tu_tmpdir();
    char cmd[16384], sh[40000], *err, *out;
    snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s/student --drop-list 4,5,3,12,17,16,18,13", tu_mpirun(1), tu_smollm2(),
             dir);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "prune: %s", err);
    free(err);
    const char *base = "distill --teacher %s --student %s/student --text %s --out %s/%s --tokens 128 --batch 2 --ctx 32 "
                       "--lr 1e-4 --keep 3 %s";
    char fmt[1024];
    snprintf(fmt, sizeof fmt, "%%s %s", base);
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(2), tu_smollm2(), dir, tu_shared(TINY), dir, "ref", "--checkpoint-every 0");
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "reference: %s", err);
    free(err);
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(2), tu_smollm2(), dir, tu_shared(TINY), dir, "k", "--checkpoint-every 1");
    snprintf(sh, sizeof sh, "%s >/dev/null 2>&1 & pid=$!; while [ ! -e %s/k.ckpt/ckpt-00000001.h5 ] && kill -0 $pid 2>/dev/null; "
             "do sleep 0.05; done; for p in $(pgrep -f '%s/k --tokens'); do case $(cat /proc/$p/comm 2>/dev/null) in "
             "minifuse*|mpirun) kill -9 $p;; esac; done; wait $pid; ls %s/k 2>/dev/null | wc -l", cmd, dir, dir, dir);
    tu_run(sh, &out, &err);
    free(err);
    char ck[4400];
    snprintf(ck, sizeof ck, "%s/k.ckpt", dir);
    long newest = tu_newest_ckpt(ck);
    cr_assert(newest == 1 && atoi(out) == 0, "the kill must land mid-run (newest checkpoint %ld of 2)", newest);
    free(out);
    snprintf(cmd, sizeof cmd, fmt, tu_mpirun(2), tu_smollm2(), dir, tu_shared(TINY), dir, "k", "--checkpoint-every 0 --resume");
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "resume: %s", err);
    cr_expect(strstr(err, "resumed from"), "%s", err);
    free(err);
    expect_same_as_ref(dir, "k");
}
