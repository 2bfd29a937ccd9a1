#!/usr/bin/env bash
# fuse_blocks_smollm2.sh - row (d) of bench/fuse_results.sh smollm2 with the removal order
# given (--blocks, no Macro Influence passes) and any fuse options changed, at (d)'s
# budget: 256 windows x 256 tokens x 1 epoch per block (524,288 tokens), rank 32,
# lr 1e-2 / 1e-3, kl-batch loss unless the options say otherwise, 2 ranks; evaluated like the table's rows (40 windows).
#   bash bench/fuse_blocks_smollm2.sh NAME 4,5,3,12,17,16,18,13 [fuse options, e.g. --loss nmse]
# Row (e) the same way: SAMPLES=128 KD_TOKENS=262144 fuses with 128 windows per block,
# then distills the fused model from the original with KD_TOKENS tokens (as fuse_results.sh:
# lr 1e-4, batch 8 x 256, --dp 2).
# Appends "| NAME | blocks | options | WikiText-2 | TinyStories | wall |" to
# bench/results/fuse-blocks-smollm2/table.md; resumes when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
name=$1; blocks=$2; shift 2
SAMPLES=${SAMPLES:-256}; KD_TOKENS=${KD_TOKENS:-0}
out=bench/results/fuse-blocks-smollm2; mkdir -p "$out"; rm -rf "$out/$name" "$out/$name-kd"
python3 bench/prov.py "$out/env-$name.json" script=bench/fuse_blocks_smollm2.sh name="$name" blocks="$blocks" options="$*" \
    samples="$SAMPLES" kd_tokens="$KD_TOKENS" ranks="$P" threads=1
split_tinystories "$out"
[ -s "$out/table.md" ] || { echo "| run | blocks (order) | options | WikiText-2 ppl | TinyStories held-out ppl | fuse wall |"; echo "|---|---|---|---|---|---|"; } > "$out/table.md"
t0=$(date +%s)
$MPI fuse --model "$SMOLLM2" --text "$out/train.txt" --out "$out/$name" --drop-layers "$(tr ',' '\n' <<<"$blocks" | wc -l)" \
    --blocks "$blocks" --samples "$SAMPLES" --epochs 1 --ctx 256 --rank 32 --lr 1e-2 --lr-base 1e-3 --loss kl-batch "$@" \
    --log "$out/log-$name.jsonl" --resume --json > "$out/fuse-$name.json" 2> "$out/fuse-$name.log"
secs=$(( $(date +%s) - t0 ))
model="$out/$name"; opts="${*:-(none)}"
[ "$SAMPLES" = 256 ] || opts="$opts --samples $SAMPLES"
if [ "$KD_TOKENS" -gt 0 ]; then
    t1=$(date +%s)
    mpirun --oversubscribe --bind-to none -np 2 bin/minifuse distill --dp 2 --teacher "$SMOLLM2" --student "$model" \
        --text "$out/train.txt" --out "$out/$name-kd" --tokens "$KD_TOKENS" --ctx 256 --batch 8 --lr 1e-4 \
        --log "$out/log-$name-kd.jsonl" --checkpoint-every 32 --resume 2> "$out/kd-$name.log"
    model="$out/$name-kd"; opts="$opts, then KD $KD_TOKENS tokens ($(( $(date +%s) - t1 )) s)"
fi
echo "| $name | $blocks | $opts | $(ppl "$model" "$WIKI" 40) | $(ppl "$model" "$out/heldout.txt" 40) | $secs s |" | tee -a "$out/table.md"
rm -rf "$out/$name" "$out/$name.ckpt" "$out/$name-kd" "$out/$name-kd.ckpt" "$out/train.txt" "$out/heldout.txt"
