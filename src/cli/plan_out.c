/* plan_out.c - `minifuse plan`'s output (see plan_out.h). */
#include "cli/plan_out.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#define GIB (1024.0 * 1024 * 1024)

static const char *const KEYS[MF_PM_N] = {
    "teacher_weights", "student_weights", "gradients", "adamw", "activations", "microbatch_buffers",
    "logits", "inference_states", "pipeline_buffers", "dp_scratch", "reserve",
};
/* short column heads of the per-stage table, in term order */
static const char *const HEADS[MF_PM_N] = {"teach.w", "stud.w", "grads", "adamw", "acts", "mb.buf",
                                           "logits", "infer", "pipe", "dp.sum", "reserve"};

static double peak_mem(const mf_plan *p) { return p->st[p->worst].mem_total; }

static int shown(const mf_plan *all, int n, int best) {
    if (best >= 0) return best;
    int near = 0;
    for (int i = 1; i < n; i++)
        if (peak_mem(&all[i]) < peak_mem(&all[near])) near = i;
    return near;
}

static void model_line(const char *what, const char *path, const mf_config *c) {
    printf("%s %s: %d layers, hidden %d, ffn %d, heads %d/%d, vocab %d%s, %.3f B parameters\n", what, path, c->n_layers, c->dim,
           c->ffn_dim, c->n_heads, c->n_kv_heads, c->vocab_size, c->tied_embeddings ? " (tied)" : "",
           mf_config_total_params(c) / 1e9);
}

static void print_layouts(const mf_plan *all, int n, int best) {
    printf("\nlayouts (pp x dp; memory: the fullest stage):\n");
    printf("  %4s %4s %9s %4s %12s %9s %7s %11s  %s\n", "pp", "dp", "recompute", "m", "memory GiB", "step s", "bubble",
           "tokens/s", "");
    for (int i = 0; i < n; i++) {
        const mf_plan *p = &all[i];
        printf("  %4d %4d %9s %4d %12.1f %9.3f %6.1f%% %11.1f  %s%s\n", p->P, p->dp, p->job.recompute ? "on" : "off", p->m,
               peak_mem(p) / GIB, p->t_step, 100 * p->bubble, p->tokens_per_s, i == best ? "<- recommended " : "",
               p->fits ? "" : p->why);
    }
}

static void print_detail(const plan_print_ctx *c, const mf_plan *p) {
    const mf_plan_job *j = &p->job;
    int distill = j->task == MF_PLAN_DISTILL;
    printf("\n%s: pp %d x dp %d = %d ranks, recompute %s, m = %d micro-batches of %d x %d tokens per replica\n",
           p->fits ? "layout" : "layout (DOES NOT FIT)", p->P, p->dp, p->ranks, j->recompute ? "on" : "off", p->m,
           j->micro_batch, j->seq);
    printf("memory per rank, GiB (%s %.1f GiB):\n  %5s %9s %9s %4s", c->hw->mem_what, c->hw->mem / GIB, "stage", "student",
           distill ? "teacher" : "", "mb");
    for (int i = 0; i < MF_PM_N; i++) printf(" %7s", HEADS[i]);
    printf(" %7s\n", "total");
    for (int s = 0; s < p->P; s++) {
        const mf_plan_stage *st = &p->st[s];
        char sl[32], tl[32] = "";
        snprintf(sl, sizeof sl, "%d-%d%s%s", st->s0, st->s1 - 1, st->first ? "+E" : "", st->last ? "+H" : "");
        if (distill) snprintf(tl, sizeof tl, "%d-%d", st->t0, st->t1 - 1);
        printf("  %5d %9s %9s %4d", s + 1, sl, tl, st->in_flight);
        for (int i = 0; i < MF_PM_N; i++) printf(" %7.2f", st->mem[i] / GIB);
        printf(" %7.2f%s\n", st->mem_total / GIB, st->mem_total > c->hw->mem ? " !" : "");
    }
    printf("  (layers a-b inclusive; +E embedding, +H final norm and head; mb: micro-batches in flight at the peak)\n");
    const mf_plan_stage *slow = &p->st[0];
    for (int s = 1; s < p->P; s++)
        if (p->st[s].t_compute_mb + p->st[s].t_p2p_mb > slow->t_compute_mb + slow->t_p2p_mb) slow = &p->st[s];
    printf("time: %.3g FLOPs/token; per micro-batch %.3f s on the slowest stage (%d: compute %.3f s, sends %.4f s)\n",
           p->flops_per_token, p->t_mb, (int)(slow - p->st) + 1, slow->t_compute_mb, slow->t_p2p_mb);
    if (distill)
        printf("  step = (m + P - 1) x %.3f = %.3f s pipeline (bubble %.1f%%) + %.3f s gradient sums + %.3f s optimizer = %.3f s\n",
               p->t_mb, p->t_pipeline, 100 * p->bubble, p->t_dp, p->t_optim, p->t_step);
    else
        printf("  pass = (windows + P - 1) x %.3f = %.3f s (bubble %.1f%%)\n", p->t_mb, p->t_step, 100 * p->bubble);
    printf("  %.0f tokens per %s, %.1f tokens/s (%.1f%% of the float32 peak, on the FLOPs executed, recompute included)\n", p->tokens_per_step,
           distill ? "step" : "pass", p->tokens_per_s,
           100 * p->tokens_per_s * p->flops_per_token / (p->ranks * c->hw->peak));
    if (distill)
        printf("checkpoint: %.2f GB (params + AdamW m, v: 12 bytes x %.3f B parameters, HDF5), written in %.1f s at %.1f GB/s\n",
               p->ckpt_bytes / 1e9, p->student_params / 1e9, p->t_ckpt, c->hw->fs_bw / 1e9);
}

static json_t *plan_json(const mf_plan *p) {
    json_t *stages = json_array();
    for (int s = 0; s < p->P; s++) {
        const mf_plan_stage *st = &p->st[s];
        json_t *mem = json_object();
        for (int i = 0; i < MF_PM_N; i++) json_object_set_new(mem, KEYS[i], json_real(st->mem[i]));
        json_object_set_new(mem, "total", json_real(st->mem_total));
        json_array_append_new(stages, json_pack("{s:i, s:[i,i], s:[i,i], s:b, s:b, s:i, s:f, s:o, s:f, s:f, s:f, s:f, s:f}",
            "stage", s + 1, "student_layers", st->s0, st->s1, "teacher_layers", st->t0, st->t1, "embedding", st->first,
            "head", st->last, "in_flight", st->in_flight, "params", st->params, "memory_bytes", mem, "flops_per_microbatch",
            st->flops_mb, "t_compute_mb", st->t_compute_mb, "t_p2p_mb", st->t_p2p_mb, "t_dp", st->t_dp, "t_optim", st->t_optim));
    }
    json_t *o = json_pack("{s:i, s:i, s:i, s:i, s:b, s:b, s:f, s:o}", "pp", p->P, "dp", p->dp, "ranks", p->ranks,
                          "micro_batches", p->m, "recompute", p->job.recompute, "fits", p->fits, "peak_memory_bytes",
                          peak_mem(p), "stages", stages);
    json_object_set_new(o, "why", p->fits ? json_null() : json_string(p->why));
    const struct { const char *k; double v; } f[] = {
        {"flops_per_token", p->flops_per_token}, {"t_microbatch", p->t_mb}, {"t_pipeline", p->t_pipeline}, {"bubble", p->bubble},
        {"t_dp", p->t_dp}, {"t_optim", p->t_optim}, {"t_step", p->t_step}, {"tokens_per_step", p->tokens_per_step},
        {"tokens_per_s", p->tokens_per_s}, {"checkpoint_bytes", p->ckpt_bytes}, {"t_checkpoint", p->t_ckpt},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) json_object_set_new(o, f[i].k, json_real(f[i].v));
    return o;
}

static json_t *config_json(const char *path, const mf_config *c) {
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:b, s:f}", "path", path, "layers", c->n_layers, "hidden", c->dim,
                     "ffn", c->ffn_dim, "heads", c->n_heads, "kv_heads", c->n_kv_heads, "vocab", c->vocab_size, "tied",
                     c->tied_embeddings, "params", (double)mf_config_total_params(c));
}

static void print_json(const plan_print_ctx *c, const mf_plan *all, int n, int best) {
    const mf_plan_job *j = c->job;
    const mf_plan_hw *hw = c->hw;
    json_t *layouts = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(layouts, plan_json(&all[i]));
    json_t *root = json_pack("{s:s, s:o, s:{s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}, s:o}",
        "task", j->task == MF_PLAN_DISTILL ? "distill" : "eval", "student", config_json(c->config, &j->student), "cluster",
        "backend", hw->backend == MF_PLAN_CUDA ? "cuda" : "cpu", "nodes", hw->nodes, "ranks_per_node", hw->ranks_per_node,
        "memory_bytes", hw->mem, "peak_flops", hw->peak, "peak_half_flops", hw->peak_half, "efficiency", hw->eff, "mem_bw", hw->mem_bw, "intra_bw",
        hw->intra_bw, "inter_bw", hw->inter_bw, "fs_bw", hw->fs_bw, "reserve_bytes", hw->reserve, "layouts", layouts);
    if (j->task == MF_PLAN_DISTILL) json_object_set_new(root, "teacher", config_json(c->teacher, &j->teacher));
    json_object_set_new(root, "seq", json_integer(j->seq));
    json_object_set_new(root, "micro_batch", json_integer(j->micro_batch));
    json_object_set_new(root, "schedule", json_string(j->schedule == MF_PLAN_1F1B ? "1f1b" : "gpipe"));
    json_object_set_new(root, "partition", json_string(j->partition == MF_PLAN_JOINT ? "joint" : "separate"));
    json_object_set_new(root, "teacher_weight_bytes", json_real(j->teacher_wbytes));
    json_object_set_new(root, "recommended", best >= 0 ? json_integer(best) : json_null());
    json_object_set_new(root, "shown", json_integer(shown(all, n, best)));
    char *s = json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
    printf("%s\n", s);
    free(s);
    json_decref(root);
}

void plan_print(const plan_print_ctx *c, const mf_plan *all, int n, int best) {
    if (c->json) { print_json(c, all, n, best); return; }
    const mf_plan_job *j = c->job;
    const mf_plan_hw *hw = c->hw;
    printf("minifuse plan: %s, %s backend\n", j->task == MF_PLAN_DISTILL ? "distillation" : "eval",
           hw->backend == MF_PLAN_CUDA ? "cuda" : "cpu");
    if (j->task == MF_PLAN_DISTILL) model_line("teacher", c->teacher, &j->teacher);
    model_line(j->task == MF_PLAN_DISTILL ? "student" : "model", c->config, &j->student);
    printf("cluster: %d node(s) x %d rank(s): %.1f GiB %s, %.1f TFLOP/s peak (%.1f on half weights) x efficiency %.2f,\n"
           "  memory %.0f GB/s,"
           " links %.0f GB/s in a node, %.0f GB/s across, file system %.1f GB/s, reserve %.2f GiB per rank\n",
           hw->nodes, hw->ranks_per_node, hw->mem / GIB, hw->mem_what, hw->peak / 1e12, hw->peak_half / 1e12, hw->eff, hw->mem_bw / 1e9,
           hw->intra_bw / 1e9, hw->inter_bw / 1e9, hw->fs_bw / 1e9, hw->reserve / GIB);
    if (j->task == MF_PLAN_DISTILL)
        printf("job: windows of %d tokens, %d per micro-batch, %s schedule, %s partition, teacher weights held as %s\n", j->seq,
               j->micro_batch, j->schedule == MF_PLAN_1F1B ? "1F1B" : "GPipe", j->partition == MF_PLAN_JOINT ? "joint" : "separate",
               j->teacher_wbytes == 2 ? "bf16" : "f32");
    if (n > 1) print_layouts(all, n, best);
    print_detail(c, &all[shown(all, n, best)]);
}
