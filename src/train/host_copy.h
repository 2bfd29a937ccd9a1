/* host_copy.h - host copies of a parameter list and its AdamW moments.
 *
 * Checkpoints (HDF5) and the written model read and write tensors in host
 * memory. When training runs on a device backend (is_host == 0) the weights
 * and moments live in its memory: these functions give lists of the same
 * entries (names, shapes, order, AdamW step) whose data and moments are host
 * buffers, downloaded from the originals, and upload them back after a read.
 * On a host backend (or a list without one) the copy aliases the originals:
 * nothing is copied or allocated. */
#ifndef MF_HOST_COPY_H
#define MF_HOST_COPY_H

#include "train/optim.h"
#include "train/params.h"

/* *hps (and *hopt when opt and hopt are not NULL) = host lists of ps's (opt's)
 * entries with their current values; gradients NULL. */
void mf_host_copy_get(const mf_params *ps, const mf_adamw *opt, mf_params *hps, mf_adamw *hopt);
/* Upload the copies' values into ps (opt) (nothing to move when aliased), and
 * set opt's AdamW step to the copy's (always: it is a value of the struct). */
void mf_host_copy_put(const mf_params *hps, const mf_adamw *hopt, mf_params *ps, mf_adamw *opt);
/* Release what mf_host_copy_get allocated (nothing when aliased). */
void mf_host_copy_free(const mf_params *ps, mf_params *hps, mf_adamw *hopt);

#endif
