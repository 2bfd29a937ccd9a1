/* fuse_ckpt.c - checkpoints of a fusion run and resuming from them.
 *
 * A checkpoint holds the weights of every block changed so far (under their
 * global names, written by their owners), the MI table, and mid-iteration the
 * trainable adapters with their Adam moments (rank 0: they are replicated);
 * the progress (phase, iteration, removed blocks, per-iteration records) is the
 * `state` JSON attribute. Layout: docs/checkpoint_schema.md.
 * The views below list backend memory (their `be` says whose); what is written
 * or read goes through host copies (train/host_copy.h), so a device backend's
 * run writes the same file and resumes from either backend's. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress/fuse_internal.h"
#include "train/host_copy.h"
#include "util/log.h"

static mf_layer *model_layer(fuser *f, int l) { return &f->st.model->layers[l - f->st.model->layer_begin]; }

/* ----------------------------------------------------------------- checkpoints */

static void push_frozen(mf_params *v, const char *name, int ndim, int64_t d0, int64_t d1, float *data) {
    mf_params_push(v, name, d0, ndim == 2 ? d1 : 0, data, NULL);
}

/* This rank's blocks changed so far (and still there), as frozen tensors. */
static void frozen_view(fuser *f, mf_params *v) {
    memset(v, 0, sizeof *v);
    mf_layer_tensor lt[MF_LAYER_TENSORS];
    mf_layer_tensors(&f->st.model->cfg, lt);
    char name[160];
    for (int l = f->st.pipe.l0; l < f->st.pipe.l1; l++) {
        if (!f->touched[l] || f->removed[l]) continue;
        for (int i = 0; i < MF_LAYER_TENSORS; i++) {
            float *d = *mf_layer_slot(model_layer(f, l), &lt[i]);
            if (!d) continue;
            snprintf(name, sizeof name, "model.layers.%d.%s", l, lt[i].suffix);
            push_frozen(v, name, lt[i].d1 ? 2 : 1, lt[i].d0, lt[i].d1, d);
        }
    }
    v->be = f->st.model->be;
}

/* Checkpoint tensors: the frozen ones, then (rank 0, mid-iteration) the
 * trainable ones with their moments. opt view: NULL moments for frozen ones.
 * Every entry is memory of the model's backend (mi_buf too: mi_alloc). */
static void ckpt_view(fuser *f, int with_frozen, int with_trainable, int trainable_here, mf_params *v, mf_adamw *o,
                      float *mi_buf) {
    memset(v, 0, sizeof *v);
    if (with_frozen) frozen_view(f, v);
    v->be = f->st.model->be;
    int rows = f->it + (with_trainable ? 1 : 0);
    if (trainable_here && rows > 0) {
        size_t n = (size_t)rows * f->L0;
        float *h = mf_malloc(n * sizeof *h);
        for (size_t i = 0; i < n; i++) h[i] = (float)f->mi[i];
        v->be->upload(mi_buf, h, n * sizeof *h);
        free(h);
        push_frozen(v, "fuse.macro_influence", 2, rows, f->L0, mi_buf);
    }
    int nf = v->n;
    mf_params *lists[2] = {&f->fw.gates, &f->fw.base};
    mf_adamw *opts[2] = {&f->opt_g, &f->opt_b};
    if (with_trainable && trainable_here)
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < lists[k]->n; i++) {
                mf_param *q = &lists[k]->p[i];
                push_frozen(v, q->name, q->ndim, q->shape[0], q->shape[1], q->data);
            }
    memset(o, 0, sizeof *o);
    mf_adamw_defaults(&o->o);
    o->o.beta2 = 0.95;
    o->o.weight_decay = 0;
    o->n = v->n;
    o->step = f->opt_g.step;
    o->numel = mf_calloc((size_t)v->n + 1, sizeof *o->numel);
    o->m = mf_calloc((size_t)v->n + 1, sizeof *o->m);
    o->v = mf_calloc((size_t)v->n + 1, sizeof *o->v);
    for (int i = 0; i < v->n; i++) o->numel[i] = v->p[i].numel;
    for (int k = 0, j = nf; with_trainable && trainable_here && k < 2; k++)
        for (int i = 0; i < lists[k]->n; i++, j++) { o->m[j] = opts[k]->m[i]; o->v[j] = opts[k]->v[i]; }
}

static void ckpt_view_free(mf_params *v, mf_adamw *o) {
    free(v->p); free(o->numel); free(o->m); free(o->v);
}

/* The MI rows of a checkpoint view: backend memory for iterations so far + 1. */
static float *mi_alloc(fuser *f) { return f->st.model->be->alloc((size_t)(f->it + 1) * f->L0 * sizeof(float)); }

static char *state_json(fuser *f, int training) {
    json_t *rm = json_array(), *mi = json_array(), *tc = json_array();
    int rows = f->it + (training ? 1 : 0);
    for (int i = 0; i < f->it; i++) json_array_append_new(rm, json_integer(f->order[i]));
    for (int i = 0; i < rows; i++) {
        json_t *row = json_array();
        for (int l = 0; l < f->L0; l++) {
            double v = f->mi[(size_t)i * f->L0 + l];
            json_array_append_new(row, isnan(v) ? json_null() : json_real(v));
        }
        json_array_append_new(mi, row);
    }
    for (int l = 0; l < f->L0; l++) if (f->touched[l]) json_array_append_new(tc, json_integer(l));
    json_t *j = json_pack("{s:s, s:i, s:o, s:o, s:o, s:I, s:I}", "phase", training ? "train" : "folded", "iteration",
                          f->it, "removed", rm, "touched", tc, "mi", mi, "step", (json_int_t)(training ? f->step : 0),
                          "tokens", (json_int_t)f->tokens);
    if (training) json_object_set_new(j, "block", json_integer(f->pick));
    /* what the --json summary reports per iteration, so a resumed run still reports it */
    json_t *recs = json_array();
    for (int i = 0; i < rows; i++) {
        const mf_fuse_iter *r = &f->rec[i];
        double secs = r->seconds + (i == f->it ? mf_now() - f->iter_t0 : 0); /* the current one: so far */
        json_t *rec = json_pack("[i, i, f, f, f]", r->first, r->count, r->loss_first, r->loss_last, secs);
        json_array_append_new(rec, isnan(r->sec_mi) ? json_null() : json_real(r->sec_mi));
        json_array_append_new(rec, isnan(r->sec_train) ? json_null() : json_real(r->sec_train));
        json_array_append_new(recs, rec);
    }
    json_object_set_new(j, "records", recs);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/* The options that decide the result, as stored in the checkpoint and compared on --resume. */
static void set_options(fuser *f) {
    const mf_fuse_opts *o = &f->o;
    mf_run_set_options(&f->run, "{\"drop_layers\":%d,\"window\":%d,\"rank\":%d,\"samples\":%d,\"mi_samples\":%d,\"epochs\":%d,"
                       "\"ctx\":%d,\"batch\":%d,\"lr\":%g,\"lr_base\":%g,\"loss\":\"%s\",\"seed\":%llu,\"text\":\"%s\"}", o->drop,
                       o->window, o->rank, o->samples, o->mi_samples, o->epochs, o->ctx, o->batch, o->lr, o->lr_base,
                       o->loss_name, o->seed, f->text_id);
}

void mf_fuser_save(fuser *f, int training) {
    mf_params v, hv;
    mf_adamw o, ho;
    float *mi_buf = mi_alloc(f);
    ckpt_view(f, 1, training, f->rank == 0, &v, &o, mi_buf);
    mf_host_copy_get(&v, &o, &hv, &ho);
    set_options(f);
    mf_train_meta meta = {0};
    meta.step = f->gstep;
    meta.tokens = f->tokens;
    meta.data_pos = training ? f->step : 0;
    meta.sched = f->sched_g;
    meta.lr = training ? mf_lr_at(&f->sched_g, f->step > 0 ? f->step - 1 : 0) : 0;
    mf_rng_seed(&meta.rng, f->o.seed);
    meta.state_json = state_json(f, training);
    meta.student = (char *)f->o.model;
    char path[4400];
    double t0 = mf_now();
    mf_run_save(&f->run, 0, &hv, &ho, &meta, path, sizeof path);
    if (f->rank == 0) mf_log("checkpoint %s (%s, %d blocks removed) in %.1fs", path, training ? "mid-iteration" : "after fold", f->it, mf_now() - t0);
    free(meta.state_json);
    mf_host_copy_free(&v, &hv, &ho);
    f->st.model->be->free(mi_buf);
    ckpt_view_free(&v, &o);
}

/* ----------------------------------------------------------------- resume */

static int json_row(json_t *row, double *out, int n) {
    if (!json_is_array(row) || (int)json_array_size(row) != n) return -1;
    for (int l = 0; l < n; l++) {
        json_t *v = json_array_get(row, l);
        out[l] = json_is_null(v) ? NAN : json_number_value(v);
    }
    return 0;
}

/* Returns 1 when the checkpoint is mid-iteration (the window must be rebuilt and its state read). */
int mf_fuser_resume_state(fuser *f, const char *path, mf_err *err) {
    mf_params none = {0};
    mf_train_meta meta = {0};
    /* a previous attempt may have read part of another checkpoint */
    memset(f->removed, 0, (size_t)f->L0);
    memset(f->touched, 0, (size_t)f->L0);
    memset(f->rec, 0, (size_t)f->o.drop * sizeof *f->rec);
    f->it = 0;
    f->step = 0;
    if (mf_ckpt_read(path, 0, &none, NULL, &meta, err) != 0) return -1;
    /* --drop-layers may grow: the first iterations of a longer run are the same */
    static const char *const free_keys[] = {"drop_layers", NULL};
    set_options(f);
    mf_run_check_options(&f->run, path, meta.options_json, free_keys);
    mf_run_check_provenance(&f->run, path, meta.provenance_json);
    json_error_t je;
    json_t *j = json_loads(meta.state_json ? meta.state_json : "", 0, &je);
    if (!j) mf_fatal("%s: attribute 'state' is not fuse progress JSON (%s)", path, je.text);
    const char *phase = json_string_value(json_object_get(j, "phase"));
    json_t *rm = json_object_get(j, "removed"), *tc = json_object_get(j, "touched"), *mi = json_object_get(j, "mi");
    int training = phase && strcmp(phase, "train") == 0;
    f->it = (int)json_integer_value(json_object_get(j, "iteration"));
    if (!phase || !json_is_array(rm) || !json_is_array(tc) || !json_is_array(mi) || f->it < 0 || f->it > f->o.drop ||
        (int)json_array_size(rm) != f->it || (int)json_array_size(mi) != f->it + training)
        mf_fatal("%s: fuse progress does not match this run (--drop-layers %d): %s", path, f->o.drop, meta.state_json);
    for (int i = 0; i < f->it; i++) {
        int l = (int)json_integer_value(json_array_get(rm, i));
        if (l < 0 || l >= f->L0 || f->removed[l]) mf_fatal("%s: removed block %d is not a block of %s", path, l, f->o.model);
        if (f->o.blocks && f->o.blocks[i] != l)
            mf_fatal("%s: the checkpoint removed block %d as number %d, --blocks %s names block %d there", path, l, i + 1,
                     f->o.blocks_s, f->o.blocks[i]);
        f->order[i] = l;
        f->removed[l] = 1;
    }
    for (size_t i = 0; i < json_array_size(tc); i++) {
        json_int_t l = json_integer_value(json_array_get(tc, i));
        if (l >= 0 && l < f->L0) f->touched[l] = 1;
    }
    for (int i = 0; i < f->it + training; i++)
        if (json_row(json_array_get(mi, i), f->mi + (size_t)i * f->L0, f->L0))
            mf_fatal("%s: MI row %d does not have %d entries", path, i, f->L0);
    json_t *recs = json_object_get(j, "records"); /* absent in checkpoints of older versions */
    for (int i = 0; i < f->it + training && i < (int)json_array_size(recs); i++) {
        json_t *e = json_array_get(recs, i);
        mf_fuse_iter *r = &f->rec[i];
        r->first = (int)json_integer_value(json_array_get(e, 0));
        r->count = (int)json_integer_value(json_array_get(e, 1));
        r->loss_first = json_number_value(json_array_get(e, 2));
        r->loss_last = json_number_value(json_array_get(e, 3));
        r->seconds = json_number_value(json_array_get(e, 4));
        /* absent in checkpoints of older versions: unknown (NAN stays NAN as time is added) */
        json_t *mi_s = json_array_get(e, 5), *train_s = json_array_get(e, 6);
        r->sec_mi = json_is_number(mi_s) ? json_number_value(mi_s) : NAN;
        r->sec_train = json_is_number(train_s) ? json_number_value(train_s) : NAN;
    }
    f->gstep = meta.step;
    f->tokens = meta.tokens;
    int64_t steps = (int64_t)f->o.epochs * (f->o.samples / f->o.batch);
    if (f->gstep < 0 || f->tokens < 0 || f->tokens > (f->gstep + 1) * (int64_t)f->o.batch * f->T)
        mf_fatal("%s: progress out of range (step %lld, %lld tokens)", path, (long long)f->gstep, (long long)f->tokens);
    if (training) {
        f->pick = (int)json_integer_value(json_object_get(j, "block"));
        f->step = json_integer_value(json_object_get(j, "step"));
        if (f->step < 0 || f->step > steps)
            mf_fatal("%s: step %lld of block %d is outside this run's 0..%lld steps per block", path, (long long)f->step,
                     f->pick, (long long)steps);
        if (f->pick < 0 || f->pick >= f->L0 || f->removed[f->pick]) mf_fatal("%s: block %d cannot be removed", path, f->pick);
        if (f->o.blocks && f->o.blocks[f->it] != f->pick)
            mf_fatal("%s: the checkpoint is removing block %d as number %d, --blocks %s names block %d there", path, f->pick,
                     f->it + 1, f->o.blocks_s, f->o.blocks[f->it]);
    }
    json_decref(j);
    mf_train_meta_free(&meta);
    /* the changed blocks this rank owns: read into host memory, uploaded once whole and finite */
    mf_params v, hv;
    frozen_view(f, &v);
    mf_host_copy_get(&v, NULL, &hv, NULL);
    int rc = mf_ckpt_read(path, 0, &hv, NULL, NULL, err);
    if (rc == 0) rc = mf_params_check_finite(&hv, path, err);
    if (rc == 0) mf_host_copy_put(&hv, NULL, &v, NULL);
    mf_host_copy_free(&v, &hv, NULL);
    free(v.p);
    return rc != 0 ? -2 : training;
}

int mf_fuser_resume_window(fuser *f, const char *path, mf_err *err) {
    int64_t step = f->step;
    mf_fuser_start_window(f);
    f->step = step;
    /* every rank reads the trainable state (it is replicated); its own blocks were read already */
    mf_params v = {0}, hv;
    mf_adamw o, ho;
    float *mi_buf = mi_alloc(f);
    ckpt_view(f, 0, 1, 1, &v, &o, mi_buf);
    mf_host_copy_get(&v, &o, &hv, &ho);
    int rc = mf_ckpt_read(path, 0, &hv, &ho, NULL, err);
    mf_params tv = hv; /* the adapters and norm scales (the MI rows before them hold NaN for removed blocks) */
    int k = hv.n - f->fw.gates.n - f->fw.base.n;
    tv.p += k;
    tv.n -= k;
    if (rc == 0) rc = mf_params_check_finite(&tv, path, err);
    if (rc == 0) {
        mf_host_copy_put(&hv, &ho, &v, &o);
        f->opt_g.step = f->opt_b.step = ho.step;
    }
    mf_host_copy_free(&v, &hv, &ho);
    f->st.model->be->free(mi_buf);
    ckpt_view_free(&v, &o);
    return rc != 0 ? -1 : 0;
}

