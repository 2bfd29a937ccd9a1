/* config.h - the shape of a Llama-family model, whatever file it came from.
 *
 * All weights inside minifuse use the Hugging Face layout: Linear weights are
 * [out][in] row-major, q/k rows in rotate-half RoPE order. Loaders convert. */
#ifndef MF_CONFIG_H
#define MF_CONFIG_H

#include <stdint.h>
#include "util/err.h"

typedef enum { MF_ARCH_LLAMA, MF_ARCH_MISTRAL, MF_ARCH_QWEN2 } mf_arch;

typedef struct mf_config {
    mf_arch arch;
    int dim;          /* hidden_size */
    int ffn_dim;      /* intermediate_size */
    int n_layers;     /* num_hidden_layers */
    int n_heads;      /* num_attention_heads */
    int n_kv_heads;   /* num_key_value_heads (GQA) */
    int head_dim;     /* explicit head_dim, else dim / n_heads */
    int vocab_size;
    int max_seq_len;  /* max_position_embeddings */
    float norm_eps;   /* rms_norm_eps */
    float rope_theta;
    int tied_embeddings; /* lm_head shares the embedding matrix */
    int qkv_bias;        /* q/k/v projections have biases (Qwen2) */
    /* rope_scaling {"rope_type": "llama3"} */
    int rope_llama3;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_ctx;
    int bos_id, eos_id;
    int no_bos_prompt; /* GGUF tokenizer.ggml.add_bos_token = false: generate does not prepend BOS to a prompt */
    /* Attention window in tokens: Mistral's sliding_window, Qwen2's when use_sliding_window
     * is true, GGUF <arch>.attention.sliding_window; 0 = none. minifuse runs full causal
     * attention, which equals the windowed one only for contexts up to the window. */
    int sliding_window;
} mf_config;

const char *mf_arch_name(mf_arch a);
/* Architecture from a HF "architectures" entry or GGUF general.architecture. */
int mf_arch_parse(const char *name, mf_arch *out);

/* Check sizes are positive and consistent; the message names `what` (a file). */
int mf_config_validate(const mf_config *c, const char *what, mf_err *err);

/* Refuse a context the model cannot run exactly: ctx tokens (one window, a prompt plus
 * generated tokens, ...) longer than the model's sliding_window (minifuse has no
 * sliding-window attention, so positions past the window would attend to tokens the
 * model never sees). 0, or -1 with err naming `what` (the model), the window and ctx. */
int mf_config_check_ctx(const mf_config *c, int ctx, const char *what, mf_err *err);

/* Parameter counts. */
int64_t mf_config_layer_params(const mf_config *c);
int64_t mf_config_total_params(const mf_config *c);
/* Forward FLOPs for one token at context position `pos` (attention grows with pos). */
double mf_config_layer_flops(const mf_config *c, int pos);
double mf_config_head_flops(const mf_config *c);
/* What the distillation loss over the vocabulary (softmaxes, KL and its gradient: exp,
 * max and sums, no GEMM) costs per logit, in FLOPs of GEMM at the GEMM rate, as the
 * pipeline partition (src/train/partition.c) and the planner weigh it. Measured by
 * bench/loss_cost.sh (docs/performance.md, "The loss in GEMM FLOPs"). */
#define MF_LOSS_GEMM_FLOPS_PER_LOGIT 350.0

/* RoPE inverse frequencies [head_dim/2], with llama3 scaling if configured. */
void mf_config_rope_inv_freq(const mf_config *c, float *inv_freq);

#endif
