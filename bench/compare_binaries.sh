#!/usr/bin/env bash
# compare_binaries.sh - is a change neutral for speed? Two builds of minifuse,
# timed back to back on the same work, runs interleaved (A B A B ...), RUNS
# each (default 5); median and spread of every figure, raw per-run JSON kept.
#
#   bash bench/compare_binaries.sh OLD_BINARY NEW_BINARY [TAG]
#
# Work (SmolLM2-135M, 1 OpenMP/BLAS thread per rank, 2 ranks):
#   eval        forward of 16 windows x 256 tokens over 2 pipeline stages (tokens/s)
#   distill-pp  distillation, 2 pipeline stages x 1 replica (tokens/s, seconds per step)
#   distill-dp  distillation, 1 stage x 2 data-parallel replicas: the step that
#               sums the gradients over the replicas (tokens/s, seconds per step)
# Distillation: teacher SmolLM2, student SmolLM2 without 8 blocks, batch 4 x
# ctx 256, STEPS + 1 steps (default 20 + 1) of which the first (warm-up) is not counted.
# Output: bench/results/compare-TAG-DATE/{runs.jsonl,summary.md,env.json,stderr.txt} (env.json: bench/prov.py;
# bin/minifuse there is the working tree's, the two binaries are named with their sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
A=$(realpath "${1:?usage: compare_binaries.sh OLD NEW [TAG]}"); B=$(realpath "${2:?}"); TAG=${3:-ab}
STEPS=${STEPS:-20}; M="$SMOLLM2"
DISTILL=${DISTILL:-"pp dp"}   # which distillation layouts to time (pp: 2 stages, dp: 2 replicas)
OUT="bench/results/compare-$TAG-$(date +%Y%m%d-%H%M)"; mkdir -p "$OUT"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 bench/prov.py "$OUT" script=bench/compare_binaries.sh old="$A" old_sha256="$(sha256sum "$A" | cut -c1-64)" \
    new="$B" new_sha256="$(sha256sum "$B" | cut -c1-64)" ranks=2 threads=1 runs="$RUNS" steps="$STEPS"
OMP_NUM_THREADS=1 "$A" prune --model "$M" --out "$tmp/student" --drop-layers 8 --metric random --seed 1 >/dev/null 2>> "$OUT/stderr.txt"
TEXT="$TS"
: > "$OUT/runs.jsonl"
one() { # label binary run: one run of every piece of work, one JSON line each (with the raw output)
    local label=$1 bin=$2 r=$3 ev dp
    ev=$(mpirun --oversubscribe --bind-to none -np 2 "$bin" eval --model "$M" --text "$WIKI" --ctx 256 --max-windows 16 --json 2>> "$OUT/stderr.txt")
    python3 -c 'import json,sys; print(json.dumps({"binary":sys.argv[2],"run":int(sys.argv[3]),"work":"eval",**json.loads(sys.argv[1])}))' \
        "$ev" "$label" "$r" >> "$OUT/runs.jsonl"
    for work in $DISTILL; do
        dp=1; [ $work = dp ] && dp=2
        rm -rf "$tmp/d" "$tmp/d.ckpt"
        mpirun --oversubscribe --bind-to none -np 2 "$bin" distill --teacher "$M" --student "$tmp/student" --text "$TEXT" \
            --out "$tmp/d" --tokens $(( (STEPS + 1) * 4 * 256 )) --batch 4 --lr 1e-4 --dp $dp --tokenizer "$M" --log "$tmp/log.jsonl" >/dev/null 2>> "$OUT/stderr.txt"
        python3 - "$tmp/log.jsonl" "$label" "$r" "distill-$work" >> "$OUT/runs.jsonl" <<'PY'
import json, sys
log = [json.loads(l) for l in open(sys.argv[1])]
lines = log[1:]                                               # the first step warms up
tps = len(lines) / sum(1 / l["tokens_per_s"] for l in lines)  # tokens over time
print(json.dumps({"binary": sys.argv[2], "run": int(sys.argv[3]), "work": sys.argv[4], "tokens_per_s": tps,
                  "seconds_per_step": 4 * 256 / tps, "log": log}))
PY
    done
}
for r in $(seq "$RUNS"); do one old "$A" "$r"; one new "$B" "$r"; echo "compare: run $r/$RUNS done" >&2; done
python3 - "$OUT/runs.jsonl" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
sys.path.insert(0, "bench")
from benchstats import fmt, fmt_ratio
rows = [json.loads(l) for l in open(sys.argv[1])]
print("tokens/s: median (min-max) over the runs; new / old: median (spread), parity when the spread contains 1\n")
print("| work | old tokens/s | new tokens/s | new / old |")
print("|---|---|---|---|")
for w in ("eval", "distill-pp", "distill-dp"):
    v = {b: [r["tokens_per_s"] for r in rows if r["work"] == w and r["binary"] == b] for b in ("old", "new")}
    if not v["old"]: continue
    print(f"| {w} | {fmt(v['old'])} | {fmt(v['new'])} | {fmt_ratio(v['new'], v['old'])} |")
for w in ("distill-pp", "distill-dp"):
    if not any(r["work"] == w for r in rows): continue
    s = {b: statistics.median(r["seconds_per_step"] for r in rows if r["work"] == w and r["binary"] == b) for b in ("old", "new")}
    print(f"\n{w}: seconds per step (median) old {s['old']:.3f}, new {s['new']:.3f}")
PY
echo "compare: $OUT"
