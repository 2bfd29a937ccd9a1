#!/usr/bin/env python3
"""summarize_fuse.py DIR - the table of bench/fuse_bench.sh from its raw runs.

Reads DIR/env.json, the per-step logs DIR/mf_pP.runR.jsonl, the --json summaries
DIR/mf_pP.runR.summary and the sgemm peaks DIR/sgemm_tP.runR.json. A run's
tokens/s is its timed steps' tokens over the sum of their times, the first step
left out (as bench/summarize_train.py). FLOPs per token of a window step (as
docs/performance.md derives them): the window's trained blocks forward +
backward (6 x blocks x layer matmul parameters), causal attention (QK^T and PV
at the mean key count T/2, x 3 with the backward) and the adapters
(materializing W + B A + (U V) * P and mapping dL/dW to A, B, U, V: 12 x rank x
the blocks' matmul parameters per step, over the step's tokens). Prints a
markdown table (median with min-max, GFLOP/s and % of the sgemm peak at the
median: bench/benchstats.py) and writes DIR/summary.json.
"""
import glob, json, os, re, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchstats import fmt, header, load_runs, median_spread, runs_note  # noqa: E402

out = sys.argv[1]
env = json.load(open(os.path.join(out, "env.json")))
args = env.get("run", {})
num = lambda k, d: int(args.get(k, d))  # noqa: E731
ctx, batch, rank = num("ctx", 256), num("batch", 8), num("rank", 32)
# SmolLM2-135M
D, F, H, KV, HD = 576, 1536, 9, 3, 64
layer = D * (H * HD + 2 * KV * HD) + H * HD * D + 3 * D * F


def minifuse_tps(log):
    steps = [s for s in log if "step" in s][1:]              # the first step warms up
    return len(steps) / sum(1 / s["tokens_per_s"] for s in steps), len(steps)


runs = load_runs(out)
rows = []
for cfg in sorted(c for c in runs if c.startswith("mf_p")):
    P = int(cfg[4:])
    tps, steps = zip(*(minifuse_tps(log) for log in runs[cfg]))
    summ = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{cfg}.run*.summary")),
                                               key=lambda p: int(re.search(r"\.run(\d+)\.", p).group(1)))]
    it = [s["iterations"][0] for s in summ]
    blocks = it[0]["window_blocks"] - 1                      # the removed block is folded, not trained
    flops_tok = 6 * blocks * layer + 3 * blocks * 2 * 2 * (ctx / 2) * H * HD + 12 * rank * blocks * layer / (batch * ctx)
    peak = [r["aggregate_gflops"] for r in runs.get(f"sgemm_t{P}", [])]
    m = median_spread(tps)[0]
    rows.append({"config": cfg, "ranks": P, "threads": 1, "tokens_per_s": list(tps), "timed_steps": sorted(set(steps)),
                 "trained_blocks": blocks, "window_first": it[0]["window_first"], "flops_per_token": flops_tok,
                 "gflops": m * flops_tok / 1e9, "sgemm_peak_gflops": peak,
                 "pct_of_peak": 100 * m * flops_tok / 1e9 / median_spread(peak)[0] if peak else None,
                 "seconds_train": [i["seconds_train"] for i in it], "seconds_setup_fold": [i["seconds_setup_fold"] for i in it],
                 "loss_last": [i["loss_last"] for i in it]})

print("\n".join(["fuse (FuseGPT window training), SmolLM2-135M, ctx %d, batch %d, rank %d" % (ctx, batch, rank)] + header(env)))
print("tokens/s: median (min-max) over the runs, each over its timed steps (first step excluded); GFLOP/s and % of the "
      "sgemm peak (same threads in all) at the medians\n")
print("| ranks x threads | runs x timed steps | window (trained blocks) | MFLOP/token | tokens/s | GFLOP/s | sgemm peak GFLOP/s "
      "| % of peak | training s | set-up + fold s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['ranks']} x 1 | {len(r['tokens_per_s'])} x {'/'.join(map(str, r['timed_steps']))} "
          f"| from block {r['window_first']} ({r['trained_blocks']}) | {r['flops_per_token']/1e6:.1f} | {fmt(r['tokens_per_s'])} "
          f"| {r['gflops']:.1f} | {fmt(r['sgemm_peak_gflops']) if r['sgemm_peak_gflops'] else '-'} "
          f"| {r['pct_of_peak']:.1f} | {fmt(r['seconds_train'])} | {fmt(r['seconds_setup_fold'])} |")
losses = {f"{x:.9g}" for r in rows for x in r["loss_last"]}
print(f"\nlast-step loss of every run: {', '.join(sorted(losses))} ({'identical' if len(losses) == 1 else 'DIFFER'})")
note = runs_note([{"tokens_per_s": r["tokens_per_s"]} for r in rows])
if note:
    print(note)
json.dump({"rows": rows}, open(os.path.join(out, "summary.json"), "w"), indent=1)
