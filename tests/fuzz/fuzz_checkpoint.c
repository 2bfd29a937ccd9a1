/* fuzz_checkpoint.c - a training checkpoint (HDF5) read into the synthetic
 * 5-layer model of tests/ckpt_synth.h (the seeds are its checkpoints), with
 * optimizer state and metadata; its float64 arrays (a scoring pass's running
 * sums: the seed has "acc.a" [7] and "acc.b" [3]); and the directory scan that
 * picks the newest. */
#include <hdf5.h>

#include "fuzz_common.h"
#include "../ckpt_synth.h"

static mf_params ps;
static mf_adamw opt;

FZ_H5_MUTATOR

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ps.n) cs_stage(0, 1, 0, &ps, &opt);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/ckpt", fz_tmpdir());
    mkdir(dir, 0700);
    char p[600];
    snprintf(p, sizeof p, "%s/ckpt-00000012.h5", dir);
    fz_write(p, data, size);
    mf_train_meta m;
    mf_err err;
    if (mf_ckpt_read(p, 0, &ps, &opt, &m, &err) == 0) mf_train_meta_free(&m);
    double a[7], b[3];
    const mf_ckpt_f64 f64[] = {{"acc.a", 7, a}, {"acc.b", 3, b}};
    mf_ckpt_read_f64(p, f64, 2, &err);
    char got[700];
    mf_ckpt_find_latest(dir, got, sizeof got, &err);
    return 0;
}
