#!/usr/bin/env bash
# drop_list_smollm2.sh - plain removal (no training) of given SmolLM2 blocks, evaluated
# like the rows of bench/fuse_results.sh (40 windows of 256 tokens of WikiText-2 raw
# test and of the held-out TinyStories): isolates what fusion adds from which blocks
# it removed.
#   bash bench/drop_list_smollm2.sh 4,5,3,12,17,16,18,13 [LIST ...]
# Appends to bench/results/drop-list-smollm2/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
out=bench/results/drop-list-smollm2; mkdir -p "$out"
python3 bench/prov.py "$out/env-$(date +%Y%m%d-%H%M).json" script=bench/drop_list_smollm2.sh lists="$*" ranks="$P" threads=1
split_tinystories "$out"
[ -s "$out/table.md" ] || { echo "| SmolLM2 blocks removed (no training) | WikiText-2 ppl | TinyStories held-out ppl |"; echo "|---|---|---|"; } > "$out/table.md"
for list in "$@"; do
    rm -rf "$out/m"
    $MPI prune --model "$SMOLLM2" --out "$out/m" --drop-list "$list" > /dev/null
    echo "| $list | $(ppl "$out/m" "$WIKI" 40) | $(ppl "$out/m" "$out/heldout.txt" 40) |" | tee -a "$out/table.md"
done
rm -rf "$out/m" "$out/train.txt" "$out/heldout.txt"
