#!/usr/bin/env bash
# run_bench.sh - forward pass (eval) throughput on SmolLM2, ctx 256, WINDOWS windows
# (default 16) of WikiText-2 raw test, RUNS times (default 5), the configurations
# interleaved within each run:
#   sgemm_t1, sgemm_t2   OpenBLAS sgemm GFLOP/s at SmolLM2's own shapes (the practical peak)
#   mf_p1_t1, mf_p1_t2   minifuse eval, 1 rank x 1 and 2 threads
#   mf_p2_t1             minifuse eval, 2 pipeline ranks x 1 thread
#   torch_p1_t1, torch_p1_t2   PyTorch (transformers, the same GGUF in float32), 1 process x 1 and 2 threads
#   torch_p2_t1          PyTorch, 2 processes x 1 thread, each scoring half of the windows
#                        (bench/torch_eval.py --procs 2; time of the slower)
# Both sides time the same span: the loop over the windows, forward + NLL of each
# window, no warm-up; model loading and tokenization outside (src/cli/eval.c).
# The PyTorch rows need TORCH_PY (bench/setup_torch.sh); skipped when absent.
# Writes bench/results/forward-DATE/: env.json (bench/prov.py), CONFIG.runR.json
# (the raw JSON of every run), stderr.txt, summary.md and summary.json
# (bench/summarize_forward.py: medians, min-max, ratios, "parity").
# Run it with nothing else loading the machine.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
MODEL="${MODEL:-$SMOLLM2}"
TEXT="${TEXT:-$WIKI}"
WINDOWS="${WINDOWS:-16}"
OUT="bench/results/forward-$(date +%Y%m%d-%H%M)"
mkdir -p "$OUT"
trap 'echo "run_bench: failed; see $OUT/stderr.txt" >&2' ERR
torch=0 prov=()
if [ -x "$TORCH_PY" ]; then torch=1 prov=(--torch-py "$TORCH_PY")
else echo "run_bench: no PyTorch at $TORCH_PY (bench/setup_torch.sh); no PyTorch rows" >&2; fi
python3 bench/prov.py "$OUT" "${prov[@]}" script=bench/run_bench.sh \
    model="$MODEL" text="$TEXT" ctx=256 windows="$WINDOWS" runs="$RUNS"
build_sgemm_peak
export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1

mf() { # CONFIG RANKS THREADS RUN
    OMP_NUM_THREADS=$3 OPENBLAS_NUM_THREADS=$3 mpirun --oversubscribe --bind-to none -np "$2" bin/minifuse eval \
        --model "$MODEL" --text "$TEXT" --ctx 256 --max-windows "$WINDOWS" --json > "$OUT/$1.run$4.json" 2>> "$OUT/stderr.txt"
}
pt() { # CONFIG PROCS THREADS RUN
    OMP_NUM_THREADS=$3 "$TORCH_PY" bench/torch_eval.py --gguf "$MODEL" --text "$TEXT" --ctx 256 \
        --max-windows "$WINDOWS" --procs "$2" --threads "$3" > "$OUT/$1.run$4.json" 2>> "$OUT/stderr.txt"
}
for r in $(seq "$RUNS"); do
    echo "== run $r" >> "$OUT/stderr.txt"
    for t in 1 2; do sgemm_peak $t > "$OUT/sgemm_t$t.run$r.json"; done
    mf mf_p1_t1 1 1 "$r"; mf mf_p1_t2 1 2 "$r"; mf mf_p2_t1 2 1 "$r"
    if [ $torch = 1 ]; then pt torch_p1_t1 1 1 "$r"; pt torch_p1_t2 1 2 "$r"; pt torch_p2_t1 2 1 "$r"; fi
    echo "run_bench: run $r/$RUNS done" >&2
done
python3 bench/summarize_forward.py "$OUT" "$MODEL" | tee "$OUT/summary.md"
echo "run_bench: $OUT" >&2
