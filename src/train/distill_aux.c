/* distill_aux.c - two optional parts of distillation: the intermediate
 * hidden-state loss (--hidden) and the teacher's top-K logits cache (--teacher-topk). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tags.h"
#include "train/distill_internal.h"
#include "util/log.h"
#include "util/sha256.h"

/* ----------------------------------------------------------------- hidden states */

/* Teacher layer outputs for the mapped layers are copied by a forward hook. */
void mf_distill_hidden_capture(void *ctx, int layer, mf_act_point pt, const float *x, int T, int C) {
    trainer *t = ctx;
    if (pt != MF_ACT_LAYER_OUT) return;
    for (int k = 0; k < t->hm.n; k++)
        if (t->hm.t[k] == layer) memcpy(t->hm.tbuf[k], x, (size_t)T * C * sizeof *x);
}

int mf_distill_layer_map(const char *student, int teacher_layers, int student_layers, int *map, int *n_dropped) {
    int *dropped = mf_calloc((size_t)teacher_layers + 1, sizeof *dropped), nd = 0;
    char path[4400];
    snprintf(path, sizeof path, "%s/config.json", student);
    json_t *root = json_load_file(path, 0, NULL);
    json_t *dl = json_object_get(json_object_get(root, "minifuse"), "dropped_layers");
    for (size_t i = 0; json_is_array(dl) && i < json_array_size(dl); i++) {
        json_int_t v = json_integer_value(json_array_get(dl, i));
        if (v >= 0 && v < teacher_layers && !dropped[v]) { dropped[v] = 1; nd++; }
    }
    json_decref(root);
    if (n_dropped) *n_dropped = nd;
    int ok = teacher_layers - nd == student_layers;
    for (int l = 0, k = 0; ok && l < teacher_layers; l++) if (!dropped[l]) map[k++] = l;
    free(dropped);
    return ok;
}

/* Student layer i <- teacher layer keep[i], from the student's config.json
 * ("minifuse": {"dropped_layers": [...]}) when it was depth-pruned, else identity.
 * One teacher output buffer per mapped layer (consumed right after the window's
 * forward), one gradient per micro-batch slot and owned mapped layer. */
void mf_distill_hidden_init(trainer *t) {
    hidden_map *h = &t->hm;
    const mf_config *sc = &t->student.model->cfg, *tc = &t->teacher.model->cfg;
    if (sc->dim != tc->dim) mf_fatal("distill: --hidden needs equal hidden sizes (student %d, teacher %d)", sc->dim, tc->dim);
    h->n = sc->n_layers;
    h->s = mf_malloc((size_t)h->n * sizeof *h->s);
    h->t = mf_malloc((size_t)h->n * sizeof *h->t);
    int nd;
    if (!mf_distill_layer_map(t->o.student, tc->n_layers, sc->n_layers, h->t, &nd))
        mf_fatal("distill: --hidden: student has %d layers, teacher %d with %d dropped (config.json minifuse.dropped_layers)",
                 sc->n_layers, tc->n_layers, nd);
    for (int k = 0; k < h->n; k++) h->s[k] = k;
    h->tbuf = mf_calloc((size_t)h->n, sizeof *h->tbuf);
    h->n_slots = t->n_ts;
    h->grad = mf_calloc((size_t)h->n_slots * sc->n_layers, sizeof *h->grad);
    h->req = mf_malloc((size_t)h->n * sizeof *h->req);
    size_t bytes = (size_t)t->o.ctx * sc->dim * sizeof(float);
    const mf_backend *be = t->student.model->be;
    for (int k = 0; k < h->n; k++) {
        h->req[k] = MPI_REQUEST_NULL;
        if (mf_pipe_owner(&t->teacher.pipe, h->t[k]) == t->stage) h->tbuf[k] = mf_malloc(bytes);
        int l = h->s[k];
        if (l >= t->student.model->layer_begin && l < t->student.model->layer_end) {
            for (int j = 0; j < h->n_slots; j++) h->grad[(size_t)j * sc->n_layers + l] = be->alloc(bytes);
            if (!h->tbuf[k]) h->tbuf[k] = mf_malloc(bytes); /* receive buffer */
        }
    }
    if (!be->is_host) h->tdev = be->alloc(bytes);
    h->nmse = strcmp(t->o.hidden_loss, "nmse") == 0;
    if (!h->nmse && strcmp(t->o.hidden_loss, "cosine") != 0) mf_fatal("distill: --hidden-loss '%s' is not cosine or nmse", t->o.hidden_loss);
}

/* Teacher owners send their captured outputs to the student owners (non-blocking). */
void mf_distill_hidden_send(trainer *t) {
    hidden_map *h = &t->hm;
    int T = t->o.ctx, D = t->student.model->cfg.dim;
    for (int k = 0; k < h->n; k++) {
        int to = mf_pipe_owner(&t->student.pipe, h->s[k]), from = mf_pipe_owner(&t->teacher.pipe, h->t[k]);
        if (from == t->stage && to != t->stage)
            MPI_Isend(h->tbuf[k], T * D, MPI_FLOAT, to, MF_TAG_HIDDEN + k, t->pipe, &h->req[k]);
    }
}

/* Student owners: receive the teacher outputs, loss and gradient per mapped layer
 * of the window just forwarded in ts[slot] (gradients into that slot's buffers).
 * Weighted by --hidden as a loss over norm / hidden (see distill.c's loss_and_head). */
double mf_distill_hidden_losses(trainer *t, int slot, double norm) {
    hidden_map *h = &t->hm;
    mf_model *s = t->student.model;
    int T = t->o.ctx, D = s->cfg.dim;
    double loss = 0;
    for (int k = 0; k < h->n; k++) {
        int l = h->s[k];
        float *g = h->grad[(size_t)slot * s->cfg.n_layers + l];
        if (!g) continue;
        int from = mf_pipe_owner(&t->teacher.pipe, h->t[k]);
        if (from != t->stage) MPI_Recv(h->tbuf[k], T * D, MPI_FLOAT, from, MF_TAG_HIDDEN + k, t->pipe, MPI_STATUS_IGNORE);
        const float *a = mf_train_layer_output(s, t->ts[slot], l), *b = h->tbuf[k];
        if (h->tdev) { /* the teacher's output arrived in host memory */
            s->be->upload(h->tdev, b, (size_t)T * D * sizeof *b);
            b = h->tdev;
        }
        double wn = norm * h->n / t->o.hidden;
        loss += h->nmse ? s->be->loss_nmse(a, b, T, D, wn, g) : s->be->loss_cosine(a, b, T, D, wn, g);
    }
    MPI_Waitall(h->n, h->req, MPI_STATUSES_IGNORE);
    return loss;
}

void mf_distill_hidden_free(trainer *t) {
    const mf_backend *be = t->student.model->be;
    for (int k = 0; k < t->hm.n; k++) free(t->hm.tbuf[k]);
    for (size_t i = 0; t->hm.grad && i < (size_t)t->hm.n_slots * t->student.model->cfg.n_layers; i++)
        if (t->hm.grad[i]) be->free(t->hm.grad[i]);
    if (t->hm.tdev) be->free(t->hm.tdev);
    free(t->hm.s); free(t->hm.t); free(t->hm.tbuf); free(t->hm.grad); free(t->hm.req);
}

/* ----------------------------------------------------------------- teacher top-K cache */

/* Every replica runs the teacher over its windows (w mod D == replica); its last
 * stage keeps the top K logits of every position; all ranks write one file. */
static void build_teacher_cache(trainer *t) {
    int T = t->o.ctx, K = t->o.topk, V = t->teacher.model->cfg.vocab_size;
    mf_err err;
    mf_tcache c;
    if (mf_tcache_create_v(t->o.tcache_path, t->world, K, T, t->n_windows, V, t->o.teacher, t->teacher_sha, t->o.text,
                           t->text_sha, &c, &err) != 0)
        mf_fatal_err(&err);
    int32_t *in = mf_malloc((size_t)T * sizeof *in), *ids = mf_malloc((size_t)T * K * sizeof *ids);
    float *vals = mf_malloc((size_t)T * K * sizeof *vals), *zbuf = NULL;
    size_t zcap = 0;
    mf_progress prog;
    mf_progress_start(&prog, "teacher top-K cache", (long)t->n_windows);
    int rc = 0;
    for (int64_t w = t->replica; w < t->n_windows; w += t->o.dp) {
        mf_watchdog_kick(t->wd, "teacher top-K cache");
        in[0] = t->teacher.model->cfg.bos_id;
        memcpy(in + 1, t->ids + (size_t)w * T, (size_t)(T - 1) * sizeof *in);
        if (!mf_stage_forward(&t->teacher, in, T, 0, MF_TAG_TEACHER)) continue;
        const float *z = mf_stage_to_host(&t->teacher, t->teacher.st->logits, (size_t)T * V, &zbuf, &zcap);
        for (int r = 0; r < T; r++) mf_topk(z + (size_t)r * V, V, K, ids + (size_t)r * K, vals + (size_t)r * K);
        if (rc == 0) rc = mf_tcache_put(&c, w, ids, vals, &err);
        if (t->wrank == t->P - 1) mf_progress_update(&prog, (long)(w + 1), "windows");
    }
    mf_pipe_flush(&t->teacher.pipe);
    mf_watchdog_disarm(t->wd);
    if (mf_tcache_finish(t->o.tcache_path, t->world, &c, rc, &err) != 0) mf_fatal_err(&err);
    free(in); free(ids); free(vals); free(zbuf);
}

/* The cache is keyed on the SHA-256 of the teacher and of the text: another
 * teacher, text or vocabulary rebuilds it (never a silent reuse). */
static int open_cache(trainer *t, mf_err *err) {
    return mf_tcache_open_v(t->o.tcache_path, t->o.topk, t->o.ctx, t->n_windows, t->teacher.model->cfg.vocab_size,
                            t->teacher_sha, t->text_sha, &t->tc, err);
}

void mf_distill_topk_open(trainer *t) {
    mf_err err;
    if (mf_tcache_key(t->world, t->o.teacher, t->o.text, t->teacher_sha, t->text_sha, &err) != 0) mf_fatal_err(&err);
    if (t->teacher.model->wdt != MF_DT_F32) { /* a 16-bit teacher gives other logits: another cache key */
        char key[96];
        snprintf(key, sizeof key, "%s weights %s", t->teacher_sha, mf_dtype_short(t->teacher.model->wdt));
        mf_sha256_buf(key, strlen(key), t->teacher_sha);
    }
    int rc = open_cache(t, &err);
    if (rc < 0) mf_fatal_err(&err);
    int any = mf_coll_any(&t->c_world, rc == 1);
    if (rc == 0 && (any || !t->student.pipe.last)) mf_tcache_close(&t->tc);
    if (any) {
        if (t->wrank == 0) mf_log("teacher top-%d cache %s: computing it once", t->o.topk, t->o.tcache_path);
        build_teacher_cache(t);
        if (t->student.pipe.last && open_cache(t, &err) != 0)
            mf_fatal("%s: cannot reopen the teacher cache just written", t->o.tcache_path);
    } else if (t->wrank == 0) mf_log("teacher top-%d cache %s: reusing it (no teacher forward)", t->o.topk, t->o.tcache_path);
    if (t->student.pipe.last) {
        t->tk_ids = mf_malloc((size_t)t->o.ctx * t->o.topk * sizeof *t->tk_ids);
        t->tk_logits = mf_malloc((size_t)t->o.ctx * t->o.topk * sizeof *t->tk_logits);
        const mf_backend *be = t->student.model->be;
        if (!be->is_host) t->tk_dev = be->alloc((size_t)t->o.ctx * t->o.topk * sizeof(float));
    }
}
