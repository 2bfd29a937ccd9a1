/* seed_h5.c - seed corpora for the HDF5 fuzz targets, written by minifuse's
 * own writers (so they are exactly what minifuse writes):
 *   seed_h5 DIR  ->  DIR/rankings/{all,subset}.h5, DIR/checkpoint/ckpt.h5,
 *                    DIR/tcache/cache.h5
 * Run as an MPI singleton (no mpirun needed). */
#include <mpi.h>
#include <stdio.h>
#include <sys/stat.h>

#include "../ckpt_synth.h"
#include "../rankings_synth.h"
#include "train/teacher_cache.h"
#include "util/fsutil.h"

#define SHA_T "1111111111111111111111111111111111111111111111111111111111111111"
#define SHA_X "2222222222222222222222222222222222222222222222222222222222222222"

static void die(const mf_err *e) {
    fprintf(stderr, "seed_h5: %s\n", e->msg);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    if (argc != 2) {
        fprintf(stderr, "usage: seed_h5 DIR\n");
        return 2;
    }
    char p[4096];
    mf_err err = {{0}};
    const char *sub[] = {"rankings", "checkpoint", "tcache"};
    mkdir(argv[1], 0755);
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", argv[1], sub[i]);
        mkdir(p, 0755);
    }
    /* rankings: every metric, and a subset */
    for (int all = 0; all < 2; all++) {
        mf_layer_scores *s = rs_layers(0, RS_LAYERS, all ? MF_RK_WIDTH : MF_RK_MLP_NEURONS);
        mf_rankings_meta m;
        rs_meta(&m, "cd");
        mf_depth_scores d;
        double bi[RS_LAYERS], ppl[RS_LAYERS], mi[RS_MI_ITER * RS_LAYERS];
        rs_depth(&d, bi, ppl, mi);
        if (!all) d = (mf_depth_scores){.bi = bi};
        snprintf(p, sizeof p, "%s/rankings/%s.h5", argv[1], all ? "all" : "subset");
        if (mf_rankings_write(p, MPI_COMM_WORLD, &m, 0, RS_LAYERS, s, &d, &err)) die(&err);
        rs_free_layers(s, RS_LAYERS);
    }
    /* a checkpoint of the synthetic model (its directory gets minifuse's lock file: removed) */
    mf_params ps;
    mf_adamw opt;
    cs_stage(0, 1, 0, &ps, &opt);
    mf_train_meta meta;
    cs_meta(&meta, 12, 0);
    /* with float64 running sums, as a scoring pass writes them (fuzz_checkpoint reads them back) */
    double a[7], b[3];
    for (int i = 0; i < 7; i++) a[i] = 0.5 * i - 1.25;
    for (int i = 0; i < 3; i++) b[i] = 1e300 / (i + 1);
    const mf_ckpt_f64 f64[] = {{"acc.a", 7, a}, {"acc.b", 3, b}};
    meta.f64 = f64;
    meta.n_f64 = 2;
    char ck[4096];
    snprintf(p, sizeof p, "%s/checkpoint", argv[1]);
    if (mf_ckpt_write(p, MPI_COMM_WORLD, 0, &ps, &opt, &meta, 0, ck, sizeof ck, &err)) die(&err);
    char lock[4200];
    snprintf(lock, sizeof lock, "%s/%s", p, MF_CKPT_LOCK);
    mf_lock_release(lock);
    remove(lock);
    /* a teacher cache: K 4, ctx 6, 5 windows, vocabulary 64 */
    enum { K = 4, T = 6, W = 5, V = 64 };
    mf_tcache c;
    snprintf(p, sizeof p, "%s/tcache/cache.h5", argv[1]);
    if (mf_tcache_create_v(p, MPI_COMM_WORLD, K, T, W, V, "teacher.gguf", SHA_T, "text.txt", SHA_X, &c, &err)) die(&err);
    for (int64_t w = 0; w < W; w++) {
        int32_t ids[T * K];
        float v[T * K];
        for (int i = 0; i < T * K; i++) ids[i] = (int32_t)((w * 13 + i * 5) % V), v[i] = (float)(T * K - i) / 3.0f;
        if (mf_tcache_put(&c, w, ids, v, &err)) die(&err);
    }
    if (mf_tcache_finish(p, MPI_COMM_WORLD, &c, 0, &err)) die(&err);
    MPI_Finalize();
    return 0;
}
