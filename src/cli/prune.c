/* prune.c - `minifuse prune`: remove blocks and/or shrink widths by a rankings file,
 * and write a Hugging Face directory that minifuse and transformers load.
 *
 * Every rank reads the (small) rankings file and builds the same plan; each
 * rank slices the layers it owns and writes them as its own safetensors shard;
 * rank 0 writes the index and config.json. Output goes to DIR.tmp.<pid> and is
 * renamed to DIR only when complete. */
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

/* Each rank writes its shard; rank 0 the index and config; then the rename. */
static void write_output(const char *out, const char *tmpdir, mf_stage *st, const mf_prune_plan *plan, const char *extra) {
    const mf_pipe *p = &st->pipe;
    mf_err err;
    mf_tensor_ref *t;
    int n = mf_prune_slice(plan, st->model, &t);
    int *counts = mf_malloc((size_t)p->size * sizeof *counts);
    MPI_Allgather(&n, 1, MPI_INT, counts, 1, MPI_INT, p->comm);
    int shards = 0, mine = -1;
    for (int r = 0; r < p->size; r++) if (counts[r] > 0) { if (r == p->rank) mine = shards; shards++; }
    char file[256], path[4600];
    if (shards == 1) snprintf(file, sizeof file, "model.safetensors");
    else mf_hf_shard_name(file, sizeof file, mine + 1, shards);
    snprintf(path, sizeof path, "%s/%s", tmpdir, file);
    int rc = n > 0 ? mf_st_write(path, t, n, "F32", &err) : 0;
    int all;
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, p->comm);
    if (rc != 0) mf_fatal_err(&err);
    if (all != 0) mf_fatal("prune: another rank failed writing its shard");
    /* names + sizes to rank 0 for the index */
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += mf_st_tensor_bytes(&t[i], "F32");
    uint64_t total = 0;
    MPI_Reduce(&bytes, &total, 1, MPI_UINT64_T, MPI_SUM, 0, p->comm);
    size_t blen = 0;
    for (int i = 0; i < n; i++) blen += strlen(t[i].name) + 1;
    char *names = mf_malloc(blen + 1), *q = names;
    for (int i = 0; i < n; i++) { size_t l = strlen(t[i].name) + 1; memcpy(q, t[i].name, l); q += l; }
    int bl = (int)blen, *lens = mf_malloc((size_t)p->size * sizeof *lens), *displs = mf_malloc((size_t)p->size * sizeof *displs);
    MPI_Gather(&bl, 1, MPI_INT, lens, 1, MPI_INT, 0, p->comm);
    char *allnames = NULL;
    int tot_len = 0;
    if (p->rank == 0) {
        for (int r = 0; r < p->size; r++) { displs[r] = tot_len; tot_len += lens[r]; }
        allnames = mf_malloc((size_t)tot_len + 1);
    }
    MPI_Gatherv(names, bl, MPI_CHAR, allnames, lens, displs, MPI_CHAR, 0, p->comm);
    if (p->rank == 0) {
        if (shards > 1) {
            int nt = 0;
            for (int r = 0; r < p->size; r++) nt += counts[r];
            const char **nm = mf_malloc((size_t)nt * sizeof *nm), **fl = mf_malloc((size_t)nt * sizeof *fl);
            char (*fnames)[64] = mf_malloc((size_t)shards * sizeof *fnames);
            const char *cur = allnames;
            for (int r = 0, k = 0, s = 0; r < p->size; r++) {
                if (counts[r] == 0) continue;
                mf_hf_shard_name(fnames[s], sizeof fnames[s], s + 1, shards);
                for (int i = 0; i < counts[r]; i++, k++) { nm[k] = cur; fl[k] = fnames[s]; cur += strlen(cur) + 1; }
                s++;
            }
            snprintf(path, sizeof path, "%s/model.safetensors.index.json", tmpdir);
            if (mf_hf_write_index(path, nm, fl, nt, total, &err) != 0) mf_fatal_err(&err);
            free(nm); free(fl); free(fnames);
        }
        snprintf(path, sizeof path, "%s/config.json", tmpdir);
        if (mf_hf_write_config(path, &plan->new_cfg, "float32", extra, &err) != 0) mf_fatal_err(&err);
        if (rename(tmpdir, out) != 0) mf_fatal("prune: cannot rename %s to %s: %s", tmpdir, out, strerror(errno));
    }
    MPI_Barrier(p->comm);
    free(allnames); free(names); free(lens); free(displs); free(counts);
    mf_prune_tensors_free(t, n);
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
    const char *model = NULL, *rankings = NULL, *out = NULL, *tokp = NULL, *metric = "mi", *ffn = NULL, *heads = NULL, *hidden = NULL;
    mf_prune_opts o = {.align = 32};
    int force = 0, json = 0;
    const mf_opt opts[] = {
        {"model", MF_OPT_STR, &model, "model to prune: HF directory, GGUF file or llama2.c .bin", 1},
        {"rankings", MF_OPT_STR, &rankings, "rankings.h5 from `minifuse score` on this model", 0},
        {"out", MF_OPT_STR, &out, "output Hugging Face directory (must not exist unless --force)", 1},
        {"drop-layers", MF_OPT_INT, &o.drop_layers, "number of blocks to remove (default 0)", 0},
        {"metric", MF_OPT_STR, &metric, "depth metric: bi, ppl, mi (default; iterative order) or random", 0},
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
    };
    mf_err err;
    int rc = mf_args_parse("prune", "Remove blocks and shrink widths using a rankings file; write a Hugging Face directory.",
                           opts, sizeof opts / sizeof opts[0], argc, argv, &err);
    if (rc == 1) return 0;
    if (rc != 0) mf_fatal_err(&err);
    if (mf_depth_metric_parse(metric, &o.metric) != 0) mf_fatal("prune: --metric '%s' is not one of bi, ppl, mi, random", metric);
    o.ffn_keep = parse_keep("ffn-keep", ffn);
    o.heads_keep = parse_keep("heads-keep", heads);
    o.hidden_keep = parse_keep("hidden-keep", hidden);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    struct stat sb;
    if (stat(out, &sb) == 0 && !force) mf_fatal("prune: --out %s already exists (use --force to replace it)", out);

    mf_stage st;
    mf_stage_open(&st, model, MPI_COMM_WORLD, mf_backend_cpu(), 1, 1);
    mf_rankings rk = {0};
    int need_rk = o.metric != MF_DEPTH_RANDOM || ffn || heads || hidden;
    if (need_rk && !rankings) mf_fatal("prune: --rankings is required unless only random depth pruning is asked");
    if (rankings) {
        if (mf_rankings_read(rankings, &rk, &err) != 0) mf_fatal_err(&err);
        char sha[65] = "";
        if (rank == 0 && mf_sha256_path(model, sha, &err) != 0) mf_fatal_err(&err);
        MPI_Bcast(sha, 65, MPI_CHAR, 0, MPI_COMM_WORLD);
        if (mf_rankings_check_model(&rk, &st.model->cfg, sha, &err) != 0) mf_fatal("prune: %s", err.msg);
    }
    mf_prune_plan plan;
    if (mf_prune_plan_make(&plan, &st.model->cfg, &rk, &o, &err) != 0) mf_fatal_err(&err);
    if (rank == 0) log_plan(&plan);
    char tmpdir[4200];
    if (rank == 0) {
        snprintf(tmpdir, sizeof tmpdir, "%s.tmp.%d", out, (int)getpid());
        if (mkdir(tmpdir, 0755) != 0) mf_fatal("prune: cannot create %s: %s", tmpdir, strerror(errno));
        if (force && stat(out, &sb) == 0) {
            char cmd[8600];
            snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", out);
            if (system(cmd) != 0) mf_fatal("prune: cannot remove old %s", out);
        }
    }
    MPI_Bcast(tmpdir, sizeof tmpdir, MPI_CHAR, 0, MPI_COMM_WORLD);
    /* the pruned directory names the tokenizer it needs (absolute path), so eval/generate find it */
    char tok[4400], tok_abs[PATH_MAX];
    const char *tok_ref = NULL;
    if (mf_source_tokenizer_path(st.src, tokp, tok, sizeof tok) == 0 && realpath(tok, tok_abs)) tok_ref = tok_abs;
    char *extra = provenance(model, &plan, &o, rankings, metric, tok_ref);
    write_output(out, tmpdir, &st, &plan, extra);
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
    mf_stage_close(&st);
    return 0;
}
