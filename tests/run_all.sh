#!/usr/bin/env bash
# run_all.sh - the whole test suite (called by `make test` after the build).
#  1. every Criterion test (build/tests/run_tests), from the repo root;
#  2. the parsers and bad-input tests again under AddressSanitizer + UBSan;
#  3. every libFuzzer target for a short smoke, after replaying its regression
#     inputs (tests/fuzz/run_fuzz.sh; docs/fuzzing.md), one test per target;
#  4. the Slurm jobscripts on a real one-node Slurm cluster (tests/slurm/).
# Ends with one line "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export MINIFUSE_SHARED=${MINIFUSE_SHARED:-$(cd .. && pwd)/shared}

passed=0; failed=0
run() { # label, command...
    local label=$1; shift
    echo "== $label: $*"
    local log; log=$(mktemp)
    "$@" 2>&1 | tee "$log"
    local syn; syn=$(grep -a "Synthesis:" "$log" | tail -1)
    local p f c
    p=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$syn"); f=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$syn")
    c=$(sed -n 's/.*Crashing: \([0-9]*\).*/\1/p' <<<"$syn")
    if [ -z "$syn" ]; then echo "== $label: no Criterion summary (runner died)"; failed=$((failed + 1)); else
        passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${c:-0})); fi
    rm -f "$log"
}

run "criterion" build/tests/run_tests --jobs 2
# Sanitizers: the parsers and every bad-input case (forward passes are exercised above).
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for suite in 'gguf*' 'tok*' 'badinput*' 'rankings*' 'hfwrite*' 'synthetic*' 'ckpt*' 'optim*' 'harden*'; do
    run "asan $suite" build-asan/tests/run_tests --jobs 2 --filter "$suite/*"
done
# the fusion window (adapters, fold, batch KL) in process
for t in 'fuse/zero*' 'fuse/folding*' 'fuse/kl_batch*' 'fuse/fused_weight*'; do
    run "asan $t" build-asan/tests/run_tests --jobs 2 --filter "$t"
done
# the fuzz targets: regressions replayed, then FUZZ_SMOKE_SECONDS (default 2) of fuzzing each
echo "== fuzz: tests/fuzz/run_fuzz.sh (smoke)"
log=$(mktemp)
FUZZ_SECONDS=${FUZZ_SMOKE_SECONDS:-2} FUZZ_SMOKE=1 bash tests/fuzz/run_fuzz.sh safetensors config gguf gguf_tokenizer \
    llama2c tokenizer_bin rankings checkpoint tcache 2>&1 | tee "$log"
fz=$(grep -a "^fuzz:" "$log" | tail -1)
if [ -z "$fz" ]; then echo "== fuzz: no summary (script died)"; failed=$((failed + 1)); else
    passed=$((passed + $(sed 's/.*: \([0-9]*\) passed.*/\1/' <<<"$fz"))); failed=$((failed + $(sed 's/.*, \([0-9]*\) failed.*/\1/' <<<"$fz"))); fi
rm -f "$log"
# the jobscripts under a real one-node Slurm (root only: it starts slurmctld, slurmd, munged)
if [ "$(id -u)" -eq 0 ]; then
    echo "== jobscripts: tests/slurm/test_jobscripts.sh"
    log=$(mktemp)
    bash tests/slurm/test_jobscripts.sh 2>&1 | tee "$log"
    js=$(grep -a "^jobscripts:" "$log" | tail -1)
    if [ -z "$js" ]; then echo "== jobscripts: no summary (script died)"; failed=$((failed + 1)); else
        passed=$((passed + $(sed 's/.*: \([0-9]*\) passed.*/\1/' <<<"$js"))); failed=$((failed + $(sed 's/.*, \([0-9]*\) failed.*/\1/' <<<"$js"))); fi
    rm -f "$log"
else
    echo "== jobscripts: skipped (starting a test Slurm cluster needs root)"
fi
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
