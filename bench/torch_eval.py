#!/usr/bin/env python3
"""PyTorch/transformers perplexity baseline for a GGUF model on CPU (or a GPU:
--device cuda --dtype bfloat16, bench/gpu_check.sh).

Same protocol as minifuse's perplexity eval: tokenize the text (no BOS), cut it
into non-overlapping windows of --ctx tokens (partial last window dropped);
each window's input is BOS followed by the window's first ctx-1 tokens and all
ctx window tokens are scored (target of input position i = window token i).
One window per forward.

Timed span, the same as `minifuse eval` (src/cli/eval.c): loading the model and
tokenizing the text are outside; the loop over the windows is inside, each
window's forward AND its NLL (logsumexp over the vocabulary, minus the target's
logit); no warm-up window (--warmup N adds N untimed forwards first, which
minifuse does not do).

--procs N runs N processes of --threads threads each (spawned, each with its
own copy of the model), process r scoring the r-th contiguous N-th of the
windows; they start their loops together (a barrier after loading) and the
time is that of the slowest, so tokens/s = all tokens / the slowest's
seconds: the data-parallel counterpart of `mpirun -np N minifuse eval`.
Prints one JSON line.

On a GPU (--device cuda) the model is loaded in float32 (GGUF dequantized),
cast to --dtype and moved to the device; the clock is read after
torch.cuda.synchronize(); --procs must be 1.

    ~/.cache/minifuse/torch-venv/bin/python bench/torch_eval.py \
        --gguf ~/.cache/minifuse/SmolLM2-135M-Instruct.Q4_1.gguf \
        --text ../shared/llm_assets/text/wikitext2_raw_test.txt \
        --ctx 256 --max-windows 16 --threads 1 --procs 2
"""
import argparse
import json
import math
import os
import sys
import time
from queue import Empty

SPAN = "windows loop: forward + NLL per window; load and tokenization outside"


def parse_args():
    ap = argparse.ArgumentParser(description="PyTorch CPU perplexity baseline")
    ap.add_argument("--gguf", required=True, help="GGUF model file")
    ap.add_argument("--text", required=True, help="UTF-8 text file")
    ap.add_argument("--ctx", type=int, default=256, help="window length in tokens")
    ap.add_argument("--max-windows", type=int, default=8, help="score at most N windows")
    ap.add_argument("--max-bytes", type=int, default=0,
                    help="tokenize only the first N bytes of the text (0 = all)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process")
    ap.add_argument("--procs", type=int, default=1, help="processes, each scoring its share of the windows")
    ap.add_argument("--warmup", type=int, default=0, help="untimed forwards before the loop (minifuse: 0)")
    ap.add_argument("--passes", type=int, default=1,
                    help="run the timed loop N times (figures of the first; every pass's seconds listed)")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                    help="transformers attention implementation")
    ap.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="weights and activations (default float32; bfloat16 on a GPU)")
    ap.add_argument("--bos", type=int, default=-1,
                    help="BOS id (default: the model config's bos_token_id)")
    return ap.parse_args()


def run(args, rank=0, barrier=None):
    """Load, tokenize, then score this process's windows: (nll sum, tokens, seconds, windows, load s)."""
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[v] = str(args.threads)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    d, f = os.path.split(os.path.abspath(os.path.expanduser(args.gguf)))
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, dtype=torch.float32, attn_implementation=args.attn)
    model = model.to(device=args.device, dtype=getattr(torch, args.dtype))
    model.eval()
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    load_s = time.perf_counter() - t0
    bos = args.bos if args.bos >= 0 else model.config.bos_token_id

    with open(args.text, "rb") as fh:
        raw = fh.read(args.max_bytes) if args.max_bytes > 0 else fh.read()
    ids = tok(raw.decode("utf-8", errors="ignore"), add_special_tokens=False).input_ids
    n_win = min(len(ids) // args.ctx, args.max_windows)
    lo, hi = rank * n_win // args.procs, (rank + 1) * n_win // args.procs
    windows = [ids[w * args.ctx:(w + 1) * args.ctx] for w in range(lo, hi)]

    total = 0.0
    with torch.inference_mode():
        for _ in range(args.warmup if windows else 0):
            model(input_ids=torch.tensor([[bos] + windows[0][:-1]], device=args.device), use_cache=False)
        sync()
        if barrier is not None:
            barrier.wait()
        passes = []
        for k in range(max(1, args.passes)):
            t, nll = time.perf_counter(), 0.0
            for w in windows:                               # the timed span
                x = torch.tensor([[bos] + w[:-1]], dtype=torch.long, device=args.device)
                target = torch.tensor(w, dtype=torch.long, device=args.device)
                z = model(input_ids=x, use_cache=False).logits[0].float()
                lse = torch.logsumexp(z, dim=-1).double()
                nll += float((lse - z.gather(1, target[:, None])[:, 0].double()).sum())
            sync()
            passes.append(time.perf_counter() - t)
            if k == 0:
                total = nll
        seconds = passes[0]
    return {"nll_sum": total, "tokens": len(windows) * args.ctx, "seconds": seconds, "passes": passes,
            "windows": len(windows),
            "load_seconds": load_s, "torch": torch.__version__, "transformers": sys.modules["transformers"].__version__,
            "gpu": torch.cuda.get_device_name() if cuda else None}


def child(args, rank, barrier, queue):
    queue.put((rank, run(args, rank, barrier)))


def main():
    args = parse_args()
    if args.device != "cpu" and args.procs != 1:
        print("torch_eval: --procs must be 1 with --device " + args.device, file=sys.stderr)
        return 1
    if args.procs == 1:
        parts = [run(args)]
    else:
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        barrier, queue = ctx.Barrier(args.procs), ctx.Queue()
        ps = [ctx.Process(target=child, args=(args, r, barrier, queue)) for r in range(args.procs)]
        for p in ps:
            p.start()
        got = {}
        while len(got) < len(ps):
            try:
                r, res = queue.get(timeout=5)
                got[r] = res
            except Empty:
                if any(p.exitcode not in (None, 0) for p in ps):
                    for p in ps:
                        p.terminate()
                    print("torch_eval: a process failed", file=sys.stderr)
                    return 1
        for p in ps:
            p.join()
        parts = [got[r] for r in range(args.procs)]
    n = sum(p["tokens"] for p in parts)
    if n < args.ctx:
        print(f"torch_eval: {args.text} gives fewer than one window of {args.ctx} tokens", file=sys.stderr)
        return 1
    seconds = max(p["seconds"] for p in parts)
    mean_nll = sum(p["nll_sum"] for p in parts) / n
    print(json.dumps({
        "impl": "pytorch", "torch": parts[0]["torch"], "transformers": parts[0]["transformers"],
        "device": args.device, "dtype": args.dtype, "gpu": parts[0]["gpu"],
        "threads": args.threads, "procs": args.procs, "tokens": n, "seconds": round(seconds, 4),
        "tokens_per_s": round(n / seconds, 2), "mean_nll": mean_nll, "ppl": math.exp(mean_nll),
        "windows": sum(p["windows"] for p in parts), "ctx": args.ctx, "attn": args.attn, "warmup": args.warmup,
        "span": SPAN, "seconds_per_proc": [round(p["seconds"], 4) for p in parts],
        "load_seconds": round(max(p["load_seconds"] for p in parts), 2),
        "seconds_per_pass": [round(max(p["passes"][k] for p in parts), 4) for k in range(len(parts[0]["passes"]))]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
