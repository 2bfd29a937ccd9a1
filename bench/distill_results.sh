#!/usr/bin/env bash
# distill_results.sh - the distillation table of docs/results.md.
#   bench/distill_results.sh stories260K   drop 1 of 5 layers (by Macro Influence), distill on TinyStories
#   bench/distill_results.sh smollm2       25% of layers removed (MI) and a width-pruned model of about
#                                          the same size, each distilled with the same token budget
# Evaluates before/after on WikiText-2 raw test (held out) and on TinyStories
# windows not used for training (the last 100 windows of the sample are held
# out: training uses --text with those windows cut off).
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-stories260K}
source bench/env.sh
# an interrupted run resumes (checkpoints are kept until the table is complete)
out=bench/results/distill-$which; mkdir -p "$out"; rm -rf "$out"/depth "$out"/width "$out"/depth-kd "$out"/width-kd
python3 bench/prov.py "$out" script=bench/distill_results.sh which="$which" ranks="$P" distill_ranks="${DP:-2}" threads=1
# training text = the sample without its last 200 KB (held out for evaluation)
split_tinystories "$out"
case "$which" in
    stories260K) M="$STORIES"; DROP=1; TOKENS=${TOKENS:-1048576}; LR=${LR:-1e-3}
                 WIDTH=""; WIN=200 ;;
    smollm2)     M="$SMOLLM2"; DROP=8; TOKENS=${TOKENS:-262144}; LR=${LR:-1e-4}
                 WIDTH="--ffn-keep 992"; WIN=${WIN:-40} ;;   # MLP-only width cut to the depth-pruned size (106 M)
esac
# RANKINGS=file reuses an earlier `score` of the same model (e.g. bench/results/prune-smollm2/rankings.h5)
if [ -n "${RANKINGS:-}" ]; then cp "$RANKINGS" "$out/rankings.h5"; else
    $MPI score --model "$M" --text "$out/train.txt" --out "$out/rankings.h5" --samples 32 --ctx 256 --mi-iters "$DROP" >/dev/null; fi
$MPI prune --model "$M" --rankings "$out/rankings.h5" --out "$out/depth" --drop-layers "$DROP" --metric mi >/dev/null
[ -n "$WIDTH" ] && $MPI prune --model "$M" --rankings "$out/rankings.h5" --out "$out/width" $WIDTH >/dev/null
row() { local w h; w=$(ppl "$2" "$WIKI" "$WIN"); h=$(ppl "$2" "$out/heldout.txt" "$WIN"); echo "| $1 | $w | $h |" | tee -a "$out/table.md"; }
echo "| model | WikiText-2 ppl | TinyStories held-out ppl |" | tee "$out/table.md"
echo "|---|---|---|" | tee -a "$out/table.md"
row "original" "$M"
for s in depth ${WIDTH:+width}; do
    row "$s-pruned" "$out/$s"
    # DP replicas of one stage each: the fastest layout on one node (docs/performance.md)
    /usr/bin/time -f "$s distill wall %e s" mpirun --oversubscribe --bind-to none -np "${DP:-2}" bin/minifuse distill --dp "${DP:-2}" --teacher "$M" --student "$out/$s" --text "$out/train.txt" --out "$out/$s-kd" \
        --tokens "$TOKENS" --ctx 256 --batch 8 --lr "$LR" --checkpoint-every "${CKPT_EVERY:-32}" --resume --log "$out/log-$s-kd.jsonl" 2>&1 | tail -1 | tee -a "$out/table.md"
    row "$s-pruned + KD ($TOKENS tokens)" "$out/$s-kd"
done
rm -rf "$out"/depth "$out"/depth-kd "$out"/width "$out"/width-kd "$out"/*.ckpt "$out"/*.train.jsonl "$out/train.txt" "$out/heldout.txt"
