#!/usr/bin/env python3
"""Turn the raw JSON lines of run_bench.sh into ratios: % of the sgemm peak, x PyTorch."""
import json, os, sys

tmp, dest, model = sys.argv[1], sys.argv[2], sys.argv[3]
def load(name):
    p = os.path.join(tmp, name + ".json")
    return json.load(open(p)) if os.path.exists(p) and os.path.getsize(p) else None

# SmolLM2-135M: FLOPs per token of one forward at ctx 256 (2 x matmul params + attention)
D, F, L, H, KV, HD, V, CTX = 576, 1536, 30, 9, 3, 64, 49152, 256
layer = D * (H * HD + 2 * KV * HD) + H * HD * D + 3 * D * F
matmul = 2 * (L * layer + V * D)
attn = L * 2 * 2 * H * HD * (CTX + 1) / 2          # QK^T and PV, mean over positions
flops_tok = matmul + attn

sg = {t: load(f"sgemm_t{t}") for t in (1, 2)}
def peak(t):
    s = sg[t]
    return s.get("aggregate_gflops") or s.get("gflops_aggregate") or s.get("aggregate") if s else None

rows = []
for name, ranks, threads in (("mf_p1_t1", 1, 1), ("mf_p1_t2", 1, 2), ("mf_p2_t1", 2, 1), ("torch_t1", 1, 1), ("torch_t2", 1, 2)):
    r = load(name)
    if not r:
        continue
    tps = r["tokens_per_s"]
    gf = tps * flops_tok / 1e9
    cores = ranks * threads
    pk = peak(cores)
    rows.append({"run": name, "ranks": ranks, "threads_per_rank": threads, "tokens": r["tokens"],
                 "tokens_per_s": round(tps, 1), "gflops": round(gf, 1),
                 "sgemm_peak_gflops": pk, "pct_of_peak": round(100 * gf / pk, 1) if pk else None,
                 "mean_nll": r["mean_nll"]})
by = {r["run"]: r for r in rows}
for r in rows:
    t = by.get("torch_t%d" % (r["ranks"] * r["threads_per_rank"]))
    r["x_pytorch_same_cores"] = round(r["tokens_per_s"] / t["tokens_per_s"], 2) if t and not r["run"].startswith("torch") else None

print(f"model {os.path.basename(model)}; FLOPs/token {flops_tok/1e6:.1f} M (matmul {matmul/1e6:.1f} M + attention {attn/1e6:.1f} M)")
print(f"sgemm peak at model shapes: 1 thread {peak(1)} GFLOP/s, 2 threads {peak(2)} GFLOP/s")
print("| run | ranks x threads | tokens/s | GFLOP/s | % of sgemm peak | x PyTorch (same cores) | mean NLL |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['run']} | {r['ranks']} x {r['threads_per_rank']} | {r['tokens_per_s']} | {r['gflops']} | {r['pct_of_peak']} | {r['x_pytorch_same_cores']} | {r['mean_nll']:.6f} |")
json.dump({"model": model, "flops_per_token": flops_tok, "sgemm": sg, "runs": rows}, open(dest, "w"), indent=1)
print("wrote", dest)
