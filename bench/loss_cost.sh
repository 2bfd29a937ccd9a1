#!/usr/bin/env bash
# loss_cost.sh - the last stage's loss in GEMM FLOPs (bench/loss_cost.c): RUNS runs (default 5)
# of build/bench/loss_cost on THREADS threads (default 1): ms per window (BENCH_T tokens,
# default 256, x SmolLM2's 49152-entry vocabulary) of the LM head's sgemm, of the KL loss
# with its gradient and of the cross-entropy with its gradient, and the losses' cost per
# logit as GEMM FLOPs at the head's measured rate: the constant LOSS_FLOPS_PER_LOGIT of
# src/train/partition.c and src/plan/plan.c stands on it.
# BIN=PATH times another build of bench/loss_cost.c (e.g. one linked against an older commit's
# objects: a before/after pair); LABEL=NAME suffixes the directory.
# Writes bench/results/loss-cost-DATE[-LABEL]/: env.json (bench/prov.py), runR.json, stderr.txt,
# summary.md (median and min-max spread, bench/benchstats.py).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
THREADS=${THREADS:-1}
OUT="bench/results/loss-cost-$(date +%Y%m%d-%H%M)${LABEL:+-$LABEL}"
mkdir -p "$OUT"
trap 'echo "loss_cost: failed; see $OUT/stderr.txt" >&2' ERR
BIN=${BIN:-}
[ -n "$BIN" ] || { make -s build/bench/loss_cost 2>> "$OUT/stderr.txt"; BIN=build/bench/loss_cost; }
python3 bench/prov.py "$OUT" script=bench/loss_cost.sh binary="$BIN" threads="$THREADS" runs="$RUNS" T="${BENCH_T:-256}" note="${NOTE:-}"
for r in $(seq "$RUNS"); do
    OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS "$BIN" 2>> "$OUT/stderr.txt" | tail -1 > "$OUT/run$r.json"
done
python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import glob, json, os, sys
sys.path.insert(0, "bench")
from benchstats import fmt
out = sys.argv[1]
runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, "run*.json")))]
r0 = runs[0]
print(f"Loss cost on one window ({r0['T']} tokens x {r0['V']} vocabulary, D = {r0['D']}), {r0['blas_core']} core, "
      f"{r0['blas_threads']} thread(s), {len(runs)} runs: median (min-max)\n")
print("| work | ms per window | ns per logit | GEMM FLOPs per logit |\n|---|---|---|---|")
for w in ("head", "kl", "ce"):
    ms = [r[w]["seconds"] * 1e3 for r in runs]
    ns = [r[w]["ns_per_logit"] for r in runs]
    fl = fmt([r[w]["gemm_flops_per_logit"] for r in runs]) if w != "head" else f"{2 * r0['D']} (the GEMM itself)"
    print(f"| {w} | {fmt(ms, 2)} | {fmt(ns, 3)} | {fl} |")
print(f"\nhead sgemm: {fmt([r['head_gflops'] for r in runs])} GFLOP/s; every loss finite: {all(r['finite'] for r in runs)}")
PY
echo "loss_cost: wrote $OUT"
