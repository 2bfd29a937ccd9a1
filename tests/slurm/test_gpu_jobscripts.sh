#!/usr/bin/env bash
# test_gpu_jobscripts.sh - the GPU jobscripts (jobscripts/*_gpu.sbatch) under a
# real one-node Slurm whose node advertises 4 GPUs without devices
# (slurm_up.sh GPUS=4). No GPU here, so what is checked is the Slurm side:
#   every *_gpu.sbatch   bash -n, and sbatch --test-only accepts its directives
#                        (one node: --nodes=1, and --cpus-per-task=1 on 4 CPUs)
#   eval_gpu.sbatch      runs with MINIFUSE_BACKEND=cpu on 2 tasks x 1 "GPU":
#                        srun --gpus-per-task=1 --gpu-bind=single:1 --cpu-bind=cores
#                        and gpu_rank.sh start the ranks; ppl equal to mpirun's
#   distill_gpu.sbatch   SIGUSR1 mid-run -> checkpoint, exit 0, requeue, resume
#                        (MINIFUSE_BACKEND=cpu, 4 tasks = 2 stages x 2 replicas);
#                        weights byte-identical to an uninterrupted mpirun run
# Ends with "gpu jobscripts: N passed, M failed" or "... skipped (reason)".
# Needs root, slurm-wlm and munge; stories260K.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SHARED=${MINIFUSE_SHARED:-$(cd .. && pwd)/shared}
MODEL=$SHARED/llm_assets/models/stories260K/stories260K.bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_mpi_yield_when_idle=1 MINIFUSE_BACKEND=cpu
MPIRUN="mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 -x MINIFUSE_QUIET=1"
W=$(mktemp -d /tmp/minifuse-gpu-jobscripts.XXXXXX)
passed=0; failed=0
ok()   { echo "ok   - $*"; passed=$((passed + 1)); }
fail() { echo "FAIL - $*"; failed=$((failed + 1)); }
finish() {
    bash tests/slurm/slurm_down.sh "$W/slurm"
    echo "gpu jobscripts: $passed passed, $failed failed"
    [ "$failed" -eq 0 ] && rm -rf "$W"
    exit $(( failed > 0 ))
}

for f in jobscripts/*_gpu.sbatch jobscripts/env_gpu.sh jobscripts/gpu_rank.sh; do
    if bash -n "$f"; then ok "bash -n $f"; else fail "bash -n $f"; fi
done

up=$(GPUS=4 bash tests/slurm/slurm_up.sh "$W/slurm" 2>"$W/slurm_up.err"); rc=$?
if [ $rc -eq 2 ]; then
    cat "$W/slurm_up.err"; echo "gpu jobscripts: skipped ($(tail -1 "$W/slurm_up.err" | sed 's/^slurm_up: //'))"; rm -rf "$W"; exit 0; fi
if [ $rc -ne 0 ]; then cat "$W/slurm_up.err"; fail "a one-node Slurm cluster with 4 GPUs starts"; finish; fi
eval "$up"
ok "a one-node Slurm cluster starts ($(sinfo -h -o '%n %c CPUs %G %T'))"
trap finish EXIT

head -c 400000 "$SHARED/llm_assets/text/tinystories_train_first2MiB.txt" > "$W/train.txt"
field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
wait_job() { # JOBID SECONDS: until the job has ended
    local t=0 s
    while [ "$t" -lt $(($2 * 5)) ]; do
        s=$(field "$1" JobState)
        case "$s" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) echo "$s"; return;; esac
        sleep 0.2; t=$((t + 1))
    done
    echo "STILL-${s:-UNKNOWN}"
}
# submit SCRIPT VARS SBATCH-OPTIONS...: prints the job id (one node: 4 CPUs, 4 GPUs)
submit() {
    local s=$1 v=$2; shift 2
    sbatch --parsable --chdir="$ROOT" --output="$W/$(basename "$s" .sbatch)-%j.out" --export="ALL,$v" --nodes=1 --cpus-per-task=1 "$@" "$s"
}
signal_after() { # JOBID LOG LINES: SIGUSR1 to the job's tasks once LOG has LINES lines
    local t=0
    while [ "$(cat "$2" 2>/dev/null | wc -l)" -lt "$3" ] && [ "$t" -lt 1500 ]; do sleep 0.1; t=$((t + 1)); done
    scancel --signal=USR1 "$1"
}
same_weights() {
    local a=("$1"/*.safetensors) f
    [ -e "${a[0]}" ] || return 1
    [ "$(cd "$1" && ls *.safetensors)" = "$(cd "$2" && ls *.safetensors 2>/dev/null)" ] || return 1
    for f in "${a[@]}"; do cmp -s "$f" "$2/$(basename "$f")" || return 1; done
}

# ---- every GPU script's directives, as Slurm reads them
for s in jobscripts/*_gpu.sbatch; do
    if out=$(sbatch --test-only --nodes=1 --cpus-per-task=1 --export=ALL "$s" 2>&1); then ok "sbatch --test-only $s"
    else fail "sbatch --test-only $s: $out"; fi
done

# ---- eval_gpu.sbatch: 2 tasks, one "GPU" each, through GPU_SRUN and gpu_rank.sh
j=$(submit jobscripts/eval_gpu.sbatch "MODEL=$MODEL,TEXT=$W/train.txt,MAX_WINDOWS=8" --ntasks-per-node=2 --gpus-per-node=2)
st=$(wait_job "$j" 120)
got=$(grep -h '^{' "$W"/eval_gpu-"$j".out | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])' 2>/dev/null)
want=$($MPIRUN -np 2 bin/minifuse eval --model "$MODEL" --text "$W/train.txt" --ctx 256 --max-windows 8 --json 2>/dev/null |
       python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
if [ "$st" = COMPLETED ] && [ -n "$got" ] && [ "$got" = "$want" ]; then ok "eval_gpu.sbatch (cpu backend, 2 tasks x 1 GPU): ppl $got = mpirun's"
else fail "eval_gpu.sbatch: job $st, ppl '$got' vs mpirun '$want' (log $W/eval_gpu-$j.out)"; fi

# ---- distill_gpu.sbatch: 4 tasks = 2 stages x 2 replicas, SIGUSR1, requeue, resume
[ "${GPU_JOBSCRIPTS_QUICK:-0}" = 1 ] && exit 0
mkdir -p "$W/sp"
$MPIRUN -np 1 bin/minifuse prune --model "$MODEL" --out "$W/sp/pruned" --drop-list 2 >/dev/null 2>&1
DARGS="--checkpoint-every 5"
j=$(submit jobscripts/distill_gpu.sbatch "TEACHER=$MODEL,STUDENT=$W/sp/pruned,TEXT=$W/train.txt,OUT=$W/kd,DP=2,TOKENS=40960,CTX=128,BATCH=8,ARGS=$DARGS" \
    --ntasks-per-node=4 --gpus-per-node=4)
signal_after "$j" "$W/kd.train.jsonl" 12
st=$(wait_job "$j" 600); restarts=$(field "$j" Restarts)
$MPIRUN -np 4 bin/minifuse distill --teacher "$MODEL" --student "$W/sp/pruned" --text "$W/train.txt" --out "$W/kd-ref" --tokens 40960 \
    --ctx 128 --batch 8 --dp 2 $DARGS >/dev/null 2>&1
if [ "$st" = COMPLETED ] && [ "${restarts:-0}" -ge 1 ] && grep -q "requeueing job $j" "$W"/distill_gpu-"$j".out &&
   same_weights "$W/kd" "$W/kd-ref"; then
    ok "distill_gpu.sbatch (cpu backend): SIGUSR1 -> checkpoint, requeue ($restarts restart), resumed weights identical to an uninterrupted run"
else fail "distill_gpu.sbatch: job $st, restarts ${restarts:-?}, weights $(same_weights "$W/kd" "$W/kd-ref" && echo same || echo differ) (log $W/distill_gpu-$j.out)"; fi
