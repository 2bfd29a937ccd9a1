#!/usr/bin/env bash
# run_fuzz.sh TARGET... - run libFuzzer targets (built by `make fuzz-build`, seeds by `make fuzz-seeds`).
#   FUZZ_SECONDS  seconds of fuzzing per target (default 60)
#   FUZZ_SMOKE=1  smoke mode for `make test`: a fresh corpus per target (the persistent one is left alone)
#   MF_FUZZ_H5_CRAFTED=1  HDF5 targets recompute checksums after each mutation (docs/fuzzing.md); the
#                 corpus is then build-fuzz/corpus-crafted/TARGET and child reports are not symbolized
# For each target: first every input of tests/fuzz/regressions/TARGET/ once (a crash there is a
# regression), then fuzzing from build-fuzz/corpus/TARGET + the seeds + the regressions.
# Crashing inputs land in build-fuzz/crashes/TARGET/ (copy them into tests/fuzz/regressions/TARGET/
# once fixed). One line per target, then "fuzz: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
B=build-fuzz
secs=${FUZZ_SECONDS:-60}
passed=0; failed=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export MINIFUSE_QUIET=1 OMP_NUM_THREADS=1 MINIFUSE_H5_PROBE_TIMEOUT=${MINIFUSE_H5_PROBE_TIMEOUT:-5}
for t in "$@"; do
    bin=$B/fuzz_$t
    if [ ! -x "$bin" ]; then echo "fuzz $t: FAILED (no $bin: make fuzz-build)"; failed=$((failed + 1)); continue; fi
    reg=tests/fuzz/regressions/$t
    mkdir -p "$reg" "$B/crashes/$t" "$B/logs"
    leaks=1 asan=abort_on_error=1:detect_leaks=1 cdir=corpus
    case $t in rankings|checkpoint|tcache) leaks=0 asan=abort_on_error=1:detect_leaks=0 # libhdf5 keeps free lists and caches
        [ -n "${MF_FUZZ_H5_CRAFTED:-}" ] && asan=$asan:symbolize=0 cdir=corpus-crafted ;; # probe children crash often
    esac
    log=$B/logs/$t.log
    # 1. the regressions, each once
    if compgen -G "$reg/*" >/dev/null; then
        if ! ASAN_OPTIONS=$asan "$bin" -detect_leaks=$leaks -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20 "$reg"/* >"$log.replay" 2>&1; then
            echo "fuzz $t: FAILED (a regression input crashes again: see $log.replay)"; tail -30 "$log.replay"
            failed=$((failed + 1)); continue
        fi
    fi
    # 2. fuzzing
    if [ -n "${FUZZ_SMOKE:-}" ]; then corpus=$(mktemp -d); else corpus=$B/$cdir/$t; mkdir -p "$corpus"; fi
    start=$(date +%s)
    ASAN_OPTIONS=$asan nice -n 10 "$bin" -max_total_time="$secs" -detect_leaks=$leaks -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -timeout=20 -print_final_stats=1 -artifact_prefix="$B/crashes/$t/" \
        "$corpus" "$B/seeds/$t" "$reg" >"$log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    [ -n "${FUZZ_SMOKE:-}" ] && rm -rf "$corpus"
    if [ $rc -eq 0 ]; then
        echo "fuzz $t: ok (${execs:-?} inputs in ${took}s, ${cov:-cov: ?}, seeds $(ls "$B/seeds/$t" 2>/dev/null | wc -l), regressions $(ls "$reg" | wc -l))"
        passed=$((passed + 1))
    else
        echo "fuzz $t: FAILED (exit $rc after ${took}s: see $log; inputs in $B/crashes/$t/)"
        grep -E "ERROR: |SUMMARY|runtime error|deadly signal|Test unit written" "$log" | head -8
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
