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
# ctx 256, STEPS + 1 steps of which the first (warm-up) is not counted.
# Output: bench/results/compare-TAG-DATE/{runs.jsonl,summary.md,env.txt}.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
A=$(realpath "${1:?usage: compare_binaries.sh OLD NEW [TAG]}"); B=$(realpath "${2:?}"); TAG=${3:-ab}
RUNS=${RUNS:-5}; STEPS=${STEPS:-6}; M="$SMOLLM2"
OUT="bench/results/compare-$TAG-$(date +%Y%m%d-%H%M)"; mkdir -p "$OUT"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
{
    echo "date: $(date -u +%FT%TZ)"; echo "old: $A ($(sha256sum "$A" | cut -c1-16))"; echo "new: $B ($(sha256sum "$B" | cut -c1-16))"
    echo "commit: $(git rev-parse HEAD)"; echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"; echo "cores: $(nproc)"
    echo "flags: $(grep -m1 -o 'avx512[a-z_0-9]*\|avx2\|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "mpirun: $(mpirun --version | head -1)"; echo "openblas: $(dpkg-query -W -f '${Version}' libopenblas0-openmp 2>/dev/null)"
    echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} threads per rank: 1, ranks: 2, runs: $RUNS, steps: $STEPS"
} > "$OUT/env.txt"
OMP_NUM_THREADS=1 "$A" prune --model "$M" --out "$tmp/student" --drop-layers 8 --metric random --seed 1 >/dev/null
TEXT="$TS"
: > "$OUT/runs.jsonl"
one() { # label binary: one run of every piece of work, one JSON line each
    local label=$1 bin=$2
    local ev; ev=$(mpirun --oversubscribe --bind-to none -np 2 "$bin" eval --model "$M" --text "$WIKI" --ctx 256 --max-windows 16 --json)
    python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(json.dumps({"binary":sys.argv[2],"work":"eval","tokens_per_s":j["tokens_per_s"]}))' "$ev" "$label" >> "$OUT/runs.jsonl"
    for cfg in "1 pp" "2 dp"; do
        set -- $cfg
        rm -rf "$tmp/d" "$tmp/d.ckpt"
        mpirun --oversubscribe --bind-to none -np 2 "$bin" distill --teacher "$M" --student "$tmp/student" --text "$TEXT" \
            --out "$tmp/d" --tokens $(( (STEPS + 1) * 4 * 256 )) --batch 4 --lr 1e-4 --dp $1 --log "$tmp/log.jsonl" >/dev/null
        python3 - "$tmp/log.jsonl" "$label" "distill-$2" >> "$OUT/runs.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])][1:]   # the first step warms up
tps = len(lines) / sum(1 / l["tokens_per_s"] for l in lines)  # tokens over time
print(json.dumps({"binary": sys.argv[2], "work": sys.argv[3], "tokens_per_s": tps, "seconds_per_step": 4 * 256 / tps}))
PY
    done
}
for r in $(seq "$RUNS"); do one old "$A"; one new "$B"; echo "compare: run $r/$RUNS done" >&2; done
python3 - "$OUT/runs.jsonl" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| work | old tokens/s (median, min-max) | new tokens/s (median, min-max) | new / old | verdict |")
print("|---|---|---|---|---|")
for w in ("eval", "distill-pp", "distill-dp"):
    v = {b: sorted(r["tokens_per_s"] for r in rows if r["work"] == w and r["binary"] == b) for b in ("old", "new")}
    mo, mn = statistics.median(v["old"]), statistics.median(v["new"])
    overlap = not (min(v["new"]) > max(v["old"]) or max(v["new"]) < min(v["old"]))
    print(f"| {w} | {mo:.1f} ({v['old'][0]:.1f}-{v['old'][-1]:.1f}) | {mn:.1f} ({v['new'][0]:.1f}-{v['new'][-1]:.1f}) | {mn/mo:.3f} | {'parity (spreads overlap)' if overlap else ('faster' if mn > mo else 'slower')} |")
for w in ("distill-pp", "distill-dp"):
    s = {b: statistics.median(r["seconds_per_step"] for r in rows if r["work"] == w and r["binary"] == b) for b in ("old", "new")}
    print(f"\n{w}: seconds per step (median) old {s['old']:.3f}, new {s['new']:.3f}")
PY
echo "compare: $OUT"
