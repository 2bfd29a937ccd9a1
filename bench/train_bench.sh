#!/usr/bin/env bash
# train_bench.sh - training (distillation) throughput: SmolLM2 (teacher) -> SmolLM2
# without 8 blocks (student), ctx 256, batch B (default 4), STEPS timed steps (default
# 20) after one warm-up step, RUNS times (default 5), the configurations interleaved
# within each run:
#   sgemm_t1, sgemm_t2   OpenBLAS sgemm GFLOP/s at SmolLM2's shapes (the practical peak)
#   mf_p1                minifuse distill, 1 rank
#   mf_pp2               minifuse distill, 2 pipeline stages (1F1B, the default: 4 micro-batches of 1 window)
#   mf_dp2               minifuse distill, 2 data-parallel replicas (--dp 2)
#   torch_p1_t1, torch_p1_t2   PyTorch doing the same step (bench/torch_distill.py), 1 process x 1 and 2 threads
#   torch_p2_t1          PyTorch, 2 processes x 1 thread (DistributedDataParallel, gloo)
# 1 OpenMP/BLAS thread per minifuse rank. Both sides time each step from zeroing
# the gradients to the end of the AdamW update (minifuse: its --log), with the
# same AdamW (weight decay on 2-D tensors only, betas 0.9/0.95, eps 1e-8) and lr
# schedule; tokens/s = the timed steps' tokens / the sum of their times.
# Writes bench/results/train-DATE/: env.json (bench/prov.py), CONFIG.runR.jsonl
# (minifuse's per-step log) and CONFIG.runR.json (PyTorch's JSON, its step
# times included), stderr.txt (with minifuse's OpenBLAS core line of every run),
# summary.md and summary.json (bench/summarize_train.py).
# Run it with nothing else loading the machine.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
M="$SMOLLM2"; TEXT="$TS"; STEPS=${STEPS:-20}; B=${B:-4}
OUT="bench/results/train-$(date +%Y%m%d-%H%M)"
mkdir -p "$OUT"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
trap 'echo "train_bench: failed; see $OUT/stderr.txt" >&2' ERR
torch=0 prov=()
if [ -x "$TORCH_PY" ]; then torch=1 prov=(--torch-py "$TORCH_PY")
else echo "train_bench: no PyTorch at $TORCH_PY (bench/setup_torch.sh); no PyTorch rows" >&2; fi
python3 bench/prov.py "$OUT" "${prov[@]}" script=bench/train_bench.sh teacher="$M" text="$TEXT" \
    student="prune --drop-layers 8 --metric random --seed 1" ctx=256 batch="$B" steps="$STEPS" lr=1e-4 runs="$RUNS"
build_sgemm_peak
export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
bin/minifuse prune --model "$M" --out "$tmp/student" --drop-layers 8 --metric random --seed 1 >/dev/null 2>> "$OUT/stderr.txt"

mf() { # CONFIG RANKS REPLICAS RUN
    rm -rf "$tmp/d" "$tmp/d.ckpt"
    mpirun --oversubscribe --bind-to none -np "$2" bin/minifuse distill --teacher "$M" --student "$tmp/student" \
        --text "$TEXT" --out "$tmp/d" --tokens $(( (STEPS + 1) * B * 256 )) --batch "$B" --lr 1e-4 --dp "$3" \
        --log "$OUT/$1.run$4.jsonl" > /dev/null 2>> "$OUT/stderr.txt"
}
pt() { # CONFIG PROCS THREADS RUN
    OMP_NUM_THREADS=$3 "$TORCH_PY" bench/torch_distill.py --teacher "$M" --student "$tmp/student" --text "$TEXT" \
        --batch "$B" --steps "$STEPS" --lr 1e-4 --procs "$2" --threads "$3" > "$OUT/$1.run$4.json" 2>> "$OUT/stderr.txt"
}
for r in $(seq "$RUNS"); do
    echo "== run $r" >> "$OUT/stderr.txt"
    for t in 1 2; do sgemm_peak $t > "$OUT/sgemm_t$t.run$r.json"; done
    mf mf_p1 1 1 "$r"; mf mf_pp2 2 1 "$r"; mf mf_dp2 2 2 "$r"
    if [ $torch = 1 ]; then pt torch_p1_t1 1 1 "$r"; pt torch_p1_t2 1 2 "$r"; pt torch_p2_t1 2 1 "$r"; fi
    echo "train_bench: run $r/$RUNS done" >&2
done
python3 bench/summarize_train.py "$OUT" | tee "$OUT/summary.md"
echo "train_bench: $OUT" >&2
