/* devsim.c - a device backend made of host memory, for testing the device
 * seams on a machine without a GPU (--backend devsim).
 *
 * It computes exactly what the cpu backend computes (each op calls the cpu
 * op), so a run on devsim must give the cpu run's bits. What it adds is the
 * residency rule of backend.h, enforced:
 *   - is_host = 0: the model code uploads weights, stages pipeline messages and
 *     collectives through host buffers, as it must for a GPU;
 *   - every pointer alloc() returns is "tagged": bit 62 set, which makes it a
 *     non-canonical address on x86-64 (and on AArch64 without top-byte tags),
 *     so host code that dereferences backend memory (a loop, memcpy, fwrite)
 *     faults at once, where on a GPU it would crash or read garbage;
 *   - every op checks that its backend-memory arguments are tagged and its
 *     host arguments (token ids, lse, inv_freq, the AdamW coefficients) are
 *     not, and stops naming the op and the argument otherwise.
 * Pointer arithmetic on tagged pointers (a tensor at an offset of a flat
 * buffer) stays valid: the tag is far above any offset. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "util/err.h"

#define TAG ((uintptr_t)1 << 62)

static const mf_backend *cpu(void) { return mf_backend_cpu(); }

/* Backend memory argument `arg` of `op`: tagged (or NULL), returned untagged. */
static void *dv(const void *p, const char *op, const char *arg) {
    uintptr_t u = (uintptr_t)p;
    if (!p) return NULL;
    if (!(u & TAG)) mf_fatal("devsim: %s: argument %s (%p) is host memory where backend memory is required", op, arg, p);
    return (void *)(u ^ TAG);
}

/* Host memory argument `arg` of `op`: must not be backend memory. */
static const void *hs(const void *p, const char *op, const char *arg) {
    if ((uintptr_t)p & TAG) mf_fatal("devsim: %s: argument %s (%p) is backend memory where host memory is required", op, arg, p);
    return p;
}

#define D(p, op) dv((p), op, #p)
#define H(p, op) hs((p), op, #p)

/* ---------------------------------------------------------------- memory */

static void *ds_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) mf_fatal("devsim: cannot allocate %zu bytes", bytes);
    return (void *)((uintptr_t)p | TAG);
}

static void ds_free(void *p) { free(dv(p, "free", "p")); }

static void ds_upload(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(D(dst, "upload"), H(src, "upload"), bytes);
}

static void ds_download(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy((void *)H(dst, "download"), D(src, "download"), bytes);
}

static void ds_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(D(dst, "copy"), D(src, "copy"), bytes);
}

static void ds_zero(void *p, size_t bytes) {
    if (bytes) memset(D(p, "zero"), 0, bytes);
}

static void ds_sync(void) {}

/* ---------------------------------------------------------------- forward */

static void ds_linear(float *y, const float *x, const float *w, const float *b, int T, int n_in, int n_out, int acc) {
    cpu()->linear(D(y, "linear"), D(x, "linear"), D(w, "linear"), D(b, "linear"), T, n_in, n_out, acc);
}

static void ds_rmsnorm(float *y, float *rinv, const float *x, const float *w, int T, int C, float eps) {
    cpu()->rmsnorm(D(y, "rmsnorm"), D(rinv, "rmsnorm"), D(x, "rmsnorm"), D(w, "rmsnorm"), T, C, eps);
}

static void ds_rope(float *x, int T, int n_heads, int hd, int pos0, const float *inv_freq) {
    cpu()->rope(D(x, "rope"), T, n_heads, hd, pos0, H(inv_freq, "rope"));
}

static void ds_attention(float *out, const float *q, const float *kc, const float *vc, int T, int pos0, int nh, int nkv,
                         int hd) {
    cpu()->attention(D(out, "attention"), D(q, "attention"), D(kc, "attention"), D(vc, "attention"), T, pos0, nh, nkv, hd);
}

static void ds_swiglu(float *h, const float *g, const float *u, size_t n) {
    cpu()->swiglu(D(h, "swiglu"), D(g, "swiglu"), D(u, "swiglu"), n);
}

static void ds_add(float *y, const float *x, size_t n) { cpu()->add(D(y, "add"), D(x, "add"), n); }

static void ds_embed(float *x, const float *table, const int32_t *ids, int T, int C) {
    cpu()->embed(D(x, "embed"), D(table, "embed"), H(ids, "embed"), T, C);
}

static void ds_linear_h(float *y, const float *x, const uint16_t *w, mf_dtype dt, const float *b, int T, int n_in, int n_out,
                        int acc) {
    cpu()->linear_h(D(y, "linear_h"), D(x, "linear_h"), D(w, "linear_h"), dt, D(b, "linear_h"), T, n_in, n_out, acc);
}

static void ds_embed_h(float *x, const uint16_t *table, mf_dtype dt, const int32_t *ids, int T, int C) {
    cpu()->embed_h(D(x, "embed_h"), D(table, "embed_h"), dt, H(ids, "embed_h"), T, C);
}

static void ds_logsumexp(const float *logits, int T, int V, double *lse) {
    cpu()->logsumexp(D(logits, "logsumexp"), T, V, (double *)H(lse, "logsumexp"));
}

static void ds_nll(const float *logits, const int32_t *targets, int T, int V, double *nll) {
    cpu()->nll(D(logits, "nll"), H(targets, "nll"), T, V, (double *)H(nll, "nll"));
}

static void ds_kl_rows(const float *zp, const float *zq, int T, int V, double *kl, int32_t *same) {
    cpu()->kl_rows(D(zp, "kl_rows"), D(zq, "kl_rows"), T, V, (double *)H(kl, "kl_rows"), (int32_t *)H(same, "kl_rows"));
}

/* ---------------------------------------------------------------- training */

static void ds_linear_bwd(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int T, int n_in,
                          int n_out, int acc) {
    const char *o = "linear_bwd";
    cpu()->linear_bwd(D(dx, o), D(dW, o), D(db, o), D(dy, o), D(x, o), D(W, o), T, n_in, n_out, acc);
}

static void ds_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rinv, int T,
                           int C, int acc) {
    const char *o = "rmsnorm_bwd";
    cpu()->rmsnorm_bwd(D(dx, o), D(dw, o), D(dy, o), D(x, o), D(w, o), D(rinv, o), T, C, acc);
}

static void ds_rope_bwd(float *dx, int T, int n_heads, int hd, int pos0, const float *inv_freq) {
    cpu()->rope_bwd(D(dx, "rope_bwd"), T, n_heads, hd, pos0, H(inv_freq, "rope_bwd"));
}

static void ds_attention_bwd(float *dq, float *dk, float *dv_, const float *dout, const float *q, const float *k,
                             const float *v, int T, int nh, int nkv, int hd) {
    const char *o = "attention_bwd";
    cpu()->attention_bwd(D(dq, o), D(dk, o), D(dv_, o), D(dout, o), D(q, o), D(k, o), D(v, o), T, nh, nkv, hd);
}

static void ds_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
    const char *o = "swiglu_bwd";
    cpu()->swiglu_bwd(D(dg, o), D(du, o), D(dh, o), D(g, o), D(u, o), n);
}

static void ds_embed_bwd(float *dE, const float *dx, const int32_t *ids, int T, int C, int V) {
    cpu()->embed_bwd(D(dE, "embed_bwd"), D(dx, "embed_bwd"), H(ids, "embed_bwd"), T, C, V);
}

static double ds_loss_ce(const float *logits, const int32_t *targets, int T, int V, double norm, float *dlogits) {
    return cpu()->loss_ce(D(logits, "loss_ce"), H(targets, "loss_ce"), T, V, norm, D(dlogits, "loss_ce"));
}

static double ds_loss_kl(const float *zs, const float *zt, int T, int V, float tau, double norm, float *dzs) {
    return cpu()->loss_kl(D(zs, "loss_kl"), D(zt, "loss_kl"), T, V, tau, norm, D(dzs, "loss_kl"));
}

static double ds_loss_kl_topk(const float *zs, const int32_t *ids, const float *zt_k, int T, int V, int K, float tau,
                              double norm, float *dzs) {
    const char *o = "loss_kl_topk";
    return cpu()->loss_kl_topk(D(zs, o), H(ids, o), D(zt_k, o), T, V, K, tau, norm, D(dzs, o));
}

static double ds_loss_cosine(const float *a, const float *b, int T, int C, double norm, float *da) {
    return cpu()->loss_cosine(D(a, "loss_cosine"), D(b, "loss_cosine"), T, C, norm, D(da, "loss_cosine"));
}

static double ds_loss_nmse(const float *a, const float *b, int T, int C, double norm, float *da) {
    return cpu()->loss_nmse(D(a, "loss_nmse"), D(b, "loss_nmse"), T, C, norm, D(da, "loss_nmse"));
}

static void ds_fuse_weight(float *W_eff, const float *W, const float *P, const float *A, const float *B, const float *U,
                           const float *V, int out, int in, int r, float *scratch) {
    const char *o = "fuse_weight";
    cpu()->fuse_weight(D(W_eff, o), D(W, o), D(P, o), D(A, o), D(B, o), D(U, o), D(V, o), out, in, r, D(scratch, o));
}

static void ds_fuse_weight_bwd(float *dA, float *dB, float *dU, float *dV, const float *G, const float *P, const float *A,
                               const float *B, const float *U, const float *V, int out, int in, int r, float *scratch) {
    const char *o = "fuse_weight_bwd";
    cpu()->fuse_weight_bwd(D(dA, o), D(dB, o), D(dU, o), D(dV, o), D(G, o), D(P, o), D(A, o), D(B, o), D(U, o), D(V, o),
                           out, in, r, D(scratch, o));
}

static double ds_loss_kl_batch(const float *S, const float *Tt, int B, size_t n, double norm, float *dS) {
    return cpu()->loss_kl_batch(D(S, "loss_kl_batch"), D(Tt, "loss_kl_batch"), B, n, norm, D(dS, "loss_kl_batch"));
}

static void ds_adamw(float *p, const float *grad, float *m, float *v, size_t n, float scale, const mf_adamw_coef *k) {
    cpu()->adamw(D(p, "adamw"), D(grad, "adamw"), D(m, "adamw"), D(v, "adamw"), n, scale, H(k, "adamw"));
}

static double ds_sumsq(const float *x, size_t n) { return cpu()->sumsq(D(x, "sumsq"), n); }

static const mf_backend DEVSIM = {
    .name = "devsim",
    .is_host = 0,
    .alloc = ds_alloc,
    .free = ds_free,
    .upload = ds_upload,
    .download = ds_download,
    .copy = ds_copy,
    .zero = ds_zero,
    .sync = ds_sync,
    .linear = ds_linear,
    .rmsnorm = ds_rmsnorm,
    .rope = ds_rope,
    .attention = ds_attention,
    .swiglu = ds_swiglu,
    .add = ds_add,
    .embed = ds_embed,
    .linear_h = ds_linear_h,
    .embed_h = ds_embed_h,
    .logsumexp = ds_logsumexp,
    .nll = ds_nll,
    .kl_rows = ds_kl_rows,
    .linear_bwd = ds_linear_bwd,
    .rmsnorm_bwd = ds_rmsnorm_bwd,
    .rope_bwd = ds_rope_bwd,
    .attention_bwd = ds_attention_bwd,
    .swiglu_bwd = ds_swiglu_bwd,
    .embed_bwd = ds_embed_bwd,
    .loss_ce = ds_loss_ce,
    .loss_kl = ds_loss_kl,
    .loss_kl_topk = ds_loss_kl_topk,
    .loss_cosine = ds_loss_cosine,
    .loss_nmse = ds_loss_nmse,
    .fuse_weight = ds_fuse_weight,
    .fuse_weight_bwd = ds_fuse_weight_bwd,
    .loss_kl_batch = ds_loss_kl_batch,
    .adamw = ds_adamw,
    .sumsq = ds_sumsq,
};

const mf_backend *mf_backend_devsim(void) { return &DEVSIM; }
