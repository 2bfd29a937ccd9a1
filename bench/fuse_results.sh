#!/usr/bin/env bash
# fuse_results.sh - the FuseGPT table of docs/results.md: the same blocks removed
# five ways, every trained row with the same number of training tokens.
#   bench/fuse_results.sh stories260K   5 -> 4 layers
#   bench/fuse_results.sh smollm2       30 -> 22 layers (25 %)
# Rows: (a) drop by Block Importance, (b) drop by Macro Influence (iterative),
# (c) (b) + global KD with TOKENS tokens, (d) FuseGPT fusion with TOKENS tokens of
# local (window) training, (e) fusion with TOKENS/2 + global KD with TOKENS/2.
# Calibration / training text: the TinyStories sample without its last 200 KB
# (held out for evaluation, as bench/distill_results.sh); evaluation on
# WikiText-2 raw test and the held-out TinyStories.
# Environment: RANKINGS=file reuses a `score` of the same model on the same text;
# ROWS="a b d" runs only those rows (appending to table.md); FUSE_OPTS adds options
# to `fuse`; LR, LR_BASE, RANK, SAMPLES override the fusion hyper-parameters.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-stories260K}
source bench/env.sh
ROWS=" ${ROWS:-o a b c d e} "
want() { [[ "$ROWS" == *" $1 "* ]]; }
# Interrupted runs resume: checkpoints (*.ckpt) are kept until the whole table is done, and
# fuse/distill always get --resume (which starts afresh when there is no checkpoint).
out=bench/results/fuse-$which; mkdir -p "$out"; rm -rf "$out"/{a,b,c,d,e,e-fuse}
python3 bench/prov.py "$out" script=bench/fuse_results.sh which="$which" ranks="$P" threads=1
split_tinystories "$out"
case "$which" in
    stories260K) M="$STORIES"; DROP=1; TOKENS=${TOKENS:-1048576}; KD_LR=1e-3
                 SAMPLES=${SAMPLES:-2048}; RANK=${RANK:-16}; WIN=200 ;;
    smollm2)     M="$SMOLLM2"; DROP=8; TOKENS=${TOKENS:-524288}; KD_LR=1e-4
                 SAMPLES=${SAMPLES:-256}; RANK=${RANK:-32}; WIN=${WIN:-40} ;;
esac
CTX=256
# epochs so that DROP iterations x SAMPLES x CTX x epochs = TOKENS; row e: half of it
# (half the epochs, or half the samples when there is one epoch)
EPOCHS=$(( TOKENS / (DROP * SAMPLES * CTX) ))
[ "$EPOCHS" -ge 1 ] || { echo "TOKENS too small for $DROP x $SAMPLES x $CTX"; exit 1; }
if [ "$EPOCHS" -ge 2 ]; then EPOCHS_E=$(( EPOCHS / 2 )); SAMPLES_E=$SAMPLES; else EPOCHS_E=1; SAMPLES_E=$(( SAMPLES / 2 )); fi
FUSE_E_TOKENS=$(( DROP * SAMPLES_E * CTX * EPOCHS_E ))
LR=${LR:-1e-2}; LR_BASE=${LR_BASE:-1e-3}
FOPTS="--ctx $CTX --rank $RANK --lr $LR --lr-base $LR_BASE --loss kl-batch ${FUSE_OPTS:-}"
if [ -n "${RANKINGS:-}" ]; then cp "$RANKINGS" "$out/rankings.h5"; else
    $MPI score --model "$M" --text "$out/train.txt" --out "$out/rankings.h5" --samples 32 --ctx 256 --metrics bi,mi --mi-iters "$DROP" >/dev/null; fi
row() { local w h; w=$(ppl "$2" "$WIKI" "$WIN"); h=$(ppl "$2" "$out/heldout.txt" "$WIN"); echo "| $1 | $w | $h |" | tee -a "$out/table.md"; }
kd() { /usr/bin/time -f "$3 wall %e s" mpirun --oversubscribe --bind-to none -np 2 bin/minifuse distill --dp 2 --teacher "$M" --student "$1" \
         --text "$out/train.txt" --out "$2" --tokens "$4" --ctx 256 --batch 8 --lr "$KD_LR" --log "$out/log-$3.jsonl" \
         --checkpoint-every 32 --resume 2>&1 | tail -1; }
if want o || [ ! -f "$out/table.md" ]; then
    { echo "| model ($DROP of $(python3 -c "print('30' if '$which'=='smollm2' else '5')") blocks removed; $TOKENS training tokens per trained row) | WikiText-2 ppl | TinyStories held-out ppl |"
      echo "|---|---|---|"; } > "$out/table.md"; fi
want o && row "original" "$M"
if want a; then
    $MPI prune --model "$M" --rankings "$out/rankings.h5" --out "$out/a" --drop-layers "$DROP" --metric bi >/dev/null
    row "(a) drop by BI" "$out/a"; fi
if want b || want c; then
    $MPI prune --model "$M" --rankings "$out/rankings.h5" --out "$out/b" --drop-layers "$DROP" --metric mi >/dev/null
    want b && row "(b) drop by MI" "$out/b"; fi
if want c; then kd "$out/b" "$out/c" c "$TOKENS" | tee -a "$out/table.md"; row "(c) MI + KD ($TOKENS tokens)" "$out/c"; fi
if want d; then
    /usr/bin/time -f "d fuse wall %e s" $MPI fuse --model "$M" --text "$out/train.txt" --out "$out/d" --drop-layers "$DROP" \
        --samples "$SAMPLES" --epochs "$EPOCHS" $FOPTS --log "$out/log-d.jsonl" --resume --json > "$out/fuse-d.json" 2> "$out/fuse-d.log"
    tail -1 "$out/fuse-d.log" | tee -a "$out/table.md"
    row "(d) FuseGPT ($SAMPLES windows x $EPOCHS epochs per block)" "$out/d"; fi
if want e; then
    $MPI fuse --model "$M" --text "$out/train.txt" --out "$out/e-fuse" --drop-layers "$DROP" --samples "$SAMPLES_E" \
        --epochs "$EPOCHS_E" $FOPTS --log "$out/log-e-fuse.jsonl" --resume --json > "$out/fuse-e.json" 2> /dev/null
    kd "$out/e-fuse" "$out/e" e "$(( TOKENS - FUSE_E_TOKENS ))" | tee -a "$out/table.md"
    row "(e) FuseGPT ($SAMPLES_E windows x $EPOCHS_E epochs per block) + KD ($(( TOKENS - FUSE_E_TOKENS )) tokens)" "$out/e"; fi
echo "(rows $ROWS: fuse $FOPTS, kl-batch loss; KD: lr $KD_LR, batch 8 x 256, dp 2)" >> "$out/table.md"
rm -rf "$out"/{a,b,c,d,e,e-fuse} "$out"/*.ckpt "$out/train.txt" "$out/heldout.txt"
