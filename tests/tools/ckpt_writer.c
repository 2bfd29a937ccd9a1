/* ckpt_writer.c - write, read or reduce over the synthetic model of
 * tests/ckpt_synth.h from several MPI ranks, for tests/test_checkpoint.c
 * (which cannot run under mpirun itself).
 *
 *   mpirun -np N ckpt_writer write DIR STEP [--dp R] [--keep K] [--replica-salt] [--dup]
 *   mpirun -np N ckpt_writer read FILE [--dp R]
 *   mpirun -np N ckpt_writer norm
 *
 * N ranks = R data-parallel replicas x P = N/R pipeline stages; rank
 * q*P + s is stage s of replica q. write: every rank holds its stage's
 * tensors (with --replica-salt, replica q's values use salt q, so the file
 * shows whose data was written; --dup: rank 1 also holds rank 0's first
 * tensor, which must fail) and replica q's RNG seeded 1000+q. read: every rank
 * reads its stage in this layout and checks it bit-exactly (salt 0) and its
 * replica's RNG. norm: prints every rank's mf_grad_global_norm in %a.
 * Prints "ok ..." from rank 0, or "rank r: error" from every rank; exit 0/1. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ckpt_synth.h"

static int do_write(int rank, int P, int replica, const char *dir, long long step, int keep, int salt, int dup,
                    mf_err *err) {
    mf_params ps;
    mf_adamw opt;
    cs_stage(rank % P, P, salt, &ps, &opt);
    if (dup && rank == 1) { /* also claim rank 0's embedding */
        mf_params extra;
        cs_stage(0, P, salt, &extra, NULL);
        cs_add(&ps, extra.p[0].name, extra.p[0].shape[0], extra.p[0].shape[1], salt);
        cs_free(&extra, NULL);
        mf_adamw_free(&opt);
        mf_adamw_init(&opt, &ps, NULL);
    }
    mf_train_meta m;
    cs_meta(&m, step, replica);
    char path[4096];
    int rc = mf_ckpt_write(dir, MPI_COMM_WORLD, replica, &ps, &opt, &m, keep, path, sizeof path, err);
    if (rc == 0 && rank == 0) printf("ok %s\n", path);
    cs_free(&ps, &opt);
    return rc;
}

static int do_read(int rank, int P, int replica, const char *file, mf_err *err) {
    mf_params ps;
    mf_adamw opt;
    cs_stage(rank % P, P, 0, &ps, &opt);
    cs_zero(&ps, &opt);
    mf_train_meta m;
    int rc = mf_ckpt_read(file, replica, &ps, &opt, &m, err);
    char why[512];
    if (rc == 0 && cs_check(&ps, &opt, 0, why, sizeof why)) rc = mf_err_set(err, "%s: %s", file, why);
    mf_rng want;
    mf_rng_seed(&want, 1000 + (uint64_t)replica);
    if (rc == 0 && (!m.have_rng || memcmp(&m.rng, &want, sizeof want) != 0))
        rc = mf_err_set(err, "%s: replica %d RNG state differs", file, replica);
    if (rc == 0 && rank == 0) printf("ok read %d tensors on rank 0, step %lld\n", ps.n, (long long)m.step);
    if (rc == 0) mf_train_meta_free(&m);
    cs_free(&ps, &opt);
    return rc;
}

static int do_norm(int rank, int P) {
    mf_params ps;
    cs_stage(rank, P, 0, &ps, NULL);
    double n = mf_grad_global_norm(&ps, MPI_COMM_WORLD);
    /* print in rank order */
    for (int r = 0; r < P; r++) {
        if (r == rank) printf("rank %d norm %a sq %a\n", rank, n, mf_params_grad_sq(&ps)), fflush(stdout);
        MPI_Barrier(MPI_COMM_WORLD);
    }
    cs_free(&ps, NULL);
    return 0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0, dp = 1, keep = 0, rsalt = 0, dup = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dp") == 0 && i + 1 < argc) dp = atoi(argv[++i]);
        else if (strcmp(argv[i], "--keep") == 0 && i + 1 < argc) keep = atoi(argv[++i]);
        else if (strcmp(argv[i], "--replica-salt") == 0) rsalt = 1;
        else if (strcmp(argv[i], "--dup") == 0) dup = 1;
        else if (npos < 3) pos[npos++] = argv[i];
    }
    const char *mode = pos[0] ? pos[0] : "";
    int ok_args = dp >= 1 && size % dp == 0 &&
                  ((strcmp(mode, "write") == 0 && npos == 3) || (strcmp(mode, "read") == 0 && npos == 2) ||
                   (strcmp(mode, "norm") == 0 && npos == 1));
    if (!ok_args) {
        if (rank == 0) fprintf(stderr, "usage: ckpt_writer write DIR STEP [--dp R] [--keep K] [--replica-salt] [--dup]"
                                       " | read FILE [--dp R] | norm  (ranks divisible by R)\n");
        MPI_Finalize();
        return 2;
    }
    int P = size / dp, replica = rank / P;
    mf_err err = {{0}};
    int rc;
    if (mode[0] == 'w') rc = do_write(rank, P, replica, pos[1], atoll(pos[2]), keep, rsalt ? replica : 0, dup, &err);
    else if (mode[0] == 'r') rc = do_read(rank, P, replica, pos[1], &err);
    else rc = do_norm(rank, P);
    if (rc) fprintf(stderr, "rank %d: %s\n", rank, err.msg);
    int any = rc != 0, worst;
    MPI_Allreduce(&any, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return worst ? 1 : 0;
}
