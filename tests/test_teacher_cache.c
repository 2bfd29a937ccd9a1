/* test_teacher_cache.c - the teacher's top-K logits cache: top-K selection,
 * the sparse KL equals the full KL when K = V (loss and gradient), and a
 * distillation that builds the cache then reuses it gives identical results,
 * for one replica and for two. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "backend/cpu_backward.h"
#include "train/teacher_cache.h"

Test(tcache, topk_selection) {
    float z[10] = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 7.0f, 0.0f, 2.5f, -4.0f, 1.0f};
    int32_t ids[4];
    float v[4];
    mf_topk(z, 10, 4, ids, v);
    int want[4] = {5, 1, 3, 7}; /* ties: lower id first */
    for (int k = 0; k < 4; k++) cr_expect_eq(ids[k], want[k], "rank %d: id %d, want %d", k, ids[k], want[k]);
    cr_expect(v[0] == 7.0f && v[3] == 2.5f);
}

Test(tcache, sparse_kl_equals_full_kl_when_k_is_v) {
    int T = 3, V = 17;
    float *zs = malloc(T * V * sizeof *zs), *zt = malloc(T * V * sizeof *zt), *vals = malloc(T * V * sizeof *vals);
    float *d1 = malloc(T * V * sizeof *d1), *d2 = malloc(T * V * sizeof *d2);
    int32_t *ids = malloc(T * V * sizeof *ids);
    unsigned s = 7;
    for (int i = 0; i < T * V; i++) {
        s = s * 1103515245u + 12345u; zs[i] = (float)((s >> 8) % 1000) / 250.0f - 2.0f;
        s = s * 1103515245u + 12345u; zt[i] = (float)((s >> 8) % 1000) / 250.0f - 2.0f;
    }
    for (int t = 0; t < T; t++) mf_topk(zt + t * V, V, V, ids + t * V, vals + t * V);
    double a = mf_loss_kl(zs, zt, T, V, 2.0f, 0, d1), b = mf_loss_kl_topk(zs, ids, vals, T, V, V, 2.0f, 0, d2);
    cr_expect(fabs(a - b) < 1e-6 * fabs(a), "KL full %.9g vs top-V %.9g", a, b);
    double md = 0;
    for (int i = 0; i < T * V; i++) md = fmax(md, fabs(d1[i] - d2[i]));
    cr_expect(md < 1e-6, "gradients differ by %g", md);
    free(zs); free(zt); free(vals); free(d1); free(d2); free(ids);
}

static char *last_line(const char *path) {
    size_t len;
    char *s = tu_read(path, &len);
    cr_assert(s && len > 0, "no %s", path);
    char *p = s + len - 1;
    while (p > s && p[-1] != '\n') p--;
    char *r = strdup(p);
    free(s);
    char *q = strstr(r, "\"tokens_per_s\""); /* timing differs between runs */
    if (q) *q = 0;
    return r;
}

Test(tcache, build_then_reuse_identical, .timeout = 300) {
    const char *dir = tu_tmpdir();
    char cmd[16384], *err, text[4300], student[4300];
    snprintf(text, sizeof text, "%s/t.txt", dir);
    snprintf(cmd, sizeof cmd, "head -c 200000 %s > %s", tu_shared("llm_assets/text/tinystories_train_first2MiB.txt"), text);
    cr_assert_eq(tu_run(cmd, NULL, NULL), 0);
    snprintf(student, sizeof student, "%s/student", dir);
    snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s --drop-layers 1 --metric random --seed 3", tu_mpirun(1),
             tu_shared("llm_assets/models/stories260K/stories260K.bin"), student);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "%s", err);
    free(err);
    const char *runs[3][2] = {{"a", "2 --dp 1"}, {"b", "2 --dp 1"}, {"c", "2 --dp 2"}};
    char *lines[3], *inode[2] = {NULL, NULL};
    for (int r = 0; r < 3; r++) {
        int np = runs[r][1][0] - '0';
        snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s --text %s --out %s/%s --tokens 8192 --batch 4 --lr 1e-3 "
                 "--teacher-topk 16 --teacher-cache %s/cache%s.h5 --dp %s", tu_mpirun(np),
                 tu_shared("llm_assets/models/stories260K/stories260K.bin"), student, text, dir, runs[r][0], dir,
                 r == 2 ? "2" : "", runs[r][1] + 7);
        cr_assert_eq(tu_run(cmd, NULL, &err), 0, "%s\n%s", cmd, err);
        free(err);
        if (r < 2) { /* a rebuild would write a new file (new inode) */
            char st[4600];
            snprintf(st, sizeof st, "stat -c %%i %s/cache.h5", dir);
            cr_assert_eq(tu_run(st, &inode[r], NULL), 0, "no cache file after run %d", r);
        }
        char log[4400];
        snprintf(log, sizeof log, "%s/%s.train.jsonl", dir, runs[r][0]);
        lines[r] = last_line(log);
    }
    cr_expect_str_eq(inode[0], inode[1], "the second run rebuilt the cache instead of reusing it");
    cr_expect_str_eq(lines[0], lines[1], "reusing the cache changed the run");
    free(inode[0]); free(inode[1]);
    char cmp[8800];
    snprintf(cmp, sizeof cmp, "cmp %s/cache.h5 %s/cache2.h5 >/dev/null || python3 -c \"import h5py,numpy as n,sys; "
             "a,b=h5py.File('%s/cache.h5'),h5py.File('%s/cache2.h5'); sys.exit(0 if all(n.array_equal(a[k][()],b[k][()]) for k in ('ids','logits')) else 1)\"",
             dir, dir, dir, dir);
    cr_expect_eq(tu_run(cmp, NULL, NULL), 0, "the cache written by 2 replicas differs from the one written by 1");
    for (int r = 0; r < 3; r++) free(lines[r]);
}
