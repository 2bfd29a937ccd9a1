/* tokenizer.h - text <-> token ids for the tokenizers of Llama-family models.
 *
 * Two kinds, both built from plain arrays (no file-format knowledge here,
 * except for llama2.c's tokenizer.bin):
 *
 *  - SentencePiece-style BPE (llama2.c tokenizer.bin, GGUF model "llama"):
 *    one dummy-prefix space, per-codepoint vocab lookup with byte fallback
 *    <0xNN>, then repeated merging of the adjacent pair whose concatenation is
 *    a token with the highest score (leftmost on ties). The ids are identical
 *    to llama2.c run.c encode(); a priority queue makes it O(n log n).
 *
 *  - GPT-2 byte-level BPE (GGUF model "gpt2"): special tokens (types 3 and 4)
 *    matched literally first, then the pre-tokenizer regexes of llama.cpp for
 *    the GGUF "tokenizer.ggml.pre" name (PCRE2, UTF + UCP, JIT), then per-word
 *    BPE by merge rank (lowest first, leftmost on ties) over the GPT-2
 *    bytes->unicode alphabet.
 *
 * A tokenizer is immutable after construction: encode/decode may be called
 * from several threads at once. */
#ifndef MF_TOKENIZER_H
#define MF_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct mf_tokenizer mf_tokenizer;

/* GGUF tokenizer.ggml.token_type values. */
enum {
    MF_TOK_NORMAL = 1,
    MF_TOK_UNKNOWN = 2,
    MF_TOK_CONTROL = 3,
    MF_TOK_USER = 4,
    MF_TOK_UNUSED = 5,
    MF_TOK_BYTE = 6,
};

/* llama2.c tokenizer.bin: int32 max_token_length, then per token float score,
 * int32 len, len bytes. vocab_size comes from the model header and must match
 * the file exactly. BOS = 1, EOS = 2, byte fallback id = byte + 3. */
mf_tokenizer *mf_tok_load_llama2c(const char *path, int vocab_size, mf_err *err);

/* SentencePiece BPE from arrays (GGUF tokenizer.ggml.model == "llama"):
 * tokens use U+2581 for space; scores; types (NULL: all normal; byte tokens
 * must then still be typed 6 to be used as byte fallback). bos/eos may be -1. */
mf_tokenizer *mf_tok_new_sp(const char *const *tokens, const float *scores, const int32_t *types, int n,
                            int bos, int eos, int add_space_prefix, mf_err *err);

/* GPT-2 byte-level BPE (GGUF tokenizer.ggml.model == "gpt2"): merges are
 * "left right" strings, rank = index. types may be NULL (all normal). pre is
 * tokenizer.ggml.pre ("smollm", "llama-bpe"/"llama3", "qwen2", "gpt2",
 * "default", ...; NULL = "default"); an unknown name is an error naming it. */
mf_tokenizer *mf_tok_new_gpt2(const char *const *tokens, int n, const char *const *merges, int n_merges,
                              const int32_t *types, const char *pre, int bos, int eos, mf_err *err);

void mf_tok_free(mf_tokenizer *t);

int mf_tok_vocab_size(const mf_tokenizer *t);
int mf_tok_bos(const mf_tokenizer *t);
int mf_tok_eos(const mf_tokenizer *t);

/* Encode len bytes of UTF-8 text (NUL bytes are ordinary characters).
 * add_bos prepends BOS. Invalid UTF-8 -> -1 with an error giving the byte
 * offset. On success *ids (mf_malloc'ed, caller frees; non-NULL even when
 * empty) holds *n_ids ids. */
int mf_tok_encode(const mf_tokenizer *t, const char *text, size_t len, int add_bos, int32_t **ids, size_t *n_ids,
                  mf_err *err);

/* The bytes of token id given the previous token (-1 if none).
 * SentencePiece: the leading space after BOS is stripped (as run.c decode);
 * byte tokens give their byte; control tokens (BOS/EOS) give nothing.
 * GPT-2: the byte-level alphabet is mapped back to bytes; special tokens give
 * their text. Returns the piece length; copies min(length, cap) bytes into
 * buf and NUL-terminates when length < cap. Out-of-range id -> 0. */
size_t mf_tok_decode_token(const mf_tokenizer *t, int prev, int id, char *buf, size_t cap);

/* Decode a whole sequence (first token with prev = -1) into a mf_malloc'ed
 * NUL-terminated string. */
char *mf_tok_decode(const mf_tokenizer *t, const int32_t *ids, size_t n);

#endif
