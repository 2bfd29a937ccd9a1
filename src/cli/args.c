#include "cli/args.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mf_args_usage(const char *cmd, const char *summary, const mf_opt *opts, int n_opts) {
    printf("usage: minifuse %s [options]\n\n%s\n\noptions:\n", cmd, summary);
    for (int i = 0; i < n_opts; i++) {
        const char *arg = opts[i].type == MF_OPT_FLAG ? "" : opts[i].type == MF_OPT_STR ? " S" : " N";
        char left[64];
        snprintf(left, sizeof left, "--%s%s", opts[i].name, arg);
        printf("  %-22s %s%s\n", left, opts[i].help, opts[i].required ? " (required)" : "");
    }
    printf("  %-22s %s\n", "--help", "show this help");
    printf("\n");
    mf_args_env_help();
}

void mf_args_env_help(void) {
    printf("environment:\n"
           "  OPENBLAS_CORETYPE=NAME  the OpenBLAS kernels to run (Haswell, SkylakeX, Zen, ...); kept as given\n"
           "  MINIFUSE_BLAS_AUTO=0    keep OpenBLAS's own kernel choice: by default, when OpenBLAS picked a\n"
           "                          generic core (Prescott, ...) on a CPU with AVX2 or AVX-512, minifuse\n"
           "                          sets OPENBLAS_CORETYPE and restarts itself before MPI starts\n"
           "  MINIFUSE_QUIET=1        no progress lines (the OpenBLAS core line and warnings still print)\n"
           "The core every rank runs is logged and compared (a warning when ranks differ); the last bits of\n"
           "results depend on it and on the thread count.\n");
}

static int set_value(const char *cmd, const mf_opt *o, const char *v, mf_err *err) {
    char *end;
    errno = 0;
    switch (o->type) {
    case MF_OPT_STR: *(const char **)o->dst = v; return 0;
    case MF_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (*v == 0 || *end || errno || x < INT_MIN || x > INT_MAX)
            return mf_err_set(err, "%s: --%s '%s' is not an integer", cmd, o->name, v);
        *(int *)o->dst = (int)x;
        return 0;
    }
    case MF_OPT_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (*v == 0 || *v == '-' || *end || errno) return mf_err_set(err, "%s: --%s '%s' is not a non-negative integer", cmd, o->name, v);
        *(unsigned long long *)o->dst = x;
        return 0;
    }
    case MF_OPT_FLOAT: {
        float x = strtof(v, &end);
        if (*v == 0 || *end || errno || !isfinite(x)) return mf_err_set(err, "%s: --%s '%s' is not a number", cmd, o->name, v);
        *(float *)o->dst = x;
        return 0;
    }
    case MF_OPT_FLAG: *(int *)o->dst = 1; return 0;
    }
    return -1;
}

int mf_args_parse(const char *cmd, const char *summary, const mf_opt *opts, int n_opts, int argc, char **argv, mf_err *err) {
    int *seen = mf_calloc((size_t)n_opts, sizeof *seen);
    int rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            mf_args_usage(cmd, summary, opts, n_opts);
            rc = 1;
            break;
        }
        if (strncmp(a, "--", 2) != 0) { rc = mf_err_set(err, "%s: unexpected argument '%s' (see --help)", cmd, a); break; }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int k = -1;
        for (int j = 0; j < n_opts; j++)
            if (strlen(opts[j].name) == len && strncmp(opts[j].name, name, len) == 0) k = j;
        if (k < 0) { rc = mf_err_set(err, "%s: unknown option '%s' (see --help)", cmd, a); break; }
        const char *val = NULL;
        if (opts[k].type == MF_OPT_FLAG) {
            if (eq) { rc = mf_err_set(err, "%s: --%s takes no value", cmd, opts[k].name); break; }
        } else if (eq) val = eq + 1;
        else if (i + 1 < argc) val = argv[++i];
        else { rc = mf_err_set(err, "%s: --%s needs a value", cmd, opts[k].name); break; }
        seen[k] = 1;
        rc = set_value(cmd, &opts[k], val, err);
    }
    for (int j = 0; j < n_opts && rc == 0; j++)
        if (opts[j].required && !seen[j]) rc = mf_err_set(err, "%s: --%s is required (see --help)", cmd, opts[j].name);
    free(seen);
    return rc;
}

int mf_args_int_list(const char *opt, const char *s, int **out, int *n, mf_err *err) {
    int cap = 16, k = 0;
    int *v = mf_malloc((size_t)cap * sizeof *v);
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < INT_MIN || x > INT_MAX || (*end && *end != ',')) {
            free(v);
            return mf_err_set(err, "%s: '%s' is not a comma-separated list of integers", opt, s);
        }
        if (k == cap) v = mf_realloc(v, (size_t)(cap *= 2) * sizeof *v);
        v[k++] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (k == 0) { free(v); return mf_err_set(err, "%s: empty list", opt); }
    *out = v;
    *n = k;
    return 0;
}

int mf_args_parse_or_die(const char *cmd, const char *summary, const mf_opt *opts, int n_opts, int argc, char **argv) {
    mf_err err;
    int rc = mf_args_parse(cmd, summary, opts, n_opts, argc, argv, &err);
    if (rc < 0) mf_fatal_err(&err);
    return rc;
}
