/* macro_influence.h - FuseGPT Macro Influence of every surviving block, pipelined.
 *
 * MI_i = 1 - mean over tokens of cos(h, h_without_i), h the final hidden state
 * (before the final norm) of the current model on the calibration windows,
 * h_without_i the same with block i skipped as well. Every variant starts from
 * the cached input of block i (blocks before i are not recomputed). Sums run
 * in window order on the last rank: the result does not depend on the number
 * of ranks. The one implementation: `score` (whose streaming pass also scores
 * widths and perplexity) and `fuse` both accumulate through mf_mi_window. */
#ifndef MF_MACRO_INFLUENCE_H
#define MF_MACRO_INFLUENCE_H

#include <signal.h>
#include <stdint.h>
#include "stage.h"
#include "train/run.h"

/* Running sums of one MI pass (meaningful on the last rank). */
typedef struct mf_mi_acc {
    int L;
    double *cos_sum;   /* [L] sum over tokens of cos(h, h_without_i) */
    long tokens;
} mf_mi_acc;

void mf_mi_acc_init(mf_mi_acc *a, int L);
void mf_mi_acc_reset(mf_mi_acc *a);
void mf_mi_acc_free(mf_mi_acc *a);

/* Observer of each variant of mf_mi_window (the last rank, after the variant
 * ran: st->st->x its final hidden state, st->st->logits its logits when head). */
typedef void (*mf_mi_variant_fn)(void *ctx, int block, mf_stage *st);

/* One window's drop-one variants after its full forward (which filled cache,
 * the input of every owned layer, and on the last rank ref [T][D], the final
 * hidden state). For every block i not in skip: the model without skip and i,
 * from cache; the last rank adds cos(ref, h_without_i) to acc (acc may be
 * NULL: no MI this window) and calls on_variant (may be NULL). head: the
 * variants also compute logits. Collective over the stage's ranks. */
void mf_mi_window(mf_stage *st, float *const *cache, const unsigned char *skip, int T, int head, const float *ref,
                  mf_mi_acc *acc, mf_mi_variant_fn on_variant, void *ctx);

/* mi[L] from the sums (NaN for skipped blocks); on the last rank. */
void mf_mi_finish(const mf_mi_acc *a, const unsigned char *skip, double *mi);

/* A whole pass on its own (fuse): ids is the token stream; window w's input
 * is bos + ids[w*T .. w*T+T-2] (as score). skip[n_layers]: blocks already
 * removed. mi[n_layers] on every rank (NaN for skipped blocks). stop (may be
 * NULL): polled after each window, the ranks agree; when set anywhere, the
 * pass stops and returns 1 (mi unset). wd (may be NULL): kicked every window. */
int mf_macro_influence(mf_stage *st, const int32_t *ids, int nwin, int T, const unsigned char *skip, double *mi,
                       const volatile sig_atomic_t *stop, mf_watchdog *wd);

/* The surviving block with the smallest MI (lowest index on ties), -1 if none. */
int mf_mi_argmin(const double *mi, const unsigned char *skip, int n);

#endif
