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
W=$(mktemp -d /tmp/minifuse-gpu-jobscripts.XXXXXX)
NAME="gpu jobscripts"
source tests/slurm/lib.sh
export MINIFUSE_BACKEND=cpu
for f in jobscripts/*_gpu.sbatch jobscripts/env_gpu.sh jobscripts/gpu_rank.sh; do
    if bash -n "$f"; then ok "bash -n $f"; else fail "bash -n $f"; fi
done

GPUS=4 start_slurm "a one-node Slurm cluster with 4 GPUs" '%n %c CPUs %G %T'
# gsubmit SCRIPT VARS SBATCH-OPTIONS...: one node: 4 CPUs, 4 GPUs
gsubmit() { local s=$1 v=$2; shift 2; submit "$s" "$v" --nodes=1 --cpus-per-task=1 "$@"; }

# ---- every GPU script's directives, as Slurm reads them
for s in jobscripts/*_gpu.sbatch; do
    if out=$(sbatch --test-only --nodes=1 --cpus-per-task=1 --export=ALL "$s" 2>&1); then ok "sbatch --test-only $s"
    else fail "sbatch --test-only $s: $out"; fi
done

# ---- eval_gpu.sbatch: 2 tasks, one "GPU" each, through GPU_SRUN and gpu_rank.sh
j=$(gsubmit jobscripts/eval_gpu.sbatch "MODEL=$MODEL,TEXT=$W/train.txt,MAX_WINDOWS=8" --ntasks-per-node=2 --gpus-per-node=2)
st=$(wait_job "$j" 120)
got=$(ppl_of "$W"/eval_gpu-"$j".out)
want=$($MPIRUN -np 2 bin/minifuse eval --model "$MODEL" --text "$W/train.txt" --ctx 256 --max-windows 8 --json 2>/dev/null | ppl_of -)
if [ "$st" = COMPLETED ] && [ -n "$got" ] && [ "$got" = "$want" ]; then ok "eval_gpu.sbatch (cpu backend, 2 tasks x 1 GPU): ppl $got = mpirun's"
else fail "eval_gpu.sbatch: job $st, ppl '$got' vs mpirun '$want' (log $W/eval_gpu-$j.out)"; fi

# ---- distill_gpu.sbatch: 4 tasks = 2 stages x 2 replicas, SIGUSR1, requeue, resume
[ "${GPU_JOBSCRIPTS_QUICK:-0}" = 1 ] && exit 0
mkdir -p "$W/sp"
$MPIRUN -np 1 bin/minifuse prune --model "$MODEL" --out "$W/sp/pruned" --drop-list 2 >/dev/null 2>&1
DARGS="--checkpoint-every 5"
j=$(gsubmit jobscripts/distill_gpu.sbatch "TEACHER=$MODEL,STUDENT=$W/sp/pruned,TEXT=$W/train.txt,OUT=$W/kd,DP=2,TOKENS=40960,CTX=128,BATCH=8,ARGS=$DARGS" \
    --ntasks-per-node=4 --gpus-per-node=4)
signal_after "$j" "$W/kd.train.jsonl" 12
st=$(wait_job "$j" 600); restarts=$(field "$j" Restarts)
$MPIRUN -np 4 bin/minifuse distill --teacher "$MODEL" --student "$W/sp/pruned" --text "$W/train.txt" --out "$W/kd-ref" --tokens 40960 \
    --ctx 128 --batch 8 --dp 2 $DARGS >/dev/null 2>&1
if [ "$st" = COMPLETED ] && [ "${restarts:-0}" -ge 1 ] && grep -q "requeueing job $j" "$W"/distill_gpu-"$j".out &&
   same_weights "$W/kd" "$W/kd-ref"; then
    ok "distill_gpu.sbatch (cpu backend): SIGUSR1 -> checkpoint, requeue ($restarts restart), resumed weights identical to an uninterrupted run"
else fail "distill_gpu.sbatch: job $st, restarts ${restarts:-?}, weights $(same_weights "$W/kd" "$W/kd-ref" && echo same || echo differ) (log $W/distill_gpu-$j.out)"; fi
