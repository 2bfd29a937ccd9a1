#!/usr/bin/env bash
# fuse_bench.sh - FuseGPT window training throughput (`fuse`): SmolLM2-135M, block
# BLOCK (default 4) removed by --blocks (no Macro Influence pass), its window of 8
# blocks trained for SAMPLES windows (default 168: 21 steps of --batch 8, one
# epoch), ctx 256, rank 32, kl-batch loss, P ranks (default 2) x 1 thread, RUNS
# times (default 5), interleaved with the sgemm peak on P threads:
#   sgemm_tP    OpenBLAS sgemm GFLOP/s at SmolLM2's shapes (the practical peak)
#   mf_pP       minifuse fuse, P ranks x 1 thread
# A run's tokens/s = its timed steps' tokens over the sum of their times, from the
# per-step log (the first step warms up and is left out), as bench/train_bench.sh.
# Set-up (the original window's targets, the prefix forward) and the fold are in
# the --json (seconds_setup_fold) but not in tokens/s.
# Writes bench/results/fuse-bench-DATE/: env.json (bench/prov.py), mf_pP.runR.jsonl
# (the per-step log), mf_pP.runR.summary (the --json), stderr.txt, summary.md and
# summary.json (bench/summarize_fuse.py). Run it with nothing else loading the machine.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
M="${MODEL:-$SMOLLM2}"; BLOCK=${BLOCK:-4}; SAMPLES=${SAMPLES:-168}
OUT="bench/results/fuse-bench-$(date +%Y%m%d-%H%M)"
mkdir -p "$OUT"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
trap 'echo "fuse_bench: failed; see $OUT/stderr.txt" >&2' ERR
python3 bench/prov.py "$OUT" script=bench/fuse_bench.sh model="$M" text="$TS" block="$BLOCK" samples="$SAMPLES" \
    ctx=256 batch=8 rank=32 window=8 loss=kl-batch epochs=1 ranks="$P" threads=1 runs="$RUNS"
build_sgemm_peak
split_tinystories "$tmp"
for r in $(seq "$RUNS"); do
    echo "== run $r" >> "$OUT/stderr.txt"
    sgemm_peak "$P" > "$OUT/sgemm_t$P.run$r.json"
    rm -rf "$tmp/out" "$tmp/out.ckpt"
    $MPI fuse --model "$M" --text "$tmp/train.txt" --out "$tmp/out" --drop-layers 1 --blocks "$BLOCK" \
        --samples "$SAMPLES" --epochs 1 --batch 8 --ctx 256 --rank 32 --lr 1e-2 --lr-base 1e-3 --loss kl-batch \
        --log "$OUT/mf_p$P.run$r.jsonl" --json > "$OUT/mf_p$P.run$r.summary" 2>> "$OUT/stderr.txt"
    echo "fuse_bench: run $r/$RUNS done" >&2
done
python3 bench/summarize_fuse.py "$OUT" | tee "$OUT/summary.md"
echo "fuse_bench: $OUT" >&2
