#!/usr/bin/env bash
# fuse_order_smollm2.sh - row (d) of bench/fuse_results.sh smollm2 with the blocks of
# another order: FuseGPT fusion of the 8 blocks that Block Importance (or perplexity)
# would drop, in that order (--blocks, no Macro Influence pass), same budget as (d):
# 256 windows x 256 tokens x 1 epoch per block (524,288 tokens), rank 32, lr 1e-2 / 1e-3.
# Compares with rows (a) (drop by BI) and (d) (fusion in MI order).
#   RANKINGS=bench/results/prune-smollm2/rankings.h5 bash bench/fuse_order_smollm2.sh [bi|ppl]
# Appends to bench/results/fuse-order-smollm2/table.md; resumes when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
metric=${1:-bi}
: "${RANKINGS:?a score of SmolLM2 on the same text (bench/results/prune-smollm2/rankings.h5)}"
out=bench/results/fuse-order-smollm2; mkdir -p "$out"; rm -rf "$out/$metric"
python3 bench/prov.py "$out/env-$metric.json" script=bench/fuse_order_smollm2.sh metric="$metric" rankings="$RANKINGS" ranks="$P" threads=1
split_tinystories "$out"
ORDER=$(python3 -c "import h5py, numpy as np; s = h5py.File('$RANKINGS', 'r')['depth/$metric'][:]; print(','.join(str(i) for i in np.argsort(s, kind='stable')[:8]))")
/usr/bin/time -f "$metric fuse wall %e s" $MPI fuse --model "$SMOLLM2" --text "$out/train.txt" --out "$out/$metric" --drop-layers 8 \
    --blocks "$ORDER" --samples 256 --epochs 1 --ctx 256 --rank 32 --lr 1e-2 --lr-base 1e-3 --loss kl-batch \
    --log "$out/log-$metric.jsonl" --resume --json > "$out/fuse-$metric.json" 2> "$out/fuse-$metric.log"
w=$(ppl "$out/$metric" "$WIKI" 40); h=$(ppl "$out/$metric" "$out/heldout.txt" 40)
echo "| FuseGPT on the 8 lowest-$metric blocks ($ORDER), 256 windows x 1 epoch per block | $w | $h | $(tail -1 "$out/fuse-$metric.log") |" | tee -a "$out/table.md"
rm -rf "$out/$metric" "$out/$metric.ckpt" "$out/train.txt" "$out/heldout.txt"
