/* fuzz_gguf_tokenizer.c - a tokenizer from GGUF metadata (tokenizer.ggml.*:
 * gpt2 byte-level BPE with merges and pre-tokenizer, or llama SentencePiece
 * with scores and types), then encode and decode a fixed text. */
#include "fuzz_common.h"
#include "io/source.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4 || memcmp(data, "GGUF", 4) != 0) return 0;
    const char *p = fz_path("t.gguf");
    fz_write(p, data, size);
    mf_err err;
    mf_tokenizer *t = mf_gguf_file_tokenizer(p, &err);
    if (!t) return 0;
    static const char text[] = "Once upon a time, there was a little girl named Lily. 123 \xc3\xa9t\xc3\xa9 <|endoftext|>\n\t!";
    int32_t *ids = NULL;
    size_t n = 0;
    if (mf_tok_encode(t, text, sizeof text - 1, 1, &ids, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= mf_tok_vocab_size(t)) abort();
        char *s = mf_tok_decode(t, ids, n);
        free(s);
    }
    free(ids);
    char buf[64];
    for (int id = -1; id < mf_tok_vocab_size(t) && id < 300; id++) mf_tok_decode_token(t, id - 1, id, buf, sizeof buf);
    mf_tok_free(t);
    return 0;
}
