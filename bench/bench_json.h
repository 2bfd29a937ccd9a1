/* bench_json.h - how the C probes of bench/ end: their JSON line, with the OpenBLAS core, threads
 * and build they ran (the provenance every raw result carries, docs/performance.md "Method"). */
#ifndef MF_BENCH_JSON_H
#define MF_BENCH_JSON_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cpu_blas.h"

/* Adds blas_core, blas_threads and blas_config to j, prints it as one line, and frees it. */
static inline void bench_print_json(json_t *j) {
    json_object_set_new(j, "blas_core", json_string(mf_blas_core()));
    json_object_set_new(j, "blas_threads", json_integer(mf_blas_threads()));
    json_object_set_new(j, "blas_config", json_string(mf_blas_config()));
    char *out = json_dumps(j, JSON_COMPACT);
    printf("%s\n", out ? out : "{}");
    free(out);
    json_decref(j);
}

#endif
