#!/usr/bin/env bash
# run_all.sh - the whole test suite (called by `make test` after the build).
#  1. every Criterion test (build/tests/run_tests), from the repo root;
#  2. again under AddressSanitizer + UBSan: the parsers, the fusion window and
#     every bad-input case in process (build-asan/tests/run_tests), and the
#     command-line cases with the ASan program (MINIFUSE_BIN=bin/minifuse-asan);
#  3. every libFuzzer target for a short smoke, after replaying its regression
#     inputs (tests/fuzz/run_fuzz.sh; docs/fuzzing.md), one test per target;
#  4. the Slurm jobscripts on a real one-node Slurm cluster (tests/slurm/).
# Every test is counted once (tests/tally.py): a sanitizer re-run that fails
# makes its test failed, one that passes adds nothing; the re-runs get their
# own line. Tests skipped with a reason are listed. Where Slurm is expected
# (CI=true, or MINIFUSE_EXPECT_SLURM=1) and the jobscripts did not run, that is
# a failure; elsewhere a visible "skipped".
# Ends with one line "tests: N passed, N failed" (CI reads it).
set -uo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export MINIFUSE_SHARED=${MINIFUSE_SHARED:-$(cd .. && pwd)/shared}
unset MINIFUSE_BIN
W=$(mktemp -d /tmp/minifuse-run-all.XXXXXX)
main=(); rerun=(); n=0

run() { # kind (main|rerun), label, command... (a Criterion runner; its JSON report goes to $W)
    local kind=$1 label=$2; shift 2
    n=$((n + 1))
    local rep="$W/$n.json"
    echo "== $label: $*"
    "$@" --json="$rep" 2>&1
    if [ "$kind" = main ]; then main+=("$rep"); else rerun+=("$rep"); fi
}

run main "criterion" build/tests/run_tests --jobs 2
# Sanitizers, in process: the parsers and every bad-input case (forward passes are exercised above)
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for suite in 'gguf*' 'tok*' 'badinput*' 'rankings*' 'hfwrite*' 'synthetic*' 'ckpt*' 'optim*' 'harden*' 'plan*'; do
    run rerun "asan $suite" build-asan/tests/run_tests --jobs 2 --filter "$suite/*"
done
# the fusion window (adapters, fold, batch KL) in process
for t in 'fuse/zero*' 'fuse/folding*' 'fuse/kl_batch*' 'fuse/fused_weight*'; do
    run rerun "asan $t" build-asan/tests/run_tests --jobs 2 --filter "$t"
done
# the command-line cases (bad options, bad files, bad rankings) with the ASan program
# (tests/testutil.c: tu_bin; a sanitizer report in stderr fails the test)
for t in 'badinput/cli_errors' 'fuse/bad_options' 'distill/bad_options' 'prune/bad_rankings_refused' 'prune/drop_list*' 'blas/*' 'plan/cli*' 'plan/bad_configs'; do
    run rerun "asan program: $t" env MINIFUSE_BIN=bin/minifuse-asan build/tests/run_tests --jobs 2 --filter "$t"
done

python3 tests/tally.py "${main[@]}" -- "${rerun[@]}" | tee "$W/tally.txt"
read -r _ passed failed skipped < <(grep '^TALLY ' "$W/tally.txt" || echo "TALLY 0 1 0")

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
expect_slurm=0
if [ "${CI:-}" = true ] || [ "${MINIFUSE_EXPECT_SLURM:-0}" = 1 ]; then expect_slurm=1; fi
[ "${MINIFUSE_EXPECT_SLURM:-}" = 0 ] && expect_slurm=0
slurm_skipped() { # reason
    if [ "$expect_slurm" = 1 ]; then
        echo "== jobscripts: FAILED: Slurm is expected here (CI=true or MINIFUSE_EXPECT_SLURM=1) but did not run: $1"
        failed=$((failed + 1))
    else
        echo "== jobscripts: SKIPPED: $1"
        skipped=$((skipped + 1))
    fi
}
if [ "$(id -u)" -eq 0 ]; then
    # the CPU scripts, then the GPU ones (*_gpu.sbatch, on a node with placeholder GPUs and the cpu backend)
    for t in "test_jobscripts.sh:jobscripts" "test_gpu_jobscripts.sh:gpu jobscripts"; do
        echo "== ${t#*:}: tests/slurm/${t%%:*}"
        bash "tests/slurm/${t%%:*}" 2>&1 | tee "$W/jobscripts.log"
        js=$(grep -a "^${t#*:}:" "$W/jobscripts.log" | tail -1)
        if [ -z "$js" ]; then echo "== ${t#*:}: no summary (script died)"; failed=$((failed + 1))
        elif [[ $js == *skipped* ]]; then slurm_skipped "${js#*: }"
        else
            passed=$((passed + $(sed 's/.*: \([0-9]*\) passed.*/\1/' <<<"$js"))); failed=$((failed + $(sed 's/.*, \([0-9]*\) failed.*/\1/' <<<"$js")))
        fi
    done
else
    slurm_skipped "starting a test Slurm cluster needs root"
fi
rm -rf "$W"
echo "== skipped: $skipped tests (named above; in neither count below)"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
