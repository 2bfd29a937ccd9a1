#!/usr/bin/env bash
# test_jobscripts.sh - the jobscripts/ under a real Slurm (slurmctld + slurmd on
# this machine, srun --mpi=pmix), on stories260K. Each result is compared with
# the same command run directly under mpirun:
#   eval.sbatch         JSON perplexity equal to mpirun's (same ranks)
#   score_prune.sbatch  pruned model byte-identical to mpirun score + prune
#   fuse.sbatch         SIGUSR1 mid-run (what --signal=USR1@180 sends before the
#                       time limit) -> checkpoint, exit 0, the script requeues the
#                       job, it resumes; weights byte-identical to an
#                       uninterrupted mpirun run with the same ranks
#   distill.sbatch      the same for distillation
# Ends with "jobscripts: N passed, M failed", or "jobscripts: skipped (reason)"
# where a Slurm daemon already runs (then nothing was tested). Needs root,
# slurm-wlm and munge.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SHARED=${MINIFUSE_SHARED:-$(cd .. && pwd)/shared}
MODEL=$SHARED/llm_assets/models/stories260K/stories260K.bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# the test node advertises 4 CPUs on 2 cores: Open MPI under srun does not know it
# is oversubscribed and would busy-poll (50x slower); make waiting ranks yield
export OMPI_MCA_mpi_yield_when_idle=1
MPIRUN="mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 -x MINIFUSE_QUIET=1"
W=$(mktemp -d /tmp/minifuse-jobscripts.XXXXXX)
passed=0; failed=0
ok()   { echo "ok   - $*"; passed=$((passed + 1)); }
fail() { echo "FAIL - $*"; failed=$((failed + 1)); }
finish() {
    bash tests/slurm/slurm_down.sh "$W/slurm"
    echo "jobscripts: $passed passed, $failed failed"
    [ "$failed" -eq 0 ] && rm -rf "$W"
    exit $(( failed > 0 ))
}

up=$(bash tests/slurm/slurm_up.sh "$W/slurm" 2>"$W/slurm_up.err"); rc=$?
if [ $rc -eq 2 ]; then # not an error here, but nothing was tested: say so (tests/run_all.sh fails it where Slurm is expected)
    cat "$W/slurm_up.err"; echo "jobscripts: skipped ($(tail -1 "$W/slurm_up.err" | sed 's/^slurm_up: //'))"; rm -rf "$W"; exit 0; fi
if [ $rc -ne 0 ]; then cat "$W/slurm_up.err"; fail "a one-node Slurm cluster starts"; finish; fi
eval "$up"
ok "a one-node Slurm cluster starts ($(sinfo -h -o '%n %c CPUs %T'))"
trap finish EXIT

head -c 400000 "$SHARED/llm_assets/text/tinystories_train_first2MiB.txt" > "$W/train.txt"

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
# submit SCRIPT VAR=..,VAR=..: prints the job id
submit() { sbatch --parsable --chdir="$ROOT" --output="$W/$(basename "$1" .sbatch)-%j.out" --export="ALL,$2" "$1"; }
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

# ---- eval.sbatch: 2 tasks
j=$(submit jobscripts/eval.sbatch "MODEL=$MODEL,TEXT=$W/train.txt,MAX_WINDOWS=8")
st=$(wait_job "$j" 120)
got=$(grep -h '^{' "$W"/eval-"$j".out | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])' 2>/dev/null)
want=$($MPIRUN -np 2 bin/minifuse eval --model "$MODEL" --text "$W/train.txt" --ctx 256 --max-windows 8 --json 2>/dev/null |
       python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
if [ "$st" = COMPLETED ] && [ -n "$got" ] && [ "$got" = "$want" ]; then ok "eval.sbatch: ppl $got = mpirun's"
else fail "eval.sbatch: job $st, ppl '$got' vs mpirun '$want' (log $W/eval-$j.out)"; fi

# ---- score_prune.sbatch: 2 tasks, drop 1 block by MI
j=$(submit jobscripts/score_prune.sbatch "MODEL=$MODEL,TEXT=$W/train.txt,OUT=$W/sp,DROP=1")
st=$(wait_job "$j" 300)
mkdir -p "$W/sp-ref"
$MPIRUN -np 2 bin/minifuse score --model "$MODEL" --text "$W/train.txt" --out "$W/sp-ref/rankings.h5" --samples 32 --ctx 256 --mi-iters 1 >/dev/null 2>&1
$MPIRUN -np 2 bin/minifuse prune --model "$MODEL" --rankings "$W/sp-ref/rankings.h5" --out "$W/sp-ref/pruned" --drop-layers 1 --metric mi >/dev/null 2>&1
if [ "$st" = COMPLETED ] && same_weights "$W/sp/pruned" "$W/sp-ref/pruned" &&
   grep -q '"num_hidden_layers": *4' "$W/sp/pruned/config.json"; then ok "score_prune.sbatch: 4-layer model identical to mpirun's"
else fail "score_prune.sbatch: job $st; pruned model differs or missing (log $W/score_prune-$j.out)"; fi

# ---- fuse.sbatch: 4 tasks, SIGUSR1 during training, requeue, resume
FARGS="--ctx 128 --mi-samples 8"
j=$(submit jobscripts/fuse.sbatch "MODEL=$MODEL,TEXT=$W/train.txt,OUT=$W/fz,DROP=1,SAMPLES=64,EPOCHS=12,RANK=8,ARGS=$FARGS")
signal_after "$j" "$W/fz.fuse.jsonl" 3
st=$(wait_job "$j" 600); restarts=$(field "$j" Restarts)
$MPIRUN -np 4 bin/minifuse fuse --model "$MODEL" --text "$W/train.txt" --out "$W/fz-ref" --drop-layers 1 --samples 64 --epochs 12 \
    --rank 8 --lr 1e-2 --lr-base 1e-3 --checkpoint-every 20 $FARGS >/dev/null 2>&1
if [ "$st" = COMPLETED ] && [ "${restarts:-0}" -ge 1 ] && grep -q "requeueing job $j" "$W"/fuse-"$j".out &&
   same_weights "$W/fz" "$W/fz-ref"; then
    ok "fuse.sbatch: SIGUSR1 -> checkpoint, requeue ($restarts restart), resumed weights identical to an uninterrupted run"
else fail "fuse.sbatch: job $st, restarts ${restarts:-?}, weights $(same_weights "$W/fz" "$W/fz-ref" && echo same || echo differ) (log $W/fuse-$j.out)"; fi

# ---- distill.sbatch: 4 tasks = 2 stages x 2 replicas, student = the pruned model above
DARGS="--ctx 128 --checkpoint-every 10"
j=$(submit jobscripts/distill.sbatch "TEACHER=$MODEL,STUDENT=$W/sp/pruned,TEXT=$W/train.txt,OUT=$W/kd,DP=2,TOKENS=163840,ARGS=$DARGS")
signal_after "$j" "$W/kd.train.jsonl" 30
st=$(wait_job "$j" 600); restarts=$(field "$j" Restarts)
$MPIRUN -np 4 bin/minifuse distill --teacher "$MODEL" --student "$W/sp/pruned" --text "$W/train.txt" --out "$W/kd-ref" --tokens 163840 \
    --ctx 256 --batch 8 --dp 2 $DARGS >/dev/null 2>&1
if [ "$st" = COMPLETED ] && [ "${restarts:-0}" -ge 1 ] && grep -q "requeueing job $j" "$W"/distill-"$j".out &&
   same_weights "$W/kd" "$W/kd-ref"; then
    ok "distill.sbatch: SIGUSR1 -> checkpoint, requeue ($restarts restart), resumed weights identical to an uninterrupted run"
else fail "distill.sbatch: job $st, restarts ${restarts:-?}, weights $(same_weights "$W/kd" "$W/kd-ref" && echo same || echo differ) (log $W/distill-$j.out)"; fi
