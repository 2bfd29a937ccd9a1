/* fuzz_rankings.c - a rankings file (HDF5): the own superblock check, then
 * libhdf5 and the reader's attribute, dataset, shape, storage and order checks. */
#include <hdf5.h>

#include "fuzz_common.h"
#include "io/rankings.h"

FZ_H5_MUTATOR

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fz_path("r.h5");
    fz_write(p, data, size);
    mf_rankings r;
    mf_err err;
    if (mf_rankings_read(p, &r, &err) == 0) mf_rankings_free(&r);
    return 0;
}
