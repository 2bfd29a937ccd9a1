#!/usr/bin/env bash
# bf16_gemm.sh - half-precision weights on the CPU: GEMM throughput and perplexity.
#   1. build/bench/bf16_gemm (bench/bf16_gemm.c) RUNS times (default 5): GFLOP/s of float32
#      cblas_sgemm, of linear_h with bf16 W (blocked conversion, the default) and of
#      cblas_sbgemm (null when this OpenBLAS lacks it) at SmolLM2-135M's shapes (ctx 256),
#      1 thread (THREADS), each shape ~BENCH_SECONDS (default 0.5) per method;
#   2. SmolLM2-135M (GGUF Q4_1) WikiText-2 raw test perplexity with --weights f32 and bf16
#      (docs/results.md's protocol: 256-token windows, BOS + 255; N windows, default 16),
#      P ranks (default 2) x 1 thread, RUNS_EVAL times each (default 1; seconds and tokens/s).
# Writes bench/results/bf16-DATE/: env.json (bench/prov.py), gemm.runR.json, eval-W.runR.json,
# stderr.txt, summary.md (median and min-max spread, bench/benchstats.py).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
N=${N:-16}; THREADS=${THREADS:-1}; RUNS_EVAL=${RUNS_EVAL:-1}
OUT="bench/results/bf16-$(date +%Y%m%d-%H%M)"
mkdir -p "$OUT" build/bench
trap 'echo "bf16_gemm: failed; see $OUT/stderr.txt" >&2' ERR
mpicc -O3 -march=native -fopenmp -Isrc -I/usr/include/x86_64-linux-gnu/openblas-openmp bench/bf16_gemm.c \
    src/backend/cpu_half.c src/util/half.c src/util/err.c src/backend/cpu_blas.c src/util/log.c \
    -lopenblas -ljansson -o build/bench/bf16_gemm
python3 bench/prov.py "$OUT" script=bench/bf16_gemm.sh model="$SMOLLM2" text="$WIKI" ctx=256 windows="$N" \
    ranks="$P" threads="$THREADS" runs="$RUNS" runs_eval="$RUNS_EVAL" note="${NOTE:-}"
for r in $(seq "$RUNS"); do
    OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS build/bench/bf16_gemm 2>> "$OUT/stderr.txt" | tail -1 > "$OUT/gemm.run$r.json"
done
for r in $(seq "$RUNS_EVAL"); do
    for w in f32 bf16; do
        $MPI eval --model "$SMOLLM2" --text "$WIKI" --ctx 256 --max-windows "$N" --weights "$w" --json \
            > "$OUT/eval-$w.run$r.json" 2>> "$OUT/stderr.txt"
    done
done
python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import glob, json, os, sys
sys.path.insert(0, "bench")
from benchstats import fmt, ratio
out = sys.argv[1]
runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, "gemm.run*.json")))]
print(f"GEMM GFLOP/s at SmolLM2-135M's shapes (M = 256), {runs[0]['blas_core']} core, "
      f"{runs[0]['blas_threads']} thread, {len(runs)} runs: median (min-max)\n")
print("| shape (N x K) | sgemm f32 | linear_h bf16 blocked | cblas_sbgemm |\n|---|---|---|---|")
names = [s["name"] for s in runs[0]["shapes"]]
for i, n in enumerate(names):
    s0 = runs[0]["shapes"][i]
    cell = lambda m: fmt([r["shapes"][i][m] for r in runs]) if s0[m] is not None else "n/a"
    print(f"| {n} ({s0['n']} x {s0['k']}) | {cell('sgemm')} | {cell('blocked')} | {cell('sbgemm')} |")
w = lambda m: [r["weighted_gflops"][m] for r in runs]
sb = fmt(w("sbgemm")) if runs[0]["weighted_gflops"]["sbgemm"] is not None else "n/a (not in this OpenBLAS)"
print(f"| forward-weighted | {fmt(w('sgemm'))} | {fmt(w('blocked'))} | {sb} |\n")
r = ratio(w("blocked"), w("sgemm"))
print(f"blocked bf16 / sgemm: {r[0]:.2f}x ({r[1]:.2f}-{r[2]:.2f}), {r[3]}\n")
ev = {wt: [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, f"eval-{wt}.run*.json")))] for wt in ("f32", "bf16")}
pf, pb = ev["f32"][0]["ppl"], ev["bf16"][0]["ppl"]
print(f"SmolLM2-135M Q4_1, WikiText-2 raw test, {ev['f32'][0]['windows']} x 256 tokens, {ev['f32'][0]['ranks']} ranks:")
print(f"ppl f32 {pf:.4f}, bf16 {pb:.4f}: change {100 * (pb - pf) / pf:+.4f} %")
for wt in ("f32", "bf16"):
    e = ev[wt]
    print(f"  {wt}: tokens/s {fmt([x['tokens_per_s'] for x in e])}, weight bytes per rank {e[0]['weight_bytes']}, "
          f"peak RSS per rank {e[0]['peak_rss_bytes']}")
PY
echo "bf16_gemm: wrote $OUT"
