#!/usr/bin/env python3
"""PyTorch/transformers perplexity baseline for a GGUF model on CPU.

Same protocol as minifuse's perplexity eval: tokenize the text (no BOS), cut it
into non-overlapping windows of --ctx tokens (partial last window dropped);
each window's input is BOS followed by the window's first ctx-1 tokens and all
ctx window tokens are scored (target of input position i = window token i).
One window per forward. Only the forward passes are timed, after one untimed
warm-up forward on the first window. Prints one JSON line.

    /root/oracle-venv/bin/python bench/torch_eval.py \
        --gguf ~/.cache/minifuse/SmolLM2-135M-Instruct.Q4_1.gguf \
        --text ../shared/llm_assets/text/wikitext2_raw_test.txt \
        --ctx 256 --max-windows 8 --threads 2
"""
import argparse
import json
import math
import os
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description="PyTorch CPU perplexity baseline")
    ap.add_argument("--gguf", required=True, help="GGUF model file")
    ap.add_argument("--text", required=True, help="UTF-8 text file")
    ap.add_argument("--ctx", type=int, default=256, help="window length in tokens")
    ap.add_argument("--max-windows", type=int, default=8, help="score at most N windows")
    ap.add_argument("--max-bytes", type=int, default=0,
                    help="tokenize only the first N bytes of the text (0 = all)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                    help="transformers attention implementation")
    ap.add_argument("--bos", type=int, default=-1,
                    help="BOS id (default: the model config's bos_token_id)")
    return ap.parse_args()


def main():
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    d, f = os.path.split(os.path.abspath(os.path.expanduser(args.gguf)))
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, dtype=torch.float32, attn_implementation=args.attn)
    model.eval()
    load_s = time.perf_counter() - t0
    bos = args.bos if args.bos >= 0 else model.config.bos_token_id

    with open(args.text, "rb") as fh:
        raw = fh.read(args.max_bytes) if args.max_bytes > 0 else fh.read()
    ids = tok(raw.decode("utf-8", errors="ignore"), add_special_tokens=False).input_ids
    n_win = min(len(ids) // args.ctx, args.max_windows)
    if n_win < 1:
        print("torch_eval: %s gives %d tokens, fewer than one window of %d"
              % (args.text, len(ids), args.ctx), file=sys.stderr)
        return 1
    windows = [ids[w * args.ctx:(w + 1) * args.ctx] for w in range(n_win)]
    inputs = [torch.tensor([[bos] + w[:-1]], dtype=torch.long) for w in windows]

    with torch.inference_mode():
        model(input_ids=inputs[0], use_cache=False)           # warm-up, untimed
        logits, seconds = [], 0.0
        for x in inputs:
            t = time.perf_counter()
            out = model(input_ids=x, use_cache=False).logits[0]
            seconds += time.perf_counter() - t
            logits.append(out.numpy().copy())

    total, n = 0.0, 0
    for lg, w in zip(logits, windows):
        l64 = lg.astype(np.float64)
        m = l64.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(l64 - m).sum(axis=1))
        total += float((lse - l64[np.arange(len(w)), w]).sum())
        n += len(w)
    mean_nll = total / n
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "threads": args.threads,
        "tokens": n, "seconds": round(seconds, 4),
        "tokens_per_s": round(n / seconds, 2),
        "mean_nll": mean_nll, "ppl": math.exp(mean_nll),
        "windows": n_win, "ctx": args.ctx, "attn": args.attn,
        "load_seconds": round(load_s, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
