#!/usr/bin/env bash
# prune_results.sh - the pruning table of docs/results.md (no retraining).
# For a model: score on 32 x 256 TinyStories tokens (all metrics), prune 25% of
# the layers by random / BI / PPL / MI order and by width to ~75% of the
# parameters, evaluate every model on WikiText-2 raw test and on TinyStories
# windows after the calibration ones (--skip 32).
#   bench/prune_results.sh stories260K   (about a minute)
#   bench/prune_results.sh smollm2       (about an hour on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-stories260K}
source bench/env.sh
CAL="$TS"
case "$which" in
    stories260K) M="$SH/llm_assets/models/stories260K/stories260K.bin"; TOK="$SH/llm_assets/models/stories260K/tok512.bin"
                 DROP=1; WIDTH="--ffn-keep 128 --hidden-keep 56 --align 8"; WIDTH2="--ffn-keep 96 --align 8"; WIN=${WIN:-200}; MIS=32 ;;
    smollm2)     M="$SMOLLM2"; TOK="$M"
                 DROP=8; WIDTH="--ffn-keep 1152 --hidden-keep 512"; WIDTH2="--ffn-keep 896"; WIN=${WIN:-40}; MIS=${MIS:-32} ;;
    *) echo "usage: $0 stories260K|smollm2" >&2; exit 2 ;;
esac
out=bench/results/prune-$which; rm -rf "$out"; mkdir -p "$out"
python3 bench/prov.py "$out" script=bench/prune_results.sh which="$which" ranks="$P" threads=1
echo "== score $which (32 x 256 tokens, MI on $MIS windows, $DROP MI iterations)"
/usr/bin/time -f "score wall %e s" $MPI score --model "$M" --text "$CAL" --out "$out/rankings.h5" --samples 32 --ctx 256 \
    --mi-iters "$DROP" --mi-samples "$MIS" --json > "$out/score.json"
evalrow() { # name model
    local w t
    w=$($MPI eval --model "$2" --tokenizer "$TOK" --text "$WIKI" --ctx 256 --max-windows "$WIN" --json)
    t=$($MPI eval --model "$2" --tokenizer "$TOK" --text "$CAL" --ctx 256 --skip 32 --max-windows "$WIN" --json)
    python3 - "$1" "$w" "$t" "$2" <<'PY' | tee -a "$out/table.md"
import json, sys, os
name, w, t, model = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
cfg = os.path.join(model, "config.json")
info = json.load(open(cfg)) if os.path.exists(cfg) else {}
mf = info.get("minifuse", {})
print(f"| {name} | {info.get('num_hidden_layers', '-')} | {mf.get('dropped_layers', '')} | {w['ppl']:.3f} | {t['ppl']:.3f} |")
PY
}
echo "| model | layers | dropped | WikiText-2 ppl | TinyStories ppl |" | tee "$out/table.md"
echo "|---|---|---|---|---|" | tee -a "$out/table.md"
evalrow "original" "$M"
for metric in random bi ppl mi; do
    $MPI prune --model "$M" --rankings "$out/rankings.h5" --out "$out/depth-$metric" --drop-layers "$DROP" --metric "$metric" --seed 1 >/dev/null
    evalrow "drop $DROP by $metric" "$out/depth-$metric"
done
$MPI prune --model "$M" --rankings "$out/rankings.h5" --out "$out/width" $WIDTH --json > "$out/width.json"
evalrow "width ($WIDTH)" "$out/width"
python3 -c "
import json; w=json.load(open('$out/width.json')); print('width-pruned params: %d of %d (%.1f%%)' % (w['params'], w['params_before'], 100*w['params']/w['params_before']))" | tee -a "$out/table.md"
$MPI prune --model "$M" --rankings "$out/rankings.h5" --out "$out/width2" $WIDTH2 --json > "$out/width2.json"
evalrow "width ($WIDTH2, MLP only)" "$out/width2"
python3 -c "
import json; w=json.load(open('$out/width2.json')); print('MLP-only width-pruned params: %d of %d (%.1f%%)' % (w['params'], w['params_before'], 100*w['params']/w['params_before']))" | tee -a "$out/table.md"
rm -rf "$out"/depth-* "$out"/width "$out"/width2   # keep the table, scores and rankings, not the weights
