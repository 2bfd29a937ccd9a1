/* plan.c - `minifuse plan`: options, the cluster's defaults, reading the configs;
 * the model is src/plan/plan.c, the printing src/cli/plan_out.c. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/common.h"
#include "cli/plan_out.h"
#include "io/source.h"
#include "plan/plan.h"

#define GIB (1024.0 * 1024 * 1024)

typedef struct plan_opts {
    const char *config, *teacher, *task, *backend, *gpu, *math, *recompute, *schedule, *partition, *weights;
    const char *teacher_dtype, *scratch;
    int nodes, gpn, micro_batch, seq, micro_batches, batch, pp, dp, json, cores, topk;
    int s_layers, s_dim, s_ffn, s_heads, s_kv;
    float gpu_mem, node_mem, peak_tflops, half_tflops, sgemm_gflops, eff, mem_bw, intra, inter, latency_us, fs, reserve;
    float teacher_file_gb;
} plan_opts;

/* A config: a Hugging Face config.json, or any model minifuse reads (HF directory, GGUF, llama2.c). */
static void read_config(const char *path, mf_config *c) {
    mf_err err;
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".json") == 0) {
        int tie;
        char *tok;
        if (mf_hf_parse_config(path, c, &tie, &tok, &err) != 0) mf_fatal("plan: %s", err.msg);
        free(tok);
        c->tied_embeddings = tie == 1; /* transformers' LlamaConfig default: untied */
    } else {
        mf_source *s = mf_source_open(path, &err);
        if (!s) mf_fatal("plan: %s", err.msg);
        *c = s->cfg;
        mf_source_close(s);
    }
    if (mf_config_validate(c, path, &err) != 0) mf_fatal("plan: %s", err.msg);
}

/* A depth-pruned student's map to its teacher's layers, from its config.json ("minifuse":
 * {"dropped_layers": [...]}, written by prune); NULL when there is none or it does not match. */
static int *layer_map(const char *path, int teacher_layers, int student_layers) {
    char cfg[4200];
    size_t n = strlen(path);
    snprintf(cfg, sizeof cfg, n >= 5 && strcmp(path + n - 5, ".json") == 0 ? "%s" : "%s/config.json", path);
    json_t *root = json_load_file(cfg, 0, NULL);
    json_t *dl = json_object_get(json_object_get(root, "minifuse"), "dropped_layers");
    char *dropped = mf_calloc((size_t)teacher_layers + 1, 1);
    int nd = 0, *map = NULL;
    for (size_t i = 0; json_is_array(dl) && i < json_array_size(dl); i++) {
        json_int_t v = json_integer_value(json_array_get(dl, i));
        if (v >= 0 && v < teacher_layers && !dropped[v]) { dropped[v] = 1; nd++; }
    }
    if (nd > 0 && teacher_layers - nd == student_layers) {
        map = mf_malloc((size_t)student_layers * sizeof *map);
        for (int l = 0, k = 0; l < teacher_layers; l++) if (!dropped[l]) map[k++] = l;
    }
    free(dropped);
    json_decref(root);
    return map;
}

/* --student-* overrides: a pruned student's shape without writing its config. */
static void shape_student(const plan_opts *o, mf_config *c) {
    if (o->s_layers) c->n_layers = o->s_layers;
    if (o->s_dim) c->dim = o->s_dim;
    if (o->s_ffn) c->ffn_dim = o->s_ffn;
    if (o->s_heads) c->n_heads = o->s_heads;
    if (o->s_kv) c->n_kv_heads = o->s_kv;
    mf_err err;
    if (mf_config_validate(c, "plan: the student (--student-*)", &err) != 0) mf_fatal("%s", err.msg);
}

static double dtype_bytes(const char *opt, const char *d) {
    static const struct { const char *name; double bytes; } T[] = {
        {"f32", 4}, {"bf16", 2}, {"f16", 2}, {"q8_0", 34.0 / 32}, {"q4_1", 20.0 / 32}, {"q4_0", 18.0 / 32},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
        if (strcmp(d, T[i].name) == 0) return T[i].bytes;
    mf_fatal("plan: --%s '%s' is not one of f32, bf16, f16, q8_0, q4_1, q4_0", opt, d);
}

static int pick(const char *opt, const char *v, const char *a, const char *b) {
    if (strcmp(v, a) == 0) return 0;
    if (strcmp(v, b) == 0) return 1;
    mf_fatal("plan: --%s '%s' is not %s or %s", opt, v, a, b);
}

/* The cluster: defaults of the named GPU (or CPU), then every explicit override. */
static void hardware(const plan_opts *o, mf_plan_hw *hw) {
    memset(hw, 0, sizeof *hw);
    hw->nodes = o->nodes;
    hw->ranks_per_node = o->gpn;
    hw->backend = pick("backend", o->backend, "cpu", "cuda") ? MF_PLAN_CUDA : MF_PLAN_CPU;
    if (hw->backend == MF_PLAN_CUDA) {
        int h200 = pick("gpu", o->gpu, "h100", "h200");
        /* H100 SXM5 80 GB / H200 141 GB as nvidia-smi reports them (81559 / 143771 MiB); dense tensor-core
         * peaks of the data sheet; HBM bandwidth; NVLink 4 ~360 GB/s achieved per GPU (of 450 per
         * direction); one 400 Gb/s NIC per GPU ~40 GB/s achieved */
        hw->mem = (h200 ? 143771.0 : 81559.0) * 1024 * 1024;
        hw->mem_what = "GPU memory";
        /* float32 products: cuda/backend_cuda.c keeps CUBLAS_DEFAULT_MATH (FP32, no TF32) -> 66.9 TFLOP/s;
         * --math tf32 494.7. Half-precision weights (linear_h: cublasGemmEx on the tensor cores): 989.4 */
        hw->peak = pick("math", o->math, "fp32", "tf32") ? 494.7e12 : 66.9e12;
        hw->peak_half = 989.4e12;
        hw->eff = 0.4;
        hw->mem_bw = h200 ? 4.8e12 : 3.35e12;
        hw->intra_bw = 360e9;
        hw->inter_bw = 40e9;
        hw->latency = 10e-6;
        hw->fs_bw = 10e9;
        hw->reserve = 2.0 * GIB; /* CUDA context ~0.5, cuBLAS workspace, NCCL channels: an estimate */
    } else {
        hw->mem = (double)o->node_mem * GIB / o->gpn;
        hw->mem_what = "host memory";
        hw->peak = (double)o->cores * o->sgemm_gflops * 1e9;
        hw->peak_half = hw->peak; /* half weights are converted inside the float32 GEMM path */
        hw->eff = 0.7;
        hw->mem_bw = 10e9;    /* one core streaming */
        hw->intra_bw = 5e9;   /* MPI over shared memory: copies */
        hw->inter_bw = 10e9;
        hw->latency = 2e-6;
        hw->fs_bw = 1e9;
        hw->reserve = 40.0 * 1024 * 1024; /* `minifuse --version` peaks at 23 MiB; MPI and OpenBLAS buffers */
    }
    if (o->gpu_mem > 0) hw->mem = o->gpu_mem * GIB;
    if (o->peak_tflops > 0) hw->peak = o->peak_tflops * 1e12;
    if (o->half_tflops > 0) hw->peak_half = o->half_tflops * 1e12;
    else if (o->peak_tflops > 0 && hw->backend == MF_PLAN_CPU) hw->peak_half = hw->peak;
    if (o->eff > 0) hw->eff = o->eff;
    if (o->mem_bw > 0) hw->mem_bw = o->mem_bw * 1e9;
    if (o->intra > 0) hw->intra_bw = o->intra * 1e9;
    if (o->inter > 0) hw->inter_bw = o->inter * 1e9;
    if (o->latency_us >= 0) hw->latency = o->latency_us * 1e-6;
    if (o->fs > 0) hw->fs_bw = o->fs * 1e9;
    if (o->reserve >= 0) hw->reserve = o->reserve * GIB;
}

static void job_of(const plan_opts *o, mf_plan_job *j, int *recompute_auto) {
    memset(j, 0, sizeof *j);
    j->task = pick("task", o->task, "distill", "eval") ? MF_PLAN_EVAL : MF_PLAN_DISTILL;
    read_config(o->config, &j->student);
    if (j->task == MF_PLAN_DISTILL) {
        if (o->teacher) read_config(o->teacher, &j->teacher);
        else j->teacher = j->student;
    }
    shape_student(o, &j->student);
    if (j->task == MF_PLAN_DISTILL && !o->s_layers) j->teacher_map = layer_map(o->config, j->teacher.n_layers, j->student.n_layers);
    j->seq = o->seq;
    j->micro_batch = o->micro_batch;
    j->micro_batches = o->micro_batches;
    j->pp = o->pp;
    j->dp = o->dp;
    int rc = strcmp(o->recompute, "auto") == 0 ? 2 : pick("recompute", o->recompute, "off", "on");
    *recompute_auto = rc == 2;
    j->recompute = rc == 1;
    if (o->topk < 0) mf_fatal("plan: --teacher-topk %d must not be negative", o->topk);
    j->topk = o->topk;
    j->shared_scratch = pick("scratch", o->scratch, "per-window", "shared");
    j->schedule = pick("schedule", o->schedule, "1f1b", "gpipe") ? MF_PLAN_GPIPE : MF_PLAN_1F1B;
    j->partition = pick("partition", o->partition, "joint", "separate") ? MF_PLAN_SEPARATE : MF_PLAN_JOINT;
    double tfile = dtype_bytes("teacher-dtype", o->teacher_dtype);
    const mf_config *fz = j->task == MF_PLAN_EVAL ? &j->student : &j->teacher;
    if (o->teacher_file_gb > 0) tfile = o->teacher_file_gb * 1e9 / (double)mf_config_total_params(fz);
    /* frozen weights: the file's half precision when it is one, else float32 (issue 15), or --weights */
    double held = o->weights ? (pick("weights", o->weights, "bf16", "f32") ? 4 : 2) : (mf_plan_used_in_place(tfile, 2) ? 2 : 4);
    j->teacher_wbytes = held;
}

int mf_cmd_plan(int argc, char **argv) {
    plan_opts o = {.task = "distill", .backend = "cuda", .gpu = "h100", .math = "fp32", .recompute = "auto", .schedule = "1f1b",
                   .partition = "joint", .teacher_dtype = "bf16", .scratch = "per-window", .micro_batch = 1, .seq = 4096,
                   .micro_batches = 8, .cores = 1, .sgemm_gflops = 100, .node_mem = 256, .latency_us = -1, .reserve = -1};
    const mf_opt opts[] = {
        {"config", MF_OPT_STR, &o.config, "the student's (eval: the model's) config.json, or a model minifuse reads", 1},
        {"teacher", MF_OPT_STR, &o.teacher, "the teacher's config.json or model (default: --config)", 0},
        {"task", MF_OPT_STR, &o.task, "distill (default) or eval", 0},
        {"student-layers", MF_OPT_INT, &o.s_layers, "student depth, overriding --config's (e.g. 64 for 80 -> 64)", 0},
        {"student-dim", MF_OPT_INT, &o.s_dim, "student hidden size (width pruning)", 0},
        {"student-ffn", MF_OPT_INT, &o.s_ffn, "student intermediate size", 0},
        {"student-heads", MF_OPT_INT, &o.s_heads, "student attention heads", 0},
        {"student-kv-heads", MF_OPT_INT, &o.s_kv, "student key/value heads", 0},
        {"nodes", MF_OPT_INT, &o.nodes, "nodes", 1},
        {"gpus-per-node", MF_OPT_INT, &o.gpn, "GPUs (cpu: ranks) per node", 1},
        {"backend", MF_OPT_STR, &o.backend, "cuda (default) or cpu", 0},
        {"gpu", MF_OPT_STR, &o.gpu, "h100 (default) or h200: memory, peak and bandwidth defaults", 0},
        {"math", MF_OPT_STR, &o.math, "cuda float32 GEMMs: fp32 (default: what the CUDA backend runs, 66.9 TFLOP/s) or tf32 (494.7)", 0},
        {"gpu-mem", MF_OPT_FLOAT, &o.gpu_mem, "GiB one rank may use (overrides --gpu / --node-mem)", 0},
        {"node-mem", MF_OPT_FLOAT, &o.node_mem, "cpu: GiB of host memory per node (default 256)", 0},
        {"peak-tflops", MF_OPT_FLOAT, &o.peak_tflops, "peak TFLOP/s of one rank (overrides --gpu / --cores x --sgemm-gflops)", 0},
        {"half-tflops", MF_OPT_FLOAT, &o.half_tflops, "peak TFLOP/s of GEMMs on bf16/f16 weights (default: cuda 989.4, cpu the float32 peak)", 0},
        {"cores", MF_OPT_INT, &o.cores, "cpu: cores per rank (default 1)", 0},
        {"sgemm-gflops", MF_OPT_FLOAT, &o.sgemm_gflops, "cpu: measured sgemm GFLOP/s of one core (bench/sgemm_peak.c; default 100)", 0},
        {"efficiency", MF_OPT_FLOAT, &o.eff, "fraction of the peak a step reaches (default: cuda 0.4 assumed, cpu 0.7; calibrate)", 0},
        {"mem-bw", MF_OPT_FLOAT, &o.mem_bw, "GB/s of memory bandwidth per rank (AdamW; default HBM, cpu 10)", 0},
        {"intra-bw", MF_OPT_FLOAT, &o.intra, "GB/s between ranks of a node (default NVLink 360, cpu 5)", 0},
        {"inter-bw", MF_OPT_FLOAT, &o.inter, "GB/s per rank between nodes (default 40, cpu 10)", 0},
        {"latency-us", MF_OPT_FLOAT, &o.latency_us, "microseconds per message (default 10, cpu 2)", 0},
        {"fs-bandwidth", MF_OPT_FLOAT, &o.fs, "GB/s the file system writes a checkpoint at (default 10, cpu 1)", 0},
        {"reserve", MF_OPT_FLOAT, &o.reserve, "GiB per rank outside minifuse's buffers (default cuda 2, cpu 0.04)", 0},
        {"seq", MF_OPT_INT, &o.seq, "tokens per window (distill --ctx; default 4096)", 0},
        {"micro-batch", MF_OPT_INT, &o.micro_batch, "windows per micro-batch (default 1; distill: --batch / (--dp x --micro-batches))", 0},
        {"micro-batches", MF_OPT_INT, &o.micro_batches, "micro-batches per replica per step (eval: windows; default 8)", 0},
        {"batch", MF_OPT_INT, &o.batch, "windows per optimizer step, all replicas (fixes m = batch / (dp x micro-batch))", 0},
        {"pp", MF_OPT_INT, &o.pp, "pipeline stages (with --dp: this layout only; default: search)", 0},
        {"dp", MF_OPT_INT, &o.dp, "data-parallel replicas", 0},
        {"recompute", MF_OPT_STR, &o.recompute, "activation recomputation: auto (default: off when it fits), on, off", 0},
        {"scratch", MF_OPT_STR, &o.scratch, "backward scratch: per-window (default, as distill allocates it) or shared (a what-if)", 0},
        {"schedule", MF_OPT_STR, &o.schedule, "1f1b (default) or gpipe (distill before issue 15)", 0},
        {"partition", MF_OPT_STR, &o.partition, "joint (default: teacher layers with their student layers) or separate", 0},
        {"weights", MF_OPT_STR, &o.weights, "frozen (teacher, eval) weights held as bf16 or f32 (default: bf16 for a half-precision file, else f32)", 0},
        {"teacher-dtype", MF_OPT_STR, &o.teacher_dtype, "the teacher's (eval: the model's) file: bf16 (default), f16, f32, q8_0, q4_1, q4_0", 0},
        {"teacher-file-gb", MF_OPT_FLOAT, &o.teacher_file_gb, "the teacher's file size in GB (overrides --teacher-dtype; sets the default --weights)", 0},
        {"teacher-topk", MF_OPT_INT, &o.topk, "distill --teacher-topk K: the teacher's top-K logits from the cache, no teacher forward", 0},
        {"json", MF_OPT_FLAG, &o.json, "print one JSON object", 0},
    };
    const char *summary =
        "Plan a distillation (or eval) on a cluster before submitting it: stage layout, memory per rank\n"
        "(teacher and student weights, gradients, AdamW, activations at the 1F1B peak, buffers), step time\n"
        "(compute, bubble, pipeline and gradient communication), checkpoint size and write time, tokens/s.\n"
        "Without --pp/--dp every layout is tried and the fastest that fits is recommended; a layout that\n"
        "does not fit is refused naming the stage and the term that overflow (exit status 1). See docs/planner.md.";
    if (mf_args_parse_or_die("plan", summary, opts, sizeof opts / sizeof opts[0], argc, argv)) return 0;
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank != 0) return 0;
    if (o.nodes < 1 || o.gpn < 1 || o.cores < 1 || o.seq < 2 || o.micro_batch < 1 || o.micro_batches < 1 || o.batch < 0)
        mf_fatal("plan: --nodes, --gpus-per-node, --cores, --micro-batch, --micro-batches >= 1, --seq >= 2, --batch >= 0 required");
    if ((o.pp > 0) != (o.dp > 0)) mf_fatal("plan: --pp and --dp go together (or neither, to search)");
    if (o.pp < 0 || o.dp < 0) mf_fatal("plan: --pp and --dp must be positive");
    mf_plan_hw hw;
    hardware(&o, &hw);
    mf_plan_job job;
    int rc_auto;
    job_of(&o, &job, &rc_auto);
    if (o.batch > 0 && o.pp > 0) {
        if (o.batch % (o.dp * o.micro_batch)) mf_fatal("plan: --batch %d is not a multiple of --dp %d x --micro-batch %d", o.batch, o.dp, o.micro_batch);
        job.micro_batches = o.batch / (o.dp * o.micro_batch);
    }
    plan_print_ctx pc = {&job, &hw, o.config, o.teacher ? o.teacher : o.config, o.json};
    mf_plan *all = NULL;
    int n = 0, best;
    if (o.pp > 0) {
        mf_err err;
        all = mf_malloc(2 * sizeof *all);
        if (mf_plan_compute(&job, &hw, &all[0], &err) != 0) mf_fatal_err(&err);
        n = 1;
        if (!all[0].fits && rc_auto) { /* auto: with recompute when it does not fit without */
            job.recompute = 1;
            if (mf_plan_compute(&job, &hw, &all[1], &err) != 0) mf_fatal_err(&err);
            n = 2;
        }
        best = all[n - 1].fits ? n - 1 : -1;
    } else {
        best = mf_plan_search(&job, &hw, rc_auto, o.batch, &all, &n);
        if (n == 0) mf_fatal("plan: no layout of %d ranks exists for this model and --batch", o.nodes * o.gpn);
    }
    plan_print(&pc, all, n, best);
    int rc = 0;
    if (best < 0) { /* name the overflow of the layout closest to fitting */
        int near = 0;
        for (int i = 1; i < n; i++)
            if (all[i].st[all[i].worst].mem_total < all[near].st[all[near].worst].mem_total) near = i;
        fprintf(stderr, "minifuse: error: plan: %s (pp %d x dp %d%s): %s\n",
                o.pp == 0 ? "no layout fits; the closest" : "the layout does not fit", all[near].P, all[near].dp,
                all[near].job.recompute ? ", recompute" : "", all[near].why);
        rc = 1;
    }
    for (int i = 0; i < n; i++) mf_plan_free(&all[i]);
    free(all);
    free((int *)job.teacher_map);
    return rc;
}
