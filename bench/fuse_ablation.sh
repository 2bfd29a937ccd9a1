#!/usr/bin/env bash
# fuse_ablation.sh - what FuseGPT's result on stories260K (5 -> 4 layers, 1,048,576
# local training tokens) depends on: loss, learning rates, rank, which block, data.
# One row per variant of row (d) of bench/fuse_results.sh; same text split and evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
M="$STORIES"
out=bench/results/fuse-ablation-stories260K; rm -rf "$out"; mkdir -p "$out"
python3 bench/prov.py "$out" script=bench/fuse_ablation.sh ranks="$P" threads=1
split_tinystories "$out"
echo "| variant (1,048,576 window-training tokens unless said) | WikiText-2 ppl | TinyStories held-out ppl |" > "$out/table.md"
echo "|---|---|---|" >> "$out/table.md"
run() { # label, fuse options
    local label=$1; shift
    rm -rf "$out/m" "$out/m.ckpt"
    $MPI fuse --model "$M" --text "$out/train.txt" --out "$out/m" --drop-layers 1 --ctx 256 "$@" > /dev/null
    local w h; w=$(ppl "$out/m" "$WIKI" 200); h=$(ppl "$out/m" "$out/heldout.txt" 200)
    echo "| $label | $w | $h |" | tee -a "$out/table.md"
}
BASE="--samples 2048 --epochs 2 --rank 16 --loss kl-batch"
run "(d) kl-batch, lr 1e-2 / 1e-3"                 $BASE --lr 1e-2 --lr-base 1e-3
run "official learning rates 1e-3 / 9.65e-6"       $BASE --lr 1e-3 --lr-base 9.65e-6
run "lr 3e-2 / 1e-2"                               $BASE --lr 3e-2 --lr-base 1e-2
run "nmse loss"                                    $BASE --lr 1e-2 --lr-base 1e-3 --loss nmse
run "cosine loss"                                  $BASE --lr 1e-2 --lr-base 1e-3 --loss cosine
run "rank 4"                                       --samples 2048 --epochs 2 --rank 4 --lr 1e-2 --lr-base 1e-3 --loss kl-batch
run "rank 64"                                      --samples 2048 --epochs 2 --rank 64 --lr 1e-2 --lr-base 1e-3 --loss kl-batch
run "256 windows x 16 epochs (less data)"          --samples 256 --epochs 16 --rank 16 --lr 1e-2 --lr-base 1e-3 --loss kl-batch
run "fuse block 2 (BI's choice) instead of 4"      $BASE --lr 1e-2 --lr-base 1e-3 --blocks 2
run "window 3 (block 4 into blocks 2, 3)"          $BASE --lr 1e-2 --lr-base 1e-3 --window 3
rm -rf "$out/m" "$out/m.ckpt" "$out/train.txt" "$out/heldout.txt"
