# lib.sh - what the real-Slurm tests share (test_jobscripts.sh, test_gpu_jobscripts.sh).
# Source it from the repository root after setting NAME (the summary line's
# name) and W (the work directory). Defines the model and mpirun line the
# results are compared with, ok/fail/finish, start_slurm, and the job helpers.
ROOT=$(pwd)
SHARED=${MINIFUSE_SHARED:-$(cd .. && pwd)/shared}
MODEL=$SHARED/llm_assets/models/stories260K/stories260K.bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# the test node advertises 4 CPUs on 2 cores: Open MPI under srun does not know it
# is oversubscribed and would busy-poll (50x slower); make waiting ranks yield
export OMPI_MCA_mpi_yield_when_idle=1
MPIRUN="mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 -x MINIFUSE_QUIET=1"
passed=0; failed=0
ok()   { echo "ok   - $*"; passed=$((passed + 1)); }
fail() { echo "FAIL - $*"; failed=$((failed + 1)); }
finish() {
    bash tests/slurm/slurm_down.sh "$W/slurm"
    echo "$NAME: $passed passed, $failed failed"
    [ "$failed" -eq 0 ] && rm -rf "$W"
    exit $(( failed > 0 ))
}

# start_slurm WHAT SINFO-FORMAT: a one-node cluster (slurm_up.sh, which reads GPUS
# from the environment); exits 0 with "NAME: skipped (reason)" where a Slurm daemon
# already runs (nothing tested: tests/run_all.sh fails that where Slurm is expected).
# Then finish runs on exit, and $W/train.txt holds 400 kB of TinyStories.
start_slurm() {
    local up rc
    up=$(bash tests/slurm/slurm_up.sh "$W/slurm" 2>"$W/slurm_up.err"); rc=$?
    if [ $rc -eq 2 ]; then
        cat "$W/slurm_up.err"; echo "$NAME: skipped ($(tail -1 "$W/slurm_up.err" | sed 's/^slurm_up: //'))"; rm -rf "$W"; exit 0; fi
    if [ $rc -ne 0 ]; then cat "$W/slurm_up.err"; fail "$1 starts"; finish; fi
    eval "$up"
    ok "$1 starts ($(sinfo -h -o "$2"))"
    trap finish EXIT
    head -c 400000 "$SHARED/llm_assets/text/tinystories_train_first2MiB.txt" > "$W/train.txt"
}

field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
# wait_job JOBID SECONDS: until the job has ended (COMPLETED, FAILED, ...)
wait_job() {
    local t=0 s
    while [ "$t" -lt $(($2 * 5)) ]; do
        s=$(field "$1" JobState)
        case "$s" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) echo "$s"; return;; esac
        sleep 0.2; t=$((t + 1))
    done
    echo "STILL-${s:-UNKNOWN}"
}
# submit SCRIPT VAR=..,VAR=.. [SBATCH-OPTIONS...]: prints the job id
submit() {
    local s=$1 v=$2; shift 2
    sbatch --parsable --chdir="$ROOT" --output="$W/$(basename "$s" .sbatch)-%j.out" --export="ALL,$v" "$@" "$s"
}
# signal_after JOBID LOG LINES: SIGUSR1 to the job's tasks once LOG has LINES lines
signal_after() {
    local t=0
    while [ "$(cat "$2" 2>/dev/null | wc -l)" -lt "$3" ] && [ "$t" -lt 1500 ]; do sleep 0.1; t=$((t + 1)); done
    scancel --signal=USR1 "$1"
}
# same_weights DIR_A DIR_B: the same safetensors files, byte for byte
same_weights() {
    local a=("$1"/*.safetensors) f
    [ -e "${a[0]}" ] || return 1
    [ "$(cd "$1" && ls *.safetensors)" = "$(cd "$2" && ls *.safetensors 2>/dev/null)" ] || return 1
    for f in "${a[@]}"; do cmp -s "$f" "$2/$(basename "$f")" || return 1; done
}
# ppl_of FILE...: the "ppl" of the first JSON line in the files (an eval --json summary)
ppl_of() { grep -h '^{' "$@" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["ppl"])' 2>/dev/null; }
