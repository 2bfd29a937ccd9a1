/* logits.c - `minifuse logits`: raw float32 logits [n_ids][vocab] for given ids. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/args.h"
#include "cli/common.h"
#include "stage.h"
#include "util/log.h"

int mf_cmd_logits(int argc, char **argv) {
    const char *model = NULL, *ids_s = NULL, *out = NULL, *backend = "cpu", *weights = "auto";
    const mf_opt opts[] = {
        {"model", MF_OPT_STR, &model, "model: HF directory, GGUF file or llama2.c .bin", 1},
        {"ids", MF_OPT_STR, &ids_s, "comma-separated token ids, e.g. 1,403,407", 1},
        {"out", MF_OPT_STR, &out, "output file: little-endian float32 [n_ids][vocab]", 1},
        {"backend", MF_OPT_STR, &backend, MF_BACKEND_HELP, 0},
        {"weights", MF_OPT_STR, &weights, MF_WEIGHTS_HELP, 0},
    };
    mf_err err;
    if (mf_args_parse_or_die("logits", "Write the logits of every position of one sequence, for golden checks.", opts,
                           sizeof opts / sizeof opts[0], argc, argv)) return 0;
    int *ids, n;
    if (mf_args_int_list("logits: --ids", ids_s, &ids, &n, &err) != 0) mf_fatal_err(&err);
    const mf_backend *be = mf_cli_backend("logits", backend);
    mf_stage s;
    mf_stage_open_w(&s, model, MPI_COMM_WORLD, be, n, n, mf_cli_weights("logits", weights));
    int V = s.model->cfg.vocab_size;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) mf_fatal("logits: --ids entry %d (%d) is outside the vocabulary of %d", i, ids[i], V);
    int32_t *in = mf_malloc((size_t)n * sizeof *in);
    for (int i = 0; i < n; i++) in[i] = ids[i];
    if (mf_stage_forward(&s, in, n, 0, 1)) {
        float *host = mf_malloc((size_t)n * V * sizeof *host);
        be->download(host, s.st->logits, (size_t)n * V * sizeof *host);
        if (mf_write_atomic(out, host, (size_t)n * V * sizeof *host, &err) != 0) mf_fatal_err(&err);
        mf_log("wrote %s: [%d][%d] float32", out, n, V);
        free(host);
    }
    mf_pipe_flush(&s.pipe);
    MPI_Barrier(MPI_COMM_WORLD);
    free(in);
    free(ids);
    mf_stage_close(&s);
    return 0;
}
