/* test_rankings.c - the rankings file (parallel HDF5 writer, serial reader) and SHA-256.
 *
 * Independent references: h5py/numpy (tests/rankings_h5py.py checks files we
 * write and wrote the golden tests/golden/rankings/h5py_tiny.h5 we read),
 * h5dump, sha256sum, Python hashlib, FIPS 180-2 test vectors. Multi-rank
 * writing runs build/tests/tools/rankings_writer under mpirun. The scores are
 * the synthetic ones of tests/rankings_synth.h. */
#include <criterion/criterion.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/rankings.h"
#include "rankings_synth.h"
#include "testutil.h"
#include "util/sha256.h"
#include "version.h"

#define WRITER "build/tests/tools/rankings_writer"
#define GOLDEN "tests/golden/rankings/h5py_tiny.h5"

TestSuite(rankings, .init = tu_mpi_init, .timeout = 120);

/* ---- helpers ---- */


/* Write the synthetic scores from this process alone (all layers). */
static int write_synth(const char *path, unsigned width_mask, int depth_on, const char *sha, mf_err *err) {
    mf_layer_scores *s = rs_layers(0, RS_LAYERS, width_mask);
    mf_rankings_meta m;
    rs_meta(&m, sha);
    mf_depth_scores d;
    double bi[RS_LAYERS], ppl[RS_LAYERS], mi[RS_MI_ITER * RS_LAYERS];
    rs_depth(&d, bi, ppl, mi);
    int rc = mf_rankings_write(path, MPI_COMM_WORLD, &m, 0, RS_LAYERS, s, depth_on ? &d : NULL, err);
    rs_free_layers(s, RS_LAYERS);
    return rc;
}

static void read_ok(const char *path, mf_rankings *r) {
    mf_err err = {{0}};
    int rc = mf_rankings_read(path, r, &err);
    cr_assert_eq(rc, 0, "read %s: %s", path, err.msg);
}

/* Read must fail; returns the message (static). */
static const char *read_fails(const char *path) {
    static mf_err err;
    mf_rankings r;
    memset(&err, 0, sizeof err);
    int rc = mf_rankings_read(path, &r, &err);
    cr_assert_eq(rc, -1, "%s: read should fail", path);
    cr_assert(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    cr_assert(strchr(err.msg, '\n') == NULL, "message is not one line: %s", err.msg);
    return err.msg;
}

static void expect_msg(const char *msg, const char *part) {
    cr_assert(strstr(msg, part) != NULL, "expected '%s' in: %s", part, msg);
}

/* Every value of r against the synthetic formula (bit-exact). */
static void check_synth(const mf_rankings *r, unsigned width_mask, int depth_on) {
    const mf_rankings_meta *m = &r->meta;
    cr_assert_eq(m->n_layers, RS_LAYERS);
    cr_assert_eq(m->hidden_size, RS_HIDDEN);
    cr_assert_eq(m->intermediate_size, RS_FFN);
    cr_assert_eq(m->n_heads, RS_HEADS);
    cr_assert_eq(m->n_kv_heads, RS_KV);
    cr_assert_eq(m->head_dim, RS_HEAD_DIM);
    cr_assert_eq(m->vocab_size, RS_VOCAB);
    cr_assert_eq(m->n_tokens, 256);
    cr_assert_eq(m->n_samples, 4);
    cr_assert_eq(m->ctx, 64);
    cr_assert_str_eq(m->created, "2025-01-01T00:00:00Z");
    cr_assert_str_eq(m->model_path, "synthetic/model");
    cr_assert_str_eq(m->data_path, "synthetic/data.txt");
    unsigned want = width_mask | (depth_on ? MF_RK_BI | MF_RK_PPL | MF_RK_MI : 0);
    cr_assert_eq(r->metrics, want, "metrics 0x%x, expected 0x%x", r->metrics, want);
    for (int l = 0; l < RS_LAYERS && (width_mask & MF_RK_WIDTH); l++)
        for (int k = 0; k < 4; k++) {
            const double *v = k == 0 ? r->layers[l].mlp_neurons : k == 1 ? r->layers[l].attn_heads
                              : k == 2 ? r->layers[l].emb_attn_norm : r->layers[l].emb_mlp_norm;
            if (!(width_mask & (1u << k))) {
                cr_assert_null(v);
                continue;
            }
            cr_assert_not_null(v);
            for (int i = 0; i < rs_width_len(k); i++)
                cr_assert(v[i] == rs_synth(l, k, i), "layer %d metric %d [%d]: %.17g", l, k, i, v[i]);
        }
    if ((width_mask & MF_RK_EMB_ATTN_NORM) && (width_mask & MF_RK_EMB_MLP_NORM)) {
        cr_assert_not_null(r->width_emb);
        for (int i = 0; i < RS_HIDDEN; i++) {
            double e = 0;
            for (int l = 0; l < RS_LAYERS; l++) e += rs_synth(l, 2, i) + rs_synth(l, 3, i);
            cr_assert(fabs(r->width_emb[i] - e) <= 1e-12 * fabs(e) + 1e-12, "emb[%d] %.17g vs %.17g", i,
                      r->width_emb[i], e);
        }
    } else {
        cr_assert_null(r->width_emb);
    }
    if (!depth_on) {
        cr_assert(!r->depth.bi && !r->depth.ppl && !r->depth.mi && !r->order_bi && !r->order_ppl);
        return;
    }
    double bi[RS_LAYERS], ppl[RS_LAYERS], mi[RS_MI_ITER * RS_LAYERS];
    mf_depth_scores d;
    rs_depth(&d, bi, ppl, mi);
    cr_assert_eq(memcmp(r->depth.bi, bi, sizeof bi), 0);
    cr_assert_eq(memcmp(r->depth.ppl, ppl, sizeof ppl), 0);
    cr_assert_eq(r->depth.ppl_full, 9.5);
    cr_assert_eq(r->depth.n_mi_iter, RS_MI_ITER);
    for (int i = 0; i < RS_MI_ITER * RS_LAYERS; i++)
        cr_assert(isnan(mi[i]) ? isnan(r->depth.mi[i]) : r->depth.mi[i] == mi[i], "mi[%d]", i);
    for (int t = 0; t < RS_MI_ITER; t++) cr_assert_eq(r->depth.mi_order[t], rs_mi_order[t]);
    /* orders by hand: bi = synth(l,4,0) ascending; ppl ascending, ties by index */
    static const int want_bi[RS_LAYERS] = {4, 3, 2, 6, 1, 5, 0}, want_ppl[RS_LAYERS] = {0, 5, 3, 1, 6, 4, 2};
    for (int l = 0; l < RS_LAYERS; l++) {
        cr_assert_eq(r->order_bi[l], want_bi[l], "order_bi[%d] = %d", l, r->order_bi[l]);
        cr_assert_eq(r->order_ppl[l], want_ppl[l], "order_ppl[%d] = %d", l, r->order_ppl[l]);
    }
}

static void make_config(mf_config *c) {
    memset(c, 0, sizeof *c);
    c->n_layers = RS_LAYERS; c->dim = RS_HIDDEN; c->ffn_dim = RS_FFN; c->n_heads = RS_HEADS;
    c->n_kv_heads = RS_KV; c->head_dim = RS_HEAD_DIM; c->vocab_size = RS_VOCAB;
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    void *b = tu_read(from, &n);
    cr_assert_not_null(b, "cannot read %s", from);
    tu_write(to, b, n);
    free(b);
}

static void hex_of_cmd(const char *cmd, char hex[65]) {
    char *out = NULL, *err = NULL;
    int rc = tu_run(cmd, &out, &err);
    cr_assert_eq(rc, 0, "%s failed: %s", cmd, err);
    cr_assert(strlen(out) >= 64, "%s printed: %s", cmd, out);
    memcpy(hex, out, 64);
    hex[64] = 0;
    free(out);
    free(err);
}

/* ---- SHA-256 ---- */

Test(rankings, sha256_fips_vectors) {
    char hex[65];
    mf_sha256_buf("abc", 3, hex);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    mf_sha256_buf("", 0, hex);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    mf_sha256_buf(two, strlen(two), hex);
    cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* one million 'a', fed in uneven pieces */
    mf_sha256 s;
    uint8_t dg[32];
    char a[997];
    memset(a, 'a', sizeof a);
    mf_sha256_init(&s);
    for (size_t done = 0; done < 1000000;) {
        size_t n = 1000000 - done < sizeof a ? 1000000 - done : (done % 7) + 990;
        mf_sha256_update(&s, a, n);
        done += n;
    }
    mf_sha256_final(&s, dg);
    mf_sha256_hex(dg, hex);
    cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

Test(rankings, sha256_files_match_sha256sum) {
    const char *dir = tu_tmpdir();
    static const size_t sizes[] = {0, 1, 55, 56, 63, 64, 65, 119, 120, 1000003, (1 << 20) + 17};
    char cmd[4500], want[65], got[65];
    mf_err err = {{0}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *b = malloc(sizes[i] + 1);
        uint32_t x = 12345 + (uint32_t)i;
        for (size_t j = 0; j < sizes[i]; j++) b[j] = (unsigned char)((x = x * 1664525u + 1013904223u) >> 24);
        char *p = tu_path_in(dir, "f.bin");
        tu_write(p, b, sizes[i]);
        snprintf(cmd, sizeof cmd, "sha256sum %s", p);
        hex_of_cmd(cmd, want);
        cr_assert_eq(mf_sha256_path(p, got, &err), 0, "%s", err.msg);
        cr_assert_str_eq(got, want, "size %zu", sizes[i]);
        free(b);
        free(p);
    }
    /* a real model file (streams ~100 MB) */
    const char *gguf = tu_smollm2();
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", gguf);
    hex_of_cmd(cmd, want);
    cr_assert_eq(mf_sha256_path(gguf, got, &err), 0, "%s", err.msg);
    cr_assert_str_eq(got, want);
}

Test(rankings, sha256_directory_matches_hashlib) {
    const char *dir = tu_tmpdir();
    char *p;
    tu_write(p = tu_path_in(dir, "b.bin"), "\0\1\2", 3); free(p);
    tu_write(p = tu_path_in(dir, "a.txt"), "hello\n", 6); free(p);
    tu_write(p = tu_path_in(dir, "B_upper"), "", 0); free(p);
    tu_write(p = tu_path_in(dir, ".hidden"), "skip me", 7); free(p);
    mkdir(p = tu_path_in(dir, "sub"), 0755); free(p);
    char cmd[8192], want[65], got[65];
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import hashlib, os, sys; d = sys.argv[1]; h = hashlib.sha256()\n"
             "for n in sorted(os.listdir(d), key=os.fsencode):\n"
             "    q = os.path.join(d, n)\n"
             "    if n.startswith('.') or not os.path.isfile(q): continue\n"
             "    b = open(q, 'rb').read(); h.update(os.fsencode(n) + bytes(1) + len(b).to_bytes(8, 'little') + b)\n"
             "print(h.hexdigest())\" %s", dir);
    hex_of_cmd(cmd, want);
    mf_err err = {{0}};
    cr_assert_eq(mf_sha256_path(dir, got, &err), 0, "%s", err.msg);
    cr_assert_str_eq(got, want);
    /* errors name the path */
    char *missing = tu_path_in(dir, "nope");
    cr_assert_eq(mf_sha256_path(missing, got, &err), -1);
    expect_msg(err.msg, missing);
    free(missing);
    const char *empty = tu_tmpdir();
    cr_assert_eq(mf_sha256_path(empty, got, &err), -1);
    expect_msg(err.msg, empty);
}

/* ---- write / read in one process ---- */

Test(rankings, roundtrip_all_metrics) {
    char *path = tu_path_in(tu_tmpdir(), "r.h5");
    mf_err err = {{0}};
    cr_assert_eq(write_synth(path, MF_RK_WIDTH, 1, "cd", &err), 0, "%s", err.msg);
    char cmd[4300], *ls = NULL;
    snprintf(cmd, sizeof cmd, "ls -A $(dirname %s)", path);
    cr_assert_eq(tu_run(cmd, &ls, NULL), 0);
    cr_assert_str_eq(ls, "r.h5\n", "temporary file left behind: %s", ls);
    free(ls);
    mf_rankings r;
    read_ok(path, &r);
    check_synth(&r, MF_RK_WIDTH, 1);
    cr_assert_str_eq(r.meta.software_version, MF_VERSION);
    cr_assert_str_eq(r.meta.model_sha256, "cd");
    cr_assert_str_eq(r.meta.data_sha256, "");
    cr_assert_str_eq(r.meta.options, "{\"ctx\": 64, \"n_samples\": 4}");
    cr_assert_str_eq(r.path, path);
    mf_rankings_free(&r);
    mf_rankings_free(&r); /* idempotent */
    free(path);
}

Test(rankings, roundtrip_subset_and_default_created) {
    char *path = tu_path_in(tu_tmpdir(), "r.h5");
    mf_layer_scores *s = rs_layers(0, RS_LAYERS, MF_RK_MLP_NEURONS);
    mf_rankings_meta m;
    rs_meta(&m, NULL);
    m.created = NULL; /* -> now */
    double bi[RS_LAYERS];
    for (int l = 0; l < RS_LAYERS; l++) bi[l] = rs_synth(l, 4, 0);
    mf_depth_scores d = {.bi = bi};
    mf_err err = {{0}};
    cr_assert_eq(mf_rankings_write(path, MPI_COMM_WORLD, &m, 0, RS_LAYERS, s, &d, &err), 0, "%s", err.msg);
    rs_free_layers(s, RS_LAYERS);
    mf_rankings r;
    read_ok(path, &r);
    cr_assert_eq(r.metrics, MF_RK_MLP_NEURONS | MF_RK_BI);
    cr_assert_not_null(r.layers[6].mlp_neurons);
    cr_assert_null(r.layers[6].attn_heads);
    cr_assert_null(r.width_emb);
    cr_assert_null(r.depth.ppl);
    cr_assert_eq(r.depth.n_mi_iter, 0);
    cr_assert_eq(memcmp(r.depth.bi, bi, sizeof bi), 0);
    cr_assert_eq(r.order_bi[0], 4);
    const char *c = r.meta.created; /* 2025-01-31T12:00:00Z */
    cr_assert(strlen(c) == 20 && c[4] == '-' && c[10] == 'T' && c[19] == 'Z', "created '%s'", c);
    mf_rankings_free(&r);
    /* h5py sees exactly these groups */
    char cmd[4500], *out = NULL;
    snprintf(cmd, sizeof cmd, "python3 -c \"import h5py, sys; f = h5py.File(sys.argv[1]); "
                              "print(sorted(f), sorted(f['depth']), f.attrs['metrics'].decode())\" %s", path);
    cr_assert_eq(tu_run(cmd, &out, NULL), 0);
    cr_assert_str_eq(out, "['depth', 'layers', 'orders'] ['bi'] mlp_neurons,bi\n");
    free(out);
    free(path);
}

Test(rankings, h5py_verifies_our_file) {
    char *path = tu_path_in(tu_tmpdir(), "r.h5");
    mf_err err = {{0}};
    cr_assert_eq(write_synth(path, MF_RK_WIDTH, 1, "", &err), 0, "%s", err.msg);
    char cmd[4500], *out = NULL, *errs = NULL;
    snprintf(cmd, sizeof cmd, "python3 tests/rankings_h5py.py check %s", path);
    int rc = tu_run(cmd, &out, &errs);
    cr_assert_eq(rc, 0, "h5py check failed: %s%s", out, errs);
    cr_assert(strncmp(out, "OK layers=7", 11) == 0, "%s", out);
    free(out); free(errs); free(path);
}

Test(rankings, h5dump_reads_it) {
    char *path = tu_path_in(tu_tmpdir(), "r.h5");
    mf_err err = {{0}};
    cr_assert_eq(write_synth(path, MF_RK_WIDTH, 1, "", &err), 0, "%s", err.msg);
    char cmd[4500], *out = NULL, *errs = NULL;
    snprintf(cmd, sizeof cmd, "h5dump -H %s", path);
    cr_assert_eq(tu_run(cmd, &out, &errs), 0, "h5dump -H: %s", errs);
    cr_assert_str_empty(errs, "h5dump -H stderr: %s", errs);
    expect_msg(out, "GROUP \"06\"");
    expect_msg(out, "DATASET \"mlp_neurons\"");
    expect_msg(out, "DATASPACE  SIMPLE { ( 3, 7 ) / ( 3, 7 ) }"); /* /depth/mi */
    free(out); free(errs);
    snprintf(cmd, sizeof cmd, "h5dump -a /format -d /orders/bi %s", path);
    cr_assert_eq(tu_run(cmd, &out, &errs), 0, "h5dump: %s", errs);
    expect_msg(out, "\"minifuse-rankings\"");
    expect_msg(out, "(0): 4, 3, 2, 6, 1, 5, 0");
    free(out); free(errs); free(path);
}

Test(rankings, reads_h5py_written_golden) {
    mf_rankings r;
    read_ok(GOLDEN, &r);
    check_synth(&r, MF_RK_WIDTH, 1); /* "some_future_metric" is skipped */
    cr_assert_str_eq(r.meta.software_version, "h5py-golden"); /* fixed-length string */
    cr_assert_str_eq(r.meta.options, "{\"ctx\": 64}");
    char ab[65];
    for (int i = 0; i < 32; i++) memcpy(ab + 2 * i, "ab", 2);
    ab[64] = 0;
    cr_assert_str_eq(r.meta.model_sha256, ab);
    mf_rankings_free(&r);
}

/* ---- several ranks (mpirun) ---- */

static void need_writer(void) {
    cr_assert(access(WRITER, X_OK) == 0, "%s is missing: build it with `make %s`", WRITER, WRITER);
}

static int run_writer(int P, const char *out, const char *extra, char **errs) {
    char cmd[4500];
    /* this process is an MPI singleton: drop the OMPI_/PMIX_/ORTE_ variables it
     * exported, or mpirun would take itself for a child of it */
    snprintf(cmd, sizeof cmd,
             "for v in $(env | sed -n 's/^\\(\\(OMPI\\|PMIX\\|ORTE\\)_[A-Za-z0-9_]*\\)=.*/\\1/p'); do unset $v; done; "
             "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 "
             "mpirun --oversubscribe --bind-to none -np %d %s %s %s", P, WRITER, out, extra);
    return tu_run(cmd, NULL, errs);
}

static void same_doubles(const double *a, const double *b, size_t n, const char *what) {
    if (!a || !b) {
        cr_assert(a == b, "%s present in one file only", what);
        return;
    }
    cr_assert_eq(memcmp(a, b, n * sizeof *a), 0, "%s differs", what);
}

Test(rankings, mpi_1_2_3_ranks_identical) {
    need_writer();
    const char *dir = tu_tmpdir();
    mf_rankings r[3];
    for (int P = 1; P <= 3; P++) {
        char name[16], *errs = NULL;
        snprintf(name, sizeof name, "p%d.h5", P);
        char *path = tu_path_in(dir, name);
        int rc = run_writer(P, path, "--model-sha ee", &errs);
        cr_assert_eq(rc, 0, "%d ranks: %s", P, errs);
        free(errs);
        read_ok(path, &r[P - 1]);
        check_synth(&r[P - 1], MF_RK_WIDTH, 1);
        cr_assert_str_eq(r[P - 1].meta.model_sha256, "ee");
        free(path);
    }
    for (int P = 2; P <= 3; P++) {
        for (int l = 0; l < RS_LAYERS; l++) {
            same_doubles(r[0].layers[l].mlp_neurons, r[P - 1].layers[l].mlp_neurons, RS_FFN, "mlp_neurons");
            same_doubles(r[0].layers[l].attn_heads, r[P - 1].layers[l].attn_heads, RS_HEADS, "attn_heads");
            same_doubles(r[0].layers[l].emb_attn_norm, r[P - 1].layers[l].emb_attn_norm, RS_HIDDEN, "emb_attn_norm");
            same_doubles(r[0].layers[l].emb_mlp_norm, r[P - 1].layers[l].emb_mlp_norm, RS_HIDDEN, "emb_mlp_norm");
        }
        same_doubles(r[0].width_emb, r[P - 1].width_emb, RS_HIDDEN, "width/emb");
        same_doubles(r[0].depth.bi, r[P - 1].depth.bi, RS_LAYERS, "depth/bi");
        same_doubles(r[0].depth.ppl, r[P - 1].depth.ppl, RS_LAYERS, "depth/ppl");
        same_doubles(r[0].depth.mi, r[P - 1].depth.mi, RS_LAYERS * RS_MI_ITER, "depth/mi");
        cr_assert_eq(memcmp(r[0].order_bi, r[P - 1].order_bi, RS_LAYERS * sizeof(int)), 0);
    }
    /* h5py agrees on the 3-rank file */
    char cmd[4500], *out = NULL;
    char *p3 = tu_path_in(dir, "p3.h5");
    snprintf(cmd, sizeof cmd, "python3 tests/rankings_h5py.py check %s", p3);
    cr_assert_eq(tu_run(cmd, &out, NULL), 0, "%s", out);
    free(out); free(p3);
    for (int i = 0; i < 3; i++) mf_rankings_free(&r[i]);
}

Test(rankings, mpi_overlapping_ranges_fail_on_every_rank) {
    need_writer();
    char *path = tu_path_in(tu_tmpdir(), "bad.h5"), tmp[4200], *errs = NULL;
    int rc = run_writer(3, path, "--overlap", &errs);
    cr_assert_neq(rc, 0, "overlapping layer ranges were accepted");
    for (int r = 0; r < 3; r++) {
        char want[64];
        snprintf(want, sizeof want, "rank %d: ", r);
        expect_msg(errs, want);
    }
    expect_msg(errs, "ranks 0 and 1 both hold layers in [2, 5)");
    snprintf(tmp, sizeof tmp, "ls %s* 2>/dev/null | wc -l", path);
    char *cnt = NULL;
    cr_assert_eq(tu_run(tmp, &cnt, NULL), 0);
    cr_assert(!tu_exists(path) && atoi(cnt) == 0, "a file was left behind");
    free(cnt);
    free(errs); free(path);
}

/* ---- write errors ---- */

Test(rankings, write_errors_leave_no_file) {
    const char *dir = tu_tmpdir();
    mf_err err = {{0}};
    char *bad = tu_path_in(dir, "no/such/dir/r.h5");
    cr_assert_eq(write_synth(bad, MF_RK_WIDTH, 1, "", &err), -1);
    expect_msg(err.msg, bad);
    cr_assert(!tu_exists(bad));
    free(bad);

    char *path = tu_path_in(dir, "r.h5");
    mf_layer_scores *s = rs_layers(0, RS_LAYERS, MF_RK_WIDTH);
    mf_rankings_meta m;
    rs_meta(&m, "");
    /* one rank that holds only layers [0, 6) of 7 */
    cr_assert_eq(mf_rankings_write(path, MPI_COMM_WORLD, &m, 0, RS_LAYERS - 1, s, NULL, &err), -1);
    expect_msg(err.msg, "no rank holds layer 6 of 7");
    cr_assert(!tu_exists(path));
    /* MI removing the same layer twice */
    double bi[RS_LAYERS], ppl[RS_LAYERS], mi[RS_MI_ITER * RS_LAYERS];
    mf_depth_scores d;
    rs_depth(&d, bi, ppl, mi);
    int twice[RS_MI_ITER] = {5, 0, 5};
    d.mi_order = twice;
    cr_assert_eq(mf_rankings_write(path, MPI_COMM_WORLD, &m, 0, RS_LAYERS, s, &d, &err), -1);
    expect_msg(err.msg, "both remove layer 5");
    cr_assert(!tu_exists(path));
    /* layers with different metrics */
    free(s[3].attn_heads);
    s[3].attn_heads = NULL;
    cr_assert_eq(mf_rankings_write(path, MPI_COMM_WORLD, &m, 0, RS_LAYERS, s, NULL, &err), -1);
    expect_msg(err.msg, "layer 3 has different width metrics");
    /* a bad shape in the metadata */
    m.hidden_size = 0;
    cr_assert_eq(mf_rankings_write(path, MPI_COMM_WORLD, &m, 0, 0, NULL, NULL, &err), -1);
    expect_msg(err.msg, "hidden_size is 0");
    cr_assert(!tu_exists(path));
    rs_free_layers(s, RS_LAYERS);

    /* a failed write leaves an existing file as it was */
    cr_assert_eq(write_synth(path, MF_RK_WIDTH, 1, "old", &err), 0, "%s", err.msg);
    size_t n0, n1;
    void *before = tu_read(path, &n0);
    rs_meta(&m, "new");
    s = rs_layers(0, RS_LAYERS, MF_RK_WIDTH);
    cr_assert_eq(mf_rankings_write(path, MPI_COMM_WORLD, &m, 1, RS_LAYERS, s, NULL, &err), -1);
    rs_free_layers(s, RS_LAYERS);
    void *after = tu_read(path, &n1);
    cr_assert(n0 == n1 && memcmp(before, after, n0) == 0, "existing file was changed by a failed write");
    free(before); free(after); free(path);
}

/* ---- corrupt and foreign files ---- */

Test(rankings, corrupt_files_fail_cleanly) {
    const char *dir = tu_tmpdir();
    char *good = tu_path_in(dir, "good.h5");
    mf_err err = {{0}};
    cr_assert_eq(write_synth(good, MF_RK_WIDTH, 1, "", &err), 0, "%s", err.msg);
    size_t n;
    unsigned char *b = tu_read(good, &n);

    char *half = tu_path_in(dir, "half.h5");
    tu_write(half, b, n / 2);
    expect_msg(read_fails(half), "truncated");

    char *sig = tu_path_in(dir, "sig.h5"); /* signature bytes overwritten */
    memset(b, 'x', 8);
    tu_write(sig, b, n);
    expect_msg(read_fails(sig), "not an HDF5 file");
    free(b);

    char *super = tu_path_in(dir, "super.h5"); /* superblock fields after the signature overwritten */
    b = tu_read(good, &n);
    memset(b + 8, 0xff, 48);
    tu_write(super, b, n);
    read_fails(super);
    free(b);

    char *text = tu_path_in(dir, "text.h5");
    tu_write(text, "hello, I am not HDF5\n", 21);
    expect_msg(read_fails(text), "not an HDF5 file");

    char *empty = tu_path_in(dir, "empty.h5");
    tu_write(empty, "", 0);
    read_fails(empty);

    char *missing = tu_path_in(dir, "missing.h5");
    expect_msg(read_fails(missing), "No such file");
    read_fails(dir);

    free(good); free(half); free(sig); free(super); free(text); free(empty); free(missing);
}

/* A copy of a good file, edited by h5py; read must fail with `part`. */
static void edited_fails(const char *good, const char *name, const char *code, const char *part) {
    char *p = tu_path_in(tu_tmpdir(), name);
    copy_file(good, p);
    tu_h5py_edit(p, code);
    expect_msg(read_fails(p), part);
    free(p);
}

Test(rankings, schema_violations_named) {
    char *good = tu_path_in(tu_tmpdir(), "good.h5");
    mf_err err = {{0}};
    cr_assert_eq(write_synth(good, MF_RK_WIDTH, 1, "", &err), 0, "%s", err.msg);
    edited_fails(good, "a.h5", "del f['layers/03/attn_heads']", "missing dataset '/layers/03/attn_heads'");
    edited_fails(good, "b.h5", "del f['layers/02/mlp_neurons']; f['layers/02/mlp_neurons'] = np.zeros(100)",
                 "dataset '/layers/02/mlp_neurons' has shape [100], expected [128]");
    edited_fails(good, "c.h5", "del f['depth/mi']; f['depth/mi'] = np.zeros((3, 6))",
                 "dataset '/depth/mi' has shape [3, 6], expected [*, 7]");
    edited_fails(good, "d.h5", "f.attrs['format'] = np.bytes_('something-else')", "not a minifuse rankings file");
    /* variable-length strings (global heap: no checksum) and datasets without Fletcher-32 are refused */
    edited_fails(good, "d2.h5", "f.attrs['format'] = 'minifuse-rankings'", "variable-length string");
    edited_fails(good, "d3.h5", "v = f['depth/bi'][()]; del f['depth/bi']; f['depth/bi'] = v",
                 "dataset '/depth/bi' has no Fletcher-32 checksum");
    /* a dataset whose data lives in another file */
    edited_fails(good, "d4.h5", "v = f['depth/bi'][()]; del f['depth/bi']; "
                 "f.create_dataset('depth/bi', data=v, external=[(sys.argv[1] + '.raw', 0, h5py.h5f.UNLIMITED)])",
                 "external files");
    /* a soft link where a dataset should be */
    edited_fails(good, "d5.h5", "del f['width/emb']; f['width/emb'] = h5py.SoftLink('/depth/bi')",
                 "missing dataset '/width/emb'");
    edited_fails(good, "e.h5", "f.attrs['format_version'] = 2", "format_version 2 is not supported");
    edited_fails(good, "f.h5", "del f.attrs['hidden_size']", "missing root attribute 'hidden_size'");
    edited_fails(good, "g.h5", "f.attrs['hidden_size'] = -3", "attribute 'hidden_size' is -3");
    edited_fails(good, "h.h5", "f['orders/bi'][1] = f['orders/bi'][0]", "dataset '/orders/bi' entry 1");
    edited_fails(good, "i.h5", "del f['depth/ppl'].attrs['ppl_full']", "no attribute 'ppl_full'");
    edited_fails(good, "j.h5", "del f['width/emb']; f['width/emb'] = np.zeros(48, dtype=np.int32)",
                 "dataset '/width/emb' is not of float type");
    edited_fails(good, "k.h5", "f.attrs['n_layers'] = np.float64(7)", "attribute 'n_layers' is not a single integer");
    edited_fails(good, "l.h5", "del f['orders']", "missing dataset '/orders/bi'");
    free(good);
}

Test(rankings, check_model_names_the_field) {
    mf_rankings r;
    read_ok(GOLDEN, &r);
    mf_config c;
    make_config(&c);
    mf_err err = {{0}};
    cr_assert_eq(mf_rankings_check_model(&r, &c, NULL, &err), 0, "%s", err.msg);
    char ab[65];
    for (int i = 0; i < 32; i++) memcpy(ab + 2 * i, "ab", 2);
    ab[64] = 0;
    cr_assert_eq(mf_rankings_check_model(&r, &c, ab, &err), 0, "%s", err.msg);
    cr_assert_eq(mf_rankings_check_model(&r, &c, "", &err), 0, "%s", err.msg);

    c.dim = 576;
    cr_assert_eq(mf_rankings_check_model(&r, &c, NULL, &err), -1);
    expect_msg(err.msg, GOLDEN);
    expect_msg(err.msg, "hidden_size is 48 in the rankings but 576 in the model");
    make_config(&c);
    c.n_kv_heads = 3;
    cr_assert_eq(mf_rankings_check_model(&r, &c, NULL, &err), -1);
    expect_msg(err.msg, "num_key_value_heads");
    make_config(&c);
    c.n_layers = 30;
    cr_assert_eq(mf_rankings_check_model(&r, &c, NULL, &err), -1);
    expect_msg(err.msg, "n_layers is 7 in the rankings but 30");
    make_config(&c);
    cr_assert_eq(mf_rankings_check_model(&r, &c, "0123", &err), -1);
    expect_msg(err.msg, "model_sha256");
    mf_rankings_free(&r);
}
