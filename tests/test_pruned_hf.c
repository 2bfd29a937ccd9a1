/* test_pruned_hf.c - a pruned SmolLM2 written by minifuse loads in Hugging Face
 * transformers with the same logits (golden from tests/gen_pruned_smollm2_golden.sh:
 * the committed rankings.h5 fixes which units are kept, so the pruned weights are
 * exact slices of the dequantized GGUF on any machine). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define G "tests/golden/pruned_smollm2"

Test(pruned_hf, smollm2_pruned_matches_transformers, .timeout = 300) {
    const char *dir = tu_tmpdir();
    size_t len;
    char *args = tu_read(G "/prune_args.txt", &len), *ids = tu_read(G "/ids.txt", &len), *sha = tu_read(G "/weights.sha256", &len);
    cr_assert(args && ids && sha);
    args[strcspn(args, "\n")] = 0;
    ids[strcspn(ids, "\n")] = 0;
    for (char *c = ids; *c; c++) if (*c == ' ') *c = ',';
    char cmd[16384], out[4300], lf[4400];
    snprintf(out, sizeof out, "%s/pruned", dir);
    snprintf(cmd, sizeof cmd, "%s prune --model %s --rankings " G "/rankings.h5 --out %s %s", tu_mpirun(2), tu_smollm2(), out, args);
    char *err;
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "prune failed: %s", err);
    free(err);
    /* 2 ranks write 2 shards; the golden hash is of the single-file layout: compare logits, and
     * the weights through a 1-rank rewrite */
    snprintf(cmd, sizeof cmd, "%s prune --model %s --rankings " G "/rankings.h5 --out %s/one %s", tu_mpirun(1), tu_smollm2(), dir, args);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "prune failed: %s", err);
    free(err);
    char *o;
    snprintf(cmd, sizeof cmd, "cd %s/one && sha256sum model.safetensors", dir);
    cr_assert_eq(tu_run(cmd, &o, NULL), 0);
    cr_expect_str_eq(o, sha, "pruned weights differ from the ones transformers was run on");
    free(o);
    snprintf(lf, sizeof lf, "%s/l.f32", dir);
    snprintf(cmd, sizeof cmd, "%s logits --model %s --ids %s --out %s", tu_mpirun(2), out, ids, lf);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "logits failed: %s", err);
    free(err);
    size_t n1, n2;
    float *got = tu_read(lf, &n1), *want = tu_read(G "/logits_transformers.f32", &n2);
    cr_assert(got && want && n1 == n2, "logit file sizes %zu vs %zu", n1, n2);
    double maxd = 0;
    for (size_t i = 0; i < n1 / 4; i++) maxd = fmax(maxd, fabs((double)got[i] - want[i]));
    cr_expect(maxd < 2e-3, "max |minifuse - transformers| = %g on the pruned SmolLM2", maxd);
    free(got); free(want); free(args); free(ids); free(sha);
}
