#!/usr/bin/env python3
"""summarize_train.py DIR - the table of bench/train_bench.sh from its raw runs.

Reads DIR/env.json, minifuse's per-step logs DIR/mf_*.runR.jsonl and PyTorch's
DIR/torch_*.runR.json. A run's tokens/s is its timed steps' tokens over the sum
of their times, the first (warm-up) step left out on both sides. Prints a
markdown table (median with min-max over the runs, GFLOP/s and % of the sgemm
peak at the median, ratios to PyTorch with their spread, "parity" when the
spread contains 1: bench/benchstats.py) and writes DIR/summary.json.
"""
import json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchstats import add_ratios, fmt, header, load_runs, median_spread, runs_note  # noqa: E402

out = sys.argv[1]
# SmolLM2-135M teacher (30 layers) and the student without 8 of them: matmul parameters
D, F, H, KV, HD, V = 576, 1536, 9, 3, 64, 49152
layer = D * (H * HD + 2 * KV * HD) + H * HD * D + 3 * D * F
Nt, Ns = 30 * layer + V * D, 22 * layer + V * D          # tied head counted once
flops_tok = 6 * Ns + 2 * Nt                               # student forward + backward, teacher forward
# the batch (windows a step) the runs used: distill's default gives the pipeline one micro-batch a window
BATCH = int(json.load(open(os.path.join(out, "env.json"))).get("run", {}).get("batch", 4))
CONFIGS = (("mf_p1", "minifuse, 1 rank", 1, 1),
           ("mf_pp2", f"minifuse, 2 pipeline stages (1F1B, {BATCH} micro-batches of 1 window)", 2, 1),
           ("mf_dp2", "minifuse, 2 data-parallel replicas (--dp 2)", 2, 1),
           ("torch_p1_t1", "PyTorch, 1 process x 1 thread", 1, 1), ("torch_p1_t2", "PyTorch, 1 process x 2 threads", 1, 2),
           ("torch_p2_t1", "PyTorch, 2 processes x 1 thread (DDP, gloo)", 2, 1))


def minifuse_tps(log):
    steps = [line for line in log if "step" in line][1:]       # the first step warms up
    return len(steps) / sum(1 / s["tokens_per_s"] for s in steps), len(steps)


runs = load_runs(out)
sgemm = {t: [r["aggregate_gflops"] for r in runs[f"sgemm_t{t}"]] for t in (1, 2) if f"sgemm_t{t}" in runs}
peak = {t: median_spread(v)[0] for t, v in sgemm.items()}
rows = []
for cfg, name, procs, threads in CONFIGS:
    if cfg not in runs:
        continue
    if cfg.startswith("mf"):
        tps, steps = zip(*(minifuse_tps(log) for log in runs[cfg]))
    else:
        tps, steps = [r["tokens_per_s"] for r in runs[cfg]], [r["steps"] for r in runs[cfg]]
    m, cores = median_spread(tps)[0], procs * threads
    rows.append({"config": cfg, "name": name, "impl": "minifuse" if cfg.startswith("mf") else "pytorch",
                 "procs": procs, "threads": threads, "cores": cores, "tokens_per_s": list(tps),
                 "timed_steps": sorted(set(steps)), "gflops": m * flops_tok / 1e9,
                 "pct_of_peak": 100 * m * flops_tok / 1e9 / peak[cores] if cores in peak else None,
                 "pct_of_peak_6ns": 100 * m * 6 * Ns / 1e9 / peak[cores] if cores in peak else None})
add_ratios(rows)

print("\n".join(["distillation, SmolLM2-135M -> SmolLM2 without 8 blocks, ctx 256"]
                + header(json.load(open(os.path.join(out, "env.json"))))))
print(f"teacher {Nt/1e6:.1f} M, student {Ns/1e6:.1f} M matmul params; FLOPs/token 6Ns+2Nt = {flops_tok/1e6:.0f} M "
      f"(6Ns = {6*Ns/1e6:.0f} M); " + ", ".join(f"sgemm peak on {t} thread(s) {fmt(v)} GFLOP/s" for t, v in sgemm.items()))
print("tokens/s: median (min-max) over the runs, each over its timed steps (warm-up step excluded); GFLOP/s and % of "
      "peak at the median; ratios: median (spread), parity when the spread contains 1\n")
print("| run | cores | runs x timed steps | tokens/s | GFLOP/s (6Ns+2Nt) | % of sgemm peak | % of peak (6Ns only) "
      "| x PyTorch, same processes x threads | x fastest PyTorch, same cores |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    pct = lambda k: f"{r[k]:.1f}" if r[k] is not None else "-"  # noqa: E731
    print(f"| {r['name']} | {r['cores']} | {len(r['tokens_per_s'])} x {'/'.join(map(str, r['timed_steps']))} "
          f"| {fmt(r['tokens_per_s'])} | {r['gflops']:.1f} | {pct('pct_of_peak')} | {pct('pct_of_peak_6ns')} "
          f"| {r['x_pytorch_same_layout']} | {r['x_fastest_pytorch_same_cores']} |")
mf_lr = {tuple(f"{s['lr']:.6g}" for s in log) for c in runs if c.startswith("mf") for log in runs[c]}
pt_lr = {tuple(f"{x:.6g}" for x in r["lr_per_step"]) for c in runs if c.startswith("torch") for r in runs[c]}
if mf_lr and pt_lr:
    print(f"\nlearning rate per step: {'the same on both sides' if mf_lr == pt_lr and len(mf_lr) == 1 else 'DIFFERS'} "
          f"({', '.join(sorted(mf_lr)[0])})")
if runs_note(rows):
    print(runs_note(rows))
json.dump({"flops_per_token": flops_tok, "teacher_matmul_params": Nt, "student_matmul_params": Ns,
           "sgemm_peak_gflops_median": peak, "rows": rows}, open(os.path.join(out, "summary.json"), "w"), indent=1)
