#!/usr/bin/env python3
"""summarize_forward.py DIR [MODEL] - the table of bench/run_bench.sh from its raw runs.

Reads DIR/env.json and DIR/CONFIG.runR.json (CONFIG = mf_pP_tT, torch_pP_tT,
sgemm_tT), prints a markdown table (median tokens/s with min-max over the runs,
GFLOP/s and % of the sgemm peak at the medians, ratios to PyTorch with their
spread and "parity" when the spread contains 1: bench/benchstats.py) and
writes DIR/summary.json.
"""
import json, os, re, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchstats import add_ratios, fmt, header, load_runs, median_spread, runs_note  # noqa: E402

out = sys.argv[1]
model = sys.argv[2] if len(sys.argv) > 2 else ""

# SmolLM2-135M: FLOPs per token of one forward at ctx 256 (2 x matmul params + attention)
D, F, L, H, KV, HD, V, CTX = 576, 1536, 30, 9, 3, 64, 49152, 256
layer = D * (H * HD + 2 * KV * HD) + H * HD * D + 3 * D * F
matmul = 2 * (L * layer + V * D)
attn = L * 2 * 2 * H * HD * (CTX + 1) / 2          # QK^T and PV, mean over positions
flops_tok = matmul + attn

runs = load_runs(out)
sgemm = {t: [r["aggregate_gflops"] for r in runs[f"sgemm_t{t}"]] for t in (1, 2) if f"sgemm_t{t}" in runs}
peak = {t: median_spread(v)[0] for t, v in sgemm.items()}
rows = []
for cfg in ("mf_p1_t1", "mf_p1_t2", "mf_p2_t1", "torch_p1_t1", "torch_p1_t2", "torch_p2_t1"):
    if cfg in runs:
        procs, threads = map(int, re.search(r"_p(\d+)_t(\d+)", cfg).groups())
        tps = [r["tokens_per_s"] for r in runs[cfg]]
        gflops = median_spread(tps)[0] * flops_tok / 1e9
        rows.append({"config": cfg, "impl": "minifuse" if cfg.startswith("mf") else "pytorch", "procs": procs,
                     "threads": threads, "cores": procs * threads, "tokens_per_s": tps, "gflops": gflops,
                     "pct_of_peak": 100 * gflops / peak[procs * threads] if procs * threads in peak else None,
                     "mean_nll": [r["mean_nll"] for r in runs[cfg]], "blas_core": runs[cfg][0].get("blas_core")})
add_ratios(rows)

print("\n".join([f"forward, {os.path.basename(model)}, ctx {CTX}"] + header(json.load(open(os.path.join(out, "env.json"))))))
print(f"FLOPs/token {flops_tok/1e6:.1f} M (matmul {matmul/1e6:.1f} M + attention {attn/1e6:.1f} M); "
      + ", ".join(f"sgemm peak on {t} thread(s) {fmt(v)} GFLOP/s" for t, v in sgemm.items()))
print("tokens/s: median (min-max) over the runs; GFLOP/s and % of peak at the median; ratios: median (spread), "
      "parity when the spread contains 1\n")
print("| run | processes x threads | runs | tokens/s | GFLOP/s | % of sgemm peak | x PyTorch, same processes x threads "
      "| x fastest PyTorch, same cores | mean NLL |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    pct = f"{r['pct_of_peak']:.1f}" if r["pct_of_peak"] is not None else "-"
    print(f"| {r['config']} | {r['procs']} x {r['threads']} | {len(r['tokens_per_s'])} | {fmt(r['tokens_per_s'])} "
          f"| {r['gflops']:.1f} | {pct} | {r['x_pytorch_same_layout']} | {r['x_fastest_pytorch_same_cores']} "
          f"| {r['mean_nll'][0]:.6f} |")
if runs_note(rows):
    print(runs_note(rows))
nll = [x for r in rows for x in r["mean_nll"]]
if nll:
    print(f"\nmean NLL over all runs and rows: {min(nll):.7f} to {max(nll):.7f} (the same tokens: the same NLL on every row)")
json.dump({"model": model, "flops_per_token": flops_tok, "sgemm_peak_gflops_median": peak, "rows": rows},
          open(os.path.join(out, "summary.json"), "w"), indent=1)
