/* testutil.h - paths to shared assets and helpers for running the binary. */
#ifndef MF_TESTUTIL_H
#define MF_TESTUTIL_H

#include <stddef.h>

/* $MINIFUSE_SHARED/<rel> (default ../shared), $MINIFUSE_CACHE/<rel> (default ~/.cache/minifuse). */
const char *tu_shared(const char *rel);
const char *tu_cache(const char *rel);
const char *tu_smollm2(void);
/* A fresh temporary directory for this test. */
const char *tu_tmpdir(void);

/* Run a shell command; capture stdout (and stderr when err_out) into a
 * malloc'ed string; returns the exit status. */
int tu_run(const char *cmd, char **out, char **err_out);
/* The program the tests run: $MINIFUSE_BIN when set (tests/run_all.sh sets
 * bin/minifuse-asan to run the command-line cases under ASan/UBSan), else
 * bin/minifuse. */
const char *tu_bin(void);
/* "mpirun ... -np P <tu_bin()>" prefix (1 OpenMP thread per rank). */
const char *tu_mpirun(int P);

/* Logits [n][V] (malloc'ed) of ids through the whole model at `path`, in one process. */
#include <stdint.h>
float *tu_forward_all(const char *path, const int32_t *ids, int n, int *V);

/* Criterion .init for suites that call MPI in the test process: Criterion forks
 * a process per test; each initializes MPI (singleton) once, never finalizes. */
void tu_mpi_init(void);
/* "dir/name", malloc'ed. */
char *tu_path_in(const char *dir, const char *name);
int tu_exists(const char *path);

/* Interrupt a run: start `cmd` (a tu_mpirun or bin/minifuse command) in the background,
 * wait until `trigger` exists and is not empty (a checkpoint, a log), check that `out` (the run's
 * output) does not exist yet, then send `sig` (9 or 15) to its processes whose command
 * line contains `pattern` (minifuse and mpirun only) and wait. Fails the test when the
 * run ended before the trigger appeared or had already written `out` when the signal was
 * sent: the signal must land mid-run. Returns the exit status of the shell (for SIGTERM,
 * the program's). */
int tu_interrupt(const char *cmd, const char *trigger, const char *out, const char *pattern, int sig, char **err_out);
/* The step of the newest complete checkpoint in dir (ckpt-<step>.h5), -1 if none. */
long tu_newest_ckpt(const char *dir);
/* The "step" of the last line of a JSON-lines log, -1 if none. */
long tu_last_step(const char *jsonl);
/* 1 when dirs a and b hold the same *.safetensors files, byte for byte; else 0 with why. */
int tu_same_weights(const char *a, const char *b, char *why, size_t n);

/* Run a Python snippet on an HDF5 file: `code` sees f (h5py.File r+) and np; fails the test if it fails. */
void tu_h5py_edit(const char *path, const char *code);

/* Read a whole file (malloc'ed); NULL if missing. */
void *tu_read(const char *path, size_t *len);
/* Write bytes to a file. */
void tu_write(const char *path, const void *data, size_t len);

#endif
