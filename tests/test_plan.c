/* test_plan.c - the planner (`minifuse plan`, src/plan/plan.c): parameter
 * counts, bytes and checkpoint sizes against values computed by hand from the
 * real configs; a layout's memory terms and times by hand; refusal naming the
 * overflowing term; --json that parses; bad configs. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/source.h"
#include "plan/plan.h"
#include "testutil.h"

#define SMOLLM2_CFG "input/smollm2-135m/config.json"
#define LLAMA70B_CFG "input/llama-3.1-70b/config.json"
#define STORIES_CFG "llm_assets/models/stories260K_hf/config.json"

static mf_config load(const char *path) {
    mf_config c;
    mf_err err;
    int tie;
    char *tok;
    cr_assert_eq(mf_hf_parse_config(path, &c, &tie, &tok, &err), 0, "%s", err.msg);
    free(tok);
    c.tied_embeddings = tie == 1;
    return c;
}

static mf_plan_hw cpu_hw(double mem) {
    mf_plan_hw hw = {.backend = MF_PLAN_CPU, .nodes = 1, .ranks_per_node = 1, .mem = mem, .mem_what = "host memory",
                     .peak = 1e9, .eff = 1, .mem_bw = 1e9, .intra_bw = 1e9, .inter_bw = 1e9, .latency = 0, .fs_bw = 1e9,
                     .reserve = 0};
    return hw;
}

Test(plan, param_counts_and_checkpoint) {
    /* SmolLM2-135M: a layer = 576*(576+2*192) + 576*576 + 3*576*1536 + 2*576 = 3540096 */
    mf_config s = load(SMOLLM2_CFG);
    cr_expect_eq(mf_config_layer_params(&s), 3540096);
    cr_expect_eq(mf_plan_student_params(&s), 30.0 * 3540096 + 49152.0 * 576 + 576); /* 134515008, tied */
    /* the student without 8 blocks: 22 layers, 106194240 parameters; its checkpoint: 12 bytes each,
     * 3 x (1 + 22*9 + 1) + 1 = 601 datasets x 480 bytes + 14000 of HDF5 */
    s.n_layers = 22;
    cr_expect_eq(mf_plan_student_params(&s), 106194240.0);
    cr_expect_eq(mf_plan_ckpt_tensors(&s), 200);
    cr_expect_eq(mf_plan_ckpt_bytes(&s), 12.0 * 106194240 + 601 * 480.0 + 14000);
    /* bench/results/plan-check-*: the real checkpoint of that student was 1274633971 bytes */
    cr_expect(fabs(mf_plan_ckpt_bytes(&s) / 1274633971.0 - 1) < 1e-4);
    /* stories260K: 8*8*64 + 2*64*32 + 64*64 + 3*64*172 + 2*64 = 45440 a layer, 260032 in all */
    mf_config t = load(tu_shared(STORIES_CFG));
    cr_expect_eq(mf_config_layer_params(&t), 45440);
    cr_expect_eq(mf_plan_student_params(&t), 260032.0);
    cr_expect_eq(mf_plan_ckpt_bytes(&t), 12.0 * 260032 + (3 * (1 + 5 * 9 + 1) + 1) * 480.0 + 14000);
    /* Llama-3.1-70B: 70553706496 parameters (untied head) */
    mf_config l = load(LLAMA70B_CFG);
    cr_expect_eq(l.tied_embeddings, 0);
    cr_expect_eq(mf_plan_student_params(&l), 70553706496.0);
    cr_expect_eq(mf_plan_ckpt_tensors(&l), 1 + 80 * 9 + 1 + 1);
}

Test(plan, bytes_per_layer) {
    mf_config s = load(SMOLLM2_CFG);
    /* saved per layer: 256 tokens x (4*576 + 2*576 + 2*192 + 2*1536 + 2) floats */
    cr_expect_eq(mf_plan_layer_act_bytes(&s, 256, 0), 4.0 * 256 * 6914);
    cr_expect_eq(mf_plan_layer_act_bytes(&s, 256, 1), 4.0 * 256 * 576);
    /* mf_state of 30 layers, 256 tokens: x, xn, q, att, gate, up + K, V caches (+ logits when last) */
    cr_expect_eq(mf_plan_state_bytes(&s, 30, 0, 256, 256), 4.0 * (256 * (2 * 576 + 2 * 576 + 2 * 1536) + 2 * 30 * 256 * 192));
    cr_expect_eq(mf_plan_state_bytes(&s, 30, 1, 256, 256) - mf_plan_state_bytes(&s, 30, 0, 256, 256), 4.0 * 256 * 49152);
}

/* stories260K distilling itself on one rank, 32 tokens, m = 2: every term by hand. */
Test(plan, one_rank_by_hand) {
    mf_config c = load(tu_shared(STORIES_CFG));
    mf_plan_job j = {.task = MF_PLAN_DISTILL, .student = c, .teacher = c, .seq = 32, .micro_batch = 1, .micro_batches = 2,
                     .pp = 1, .dp = 1, .schedule = MF_PLAN_1F1B, .partition = MF_PLAN_JOINT, .teacher_wbytes = 4};
    mf_plan_hw hw = cpu_hw(1e12);
    mf_plan p;
    mf_err err;
    cr_assert_eq(mf_plan_compute(&j, &hw, &p, &err), 0, "%s", err.msg);
    const mf_plan_stage *st = &p.st[0];
    const double W = 4.0 * 260032;
    cr_expect_eq(st->in_flight, 1);
    cr_expect_eq(st->mem[MF_PM_TEACHER_W], W);
    cr_expect_eq(st->mem[MF_PM_STUDENT_W], W);
    cr_expect_eq(st->mem[MF_PM_GRADS], W);
    cr_expect_eq(st->mem[MF_PM_ADAM], 2 * W);
    cr_expect_eq(st->mem[MF_PM_ACTS], 5 * 4.0 * 32 * 794);
    cr_expect_eq(st->mem[MF_PM_MB_BUFS], 4.0 * 32 * 1200 + 4 * 32 + 4.0 * 32 * 65);
    cr_expect_eq(st->mem[MF_PM_LOGITS], 4.0 * 512 * (2 * 32 + 3 * 32));
    cr_expect_eq(st->mem[MF_PM_INFER], 2 * 4.0 * (32 * 600 + 2 * 5 * 32 * 32));
    cr_expect_eq(st->mem[MF_PM_PIPE], 4.0 * 32 * 64);
    cr_expect_eq(st->mem[MF_PM_DP], 0);
    cr_expect_eq(st->mem_total, 6442240.0); /* no file pages: the teacher's used in place, the student's dropped */
    /* FLOPs of a micro-batch: student 3 x (32*5*95104 + 32*65536), teacher 32*5*95104 + 32*65536; the loss
     * is timed apart: 32*512 logits x MF_LOSS_GEMM_FLOPS_PER_LOGIT at the GEMM rate (1e9) */
    cr_expect_eq(st->flops_mb, 69255168.0);
    double loss = 32.0 * 512 * MF_LOSS_GEMM_FLOPS_PER_LOGIT / 1e9;
    cr_expect(fabs(st->t_compute_mb - (0.069255168 + loss)) < 1e-15, "micro-batch %.15f", st->t_compute_mb);
    cr_expect(fabs(p.t_step - (2 * (0.069255168 + loss) + 40.0 * 260032 / 1e9)) < 1e-12, "step %.12f", p.t_step);
    cr_expect_eq(p.tokens_per_step, 64);
    cr_expect_eq(p.bubble, 0);
    cr_expect(p.fits);
    mf_plan_free(&p);
}

Test(plan, onef1b_in_flight_and_joint_bounds) {
    mf_config t = load(LLAMA70B_CFG), s = t;
    s.n_layers = 64;
    mf_plan_job j = {.task = MF_PLAN_DISTILL, .student = s, .teacher = t, .seq = 4096, .micro_batch = 1, .micro_batches = 16,
                     .pp = 8, .dp = 8, .schedule = MF_PLAN_1F1B, .partition = MF_PLAN_JOINT, .teacher_wbytes = 2};
    mf_plan_hw hw = cpu_hw(80.0 * (1 << 30));
    hw.backend = MF_PLAN_CUDA;
    hw.nodes = 8;
    hw.ranks_per_node = 8;
    mf_plan p;
    mf_err err;
    cr_assert_eq(mf_plan_compute(&j, &hw, &p, &err), 0, "%s", err.msg);
    cr_expect_eq(p.st[0].s0, 0);
    cr_expect_eq(p.st[7].s1, 64);
    for (int s = 0; s < 8; s++) {
        cr_expect_eq(p.st[s].in_flight, 8 - s, "stage %d", s);
        cr_expect_eq(p.st[s].t0, p.st[s].s0 * 80 / 64);
        if (s) cr_expect_eq(p.st[s].s0, p.st[s - 1].s1);
    }
    cr_expect(fabs(p.bubble - 7.0 / 23) < 1e-12);
    cr_expect_eq(p.tokens_per_step, 8.0 * 16 * 4096);
    /* GPipe holds every micro-batch on every stage */
    j.schedule = MF_PLAN_GPIPE;
    mf_plan g;
    cr_assert_eq(mf_plan_compute(&j, &hw, &g, &err), 0, "%s", err.msg);
    for (int s = 0; s < 8; s++) cr_expect_eq(g.st[s].in_flight, 16);
    mf_plan_free(&p);
    mf_plan_free(&g);
    /* a layout with more stages than layers is an error naming the option */
    j.pp = 64;
    j.dp = 1;
    j.student.n_layers = 32;
    cr_expect_eq(mf_plan_compute(&j, &hw, &p, &err), -1);
    cr_expect(strstr(err.msg, "--pp 64"), "%s", err.msg);
}

Test(plan, refusal_names_the_term) {
    mf_config s = load(SMOLLM2_CFG), t = s;
    s.n_layers = 22;
    mf_plan_job j = {.task = MF_PLAN_DISTILL, .student = s, .teacher = t, .seq = 256, .micro_batch = 1, .micro_batches = 4,
                     .pp = 1, .dp = 1, .schedule = MF_PLAN_GPIPE, .partition = MF_PLAN_SEPARATE, .teacher_wbytes = 4};
    mf_plan_hw hw = cpu_hw(1.0 * (1 << 30));
    mf_plan p;
    mf_err err;
    cr_assert_eq(mf_plan_compute(&j, &hw, &p, &err), 0, "%s", err.msg);
    cr_expect_not(p.fits);
    /* AdamW: 8 x 106194240 bytes = 0.79 GiB, the largest term */
    cr_expect(strstr(p.why, "stage 1 of 1: ") == p.why, "%s", p.why);
    cr_expect(strstr(p.why, "GiB > 1.0 GiB host memory: AdamW moments 0.8 GiB"), "%s", p.why);
    mf_plan_free(&p);
}

static json_t *run_json(const char *args, int *rc) {
    char cmd[4096], *out, *err;
    snprintf(cmd, sizeof cmd, "%s plan %s --json", tu_bin(), args);
    *rc = tu_run(cmd, &out, &err);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    cr_assert(j, "--json output does not parse (%s): %s", je.text, out);
    free(out);
    free(err);
    return j;
}

Test(plan, cli_json_search, .timeout = 120) {
    int rc;
    json_t *j = run_json("--config " LLAMA70B_CFG " --student-layers 64 --nodes 16 --gpus-per-node 8 --batch 256 --scratch shared", &rc);
    cr_expect_eq(rc, 0);
    json_t *ls = json_object_get(j, "layouts");
    cr_assert(json_array_size(ls) > 4);
    json_t *rec = json_object_get(j, "recommended");
    cr_assert(json_is_integer(rec));
    json_t *best = json_array_get(ls, (size_t)json_integer_value(rec));
    cr_expect(json_is_true(json_object_get(best, "fits")));
    double tps = json_real_value(json_object_get(best, "tokens_per_s"));
    size_t i;
    json_t *l;
    json_array_foreach(ls, i, l) {
        if (json_is_true(json_object_get(l, "fits")))
            cr_expect(json_real_value(json_object_get(l, "tokens_per_s")) <= tps, "layout %zu is faster than the recommended", i);
        /* global batch fixed: dp x m = 256 windows */
        cr_expect_eq(json_integer_value(json_object_get(l, "dp")) * json_integer_value(json_object_get(l, "micro_batches")), 256);
    }
    json_t *st, *stages = json_object_get(best, "stages");
    json_array_foreach(stages, i, st) { /* the terms add up to the total */
        json_t *mem = json_object_get(st, "memory_bytes");
        const char *k;
        json_t *v;
        double sum = 0;
        json_object_foreach(mem, k, v) if (strcmp(k, "total")) sum += json_real_value(v);
        cr_expect(fabs(sum / json_real_value(json_object_get(mem, "total")) - 1) < 1e-9);
    }
    json_decref(j);
}

Test(plan, cli_refuses_and_names_the_overflow, .timeout = 120) {
    char cmd[4096], *out, *err;
    snprintf(cmd, sizeof cmd, "%s plan --config " LLAMA70B_CFG " --student-layers 64 --nodes 1 --gpus-per-node 8 --pp 8 --dp 1",
             tu_bin());
    int rc = tu_run(cmd, &out, &err);
    cr_expect_neq(rc, 0);
    regex_t re;
    cr_assert_eq(regcomp(&re, "minifuse: error: plan: the layout does not fit \\(pp 8 x dp 1, recompute\\): stage [1-8] of 8: "
                              "[0-9.]+ GiB > 79\\.6 GiB GPU memory: [a-zA-Z ]+ [0-9.]+ GiB", REG_EXTENDED), 0);
    cr_expect_eq(regexec(&re, err, 0, NULL, 0), 0, "stderr: %s", err);
    regfree(&re);
    cr_expect(strstr(out, "DOES NOT FIT"), "%s", out);
    free(out);
    free(err);
    /* with --json the plan still prints, and says why */
    json_t *j = run_json("--config " LLAMA70B_CFG " --nodes 1 --gpus-per-node 8 --pp 8 --dp 1", &rc);
    cr_expect_neq(rc, 0);
    cr_expect(json_is_null(json_object_get(j, "recommended")));
    json_t *l = json_array_get(json_object_get(j, "layouts"), 0);
    cr_expect(strstr(json_string_value(json_object_get(l, "why")), "GiB GPU memory"));
    json_decref(j);
}

static void expect_error(const char *cfg_text, const char *needle) {
    const char *dir = tu_tmpdir();
    char path[4200], cmd[8400], *out, *err;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (cfg_text) tu_write(path, cfg_text, strlen(cfg_text));
    snprintf(cmd, sizeof cmd, "%s plan --config %s --nodes 1 --gpus-per-node 8", tu_bin(), path);
    int rc = tu_run(cmd, &out, &err);
    cr_expect_neq(rc, 0);
    cr_expect(strstr(err, "minifuse: error: plan: "), "%s", err);
    cr_expect(strstr(err, path), "error does not name %s: %s", path, err);
    cr_expect(strstr(err, needle), "error lacks '%s': %s", needle, err);
    free(out);
    free(err);
}

Test(plan, bad_configs, .timeout = 120) {
    expect_error(NULL, "config.json");
    expect_error("{\"hidden_size\": 64,", "bad JSON");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 0, \"intermediate_size\": 8, "
                 "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"vocab_size\": 32}", "hidden_size = 0");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 8, "
                 "\"num_hidden_layers\": 2, \"num_attention_heads\": 6, \"num_key_value_heads\": 4, \"vocab_size\": 32}",
                 "not a multiple");
    expect_error("{\"architectures\": [\"GPT2LMHeadModel\"], \"hidden_size\": 64}", "GPT2LMHeadModel");
}

/* eval of stories260K on 2 ranks, 64 tokens, 10 windows: weights, mf_state, logits, pipeline buffers */
Test(plan, eval_by_hand) {
    mf_config c = load(tu_shared(STORIES_CFG));
    mf_plan_job j = {.task = MF_PLAN_EVAL, .student = c, .seq = 64, .micro_batch = 1, .micro_batches = 10, .pp = 2, .dp = 1,
                     .teacher_wbytes = 4};
    mf_plan_hw hw = cpu_hw(1e12);
    hw.ranks_per_node = 2;
    mf_plan p;
    mf_err err;
    cr_assert_eq(mf_plan_compute(&j, &hw, &p, &err), 0, "%s", err.msg);
    /* mpi/pipeline.c's split of 5 layers with the head on the last rank: [0,3) [3,5) */
    cr_expect_eq(p.st[0].s1, 3);
    const mf_plan_stage *a = &p.st[0], *b = &p.st[1];
    cr_expect_eq(a->mem[MF_PM_TEACHER_W], 4.0 * (3 * 45440 + 32768));
    cr_expect_eq(b->mem[MF_PM_TEACHER_W], 4.0 * (2 * 45440 + 32768 + 64)); /* tied: the embedding is the head */
    cr_expect_eq(a->mem[MF_PM_INFER], 4.0 * (64 * 600 + 2 * 3 * 64 * 32));
    cr_expect_eq(b->mem[MF_PM_LOGITS], 4.0 * 64 * 512);
    cr_expect_eq(a->mem[MF_PM_PIPE], 2 * 4.0 * 64 * 64);
    cr_expect_eq(b->mem[MF_PM_PIPE], 0);
    /* 10 windows through 2 stages: (10 + 1) x the slower stage */
    double fa = 64 * 3 * (2 * 45440 + 4.0 * 64 * 65 / 2), fb = 64 * 2 * (2 * 45440 + 4.0 * 64 * 65 / 2) + 64 * 65536.0;
    cr_expect(fabs(p.t_step - 11 * (fa > fb ? fa : fb) / 1e9 - 11 * 4.0 * 64 * 64 / 1e9) < 1e-12, "%.12f", p.t_step);
    mf_plan_free(&p);
}

/* A depth-pruned student's stages start their teacher layers where its layers came from. */
Test(plan, joint_bounds_follow_the_layer_map) {
    mf_config t = load(SMOLLM2_CFG), s = t;
    s.n_layers = 22;
    static const int dropped[8] = {5, 20, 23, 7, 17, 26, 24, 10};
    int map[22], k = 0;
    for (int l = 0; l < 30; l++) {
        int d = 0;
        for (int i = 0; i < 8; i++) d |= dropped[i] == l;
        if (!d) map[k++] = l;
    }
    mf_plan_job j = {.task = MF_PLAN_DISTILL, .student = s, .teacher = t, .seq = 256, .micro_batch = 1, .micro_batches = 4,
                     .pp = 2, .dp = 1, .schedule = MF_PLAN_1F1B, .partition = MF_PLAN_JOINT, .teacher_map = map,
                     .teacher_wbytes = 4};
    mf_plan_hw hw = cpu_hw(1e12);
    hw.ranks_per_node = 2;
    mf_plan p;
    mf_err err;
    cr_assert_eq(mf_plan_compute(&j, &hw, &p, &err), 0, "%s", err.msg);
    int b = p.st[1].s0;
    cr_expect_eq(p.st[0].t1, map[b]);
    cr_expect_eq(p.st[1].t0, map[b]);
    cr_expect_eq(p.st[1].t1, 30);
    cr_expect_neq(map[b], b * 30 / 22, "the map should differ from the proportional split here (boundary %d)", b);
    mf_plan_free(&p);
}

/* Through the binary: --task eval on the CPU, frozen weights bf16 for a bf16 file by default, f32 by --weights. */
Test(plan, cli_eval_weights, .timeout = 120) {
    const char *base = "--task eval --backend cpu --config " SMOLLM2_CFG " --nodes 1 --gpus-per-node 2 --pp 2 --dp 1 --seq 256 "
                       "--micro-batches 16 --sgemm-gflops 100 --efficiency 0.5";
    char args[1024];
    int rc;
    for (int f32 = 0; f32 < 2; f32++) {
        snprintf(args, sizeof args, "%s%s", base, f32 ? " --weights f32" : "");
        json_t *j = run_json(args, &rc);
        cr_expect_eq(rc, 0);
        json_t *l = json_array_get(json_object_get(j, "layouts"), 0);
        json_t *st = json_array_get(json_object_get(l, "stages"), 0);
        json_t *sl = json_object_get(st, "student_layers");
        int l1 = (int)json_integer_value(json_array_get(sl, 1));
        double w = json_real_value(json_object_get(json_object_get(st, "memory_bytes"), "teacher_weights"));
        /* stage 1: its layers and the embedding, at 2 or 4 bytes; the bf16 file is used in place when held bf16 */
        cr_expect_eq(w, (f32 ? 4.0 : 2.0) * (l1 * 3540096.0 + 49152.0 * 576), "f32 %d: %g", f32, w);
        cr_expect_null(json_object_get(json_object_get(st, "memory_bytes"), "file_maps"), "no file-pages term");
        cr_expect_eq(json_real_value(json_object_get(json_object_get(j, "cluster"), "peak_flops")), 100e9);
        json_decref(j);
    }
}

/* --teacher-topk: the same memory but for the cache's K ids and logits, no teacher FLOPs. */
Test(plan, teacher_topk) {
    mf_config c = load(tu_shared(STORIES_CFG));
    mf_plan_job j = {.task = MF_PLAN_DISTILL, .student = c, .teacher = c, .seq = 32, .micro_batch = 1, .micro_batches = 2,
                     .pp = 1, .dp = 1, .schedule = MF_PLAN_1F1B, .partition = MF_PLAN_JOINT, .teacher_wbytes = 4};
    mf_plan_hw hw = cpu_hw(1e12);
    mf_plan a, b;
    mf_err err;
    cr_assert_eq(mf_plan_compute(&j, &hw, &a, &err), 0, "%s", err.msg);
    j.topk = 16;
    cr_assert_eq(mf_plan_compute(&j, &hw, &b, &err), 0, "%s", err.msg);
    cr_expect_eq(b.st[0].mem_total - a.st[0].mem_total, 8.0 * 32 * 16);
    /* without the teacher's 5 layers and head: 32 x (5 x 95104 + 65536) FLOPs less */
    cr_expect_eq(a.st[0].flops_mb - b.st[0].flops_mb, 32.0 * (5 * 95104 + 65536));
    mf_plan_free(&a);
    mf_plan_free(&b);
}

/* A file measured whole (--teacher-file-gb: headers included) whose bytes a parameter are within 1 % of
 * 2 is a half-precision file: its weights are held in it by default (the CLI's pick of --weights). */
Test(plan, file_with_headers_used_in_place, .timeout = 60) {
    cr_expect(mf_plan_used_in_place(2.00002, 2));
    cr_expect(!mf_plan_used_in_place(2.03, 2));
    cr_expect(!mf_plan_used_in_place(0.6, 2));
    char args[1024];
    int rc;
    /* SmolLM2 (134.5 M parameters) as a bf16 file with 2.7 kB of headers, and as Q4_1 */
    const double gb[2] = {0.26903, 0.0984};
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, "--task eval --backend cpu --config %s --nodes 1 --gpus-per-node 1 --pp 1 --dp 1 --seq 256 "
                 "--sgemm-gflops 100 --efficiency 0.5 --teacher-file-gb %g", SMOLLM2_CFG, gb[k]);
        json_t *j = run_json(args, &rc);
        cr_expect_eq(rc, 0);
        cr_expect_eq(json_real_value(json_object_get(j, "teacher_weight_bytes")), k == 0 ? 2.0 : 4.0, "%g GB", gb[k]);
        json_decref(j);
    }
}

/* Frozen weights held in half precision run at the half-precision peak, the student at the float32 one. */
Test(plan, half_precision_teacher_peak) {
    mf_config c = load(tu_shared(STORIES_CFG));
    mf_plan_job j = {.task = MF_PLAN_DISTILL, .student = c, .teacher = c, .seq = 32, .micro_batch = 1, .micro_batches = 2,
                     .pp = 1, .dp = 1, .schedule = MF_PLAN_1F1B, .partition = MF_PLAN_JOINT, .teacher_wbytes = 2};
    mf_plan_hw hw = cpu_hw(1e12);
    hw.backend = MF_PLAN_CUDA;
    hw.peak_half = 4e9;
    mf_plan p;
    mf_err err;
    cr_assert_eq(mf_plan_compute(&j, &hw, &p, &err), 0, "%s", err.msg);
    /* teacher: 32 x (5 x 95104 + 65536) FLOPs at 4e9; the rest of 69255168 at 1e9; on a GPU the loss is
     * 12 bytes a logit (32 x 512) at the memory bandwidth (1e9 B/s) */
    double teacher = 32.0 * (5 * 95104 + 65536), loss = 12.0 * 32 * 512 / 1e9;
    cr_expect(fabs(p.st[0].t_compute_mb - (teacher / 4e9 + (69255168.0 - teacher) / 1e9 + loss)) < 1e-15, "%.15f",
              p.st[0].t_compute_mb);
    cr_expect_eq(p.st[0].mem[MF_PM_TEACHER_W], 2.0 * 260032);
    mf_plan_free(&p);
}
