#!/usr/bin/env bash
# gpu_check.sh - the one script for a lent GPU machine (docs/gpu.md): GPU tests
# and benchmarks in under 8 minutes, every part's raw output kept.
#
#   bash bench/gpu_check.sh            (on the GPU machine, from the repository root)
#
# Needs build/device.tar.xz (bench/gpu_prepare.sh: the CUDA build, its
# libraries, Open MPI, test assets) or an unpacked build/device/; SmolLM2's
# GGUF from build/smollm2.part1 + part2 (carried in two earlier calls) or
# $SMOLLM2. Parts, each under its own time limit (seconds, also cut to what is
# left of BUDGET, default 455), each one's failure recorded, never fatal:
#   env        nvidia-smi, GPU model, driver, CUDA, torch, Open MPI, ldd     30
#   tests_ops  build-cuda/tests/run_tests --filter 'backend_ops/*'           60
#   ops_bf16   the matrix-product cases again with MINIFUSE_CUDA_MATH=bf16    20
#   tests_mod  build-cuda/tests/run_tests --filter 'backend_models/cuda*'    75
#   eval_cpu   SmolLM2 WikiText-2 perplexity, --backend cpu (16 threads)     45
#   eval_cuda  the same, --backend cuda --weights bf16 (as PyTorch's bf16)   45
#   torch_eval the same windows, PyTorch bf16 sdpa on the GPU                75
#   weights    random bf16 Llama-3.2-1B-shaped model (bench/llama32_1b/)     45
#   distill    distillation steps of that model on cuda (tokens/s, MFU),
#              float32 products in DISTILL_MATH (default bf16: MINIFUSE_CUDA_MATH) 120
# Eval protocol (docs/results.md): WikiText-2 raw test, ctx 256, the first
# EVAL_WINDOWS (40) windows. Raw output: $OUT/gpu_check.tar.gz + summary.txt
# when $OUT is set (the device tool brings back at most 8 files), else
# bench/results/gpu-DATE/. The summary (bench/gpu_summary.py) prints last.
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
BUDGET=${BUDGET:-455}
EVAL_WINDOWS=${EVAL_WINDOWS:-40}
CTX1B=${CTX1B:-1024} BATCH1B=${BATCH1B:-8} STEPS1B=${STEPS1B:-6}   # the distillation benchmark's shape
STAMP=$(date -u +%Y%m%d-%H%M)
if [ -n "${OUT:-}" ]; then R=$(mktemp -d /tmp/gpu_check.XXXXXX); else R=bench/results/gpu-$STAMP; fi
mkdir -p "$R"
: >"$R/parts.tsv"

pack() { # the raw files so far, to $OUT (called after every part: a kill at the limit loses at most one part)
    [ -n "${OUT:-}" ] || return 0
    python3 bench/gpu_summary.py "$R" >"$R/summary.txt" 2>&1
    tar -czf "$OUT/gpu_check.tar.gz.tmp" -C "$R" . && mv "$OUT/gpu_check.tar.gz.tmp" "$OUT/gpu_check.tar.gz"
    cp "$R/summary.txt" "$OUT/summary.txt"
}

part() { # NAME LIMIT CMD...: run CMD under min(LIMIT, time left), output in $R/NAME.log
    local name=$1 lim=$2; shift 2
    local left=$((BUDGET - ($(date +%s) - T0)))
    [ "$lim" -gt "$left" ] && lim=$left
    if [ "$lim" -lt 5 ]; then
        echo "== $name: skipped, the budget is spent"
        printf '%s\t%s\t%s\n' "$name" 125 0 >>"$R/parts.tsv"
        return
    fi
    echo "== $name (limit ${lim}s): $*"
    local t rc ms
    t=$(date +%s%N)
    if declare -F "$1" >/dev/null; then # a function of this script (exported below): run it in a child bash
        timeout -k 5 "$lim" bash -o pipefail -c '"$@"' _ "$@" >"$R/$name.log" 2>&1
    else
        timeout -k 5 "$lim" "$@" >"$R/$name.log" 2>&1
    fi
    rc=$?
    ms=$((($(date +%s%N) - t) / 1000000))
    printf '%s\t%s\t%d.%03d\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) >>"$R/parts.tsv"
    echo "   rc $rc, $((ms / 1000)) s; last lines:"
    tail -n 3 "$R/$name.log" | cut -c1-300 | sed 's/^/   | /'
    pack
}

# ---- set-up: the bundle, the programs, the assets, SmolLM2
if [ ! -f build/device/env.sh ]; then
    [ -f build/device.tar.xz ] || { echo "gpu_check: build/device.tar.xz missing (bench/gpu_prepare.sh, then carry it)"; exit 1; }
    tar -C build -xJf build/device.tar.xz
fi
if [ -d build/device/prog ]; then (cd build/device/prog && find . -type f -exec sh -c 'mkdir -p "../../../$(dirname "$1")" && cp -p "$1" "../../../$1"' _ {} \;); fi
# shellcheck disable=SC1091
. build/device/env.sh
export MINIFUSE_SHARED=${MINIFUSE_SHARED:-$PWD/build/device/shared} MINIFUSE_QUIET=1
export MINIFUSE_CACHE=${MINIFUSE_CACHE:-/tmp/minifuse-cache}
mkdir -p "$MINIFUSE_CACHE"
if [ -d build/device/whl ] && ls build/device/whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site build/device/whl/*.whl >"$R/pip.log" 2>&1 &&
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
SMOLLM2=${SMOLLM2:-$MINIFUSE_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ ! -f "$SMOLLM2" ] && [ -f build/smollm2.part1 ] && [ -f build/smollm2.part2 ]; then
    cat build/smollm2.part1 build/smollm2.part2 >"$SMOLLM2.tmp" && mv "$SMOLLM2.tmp" "$SMOLLM2"
fi
if [ -f "$SMOLLM2" ] && [ -f build/device/smollm2.sha256 ]; then
    echo "$(cat build/device/smollm2.sha256)  $SMOLLM2" | sha256sum -c - >"$R/smollm2_sha256.log" 2>&1 || { echo "gpu_check: $SMOLLM2: wrong checksum"; mv "$SMOLLM2" "$SMOLLM2.bad"; }
fi
[ -f "$SMOLLM2" ] || echo "gpu_check: no SmolLM2 model ($SMOLLM2; carry build/smollm2.part1 and part2 first): its parts will fail"
WIKI=$MINIFUSE_SHARED/llm_assets/text/wikitext2_raw_test.txt
TS=$MINIFUSE_SHARED/llm_assets/text/tinystories_train_first2MiB.txt
TOK=$MINIFUSE_SHARED/llm_assets/tokenizers/llama2_tokenizer.bin
NCPU=$(nproc)
M1B=/tmp/llama32_1b
export R SMOLLM2 WIKI TS TOK EVAL_WINDOWS M1B CTX1B BATCH1B STEPS1B

env_part() {
    nvidia-smi --query-gpu=name --format=csv,noheader | head -1 >"$R/gpu.txt"
    nvidia-smi
    nvidia-smi -q | head -40
    echo "--- nvcc"; nvcc --version 2>&1 | tail -2
    echo "--- torch"; python3 -c 'import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__, torch.cuda.get_device_name(), torch.cuda.get_device_properties(0))'
    echo "--- host"; uname -a; nproc; grep -m1 "model name" /proc/cpuinfo; free -g | head -2
    echo "--- open mpi (bundled)"; mpirun --version | head -1
    echo "--- ldd bin/minifuse"; ldd bin/minifuse
    echo "--- git"; git log --oneline -1 2>/dev/null || true
    echo "--- minifuse backends"; bin/minifuse eval --help | grep -- --backend
}
export -f env_part
part env 30 env_part

# the GPU tests (as tests/run_gpu.sh, make test-gpu): the op-parity suite and the whole-model cuda cases
RT=build-cuda/tests/run_tests
part tests_ops 60 env OMP_NUM_THREADS=4 OPENBLAS_NUM_THREADS=4 OMPI_MCA_rmaps_base_oversubscribe=1 $RT --jobs 4 --filter 'backend_ops/*' --verbose
part ops_bf16 20 env MINIFUSE_CUDA_MATH=bf16 OMP_NUM_THREADS=4 OPENBLAS_NUM_THREADS=4 $RT --jobs 4 \
    --filter 'backend_ops/*linear*' --verbose
part tests_mod 75 env OMP_NUM_THREADS=4 OPENBLAS_NUM_THREADS=4 OMPI_MCA_rmaps_base_oversubscribe=1 $RT --jobs 2 --filter 'backend_models/cuda*' --verbose

# SmolLM2 WikiText-2 perplexity, cpu vs cuda, and tokens/s against PyTorch on the same GPU
eval_to() { # FILE BACKEND THREADS WEIGHTS
    local f=$1 be=$2 th=$3 w=$4
    OMP_NUM_THREADS=$th OPENBLAS_NUM_THREADS=$th bin/minifuse eval --model "$SMOLLM2" --text "$WIKI" --ctx 256 \
        --max-windows "$EVAL_WINDOWS" --json --backend "$be" --weights "$w" | tee "$R/$f"
}
export -f eval_to
# cpu: float32 (the dequantized Q4_1), the reference; cuda: bf16 weights on the tensor cores (linear_h), like PyTorch's bf16
part eval_cpu 45 eval_to eval_cpu.json cpu "$NCPU" f32
part eval_cuda 45 eval_to eval_cuda.json cuda 4 bf16
# minifuse's span (no warm-up: the first pass's figures), and a second pass over the same windows (warm)
part torch_eval 75 bash -o pipefail -c 'python3 bench/torch_eval.py --gguf "$1" --text "$2" --ctx 256 --max-windows "$3" \
    --device cuda --dtype bfloat16 --attn sdpa --threads 4 --passes 2 | tee "$4"' _ "$SMOLLM2" "$WIKI" "$EVAL_WINDOWS" "$R/torch_eval.json"

# the Llama-3.2-1B-shaped distillation step (random weights made here)
# shellcheck disable=SC2086  # M1B_ARGS: extra make_weights.py options (a small model for a dry run)
part weights 45 python3 bench/llama32_1b/make_weights.py "$M1B" ${M1B_ARGS:-}
distill_part() {
    python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c.update(ctx=int(sys.argv[2]), batch=int(sys.argv[3])); print(json.dumps(c))' \
        "$M1B/config.json" "$CTX1B" "$BATCH1B" >"$R/distill_config.json"
    MINIFUSE_CUDA_MATH=${DISTILL_MATH:-bf16} OMP_NUM_THREADS=4 OPENBLAS_NUM_THREADS=4 bin/minifuse distill --backend cuda --teacher "$M1B" --student "$M1B" \
        --text "$TS" --tokenizer "$TOK" --ctx "$CTX1B" --batch "$BATCH1B" --tokens $((STEPS1B * BATCH1B * CTX1B)) \
        --out /tmp/distill1b --force --log "$R/distill.jsonl" --watchdog -1
}
export -f distill_part
part distill 120 distill_part

python3 bench/gpu_summary.py "$R" | tee "$R/summary.txt"
pack
echo "gpu_check: raw output in ${OUT:+$OUT/gpu_check.tar.gz (unpacked from }$R${OUT:+)}; $(($(date +%s) - T0)) s in all"
