/* prune.c - `minifuse prune`: remove blocks and/or shrink widths by a rankings file,
 * and write a Hugging Face directory that minifuse and transformers load.
 *
 * Every rank reads the (small) rankings file and builds the same plan; each
 * rank slices the layers it owns and writes them as its own safetensors shard
 * (mpi/hf_collective.c); rank 0 writes the index and config.json. Output goes
 * to DIR.tmp.<pid> and is renamed to DIR only when complete. */
#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/common.h"
#include "compress/prune.h"
#include "hf_collective.h"
#include "io/hf_write.h"
#include "stage.h"
#include "util/log.h"
#include "util/sha256.h"
#include "version.h"

/* "0.75" -> fraction, "1024" -> absolute, "" -> keep all. */
static double parse_keep(const char *opt, const char *s) {
    if (!s) return 0;
    char *end;
    double v = strtod(s, &end);
    if (*s == 0 || *end || !(v > 0)) mf_fatal("prune: --%s '%s' must be a fraction in (0,1] or a positive size", opt, s);
    return v;
}

static char *provenance(const char *model, const mf_prune_plan *p, const mf_prune_opts *o, const char *rankings, const char *metric,
                        const char *tokenizer) {
    json_t *dropped = json_array();
    for (int i = 0; i < p->old_cfg.n_layers - p->new_cfg.n_layers; i++) json_array_append_new(dropped, json_integer(p->dropped[i]));
    json_t *j = json_pack("{s:{s:s, s:s, s:s, s:o, s:s, s:b, s:i, s:i, s:i, s:i, s:s}}", "minifuse", "version", MF_VERSION,
                          "pruned_from", model, "rankings", rankings ? rankings : "", "dropped_layers", dropped,
                          "depth_metric", metric, "drop_block", o->drop_block, "ffn_dim_from", p->old_cfg.ffn_dim,
                          "hidden_from", p->old_cfg.dim, "heads_from", p->old_cfg.n_heads, "kv_heads_from",
                          p->old_cfg.n_kv_heads, "command", "prune");
    if (tokenizer) json_object_set_new(json_object_get(j, "minifuse"), "tokenizer", json_string(tokenizer));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static void log_plan(const mf_prune_plan *p) {
    const mf_config *a = &p->old_cfg, *b = &p->new_cfg;
    char drops[512] = "";
    size_t o = 0;
    for (int i = 0; i < a->n_layers - b->n_layers && o < sizeof drops - 8; i++) o += (size_t)snprintf(drops + o, sizeof drops - o, " %d", p->dropped[i]);
    mf_log("prune: layers %d -> %d (dropped:%s), ffn %d -> %d, heads %d/%d -> %d/%d, hidden %d -> %d, params %.2fM -> %.2fM",
           a->n_layers, b->n_layers, o ? drops : " none", a->ffn_dim, b->ffn_dim, a->n_heads, a->n_kv_heads, b->n_heads,
           b->n_kv_heads, a->dim, b->dim, mf_config_total_params(a) / 1e6, mf_config_total_params(b) / 1e6);
}

int mf_cmd_prune(int argc, char **argv) {
    const char *model = NULL, *rankings = NULL, *out = NULL, *tokp = NULL, *metric = "mi", *ffn = NULL, *heads = NULL, *hidden = NULL,
               *list = NULL, *backend = "cpu";
    mf_prune_opts o = {.align = 32};
    int force = 0, json = 0;
    const mf_opt opts[] = {
        {"model", MF_OPT_STR, &model, "model to prune: HF directory, GGUF file or llama2.c .bin", 1},
        {"rankings", MF_OPT_STR, &rankings, "rankings.h5 from `minifuse score` on this model", 0},
        {"out", MF_OPT_STR, &out, "output Hugging Face directory (must not exist unless --force)", 1},
        {"drop-layers", MF_OPT_INT, &o.drop_layers, "number of blocks to remove (default 0)", 0},
        {"metric", MF_OPT_STR, &metric, "depth metric: bi, ppl, mi (default; iterative order) or random", 0},
        {"drop-list", MF_OPT_STR, &list, "remove exactly these blocks (comma list of indices; no rankings needed)", 0},
        {"drop-block", MF_OPT_FLAG, &o.drop_block, "remove the contiguous block of N layers with the least importance", 0},
        {"seed", MF_OPT_U64, &o.seed, "seed for --metric random", 0},
        {"ffn-keep", MF_OPT_STR, &ffn, "MLP width to keep: fraction (0.75) or size (1024)", 0},
        {"heads-keep", MF_OPT_STR, &heads, "query heads to keep: fraction or count (equal per KV group)", 0},
        {"prune-kv-groups", MF_OPT_FLAG, &o.prune_kv_groups, "prune whole KV groups instead of queries within groups", 0},
        {"hidden-keep", MF_OPT_STR, &hidden, "hidden size to keep: fraction or size", 0},
        {"align", MF_OPT_INT, &o.align, "round kept widths to multiples of this (default 32; 256 for K-quants)", 0},
        {"tokenizer", MF_OPT_STR, &tokp, "tokenizer the output should name (default: the model's own)", 0},
        {"force", MF_OPT_FLAG, &force, "replace --out if it exists", 0},
        {"json", MF_OPT_FLAG, &json, "print a JSON summary", 0},
        {"backend", MF_OPT_STR, &backend, MF_BACKEND_HELP " (prune only reads and slices weights)", 0},
    };
    mf_err err;
    if (mf_args_parse_or_die("prune", "Remove blocks and shrink widths using a rankings file; write a Hugging Face directory.",
                           opts, sizeof opts / sizeof opts[0], argc, argv)) return 0;
    if (mf_depth_metric_parse(metric, &o.metric) != 0) mf_fatal("prune: --metric '%s' is not one of bi, ppl, mi, random", metric);
    int *drop_list = NULL;
    if (list) {
        int n_list;
        if (mf_args_int_list("prune: --drop-list", list, &drop_list, &n_list, &err) != 0) mf_fatal_err(&err);
        if (o.drop_layers && o.drop_layers != n_list)
            mf_fatal("prune: --drop-list names %d blocks but --drop-layers is %d", n_list, o.drop_layers);
        if (o.drop_block) mf_fatal("prune: --drop-list and --drop-block exclude each other");
        o.drop_layers = n_list;
        o.drop_list = drop_list;
        metric = "list";
    }
    o.ffn_keep = parse_keep("ffn-keep", ffn);
    o.heads_keep = parse_keep("heads-keep", heads);
    o.hidden_keep = parse_keep("hidden-keep", hidden);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    struct stat sb;
    if (stat(out, &sb) == 0 && !force) mf_fatal("prune: --out %s already exists (use --force to replace it)", out); /* before any work */

    mf_stage st;
    const mf_backend *be = mf_cli_backend("prune", backend);
    if (!be->is_host) mf_fatal("prune: --backend %s: slicing reads the weights in host memory; use a host backend (%s)", backend, mf_backend_names());
    mf_stage_open(&st, model, MPI_COMM_WORLD, be, 1, 1);
    mf_rankings rk = {0};
    int need_rk = (o.metric != MF_DEPTH_RANDOM && !o.drop_list) || ffn || heads || hidden;
    if (need_rk && !rankings) mf_fatal("prune: --rankings is required unless only --drop-list or random depth pruning is asked");
    if (rankings) {
        char sha[65] = "";
        if (rank == 0 && mf_sha256_path(model, sha, &err) != 0) mf_fatal_err(&err);
        MPI_Bcast(sha, 65, MPI_CHAR, 0, MPI_COMM_WORLD);
        /* the file's model shape and SHA are checked before any dataset is read */
        if (mf_rankings_read_model(rankings, &st.model->cfg, sha, &rk, &err) != 0) mf_fatal("prune: %s", err.msg);
    }
    mf_prune_plan plan;
    if (mf_prune_plan_make(&plan, &st.model->cfg, &rk, &o, &err) != 0) mf_fatal_err(&err);
    if (rank == 0) log_plan(&plan);
    if (rank == 0 && plan.new_cfg.dim % plan.new_cfg.n_heads != 0)
        mf_log("prune: warning: hidden size %d is not a multiple of %d heads; minifuse and llama.cpp load this, but "
               "transformers 5 refuses it (choose --hidden-keep and --heads-keep so that it divides)",
               plan.new_cfg.dim, plan.new_cfg.n_heads);
    /* the pruned directory names the tokenizer it needs (absolute path), so eval/generate find it */
    char tok[4400], tok_abs[PATH_MAX];
    const char *tok_ref = NULL;
    if (mf_source_tokenizer_path(st.src, tokp, tok, sizeof tok) == 0 && realpath(tok, tok_abs)) tok_ref = tok_abs;
    char *extra = provenance(model, &plan, &o, rankings, metric, tok_ref);
    mf_tensor_ref *t;
    int n = mf_prune_slice(&plan, st.model, &t);
    mf_hf_write_collective(out, MPI_COMM_WORLD, &plan.new_cfg, t, n, extra, force, "prune");
    mf_prune_tensors_free(t, n);
    if (rank == 0) {
        if (json)
            printf("{\"out\": \"%s\", \"n_layers\": %d, \"hidden_size\": %d, \"intermediate_size\": %d, \"num_attention_heads\": %d, "
                   "\"num_key_value_heads\": %d, \"params\": %lld, \"params_before\": %lld}\n", out, plan.new_cfg.n_layers,
                   plan.new_cfg.dim, plan.new_cfg.ffn_dim, plan.new_cfg.n_heads, plan.new_cfg.n_kv_heads,
                   (long long)mf_config_total_params(&plan.new_cfg), (long long)mf_config_total_params(&plan.old_cfg));
        mf_log("wrote %s", out);
    }
    free(extra);
    mf_prune_plan_free(&plan);
    if (rankings) mf_rankings_free(&rk);
    free(drop_list);
    mf_stage_close(&st);
    return 0;
}
