/* fuzz_config.c - config.json of a Hugging Face model directory: the JSON
 * fields, rope scaling, the shape validation, and the "minifuse": {"tokenizer"}
 * path, which must never resolve outside the model directory. */
#include "fuzz_common.h"
#include "io/source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/model", fz_tmpdir());
    mkdir(dir, 0700);
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    fz_write(p, data, size);
    mf_config c;
    int tie;
    char *ref = NULL;
    mf_err err;
    if (mf_hf_parse_config(p, &c, &tie, &ref, &err) == 0) {
        mf_config_validate(&c, p, &err);
        if (ref) {
            char out[4096];
            if (mf_hf_resolve_inside(dir, ref, out, sizeof out) == 0) {
                char real[4096];
                if (!realpath(dir, real) || strncmp(out, real, strlen(real)) != 0) abort(); /* left the directory */
            }
        }
    }
    free(ref);
    return 0;
}
