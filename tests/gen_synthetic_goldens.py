#!/usr/bin/env python3
"""Tiny random Llama-family models and their logits from an independent oracle.

Every architecture feature the loader claims gets one tiny model (2 layers,
hidden 32-64, vocab 96) with seeded random weights (std 0.1, norms 1 + 0.1 N,
so logits are O(1)), written the way real tools write it:
  * Hugging Face directories with transformers' save_pretrained (safetensors),
  * GGUF files with gguf-py's GGUFWriter using llama.cpp's tensor names and
    metadata keys, q/k rows permuted exactly as llama.cpp's
    convert_hf_to_gguf.py LlamaModel.permute does (llama only; qwen2 is not
    permuted), Q8_0 quantized with gguf.quants.

Oracle: transformers (float32, eager attention, CPU) on the same weights. For
HF directories the golden comes from reloading the saved directory with
from_pretrained(dtype=float32), so bf16/f16 weights are upcast exactly and the
config.json as written is what the oracle read. For GGUF the golden is the HF
model with the exact weights the file holds (for Q8_0: dequantized with gguf-py),
and, as a check on the writer, transformers' own GGUF loader (gguf_file=...)
must reproduce it (it un-permutes q/k and dequantizes independently).

Run by hand (not by the test suite), from the repo root:
    /root/oracle-venv/bin/python tests/gen_synthetic_goldens.py

Writes tests/golden/synthetic/<case>/:
  model files     config.json + model*.safetensors, or model.gguf
  ids.json        {"ids": [...]}: 12 input ids
  logits.f32      little-endian float32 [12][vocab]
  case.json       model path, tolerance, and the oracle's view of the config
                  (shapes, tied, qkv_bias, rope parameters, RoPE inv_freq)
"""
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
import gguf
from gguf import GGMLQuantizationType as QT
from transformers import (AutoModelForCausalLM, LlamaConfig, MistralConfig,
                          Qwen2Config)

N_IDS = 12
VOCAB = 96
STD = 0.1
TOL = 5e-6  # float32 against transformers float32: at most 1.43e-6 measured (2026-12, Zen kernels)


def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


OUT = os.path.join(repo_root(), "tests/golden/synthetic")
IDS = [1] + [int(i) for i in np.random.default_rng(20240611).integers(3, VOCAB, N_IDS - 1)]


# ---------------------------------------------------------------- models ---

def randomize(model, seed):
    """Seeded N(0, STD) weights; norm weights 1 + N(0, STD). Deterministic in
    parameter-name order."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, dtype=torch.float32) * STD
            p.copy_(r + 1.0 if "norm" in name else r)
    return model


def build(cfg, seed):
    cfg._attn_implementation = "eager"
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return randomize(m, seed).eval()


def llama3_cfg():
    # head_dim 16 with 4 heads != hidden 48 / 4; GQA 4/2. original_max_position
    # 64 (low_freq_wavelen 64, high_freq_wavelen 16) puts the 8 frequencies of
    # head_dim 16 at theta 5e5 into all three llama3 bands: kept (wavelength
    # 6.3), smoothed (32.6) and divided by factor (167 and up).
    return LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=88, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                       max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 64})


def qwen2_cfg():
    return Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=88, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                       max_position_embeddings=512, tie_word_embeddings=True, use_sliding_window=False,
                       bos_token_id=1, eos_token_id=2,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})


def mistral_cfg():
    return MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=88, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                         max_position_embeddings=512, sliding_window=None, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 20000.0})


def llama_f16_cfg():
    return LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=88, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
                       max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                       rope_parameters={"rope_type": "default", "rope_theta": 50000.0})


def llama_gguf_cfg():
    # Q8_0 needs every row length (in-features) to be a multiple of 32:
    # hidden 64, heads*head_dim = 4*8 = 32 (explicit head_dim != 64/4), ffn 64.
    return LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5,
                       max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


# ---------------------------------------------------------------- oracle ---

@torch.no_grad()
def logits_of(model):
    out = model(input_ids=torch.tensor([IDS]), use_cache=False)
    return out.logits[0].float().numpy()


def reload(path, **kw):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", **kw)
    return m.eval()


def oracle_view(model):
    """The config as the oracle model actually uses it."""
    c, att = model.config, model.model.layers[0].self_attn
    rope = c.rope_parameters
    rot = model.model.rotary_emb
    view = {
        "arch": c.model_type,
        "dim": c.hidden_size, "ffn_dim": c.intermediate_size, "n_layers": c.num_hidden_layers,
        "n_heads": c.num_attention_heads, "n_kv_heads": c.num_key_value_heads, "head_dim": att.head_dim,
        "vocab_size": c.vocab_size, "norm_eps": c.rms_norm_eps, "rope_theta": rope["rope_theta"],
        "tied": int(model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()),
        "qkv_bias": int(att.q_proj.bias is not None),
        "rope_llama3": int(rope.get("rope_type") == "llama3"),
        "inv_freq": [float(f) for f in rot.inv_freq],
    }
    assert float(rot.attention_scaling) == 1.0
    assert att.o_proj.bias is None and model.model.layers[0].mlp.up_proj.bias is None
    if view["rope_llama3"]:
        view.update(rope_factor=rope["factor"], rope_low_freq_factor=rope["low_freq_factor"],
                    rope_high_freq_factor=rope["high_freq_factor"],
                    rope_orig_ctx=rope["original_max_position_embeddings"])
    return view


def write_case(name, model_file, logits, view, note, extra=None):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    assert logits.shape == (N_IDS, view["vocab_size"])
    np.ascontiguousarray(logits.astype("<f4")).tofile(os.path.join(d, "logits.f32"))
    with open(os.path.join(d, "ids.json"), "w") as f:
        json.dump({"ids": IDS}, f)
    case = {"model": model_file, "tolerance": TOL, "note": note, "expect": view,
            "max_abs_logit": float(np.abs(logits).max())}
    case.update(extra or {})
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case, f, indent=1)
    print("%-26s max|logit| %.3f  %s" % (name, case["max_abs_logit"], model_file))


def fresh_dir(name):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def save_hf(model, name, dtype, **kw):
    d = fresh_dir(name)
    model.to(dtype).save_pretrained(d, safe_serialization=True, **kw)
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)
    return d


def classic_rope_config(d):
    """Rewrite config.json the way transformers 4 and the hub checkpoints
    (Llama-3.2, Qwen2.5) spell RoPE: top-level rope_theta plus rope_scaling,
    instead of transformers 5's rope_parameters."""
    path = os.path.join(d, "config.json")
    with open(path) as f:
        c = json.load(f)
    rp = c.pop("rope_parameters")
    c["rope_theta"] = rp.pop("rope_theta")
    c["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
    with open(path, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)


def hf_case(name, cfg, seed, dtype, note, classic=False, **save_kw):
    model = build(cfg, seed)
    d = save_hf(model, name, dtype, **save_kw)
    if classic:
        classic_rope_config(d)
    oracle = reload(d)
    if classic:  # the rewritten config must mean the same RoPE to the oracle
        assert oracle.config.rope_parameters == cfg.rope_parameters, oracle.config.rope_parameters
    write_case(name, ".", logits_of(oracle), oracle_view(oracle), note)
    return oracle


# ------------------------------------------------------------------ gguf ---

def permute(w, n_head, n_head_kv):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (verbatim)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def unpermute(w, n_head):
    """Inverse of permute(w, n_head, n_head)."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


GGUF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf]
    parts = hf.split(".", 3)  # model layers N rest
    return "blk.%s.%s" % (parts[2], GGUF_LAYER[parts[3]])


def add_llama_tokenizer(w, vocab):
    toks = ["<unk>", "<s>", "</s>"] + [("\u2581" if c == " " else c) for c in map(chr, range(32, 32 + vocab - 3))]
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([0.0, 0.0, 0.0] + [-float(i) for i in range(vocab - 3)])
    w.add_token_types([2, 3, 3] + [1] * (vocab - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)


def add_gpt2_tokenizer(w, vocab):
    toks = [chr(c) for c in range(33, 33 + vocab - 2)] + ["\u0120", "<|endoftext|>"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(toks)
    w.add_token_types([1] * (vocab - 1) + [3])
    w.add_token_merges(["\u0120 t", "\u0120 a"])
    w.add_bos_token_id(vocab - 1)
    w.add_eos_token_id(vocab - 1)


def write_gguf(path, model, arch, qtype):
    """The HF model as llama.cpp's convert_hf_to_gguf.py would write it.
    Returns {hf name: float32 weights exactly as stored, in HF layout}."""
    c = model.config
    H, KV, hd = c.num_attention_heads, c.num_key_value_heads, model.model.layers[0].self_attn.head_dim
    w = gguf.GGUFWriter(path, arch)
    w.add_name("synthetic-" + arch)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    if hd != c.hidden_size // H:  # convert_hf_to_gguf writes these when config has head_dim
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == QT.Q8_0 else gguf.LlamaFileType.ALL_F32)
    (add_llama_tokenizer if arch == "llama" else add_gpt2_tokenizer)(w, c.vocab_size)
    stored = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        a = t.detach().float().numpy().copy()
        perm = arch == "llama" and ("q_proj" in name or "k_proj" in name)
        n_rope = H if "q_proj" in name else KV
        if perm:
            a = permute(a, H, KV if "k_proj" in name else None)
        if qtype == QT.Q8_0 and a.ndim == 2:
            q = gguf.quants.quantize(a, QT.Q8_0)
            w.add_tensor(gguf_name(name), q, raw_dtype=QT.Q8_0)
            a = gguf.quants.dequantize(q, QT.Q8_0)
        else:
            w.add_tensor(gguf_name(name), a)
        stored[name] = unpermute(a, n_rope) if perm else a
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


def gguf_case(name, model, arch, qtype, note):
    d = fresh_dir(name)
    path = os.path.join(d, "model.gguf")
    stored = write_gguf(path, model, arch, qtype)
    # golden: the HF model carrying exactly the stored (dequantized) weights
    oracle = build(model.config, 0)
    missing, unexpected = oracle.load_state_dict({k: torch.from_numpy(v) for k, v in stored.items()}, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    if model.config.tie_word_embeddings:
        oracle.tie_weights()
    if qtype == QT.F32:
        for k, v in model.state_dict().items():
            assert torch.equal(oracle.state_dict()[k], v), k
    golden = logits_of(oracle)
    # writer check: transformers' own GGUF loader must read the same model
    via_tf = logits_of(reload(d, gguf_file="model.gguf"))
    tf_diff = float(np.abs(via_tf - golden).max())
    assert tf_diff < 1e-5, "transformers reads %s differently: %g" % (path, tf_diff)
    write_case(name, "model.gguf", golden, oracle_view(oracle), note,
               {"transformers_gguf_loader_max_abs_diff": tf_diff})


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)

    hf_case("llama_untied_llama3rope", llama3_cfg(), 101, torch.float32,
            "LlamaForCausalLM F32, untied, GQA 4/2, head_dim 16 != 48/4, rope_scaling llama3 "
            "(hub-style config.json: rope_theta + rope_scaling)", classic=True)
    qwen = hf_case("qwen2_bias", qwen2_cfg(), 202, torch.float32,
                   "Qwen2ForCausalLM F32, q/k/v biases, tied, rope_theta 1e6 "
                   "(transformers 5 config.json: rope_parameters)")
    hf_case("mistral_bf16", mistral_cfg(), 303, torch.bfloat16,
            "MistralForCausalLM saved in bfloat16; golden from the bf16 weights upcast to float32")
    hf_case("llama_f16_sharded", llama_f16_cfg(), 404, torch.float16,
            "LlamaForCausalLM float16, tied, sharded (model.safetensors.index.json)", max_shard_size="40KB")
    shards = [f for f in os.listdir(os.path.join(OUT, "llama_f16_sharded")) if f.endswith(".safetensors")]
    assert len(shards) >= 2 and os.path.exists(os.path.join(OUT, "llama_f16_sharded/model.safetensors.index.json")), shards

    llama = build(llama_gguf_cfg(), 505)
    gguf_case("llama_gguf", llama, "llama", QT.F32,
              "GGUF llama F32 (q/k permuted as convert_hf_to_gguf.py), untied, GQA 4/2, head_dim 8 != 64/4")
    gguf_case("llama_gguf_q8_0", llama, "llama", QT.Q8_0,
              "GGUF llama, 2-D weights Q8_0 (gguf.quants); golden from the dequantized weights")
    gguf_case("qwen2_gguf", qwen, "qwen2", QT.F32,
              "GGUF qwen2 F32 (q/k not permuted), q/k/v biases, tied; same weights as qwen2_bias")

    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("Generated by tests/gen_synthetic_goldens.py with transformers %s, torch %s, "
                "gguf %s; see that script. Checked by tests/test_synthetic.c.\n"
                % (transformers.__version__, torch.__version__, importlib.metadata.version("gguf")))
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print("total size %.0f KiB" % (total / 1024))
    assert total < 1.5e6


if __name__ == "__main__":
    sys.exit(main())
