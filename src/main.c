/* main.c - command dispatch: bin/minifuse <command> [options], under mpirun/srun. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "backend/cpu_blas.h"
#include "cli/args.h"
#include "cli/common.h"
#include "util/err.h"
#include "version.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command COMMANDS[] = {
    {"eval", mf_cmd_eval, "perplexity on a text file (and KL divergence from a reference model)"},
    {"logits", mf_cmd_logits, "raw float32 logits of a token sequence"},
    {"generate", mf_cmd_generate, "sample text from a prompt"},
    {"score", mf_cmd_score, "importance of widths and blocks on calibration text -> rankings.h5"},
    {"prune", mf_cmd_prune, "remove blocks / shrink widths by a rankings file -> Hugging Face directory"},
    {"fuse", mf_cmd_fuse, "FuseGPT: remove blocks, folding each into its neighbours (restartable)"},
    {"distill", mf_cmd_distill, "knowledge distillation of a student from its teacher (restartable)"},
    {"plan", mf_cmd_plan, "memory, step time and checkpoint size of a job on a cluster, before submitting it"},
};
#define N_COMMANDS (int)(sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(void) {
    printf("minifuse %s - compress Llama-family models on HPC clusters\n\n"
           "usage: [mpirun -np P] bin/minifuse <command> [options]\n\ncommands:\n", MF_VERSION);
    for (int i = 0; i < N_COMMANDS; i++) printf("  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].help);
    printf("\n'minifuse <command> --help' describes a command's options.\n\n");
    mf_args_env_help();
}

int main(int argc, char **argv) {
    mf_blas_ensure_core(argv); /* may exec this program again, before MPI starts */
    int provided, rank;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    mf_blas_check_ranks(MPI_COMM_WORLD); /* every rank's core in one line (even quiet); a warning when they differ */
    mf_blas_log_core(rank);
    int rc = 0;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        if (rank == 0) usage();
        rc = argc < 2 ? 2 : 0;
    } else if (strcmp(argv[1], "--version") == 0) {
        printf("minifuse %s\n", MF_VERSION);
    } else {
        const command *c = NULL;
        for (int i = 0; i < N_COMMANDS; i++)
            if (strcmp(argv[1], COMMANDS[i].name) == 0) c = &COMMANDS[i];
        if (!c) mf_fatal("unknown command '%s' (see minifuse --help)", argv[1]);
        rc = c->run(argc - 1, argv + 1);
    }
    MPI_Finalize();
    return rc;
}
