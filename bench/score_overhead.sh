#!/usr/bin/env bash
# score_overhead.sh - cost of `score` relative to a plain `eval` forward over the
# same tokens (N windows x 256 of TinyStories, default 32), P ranks (default 1) x 1
# thread, RUNS times (default 5), the four commands interleaved within each run:
#   eval                      the plain forward (its "seconds": the windows loop)
#   score --metrics width,bi  width + BI statistics fused into the forward (target: <= 10% over eval)
#   score --metrics ppl       drop-one perplexity on NPPL windows (default 4)
#   score --metrics mi        Macro Influence, 1 iteration, on NPPL windows
# drop-one PPL and MI are reported in forward-pass equivalents per window: by FLOP
# count (from the run's --json) and measured (its seconds per window / eval's).
# Writes bench/results/score-overhead-DATE/: env.json (bench/prov.py), CONFIG.runR.json
# (the raw --json of every command and run), stderr.txt, summary.md.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
P=${P:-1}
source bench/env.sh
M="${MODEL:-$SMOLLM2}"; N=${N:-32}; NPPL=${NPPL:-4}
mpi=(mpirun --oversubscribe --bind-to none -np "$P" bin/minifuse)
OUT="bench/results/score-overhead-$(date +%Y%m%d-%H%M)"
mkdir -p "$OUT"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
trap 'echo "score_overhead: failed; see $OUT/stderr.txt" >&2' ERR
python3 bench/prov.py "$OUT" script=bench/score_overhead.sh model="$M" text="$TS" ctx=256 windows="$N" \
    windows_ppl_mi="$NPPL" ranks="$P" threads=1 runs="$RUNS"
run() { # CONFIG RUN COMMAND-AND-OPTIONS...
    local cfg=$1 r=$2; shift 2
    "${mpi[@]}" "$@" --model "$M" --text "$TS" --ctx 256 --json > "$OUT/$cfg.run$r.json" 2>> "$OUT/stderr.txt"
}
for r in $(seq "$RUNS"); do
    echo "== run $r" >> "$OUT/stderr.txt"
    run eval "$r" eval --max-windows "$N"
    run score_width_bi "$r" score --samples "$N" --metrics width,bi --out "$tmp/s.h5"
    run score_ppl "$r" score --samples "$NPPL" --metrics ppl --out "$tmp/s.h5"
    run score_mi "$r" score --samples "$NPPL" --metrics mi --mi-iters 1 --out "$tmp/s.h5"
    echo "score_overhead: run $r/$RUNS done" >&2
done
python3 - "$OUT" "$N" "$NPPL" <<'PY' | tee "$OUT/summary.md"
import json, os, sys
sys.path.insert(0, "bench")
from benchstats import fmt, fmt_ratio, header, load_runs
out, n, npl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = load_runs(out)
sec = {c: [r["seconds"] for r in rs] for c, rs in runs.items()}
print("\n".join(["score overhead over eval"] + header(json.load(open(os.path.join(out, "env.json"))))))
print(f"seconds: median (min-max) of {len(sec['eval'])} runs; ratios: median (spread), parity when the spread contains 1\n")
print(f"- eval forward: {fmt(sec['eval'], 2)} s for {n} windows")
print(f"- score width+bi: {fmt(sec['score_width_bi'], 2)} s; / eval = {fmt_ratio(sec['score_width_bi'], sec['eval'], 'longer', 'shorter')} "
      "(target <= 1.10)")
eval_win = [s / n for s in sec["eval"]]
for name, c in (("drop-one ppl", "score_ppl"), ("MI (1 iteration)", "score_mi")):
    fe = runs[c][0]["forward_equivalents_per_window"]
    print(f"- score {name}: {fe:.2f} forward equivalents per window (FLOPs); measured "
          f"{fmt_ratio([s / npl for s in sec[c]], eval_win, 'longer', 'shorter')} x the eval time per window")
if len(sec["eval"]) < 5:
    print(f"\nnote: {len(sec['eval'])} run(s), fewer than 5: a smoke test, not a figure to quote")
PY
echo "score_overhead: $OUT" >&2
