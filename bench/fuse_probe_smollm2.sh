#!/usr/bin/env bash
# fuse_probe_smollm2.sh - learning-rate / loss probe before the full SmolLM2 fusion run:
# block 4 (Macro Influence's first choice) alone, 256 windows x 1 epoch (65,536 tokens),
# rank 32, 1 rank; 20-window evaluations on held-out TinyStories and WikiText-2.
#   bash bench/fuse_probe_smollm2.sh "1e-3 9.65e-6 kl-batch" "1e-2 1e-3 kl-batch" "3e-2 1e-2 nmse" "1e-2 1e-3 nmse"
# Each argument: gate lr, base lr, loss, then any other fuse options (they override the
# defaults above, e.g. "1e-2 1e-3 nmse --rank 128" or "1e-2 1e-3 nmse --window 4").
# Lines are appended to bench/results/fuse-probe-smollm2/table.md.
# TRAIN=FILE trains on FILE instead of the TinyStories training part (the data probe:
# TRAIN=$SH/llm_assets/text/wikitext2_valid.txt, a split disjoint from the WikiText-2 test).
# Block 4 is removed with prune --drop-list (no rankings needed).
set -euo pipefail
cd "$(dirname "$0")/.."; source bench/env.sh; mkdir -p /tmp/sp bench/results/fuse-probe-smollm2
TAB=bench/results/fuse-probe-smollm2/table.md
python3 bench/prov.py "bench/results/fuse-probe-smollm2/env-$(date +%Y%m%d-%H%M).json" script=bench/fuse_probe_smollm2.sh \
    configs="$*" train="${TRAIN:-}" ranks=1 threads=1
TXT=/tmp/sp/train.txt; head -c 1887436 $SH/llm_assets/text/tinystories_train_first2MiB.txt > $TXT
[ -n "${TRAIN:-}" ] && TXT=$TRAIN
tail -c 209716 $SH/llm_assets/text/tinystories_train_first2MiB.txt > /tmp/sp/held.txt
ev() { echo "$(mpirun -np 1 bin/minifuse eval --model $1 --text /tmp/sp/held.txt --max-windows 20 --json 2>/dev/null | python3 -c "import json,sys; print('%.3f' % json.load(sys.stdin)['ppl'])") / $(mpirun -np 1 bin/minifuse eval --model $1 --text $SH/llm_assets/text/wikitext2_raw_test.txt --max-windows 20 --json 2>/dev/null | python3 -c "import json,sys; print('%.3f' % json.load(sys.stdin)['ppl'])")"; }
rm -rf /tmp/sp/rm; mpirun -np 1 bin/minifuse prune --model $SMOLLM2 --out /tmp/sp/rm --drop-list 4 2>/dev/null
[ -s $TAB ] || { echo "original: $(ev $SMOLLM2)"; echo "removed block 4: $(ev /tmp/sp/rm)"; } | tee -a $TAB
for cfg in "$@"; do
  set -- $cfg; rm -rf /tmp/sp/s /tmp/sp/s.ckpt
  t0=$(date +%s); mpirun -np 1 bin/minifuse fuse --model $SMOLLM2 --text $TXT --out /tmp/sp/s --drop-layers 1 --blocks 4 --samples 256 --epochs 1 --rank 32 --lr $1 --lr-base $2 --loss $3 "${@:4}" 2>/tmp/sp/log.txt
  echo "lr $1 lr-base $2 loss $3 ${*:4}${TRAIN:+ text $(basename $TRAIN)}: TS/Wiki ppl $(ev /tmp/sp/s) ($(( $(date +%s) - t0 )) s) $(grep folded /tmp/sp/log.txt | sed 's/.*loss/loss/')" | tee -a $TAB
done
