#!/usr/bin/env python3
"""gpu_summary.py DIR - the figures of one bench/gpu_check.sh run, from its raw files.

Reads DIR/parts.tsv (part, exit status, seconds), DIR/gpu.txt (nvidia-smi's
GPU name), the eval JSON lines (eval_cpu.json, eval_cuda.json, torch_eval.json),
the distillation step log (distill.jsonl) and the model config the step ran
(distill_config.json). Prints a short table and writes DIR/summary.json.

Distillation FLOPs per token, as bench/summarize_train.py counts them (matmul
parameters, the tied head once): 6 N_student + 2 N_teacher, plus attention
(PaLM/llm.c convention, no causal halving): 12 L d_attn ctx (student forward
and backward) + 4 L d_attn ctx (teacher forward). MFU = tokens/s x FLOPs per
token / the GPU's dense BF16 peak (H100 SXM and H200: 989 TFLOP/s). The first
step (warm-up) is left out of tokens/s.
"""
import json
import math
import os
import sys

PEAKS = (("H200", 989e12), ("H100", 989e12))  # dense BF16, SXM; a PCIe H100 is lower (756)


def load_json(path):
    try:
        with open(path) as fh:
            for line in reversed(fh.read().strip().splitlines()):
                line = line.strip()
                if line.startswith("{"):
                    return json.loads(line)
    except (OSError, ValueError):
        pass
    return None


def matmul_params(c):
    d, f, hd, L = c["hidden_size"], c["intermediate_size"], c["head_dim"], c["num_hidden_layers"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    layer = d * q + 2 * d * kv + q * d + 3 * d * f
    return L * layer + c["vocab_size"] * d, q  # matmul parameters, d_attn (heads x head_dim)


def main():
    out = sys.argv[1]
    s = {"parts": {}}
    try:
        with open(os.path.join(out, "parts.tsv")) as fh:
            for line in fh:
                name, rc, secs = line.rstrip("\n").split("\t")[:3]
                s["parts"][name] = {"rc": int(rc), "seconds": float(secs)}
    except OSError:
        pass
    gpu = ""
    try:
        with open(os.path.join(out, "gpu.txt")) as fh:
            gpu = fh.read().strip().splitlines()[0]
    except (OSError, IndexError):
        pass
    s["gpu"] = gpu
    peak = next((p for k, p in PEAKS if k in gpu), None)
    s["peak_bf16_flops"] = peak

    ec, eg, te = (load_json(os.path.join(out, f)) for f in ("eval_cpu.json", "eval_cuda.json", "torch_eval.json"))
    if ec and eg:
        s["ppl_cpu"], s["ppl_cuda"] = ec["ppl"], eg["ppl"]
        s["ppl_rel_diff"] = abs(eg["ppl"] - ec["ppl"]) / ec["ppl"]
    if eg:
        s["minifuse_cuda_tokens_per_s"] = eg.get("tokens_per_s")
    if ec:
        s["minifuse_cpu_tokens_per_s"] = ec.get("tokens_per_s")
    if te:
        s["torch_tokens_per_s"], s["torch_ppl"] = te.get("tokens_per_s"), te.get("ppl")
        sp = te.get("seconds_per_pass") or []
        if len(sp) > 1 and sp[1] > 0:
            s["torch_tokens_per_s_warm"] = te["tokens"] / sp[1]
    if eg and te and te.get("tokens_per_s"):
        s["minifuse_over_torch"] = eg["tokens_per_s"] / te["tokens_per_s"]

    cfg = load_json(os.path.join(out, "distill_config.json"))
    steps = []
    try:
        with open(os.path.join(out, "distill.jsonl")) as fh:
            steps = [json.loads(x) for x in fh if x.strip().startswith("{") and '"step"' in x]
    except (OSError, ValueError):
        pass
    if cfg and len(steps) > 1:
        timed = steps[1:]
        tps = len(timed) / sum(1 / x["tokens_per_s"] for x in timed)
        n, d_attn = matmul_params(cfg)
        ctx, L = cfg["ctx"], cfg["num_hidden_layers"]
        flops_tok = 8 * n + 16 * L * d_attn * ctx  # student 6N + 12 L d ctx, teacher 2N + 4 L d ctx
        s["distill"] = {"steps_timed": len(timed), "tokens_per_s": tps, "flops_per_token": flops_tok,
                        "matmul_params": n, "ctx": ctx, "batch": cfg.get("batch"),
                        "tflops": tps * flops_tok / 1e12,
                        "mfu": tps * flops_tok / peak if peak else None,
                        "mfu_no_attention": tps * 8 * n / peak if peak else None}

    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(s, fh, indent=1)

    print(f"gpu: {gpu or '?'}")
    for name, p in s["parts"].items():
        state = "ok" if p["rc"] == 0 else ("TIMEOUT" if p["rc"] in (124, 137) else f"FAILED rc={p['rc']}")
        print(f"  {name:<14} {state:<14} {p['seconds']:7.1f} s")

    def f(x, fmt):
        return fmt % x if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)) else "n/a"
    def pct(x):
        return f(x * 100 if isinstance(x, float) else None, "%.1f %%")
    print(f"SmolLM2 WikiText-2 ppl: cpu {f(s.get('ppl_cpu'), '%.4f')}  cuda {f(s.get('ppl_cuda'), '%.4f')}"
          f"  rel diff {f(s.get('ppl_rel_diff'), '%.2e')} (target < 5e-3)  torch bf16 {f(s.get('torch_ppl'), '%.4f')}")
    print(f"SmolLM2 eval tokens/s: minifuse cuda {f(s.get('minifuse_cuda_tokens_per_s'), '%.0f')}"
          f"  pytorch bf16 sdpa {f(s.get('torch_tokens_per_s'), '%.0f')} (warm pass {f(s.get('torch_tokens_per_s_warm'), '%.0f')})"
          f"  ratio {f(s.get('minifuse_over_torch'), '%.2fx')}  (minifuse cpu {f(s.get('minifuse_cpu_tokens_per_s'), '%.0f')})")
    dd = s.get("distill", {})
    print(f"Llama-3.2-1B-shaped distill step: {f(dd.get('tokens_per_s'), '%.0f')} tokens/s,"
          f" {f(dd.get('tflops'), '%.1f')} TFLOP/s, MFU {pct(dd.get('mfu'))}"
          f" (without attention {pct(dd.get('mfu_no_attention'))}; target >= 50 %)")


if __name__ == "__main__":
    main()
