/* fuzz_tokenizer_bin.c - a llama2.c tokenizer.bin. The vocabulary size comes
 * from the model header, not the file: the first two input bytes give it
 * (259 + little-endian u16), the rest is the file. Then encode and decode. */
#include "fuzz_common.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int vocab = 259 + (data[0] | data[1] << 8);
    const char *p = fz_path("tokenizer.bin");
    fz_write(p, data + 2, size - 2);
    mf_err err;
    mf_tokenizer *t = mf_tok_load_llama2c(p, vocab, &err);
    if (!t) return 0;
    static const char text[] = "Once upon a time, there was a little girl named Lily. \xc3\xa9\xf0\x9f\x98\x80 x";
    int32_t *ids = NULL;
    size_t n = 0;
    if (mf_tok_encode(t, text, sizeof text - 1, 1, &ids, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= vocab) abort();
        free(mf_tok_decode(t, ids, n));
    }
    free(ids);
    mf_tok_free(t);
    return 0;
}
