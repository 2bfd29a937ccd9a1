#!/usr/bin/env bash
# fuse_blocks_smollm2.sh - row (d) of bench/fuse_results.sh smollm2 with the removal order
# given (--blocks, no Macro Influence passes) and any fuse options changed, at (d)'s
# budget: 256 windows x 256 tokens x 1 epoch per block (524,288 tokens), rank 32,
# lr 1e-2 / 1e-3, 2 ranks; evaluated like the table's rows (40 windows).
#   bash bench/fuse_blocks_smollm2.sh NAME 4,5,3,12,17,16,18,13 [fuse options, e.g. --loss nmse]
# Appends "| NAME | blocks | options | WikiText-2 | TinyStories | wall |" to
# bench/results/fuse-blocks-smollm2/table.md; resumes when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
name=$1; blocks=$2; shift 2
out=bench/results/fuse-blocks-smollm2; mkdir -p "$out"; rm -rf "$out/$name"
split_tinystories "$out"
[ -s "$out/table.md" ] || { echo "| run | blocks (order) | options | WikiText-2 ppl | TinyStories held-out ppl | fuse wall |"; echo "|---|---|---|---|---|---|"; } > "$out/table.md"
t0=$(date +%s)
$MPI fuse --model "$SMOLLM2" --text "$out/train.txt" --out "$out/$name" --drop-layers "$(tr ',' '\n' <<<"$blocks" | wc -l)" \
    --blocks "$blocks" --samples 256 --epochs 1 --ctx 256 --rank 32 --lr 1e-2 --lr-base 1e-3 "$@" \
    --log "$out/log-$name.jsonl" --resume --json > "$out/fuse-$name.json" 2> "$out/fuse-$name.log"
secs=$(( $(date +%s) - t0 ))
echo "| $name | $blocks | ${*:-(none)} | $(ppl "$out/$name" "$WIKI" 40) | $(ppl "$out/$name" "$out/heldout.txt" 40) | $secs s |" | tee -a "$out/table.md"
rm -rf "$out/$name" "$out/$name.ckpt" "$out/train.txt" "$out/heldout.txt"
