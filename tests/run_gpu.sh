#!/usr/bin/env bash
# run_gpu.sh - the GPU tests of a CUDA build (make test-gpu): the op-parity
# suite (every op, forward and backward, on "cuda" against "ref") and the
# whole-model CUDA cases. Ends with one count line; on a host without a CUDA
# device the cuda cases are counted as "skipped: no CUDA device", never a
# silent 0 of 0. Usage: tests/run_gpu.sh build-cuda/tests/run_tests
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build-cuda/tests/run_tests}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export MINIFUSE_SHARED=${MINIFUSE_SHARED:-$(cd .. && pwd)/shared}
[ -x "$BIN" ] || { echo "run_gpu.sh: $BIN not built (make CUDA=1 $BIN)" >&2; exit 1; }
log=$(mktemp /tmp/minifuse-gpu.XXXXXX)
rc=0
for suite in 'backend_ops/*' 'backend_models/cuda*'; do
    "$BIN" --filter "$suite" 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
done
ok=$(grep -c '\[cuda\] .* ok$' "$log")
fail=$(grep -c '\[cuda\] .* FAIL$' "$log")
skip=$(grep -c '\[cuda\] skipped: no CUDA device' "$log") # one per case (and table/memory check)
model_skip=$(grep -c 'cuda model test skipped: no CUDA device' "$log")
echo "test-gpu: $ok cuda outputs within threshold, $fail above; $((skip + model_skip)) skipped: no CUDA device"
rm -f "$log"
exit $rc
