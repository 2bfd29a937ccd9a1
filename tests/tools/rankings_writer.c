/* rankings_writer.c - write a synthetic rankings file from P MPI ranks, for
 * tests/test_rankings.c (which cannot run under mpirun itself).
 *   mpirun -np P build/tests/tools/rankings_writer OUT.h5 [--overlap] [--model-sha HEX]
 * Layers are split over the ranks like the pipeline (first ranks get the
 * extra layer). --overlap gives rank 1 one layer of rank 0 too (must fail).
 * Prints "ok" from rank 0, or the error from every rank; exit 0 / 1. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "../rankings_synth.h"

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *out = NULL, *sha = "";
    int overlap = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--overlap") == 0) overlap = 1;
        else if (strcmp(argv[i], "--model-sha") == 0 && i + 1 < argc) sha = argv[++i];
        else out = argv[i];
    }
    if (!out) {
        if (rank == 0) fprintf(stderr, "usage: rankings_writer OUT.h5 [--overlap] [--model-sha HEX]\n");
        MPI_Finalize();
        return 2;
    }
    int base = RS_LAYERS / size, extra = RS_LAYERS % size;
    int l0 = rank * base + (rank < extra ? rank : extra);
    int l1 = l0 + base + (rank < extra);
    if (overlap && rank == 1 && l0 > 0) l0--;
    mf_layer_scores *mine = rs_layers(l0, l1, 0xf);
    mf_rankings_meta meta;
    rs_meta(&meta, sha);
    mf_depth_scores depth;
    double bi[RS_LAYERS], ppl[RS_LAYERS], mi[RS_MI_ITER * RS_LAYERS];
    rs_depth(&depth, bi, ppl, mi);
    mf_err err = {{0}};
    int rc = mf_rankings_write(out, MPI_COMM_WORLD, &meta, l0, l1, mine, &depth, &err);
    if (rc) fprintf(stderr, "rank %d: %s\n", rank, err.msg);
    else if (rank == 0) printf("ok\n");
    rs_free_layers(mine, l1 - l0);
    MPI_Finalize();
    return rc ? 1 : 0;
}
