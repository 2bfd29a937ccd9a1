# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the scripts
# env.sh - what every bench script shares (sourced from the repository root):
# where the shared assets and the model cache are, and mpirun as root, quiet logs.
SH="${MINIFUSE_SHARED:-../shared}"
CACHE="${MINIFUSE_CACHE:-$HOME/.cache/minifuse}"
SMOLLM2="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 MINIFUSE_QUIET=1

# Benchmarks run one OpenMP/BLAS thread per rank, P ranks (default 2).
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
P=${P:-2}
MPI="mpirun --oversubscribe --bind-to none -np $P bin/minifuse"
TS="$SH/llm_assets/text/tinystories_train_first2MiB.txt"
WIKI="$SH/llm_assets/text/wikitext2_raw_test.txt"
STORIES="$SH/llm_assets/models/stories260K/stories260K.bin"
# split_tinystories DIR: DIR/train.txt = the sample without its last 200 KB, DIR/heldout.txt = those 200 KB
split_tinystories() { head -c 1887436 "$TS" > "$1/train.txt"; tail -c 209716 "$TS" > "$1/heldout.txt"; }
# ppl MODEL TEXT WINDOWS: perplexity of 256-token windows (3 decimals)
ppl() { $MPI eval --model "$1" --text "$2" --ctx 256 --max-windows "$3" --json | python3 -c "import json,sys; print('%.3f' % json.load(sys.stdin)['ppl'])"; }
# Benchmarks: RUNS runs of every configuration (median and min-max spread, bench/benchstats.py).
RUNS=${RUNS:-5}
TORCH_PY="${TORCH_PY:-$CACHE/torch-venv/bin/python}"
# build_sgemm_peak: build bench/sgemm_peak.c (the practical sgemm peak at SmolLM2's shapes)
build_sgemm_peak() {
    mkdir -p build/bench
    mpicc -O3 -march=native -fopenmp -Isrc -I/usr/include/x86_64-linux-gnu/openblas-openmp bench/sgemm_peak.c \
        src/backend/cpu_blas.c src/util/log.c -lopenblas -ljansson -o build/bench/sgemm_peak
}
# sgemm_peak THREADS: its JSON line on THREADS OpenMP/BLAS threads
sgemm_peak() { OMP_NUM_THREADS=$1 OPENBLAS_NUM_THREADS=$1 build/bench/sgemm_peak | tail -1; }
