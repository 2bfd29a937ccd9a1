#!/usr/bin/env bash
# pipeline_bubble.sh - the pipeline bubble of distillation: step time against the
# number of micro-batches m (MS, default 1 2 4 8 16) for P stages (PS, default
# 2 3 4), 1F1B schedule, SmolLM2 (teacher) -> SmolLM2 without 8 blocks
# (student), a step of B windows (default 16) x CTX tokens (default 256), STEPS
# timed steps (default 3) after one warm-up step, RUNS times (default 5), the
# configurations interleaved within each run. Also, per run: GPipe at P = 2,
# m = 8, and --dp 2 (2 data-parallel replicas, the same batch), the layout the
# 2-stage pipeline is compared with at m >= 8 (target: within 10 %).
# The model: with P stages and m micro-batches a step takes
#   t(m) = a (m + P - 1) / m       (bubble fraction (P - 1) / (m + P - 1)),
# a fitted per P by least squares over the m measured; summary.md gives the
# measured and modelled times side by side. P > 2 on this 2-core machine runs
# oversubscribed: those rows check the shape only; time on P = 2.
# Writes bench/results/bubble-DATE/: env.json (bench/prov.py), CONFIG.runR.jsonl
# (minifuse's per-step log), stderr.txt (layouts, OpenBLAS core), summary.md and
# summary.json (bench/summarize_bubble.py, figures as bench/benchstats.py states them).
# One OpenMP/BLAS thread per rank. Run it with nothing else loading the machine.
# A reduced smoke run: RUNS=1 STEPS=1 CTX=64 MS="1 4 16" bench/pipeline_bubble.sh
# The target alone (m = 8 against --dp 2, no GPipe row): PS=2 MS=8 GPIPE=0 bench/pipeline_bubble.sh
set -Eeuo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
M="$SMOLLM2"; TEXT="$TS"; STEPS=${STEPS:-3}; B=${B:-16}; CTX=${CTX:-256}
MS=${MS:-"1 2 4 8 16"}; PS=${PS:-"2 3 4"}; LABEL=${LABEL:-}; GPIPE=${GPIPE:-1}
OUT="bench/results/bubble-$(date +%Y%m%d-%H%M)${LABEL:+-$LABEL}"
mkdir -p "$OUT"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
trap 'echo "pipeline_bubble: failed; see $OUT/stderr.txt" >&2' ERR
for m in $MS; do [ $((B % m)) = 0 ] || { echo "pipeline_bubble: m $m does not divide B $B" >&2; exit 1; }; done
python3 bench/prov.py "$OUT" script=bench/pipeline_bubble.sh teacher="$M" text="$TEXT" \
    student="prune --drop-layers 8 --metric random --seed 1" ctx="$CTX" batch="$B" steps="$STEPS" lr=1e-4 runs="$RUNS" \
    ms="$MS" ps="$PS" gpipe="$GPIPE" schedule=1f1b threads_per_rank=1
bin/minifuse prune --model "$M" --out "$tmp/student" --drop-layers 8 --metric random --seed 1 >/dev/null 2>> "$OUT/stderr.txt"

mf() { # CONFIG RANKS REPLICAS RUN EXTRA...
    local cfg=$1 np=$2 dp=$3 run=$4; shift 4
    rm -rf "$tmp/d" "$tmp/d.ckpt"
    echo "== $cfg run $run" >> "$OUT/stderr.txt"
    env -u MINIFUSE_QUIET mpirun --oversubscribe --bind-to none -np "$np" bin/minifuse distill --teacher "$M" --student "$tmp/student" \
        --text "$TEXT" --out "$tmp/d" --tokens $(( (STEPS + 1) * B * CTX )) --batch "$B" --ctx "$CTX" --lr 1e-4 --dp "$dp" \
        --log "$OUT/$cfg.run$run.jsonl" "$@" > /dev/null 2>> "$OUT/stderr.txt"
}
for r in $(seq "$RUNS"); do
    for P in $PS; do
        for m in $MS; do mf "P${P}_m$m" "$P" 1 "$r" --schedule 1f1b --micro-batches "$m"; done
    done
    if [ "$GPIPE" = 1 ]; then mf P2_m8_gpipe 2 1 "$r" --schedule gpipe --micro-batches 8; fi
    mf dp2 2 2 "$r"
    echo "pipeline_bubble: run $r/$RUNS done" >&2
done
python3 bench/summarize_bubble.py "$OUT" | tee "$OUT/summary.md"
echo "pipeline_bubble: $OUT" >&2
