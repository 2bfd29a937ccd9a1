#!/usr/bin/env python3
"""make_synthetic.py - a ~1.1B-parameter Llama with random weights, BF16, sharded safetensors.

    python3 bench/make_synthetic.py [OUT_DIR] [--shards N] [--layers L] [--seed S]

OUT_DIR (default ~/.cache/minifuse/synth-1b) gets config.json, model-0000i-of-0000N.safetensors,
model.safetensors.index.json and tokenizer.bin (the Llama-2 32,000-token tokenizer from the shared
assets: $MINIFUSE_SHARED/llm_assets/tokenizers/llama2_tokenizer.bin, default ../shared). Shapes are
TinyLlama-1.1B's: dim 2048, 22 layers, FFN 5632, 32 heads, 4 KV heads, vocab 32000, untied head.
Weights are N(0, 0.02) (norms 1), rounded to bf16; the point is the memory of loading it, not its
text (its perplexity is that of noise). Written with numpy only (no torch): BF16 is stored as the
upper 16 bits of float32, rounded to nearest even. Each file is written under a temporary name and
renamed; an existing complete model (config.json present, same shapes) is kept.
"""
import argparse, json, os, shutil, sys
import numpy as np

CFG = dict(dim=2048, n_layers=22, ffn=5632, n_heads=32, n_kv=4, vocab=32000)


def tensors(c):
    """(name, shape) in file order: embedding, layers, final norm, head."""
    D, F, hd = c["dim"], c["ffn"], c["dim"] // c["n_heads"]
    Q, KV = c["n_heads"] * hd, c["n_kv"] * hd
    out = [("model.embed_tokens.weight", (c["vocab"], D))]
    for l in range(c["n_layers"]):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", (D,)), (p + "self_attn.q_proj.weight", (Q, D)),
                (p + "self_attn.k_proj.weight", (KV, D)), (p + "self_attn.v_proj.weight", (KV, D)),
                (p + "self_attn.o_proj.weight", (D, Q)), (p + "post_attention_layernorm.weight", (D,)),
                (p + "mlp.gate_proj.weight", (F, D)), (p + "mlp.up_proj.weight", (F, D)),
                (p + "mlp.down_proj.weight", (D, F))]
    out += [("model.norm.weight", (D,)), ("lm_head.weight", (c["vocab"], D))]
    return out


def bf16_bits(x):
    """float32 array -> uint16 bf16 bits, round to nearest even."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def random_tensor(rng, name, shape):
    if len(shape) == 1:
        return bf16_bits(np.ones(shape, np.float32))
    return bf16_bits(rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))


def write_shard(path, items, rng):
    """items: [(name, shape)]; header JSON padded to 8 bytes, then the data back to back."""
    hdr, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in items:
        n = int(np.prod(shape)) * 2
        hdr[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for name, shape in items:
            f.write(random_tensor(rng, name, shape).tobytes())
    os.replace(tmp, path)
    return off


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=os.path.expanduser("~/.cache/minifuse/synth-1b"))
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--layers", type=int, default=CFG["n_layers"])
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    c = dict(CFG, n_layers=a.layers)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c["dim"],
              "intermediate_size": c["ffn"], "num_hidden_layers": c["n_layers"],
              "num_attention_heads": c["n_heads"], "num_key_value_heads": c["n_kv"],
              "head_dim": c["dim"] // c["n_heads"], "vocab_size": c["vocab"], "max_position_embeddings": 2048,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "attention_bias": False,
              "mlp_bias": False, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
              "torch_dtype": "bfloat16"}
    os.makedirs(a.out, exist_ok=True)
    cfg_path = os.path.join(a.out, "config.json")
    if os.path.exists(cfg_path) and json.load(open(cfg_path)) == config:
        print(f"{a.out}: already complete, kept")
        return 0
    shared = os.environ.get("MINIFUSE_SHARED", "../shared")
    shutil.copyfile(os.path.join(shared, "llm_assets/tokenizers/llama2_tokenizer.bin"),
                    os.path.join(a.out, "tokenizer.bin"))
    ts = tensors(c)
    total = sum(int(np.prod(s)) * 2 for _, s in ts)
    # contiguous shards of about total/N bytes each, in file order
    shards, acc = [[]], 0
    for t in ts:
        if acc >= total * (len(shards)) / a.shards and len(shards) < a.shards:
            shards.append([])
        shards[-1].append(t)
        acc += int(np.prod(t[1])) * 2
    rng = np.random.default_rng(a.seed)
    wmap, k = {}, len(shards)
    for i, items in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{k:05d}.safetensors"
        n = write_shard(os.path.join(a.out, fname), items, rng)
        wmap.update({name: fname for name, _ in items})
        print(f"{fname}: {len(items)} tensors, {n / 2**20:.0f} MiB", flush=True)
    idx = os.path.join(a.out, "model.safetensors.index.json")
    with open(idx + ".tmp", "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f, indent=1)
    os.replace(idx + ".tmp", idx)
    with open(cfg_path + ".tmp", "w") as f:
        json.dump(config, f, indent=1)
    os.replace(cfg_path + ".tmp", cfg_path)  # last: marks the model complete
    params = total // 2
    print(f"{a.out}: {params / 1e9:.3f} B parameters, {total / 2**30:.2f} GiB of bf16 in {k} shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
