#!/usr/bin/env python3
"""make_weights.py OUT - a Llama-3.2-1B-shaped model with random weights.

Writes OUT/config.json (this folder's config.json, --set KEY=VALUE overriding
integer fields for a small test) and OUT/model.safetensors: every tensor of
the config in bfloat16, Hugging Face names and layouts, drawn from
N(0, 0.02^2) (norm weights 1) with a fixed seed. Made on the machine that runs
the benchmark (a GPU if torch sees one, else the CPU), so no 2.5 GB file is
carried. Written to a temporary name, then renamed. Prints one JSON line
(parameters, bytes, seconds).

    python3 bench/llama32_1b/make_weights.py /tmp/llama32_1b
    python3 bench/llama32_1b/make_weights.py /tmp/tiny --set num_hidden_layers=2 --set hidden_size=64 \\
        --set intermediate_size=128 --set num_attention_heads=4 --set num_key_value_heads=2 --set head_dim=16 --set vocab_size=512
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def tensor_shapes(c):
    """(name, shape) of every tensor, Hugging Face Llama names; Linear weights [out][in]."""
    d, f, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    out = [("model.embed_tokens.weight", (c["vocab_size"], d))]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (d,)), (p + "self_attn.q_proj.weight", (q, d)),
                (p + "self_attn.k_proj.weight", (kv, d)), (p + "self_attn.v_proj.weight", (kv, d)),
                (p + "self_attn.o_proj.weight", (d, q)), (p + "post_attention_layernorm.weight", (d,)),
                (p + "mlp.gate_proj.weight", (f, d)), (p + "mlp.up_proj.weight", (f, d)),
                (p + "mlp.down_proj.weight", (d, f))]
    out.append(("model.norm.weight", (d,)))
    if not c.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (c["vocab_size"], d)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output folder (created; replaced if it holds a model)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an integer config field")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--std", type=float, default=0.02)
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    with open(os.path.join(HERE, "config.json")) as fh:
        cfg = json.load(fh)
    for kv in args.set:
        k, _, v = kv.partition("=")
        if k not in cfg or not isinstance(cfg[k], int):
            sys.exit(f"make_weights: --set {kv}: {k} is not an integer field of config.json")
        cfg[k] = int(v)

    t0 = time.perf_counter()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=dev).manual_seed(args.seed)
    tensors, n = {}, 0
    for name, shape in tensor_shapes(cfg):
        if len(shape) == 1:
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, generator=g, device=dev, dtype=torch.float32) * args.std).to(torch.bfloat16).cpu()
        tensors[name] = t.contiguous()
        n += t.numel()
    os.makedirs(args.out, exist_ok=True)
    tmp = os.path.join(args.out, "model.safetensors.tmp")
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(args.out, "model.safetensors"))
    with open(os.path.join(args.out, "config.json.tmp"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    os.replace(os.path.join(args.out, "config.json.tmp"), os.path.join(args.out, "config.json"))
    size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    print(json.dumps({"out": args.out, "parameters": n, "bytes": size, "device": dev,
                      "seconds": round(time.perf_counter() - t0, 2)}))


if __name__ == "__main__":
    main()
