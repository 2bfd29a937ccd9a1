/* macro_influence.h - FuseGPT Macro Influence of every surviving block, pipelined.
 *
 * MI_i = 1 - mean over tokens of cos(h, h_without_i), h the final hidden state
 * (before the final norm) of the current model on the calibration windows,
 * h_without_i the same with block i skipped as well. Every variant starts from
 * the cached input of block i (blocks before i are not recomputed). Sums run
 * in window order on the last rank: the result does not depend on the number
 * of ranks. Same computation as one `score --metrics mi` pass. */
#ifndef MF_MACRO_INFLUENCE_H
#define MF_MACRO_INFLUENCE_H

#include <stdint.h>
#include "stage.h"

/* ids: the token stream; window w's input is bos + ids[w*T .. w*T+T-2] (as
 * score). skip[n_layers]: blocks already removed. mi[n_layers] on every rank
 * (NaN for skipped blocks). Collective over the stage's ranks. stop (may be
 * NULL): checked on every rank after each window (the ranks agree by
 * MPI_Allreduce); when set anywhere, the pass stops and returns 1 (mi unset). */
int mf_macro_influence(mf_stage *st, const int32_t *ids, int nwin, int T, const unsigned char *skip, double *mi,
                       const volatile int *stop);

/* The surviving block with the smallest MI (lowest index on ties), -1 if none. */
int mf_mi_argmin(const double *mi, const unsigned char *skip, int n);

#endif
