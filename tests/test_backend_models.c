/* test_backend_models.c - whole models through every host backend: the CPU
 * backend against the reference backend (plain loops, double accumulation) on
 * stories260K over 2 pipeline ranks: logits, perplexity, and a distillation
 * run (every forward and backward op, the loss, the flat gradient sum, AdamW).
 * Tolerances are what the fp32-vs-double difference gives, with margin. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "testutil.h"

#define STORIES "llm_assets/models/stories260K_hf"
#define TINY "llm_assets/text/tinystories_train_first2MiB.txt"

static double eval_ppl(const char *backend) {
    char cmd[8192], *out, *err;
    snprintf(cmd, sizeof cmd, "%s eval --model %s --text %s --ctx 128 --max-windows 8 --json --backend %s", tu_mpirun(2),
             tu_shared(STORIES), tu_shared(TINY), backend);
    cr_assert_eq(tu_run(cmd, &out, &err), 0, "eval --backend %s: %s", backend, err);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert(j, "eval --json: %s", out);
    double p = json_real_value(json_object_get(j, "ppl"));
    json_decref(j); free(out); free(err);
    return p;
}

Test(backend_models, eval_ref_equals_cpu, .timeout = 300) {
    double a = eval_ppl("cpu"), b = eval_ppl("ref");
    cr_log_info("stories260K ppl cpu %.9g ref %.9g (rel %.2e)", a, b, fabs(a - b) / a);
    cr_expect(a > 1 && fabs(a - b) / a < 1e-5, "perplexity cpu %.9g vs ref %.9g", a, b);
}

Test(backend_models, logits_ref_equals_cpu, .timeout = 300) {
    const char *dir = tu_tmpdir();
    float *z[2];
    size_t len[2];
    const char *be[2] = {"cpu", "ref"};
    for (int k = 0; k < 2; k++) {
        char cmd[8192], *err, *path = tu_path_in(dir, be[k]);
        snprintf(cmd, sizeof cmd, "%s logits --model %s --ids 1,403,407,261,378,100,55,9,300 --out %s --backend %s",
                 tu_mpirun(2), tu_shared(STORIES), path, be[k]);
        cr_assert_eq(tu_run(cmd, NULL, &err), 0, "logits --backend %s: %s", be[k], err);
        free(err);
        z[k] = tu_read(path, &len[k]);
        free(path);
    }
    cr_assert(len[0] == len[1] && len[0] > 0);
    double num = 0, den = 0;
    for (size_t i = 0; i < len[0] / sizeof(float); i++) {
        num += ((double)z[0][i] - z[1][i]) * ((double)z[0][i] - z[1][i]);
        den += (double)z[1][i] * z[1][i];
    }
    cr_log_info("logits NMSE cpu vs ref %.3e", num / den);
    cr_expect(num / den < 1e-11, "logits NMSE cpu vs ref %.3e", num / den);
    free(z[0]); free(z[1]);
}

static json_t *last_line(const char *path) {
    size_t len;
    char *s = tu_read(path, &len);
    cr_assert(s && len > 0, "no log %s", path);
    char *p = s + len - 1;
    while (p > s && p[-1] != '\n') p--;
    json_t *j = json_loads(p, 0, NULL);
    free(s);
    return j;
}

Test(backend_models, distill_ref_tracks_cpu, .timeout = 600) {
    const char *dir = tu_tmpdir();
    char cmd[16384], *err;
    snprintf(cmd, sizeof cmd, "%s prune --model %s --out %s/student --drop-list 2", tu_mpirun(1), tu_shared(STORIES), dir);
    cr_assert_eq(tu_run(cmd, NULL, &err), 0, "prune: %s", err);
    free(err);
    double loss[2];
    const char *be[2] = {"cpu", "ref"};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "%s distill --teacher %s --student %s/student --text %s --out %s/kd-%s --tokens 8192 "
                 "--batch 4 --ctx 128 --lr 1e-3 --dp 2 --backend %s", tu_mpirun(2), tu_shared(STORIES), dir, tu_shared(TINY),
                 dir, be[k], be[k]);
        cr_assert_eq(tu_run(cmd, NULL, &err), 0, "distill --backend %s: %s", be[k], err);
        free(err);
        char path[4400];
        snprintf(path, sizeof path, "%s/kd-%s.train.jsonl", dir, be[k]);
        json_t *j = last_line(path);
        cr_assert_eq(json_integer_value(json_object_get(j, "step")), 16);
        loss[k] = json_real_value(json_object_get(j, "loss"));
        json_decref(j);
    }
    double rel = fabs(loss[0] - loss[1]) / loss[1];
    cr_log_info("distill loss after 16 steps: cpu %.9g ref %.9g (rel %.2e)", loss[0], loss[1], rel);
    cr_expect(rel < 1e-5, "final loss cpu %.9g vs ref %.9g", loss[0], loss[1]);
}

#ifdef MF_CUDA
/* ---- CUDA builds (make test-gpu): the same models on --backend cuda against cpu.
 * Without a device each case prints "cuda model test skipped: no CUDA device"
 * and is reported as skipped. fp32 products on both sides (cuBLAS without TF32),
 * so the bounds are the fp32-vs-fp32 ones: logits NMSE 1e-10, perplexity 1e-5. */

static void need_cuda(void) {
    char why[256];
    if (mf_cuda_device_count(why, sizeof why) > 0) return;
    printf("cuda model test skipped: no CUDA device (%s)\n", why);
    fflush(stdout);
    cr_skip_test("no CUDA device (%s)", why);
}

/* NMSE of the logits of `ids` on cuda against cpu, over `ranks` pipeline ranks */
static double logits_nmse_cuda(const char *model, const char *ids, int ranks) {
    const char *dir = tu_tmpdir();
    float *z[2];
    size_t len[2];
    const char *be[2] = {"cpu", "cuda"};
    for (int k = 0; k < 2; k++) {
        char cmd[8192], *err, *path = tu_path_in(dir, be[k]);
        snprintf(cmd, sizeof cmd, "%s logits --model %s --ids %s --out %s --backend %s", tu_mpirun(ranks), model, ids,
                 path, be[k]);
        cr_assert_eq(tu_run(cmd, NULL, &err), 0, "logits --backend %s: %s", be[k], err);
        free(err);
        z[k] = tu_read(path, &len[k]);
        free(path);
    }
    cr_assert(len[0] == len[1] && len[0] > 0, "logits sizes %zu (cpu) vs %zu (cuda)", len[0], len[1]);
    double num = 0, den = 0;
    for (size_t i = 0; i < len[0] / sizeof(float); i++) {
        num += ((double)z[1][i] - z[0][i]) * ((double)z[1][i] - z[0][i]);
        den += (double)z[0][i] * z[0][i];
    }
    free(z[0]); free(z[1]);
    return num / den;
}

Test(backend_models, cuda_logits_stories, .timeout = 300) {
    need_cuda();
    double e = logits_nmse_cuda(tu_shared(STORIES), "1,403,407,261,378,100,55,9,300", 2);
    cr_log_info("stories260K logits NMSE cuda vs cpu %.3e", e);
    cr_expect(e < 1e-10, "stories260K logits NMSE cuda vs cpu %.3e", e);
}

Test(backend_models, cuda_logits_smollm2, .timeout = 300) {
    need_cuda();
    char path[4096];
    snprintf(path, sizeof path, "%s/.cache/minifuse/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("HOME") ? getenv("HOME") : "");
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("cuda model test skipped: no SmolLM2 file %s\n", path);
        cr_skip_test("no SmolLM2 file %s", path);
    }
    fclose(f);
    double e = logits_nmse_cuda(path, "1,504,3303,282,253,1234,30,2", 1);
    cr_log_info("SmolLM2 logits NMSE cuda vs cpu %.3e", e);
    cr_expect(e < 1e-10, "SmolLM2 logits NMSE cuda vs cpu %.3e", e);
}

Test(backend_models, cuda_eval_stories, .timeout = 300) {
    need_cuda();
    double a = eval_ppl("cpu"), b = eval_ppl("cuda");
    cr_log_info("stories260K ppl cpu %.9g cuda %.9g (rel %.2e)", a, b, fabs(a - b) / a);
    cr_expect(a > 1 && fabs(a - b) / a < 1e-5, "perplexity cpu %.9g vs cuda %.9g", a, b);
}
#endif
