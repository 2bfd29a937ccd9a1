#include "cli/common.h"
#include "train/run.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"
#include "util/mmapfile.h"
#include "util/hash.h"

int32_t *mf_cli_training_tokens(const char *model, const char *tok, const char *text, size_t *n, char id[64]) {
    mf_run_catch_signals();
    int32_t *ids = mf_cli_tokenize_file(model, tok, text, n, MPI_COMM_WORLD);
    mf_cli_tokens_id(ids, *n, id, 64);
    return ids;
}

const mf_backend *mf_cli_backend(const char *cmd, const char *name) {
    const mf_backend *be = mf_backend_get(name);
    if (!be) mf_fatal("%s: --backend '%s' is not one of %s", cmd, name ? name : "", mf_backend_names());
    return be;
}

int32_t *mf_cli_tokenize_file(const char *model_path, const char *tok_path, const char *text_path, size_t *n, MPI_Comm comm) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    int32_t *ids = NULL;
    unsigned long long count = 0;
    if (rank == 0) {
        mf_err err;
        mf_source *src = mf_source_open(model_path, &err);
        if (!src) mf_fatal_err(&err);
        mf_tokenizer *tok = mf_source_load_tokenizer(src, tok_path, &err);
        if (!tok) mf_fatal_err(&err);
        size_t len;
        char *text = mf_read_file(text_path, &len, &err);
        if (!text) mf_fatal_err(&err);
        double t0 = mf_now();
        size_t cnt;
        if (mf_tok_encode(tok, text, len, 0, &ids, &cnt, &err) != 0) mf_fatal("%s: %s", text_path, err.msg);
        mf_log("tokenized %s: %zu bytes -> %zu tokens in %.2fs", text_path, len, cnt, mf_now() - t0);
        for (size_t i = 0; i < cnt; i++)
            if (ids[i] < 0 || ids[i] >= src->cfg.vocab_size)
                mf_fatal("%s: tokenizer gives id %d, outside the model's vocabulary of %d", tok_path ? tok_path : model_path,
                         ids[i], src->cfg.vocab_size);
        count = cnt;
        free(text);
        mf_tok_free(tok);
        mf_source_close(src);
    }
    MPI_Bcast(&count, 1, MPI_UNSIGNED_LONG_LONG, 0, comm);
    if (rank != 0) ids = mf_malloc((size_t)count * sizeof *ids + 1);
    for (size_t off = 0; off < count; off += (1u << 30)) {
        size_t chunk = count - off < (1u << 30) ? count - off : (1u << 30);
        MPI_Bcast(ids + off, (int)chunk, MPI_INT32_T, 0, comm);
    }
    *n = (size_t)count;
    return ids;
}

int mf_write_atomic(const char *path, const void *data, size_t bytes, mf_err *err) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return mf_err_set(err, "%s: cannot create: %s", tmp, strerror(errno));
    size_t w = fwrite(data, 1, bytes, f);
    int bad = w != bytes || fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        unlink(tmp);
        return mf_err_set(err, "%s: write failed: %s", path, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return mf_err_set(err, "%s: rename from %s failed: %s", path, tmp, strerror(errno));
    }
    return 0;
}

void mf_cli_tokens_id(const int32_t *ids, size_t n, char *out, size_t cap) {
    snprintf(out, cap, "%zu tokens, fnv1a %016llx", n,
             (unsigned long long)mf_fnv1a64(ids, n * sizeof *ids, MF_FNV1A64_SEED));
}


mf_weights mf_cli_weights(const char *cmd, const char *name) {
    mf_weights w;
    if (mf_weights_parse(name, &w) != 0) mf_fatal("%s: --weights '%s' is not one of auto, bf16, f32", cmd, name);
    return w;
}
