/* registry.c - the backends this build has, by name (--backend). */
#include <string.h>

#include "backend/backend.h"

typedef struct entry {
    const char *name;
    const mf_backend *(*get)(void);
} entry;

static const entry BACKENDS[] = {
    {"cpu", mf_backend_cpu},
    {"ref", mf_backend_ref},
    {"devsim", mf_backend_devsim},
#ifdef MF_CUDA
    {"cuda", mf_backend_cuda},
#endif
};

const mf_backend *mf_backend_get(const char *name) {
    if (!name) return mf_backend_cpu();
    for (size_t i = 0; i < sizeof BACKENDS / sizeof BACKENDS[0]; i++)
        if (strcmp(name, BACKENDS[i].name) == 0) return BACKENDS[i].get();
    return NULL;
}

const char *mf_backend_names(void) {
#ifdef MF_CUDA
    return "cpu, ref, devsim, cuda";
#else
    return "cpu, ref, devsim";
#endif
}
