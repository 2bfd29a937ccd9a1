#!/usr/bin/env bash
# run_bench.sh - performance of the forward pass, as ratios measured in one run.
#   1. OpenBLAS sgemm GFLOP/s at SmolLM2's own shapes (ctx 256): the practical peak;
#   2. minifuse eval tokens/s on SmolLM2, ctx 256: 1 rank x 1 thread, 1 rank x 2 threads,
#      2 ranks x 1 thread;
#   3. PyTorch CPU (transformers loading the same GGUF in float32), same windows,
#      1 and 2 threads (needs TORCH_PY, a python with torch+transformers; see
#      bench/setup_torch.sh; skipped when absent).
# Prints a table and writes bench/results/forward-<date>.json.
# Run with nothing else loading the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/env.sh
MODEL="${MODEL:-$SMOLLM2}"
TEXT="${TEXT:-$SH/llm_assets/text/wikitext2_raw_test.txt}"
WINDOWS="${WINDOWS:-16}"
TORCH_PY="${TORCH_PY:-$CACHE/torch-venv/bin/python}"
out=bench/results; mkdir -p "$out" build/bench
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

mpicc -O3 -march=native -fopenmp -Isrc -I/usr/include/x86_64-linux-gnu/openblas-openmp bench/sgemm_peak.c src/backend/cpu_blas.c src/util/log.c -lopenblas -o build/bench/sgemm_peak
for t in 1 2; do
    OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t build/bench/sgemm_peak | tail -1 > "$tmp/sgemm_t$t.json"
done
run_eval() { # name ranks threads
    OMP_NUM_THREADS=$3 OPENBLAS_NUM_THREADS=$3 mpirun --oversubscribe --bind-to none -np "$2" \
        bin/minifuse eval --model "$MODEL" --text "$TEXT" --ctx 256 --max-windows "$WINDOWS" --json > "$tmp/$1.json"
}
run_eval mf_p1_t1 1 1
run_eval mf_p1_t2 1 2
run_eval mf_p2_t1 2 1
if [ -x "$TORCH_PY" ]; then
    for t in 1 2; do
        "$TORCH_PY" bench/torch_eval.py --gguf "$MODEL" --text "$TEXT" --ctx 256 --max-windows "$WINDOWS" --threads $t 2>/dev/null | tail -1 > "$tmp/torch_t$t.json"
    done
else
    echo "bench: no PyTorch at $TORCH_PY (run bench/setup_torch.sh); skipping the PyTorch column" >&2
fi
python3 bench/summarize_forward.py "$tmp" "$out/forward-$(date +%Y%m%d-%H%M).json" "$MODEL"
