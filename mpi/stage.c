#include "stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

void mf_stage_open(mf_stage *s, const char *path, MPI_Comm comm, const mf_backend *be, int max_T, int max_ctx) {
    mf_stage_open_full(s, path, comm, be, max_T, max_ctx, MF_WEIGHTS_F32, NULL);
}

void mf_stage_open_w(mf_stage *s, const char *path, MPI_Comm comm, const mf_backend *be, int max_T, int max_ctx,
                     mf_weights w) {
    mf_stage_open_full(s, path, comm, be, max_T, max_ctx, w, NULL);
}

void mf_stage_open_bounds(mf_stage *s, const char *path, MPI_Comm comm, const mf_backend *be, int max_T, int max_ctx,
                          const int *bounds) {
    mf_stage_open_full(s, path, comm, be, max_T, max_ctx, MF_WEIGHTS_F32, bounds);
}

void mf_stage_open_full(mf_stage *s, const char *path, MPI_Comm comm, const mf_backend *be, int max_T, int max_ctx,
                        mf_weights w, const int *bounds) {
    mf_err err;
    memset(s, 0, sizeof *s);
    s->src = mf_source_open(path, &err);
    if (!s->src) mf_fatal_err(&err);
    if (mf_config_check_ctx(&s->src->cfg, max_ctx, path, &err) != 0) mf_fatal_err(&err); /* e.g. a sliding window */
    int rc = bounds ? mf_pipe_init_bounds(&s->pipe, comm, bounds, s->src->cfg.n_layers, &err)
                    : mf_pipe_init(&s->pipe, comm, &s->src->cfg, max_ctx, &err);
    if (rc != 0) mf_fatal_err(&err);
    s->pipe.be = be;
    s->model = mf_model_load_w(s->src, be, s->pipe.l0, s->pipe.l1, s->pipe.first, s->pipe.last, w, &err);
    if (!s->model) mf_fatal_err(&err);
    s->st = mf_state_new(s->model, max_T, max_ctx);
}

const float *mf_stage_to_host(const mf_stage *s, const float *dev, size_t n, float **buf, size_t *cap) {
    const mf_backend *be = s->model->be;
    if (be->is_host) return dev;
    if (n > *cap) {
        free(*buf);
        *buf = mf_malloc(n * sizeof **buf);
        *cap = n;
    }
    be->download(*buf, dev, n * sizeof **buf);
    return *buf;
}

void mf_stage_close(mf_stage *s) {
    if (s->model) {
        mf_state_free(s->model, s->st);
        mf_model_free(s->model);
    }
    mf_pipe_free(&s->pipe);
    mf_source_close(s->src);
    memset(s, 0, sizeof *s);
}

int mf_stage_forward_ex(mf_stage *s, const int32_t *ids, int T, int pos0, int tag, const unsigned char *skip, int head) {
    size_t n = (size_t)T * s->model->cfg.dim;
    if (s->pipe.first) mf_forward_embed(s->model, s->st, ids, T);
    else mf_pipe_recv_prev(&s->pipe, s->st->x, n, tag);
    mf_forward_range(s->model, s->st, T, pos0, s->pipe.l0, s->pipe.l1, skip);
    if (!s->pipe.last) {
        mf_pipe_send_next(&s->pipe, s->st->x, n, tag);
        return 0;
    }
    if (head) mf_forward_head(s->model, s->st, T);
    return 1;
}

int mf_stage_forward(mf_stage *s, const int32_t *ids, int T, int pos0, int tag) {
    return mf_stage_forward_ex(s, ids, T, pos0, tag, NULL, 1);
}

int mf_stage_forward_without(mf_stage *s, float *const *cache, const unsigned char *skip, int drop, int T, int head,
                             int tag) {
    mf_pipe *p = &s->pipe;
    size_t n = (size_t)T * s->model->cfg.dim;
    if (drop >= p->l1) return 0; /* starts on a later rank */
    int from = p->l0;
    if (drop >= p->l0) {
        s->model->be->upload(s->st->x, cache[drop - p->l0], n * sizeof(float)); /* the cache is host memory */
        from = drop + 1;
    } else mf_pipe_recv_prev(p, s->st->x, n, tag);
    mf_forward_range(s->model, s->st, T, 0, from, p->l1, skip);
    if (!p->last) {
        mf_pipe_send_next(p, s->st->x, n, tag);
        return 0;
    }
    if (head) mf_forward_head(s->model, s->st, T);
    return 1;
}

void mf_stage_log_layout(const mf_stage *s, const char *what) {
    const mf_config *c = &s->model->cfg;
    mf_log("%s: %s layers [%d, %d) of %d%s%s (%s, dim %d, heads %d/%d, vocab %d), %.1f MiB of %s weights on this rank", what,
           s->src->path, s->pipe.l0, s->pipe.l1, c->n_layers, s->pipe.first ? " + embedding" : "",
           s->pipe.last ? " + head" : "", mf_format_name(s->src->format), c->dim, c->n_heads, c->n_kv_heads,
           c->vocab_size, mf_model_weight_bytes(s->model) / 1048576.0, mf_dtype_short(s->model->wdt));
}
